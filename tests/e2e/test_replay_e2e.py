"""A recorded session read back from the streams, as a user would with the `glyphoxa
session` commands against a running stack (instant fake providers, real Silero vad).

The example scene is played into the stack; its session is then listed as replayable,
replayed from its recorded audio with --check (same routing and outcomes), replayed from
its transcripts with a campaign where Bruno is renamed (only Bruno's turns change),
exported as a scene that `glyphoxa scene play` plays to the same outcomes, and drawn as a
timeline. None of that writes into the original session. Bad input ends in a message."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from glyphoxa_cli.stack import STAGE_SERVICES, Stack
from glyphoxa_events.tokens import slugify
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE, stack_api, wait_for
from tests.support.pg import fresh_database

GLYPHOXA = str(Path(sys.executable).parent / "glyphoxa")
SPEED = "4"
TENANT = "replays"
SCENE = json.loads((EXAMPLE_SCENE / "scene.json").read_text())
LINES = [t["text"] for t in sorted(SCENE["turns"], key=lambda t: t["start_s"])]
# a step's time after speech end, as a check that both are on one clock (a mark on the wrong
# clock is off by the scene's speed-up or the session's start: tens of seconds and more); not
# a latency target, so a busy machine (a reply 5 s late under a parallel test run) passes
SAME_CLOCK_MS = 15_000


@pytest.fixture(scope="module")
def stack(pg_admin_dsn):
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-replay-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as nobody
    script = home / "stt-script.json"
    script.write_text(json.dumps(LINES))  # the n-th utterance of each session says the n-th line
    # the original's recaps are made 1 s after its last turn (10 s by default), asked again
    # 2 s after a busy npc-brain (30 s): the test waits for them before it counts messages
    env = {"STT_PROVIDER": "fake", "STT_FAKE_SCRIPT": str(script), "BRAIN_LLM_PROVIDER": "fake",
           "TTS_PROVIDER": "fake", "SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true",
           "BRAIN_RECAP_QUIET_S": "1", "SESSION_CONTROL_RECAP_RETRY_S": "2"}
    s = Stack(home, env=env, pg_dsn=fresh_database(pg_admin_dsn),
              services=("session-control", *STAGE_SERVICES))
    s.start(progress=lambda m: None)
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(home, ignore_errors=True)


def glyphoxa(stack: Stack, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([GLYPHOXA, *args, "--nats", stack.nats_url or ""], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "GLYPHOXA_HOME": str(stack.home)})
    print(f"$ glyphoxa {' '.join(args)}\n{result.stdout}{result.stderr}")  # shown when a test fails
    if ok:
        assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return result


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def outcomes(rows: list[dict]) -> list[tuple]:
    return [(r["player"], r["transcript"], r["npc"], r["outcome"]) for r in rows]


async def kept_counts(stack: Stack, session: str) -> dict[str, int]:
    """How many messages each stream keeps on the session's subjects."""
    from glyphoxa_bus.connection import BusSettings, connect
    from glyphoxa_bus.recorded import count_kept
    from glyphoxa_bus.streams import CONTROL, EVENTS, MEDIA

    nc = await connect(BusSettings(url=stack.nats_url or ""), name="test")
    try:
        js = nc.jetstream()
        return {stream: await count_kept(js, stream, f"glx.{TENANT}.{session}.>")
                for stream in (MEDIA, EVENTS, CONTROL)}
    finally:
        await nc.close()


async def purge_audio(stack: Stack, session: str) -> None:
    from glyphoxa_bus.connection import BusSettings, connect
    from glyphoxa_bus.streams import MEDIA

    nc = await connect(BusSettings(url=stack.nats_url or ""), name="test")
    try:
        await nc.jetstream().purge_stream(MEDIA, subject=f"glx.{TENANT}.{session}.audio.in.>")
    finally:
        await nc.close()


CAMPAIGN_ID = "millbrook-crossing"


def npc_ids(stack: Stack) -> dict[str, str]:
    """The campaign's NPCs: name -> id."""
    campaign = asyncio.run(stack_api(stack, TENANT, "GET", f"/v1/campaigns/{CAMPAIGN_ID}"))
    return {n["name"]: slugify(n["name"]) for n in campaign["npcs"]}


def memory_sessions(stack: Stack) -> set[str]:
    """The sessions the campaign's memories come from, of every NPC."""
    return {m["session"] for npc in npc_ids(stack).values() for m in asyncio.run(stack_api(
        stack, TENANT, "GET", f"/v1/campaigns/{CAMPAIGN_ID}/npcs/{npc}/memories",
        params={"limit": 500}))}


