#!/usr/bin/env python3
"""Generate ``schemas/`` (the bus contract) from the pydantic models.

    .venv/bin/python scripts/gen_schemas.py            # (re)write schemas/
    .venv/bin/python scripts/gen_schemas.py --check    # exit 1 and show a diff if they drifted

Writes
  schemas/json/<Model>.json  one JSON Schema (draft 2020-12, ``model_json_schema()``) per model
                             of ``glyphoxa_events.models.SCHEMA_MODELS``, per request/reply body
                             of ``glyphoxa_events.api``, for the campaign file (``Campaign``) and
                             for the heartbeat KV value (``Heartbeat``)
  schemas/asyncapi.yaml      AsyncAPI 3.0 document of every subject in docs/contract.md, built
                             from the small channel table below (``_channels``)

Nothing here is edited by hand: change the models (or the table below) and re-run.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import typing
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from glyphoxa_campaign import Campaign
from glyphoxa_events import api
from glyphoxa_events import headers as H
from glyphoxa_events.frames import MAX_FRAMES
from glyphoxa_events.models import SCHEMA_MODELS, ControlEvent, Heartbeat
from glyphoxa_events.subjects import API_ROOT, CLAIM_ROOT, ROOT, STAGES
from glyphoxa_events.tokens import TOKEN_PATTERN

ROOT_DIR = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = ROOT_DIR / "schemas"
JSON_DIR_NAME = "json"
ASYNCAPI_NAME = "asyncapi.yaml"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

API_MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (api.StartSession, api.StopSession, api.GetSession, api.SessionRecord, api.ApiReply,
              api.GetSecrets, api.SecretsReply, api.Caller, api.FindSession, api.ListNpcs,
              api.MuteNpc, api.SpeakNpc, api.NpcInfo, api.NpcsReply, api.GetBots, api.Bot,
              api.BotList, api.BotsReply, api.EdgeChanged, api.RecallRequest,
              api.RecalledMemory, api.RecallReply, api.TeachNpc, api.TaughtReply,
              api.SearchCampaign, api.SearchHitInfo, api.SearchReply)
}
EXTRA_MODELS: dict[str, type[BaseModel]] = {"Campaign": Campaign, "Heartbeat": Heartbeat}


def all_models() -> dict[str, type[BaseModel]]:
    """Every model that gets a file in schemas/json/, by file stem."""
    models: dict[str, type[BaseModel]] = {}
    for table in (SCHEMA_MODELS, API_MODELS, EXTRA_MODELS):
        for name, model in table.items():
            if name in models and models[name] is not model:
                raise SystemExit(f"two different models are called {name!r}")
            models[name] = model
    return dict(sorted(models.items()))


# --- JSON Schemas ---------------------------------------------------------------------------


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = JSON_SCHEMA_DIALECT
    return schema


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- AsyncAPI -------------------------------------------------------------------------------

TOKEN_DESC = f"Token: must match `^{TOKEN_PATTERN}$` (no dots, no wildcards)."
PARAMETERS = {
    "tenant": "The tenant (one Discord guild / customer). " + TOKEN_DESC,
    "session": "The session (one game night). " + TOKEN_DESC,
    "speaker": "The player who speaks (edge's speaker token). " + TOKEN_DESC,
    "npc": "The NPC (slug of its name, e.g. `captain-voss`). " + TOKEN_DESC,
    "stage": "The stage that serves the session.",
    "principal": "Who asks: the NATS user the requester logged in as (a service's name, "
                 "`edge-<tenant>` for a tenant's own edge, `operator`); the server lets each "
                 "user publish only under its own name (docs/adr/0006), and session-control "
                 "decides from it what the request may do.",
}

BINARY = {"type": "string", "format": "binary"}


def _header(description: str, **schema: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **schema}


DIGITS = {"pattern": "^[0-9]+$"}


TRACE_CONTEXT = {
    H.TRACEPARENT: _header(
        "W3C trace context of the span that made the message, only when tracing is on "
        "(docs/tracing.md): the next stage continues the turn's trace",
        pattern="^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"),
    H.TRACESTATE: _header("W3C trace state, with traceparent, when there is one"),
}
"""Optional headers of the messages a turn causes (vad's end, finals, reply chunks, frames)."""


def _headers(msg_id: str, optional: dict[str, Any] | None = None,
             **fields: dict[str, Any]) -> dict[str, Any]:
    props = {H.MSG_ID: _header(f"JetStream de-duplication id: `{msg_id}`")}
    props.update(fields)
    required = sorted(props)
    props.update(optional or {})
    return {"type": "object", "required": required, "properties": props}


def _json_message(model: str, summary: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "name": model,
        "title": model,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"{JSON_DIR_NAME}/{model}.json"},
    }
    if headers:
        msg["headers"] = headers
    return msg


