"""``glyphoxa``: play scenes, run the local stack, the demo, model set-up and benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from glyphoxa_cli.compose import ComposeStack

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_CAMPAIGN = ROOT / "examples" / "campaign.yaml"
EXAMPLE_SCENE = ROOT / "examples" / "scenes" / "smithy"
FIRST_CONNECT_S = 10.0
"""How long a command waits for NATS to answer before it says it cannot reach it (the
services wait for ever; a person at a prompt should not)."""


def speed(text: str) -> float:
    """``--speed``: a replay's pacing, 1 (real time) or faster; checked before anything runs."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1.0 <= value <= 1000.0:  # nan fails both
        raise argparse.ArgumentTypeError(
            f"{text} (1 is real time, more is faster; a slower replay would stretch silences)")
    return value


def _fail(message: str) -> NoReturn:
    print(f"glyphoxa: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _nats_url(arg: str | None) -> str:
    from glyphoxa_cli.stack import running_nats_url

    return arg or os.environ.get("NATS_URL") or running_nats_url() or "nats://127.0.0.1:4222"


def stack_access(args: argparse.Namespace) -> tuple[str, ApiAccess]:
    """The NATS URL and the admin API access of the stack ``--stack`` names (``--nats``,
    ``--api``, ``--api-key`` override); raises ``ComposeError`` when the composed stack
    cannot be read."""
    from glyphoxa_cli.compose import ComposeStack

    if args.stack == "compose":
        stack = ComposeStack()
        return args.nats or stack.nats_url(), ApiAccess.of_compose(stack, args.api, args.api_key)
    return _nats_url(args.nats), ApiAccess.of_running_stack(args.api, args.api_key)


@dataclass
class ApiAccess:
    """Where session-control's admin API is and how to get a tenant key for it."""

    url: str
    operator_key: str | None = None
    api_key: str | None = None
    home: Path | None = None  # the stack's home: tenant keys are kept in its keys.json

    @classmethod
    def of_running_stack(cls, url: str | None = None, api_key: str | None = None) -> ApiAccess:
        from glyphoxa_cli.stack import glyphoxa_home, running_stack, stack_keys

        state = running_stack()
        url = url or os.environ.get("GLYPHOXA_API_URL") or state.get("api_url")
        if not url:
            _fail("no admin API: start the stack with ./task up, or give --api URL and --api-key")
        operator = stack_keys(glyphoxa_home())["operator_key"] if state else None
        return cls(url, operator, api_key or os.environ.get("GLYPHOXA_API_KEY"),
                   glyphoxa_home() if state else None)

    @classmethod
    def of_compose(cls, stack: ComposeStack, url: str | None = None,
                   api_key: str | None = None) -> ApiAccess:
        """The composed stack's admin API (its published port) and, unless a tenant key is
        given, its operator key (read in session-control's container)."""
        api_key = api_key or os.environ.get("GLYPHOXA_API_KEY")
        return cls(url or stack.api_url(), None if api_key else stack.operator_key(), api_key)


async def play_scene(nats_url: str, access: ApiAccess, scene_dir: Path, campaign_path: Path,
                     out_dir: Path, speed: float, tenant: str, timeout_s: float,
                     edge: str = "player") -> list[dict]:
    from glyphoxa_bus.connection import BusSettings, connect
    from glyphoxa_campaign import load_campaign_file
    from glyphoxa_cli.admin import AdminClient, SceneSessions, tenant_client
    from glyphoxa_cli.player import ScenePlayer
    from glyphoxa_cli.results import write_results, write_session_record
    from glyphoxa_cli.scenefile import load_scene
    from glyphoxa_cli.stack import save_tenant_key, stack_keys

    campaign = load_campaign_file(campaign_path)
    scene = load_scene(scene_dir)
    if access.api_key:
        client = AdminClient(access.url, access.api_key)
    elif access.operator_key:
        known = stack_keys(access.home).get("tenant_keys", {}).get(tenant) if access.home else None
        client, key = await tenant_client(access.url, access.operator_key, tenant, known)
        if access.home and key != known:
            save_tenant_key(access.home, tenant, key)
    else:
        _fail("no API key: give --api-key (a tenant key) or run against ./task up")
    nc = await connect(BusSettings(url=nats_url), name="glyphoxa-scene-player",
                       first_connect_s=FIRST_CONNECT_S)
    traces = None
    try:
        door = SceneSessions(client, tenant, campaign_path.read_text(encoding="utf-8"))
        loopback = None
        if edge == "loopback":
            from glyphoxa_bus.publisher import Publisher
            from glyphoxa_discord_edge.loopback import LoopbackEdge
            from glyphoxa_runtime import tracing

            # the edge's playback spans end each turn's trace (OTEL_EXPORTER_OTLP_ENDPOINT)
            traces = tracing.setup("scene-player", tracing.TracingSettings())
            loopback = LoopbackEdge(nc, Publisher(nc, max_in_flight=512), list(scene.tracks))
        player = ScenePlayer(nc, scene, campaign, door, speed=speed, timeout_s=timeout_s,
                             edge=loopback)
        print(f"playing {scene.name} ({scene.duration_s:.1f} s, {len(scene.tracks)} players) "
              f"at {speed:g}x into tenant {tenant} ...", flush=True)
        await player.play()
        rows = write_results(player, out_dir)
        if loopback is not None:
            (Path(out_dir) / "edge.json").write_text(json.dumps(loopback.report(), indent=1))
        record = await write_session_record(client, player.session, out_dir)
        print(f"session {player.session}: {len(rows)} turns -> {out_dir}/turns.jsonl; "
              f"{len(record['transcript'])} transcript lines -> {out_dir}/session.json", flush=True)
        return rows
    finally:
        await client.close()
        await nc.drain()
        if traces is not None:
            await traces.shutdown()


def cmd_scene_play(args: argparse.Namespace) -> int:
    import httpx

    from glyphoxa_bus.connection import shown_url
    from glyphoxa_campaign import CampaignError
    from glyphoxa_cli.admin import AdminError
    from glyphoxa_cli.compose import ComposeError
    from glyphoxa_cli.outpaths import out_dir
    from glyphoxa_cli.results import format_table
    from glyphoxa_cli.scenefile import SceneError

    out_dir(args.out)
    try:
        nats_url, access = stack_access(args)
    except ComposeError as exc:
        _fail(f"the composed stack: {exc}")
    try:
        rows = asyncio.run(play_scene(nats_url, access, Path(args.scene_dir),
                                      Path(args.campaign), Path(args.out), args.speed, args.tenant,
                                      args.timeout, args.edge))
    except AdminError as exc:
        _fail(f"session-control refused: {exc.message} (HTTP {exc.status})")
    except (CampaignError, SceneError, ValueError, TimeoutError) as exc:
        _fail(str(exc))
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the admin API at {access.url} (is the stack running?): "
              f"{exc or type(exc).__name__}")
    except OSError as exc:
        _fail(f"cannot reach NATS at {shown_url(nats_url)} (is the stack running?): {exc}")
    print(format_table(rows))
    return 0


