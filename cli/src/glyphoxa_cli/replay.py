"""``glyphoxa session replay``: a recorded session run again in a new session of the same
tenant, and its turns compared with the original's.

From audio, the players' recorded ``audio.in`` frames are published as they were, on their
original timeline (``speed`` times faster), so vad, stt, npc-brain and tts all run again.
From transcripts, the original final transcripts go straight to npc-brain on the same
timeline (routing and replies without vad and stt). The new session starts with the
original's campaign snapshot unless a campaign file is given. It is a session of its own:
the original's subjects, records and usage are never written.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from glyphoxa_bus.publisher import Resender
from glyphoxa_campaign import Campaign, load_campaign_file
from glyphoxa_cli.admin import AdminClient, SceneSessions
from glyphoxa_cli.player import FRAME_NS, Outgoing, ScenePlayer
from glyphoxa_cli.recording import Recording, scene_turns
from glyphoxa_cli.results import reason_text, turn_rows, write_results
from glyphoxa_cli.scenefile import Scene
from glyphoxa_cli.sessions import Door, load_recording
from glyphoxa_cli.tracks import RATE
from glyphoxa_events.models import Transcript
from glyphoxa_events.subjects import SessionSubjects

COMPARED = ("route", "npc", "outcome")


class ReplayDoor(SceneSessions):
    """Starts the replay session (``replay_of``: a debugging run, never campaign memory) with
    the original's campaign snapshot, or with a campaign of the user's that is used for this
    session only, never stored among the tenant's campaigns."""

    def __init__(self, client: AdminClient, tenant: str, original: dict, campaign: Campaign | None):
        super().__init__(client, tenant, "")
        self._original, self._campaign = original, campaign

    async def start(self) -> str:
        self.campaign_id = self._original["campaign"]
        changed = ({"campaign_snapshot": self._campaign.model_dump(mode="json", exclude_none=True)}
                   if self._campaign is not None else {})
        return (await self.client.start_session(self.campaign_id, edge="scene",
                                                replay_of=self._original["id"], **changed))["id"]


LEAD_NS = 1_000_000_000  # a replay starts this long before the first words


def replay_origin(rec: Recording, source: str) -> int:
    """Where a replay starts on the original's clock: shortly before anyone spoke (a table
    may sit in a session for minutes before its first words), not before the session did."""
    if source == "audio":
        first = min((f.capture_ns for f in rec.frames), default=rec.t0_ns)
    else:
        first = min((f.start_ns for f in rec.collected.finals.values()), default=rec.t0_ns)
    return max(rec.t0_ns, first - LEAD_NS)


def recorded_outgoing(rec: Recording, origin_ns: int) -> list[Outgoing]:
    """Each player's recorded frames on the 20 ms grid of the session's clock (frame index =
    capture time after ``origin_ns``), once each (by ``Glx-Seq``), in order; a frame whose
    capture time rounds onto its predecessor's slot takes the next one."""
    by_speaker: dict[str, list[tuple[int, bytes]]] = {}
    seen: set[tuple[str, int]] = set()
    for frame in sorted(rec.frames, key=lambda f: f.seq):
        if (frame.speaker, frame.seq) in seen:
            continue
        seen.add((frame.speaker, frame.seq))
        frames = by_speaker.setdefault(frame.speaker, [])
        index = round((frame.capture_ns - origin_ns) / FRAME_NS)
        if frames:
            index = max(index, frames[-1][0] + 1)
        if index >= 0:
            frames.append((index, frame.packet))
    return [Outgoing(speaker, frames) for speaker, frames in sorted(by_speaker.items())]


