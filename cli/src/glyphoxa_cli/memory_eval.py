"""The memory evaluation (issue 16): does an NPC remember, in a later session, what it
witnessed in an earlier one, and only that?

Two sessions of one campaign are played into a running stack as final transcripts, published
on the stt subjects exactly as stt does (``glyphoxa_cli.replay.publish_final``), one line at a
time: the next line goes out when the previous turn has ended and its audio was reported
heard (``ctl.played``, which is what session-control remembers). Session 1 tells each case's
fact to an NPC among ordinary table chatter (``FILLER``, so that recall has to rank); the GM
teaches one fact through the admin API. Once session 1 has ended and every memory is
embedded (and the recaps are made), session 2 asks each case's question of the NPC that
witnessed the fact and of NPCs that did not.

Scores, per case:
- prompt recall (deterministic, any LLM): the memory holding the fact is among the witness's
  ``TurnEnded.memories`` (a taught fact: or in its ``SessionStarted.memory`` seed);
- prompt leakage: that memory is among a non-witness's ``TurnEnded.memories``, or the fact
  is in its seed;
- reply recall: the witness's reply names the fact (a keyword or an accepted variant,
  case-insensitive);
- reply leakage: a non-witness's reply names it.

``tests/e2e/test_memory_eval_e2e.py`` runs it with the instant fake LLM and asserts the
prompt-level targets; ``scripts/bench_memory.py`` (``./task bench-memory``) runs it with the
local LLM and prints both levels.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg

from glyphoxa_bus.publisher import Resender
from glyphoxa_campaign import Campaign, load_campaign
from glyphoxa_cli.admin import AdminClient, SceneSessions
from glyphoxa_cli.player import Collected, ScenePlayer
from glyphoxa_cli.replay import publish_final
from glyphoxa_cli.scenefile import Scene
from glyphoxa_cli.tracks import RATE
from glyphoxa_events.models import Outcome, SessionStarted, Transcript, TurnEnded, parse_control
from glyphoxa_events.subjects import SessionSubjects

CAMPAIGN_YAML = """\
name: Saltmere Harbour
lore: >
  Saltmere is a rainy fishing harbour on a grey northern coast. Smugglers, fishermen and
  travelling adventurers drink at the Drowned Lantern tavern.
overhear: true
npcs:
  - name: Greta
    persona: >
      You are Greta, the sharp-eyed keeper of the Drowned Lantern tavern. You answer in one or
      two short spoken sentences, plain words, no lists and no stage directions.
    knowledge: Your tavern's cellar holds the best cider on the coast.
    scene: tavern
  - name: Aldric
    persona: >
      You are Aldric, an old sailor who sits by the tavern's fire every night and listens to
      everything. You answer in one or two short spoken sentences, plain words.
    scene: tavern
  - name: Bram
    persona: >
      You are Bram, the harbour's gruff blacksmith and locksmith. You answer in one or two
      short spoken sentences, plain words, no lists and no stage directions.
    scene: forge
  - name: Mira
    persona: >
      You are Mira, a quiet herbalist who lives alone in the salt marsh. You answer in one or
      two short spoken sentences, plain words, no lists and no stage directions.