def _stack_env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if getattr(args, "fake", False):
        env.update({"STT_PROVIDER": "fake", "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake",
                    "SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true"})
    return env


MAX_REPLICAS = 16


def _replicas(specs: list[str]) -> dict[str, int]:
    """``up --replicas``: a typo or a service left with no replica would start a stack whose
    sessions never get an answer, so both are errors."""
    from glyphoxa_cli.processes import SERVICES

    out = {}
    for spec in specs or []:
        name, _, count = spec.partition("=")
        if not count.isdigit():
            _fail(f"--replicas takes SERVICE=N, got {spec!r}")
        if name not in SERVICES:
            _fail(f"--replicas: no service {name!r} (the services: {', '.join(SERVICES)})")
        if not 1 <= int(count) <= MAX_REPLICAS:
            _fail(f"--replicas {spec}: between 1 and {MAX_REPLICAS} replicas of a service")
        out[name] = int(count)
    return out


def cmd_up(args: argparse.Namespace) -> int:
    from glyphoxa_bus.connection import shown_url
    from glyphoxa_cli.processes import preferred_port
    from glyphoxa_cli.stack import NatsUnreachable, Stack, glyphoxa_home
    from glyphoxa_cli.supervise import Supervisor

    stack = Stack(glyphoxa_home(), env=_stack_env(args), replicas=_replicas(args.replicas),
                  nats_url=args.nats, api_port=preferred_port(8700))
    print("starting the Glyphoxa stack (first start loads the models, ~20 s) ...", flush=True)
    try:
        try:
            stack.start()
        except (NatsUnreachable, RuntimeError, TimeoutError) as exc:  # it stopped what it started
            _fail(str(exc))
        # the URL carries the operator's NATS login: shown without it (it is in stack.json)
        print(f"\nready. NATS: {shown_url(stack.nats_url or '')}  admin API: {stack.api_url} "
              f"(operator key in {stack.home / 'keys.json'}, NATS login in "
              f"{stack.home / 'stack.json'})\n"
              f"play a scene:  .venv/bin/glyphoxa scene play {EXAMPLE_SCENE.relative_to(ROOT)} "
              f"--campaign {EXAMPLE_CAMPAIGN.relative_to(ROOT)} --out out/\n"
              "Ctrl-C stops everything.", flush=True)
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        supervisor = Supervisor(stack, say=lambda line: print(line, flush=True))
        while not stop["now"]:
            supervisor.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping ...", flush=True)
        stack.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from glyphoxa_cli.outpaths import out_dir
    from glyphoxa_cli.results import format_table
    from glyphoxa_cli.stack import Stack, glyphoxa_home

    if not (EXAMPLE_SCENE / "scene.json").exists():
        _fail(f"{EXAMPLE_SCENE} is missing: run ./task demo (it generates the example scene)")
    out_dir(args.out)
    stack = Stack(glyphoxa_home(), env=_stack_env(args))
    print("starting the Glyphoxa stack: nats-server + 6 services ...", flush=True)
    try:
        stack.start()
        out = Path(args.out)
        access = ApiAccess(stack.api_url, stack.keys()["operator_key"], home=stack.home)
        rows = asyncio.run(play_scene(stack.nats_url or "", access, EXAMPLE_SCENE, EXAMPLE_CAMPAIGN,
                                      out, args.speed, "demo", timeout_s=300))
    finally:
        stack.stop()
    print()
    print(format_table(rows))
    print(f"\naudio: {out}/table_mix.wav (players + NPCs), one npc_*.wav per NPC")
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from glyphoxa_cli.models import prepare

    prepare()
    return 0


