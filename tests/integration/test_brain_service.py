"""npc-brain as a process against a real nats-server: its real entry point, claims, final
transcripts in, reply chunks and turn events out, rejection, GM lines and failover."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from glyphoxa_bus.claims import publish_claims
from glyphoxa_bus.streams import WORK
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    Event,
    FailureStage,
    NameMatch,
    NpcSpeak,
    Outcome,
    ReplyChunk,
    RouteKind,
    RoutingExplained,
    SessionStarted,
    SessionStopped,
    Transcript,
    TurnEnded,
    TurnFailure,
    control_subject_suffix,
)
from glyphoxa_events.subjects import SessionSubjects, claim_subject
from tests.support.fakes.gemini import API_KEY as GEMINI_KEY
from tests.support.fakes.gemini import FakeGemini, thinking_budget
from tests.support.fakes.llm_stream import Reply
from tests.support.fakes.openai_compat import API_KEY as OPENAI_KEY
from tests.support.fakes.openai_compat import FakeOpenAI
from tests.support.service import UsageLog, http_get, lists_the_session, metric, wait_for

pytestmark = pytest.mark.integration

CAMPAIGN = Campaign(
    name="Forge and Tavern",
    npcs=(
        Npc(name="Greta", persona="A gruff dwarven blacksmith."),
        Npc(name="Aldric", persona="Innkeeper of the Prancing Stag."),
        Npc(name="Captain Voss", persona="Captain of the city watch."),
    ),
)


def start_brain(nats_url: str, log_path: Path) -> ServiceProcess:
    return ServiceProcess(
        "npc-brain",
        env={
            "NATS_URL": nats_url,
            "NATS_CLAIM_LEASE_S": "2",
            "BRAIN_LLM_PROVIDER": "fake",
        },
        log_path=log_path,
    ).start()


@pytest.fixture
def brain(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    service = start_brain(nats_url, tmp_path / "brain.log")
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


class Session:
    """Plays the other stages of one session: session-control, stt, the edge."""

    def __init__(self, nc, tenant: str, session: str = "s1"):
        self.nc, self.js = nc, nc.jetstream()
        self.subjects = SessionSubjects(tenant, session)
        self.chunks: list[tuple[str, str, dict[str, str], ReplyChunk]] = []
        self.turns: list[TurnEnded] = []
        self._subs: list = []

    async def start(self) -> None:
        for subject, handle in (
            (self.subjects.reply("*"), self._on_chunk),
            (self.subjects.ctl("turn"), self._on_turn),
        ):
            self._subs.append(
                await self.js.subscribe(
                    subject, cb=handle, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
                )
            )
        await self.control(SessionStarted(campaign=CAMPAIGN, started_ns=time.time_ns()), "1")
        await publish_claims(self.nc, self.subjects.tenant, self.subjects.session, ["npc-brain"])

    async def _on_chunk(self, msg) -> None:
        headers = dict(msg.headers or {})
        self.chunks.append(
            (
                msg.subject,
                headers.get(H.MSG_ID, ""),
                headers,
                ReplyChunk.model_validate_json(msg.data),
            )
        )

    async def _on_turn(self, msg) -> None:
        self.turns.append(TurnEnded.model_validate_json(msg.data))

    async def control(self, event: Event, key: str) -> None:
        kind = control_subject_suffix(event)
        s = self.subjects
        await self.js.publish(
            s.ctl(kind),
            event.to_bytes(),
            headers={H.MSG_ID: f"ctl:{s.tenant}.{s.session}:{kind}:{key}"},
        )

    async def say(
        self, speaker: str, utt: str, text: str, end_s: float, final: bool = True
    ) -> None:
        t = Transcript(
            utterance_id=utt,
            speaker=speaker,
            text=text,
            final=final,
            start_ns=int((end_s - 1) * 1e9),
            speech_end_ns=int(end_s * 1e9),
            vad_end_ns=time.time_ns(),
            stt_final_ns=time.time_ns(),
        )
        await self.raw(speaker, t.to_bytes(), f"{utt}:{'final' if final else 'p0'}")

    async def raw(self, speaker: str, body: bytes, key: str) -> None:
        s = self.subjects
        await self.js.publish(
            s.stt(speaker), body, headers={H.MSG_ID: f"stt:{s.tenant}.{s.session}:{key}"}
        )

    def turn(self, turn_id: str) -> TurnEnded:
        found = [t for t in self.turns if t.turn_id == turn_id]
        assert len(found) == 1, f"{len(found)} turn events for {turn_id}"
        return found[0]

    def replies(self, turn_id: str) -> list[tuple[str, str, dict[str, str], ReplyChunk]]:
        return [c for c in self.chunks if c[3].turn_id == turn_id]

    async def stop(self) -> None:
        await self.control(SessionStopped(stopped_ns=time.time_ns()), "1")

    async def close(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()








async def claim_released(js, subjects: SessionSubjects) -> bool:
    try:
        await js.get_last_msg(WORK, claim_subject("npc-brain", subjects.tenant, subjects.session))
    except NotFoundError:
        return True
    return False


async def test_brain_answers_the_addressed_npc_and_rejects_malformed_input(
    brain: ServiceProcess, nc, tenant: str
) -> None:
    session = Session(nc, tenant)
    await session.start()
    usage = await UsageLog().follow(session.js, session.subjects)
    try:
        await session.say("alex", "alex-0", "Greta, how mu", end_s=10, final=False)
        await session.say("alex", "alex-0", "Greta, how much for the longsword?", end_s=10)
        await session.raw("alex", b'{"utterance_id": "oops"', "alex-9:final")
        await session.say("sam", "sam-0", "Could you sharpen my axe too?", end_s=15)
        await session.say("jordan", "jordan-0", "I roll for perception, that's a twelve.", end_s=18)
        await session.say("jordan", "jordan-1", "Captain Boss, a word?", end_s=25)
        await wait_for(lambda: len(session.turns) >= 4)
        await lists_the_session(session.js, "npc-brain", session.subjects, brain)

        greta = session.turn("alex-0")
        assert (greta.outcome, greta.npc, greta.transcript) == (
            Outcome.answered,
            "greta",
            "Greta, how much for the longsword?",
        )
        assert greta.reply_text == "Aye, that I can do. The longsword, you say? Come back at dawn."
        assert greta.latency.speech_end_ns == 10 * 10**9 and greta.latency.first_sentence_ns > 0
        chunks = session.replies("alex-0")
        s = session.subjects
        assert [(subj, mid) for subj, mid, _, _ in chunks] == [
            (s.reply("greta"), f"reply:{tenant}.s1:alex-0:{i}") for i in range(4)
        ]  # BRAIN_FIRST_CLAUSE: "Aye," goes first
        assert [c.text for *_, c in chunks][:2] == ["Aye,", "that I can do."]
        assert [c.final for *_, c in chunks] == [False, False, False, True]
        assert all(h[H.TURN] == "alex-0" for _, _, h, _ in chunks)

        follow = session.turn("sam-0")
        assert (follow.outcome, follow.npc) == (Outcome.answered, "greta")
        table = session.turn("jordan-0")
        assert (table.outcome, table.npc) == (Outcome.not_addressed, None) and not session.replies(
            "jordan-0"
        )
        voss = session.turn("jordan-1")
        assert (voss.outcome, voss.npc) == (Outcome.answered, "captain-voss")
        # every turn event says why it went where it went
        assert greta.routing == RoutingExplained(
            kind=RouteKind.name_start, npc="greta", name="Greta", name_kind="name",
            matched="Greta", word=0, start=0, end=5, match=NameMatch.exact, score=100.0,
            why="named at the start: 'Greta'")
        assert follow.routing is not None and (
            follow.routing.kind, follow.routing.last_npc, follow.routing.since_last_ms) == (
            RouteKind.followup, "greta", 5000)
        assert table.routing is not None and (table.routing.kind, table.routing.cue) == (
            RouteKind.table_talk, "mechanics")
        assert voss.routing is not None and (
            voss.routing.name, voss.routing.matched, voss.routing.match) == (
            "Captain Voss", "Captain Boss", NameMatch.fuzzy)
        assert all(t.failure is None for t in session.turns)
        assert {t.turn_id for t in session.turns} == {"alex-0", "sam-0", "jordan-0", "jordan-1"}

        port = brain.metrics_port
        assert metric(port, "glyphoxa_npc_brain_rejected_messages_total", reason="malformed") == 1
        assert metric(port, "glyphoxa_npc_brain_turns_total", outcome="answered") == 3
        assert metric(port, "glyphoxa_npc_brain_turns_total", outcome="not_addressed") == 1
        assert metric(port, "glyphoxa_npc_brain_turns_total", outcome="answered",
                      reason="name_start_fuzzy") == 1
        assert metric(port, "glyphoxa_npc_brain_turns_total", outcome="not_addressed",
                      reason="table_talk_cue") == 1
        assert metric(port, "glyphoxa_npc_brain_routing_decisions_total", kind="followup") == 1
        assert metric(port, "glyphoxa_npc_brain_first_sentence_seconds_count") == 3
        assert metric(port, "glyphoxa_npc_brain_llm_tokens_total", direction="out") > 0

        # one LLM call per answered turn, tokens in and out (the fake counts words); a guess
        # started on the interim "Greta, how mu" and dropped by the final is billed under its
        # own key (llm:alex-0:guess1:N) when its call got under way: how far it got depends
        # on the machine's load, so it is left out of the count
        def turn_usage() -> list:
            return [item for item in usage.items if ":guess" not in item[2].key]

        await wait_for(lambda: len(turn_usage()) >= 6)
        assert sorted((u.key, u.metric) for _, _, u in turn_usage()) == [
            (f"llm:{turn}:0", metric) for turn in ("alex-0", "jordan-1", "sam-0")
            for metric in ("llm_tokens_in", "llm_tokens_out")]
        assert all(u.key.startswith("llm:alex-0:guess") for _, _, u in usage.items
                   if ":guess" in u.key)
        tokens_out = {k: u for k, u in usage.of("llm_tokens_out").items() if ":guess" not in k}
        assert set(tokens_out) == {k for k in usage.of("llm_tokens_in") if ":guess" not in k} == {
            "llm:alex-0:0", "llm:sam-0:0", "llm:jordan-1:0"}
        assert tokens_out["llm:alex-0:0"].amount == len(greta.reply_text.split()) == 13
        assert all(u.amount > 10 for u in usage.of("llm_tokens_in").values())  # persona + line
        assert all((subj, u.stage, u.provider) == (s.usage("npc-brain"), "npc-brain", "fake")
                   for subj, _, u in usage.items)
        assert f"usage:{tenant}.s1:llm_tokens_out:llm:alex-0:0" in {m for _, m, _ in usage.items}

        await session.control(
            NpcSpeak(npc="aldric", text="Welcome, friends! Sit anywhere.", request_id="gm-1"),
            "gm-1",
        )
        await wait_for(lambda: any(c.final for *_, c in session.replies("gm-1")))
        assert [(c.npc, c.text) for *_, c in session.replies("gm-1")] == [
            ("aldric", "Welcome, friends!"),
            ("aldric", "Sit anywhere."),
        ]

        await session.stop()
        await wait_for(lambda: claim_released(session.js, session.subjects))
        assert len(turn_usage()) == 6  # a GM line costs no tokens
    finally:
        await session.close()
        await usage.close()


async def test_a_replica_taking_over_continues_the_conversation(
    nats_url: str, nc, tenant: str, tmp_path: Path
) -> None:
    first = start_brain(nats_url, tmp_path / "brain-1.log")
    second: ServiceProcess | None = None
    session = Session(nc, tenant)
    try:
        first.wait_ready()
        await session.start()
        await session.say("alex", "alex-0", "Aldric, two rooms for the night.", end_s=100)
        await wait_for(lambda: session.turns)
        first.kill9()  # no goodbye: the claim's lease runs out

        second = start_brain(nats_url, tmp_path / "brain-2.log")
        second.wait_ready()
        await session.say("sam", "sam-0", "Is the stew fresh?", end_s=110)
        await wait_for(lambda: len(session.turns) >= 2, timeout_s=60)

        follow = session.turn("sam-0")
        assert (follow.outcome, follow.npc, follow.reason) == (
            Outcome.answered,
            "aldric",
            "follow-up to Aldric",
        )  # state rebuilt from the turn events
        assert [t.turn_id for t in session.turns] == ["alex-0", "sam-0"]  # nothing answered twice
        await asyncio.sleep(0.5)
        assert len(session.replies("alex-0")) == 4  # "Aye," and three sentences
        state = json.loads(http_get(second.metrics_port, "/readyz"))
        assert f"{tenant}/s1" in state["sessions"] and state["llm"]["provider"] == "fake"
    finally:
        await session.close()
        first.stop()
        if second is not None:
            second.stop()


async def test_brain_answers_with_gemini_against_the_fake_gemini_api(
    nats_url: str, nc, tenant: str, tmp_path: Path
) -> None:
    """BRAIN_LLM_PROVIDER=gemini really runs Gemini in the service: the SDK streams from a
    fake that speaks Google's wire format; the key reaches the API and no log line."""
    reply = Reply(text="Fifty gold, and not a copper less. Come back at dawn.", chunks=4,
                  chunk_delay_s=0.02, prompt_tokens=211, completion_tokens=14)
    with FakeGemini(default=reply).in_thread() as fake:
        service = ServiceProcess(
            "npc-brain",
            env={
                "NATS_URL": nats_url,
                "NATS_CLAIM_LEASE_S": "2",
                "BRAIN_LLM_PROVIDER": "gemini",
                "BRAIN_GEMINI_API_KEY": GEMINI_KEY,
                "BRAIN_GEMINI_BASE_URL": fake.url,
                "LOG_LEVEL": "debug",
            },
            log_path=tmp_path / "brain.log",
        ).start()
        session = Session(nc, tenant)
        try:
            service.wait_ready()
            state = json.loads(http_get(service.metrics_port, "/readyz"))
            assert state["llm"] == {"provider": "gemini", "model": "gemini-2.5-flash"}
            await session.start()
            await session.say("alex", "alex-0", "Greta, how much for the longsword?", end_s=10)
            await wait_for(lambda: session.turns)
            turn = session.turn("alex-0")
            assert (turn.outcome, turn.npc, turn.reply_text) == (
                Outcome.answered, "greta", reply.text)
            assert [c.text for *_, c in session.replies("alex-0")] == [
                "Fifty gold,", "and not a copper less.", "Come back at dawn."]  # first clause
            seen = fake.requests[0]
            assert seen.key_ok and "Greta" in (seen.system or "")
            assert seen.contents[-1] == ("user", "Greta, how much for the longsword?")
            assert seen.generation["maxOutputTokens"] == 60 and thinking_budget(seen) == 0
            port = service.metrics_port
            assert metric(port, "glyphoxa_npc_brain_llm_tokens_total", provider="gemini",
                          direction="in") == 211
            assert metric(port, "glyphoxa_npc_brain_llm_tokens_total", provider="gemini",
                          direction="out") == 14
        finally:
            await session.close()
            service.stop()
    assert GEMINI_KEY not in (tmp_path / "brain.log").read_text()