"""
"""Greta and Aldric share the tavern and overhear each other; Bram is alone at his forge
(a scene of his own), Mira has no scene at all."""

NPCS = ("greta", "aldric", "bram", "mira")
NAMES = {"greta": "Greta", "aldric": "Aldric", "bram": "Bram", "mira": "Mira"}
PLAYERS = ("robin", "casey")


@dataclass(frozen=True)
class Case:
    name: str
    told: str
    """The NPC the line is said to in session 1 (or taught, for a GM fact)."""
    line: str
    """Session 1's line (the words after the NPC's name), or the fact the GM teaches."""
    question: str
    """Session 2's question (the words after the NPC's name)."""
    keywords: tuple[str, ...]
    """The fact as a reply may name it: any of these, case-insensitive."""
    witness: str
    """The NPC asked in session 2 that must remember it (``told``, or one overhearing it)."""
    outsiders: tuple[str, ...]
    """NPCs asked the same question that did not witness it."""
    taught: bool = False


CASES: tuple[Case, ...] = (
    Case("password", "greta", "the password for your cellar door is silver heron, don't forget it.",
         "what was the password for the cellar door?", ("silver heron",), "greta", ("bram",)),
    Case("debt", "bram", "Lord Hadley still owes me forty gold crowns for the sword I sold him.",
         "how much money does Lord Hadley owe me?", ("forty", "40"), "bram", ("mira",)),
    Case("promise", "mira", "I promise I will bring you three moonpetal flowers from the cliffs.",
         "what did I promise to bring you?", ("moonpetal", "moon petal"), "mira", ("greta",)),
    Case("name", "aldric", "my sister's name is Odalys, she sails on a merchant ship.",
         "do you remember my sister's name?", ("odalys",), "aldric", ("bram",)),
    Case("place", "bram", "we hid the stolen chalice under the floor of the lighthouse.",
         "where did we hide the chalice?", ("lighthouse", "light house"), "bram", ("mira",)),
    Case("number", "mira", "our ship leaves from pier seventeen at first light.",
         "which pier does our ship leave from?", ("seventeen", "17"), "mira", ("aldric",)),
    Case("taught", "bram", "The duke's seal was forged by a smith named Corvin Ashdown.",
         "who forged the duke's seal?", ("corvin", "ashdown"), "bram", ("greta",), taught=True),
    Case("overheard", "greta", "the smugglers' boat is called the Black Wren, keep it quiet.",
         "what is the smugglers' boat called?", ("wren",), "aldric", ("mira", "bram")),
    Case("overheard-2", "aldric", "the key to the vault is hidden inside the cuckoo clock.",
         "where is the key to the vault hidden?", ("cuckoo",), "greta", ("bram",)),
    Case("paraphrase", "greta", "I'm terrified of spiders, they make me faint.",
         "what creature am I scared of?", ("spider",), "greta", ("mira",)),
    Case("date", "aldric", "our meeting with the thieves' guild is on the night of the new moon.",
         "when are we meeting the thieves' guild?", ("new moon",), "aldric", ("mira",)),
    Case("ingredient", "mira", "the antidote needs a single drop of wyvern blood to work.",
         "what is the secret ingredient of the antidote?", ("wyvern",), "mira", ("greta",)),
)

FILLER = (
    "good evening, how are you today?",
    "what's the weather going to be like tomorrow?",
    "do you know a good place to sleep around here?",
    "how much for a bowl of fish stew?",
    "have you seen any strangers in town lately?",
    "what do you think of the new harbour master?",
    "is the road to the capital safe these days?",
    "my boots are soaked through, this rain never stops.",
    "we just came in on the evening ferry.",
    "do you like living in Saltmere?",
    "what's the best thing to eat in this town?",
    "I lost a game of dice at the tavern last night.",
    "how long have you lived here?",
    "who is the richest person in the harbour?",
    "the fishing boats came back early today, didn't they?",
    "is there a temple or a healer nearby?",
    "my friend here snores like a walrus.",
    "have you ever been out at sea in a storm?",
    "what do people do for fun around here?",
    "thank you for your time, we'll be back later.",
    "the door of the old church was open this morning.",
    "can you recommend a cheap horse trader?",
)
"""Table chatter said to every NPC in session 1 (20-ish lines each), so that the fact's memory
must outrank many others, a few of them on neighbouring topics (doors, horses, money)."""


@dataclass
class Asked:
    npc: str
    witness: bool
    utterance: str
    turn: TurnEnded | None = None
    seed: str = ""
    """What the NPC's session-2 seed (recap and facts) says."""

    @property
    def reply(self) -> str:
        return self.turn.reply_text if self.turn else ""

    @property
    def memories(self) -> tuple[str, ...]:
        return self.turn.memories if self.turn else ()


