"""The `glyphoxa` command's own paths: `demo` and `up` (instant fake providers, fast)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from glyphoxa_cli.processes import wait_port

GLYPHOXA = str(Path(sys.executable).parent / "glyphoxa")


@pytest.fixture
def home():
    """GLYPHOXA_HOME outside pytest's 0700 tmp dir: as root, PostgreSQL runs as `nobody`."""
    path = Path(tempfile.mkdtemp(prefix="glyphoxa-home-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_demo_plays_the_example_scene_and_prints_the_turn_table(tmp_path, home):
    env = {**os.environ, "GLYPHOXA_HOME": str(home)}
    result = subprocess.run([GLYPHOXA, "demo", "--fake", "--speed", "4", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "player   npc" in result.stdout and "latency columns" in result.stdout
    rows = [json.loads(x) for x in (tmp_path / "out" / "turns.jsonl").read_text().splitlines()]
    assert len(rows) >= 10 and all(r["outcome"] != "missing" for r in rows)
    assert (tmp_path / "out" / "table_mix.wav").exists()
    assert not (home / "stack.json").exists()  # everything was stopped
    record = json.loads((tmp_path / "out" / "session.json").read_text())
    assert record["session"]["state"] == "ended" and record["transcript"]


def test_up_runs_until_interrupted_and_stops_every_process(home):
    proc = subprocess.Popen([GLYPHOXA, "up", "--fake"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "GLYPHOXA_HOME": str(home)},
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (home / "stack.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        state = json.loads((home / "stack.json").read_text())
        assert len(state["services"]) == 6
        for service in state["services"]:
            wait_port(service["metrics_port"], timeout_s=30)
        pids = [s["pid"] for s in state["services"]] + [state["nats_pid"], state["postgres_pid"]]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0
        for pid in pids:
            assert not _alive(pid), f"process {pid} still running after Ctrl-C"
        assert not (home / "stack.json").exists()
    finally:
        _kill_stack(proc, home)


def test_up_starts_again_whatever_dies(home):
    """kill -9 a stage, nats-server and PostgreSQL under `glyphoxa up`: each is started
    again with a line saying so, every service is ready again, and Ctrl-C still stops
    everything, the restarted processes included."""
    proc = subprocess.Popen([GLYPHOXA, "up", "--fake"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "GLYPHOXA_HOME": str(home)},
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        state = _ready_stack(home)
        tts = next(s for s in state["services"] if s["name"] == "tts-1")
        for name, pid in (("tts-1", tts["pid"]), ("nats-server", state["nats_pid"]),
                          ("postgres", state["postgres_pid"])):
            os.kill(pid, signal.SIGKILL)
            _wait(lambda n=name: any(line.startswith(f"{n} started again") for line in lines), 60,
                  f"{name} not started again: {lines[-5:]}")
            assert any(line.startswith(f"{name} exited with -9; starting it again in 1 s")
                       for line in lines)
            state = _ready_stack(home)  # every service ready again (NATS and PG reconnected)
        assert all(_alive(s["pid"]) for s in state["services"])
        pids = [s["pid"] for s in state["services"]] + [state["nats_pid"], state["postgres_pid"]]
        assert tts["pid"] not in pids
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        for pid in pids:
            assert not _alive(pid), f"process {pid} still running after Ctrl-C"
    finally:
        _kill_stack(proc, home)


def test_a_terminated_bench_stops_the_stack_it_started(home):
    """SIGTERM (a CI timeout, `kill`) is taken like Ctrl-C: no service, nats-server or
    PostgreSQL of the bench's stack is left running."""
    proc = subprocess.Popen([GLYPHOXA, "bench", "--skip-providers", "--skip-memory", "--skip-peer",
                             "--sessions", "1", "--turns", "100"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TMPDIR": str(home)}, start_new_session=True)
    stack_home = None
    try:
        def started() -> bool:
            nonlocal stack_home
            stack_home = next(iter(home.glob("glyphoxa-bench-*")), None)
            return stack_home is not None and (stack_home / "stack.json").exists()
        _wait(started, 120, "the bench started no stack")
        assert stack_home is not None
        state = _ready_stack(stack_home)
        pids = [s["pid"] for s in state["services"]] + [state["nats_pid"], state["postgres_pid"]]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        assert "glyphoxa: stopped" in (proc.stdout.read() if proc.stdout else "")
        for pid in pids:
            assert not _alive(pid), f"process {pid} still running after SIGTERM"
    finally:
        _kill_stack(proc, stack_home or home)


def _ready_stack(home: Path) -> dict:
    """stack.json once it exists and every service in it answers /readyz with 200."""
    def ready() -> bool:
        if not (home / "stack.json").exists():
            return False
        for service in json.loads((home / "stack.json").read_text())["services"]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{service['metrics_port']}/readyz",
                                            timeout=2) as r:
                    if r.status != 200:
                        return False
            except OSError:
                return False
        return True
    _wait(ready, 120, "the stack did not become ready")
    return json.loads((home / "stack.json").read_text())


def _wait(predicate, timeout_s: float, message: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def _kill_stack(proc: subprocess.Popen, home: Path) -> None:
    """After a failure: `glyphoxa up` and every process of its stack (each runs in a session
    of its own, so killing `up`'s process group would leave them running), by PID."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    if (home / "stack.json").exists():
        state = json.loads((home / "stack.json").read_text())
        for pid in [s["pid"] for s in state["services"]] + [state["nats_pid"], state["postgres_pid"]]:
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def test_bench_runs_a_short_bus_overhead_measurement():
    # --skip-memory: the bus alone (the run with and without recall starts two stacks more)
    result = subprocess.run([GLYPHOXA, "bench", "--skip-providers", "--skip-memory", "--sessions",
                             "2", "--turns", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    # the machine's speed mark first: runs on different days compare where it matches
    assert re.match(r"machine: \d+ cores, a 10-million-step Python loop [0-9.]+ s", lines[0]), lines[0]
    # part 1's table, then the same turns through Pipecat beside it (issue 17)
    peer = next(i for i, line in enumerate(lines) if line.startswith("== side by side with Pipecat"))
    by_process = next(i for i, line in enumerate(lines) if "cpu by process:" in line)
    row = lines[by_process - 1].split()
    assert row[:2] == ["2", "4"] and 0 < float(row[2]) < 1000, result.stdout  # sessions, turns, p50 ms
    assert 0 < float(row[5]) < 2.5, result.stdout  # the stack's CPU, in cores of this machine
    assert "tts-1" in lines[by_process] and "nats-server" in lines[by_process], result.stdout
    collections = lines[by_process + 1]  # each stage's garbage collections over the run
    assert collections.split(":")[0].strip() == "garbage collections (>= 5 ms, ms paused)", result.stdout
    assert all(f" {stage} " in collections for stage in ("stt", "npc-brain", "tts")), result.stdout
    assert by_process + 1 < peer, result.stdout
    both = [c for c in lines[peer + 3].split() if c != "|"]
    # sessions | ours p50 p99 | pipecat p50 p99 | cores sess/core | +edge/vad sess/core | pipecat ...
    assert both[0] == "2" and float(both[1]) == float(row[2]), result.stdout
    assert all(float(c) > 0 for c in both[1:]), result.stdout
    assert lines[peer + 4].startswith("pipecat   2 sessions, p50 cumulative: stt final"), result.stdout
