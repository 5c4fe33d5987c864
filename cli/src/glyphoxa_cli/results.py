"""What a played scene produced: turns.jsonl, one WAV per NPC and the mixed table WAV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from glyphoxa_audio.jitter import PlaybackBuffer
from glyphoxa_audio.opus import OpusDecoder, OpusError
from glyphoxa_audio.wav import write_wav
from glyphoxa_cli.player import ScenePlayer
from glyphoxa_cli.scenefile import Scene, SceneTurn
from glyphoxa_events.models import AudioDone

RATE = 48_000
LATENCY_KEYS = ("vad_end", "stt_final", "first_token", "first_sentence", "first_audio")


def match_turn(scene: Scene, speaker: str, start_s: float, end_s: float) -> SceneTurn | None:
    """The ground-truth turn of this player that overlaps the utterance most."""
    best, best_overlap = None, 0.0
    for turn in scene.turns:
        if turn.player != speaker:
            continue
        overlap = min(end_s, turn.end_s) - max(start_s, turn.start_s)
        if overlap > best_overlap:
            best, best_overlap = turn, overlap
    return best


def _ms_after(ns: int | None, origin_ns: int) -> float | None:
    return round((ns - origin_ns) / 1e6, 1) if ns else None


def turn_rows(player: ScenePlayer) -> list[dict]:
    c = player.collected
    names = {npc.token: npc.name for npc in player.campaign.npcs}
    rows = []
    for utt_id, final in sorted(c.finals.items(), key=lambda kv: kv[1].speech_end_ns):
        turn = c.turns.get(utt_id)
        speech_end_wall = player.wall_of(final.speech_end_ns)
        lat = turn.latency if turn else None
        stamps = (
            lat.vad_end_ns if lat else final.vad_end_ns,
            final.stt_final_ns,
            lat.first_token_ns if lat else None,
            lat.first_sentence_ns if lat else None,
            c.first_audio_ns.get(utt_id),
        )
        latency = {key: _ms_after(ns, speech_end_wall)
                   for key, ns in zip(LATENCY_KEYS, stamps, strict=True)}
        start_s = (final.start_ns - player.t0_ns) / 1e9
        end_s = (final.speech_end_ns - player.t0_ns) / 1e9
        expected = match_turn(player.scene, final.speaker, start_s, end_s)
        rows.append({
            "utterance": utt_id,
            "player": final.speaker,
            "start_s": round(start_s, 2),
            "end_s": round(end_s, 2),
            "transcript": final.text,
            "npc": names.get(turn.npc) if turn and turn.npc else None,
            "outcome": turn.outcome.value if turn else "missing",
            "reason": turn.reason if turn else (
                f"session ended: {c.stopped.reason}" if c.stopped else "no turn event"),
            "reply": turn.reply_text if turn else "",
            "routing": _dumped(turn.routing) if turn else None,
            "failure": _dumped(turn.failure) if turn else None,
            # the memories of earlier sessions recalled into the reply's prompt (docs/memory.md)
            "memories": list(turn.memories) if turn else [],
            "latency_ms": latency,
            "audio": audio_summary(c.frames.get(utt_id, []), c.audio_done.get(utt_id)),
            "expected": None if expected is None else {
                "text": expected.text, "addressed": expected.addressed, "kind": expected.kind},
        })
    return rows


def audio_summary(frames: list[tuple[int, int, bytes, str]], done: AudioDone | None) -> dict:
    """What arrived of a turn's audio against what tts says it sent: ``sent`` (its
    ``AudioDone``, None before it came), ``received`` (distinct frame numbers), ``missing``
    (numbers below the highest that never came: concealed when played), ``differing``
    (numbers that came twice with different packets: two syntheses mixed, the first of each
    played), and why tts ended the turn when it cancelled it."""
    packets: dict[int, bytes] = {}
    differing = 0
    for seq, _, packet, _ in frames:
        first = packets.setdefault(seq, packet)
        differing += first != packet
    top = max(packets, default=-1) + 1
    summary = {"sent": done.frames if done else None, "received": len(packets),
               "missing": top - len(packets), "differing": differing}
    if done is not None and done.cancelled:
        summary["cancelled"] = done.reason
    return summary


def audio_note(audio: dict | None) -> str:
    """What was wrong with a turn's audio as it arrived, in a few words ("" when nothing, or
    for a row written before turns.jsonl had ``audio``)."""
    if not audio:
        return ""
    notes = []
    if audio.get("missing"):
        notes.append(f"{audio['missing']} of {audio['received'] + audio['missing']} frames "
                     "missing")
    if audio.get("differing"):
        notes.append(f"{audio['differing']} frames sent twice, differently")
    if audio.get("cancelled"):
        notes.append(f"cut ({audio['cancelled']})")
    return "audio: " + ", ".join(notes) if notes else ""


def _dumped(part: BaseModel | None) -> dict | None:
    return None if part is None else part.model_dump(mode="json", exclude_none=True)


def reason_text(row: dict) -> str:
    """A turn's reason in a few words, from its routing and failure where the row has them
    (turns.jsonl written before them has only ``reason``)."""
    failure = row.get("failure")
    if failure:
        provider = failure.get("provider")
        where = "/".join(p for p in (failure["stage"], provider) if p)
        error = failure.get("error", "")
        if provider:
            error = error.removeprefix(f"{provider}: ")
        retry = {True: " (retryable)", False: " (permanent)"}.get(failure.get("retryable"), "")
        return f"{where}: {error}{retry}"
    routing = row.get("routing")
    return _routing_text(routing) if routing else row.get("reason", "")


def _routing_text(r: dict) -> str:
    kind = r["kind"]
    if kind in ("name_start", "name_end"):
        heard = repr(r.get("matched", ""))
        how = r.get("match", "exact")
        if how != "exact":
            heard += f"~{r.get('name', '')} {how} {r.get('score', 0):.0f}"
        return f"named at {kind.removeprefix('name_')} {heard}"
    if kind == "followup":
        return f"follow-up {r.get('since_last_ms', 0) / 1000:.1f} s after"
    if kind == "only_npc":
        return "the only NPC"
    if kind == "table_talk" and r.get("mentioned"):
        return f"table talk: {r.get('why', '').removeprefix('talks about ')}"
    if kind == "table_talk":
        return f"table talk, {r.get('why', '')}"
    if kind == "none" and r.get("last_npc") and "window" in r.get("why", ""):
        return (f"no name; {r['last_npc']} {r.get('since_last_ms', 0) / 1000:.1f} s ago, past "
                f"the {r.get('window_ms', 0) / 1000:g} s window")
    return r.get("why", "")


def npc_audio(player: ScenePlayer) -> dict[str, list[tuple[str, float, np.ndarray]]]:
    """Decoded audio per NPC: (turn id, scene time it would start playing, samples)."""
    c = player.collected
    out: dict[str, list[tuple[str, float, np.ndarray]]] = {}
    cursor: dict[str, float] = {}
    for turn_id, frames in sorted(c.frames.items(), key=lambda kv: min(f[1] for f in kv[1])):
        npc = frames[0][3]
        audio = _play_turn(turn_id, npc, frames)
        start = max(player.scene_seconds(min(f[1] for f in frames)), cursor.get(npc, 0.0))
        cursor[npc] = start + len(audio) / RATE
        out.setdefault(npc, []).append((turn_id, start, audio))
    return out


def _play_turn(turn_id: str, npc: str, frames: list[tuple[int, int, bytes, str]]) -> np.ndarray:
    """Play a turn's frames as an edge does: reordered by sequence, a lost or corrupt frame
    replaced by opus packet-loss concealment."""
    buffer = PlaybackBuffer(max_wait=0)
    for seq, _, packet, _ in sorted(frames, key=lambda f: f[1]):  # arrival order
        buffer.push(turn_id, npc, seq, packet)
    buffer.end(turn_id, max(f[0] for f in frames) + 1)
    decoder = OpusDecoder(RATE, 1)
    pcm = []
    while (frame := buffer.pop()) is not None:
        try:
            pcm.append(decoder.decode(frame.packet) if frame.packet else decoder.conceal())
        except OpusError:
            pcm.append(decoder.conceal())
    return np.concatenate(pcm) if pcm else np.zeros(0, np.int16)


def write_results(player: ScenePlayer, out_dir: str | Path) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = turn_rows(player)
    with open(out_dir / "turns.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    placed = npc_audio(player)
    length = int(player.scene.duration_s * RATE)
    for clips in placed.values():
        for turn_id, start, audio in clips:
            length = max(length, int(start * RATE) + len(audio))
            write_wav(out_dir / "turns" / f"{turn_id}.wav", audio, RATE)
    mix = np.zeros(length, np.int32)
    for track in player.scene.tracks.values():
        mix[: len(track)] += track
    for npc, clips in placed.items():
        lane = np.zeros(length, np.int32)
        for _, start, audio in clips:
            i = int(start * RATE)
            lane[i:i + len(audio)] += audio
        write_wav(out_dir / f"npc_{npc}.wav", np.clip(lane, -32768, 32767), RATE)
        mix += lane
    write_wav(out_dir / "table_mix.wav", np.clip(mix, -32768, 32767), RATE)
    return rows


def _cell(ms: float | None) -> str:
    return f"{ms:>6.0f}" if ms is not None else f"{'-':>6}"


REASON_WIDTH = 48


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def format_table(rows: list[dict]) -> str:
    head = (f"{'player':<8} {'npc':<13} {'outcome':<13} {'reason':<{REASON_WIDTH}} {'stt':>6} "
            f"{'token':>6} {'sent':>6} {'audio':>6}  transcript -> reply")
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " ".join(_cell(r["latency_ms"].get(key))
                         for key in ("stt_final", "first_token", "first_sentence", "first_audio"))
        reply = f" -> {r['reply']}" if r["reply"] else ""
        if r["reply"] and (note := audio_note(r.get("audio"))):
            reply += f"  [{note}]"
        reason = _fit(reason_text(r), REASON_WIDTH)
        lines.append(f"{r['player']:<8} {(r['npc'] or '-'):<13} {r['outcome']:<13} "
                     f"{reason:<{REASON_WIDTH}} {cells}  {r['transcript']!r}{reply}")
    lines.append("latency columns: ms from speech end (stt final, first LLM token, first sentence, first audio)")
    return "\n".join(lines)


async def write_session_record(client, session: str, out_dir: str | Path) -> dict:  # type: ignore[no-untyped-def]
    """What session-control recorded of the session (read back through its admin API):
    the session with its state history, the transcript of what was heard, turns, usage."""
    record = {
        "session": await client.session(session),
        "transcript": await client.transcript(session),
        "turns": await client.turns(session),
        "usage": await client.usage(),
    }
    (Path(out_dir) / "session.json").write_text(json.dumps(record, indent=2))
    return record
