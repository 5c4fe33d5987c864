"""The ``glyphoxa session ...`` commands: list, export, replay and timeline of recorded
sessions (docs/debugging.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from glyphoxa_cli.main import ApiAccess
    from glyphoxa_cli.sessions import Door


def _fail(message: str, code: int = 2) -> int:
    print(f"glyphoxa: error: {message}", file=sys.stderr)
    return code


@asynccontextmanager
async def tenant_door(nats_url: str, access: ApiAccess, tenant: str) -> AsyncIterator[Door]:
    """The tenant's admin API client (its key given, or made with the stack's operator key
    for a tenant that exists) and a NATS connection."""
    from glyphoxa_bus.connection import BusSettings, connect
    from glyphoxa_cli.admin import AdminClient, AdminError, tenant_client
    from glyphoxa_cli.main import FIRST_CONNECT_S
    from glyphoxa_cli.sessions import Door, SessionProblem
    from glyphoxa_cli.stack import save_tenant_key, stack_keys

    if access.api_key:
        client = AdminClient(access.url, access.api_key)
        tenant = (await client.call("GET", "/v1/me"))["id"]
    elif access.operator_key:
        async with AdminClient(access.url, access.operator_key) as operator:
            try:
                await operator.call("GET", f"/v1/tenants/{tenant}")
            except AdminError as exc:
                if exc.status in (404, 422):
                    raise SessionProblem(f"no tenant {tenant!r} (--tenant names one)") from None
                raise
        known = stack_keys(access.home).get("tenant_keys", {}).get(tenant) if access.home else None
        client, key = await tenant_client(access.url, access.operator_key, tenant, known)
        if access.home and key != known:
            save_tenant_key(access.home, tenant, key)
    else:
        raise SessionProblem("no API key: give --api-key (a tenant key) or run against ./task up")
    try:
        nc = await connect(BusSettings(url=nats_url), name="glyphoxa-session",
                           first_connect_s=FIRST_CONNECT_S)
    except BaseException:
        await client.close()
        raise
    try:
        yield Door(client, nc, tenant)
    finally:
        await client.close()
        await nc.drain()


def _run(args: argparse.Namespace, work: Callable[[Door], Awaitable[int]]) -> int:
    """Connect as the tenant, run ``work``; every expected failure is a message, not a traceback."""
    import httpx
    from nats.errors import Error as NatsError

    from glyphoxa_bus.connection import shown_url
    from glyphoxa_campaign import CampaignError
    from glyphoxa_cli.admin import AdminError
    from glyphoxa_cli.compose import ComposeError
    from glyphoxa_cli.main import stack_access
    from glyphoxa_cli.scenefile import SceneError
    from glyphoxa_cli.sessions import SessionProblem

    try:
        nats_url, access = stack_access(args)
    except ComposeError as exc:
        return _fail(f"the composed stack: {exc}")

    async def go() -> int:
        async with tenant_door(nats_url, access, args.tenant) as door:
            return await work(door)

    try:
        return asyncio.run(go())
    except SessionProblem as exc:
        return _fail(str(exc))
    except AdminError as exc:
        return _fail(f"session-control refused: {exc.message} (HTTP {exc.status})")
    except (CampaignError, SceneError, ValueError, TimeoutError) as exc:
        return _fail(str(exc))
    except (OSError, httpx.HTTPError, NatsError) as exc:
        return _fail(f"cannot reach NATS at {shown_url(nats_url)} or the admin API at {access.url} "
                     f"(is the stack running?): {exc or type(exc).__name__}")


def cmd_list(args: argparse.Namespace) -> int:
    from glyphoxa_cli.sessions import format_sessions, list_sessions

    async def work(door: Door) -> int:
        rows = await list_sessions(door, args.limit)
        print(json.dumps(rows, indent=1) if args.json else format_sessions(rows))
        return 0

    return _run(args, work)


def cmd_export(args: argparse.Namespace) -> int:
    from glyphoxa_cli.outpaths import out_dir
    from glyphoxa_cli.sessions import export_session

    out_dir(args.out)

    async def work(door: Door) -> int:
        out = Path(args.out)
        done = await export_session(door, args.session_id, out)
        tracks = done["tracks"]
        print(f"session {args.session_id}: {len(tracks.pcm)} players ({tracks.duration_s:.1f} s), "
              f"{len(done['rows'])} turns -> {out}/ (scene.json, player_*.wav, campaign.yaml, "
              f"turns.jsonl)\nplay it:  glyphoxa scene play {out} --campaign {out}/campaign.yaml "
              f"--out OUT")
        return 0

    return _run(args, work)


def cmd_replay(args: argparse.Namespace) -> int:
    from glyphoxa_cli.outpaths import out_dir
    from glyphoxa_cli.replay import format_diff, replay_session

    out_dir(args.out)

    async def work(door: Door) -> int:
        diff = await replay_session(door, args.session_id, Path(args.out), source=args.source,
                                    campaign_path=Path(args.campaign) if args.campaign else None,
                                    speed=args.speed, timeout_s=args.timeout)
        print(format_diff(diff))
        differing = [d for d in diff if not d["same"]]
        print(f"\n{len(diff) - len(differing)} of {len(diff)} turns routed and ended the same; "
              f"{args.out}/turns.jsonl, {args.out}/diff.jsonl")
        return 1 if args.check and differing else 0

    return _run(args, work)


def cmd_timeline(args: argparse.Namespace) -> int:
    from glyphoxa_cli.outpaths import out_file
    from glyphoxa_cli.sessions import find_session
    from glyphoxa_cli.timeline_view import format_timeline, timeline_html

    for flag, path in (("--out", args.out), ("--json", args.json)):
        if path:
            out_file(path, flag)

    async def work(door: Door) -> int:
        await find_session(door, args.session_id)
        timeline = await door.client.timeline(args.session_id)
        print(format_timeline(timeline))
        if args.out:
            Path(args.out).write_text(timeline_html(timeline), encoding="utf-8")
            print(f"\nwaterfall: {args.out}")
        if args.json:
            Path(args.json).write_text(json.dumps(timeline, indent=1))
        return 0

    return _run(args, work)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from glyphoxa_cli.main import speed

    session = sub.add_parser("session", help="recorded sessions: list, export, replay, timeline"
                             ).add_subparsers(dest="session_cmd", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--tenant", default="demo", help="whose sessions (default: demo); with "
                       "--api-key the key's tenant")
        p.add_argument("--nats", help="NATS URL (default: the running ./task up stack)")
        p.add_argument("--api", help="session-control admin API URL (default: the running stack's)")
        p.add_argument("--api-key", help="a tenant API key (default: $GLYPHOXA_API_KEY, or the "
                                         "running stack makes one for --tenant)")
        p.add_argument("--stack", choices=("up", "compose"), default="up",
                       help="up: the ./task up stack (default); compose: the composed stack")
        return p

    p = common(session.add_parser("list", help="recent sessions: state, campaign, duration, "
                                                "turns, and whether still replayable"))
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_list)

    p = common(session.add_parser("export", help="a session as a scene directory glyphoxa "
                                                  "scene play accepts (48 kHz WAV per player, "
                                                  "scene.json, campaign.yaml, turns.jsonl)"))
    p.add_argument("session_id")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

    p = common(session.add_parser("replay", help="run a recorded session again in a new "
                                                  "session and compare its turns"))
    p.add_argument("session_id")
    p.add_argument("--out", required=True)
    p.add_argument("--from", dest="source", choices=("audio", "transcripts"), default="audio",
                   help="audio: the players' recorded frames through vad and stt (default); "
                        "transcripts: the final transcripts straight to npc-brain")
    p.add_argument("--campaign", help="a campaign.yaml instead of the session's own snapshot "
                                      "(imported into the tenant's campaigns)")
    p.add_argument("--speed", type=speed, default=1.0, help="pacing only (>= 1)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when any turn's routing or outcome differs")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=cmd_replay)

    p = common(session.add_parser("timeline", help="every turn of a session on one time axis"))
    p.add_argument("session_id")
    p.add_argument("--out", help="also write a self-contained HTML waterfall here")
    p.add_argument("--json", help="also write the timeline's JSON (the admin API's) here")
    p.set_defaults(func=cmd_timeline)
