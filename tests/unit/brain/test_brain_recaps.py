"""npc-brain's recaps (glyphoxa_npc_brain.recaps): made with the campaign's LLM, never in a
turn's way on the local model."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from glyphoxa_events.models import Usage
from glyphoxa_events.recaps import RecapReply, RecapRequest
from glyphoxa_npc_brain.llm.fake import FakeLLM
from glyphoxa_npc_brain.metrics import BrainMetrics
from glyphoxa_npc_brain.recaps import RecapMaker
from tests.unit.brain.brain_fakes import campaign, make_pool, metric

pytestmark = pytest.mark.unit

CAMPAIGN = campaign("Greta", "Aldric")
EXCHANGES = ("Sam to Greta: We will hunt the red dragon of Mount Ash.",
             "Greta: Then take my best spear, and pay me when you come back.")


def request(**more: object) -> RecapRequest:
    return RecapRequest(tenant="acme", session="s1", campaign=CAMPAIGN, npc="greta",
                        exchanges=EXCHANGES, **more)  # type: ignore[arg-type]


def maker(llm: FakeLLM, now: list[float], quiet_s: float = 10.0) -> tuple[RecapMaker, object]:
    metrics = BrainMetrics(registry=CollectorRegistry())
    pool = make_pool(llm, metrics)
    pool._clock = lambda: now[0]  # the pool stamps turns with the same clock
    return RecapMaker(None, pool, metrics, quiet_s=quiet_s, timeout_s=5, max_tokens=100,  # type: ignore[arg-type]
                      clock=lambda: now[0]), pool


async def test_a_recap_is_written_in_the_first_person_from_what_the_npc_went_through():
    llm = FakeLLM("**Greta:** Sam swore to hunt the red dragon of Mount Ash; I lent a spear.")
    recaps, _ = maker(llm, [100.0])
    reply = await recaps.make(request(previous="Sam owes me ten gold."))
    assert reply.ok and not reply.busy and reply.provider == "fake"
    assert reply.text == "Sam swore to hunt the red dragon of Mount Ash; I lent a spear."
    system, messages, _, _ = llm.calls[0]
    assert "Greta" in system and "first person" in system
    assert all(line in system for line in EXCHANGES) and "Sam owes me ten gold." in system
    assert [m.content for m in messages] == ["Your memory of this session:"]


async def test_on_the_local_model_a_recap_waits_until_no_turn_started_for_a_while():
    now = [100.0]
    recaps, pool = maker(FakeLLM("I remember."), now, quiet_s=10)
    pool.chain_for("acme", CAMPAIGN, CAMPAIGN.npc("greta"))  # a turn asks for its providers
    now[0] += 3
    assert (await recaps.make(request())) == RecapReply(ok=True, busy=True)
    now[0] += 10
    assert (await recaps.make(request())).text == "I remember."


async def test_a_turn_that_starts_mid_recap_takes_the_model_and_the_recap_gives_way():
    llm = FakeLLM(" ".join(["word"] * 200), token_delay_s=0.01)
    recaps, pool = maker(llm, [100.0])
    making = asyncio.create_task(recaps.make(request()))
    await asyncio.sleep(0.1)
    pool.chain_for("acme", CAMPAIGN, CAMPAIGN.npc("aldric"))
    reply = await asyncio.wait_for(making, 2)
    assert reply.busy and reply.text == ""
    assert not pool._turn_watchers  # nothing left behind


class UsageSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Usage, str]] = []

    async def publish(self, subject: str, data: bytes, msg_id: str) -> None:
        self.sent.append((subject, Usage.model_validate_json(data), msg_id))


async def test_the_tokens_of_a_recap_are_the_sessions_usage_made_or_given_way():
    sink = UsageSink()
    recaps, pool = maker(FakeLLM("I lent Sam my best spear."), [100.0])
    recaps._usage = sink
    assert (await recaps.make(request())).ok
    assert {(subject, u.metric, u.provider, u.stage) for subject, u, _ in sink.sent} == {
        ("glx.acme.s1.usage.npc-brain", "llm_tokens_in", "fake", "npc-brain"),
        ("glx.acme.s1.usage.npc-brain", "llm_tokens_out", "fake", "npc-brain")}
    keys = {u.key for _, u, _ in sink.sent}
    assert len(keys) == 1 and next(iter(keys)).startswith("recap:greta:")
    assert all(u.amount > 0 for _, u, _ in sink.sent)

    # a recap that gave way to a turn spent tokens too, under a key of its own
    slow = FakeLLM(" ".join(["word"] * 200), token_delay_s=0.01)
    recaps, pool = maker(slow, [100.0])
    recaps._usage = sink
    making = asyncio.create_task(recaps.make(request()))
    await asyncio.sleep(0.1)
    pool.chain_for("acme", CAMPAIGN, CAMPAIGN.npc("aldric"))
    assert (await asyncio.wait_for(making, 2)).busy
    assert len({u.key for _, u, _ in sink.sent}) == 2


class Msg:
    def __init__(self, data: bytes):
        self.data, self.reply, self.sent = data, "_INBOX.x", []

    async def respond(self, data: bytes) -> None:
        self.sent.append(json.loads(data))


async def test_a_malformed_request_gets_a_final_error_and_is_counted():
    recaps, _ = maker(FakeLLM(), [100.0])
    msg = Msg(b'{"tenant": "acme", "npc": "greta"}')
    await recaps._on_request(msg)  # type: ignore[arg-type]
    [sent] = msg.sent
    assert sent["ok"] is False and sent["retryable"] is False and "invalid recap" in sent["error"]
    assert metric(recaps._metrics, "glyphoxa_npc_brain_recaps_total", result="error") == 1


class Failing(FakeLLM):
    async def _stream_impl(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        from glyphoxa_runtime.providers import ProviderTimeout
        raise ProviderTimeout("fake", 10.0)
        yield ""  # pragma: no cover


async def test_failed_recaps_never_open_the_breaker_the_turns_go_by():
    """A fresh-clone evaluation saw every recap time out, open npc-brain's breaker, and all
    the next session's turns fail at once."""
    llm = Failing()
    recaps, pool = maker(llm, [100.0])
    for _ in range(10):
        reply = await recaps.make(request())
        assert not reply.ok and "no answer within" in (reply.error or "")
    chain = pool.chain_for("acme", CAMPAIGN, CAMPAIGN.npc("greta"))
    link = await pool.link("acme", chain.choices[0])
    assert link.breaker.allow()  # the turns still get the model


def test_a_session_too_long_for_the_context_keeps_its_newest_lines():
    from glyphoxa_npc_brain.recaps import LEFT_OUT, recap_prompt

    lines = tuple(f"line {i}: " + "word " * 20 for i in range(100))
    req = RecapRequest(tenant="acme", session="s1", campaign=CAMPAIGN, npc="greta", exchanges=lines)
    system, _ = recap_prompt(req, fits=lambda text: len(text) < 3000)
    assert len(system) < 3000 and LEFT_OUT in system
    assert lines[-1] in system and lines[0] not in system
    kept = [line for line in lines if line in system]
    assert kept == list(lines[-len(kept):])  # the newest, in order