async def test_brain_falls_back_from_a_failing_gemini_to_openai_and_stops_calling_it(
    nats_url: str, nc, tenant: str, tmp_path: Path
) -> None:
    """BRAIN_LLM_FALLBACK wired in the service: Gemini answers 503, the OpenAI-compatible
    server speaks instead and the turn event names it; once Gemini's breaker is open (after
    BRAIN_BREAKER_FAILURES failed turns) no request reaches Gemini, and /readyz shows it."""
    with FakeGemini(default=Reply(status=503)).in_thread() as down, \
            FakeOpenAI().in_thread() as backup:
        service = ServiceProcess(
            "npc-brain",
            env={
                "NATS_URL": nats_url,
                "NATS_CLAIM_LEASE_S": "2",
                "BRAIN_LLM_PROVIDER": "gemini",
                "BRAIN_GEMINI_API_KEY": GEMINI_KEY,
                "BRAIN_GEMINI_BASE_URL": down.url,
                "BRAIN_LLM_FALLBACK": "openai",
                "BRAIN_OPENAI_BASE_URL": backup.url,
                "BRAIN_OPENAI_API_KEY": OPENAI_KEY,
                "BRAIN_BREAKER_FAILURES": "2",
                "LOG_LEVEL": "debug",
            },
            log_path=tmp_path / "brain.log",
        ).start()
        session = Session(nc, tenant)
        try:
            service.wait_ready()
            await session.start()
            for n in range(3):
                await session.say("alex", f"alex-{n}", "Greta, how much for the longsword?",
                                  end_s=10 + n)
                await wait_for(lambda n=n: len(session.turns) > n)
            for n in range(3):
                turn = session.turn(f"alex-{n}")
                assert (turn.outcome, turn.npc, turn.llm_provider) == (
                    Outcome.answered, "greta", "openai")
            assert len(down.requests) == 4  # two turns, each a call and its retry; then none
            assert len(backup.requests) == 3 and all(r.key_ok for r in backup.requests)
            state = json.loads(http_get(service.metrics_port, "/readyz"))
            assert state["llm"] == {"provider": "gemini", "model": "gemini-2.5-flash"}
            assert state["llms"]["chain"] == ["gemini/gemini-2.5-flash", "openai/gpt-4o-mini"]
            assert [(p["provider"], p["key"], p["breaker"]) for p in state["llms"]["providers"]] == [
                ("gemini", "configured", "open"), ("openai", "configured", "closed")]
            port = service.metrics_port
            assert metric(port, "glyphoxa_npc_brain_llm_breakers", provider="gemini",
                          state="open") == 1
            assert metric(port, "glyphoxa_npc_brain_llm_fallbacks_total", provider="gemini",
                          reason="error") == 2
            assert metric(port, "glyphoxa_npc_brain_llm_fallbacks_total", provider="gemini",
                          reason="breaker_open") == 1
        finally:
            await session.close()
            service.stop()
    log = (tmp_path / "brain.log").read_text()
    assert "circuit breaker open" in log and "trying openai/gpt-4o-mini" in log
    assert GEMINI_KEY not in log and OPENAI_KEY not in log