def _binary_message(name: str, summary: str, headers: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/octet-stream",
        "headers": headers,
        "payload": payload,
    }


def _control_types() -> list[tuple[str, str]]:
    """(type literal, model name) of every control event, in the union's order."""
    union = typing.get_args(ControlEvent)[0]
    out = []
    for model in typing.get_args(union):
        out.append((model.model_fields["type"].default, model.__name__))
    return out


def _messages() -> dict[str, dict[str, Any]]:
    seq_speaker = _header("frame number per speaker, rising all session: capture time in 20 ms "
                          "frames, or the last + 1", **DIGITS)
    opus_frame = {**BINARY, "description": "one raw opus packet: 48 kHz stereo, 20 ms"}
    turn = _header("turn id (= the utterance id the turn answers)")

    def vad_headers(id_tail: str, kind: str, seq: str, optional: dict[str, Any] | None = None,
                    **more: dict[str, Any]) -> dict[str, Any]:
        """The headers of a ``vad.<speaker>`` message of ``kind`` (its id ends in ``id_tail``)."""
        return _headers(
            f"vad:<tenant>.<session>:<utterance>:{id_tail}", optional,
            **{
                H.KIND: _header("part of the utterance", const=kind),
                H.UTTERANCE: _header("utterance id `<speaker>-<first audio.in seq>`"),
                H.SEQ: _header(seq, **DIGITS),
                **more,
            },
        )
    msgs: dict[str, dict[str, Any]] = {
        "AudioInFrame": _binary_message(
            "AudioInFrame", "20 ms of one player's voice as captured by the edge",
            _headers(
                "ain:<tenant>.<session>:<speaker>:<seq>",
                **{
                    H.SEQ: seq_speaker,
                    H.CAPTURE_NS: _header("capture time of the frame (unix ns)", **DIGITS),
                    H.CODEC: _header("codec of the body", const=H.CODEC_OPUS),
                },
            ),
            opus_frame,
        ),
        "UtteranceStarted": _json_message(
            "UtteranceStarted", "vad: a player started speaking",
            vad_headers("start", "start", "chunk index within the utterance"),
        ),
        "VadAudioChunk": _binary_message(
            "VadAudioChunk", "vad: a chunk of the utterance's speech",
            vad_headers("<n>", "audio", "chunk index within the utterance"),
            {**BINARY, "description": "raw PCM16 little-endian, mono, 16 kHz"},
        ),
        "VadPause": _binary_message(
            "VadPause", "vad: the speaker went quiet (a hint: stt may transcribe now, ADR 0009)",
            vad_headers("pause-<chunks>-<tail bytes>", "pause", "chunks of the utterance sent so far",
                        **{H.SPEECH_END_NS: _header("capture time of the end of the last speech "
                                                    "(unix ns)", **DIGITS)}),
            {**BINARY, "description": "the utterance's audio not yet sent as a chunk (raw "
                                      "PCM16, mono, 16 kHz, possibly empty): if it ends with no "
                                      "further frame, its end's last chunk is exactly this"},
        ),
        "UtteranceEnded": _json_message(
            "UtteranceEnded", "vad: the utterance is over (end of turn)",
            vad_headers("end", "end", "chunk index within the utterance", TRACE_CONTEXT),
        ),
        "Transcript": _json_message(
            "Transcript", "stt: partial (`final: false`) or final transcript of an utterance",
            _headers("stt:<tenant>.<session>:<utterance>:final | stt:<tenant>.<session>:<utterance>:p<n>",
                     TRACE_CONTEXT),
        ),
        "ReplyChunk": _json_message(
            "ReplyChunk", "npc-brain: one sentence of an NPC's reply; the last has `final: true`",
            _headers("reply:<tenant>.<session>:<turn>:<index>", TRACE_CONTEXT, **{H.TURN: turn}),
        ),
        "AudioOutFrame": _binary_message(
            "AudioOutFrame", "tts: 20 ms of an NPC's voice, or several such frames in a row",
            _headers(
                "aout:<tenant>.<session>:<turn>:<seq>",
                {**TRACE_CONTEXT,
                 H.FRAMES: _header(
                     f"frames in the message, 2-{MAX_FRAMES} (absent: one raw frame); the body "
                     "is then each frame after its length as two bytes, big-endian",
                     pattern="^[0-9]{1,2}$")},
                **{
                    H.TURN: turn,
                    H.SEQ: _header("sequence per turn, from 0, of the (first) frame", **DIGITS),
                    H.PUBLISHED_NS: _header("wall-clock time tts published the frame (unix ns)", **DIGITS),
                    H.SPEECH_END_NS: _header(
                        "speech-end time of the utterance the turn answers (unix ns)", **DIGITS
                    ),
                },
            ),
            {**BINARY, "description": "one raw opus packet (48 kHz stereo, 20 ms), or with "
                                      f"`{H.FRAMES}` that many, each after its length"},
        ),
        "Usage": _json_message(
            "Usage", "metered provider work of a stage (stt audio seconds, LLM tokens, tts "
                     "characters), counted once per `key`",
            _headers("usage:<tenant>.<session>:<metric>:<key>"),
        ),
        "SessionClaim": _binary_message(
            "SessionClaim", "one session to serve, for one replica of one stage",
            _headers("claim:<subject>"),
            {**BINARY, "maxLength": 0, "description": "empty: the subject is the claim"},
        ),
    }
    for type_, model in _control_types():
        msgs[model] = _json_message(
            model, f"control event `{type_}`",
            _headers(f"ctl:<tenant>.<session>:{type_}:<id>"),
        )
    for model in API_MODELS:
        msgs[model] = _json_message(model, f"session-control API body `{model}`")
    return msgs