class TranscriptPlayer(ScenePlayer):
    """Publishes the original final transcripts on the stt subjects at the times stt gave
    them, with the original's speech times moved onto the new session's clock."""

    def __init__(self, *args, finals: list[Transcript], original: Recording, origin_ns: int,  # type: ignore[no-untyped-def]
                 **kwargs):
        super().__init__(*args, outgoing=[], **kwargs)
        self.finals, self.original, self.origin_ns = finals, original, origin_ns

    async def _send_all(self, subjects: SessionSubjects, outgoing: list[Outgoing],
                        publisher: Resender) -> None:
        self.t0_wall_ns = self.t0_ns = time.time_ns()
        start = time.monotonic()

        origin = self.origin_ns

        def moved(ns: int) -> int:
            return self.t0_ns + (ns - origin) if ns else 0

        def at(final: Transcript) -> int:  # on the original's capture clock, like its speech
            return (self.original.capture_of(final.stt_final_ns) if final.stt_final_ns
                    else final.speech_end_ns)

        for final in sorted(self.finals, key=at):
            due = start + (at(final) - origin) / 1e9 / self.speed
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            event = final.model_copy(update={
                "start_ns": moved(final.start_ns), "speech_end_ns": moved(final.speech_end_ns),
                "vad_end_ns": moved(self.original.capture_of(final.vad_end_ns)), "stt_final_ns": time.time_ns()})
            await publish_final(publisher, subjects, event)
        await publisher.flush(timeout_s=self.timeout_s)


async def publish_final(publisher: Resender, subjects: SessionSubjects, final: Transcript) -> None:
    """Publish a final transcript exactly as stt does: on ``glx.<tenant>.<session>.stt.<speaker>``
    with stt's msg id (``stt:<tenant>.<session>:<utterance>:final``), so the broker's duplicate
    window drops it when it comes twice. Also the memory evaluation's way in
    (``glyphoxa_cli.memory_eval``)."""
    await publisher.publish(
        subjects.stt(final.speaker), final.to_bytes(),
        msg_id=f"stt:{subjects.tenant}.{subjects.session}:{final.utterance_id}:final")


def _silent_scene(rows: list[dict], lead_s: float) -> dict[str, np.ndarray]:
    length = int((max((r["end_s"] for r in rows), default=0.0) - lead_s + 1.0) * RATE)
    return {p: np.zeros(length, np.int16) for p in sorted({r["player"] for r in rows}) or ["nobody"]}


async def replay_session(door: Door, session_id: str, out: Path, source: str = "audio",
                         campaign_path: Path | None = None, speed: float = 1.0,
                         timeout_s: float = 300.0) -> list[dict]:
    session, snapshot_yaml, rec = await load_recording(door, session_id, audio=source == "audio")
    tracks = rec.tracks() if source == "audio" else None
    rec.scene = Scene(session_id, RATE, tracks.pcm if tracks else {"nobody": np.zeros(RATE, np.int16)}, [])
    original = turn_rows(rec)  # type: ignore[arg-type]
    origin = replay_origin(rec, source)
    lead_s = (origin - rec.t0_ns) / 1e9
    pcm = ({s: track[round(lead_s * RATE):] for s, track in tracks.pcm.items()} if tracks
           else _silent_scene(original, lead_s))
    scene = Scene(f"replay of {session_id}", RATE, pcm, scene_turns(original, -lead_s))
    campaign: Campaign = load_campaign_file(campaign_path) if campaign_path else rec.campaign
    replay_door = ReplayDoor(door.client, door.tenant, session,
                             campaign if campaign_path else None)
    if source == "audio":
        player: ScenePlayer = ScenePlayer(door.nc, scene, campaign, replay_door, speed=speed,
                                          timeout_s=timeout_s, outgoing=recorded_outgoing(rec, origin))
    else:
        player = TranscriptPlayer(door.nc, scene, campaign, replay_door, speed=speed,
                                  timeout_s=timeout_s, finals=list(rec.collected.finals.values()),
                                  original=rec, origin_ns=origin)
    print(f"replaying session {session_id} from {source} ({len(original)} turns, "
          f"{scene.duration_s:.1f} s at {speed:g}x) into a new session of tenant {door.tenant} ...",
          flush=True)
    await player.play()
    rows = on_original_clock(write_results(player, out), lead_s, out)
    diff = diff_turns(original, rows)
    with open(out / "diff.jsonl", "w") as f:
        for d in diff:
            f.write(json.dumps({"original_session": session_id, "replay_session": player.session,
                                **d}) + "\n")
    print(f"replay session {player.session}", flush=True)
    return diff


