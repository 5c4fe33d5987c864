from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SCENE = ROOT / "examples" / "scenes" / "smithy"
EXAMPLE_CAMPAIGN = ROOT / "examples" / "campaign.yaml"
CORPUS = Path(os.environ.get("GLYPHOXA_CORPUS", ROOT.parent / "shared" / "corpus"))
CORPUS_SCENE = CORPUS / "scenes" / "forge_and_tavern"


COMPOSE_TIMINGS = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter, config):  # type: ignore[no-untyped-def]
    """The compose test's step durations, printed whether it passed or not."""
    if COMPOSE_TIMINGS in config.stash:
        terminalreporter.write_sep("-", "compose e2e, step durations")
        terminalreporter.write_line(config.stash[COMPOSE_TIMINGS])


def pytest_collection_modifyitems(items):
    for item in items:
        if "e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


async def scene_door(stack, tenant: str, campaign: Path = EXAMPLE_CAMPAIGN):  # type: ignore[no-untyped-def]
    """The scene player's door into the stack's session-control, as tenant ``tenant``."""
    from glyphoxa_cli.admin import SceneSessions, tenant_client

    client, _ = await tenant_client(stack.api_url, stack.keys()["operator_key"], tenant)
    return SceneSessions(client, tenant, campaign.read_text(encoding="utf-8"))


async def stack_api(stack, tenant: str, method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
    """One admin API call into the stack's session-control, as tenant ``tenant``."""
    from glyphoxa_cli.admin import tenant_client

    client, _ = await tenant_client(stack.api_url, stack.keys()["operator_key"], tenant)
    try:
        return await client.call(method, path, **kwargs)
    finally:
        await client.close()


def wait_for(what: str, check, timeout_s: float):  # type: ignore[no-untyped-def]
    """``check()``'s first truthy value, asked every second; fails naming ``what`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(1.0)


@pytest.fixture(scope="session")
def compose_images():  # type: ignore[no-untyped-def]
    """compose.yaml's images, built once for the run (both compose modules start from them);
    skips, saying why, where no Docker engine answers."""
    from tests.support.compose import build_images

    return build_images()
