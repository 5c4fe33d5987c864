"""What a GM or an operator gets from the ``glyphoxa`` command for input it cannot use: one
``glyphoxa: error: ...`` line naming the file or the flag and exit 2, never a traceback, and
never a hang or a blame on the broker for a problem of its own (a missing track, a bad
``--out``). Each case runs the real entry point with no stack (closed ports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from glyphoxa_audio.wav import write_wav
from glyphoxa_cli.main import FIRST_CONNECT_S
from glyphoxa_cli.processes import free_port
from glyphoxa_cli.stack import REACH_NATS_S

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "examples" / "campaign.yaml"
SCENE = {"sample_rate": 48000, "players": [{"name": "casey", "track": "a.wav"}], "turns": []}


def glyphoxa(home: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NATS_URL", "GLYPHOXA_API_URL", "GLYPHOXA_API_KEY")}
    env["GLYPHOXA_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "glyphoxa_cli.main", *args], cwd=home,
                          env=env, capture_output=True, text=True, timeout=timeout_s)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("glyphoxa: error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0].removeprefix("glyphoxa: error: ")


def scene(tmp_path: Path, meta: object = SCENE, track: object = "mono") -> Path:
    d = tmp_path / "scene"
    d.mkdir()
    (d / "scene.json").write_text(json.dumps(meta))
    if track == "mono":
        write_wav(d / "a.wav", np.zeros(4800, np.int16), 48000)
    elif track == "stereo":
        write_wav(d / "a.wav", np.zeros((4800, 2), np.int16), 48000)
    elif isinstance(track, str):
        (d / "a.wav").write_text(track)
    return d


def no_stack() -> list[str]:
    """Flags that point scene play at a stack that is not there (nothing listens)."""
    return ["--campaign", str(CAMPAIGN), "--api", f"http://127.0.0.1:{free_port()}",
            "--api-key", "gk_nobody", "--nats", f"nats://127.0.0.1:{free_port()}"]


@pytest.mark.parametrize(("meta", "track", "says"), [
    ([1, 2], "mono", "scene.json: not a scene: Input should be an object"),
    ({**SCENE, "players": [{"track": "a.wav"}]}, "mono",
     "scene.json: not a scene: players[0].name: Field required"),
    ({**SCENE, "players": [{"name": "casey"}]}, "mono",
     "scene.json: not a scene: players[0].track: Field required"),
    ({**SCENE, "turns": [{"player": "casey", "end_s": 1}]}, "mono",
     "scene.json: not a scene: turns[0].start_s: Field required"),
    ({**SCENE, "sample_rate": "fast"}, "mono", "scene.json: not a scene: sample_rate: Input "
     "should be a valid integer"),
    ({**SCENE, "players": [{"name": "Casey Jones", "track": "a.wav"}]}, "mono",
     "scene.json: invalid player 'casey jones'"),
    (SCENE, None, "a.wav: cannot read casey's track: No such file or directory"),
    (SCENE, "not a wav", "a.wav: cannot read casey's track: file does not start with RIFF id"),
    (SCENE, "stereo", "a.wav: expected 48 kHz mono, got 48000 Hz with 2 channels"),
])
def test_a_scene_it_cannot_play_is_one_line_naming_the_file(tmp_path: Path, meta: object,
                                                             track: object, says: str) -> None:
    d = scene(tmp_path, meta, track)
    error = one_error(glyphoxa(tmp_path, "scene", "play", str(d), "--out", "out", *no_stack()))
    assert error.startswith(str(d)) and says in error, error


def test_a_bad_out_is_said_before_anything_plays(tmp_path: Path) -> None:
    d = scene(tmp_path)
    (tmp_path / "taken").write_text("a file")
    error = one_error(glyphoxa(tmp_path, "scene", "play", str(d), "--out", "taken",
                               *no_stack()))
    assert error == "--out taken: cannot make the directory: File exists"


@pytest.mark.parametrize(("command", "says"), [
    (["session", "export", "s1", "--out", "taken"],
     "--out taken: cannot make the directory: File exists"),
    (["session", "replay", "s1", "--out", "taken/sub"],
     "--out taken/sub: cannot make the directory: Not a directory"),
    (["session", "timeline", "s1", "--out", "."], "--out .: is a directory; give a file name"),
    (["session", "timeline", "s1", "--json", "taken/t.json"],
     "--json taken/t.json: its directory taken: cannot make the directory: File exists"),
])
def test_a_session_commands_bad_out_is_said_before_it_connects(tmp_path: Path,
                                                               command: list[str],
                                                               says: str) -> None:
    (tmp_path / "taken").write_text("a file")
    assert one_error(glyphoxa(tmp_path, *command, *no_stack()[2:])) == says


def test_scene_play_without_a_broker_gives_up_and_says_so(tmp_path: Path) -> None:
    """...without showing the NATS login the URL carries (a running stack's is the operator's)."""
    d = scene(tmp_path)
    flags = no_stack()
    nats = flags[flags.index("--nats") + 1]
    flags[flags.index("--nats") + 1] = nats.replace("nats://", "nats://operator:s3cret-pw@")
    started = time.monotonic()
    result = glyphoxa(tmp_path, "scene", "play", str(d), "--out", "out", *flags)
    took_s = time.monotonic() - started
    error = one_error(result)
    shown = nats.replace("nats://", "nats://***@")
    assert error.startswith(f"cannot reach NATS at {shown} (is the stack running?): no NATS "
                            f"server answered within {FIRST_CONNECT_S:g} s"), error
    assert took_s < FIRST_CONNECT_S + 30  # it used to retry for ever
    assert "WARNING" not in result.stderr  # one line, not a warning every half second
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_up_with_a_nats_that_does_not_answer_says_so_before_starting_anything(
        tmp_path: Path) -> None:
    """``up --nats URL`` (an existing server): it used to start every service and wait two
    minutes for the first to be ready."""
    port = free_port()
    started = time.monotonic()
    result = glyphoxa(tmp_path, "up", "--nats", f"nats://glx:s3cret-pw@127.0.0.1:{port}")
    took_s = time.monotonic() - started
    error = one_error(result)
    assert error.startswith(f"cannot reach NATS at nats://***@127.0.0.1:{port}: no NATS server "
                            f"answered within {REACH_NATS_S:g} s"), error
    assert took_s < REACH_NATS_S + 30
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert not (tmp_path / "stack.json").exists() and not (tmp_path / "logs").exists()


def test_a_stack_that_is_gone_is_the_admin_api_unreachable(tmp_path: Path) -> None:
    """A stack.json left by a stack that was killed: its admin API does not answer."""
    home = tmp_path
    api = f"http://127.0.0.1:{free_port()}"
    (home / "stack.json").write_text(json.dumps(
        {"nats_url": f"nats://127.0.0.1:{free_port()}", "api_url": api, "services": []}))
    (home / "keys.json").write_text(json.dumps({"operator_key": "op_gone"}))
    d = scene(tmp_path)
    error = one_error(glyphoxa(home, "scene", "play", str(d), "--campaign", str(CAMPAIGN),
                               "--out", "out"))
    assert error.startswith(f"cannot reach the admin API at {api} (is the stack running?)")


@pytest.mark.parametrize(("file", "content", "command", "says"), [
    ("keys.json", '{"operator_key": "op_x", ', ["keys"],
     "keys.json (the local stack's keys) cannot be read: Expecting property name"),
    ("keys.json", "{}", ["keys"], "keys.json has no operator_key"),
    ("stack.json", '{"nats_url": ', ["keys", "--nats"],
     "stack.json (the running local stack) cannot be read: Expecting value"),
    ("stack.json", '{"nats_url": ', ["session", "list"],
     "stack.json (the running local stack) cannot be read: Expecting value"),
    ("stack.json", "[]", ["session", "list"],
     "stack.json (the running local stack) is not a JSON object"),
])
def test_a_broken_file_in_the_stacks_home_is_named(tmp_path: Path, file: str, content: str,
                                                   command: list[str], says: str) -> None:
    (tmp_path / file).write_text(content)
    error = one_error(glyphoxa(tmp_path, *command))
    assert error.startswith(str(tmp_path / file)) and says in error, error


@pytest.mark.parametrize(("spec", "says"), [
    ("sst=2", "--replicas: no service 'sst' (the services: session-control, vad, stt, "
              "npc-brain, tts, discord-edge)"),
    ("stt=0", "--replicas stt=0: between 1 and 16 replicas of a service"),
    ("stt=two", "--replicas takes SERVICE=N, got 'stt=two'"),
])
def test_up_refuses_replicas_it_cannot_start(tmp_path: Path, spec: str, says: str) -> None:
    assert one_error(glyphoxa(tmp_path, "up", "--replicas", spec)) == says
    assert not (tmp_path / "stack.json").exists()  # nothing was started


@pytest.mark.parametrize("value", ["0.5", "nan", "fast"])
def test_a_speed_it_cannot_replay_at_is_refused_before_anything_runs(tmp_path: Path,
                                                                     value: str) -> None:
    d = scene(tmp_path)
    result = glyphoxa(tmp_path, "scene", "play", str(d), "--out", "out", "--speed", value,
                      *no_stack(), timeout_s=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "argument --speed: " in result.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_bench_refuses_counts_it_cannot_run(tmp_path: Path) -> None:
    error = one_error(glyphoxa(tmp_path, "bench", "--turns", "0"))
    assert error == "bench: --memories must be >= 0, --turns and every --sessions >= 1"