def _channel(address: str, description: str, messages: list[str], stream: str | None) -> dict[str, Any]:
    params = [p for p in PARAMETERS if "{" + p + "}" in address]
    ch: dict[str, Any] = {"address": address, "description": description}
    if params:
        ch["parameters"] = {p: {"$ref": f"#/components/parameters/{p}"} for p in params}
    ch["messages"] = {_lower(m): {"$ref": f"#/components/messages/{m}"} for m in messages}
    if stream:
        ch["x-glx-stream"] = stream
    return ch


def _lower(name: str) -> str:
    return name[0].lower() + name[1:]


S = f"{ROOT}.{{tenant}}.{{session}}"
CONTROL_PUBLISHERS = {
    # who publishes which control event (docs: ARCHITECTURE.md); the rest: "any service"
    "session.started": "session-control",
    "session.stopped": "session-control",
    "speaker": "discord-edge",
    "bargein": "vad",
    "played": "discord-edge",
    "turn": "npc-brain",
    "audio.done": "tts",
    "npc.mute": "session-control",
    "npc.speak": "session-control",
    "npc.taught": "session-control",
    "npc.forgot": "session-control",
}


USAGE_PUBLISHERS = ("stt", "npc-brain", "tts")
REPLIES = {"apiSecretsGet": "secretsReply", "apiNpcList": "npcsReply", "apiNpcMute": "npcsReply",
           "apiEdgeBots": "botsReply", "apiMemoryRecall": "recallReply"}
"""API channels whose reply is not an ``ApiReply``."""


