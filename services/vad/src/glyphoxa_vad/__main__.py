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
from glyphoxa_runtime.providers import ProviderUnavailable
from glyphoxa_runtime.service import StageApp, StageMetrics, serve
from glyphoxa_runtime.settings import load_settings
from glyphoxa_vad.config import Settings
from glyphoxa_vad.core import SessionVad
from glyphoxa_vad.engines import VadEngine, build_engine
from glyphoxa_vad.handler import VadSessionHandler
from glyphoxa_vad.smart_turn import SmartTurn

log = logging.getLogger("glyphoxa.vad")

STAGE = "vad"


def input_filters(subjects: SessionSubjects) -> list[str]:
    return [subjects.audio_in("*")]


def build_app(nc: Client, publisher: Publisher, settings: Settings, engine: VadEngine,
              turn_model: SmartTurn | None = None) -> StageApp:
    config = settings.segmenter_config()

    def handler(ctx: SessionContext) -> VadSessionHandler:
        return VadSessionHandler(ctx, SessionVad(config, engine, max_speakers=settings.max_speakers),
                                 turn_model)

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
        turn_model = None
        if settings.smart_turn:
            try:
                turn_model = SmartTurn(settings.smart_turn_model, threads=settings.smart_turn_threads)
            except ProviderUnavailable as exc:
                log.error("cannot load the Smart Turn model", extra={"error": str(exc)})
                raise SystemExit(f"vad: VAD_SMART_TURN is on but {exc}") from None
            log.info("smart turn model loaded", extra={
                "silence_ms": settings.smart_turn_silence_ms,
                "max_silence_ms": settings.smart_turn_max_silence_ms})
        return build_app(nc, publisher, settings, engine, turn_model)

    serve(STAGE, settings, build)


if __name__ == "__main__":
    main()