async def test_failed_turns_say_which_stage_and_provider_failed_and_whether_to_retry(
    nats_url: str, nc, tenant: str, tmp_path: Path
) -> None:
    """A turn whose LLM answers 503 fails naming gemini and retryable; a line stt could not
    hear fails in stt; a mention of an NPC is table talk that names the NPC and why it did
    not count. All as the service publishes them, with the reason label on its counter."""
    with FakeGemini(default=Reply(status=503)).in_thread() as down:
        service = ServiceProcess(
            "npc-brain",
            env={
                "NATS_URL": nats_url,
                "NATS_CLAIM_LEASE_S": "2",
                "BRAIN_LLM_PROVIDER": "gemini",
                "BRAIN_GEMINI_API_KEY": GEMINI_KEY,
                "BRAIN_GEMINI_BASE_URL": down.url,
            },
            log_path=tmp_path / "brain.log",
        ).start()
        session = Session(nc, tenant)
        try:
            service.wait_ready()
            await session.start()
            await session.say("alex", "alex-0", "How much for the longsword, Greta?", end_s=10)
            unheard = Transcript(utterance_id="sam-0", speaker="sam", text="", final=True,
                                 start_ns=11 * 10**9, speech_end_ns=12 * 10**9,
                                 provider="whisper", error="speech recognition failed")
            await session.raw("sam", unheard.to_bytes(), "sam-0:final")
            await session.say("jordan", "jordan-0", "We should ask Aldric about the mine.",
                              end_s=14)
            await wait_for(lambda: len(session.turns) >= 3)
            failed = session.turn("alex-0")
            assert (failed.outcome, failed.npc) == (Outcome.failed, "greta")
            assert failed.failure is not None
            assert (failed.failure.stage, failed.failure.provider, failed.failure.retryable) == (
                FailureStage.llm, "gemini", True)
            assert failed.failure.error.startswith("gemini: ") and "503" in failed.failure.error
            assert failed.routing is not None and failed.routing.kind == RouteKind.name_end
            assert session.turn("sam-0").failure == TurnFailure(
                stage=FailureStage.stt, provider="whisper", error="speech recognition failed")
            mention = session.turn("jordan-0")
            assert mention.outcome == Outcome.not_addressed and mention.routing is not None
            assert (mention.routing.kind, mention.routing.mentioned, mention.routing.why) == (
                RouteKind.table_talk, "aldric",
                "talks about Aldric, not to: 'Aldric' is named in the middle of the line, "
                "neither at its start nor its end")
            assert mention.routing.last_npc == "greta"  # overrides the follow-up
            port = service.metrics_port
            assert metric(port, "glyphoxa_npc_brain_turns_total", outcome="failed",
                          reason="name_end_exact") == 1
            assert metric(port, "glyphoxa_npc_brain_turns_total", outcome="not_addressed",
                          reason="table_talk_mention") == 1
        finally:
            await session.close()
            service.stop()
    assert GEMINI_KEY not in (tmp_path / "brain.log").read_text()