@dataclass
class CaseResult:
    case: Case
    memory_id: str = ""
    asked: list[Asked] = field(default_factory=list)

    def names(self, text: str) -> bool:
        text = re.sub(r"\s+", " ", text.lower())
        return any(k in text for k in self.case.keywords)

    def in_prompt(self, a: Asked) -> bool:
        if self.memory_id and self.memory_id in a.memories:
            return True
        return self.case.taught and self.case.line.lower() in a.seed.lower()

    @property
    def witness(self) -> Asked:
        return next(a for a in self.asked if a.witness)

    @property
    def outsiders(self) -> list[Asked]:
        return [a for a in self.asked if not a.witness]

    def row(self) -> dict:
        w = self.witness
        return {
            "case": self.case.name, "memory": self.memory_id, "witness": w.npc,
            "prompt_recall": self.in_prompt(w), "reply_recall": self.names(w.reply),
            "witness_reply": w.reply, "witness_memories": list(w.memories),
            "outsiders": [{"npc": a.npc, "prompt_leak": self.in_prompt(a),
                           "reply_leak": self.names(a.reply), "reply": a.reply,
                           "memories": list(a.memories)} for a in self.outsiders],
        }


@dataclass
class Scores:
    rows: list[dict]
    campaign: str = ""

    def _rate(self, hits: int, n: int) -> float:
        return hits / n if n else 0.0

    @property
    def prompt_recall(self) -> float:
        return self._rate(sum(r["prompt_recall"] for r in self.rows), len(self.rows))

    @property
    def reply_recall(self) -> float:
        return self._rate(sum(r["reply_recall"] for r in self.rows), len(self.rows))

    def _asks(self) -> list[dict]:
        return [o for r in self.rows for o in r["outsiders"]]

    @property
    def prompt_leakage(self) -> float:
        return self._rate(sum(o["prompt_leak"] for o in self._asks()), len(self._asks()))

    @property
    def reply_leakage(self) -> float:
        return self._rate(sum(o["reply_leak"] for o in self._asks()), len(self._asks()))

    def summary(self) -> str:
        n, asks = len(self.rows), len(self._asks())
        return (f"prompt: recall {self.prompt_recall:.0%} of {n} cases, leakage "
                f"{self.prompt_leakage:.0%} of {asks} non-witness questions\n"
                f"reply:  recall {self.reply_recall:.0%} of {n} cases, leakage "
                f"{self.reply_leakage:.0%} of {asks} non-witness questions")

    def table(self) -> str:
        out = [f"{'case':<12} {'witness':<7} {'prompt':<6} {'reply':<5}  outsiders (prompt/reply leak)"
               "  witness reply"]
        for r in self.rows:
            leaks = ", ".join(f"{o['npc']} {'LEAK' if o['prompt_leak'] else 'ok'}/"
                              f"{'LEAK' if o['reply_leak'] else 'ok'}" for o in r["outsiders"])
            out.append(f"{r['case']:<12} {r['witness']:<7} {'yes' if r['prompt_recall'] else 'NO':<6} "
                       f"{'yes' if r['reply_recall'] else 'NO':<5}  {leaks:<30} "
                       f"{r['witness_reply'][:90]!r}")
            if not r["prompt_recall"]:
                out += [f"{'':<12} recalled instead: {t[:110]!r}" for t in r["witness_recalled"]]
        return "\n".join(out)


class CampaignDoor(SceneSessions):
    """Starts every session on one campaign imported once (its memory is the point)."""

    def __init__(self, client: AdminClient, tenant: str, campaign_id: str):
        super().__init__(client, tenant, "", end_timeout_s=60.0)
        self.campaign_id = campaign_id

    async def start(self) -> str:
        return (await self.client.start_session(self.campaign_id, edge="scene"))["id"]


