#!/usr/bin/env python3
"""The memory evaluation with the local LLM (issue 16): recall and leakage over two sessions.

    .venv/bin/python scripts/bench_memory.py [--llm llama|fake] [--filler 20] [--json out.json]

Starts a stack (nats-server, PostgreSQL, session-control with the local MiniLM embedder, vad,
stt, npc-brain, tts; stt and tts are the instant fakes, since the lines go to npc-brain as
final transcripts, and npc-brain runs the default local LLM, the bundled
Qwen2.5-Coder-1.5B-Instruct Q4) and plays ``glyphoxa_cli.memory_eval``'s cases: session 1
tells each fact to an NPC among ``--filler`` lines of table chatter per NPC, the GM teaches
one; after the session has ended, its memories are embedded and the recaps made (at most
``--recap-wait`` s), session 2 asks each question of the NPC that witnessed the fact and of
one or two that did not. Prints recall and leakage at prompt level (the fact's memory in
the NPC's prompt) and at reply level (the reply names the fact), and every case.
The services inherit this process's environment (e.g. ``BRAIN_RECALL_K=8``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from glyphoxa_cli.memory_eval import CASES, recall_counts, run_eval
from glyphoxa_cli.stack import STAGE_SERVICES, Stack, glyphoxa_home

TENANT = "memorybench"


async def evaluate(stack: Stack, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from glyphoxa_bus.connection import BusSettings, connect
    from glyphoxa_cli.admin import tenant_client

    client, _ = await tenant_client(stack.api_url, stack.keys()["operator_key"], TENANT)
    nc = await connect(BusSettings(url=stack.nats_url or ""), name="bench-memory")
    try:
        return await run_eval(client, nc, TENANT, CASES, filler_per_npc=args.filler,
                              turn_timeout_s=args.turn_timeout, recap_timeout_s=args.recap_wait,
                              progress=lambda m: print(f"  {m}", flush=True))
    finally:
        await nc.close()
        await client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llm", choices=("llama", "fake"), default="llama",
                   help="npc-brain's LLM: the local model (default) or the instant fake")
    p.add_argument("--filler", type=int, default=20, help="chatter lines per NPC in session 1")
    p.add_argument("--turn-timeout", type=float, default=120.0, help="seconds a turn may take")
    p.add_argument("--recap-wait", type=float, default=300.0,
                   help="seconds to wait for the recaps before session 2 (0: start it at once)")
    p.add_argument("--json", type=Path, help="write the per-case rows here")
    p.add_argument("--keep-home", action="store_true", help="keep the stack's home and logs")
    args = p.parse_args(argv)

    env = {"STT_PROVIDER": "fake", "TTS_PROVIDER": "fake", "BRAIN_LLM_PROVIDER": args.llm,
           "SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true", "LOG_LEVEL": "warning",
           "SESSION_CONTROL_RECAP_RETRY_S": "2"}  # recaps soon after session 1
    if args.llm == "llama":
        from glyphoxa_npc_brain.models import ensure_default_model

        env["BRAIN_LLM_MODEL_PATH"] = str(ensure_default_model(glyphoxa_home()))
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-bench-memory-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as `nobody` and must reach its data
    stack = Stack(home / "stack", env=env, services=("session-control", *STAGE_SERVICES))
    print(f"{os.cpu_count()} cores; npc-brain LLM {args.llm}; {len(CASES)} cases, "
          f"{args.filler} chatter lines per NPC; stack home {home}", flush=True)
    started = time.monotonic()
    try:
        stack.start(progress=lambda s: None)
        scores = asyncio.run(evaluate(stack, args))
        brain = stack.by_name("npc-brain-1")
        recalls = recall_counts(httpx.get(f"http://127.0.0.1:{brain.metrics_port}/metrics").text)
    finally:
        stack.stop()
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
    print(f"\n{scores.table()}\n\n{scores.summary()}")
    print(f"npc-brain's recalls by result (both sessions): {recalls}")
    print(f"(targets: prompt recall 100 %, prompt leakage 0 %; reply recall >= 80 %, reply "
          f"leakage <= 5 %) [{time.monotonic() - started:.0f} s]")
    if args.json:
        args.json.write_text(json.dumps(scores.rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
