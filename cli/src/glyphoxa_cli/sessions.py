"""``glyphoxa session list|export``: recorded sessions, and a session as a scene directory.

A session is looked up through session-control's admin API as its tenant (so another
tenant's session is simply not found) and read back from the replayable streams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.client import Client

from glyphoxa_audio.wav import write_wav
from glyphoxa_campaign import load_campaign
from glyphoxa_cli.admin import AdminClient, AdminError
from glyphoxa_cli.recording import Keep, Recording, keep_of, read_recording, scene_turns
from glyphoxa_cli.results import turn_rows
from glyphoxa_cli.scenefile import Scene
from glyphoxa_cli.tracks import RATE


class SessionProblem(RuntimeError):
    """What the user should be told instead of a traceback."""


@dataclass
class Door:
    """A tenant's way in: its admin API client and a NATS connection."""

    client: AdminClient
    nc: Client
    tenant: str


def started_ns(session: dict) -> int:
    at = session.get("started_at") or session["created_at"]
    return int(datetime.fromisoformat(at).timestamp() * 1e9)


async def find_session(door: Door, session_id: str) -> dict:
    try:
        return await door.client.session(session_id)
    except AdminError as exc:
        if exc.status in (404, 422):
            raise SessionProblem(
                f"no session {session_id!r} for tenant {door.tenant!r} (another tenant's sessions "
                f"are not visible; `glyphoxa session list --tenant {door.tenant}` lists this "
                "tenant's)") from None
        raise


def aged_out(session_id: str, keep: Keep) -> SessionProblem:
    oldest = (f"; the oldest audio it keeps is from "
              f"{datetime.fromtimestamp(keep.oldest_ns / 1e9).astimezone():%Y-%m-%d %H:%M %Z}"
              if keep.oldest_ns else "")
    return SessionProblem(
        f"session {session_id}'s audio is not (all) in the stream GLX_MEDIA any more (replayable: "
        f"{keep.describe()}{oldest}). The streams keep sessions for NATS_STREAM_MAX_AGE_S (default 24 h) and at most "
        "NATS_STREAM_MAX_BYTES (default 2 GiB) per stream, dropping the oldest first. Export a "
        "session while it is kept (`glyphoxa session export SESSION --out DIR`: the scene "
        "directory outlives the stream, and `glyphoxa scene play` plays it), or raise those two "
        "settings on session-control (docs/configuration.md, docs/debugging.md).")


async def list_sessions(door: Door, limit: int = 20) -> list[dict]:
    rows = []
    js = door.nc.jetstream()
    for s in await door.client.sessions(limit=limit):
        start = started_ns(s)
        turns = await door.client.turns(s["id"])
        keep = await keep_of(js, door.tenant, s["id"], start)
        rows.append({"id": s["id"], "state": s["state"], "campaign": s["campaign"],
                     "started": s.get("started_at") or s["created_at"],
                     "duration_s": round(_duration_s(s), 1),
                     "turns": len(turns), "answered": sum(t["outcome"] == "answered" for t in turns),
                     "replayable": keep.describe(), "frames": keep.frames})
    return rows


def _duration_s(session: dict) -> float:
    """From its start to its end (or now, while it runs)."""
    if not session.get("started_at"):
        return 0.0
    end = (datetime.fromisoformat(session["ended_at"]) if session.get("ended_at")
           else datetime.now(UTC))
    return (end - datetime.fromisoformat(session["started_at"])).total_seconds()


def format_sessions(rows: list[dict]) -> str:
    head = f"{'session':<28} {'state':<7} {'campaign':<22} {'started':<17} {'min':>6} {'turns':>6}  replayable"
    lines = [head, "-" * len(head)]
    for r in rows:
        started = datetime.fromisoformat(r["started"]).astimezone().strftime("%Y-%m-%d %H:%M")
        lines.append(f"{r['id']:<28} {r['state']:<7} {r['campaign'][:22]:<22} {started:<17} "
                     f"{r['duration_s'] / 60:>6.1f} {r['turns']:>3}/{r['answered']:<2}  {r['replayable']}")
    lines.append("turns: all/answered; replayable: its audio is still in the stream (export it to keep it)")
    return "\n".join(lines)


async def load_recording(door: Door, session_id: str, audio: bool = True) -> tuple[dict, str, Recording]:
    """The session's record, campaign snapshot (YAML) and what the streams keep of it;
    refuses (SessionProblem) a session whose audio aged out when ``audio`` is wanted."""
    session = await find_session(door, session_id)
    start = started_ns(session)
    if audio:
        keep = await keep_of(door.nc.jetstream(), door.tenant, session_id, start)
        if not keep.complete:
            raise aged_out(session_id, keep)
    campaign_yaml = await door.client.session_campaign(session_id)
    campaign = load_campaign(campaign_yaml, source=f"session {session_id}'s campaign")
    rec = await read_recording(door.nc.jetstream(), door.tenant, session_id, campaign, start, audio)
    if not audio and not rec.collected.finals:
        raise SessionProblem(
            f"the streams keep no transcripts of session {session_id} (GLX_EVENTS drops the oldest "
            "after NATS_STREAM_MAX_AGE_S / NATS_STREAM_MAX_BYTES; export sessions while they are "
            "kept: glyphoxa session export)")
    return session, campaign_yaml, rec


async def export_session(door: Door, session_id: str, out: Path) -> dict:
    session, campaign_yaml, rec = await load_recording(door, session_id)
    tracks = rec.tracks()
    rec.scene = Scene(session_id, RATE, tracks.pcm, [])
    rows = turn_rows(rec)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    players = []
    for speaker, pcm in tracks.pcm.items():
        write_wav(out / f"player_{speaker}.wav", pcm, RATE)
        players.append({"name": speaker, "track": f"player_{speaker}.wav"})
    turns = [{"player": t.player, "start_s": t.start_s, "end_s": t.end_s, "text": t.text,
              "addressed": t.addressed, "kind": t.kind} for t in scene_turns(rows)]
    meta = {"sample_rate": RATE, "players": players, "turns": turns,
            "exported_from": {"tenant": door.tenant, "session": session_id,
                              "started_at": session.get("started_at"),
                              "tracks": {s: vars(r) for s, r in tracks.reports.items()}}}
    (out / "scene.json").write_text(json.dumps(meta, indent=1))
    (out / "campaign.yaml").write_text(campaign_yaml, encoding="utf-8")
    with open(out / "turns.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return {"session": session, "rows": rows, "tracks": tracks}