TURN_KEYS = {"player", "npc", "outcome", "transcript", "reply", "latency_ms"}


def _turn_problem(row: object) -> str | None:
    """Why a turns.jsonl line is not a turn the table can show (None when it is)."""
    if not isinstance(row, dict):
        return f"not a turn (no {', '.join(sorted(TURN_KEYS))})"
    missing = TURN_KEYS - set(row)
    if missing:
        return f"not a turn (no {', '.join(sorted(missing))})"
    latency = row["latency_ms"]
    if not isinstance(latency, dict) or not all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool))
            for v in latency.values()):
        return "latency_ms must be an object of milliseconds (numbers or null)"
    return None


def cmd_turns(args: argparse.Namespace) -> int:
    from glyphoxa_cli.results import format_table

    path = Path(args.path)
    if path.is_dir():  # a scene's output directory (glyphoxa scene play --out)
        path = path / "turns.jsonl"
    if not path.is_file():
        _fail(f"no {path}: give a turns.jsonl or the directory `glyphoxa scene play` wrote")
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            _fail(f"{path}, line {number}: not JSON ({exc.msg})")
        problem = _turn_problem(row)
        if problem:
            _fail(f"{path}, line {number}: {problem}")
        rows.append(row)
    print(format_table(rows))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """The operator key, for the admin API (``Authorization: Bearer ...``), or with
    ``--nats`` the operator's NATS URL with its login (docs/adr/0006)."""
    from glyphoxa_cli.compose import ComposeError, ComposeStack
    from glyphoxa_cli.stack import glyphoxa_home, read_stack_file, running_nats_url

    if args.compose:
        stack = ComposeStack()
        try:
            key = stack.nats_url() if args.nats else stack.operator_key()
        except ComposeError as exc:
            _fail(f"the composed stack: {exc}")
    elif args.nats:
        key = running_nats_url() or _fail("no stack is running here (./task up)")
    else:
        path = glyphoxa_home() / "keys.json"
        keys = read_stack_file(path, "the local stack's keys")
        if keys is None:
            _fail(f"no {path}: the local stack makes it on its first start (./task up); "
                  "for the composed stack give --compose")
        key = keys.get("operator_key") or _fail(f"{path} has no operator_key")
    print(key)
    return 0