def wait_for_recaps(stack: Stack, session: str, npcs: set[str], timeout_s: float = 120) -> None:
    """Until each of ``npcs`` has its recap of ``session`` made (they are the session's usage)."""
    def made() -> bool:
        return all([r["status"] for r in asyncio.run(stack_api(
            stack, TENANT, "GET", f"/v1/campaigns/{CAMPAIGN_ID}/npcs/{npc}/recaps"))
            if r["session"] == session] == ["done"] for npc in npcs)
    wait_for(f"the recaps of {session} by {sorted(npcs)}", made, timeout_s)


def renamed_campaign(path: Path) -> Path:
    text = EXAMPLE_CAMPAIGN.read_text().replace("name: Bruno", "name: Brutus")
    text = text.replace("You are Bruno", "You are Brutus")
    path.write_text(text)
    return path


def test_a_played_session_replays_exports_and_explains_itself(stack, tmp_path):
    # the original: the example scene, as a user plays it
    glyphoxa(stack, "scene", "play", str(EXAMPLE_SCENE), "--campaign", str(EXAMPLE_CAMPAIGN),
             "--out", str(tmp_path / "played"), "--speed", SPEED, "--tenant", TENANT)
    played = rows_of(tmp_path / "played" / "turns.jsonl")
    sid = json.loads((tmp_path / "played" / "session.json").read_text())["session"]["id"]
    assert len(played) >= 8 and {r["outcome"] for r in played} >= {"answered", "not_addressed"}
    bruno_turns = [r for r in played if r["npc"] == "Bruno"]
    assert bruno_turns
    # its recaps are the last it writes: their usage events go to the original session
    ids = npc_ids(stack)
    wait_for_recaps(stack, sid, {ids[r["npc"]] for r in played if r["outcome"] == "answered"})
    assert memory_sessions(stack) == {sid}
    before = asyncio.run(kept_counts(stack, sid))

    listed = glyphoxa(stack, "session", "list", "--tenant", TENANT).stdout
    line = next(x for x in listed.splitlines() if x.startswith(sid))
    assert "ended" in line and "yes" in line and f"{len(played)}/" in line

    # replayed from its recorded audio: every turn routed and ended as before
    result = glyphoxa(stack, "session", "replay", sid, "--out", str(tmp_path / "again"),
                      "--speed", SPEED, "--check", "--tenant", TENANT)
    diff = rows_of(tmp_path / "again" / "diff.jsonl")
    assert all(d["same"] for d in diff) and len(diff) == len(played), result.stdout
    for d in diff:  # latencies after speech end, on each session's own clock
        for side in (d["original"], d["replay"]):
            assert 0 < side["latency_ms"]["stt_final"] < SAME_CLOCK_MS, d
    assert outcomes(rows_of(tmp_path / "again" / "turns.jsonl")) == outcomes(played)
    assert diff[0]["original_session"] == sid and diff[0]["replay_session"] != sid
    assert "routed and ended the same" in result.stdout

    # replayed from its transcripts with Bruno renamed Brutus: his turns change, no other
    result = glyphoxa(stack, "session", "replay", sid, "--from", "transcripts", "--campaign",
                      str(renamed_campaign(tmp_path / "renamed.yaml")), "--out",
                      str(tmp_path / "renamed"), "--speed", SPEED, "--check", "--tenant", TENANT,
                      ok=False)
    assert result.returncode == 1, result.stderr + result.stdout
    diff = rows_of(tmp_path / "renamed" / "diff.jsonl")
    changed = [d for d in diff if not d["same"]]
    assert changed and all(d["original"]["npc"] == "Bruno" for d in changed), result.stdout
    named = next(d for d in diff if d["original"]["transcript"].startswith("Bruno,"))
    assert not named["same"] and named["replay"]["npc"] != "Bruno"
    assert named["original"]["route"] == "name_start"
    assert all(d["same"] for d in diff if d["original"]["npc"] != "Bruno")
    assert all(0 <= d["replay"]["latency_ms"]["stt_final"] < SAME_CLOCK_MS for d in diff), result.stdout
    assert "!" in result.stdout and "differs:" in result.stdout

    # the replays wrote nothing into the original session: they are sessions of their own,
    # and debugging runs that the NPCs do not remember
    assert asyncio.run(kept_counts(stack, sid)) == before
    assert memory_sessions(stack) == {sid}
    listed = glyphoxa(stack, "session", "list", "--tenant", TENANT).stdout.splitlines()
    assert f"{len(played)}/" in next(x for x in listed if x.startswith(sid))
    replays = {d["replay_session"] for name in ("again", "renamed")
               for d in rows_of(tmp_path / name / "diff.jsonl")}
    assert len(replays) == 2 and all(any(x.startswith(r) for x in listed) for r in replays)

    # exported as a scene and played again: the same outcomes
    result = glyphoxa(stack, "session", "export", sid, "--out", str(tmp_path / "export"),
                      "--tenant", TENANT)
    export = tmp_path / "export"
    meta = json.loads((export / "scene.json").read_text())
    assert {p["name"] for p in meta["players"]} == {"robin", "casey", "drew"}
    assert [t["text"] for t in meta["turns"]] == [r["transcript"] for r in played]
    assert outcomes(rows_of(export / "turns.jsonl")) == outcomes(played)
    assert "Bruno" in (export / "campaign.yaml").read_text()
    glyphoxa(stack, "scene", "play", str(export), "--campaign", str(export / "campaign.yaml"),
             "--out", str(tmp_path / "replayed-export"), "--speed", SPEED, "--tenant", TENANT)
    assert outcomes(rows_of(tmp_path / "replayed-export" / "turns.jsonl")) == outcomes(played)

    # its timeline: a table in the terminal, a waterfall in HTML naming every turn
    html = tmp_path / "timeline.html"
    result = glyphoxa(stack, "session", "timeline", sid, "--out", str(html), "--json",
                      str(tmp_path / "timeline.json"), "--tenant", TENANT)
    page = html.read_text()
    timeline = json.loads((tmp_path / "timeline.json").read_text())
    assert len(timeline["turns"]) == len(played)
    steps = ("speech_start", "speech_end", "vad_end", "stt_final", "first_token",
             "first_audio_published", "first_audio_played")
    for turn in timeline["turns"]:  # in order on one clock, though the scene ran at 4x
        at = {m["kind"]: m["at_ms"] for m in turn["marks"]}
        times = [at[k] for k in steps if k in at]
        assert times == sorted(times) and len(times) >= 4, turn
        if turn["outcome"] == "answered":
            assert at["first_audio_played"] - at["speech_end"] < SAME_CLOCK_MS, turn
    ends = [m["at_ms"] for t in timeline["turns"] for m in t["marks"]]
    stopped = [e["at_ms"] for e in timeline["events"] if e["kind"] == "stopped"]
    for event in timeline["events"]:  # barge-ins on the wall clock too, inside the session
        if event["kind"] == "bargein":
            assert 0 <= event["at_ms"] <= max(ends + stopped), event
    if keep := os.environ.get("GLYPHOXA_KEEP_TIMELINE"):  # docs/timeline-example.html
        shutil.copyfile(html, keep)
    for row in played:
        assert row["utterance"] in page and row["transcript"][:20] in page.replace("&#x27;", "'")
        assert row["utterance"] in result.stdout or row["transcript"] in result.stdout
    assert "http" not in page.split("<body>")[0]  # self-contained: nothing fetched
    assert "stt" in result.stdout and "played" in result.stdout

    # bad input: a message and a non-zero exit, never a traceback
    for args, said in (
        (("session", "export", "nosuchsession", "--out", str(tmp_path / "x"), "--tenant", TENANT),
         "no session"),
        (("session", "timeline", sid, "--tenant", "nosuchtenant"), "no tenant"),
    ):
        result = glyphoxa(stack, *args, ok=False)
        assert result.returncode != 0 and said in result.stderr, result.stderr
    glyphoxa(stack, "scene", "play", str(export), "--campaign", str(export / "campaign.yaml"),
             "--out", str(tmp_path / "other"), "--speed", "8", "--tenant", "others")
    result = glyphoxa(stack, "session", "timeline", sid, "--tenant", "others", ok=False)
    assert result.returncode != 0 and "no session" in result.stderr  # another tenant's
    asyncio.run(purge_audio(stack, sid))  # as if it had aged out
    result = glyphoxa(stack, "session", "replay", sid, "--out", str(tmp_path / "late"),
                      "--tenant", TENANT, ok=False)
    assert result.returncode != 0
    assert "NATS_STREAM_MAX_AGE_S" in result.stderr and "session export" in result.stderr