def _channels() -> list[tuple[str, dict[str, Any], list[tuple[str, str, str]]]]:
    """(channel id, channel, [(operation id, action, service)])  -- the whole table."""
    table: list[tuple[str, dict[str, Any], list[tuple[str, str, str]]]] = [
        ("audioIn", _channel(
            f"{S}.audio.in.{{speaker}}",
            "Each player's voice, one opus packet per message, in capture order.",
            ["AudioInFrame"], "GLX_MEDIA"),
         [("publishAudioIn", "send", "discord-edge")]),
        ("vad", _channel(
            f"{S}.vad.{{speaker}}",
            "Utterances of one player: `start` JSON, then PCM chunks (and `pause` hints), then "
            f"`end` JSON (header `{H.KIND}` tells which).",
            ["UtteranceStarted", "VadAudioChunk", "VadPause", "UtteranceEnded"], "GLX_EVENTS"),
         [("publishVad", "send", "vad")]),
        ("stt", _channel(
            f"{S}.stt.{{speaker}}",
            "Transcripts of one player's utterances (partials, then one final).",
            ["Transcript"], "GLX_EVENTS"),
         [("publishTranscript", "send", "stt")]),
        ("reply", _channel(
            f"{S}.reply.{{npc}}",
            "An NPC's reply, one sentence per message, published as soon as it is complete.",
            ["ReplyChunk"], "GLX_EVENTS"),
         [("publishReply", "send", "npc-brain")]),
        ("audioOut", _channel(
            f"{S}.audio.out.{{npc}}",
            "An NPC's voice, one opus packet per message, in playback order.",
            ["AudioOutFrame"], "GLX_MEDIA"),
         [("publishAudioOut", "send", "tts")]),
    ]
    table.append(("usage", _channel(
        f"{S}.usage.{{stage}}",
        "Usage of one stage: one event per unit of metered work (an utterance transcribed, "
        "an LLM call attempt, a sentence synthesized); a replayed unit repeats its `key` and "
        "`Nats-Msg-Id`, so it is counted once.",
        ["Usage"], "GLX_EVENTS"),
        [(f"publishUsage{''.join(p.capitalize() for p in stage.split('-'))}", "send", stage)
         for stage in USAGE_PUBLISHERS]))
    for type_, model in _control_types():
        cid = "ctl" + "".join(p.capitalize() for p in type_.split("."))
        table.append((cid, _channel(
            f"{S}.ctl.{type_}",
            f"Control event `{type_}` (`{model}`); the subject tail is the event's `type`. "
            "Control subjects are consumed separately from audio.",
            [model], "GLX_CTL"),
            [(f"publish{cid[0].upper()}{cid[1:]}", "send", CONTROL_PUBLISHERS.get(type_, "any service"))]))
    table.append(("claim", _channel(
        f"{CLAIM_ROOT}.{{stage}}.{{tenant}}.{{session}}",
        "Session claims (work queue): one per stage when a session starts; a replica of the "
        "stage fetches it, keeps it with in-progress acks while it serves the session and acks "
        "it when the session is over.",
        ["SessionClaim"], "GLX_WORK"),
        [("publishClaim", "send", "session-control")]))
    for verb, request in (("start", "StartSession"), ("stop", "StopSession"), ("get", "GetSession"),
                          ("find", "FindSession")):
        table.append((f"api{verb.capitalize()}", _channel(
            f"{API_ROOT}.session.{verb}.{{principal}}",
            f"Core NATS request/reply (no stream): `{request}` -> `ApiReply`.",
            [request], None),
            [(f"session{verb.capitalize()}", "receive", "session-control")]))
    for verb, request, reply in (("list", "ListNpcs", "NpcsReply"), ("mute", "MuteNpc", "NpcsReply"),
                                 ("speak", "SpeakNpc", "ApiReply"), ("teach", "TeachNpc", "TaughtReply")):
        table.append((f"apiNpc{verb.capitalize()}", _channel(
            f"{API_ROOT}.npc.{verb}.{{principal}}",
            f"Core NATS request/reply (no stream), for the edges' slash commands: `{request}` -> "
            f"`{reply}`.",
            [request], None),
            [(f"npc{verb.capitalize()}", "receive", "session-control")]))
    table.append(("apiSecretsGet", _channel(
        f"{API_ROOT}.secrets.get.{{principal}}",
        "Core NATS request/reply (no stream): a stage asks for a tenant's stored provider "
        "keys, `GetSecrets` -> `SecretsReply` (values sealed with NATS_SECRETS_KEY).",
        ["GetSecrets"], None),
        [("secretsGet", "receive", "session-control")]))
    table.append(("apiEdgeBots", _channel(
        f"{API_ROOT}.edge.bots.{{principal}}",
        "Core NATS request/reply (no stream): a discord-edge asks for the bots it runs, "
        "`GetBots` -> `BotsReply` (a `BotList` sealed with NATS_EDGE_KEY).",
        ["GetBots"], None),
        [("edgeBots", "receive", "session-control")]))
    table.append(("apiCampaignSearch", _channel(
        f"{API_ROOT}.campaign.search.{{principal}}",
        "Core NATS request/reply (no stream), for the edges' `/recall`: `SearchCampaign` -> "
        "`SearchReply`, the running session's campaign's transcript lines matching the words, "
        "newest first (the GM's only).",
        ["SearchCampaign"], None),
        [("campaignSearch", "receive", "session-control")]))
    table.append(("apiMemoryRecall", _channel(
        f"{API_ROOT}.memory.recall.{{principal}}",
        "Core NATS request/reply (no stream), npc-brain's only: `RecallRequest` (the line an "
        "NPC is about to answer) -> `RecallReply`, at most `k` `RecalledMemory` that NPC "
        "witnessed or was taught, best first (docs/adr/0007).",
        ["RecallRequest"], None),
        [("memoryRecall", "receive", "session-control")]))
    table.append(("edgeChanged", _channel(
        f"{API_ROOT}.edge.changed",
        "Core NATS (no stream, no secrets): an edge's bots changed; that edge asks again.",
        ["EdgeChanged"], None),
        [("publishEdgeChanged", "send", "session-control")]))
    return table