class LinePlayer(ScenePlayer):
    """Plays lines (speaker, text) into a new session as stt's final transcripts, one after
    the other: each waits for the previous turn to end and its reply to be reported heard."""

    def __init__(self, nc: Client, campaign: Campaign, door: CampaignDoor,
                 lines: list[tuple[str, str]], tag: str, turn_timeout_s: float):
        scene = Scene(f"memory eval {tag}", RATE, {PLAYERS[0]: np.zeros(RATE, np.int16)}, [])
        super().__init__(nc, scene, campaign, door, timeout_s=turn_timeout_s, outgoing=[])
        self.lines, self.tag = lines, tag
        self.utterances: list[str] = []
        self.started: SessionStarted | None = None

    async def _on_ctl(self, msg: Msg) -> None:
        event = parse_control(msg.data)
        if isinstance(event, SessionStarted):
            self.started = event
        await super()._on_ctl(msg)

    async def _send_all(self, subjects: SessionSubjects, outgoing: list, publisher: Resender) -> None:
        self.t0_wall_ns = self.t0_ns = time.time_ns()
        for n, (speaker, text) in enumerate(self.lines):
            now = time.time_ns()
            uid = f"{self.tag}-{n:03d}"
            await publish_final(publisher, subjects, Transcript(
                utterance_id=uid, speaker=speaker, text=text, final=True,
                start_ns=now - 2_000_000_000, speech_end_ns=now - 300_000_000,
                vad_end_ns=now - 250_000_000, stt_final_ns=now, audio_seconds=1.7,
                provider="memory-eval"))
            await publisher.flush(timeout_s=self.timeout_s)
            self.utterances.append(uid)
            await self._turn_done(uid)

    async def _turn_done(self, uid: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        c = self.collected
        while time.monotonic() < deadline:
            turn = c.turns.get(uid)
            if turn is not None and (turn.outcome != Outcome.answered or uid in c.played_sent):
                return
            if c.stopped is not None:
                raise RuntimeError(f"session {self.session} ended under the evaluation: "
                                   f"{c.stopped.reason}")
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no turn (or no played audio) for {uid} within {self.timeout_s:.0f} s")


def addressed(npc: str, words: str) -> str:
    return f"{NAMES[npc]}, {words}"


def session_one(cases: tuple[Case, ...], filler_per_npc: int) -> list[tuple[str, str]]:
    """Each NPC's chatter, the facts spread through it (round robin over the NPCs)."""
    lines: list[tuple[str, str]] = []
    told = {npc: [c for c in cases if c.told == npc and not c.taught] for npc in NPCS}
    for i in range(filler_per_npc):
        for j, npc in enumerate(NPCS):
            speaker = PLAYERS[(i + j) % len(PLAYERS)]
            lines.append((speaker, addressed(npc, FILLER[(i + 3 * j) % len(FILLER)])))
            # the facts in the first third, so the chatter after them is newer
            if i % 2 == 1 and told[npc]:
                lines.append((speaker, addressed(npc, told[npc].pop(0).line)))
    lines += [(PLAYERS[0], addressed(npc, c.line)) for npc in NPCS for c in told[npc]]
    return lines


def session_two(cases: tuple[Case, ...]) -> list[tuple[str, str, str, bool]]:
    """(speaker, line, npc, witness) per question: outsiders first, then the witness."""
    asks = []
    for n, case in enumerate(cases):
        speaker = PLAYERS[n % len(PLAYERS)]
        for npc in case.outsiders:
            asks.append((speaker, addressed(npc, case.question), npc, False))
        asks.append((speaker, addressed(case.witness, case.question), case.witness, True))
    return asks


def seed_text(started: SessionStarted | None, npc: str) -> str:
    if started is None:
        return ""
    return "\n".join([started.memory.recaps.get(npc, ""), *started.memory.facts.get(npc, [])])


async def _all_memories(client: AdminClient, campaign: str, npc: str) -> list[dict]:
    return await client.call("GET", f"/v1/campaigns/{campaign}/npcs/{npc}/memories",
                             params={"limit": 500})


async def wait_embedded(client: AdminClient, campaign: str, expect: int, timeout_s: float) -> int:
    """Wait until the campaign holds ``expect`` memories (the recorder may still be writing
    the last turns) and every one is embedded."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {r["id"]: r for npc in NPCS for r in await _all_memories(client, campaign, npc)}
        waiting = [r for r in rows.values() if not r["embedded"]]
        if not waiting and len(rows) >= expect:
            return len(rows)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(rows)} memories of {expect} recorded, {len(waiting)} not "
                               f"embedded after {timeout_s:.0f} s (is MEMORY_EMBEDDER off?)")
        await asyncio.sleep(0.5)


async def wait_recaps(client: AdminClient, campaign: str, timeout_s: float) -> dict[str, str]:
    """Each NPC's recap status once none is pending (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = {}
        for npc in NPCS:
            recaps = await client.call("GET", f"/v1/campaigns/{campaign}/npcs/{npc}/recaps")
            status[npc] = recaps[0]["status"] if recaps else "none"
        if not {"pending", "none"} & set(status.values()) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(1.0)


async def run_eval(client: AdminClient, nc: Client, tenant: str, cases: tuple[Case, ...] = CASES,
                   filler_per_npc: int = 20, turn_timeout_s: float = 60.0,
                   embed_timeout_s: float = 120.0, recap_timeout_s: float = 0.0,
                   progress: Callable[[str], None] = print) -> Scores:
    """Both sessions through the stack behind ``client`` (an API key of ``tenant``) and
    ``nc`` (a NATS connection that may publish on the tenant's stt subjects)."""
    campaign = load_campaign(CAMPAIGN_YAML)
    campaign_id = (await client.import_campaign(CAMPAIGN_YAML, replace=True))["id"]
    for case in cases:
        if case.taught:
            await client.call("POST", f"/v1/campaigns/{campaign_id}/npcs/{case.told}/facts",
                              json={"text": case.line})
    door = CampaignDoor(client, tenant, campaign_id)

    lines = session_one(cases, filler_per_npc)
    t0 = time.monotonic()
    first = LinePlayer(nc, campaign, door, lines, "s1", turn_timeout_s)
    collected = await first.play()
    progress(f"session 1 ({first.session}): {len(lines)} lines, "
             f"{_answered(collected)} answered [{time.monotonic() - t0:.0f} s]")

    t0 = time.monotonic()
    expect = _answered(collected) + sum(c.taught for c in cases)
    n = await wait_embedded(client, campaign_id, expect, embed_timeout_s)
    progress(f"{n} memories embedded [{time.monotonic() - t0:.0f} s]")
    if recap_timeout_s > 0:
        t0 = time.monotonic()
        status = await wait_recaps(client, campaign_id, recap_timeout_s)
        progress(f"recaps: {status} [{time.monotonic() - t0:.0f} s]")

    results = [CaseResult(case) for case in cases]
    memories = {npc: await _all_memories(client, campaign_id, npc) for npc in NPCS}
    for result in results:
        c = result.case
        holding = [m for m in memories[c.witness] if c.line in m["text"]
                   and m["kind"] == ("fact" if c.taught else "exchange")]
        if len(holding) > 1:
            raise RuntimeError(f"case {c.name}: {len(holding)} memories of {c.witness} hold "
                               f"{c.line!r} (expected one)")
        if not holding:  # its turn in session 1 was not answered (a timeout): a miss
            progress(f"case {c.name}: no memory holds {c.line!r} (its turn was not answered)")
        else:
            result.memory_id = str(holding[0]["id"])

    asks = session_two(cases)
    t0 = time.monotonic()
    second = LinePlayer(nc, campaign, door, [(s, line) for s, line, _, _ in asks], "s2",
                        turn_timeout_s)
    collected = await second.play()
    progress(f"session 2 ({second.session}): {len(asks)} questions, "
             f"{_answered(collected)} answered [{time.monotonic() - t0:.0f} s]")
    if second.started is None:
        raise RuntimeError("session 2's session.started never came")
    k = 0
    for result in results:
        for _ in (*result.case.outsiders, result.case.witness):
            _, _, npc, witness = asks[k]
            uid = second.utterances[k]
            result.asked.append(Asked(npc, witness, uid, collected.turns.get(uid),
                                      seed_text(second.started, npc)))
            k += 1
    texts = {str(m["id"]): m["text"] for rows in memories.values() for m in rows}
    rows = [r.row() for r in results]
    for row in rows:  # what the witness was given instead, when it missed
        row["witness_recalled"] = [texts.get(m, "?") for m in row["witness_memories"]]
    return Scores(rows, campaign_id)


def recall_counts(metrics_text: str) -> dict[str, int]:
    """npc-brain's recalls by result (ok, empty, late, error, off) from its /metrics text: a
    witness with no memories in its prompt was often late (``BRAIN_RECALL_TIMEOUT_MS``)."""
    counts: dict[str, int] = {}
    for m in re.finditer(r'^glyphoxa_npc_brain_recall_total\{result="(\w+)"\} (\S+)$',
                         metrics_text, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + int(float(m.group(2)))
    return counts


def _answered(collected: Collected) -> int:
    return sum(t.outcome == Outcome.answered for t in collected.turns.values())
