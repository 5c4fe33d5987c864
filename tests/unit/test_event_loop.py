"""``EVENT_LOOP``: the services run in uvloop's event loop unless asked for asyncio's."""

from __future__ import annotations

import asyncio

import pytest

from glyphoxa_runtime.service import run_in_loop
from glyphoxa_runtime.settings import ServiceSettings


async def _loop_kind() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_the_default_loop_is_uvloop_and_asyncio_can_be_asked_for(monkeypatch):
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert ServiceSettings().event_loop == "uvloop"
    assert run_in_loop("uvloop", _loop_kind()).startswith("uvloop")
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    chosen = ServiceSettings().event_loop
    assert chosen == "asyncio" and run_in_loop(chosen, _loop_kind()) == "asyncio.unix_events"


def test_an_unknown_loop_is_a_settings_error(monkeypatch):
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="event_loop|EVENT_LOOP"):
        ServiceSettings()