def cmd_secret_key(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from glyphoxa_cli.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glyphoxa", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    scene = sub.add_parser("scene", help="recorded table scenes").add_subparsers(dest="scene_cmd", required=True)
    play = scene.add_parser("play", help="play a scene into a new session and record the turns")
    play.add_argument("scene_dir")
    play.add_argument("--campaign", required=True)
    play.add_argument("--out", required=True)
    play.add_argument("--speed", type=speed, default=1.0, help="pacing only (>= 1); results do not change")
    play.add_argument("--tenant", default="demo")
    play.add_argument("--nats", help="NATS URL (default: the running ./task up stack)")
    play.add_argument("--api", help="session-control admin API URL (default: the running stack's)")
    play.add_argument("--api-key", help="a tenant API key (default: $GLYPHOXA_API_KEY, or the "
                                        "running stack makes one for --tenant)")
    play.add_argument("--timeout", type=float, default=300.0)
    play.add_argument("--edge", choices=("player", "loopback"), default="player",
                      help="player: the player publishes audio.in itself; loopback: through "
                           "discord-edge's receive path and bridge on a local DAVE call, the "
                           "replies played by the edge (out/edge.json: what went through)")
    play.add_argument("--stack", choices=("up", "compose"), default="up",
                      help="up: the ./task up stack (default); compose: the composed stack "
                           "(./task compose-up), its ports and operator key found through "
                           "docker compose")
    play.set_defaults(func=cmd_scene_play)

    up = sub.add_parser("up", help="run nats-server and all services until Ctrl-C")
    up.add_argument("--replicas", nargs="*", help="SERVICE=N, e.g. stt=2")
    up.add_argument("--fake", action="store_true", help="instant fake providers (plumbing only)")
    up.add_argument("--nats", help="use this NATS server instead of starting one")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="start the stack, play the example scene, print the turn table")
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--speed", type=speed, default=1.0, help="pacing (>= 1)")
    demo.add_argument("--fake", action="store_true")
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="local models").add_subparsers(dest="models_cmd", required=True)
    models.add_parser("prepare", help="assemble and verify the bundled models").set_defaults(func=cmd_models_prepare)

    from glyphoxa_cli.session_cli import add_parser as add_session_parser

    add_session_parser(sub)

    turns = sub.add_parser("turns", help="print a turns.jsonl (or a scene's output directory) "
                           "as a table")
    turns.add_argument("path", help="turns.jsonl, or the directory `scene play` wrote it to")
    turns.set_defaults(func=cmd_turns)

    keys = sub.add_parser("keys", help="print the operator key of the admin API")
    keys.add_argument("--nats", action="store_true",
                      help="the operator's NATS URL with its login (for nats CLI tools) "
                           "instead of the admin API's key")
    keys.add_argument("--compose", action="store_true",
                      help="of the composed stack (read in session-control's container), "
                           "not of ./task up")
    keys.set_defaults(func=cmd_keys)

    sub.add_parser("secret-key", help="print a new key for SESSION_CONTROL_SECRET_KEYS "
                                      "(encrypts bot tokens and provider keys at rest)"
                   ).set_defaults(func=cmd_secret_key)

    bench = sub.add_parser("bench", help="bus overhead and local provider latency")
    bench.add_argument("--sessions", type=int, nargs="*", default=[1, 10])
    bench.add_argument("--turns", type=int, default=20, help="turns per session")
    bench.add_argument("--pacing", choices=("table", "out"), default="table",
                       help="next line after the reply was heard (table) or once its audio is "
                            "published (out: issue 2's pacing, ~4x a table's load)")
    bench.add_argument("--skip-providers", action="store_true")
    bench.add_argument("--skip-peer", action="store_true",
                       help="without part 1's peer, the same turns through Pipecat (.venv-peer)")
    bench.add_argument("--skip-memory", action="store_true",
                       help="skip the run without and with memory recall (issue 16)")
    bench.add_argument("--memory-only", action="store_true",
                       help="only the run without and with memory recall")
    bench.add_argument("--memories", type=int, default=300,
                       help="embedded memories of the NPC in the campaign for the recall run")
    bench.set_defaults(func=cmd_bench)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken like Ctrl-C: every command that started processes (a stack, the
    Pipecat peer) stops them in its ``finally``, rather than leaving them running."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    from glyphoxa_cli.outpaths import OutPathError
    from glyphoxa_cli.stack import StackFileError

    try:
        return int(args.func(args) or 0)
    except (StackFileError, OutPathError) as exc:  # checked by every command alike
        _fail(str(exc))
    except KeyboardInterrupt as exc:
        print("glyphoxa: stopped", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    raise SystemExit(main())