@pytest.mark.models
async def test_brain_answers_with_the_local_llama_model(
    nats_url: str, nc, tenant: str, tmp_path: Path
) -> None:
    """The default provider end to end: the bundled GGUF, persona priming, real sentences."""
    root = Path(__file__).resolve().parents[2]
    service = ServiceProcess(
        "npc-brain",
        env={
            "NATS_URL": nats_url,
            "NATS_CLAIM_LEASE_S": "2",
            "BRAIN_LLM_PROVIDER": "llama",
            "GLYPHOXA_HOME": str(root / ".glyphoxa"),
            "BRAIN_MAX_TOKENS": "40",
        },
        log_path=tmp_path / "brain.log",
    ).start()
    session = Session(nc, tenant)
    try:
        service.wait_ready(timeout_s=300)  # the first run joins the model from its parts
        await session.start()
        await session.say("alex", "alex-0", "Greta, how much for the longsword?", end_s=10)
        await wait_for(lambda: session.turns, timeout_s=120)
        turn = session.turn("alex-0")
        assert (turn.outcome, turn.npc) == (Outcome.answered, "greta") and turn.reply_text
        chunks = [c for *_, c in session.replies("alex-0")]
        assert chunks and chunks[-1].final and all(c.npc == "greta" for c in chunks)
        lat = turn.latency
        print(
            f"\nllama turn: {turn.reply_text!r}; stt final -> first token "
            f"{(lat.first_token_ns - lat.stt_final_ns) / 1e9:.2f} s, -> first sentence "
            f"{(lat.first_sentence_ns - lat.stt_final_ns) / 1e9:.2f} s"
        )
        assert (
            metric(
                service.metrics_port,
                "glyphoxa_npc_brain_llm_tokens_total",
                provider="llama",
                direction="in",
            )
            > 0
        )
    finally:
        await session.close()
        service.stop()