def on_original_clock(rows: list[dict], lead_s: float, out: Path) -> list[dict]:
    """The replay's turns with their times counted from the original session's start (the
    replay began ``lead_s`` later on that clock), as DIR/turns.jsonl too."""
    if not lead_s:
        return rows
    for r in rows:
        r["start_s"], r["end_s"] = round(r["start_s"] + lead_s, 2), round(r["end_s"] + lead_s, 2)
    with open(out / "turns.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def _side(row: dict | None) -> dict | None:
    if row is None:
        return None
    return {"transcript": row["transcript"], "npc": row["npc"], "outcome": row["outcome"],
            "route": (row.get("routing") or {}).get("kind"), "why": reason_text(row),
            "reply": row["reply"], "start_s": row["start_s"], "latency_ms": row["latency_ms"],
            "utterance": row["utterance"]}


def _match(row: dict, candidates: list[dict], used: set[int]) -> int | None:
    best, best_score = None, -1e9
    for i, other in enumerate(candidates):
        if i in used or other["player"] != row["player"]:
            continue
        overlap = min(row["end_s"], other["end_s"]) - max(row["start_s"], other["start_s"])
        score = overlap if overlap > 0 else -abs(other["start_s"] - row["start_s"])
        if score > best_score and (overlap > 0 or abs(other["start_s"] - row["start_s"]) <= 1.0):
            best, best_score = i, score
    return best


def diff_turns(original: list[dict], replay: list[dict]) -> list[dict]:
    """Each original turn beside the replay's turn of the same player at the same time;
    ``differences`` names which of route kind, NPC and outcome changed (a route kind only
    when both sides recorded one)."""
    used: set[int] = set()
    out = []
    for row in original:
        i = _match(row, replay, used)
        if i is not None:
            used.add(i)
        a, b = _side(row), _side(replay[i]) if i is not None else None
        out.append(_compared(row["player"], row["start_s"], a, b))
    for i, row in enumerate(replay):
        if i not in used:
            out.append(_compared(row["player"], row["start_s"], None, _side(row)))
    return sorted(out, key=lambda d: d["start_s"])


def _compared(player: str, start_s: float, a: dict | None, b: dict | None) -> dict:
    if a is None or b is None:
        differences = ["missing in replay" if b is None else "only in replay"]
    else:
        differences = [k for k in COMPARED if a[k] != b[k]
                       and not (k == "route" and (a[k] is None or b[k] is None))]
    return {"player": player, "start_s": start_s, "same": not differences,
            "differences": differences, "original": a, "replay": b}


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _lat(side: dict | None) -> str:
    if side is None:
        return "-"
    ms = side["latency_ms"].get("first_audio") or side["latency_ms"].get("stt_final")
    return f"{ms:.0f}" if ms is not None else "-"


def _pair(a: dict | None, b: dict | None, key: str) -> str:
    x, y = (a or {}).get(key) or "-", (b or {}).get(key) or "-"
    return str(x) if x == y and a and b else f"{x} -> {y}"


def format_diff(diff: list[dict]) -> str:
    """Per turn: original vs replay transcript, addressed NPC and why, outcome, reply and the
    first audio's latency (ms after speech end)."""
    head = (f"{'':1} {'at s':>6} {'player':<8} {'npc (orig -> replay)':<27} "
            f"{'outcome (orig -> replay)':<27} {'audio ms':>11}  why (replay)")
    lines = [head, "-" * len(head)]
    for d in diff:
        a, b = d["original"], d["replay"]
        mark = "=" if d["same"] else "!"

        lines.append(f"{mark} {d['start_s']:>6.1f} {d['player']:<8} {_short(_pair(a, b, 'npc'), 27):<27} "
                     f"{_short(_pair(a, b, 'outcome'), 27):<27} {_lat(a):>5}/{_lat(b):<5}  "
                     f"{_short((b or a or {}).get('why', ''), 60)}")
        heard_a, heard_b = (a or {}).get("transcript", "-"), (b or {}).get("transcript", "-")
        heard = repr(heard_a) if heard_a == heard_b else f"{heard_a!r} | replay {heard_b!r}"
        lines.append(f"{'':17}heard {_short(heard, 110)}")
        if b and b.get("reply"):
            lines.append(f"{'':17}reply {_short(repr(b['reply']), 110)}")
        if not d["same"]:
            lines.append(f"{'':17}differs: {', '.join(d['differences'])}")
    lines.append("= same route, NPC and outcome; ! differs. audio ms: first audio after speech "
                 "end, original/replay")
    return "\n".join(lines)
