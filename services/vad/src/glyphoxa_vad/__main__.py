"""vad: per-speaker voice activity and end-of-turn detection.

Claims sessions of the ``vad`` stage, reads ``glx.T.S.audio.in.<speaker>`` from GLX_MEDIA and
publishes utterances on ``glx.T.S.vad.<speaker>`` plus ``ctl.bargein``.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client

from glyphoxa_bus.publisher import Publisher
from glyphoxa_bus.session import SessionContext
from glyphoxa_bus.streams import MEDIA
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_runtime.service import StageApp, StageMetrics, serve
from glyphoxa_runtime.settings import load_settings
from glyphoxa_vad.config import Settings
from glyphoxa_vad.core import SessionVad
from glyphoxa_vad.engines import VadEngine, build_engine
from glyphoxa_vad.handler import VadSessionHandler

log = logging.getLogger("glyphoxa.vad")

STAGE = "vad"


def input_filters(subjects: SessionSubjects) -> list[str]:
    return [subjects.audio_in("*")]


def build_app(nc: Client, publisher: Publisher, settings: Settings, engine: VadEngine) -> StageApp:
    config = settings.segmenter_config()

    def handler(ctx: SessionContext) -> VadSessionHandler:
        return VadSessionHandler(ctx, SessionVad(config, engine, max_speakers=settings.max_speakers))

    return StageApp(nc, publisher, settings, STAGE, MEDIA, input_filters, handler,
                    StageMetrics(STAGE), capacity=settings.capacity)


def main() -> None:
    settings = load_settings(Settings, "vad")

    async def build(nc: Client, publisher: Publisher) -> StageApp:
        # loaded before the first claim is taken: a missing model fails the start, not a session
        engine = build_engine(settings.engine, threads=settings.silero_threads,
                              aggressiveness=settings.webrtc_aggressiveness,
                              frame_ms=settings.webrtc_frame_ms)
        log.info("vad engine loaded", extra={"engine": engine.name})
        return build_app(nc, publisher, settings, engine)

    serve(STAGE, settings, build)


if __name__ == "__main__":
    main()