def asyncapi() -> dict[str, Any]:
    try:
        ver = version("glyphoxa-events")
    except PackageNotFoundError:  # pragma: no cover - the workspace is always installed
        ver = "0.0.0"
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for cid, channel, ops in _channels():
        channels[cid] = channel
        for op_id, action, service in ops:
            op: dict[str, Any] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"{service} {'publishes on' if action == 'send' else 'serves'} "
                           f"`{channel['address']}`",
                "messages": [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in channel["messages"]],
                "tags": [{"name": service}],
            }
            if cid.startswith("api"):
                reply = REPLIES.get(cid, "apiReply")
                op["reply"] = {
                    "channel": {"$ref": "#/channels/apiReply"},
                    "messages": [{"$ref": f"#/channels/apiReply/messages/{reply}"}],
                }
            operations[op_id] = op
    channels["apiReply"] = {
        "address": None,
        "description": "The requester's inbox (the NATS reply subject of the request).",
        "messages": {"apiReply": {"$ref": "#/components/messages/ApiReply"},
                     "secretsReply": {"$ref": "#/components/messages/SecretsReply"},
                     "npcsReply": {"$ref": "#/components/messages/NpcsReply"},
                     "botsReply": {"$ref": "#/components/messages/BotsReply"},
                     "recallReply": {"$ref": "#/components/messages/RecallReply"}},
    }
    params: dict[str, Any] = {}
    for name, desc in PARAMETERS.items():
        if name == "stage":
            params[name] = {"description": desc, "enum": list(STAGES)}
        else:
            params[name] = {"description": desc, "x-pattern": f"^{TOKEN_PATTERN}$"}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Glyphoxa bus",
            "version": ver,
            "description": (
                "The subjects every Glyphoxa service may rely on (docs/contract.md). "
                "Generated by scripts/gen_schemas.py from glyphoxa_events; do not edit. "
                "Audio bodies are raw bytes with their metadata in NATS headers; every other "
                f"body is JSON of at most 64 KiB. Every JetStream publish sets `{H.MSG_ID}` so a "
                "retry is stored once (duplicate window 120 s)."
            ),
        },
        "servers": {
            "local": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "NATS with JetStream (streams GLX_MEDIA, GLX_EVENTS, GLX_CTL, GLX_WORK)",
            },
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"parameters": params, "messages": _messages()},
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # never emit &anchors / *aliases
        return True


def dump_yaml(data: Any) -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True,
                     default_flow_style=False)
    return "# Generated by scripts/gen_schemas.py from the pydantic models. Do not edit.\n" + body


# --- files ----------------------------------------------------------------------------------


def generate() -> dict[str, str]:
    """Every file of schemas/ (path relative to schemas/ -> content)."""
    files = {f"{JSON_DIR_NAME}/{name}.json": dump_json(json_schema(model))
             for name, model in all_models().items()}
    files[ASYNCAPI_NAME] = dump_yaml(asyncapi())
    return files


def differences(out_dir: Path = SCHEMAS_DIR) -> list[str]:
    """Unified diffs (on-disk -> generated) plus stale files; empty when up to date."""
    problems: list[str] = []
    files = generate()
    for rel, content in files.items():
        path = out_dir / rel
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old != content:
            diff = difflib.unified_diff(
                old.splitlines(keepends=True), content.splitlines(keepends=True),
                fromfile=f"schemas/{rel} (on disk)" if path.exists() else "/dev/null",
                tofile=f"schemas/{rel} (generated)",
            )
            problems.append("".join(diff))
    json_dir = out_dir / JSON_DIR_NAME
    if json_dir.is_dir():
        for path in sorted(json_dir.glob("*.json")):
            if f"{JSON_DIR_NAME}/{path.name}" not in files:
                problems.append(f"schemas/{JSON_DIR_NAME}/{path.name}: no model generates it (stale)\n")
    return problems


def write(out_dir: Path = SCHEMAS_DIR) -> list[str]:
    files = generate()
    changed = []
    for rel, content in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            changed.append(rel)
    json_dir = out_dir / JSON_DIR_NAME
    for path in sorted(json_dir.glob("*.json")):
        if f"{JSON_DIR_NAME}/{path.name}" not in files:
            path.unlink()
            changed.append(f"{JSON_DIR_NAME}/{path.name} (removed)")
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 and print a diff if schemas/ is out of date")
    ap.add_argument("--out", type=Path, default=SCHEMAS_DIR, help="schemas directory")
    args = ap.parse_args(argv)
    if args.check:
        problems = differences(args.out)
        if problems:
            sys.stdout.write("".join(problems))
            print(f"\n{len(problems)} schema file(s) out of date: run "
                  f".venv/bin/python scripts/gen_schemas.py", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date ({len(generate())} files)")
        return 0
    changed = write(args.out)
    for rel in changed:
        print(f"wrote schemas/{rel}")
    print(f"{args.out}: {len(changed)} file(s) changed, {len(generate())} in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
