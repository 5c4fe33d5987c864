"""Signs that a line is meant for the other players, not for an NPC ("table talk").

Only consulted when no NPC is named at the start or end of the line: a named NPC is
always addressed, whatever else the line says ("Greta, roll me a fine blade").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MECHANICS = (
    r"roll(s|ed|ing)?",
    r"re-?roll",
    r"dice",
    r"d(4|6|8|10|12|20|100)",
    r"perception",
    r"insight",
    r"stealth",
    r"initiative",
    r"athletics",
    r"acrobatics",
    r"investigation",
    r"arcana",
    r"persuasion",
    r"deception",
    r"intimidation",
    r"sleight of hand",
    r"natural (twenty|20|one|1)",
    r"nat (twenty|20|one|1)",
    r"spell slots?",
    r"hit points?",
    r"hp",
    r"armou?r class",
    r"saving throws?",
    r"crits?",
    r"critical (hit|fail|success)",
    r"skill checks?",
    r"ability checks?",
    r"modifier",
    r"character sheets?",
    r"level(ed)? up",
    r"xp",
    r"experience points",
    r"dungeon master",
    r"game master",
    r"dm",
    r"gm",
    r"bonus action",
    r"cantrips?",
    r"concentration check",
    r"attack roll",
    r"damage roll",
    r"short rest",
    r"long rest",
    r"inspiration point",
    r"my turn",
    r"your turn",
    r"whose turn",
    r"my character",
    r"my sheet",
)
_OUT_OF_GAME = (
    r"(take|taking|need|want|have) a (\w+ )?(\w+[- ])?break",
    r"(\w+[- ])?minute break",
    r"break time",
    r"bathroom",
    r"toilet",
    r"charger",
    r"pizza",
    r"snacks?",
    r"chips",
    r"soda",
    r"my phone",
    r"wi-?fi",
    r"discord",
    r"mic",
    r"microphone",
    r"headset",
    r"brb",
    r"be right back",
    r"out of character",
    r"ooc",
    r"in real life",
    r"irl",
    r"next session",
    r"last session",
    r"order (food|pizza)",
)
_NARRATION = (
    (
        r"(we|i)('ll| will)? (walk|head|go|move|sneak|creep|run|ride|step|climb|wander|slip|dash|"
        r"rush|hurry|make our way|make my way) (in|into|to|over|toward|towards|around|back|inside|"
        r"outside|out|up|down|through|across|behind|past|away)"
    ),
    (
        r"i (try|attempt|want) to (pick|sneak|steal|hide|climb|search|open|check|cast|attack|"
        r"persuade|intimidate|grab)"
    ),
    r"i (cast|attack|search|inspect|investigate|pickpocket)",
    r"let'?s (head|go|move|walk|get going|take|split up|leave|check out|find)",
    r"(while|as) (the others|everyone else|they)",
    r"we (enter|leave|search|split up)",
    # a player describing what their character does is talking to the GM, not an NPC
    (
        r"i (keep (an eye|watch|a lookout)|stand (guard|watch|by)|keep my hand|stay (by|near|at|close)|"
        r"ready my|draw my|sneak|slip (out|away|behind)|look around|scan the|hide (behind|in)|"
        r"follow (him|her|them)|lean (against|on))"
    ),
    r"(while|as) (we|they|you guys|the others) (wait|talk|chat|haggle|shop|argue)",
)
_ASK_TABLE = (
    (
        r"(can|could|would|will|does|do|did|has|have|is) (someone|somebody|anyone|anybody|"
        r"any of you|one of you|you guys|everyone|everybody)"
    ),
    r"(someone|somebody|anyone|anybody|everyone|everybody)[ ,]",
    r"you guys",
    r"guys",
    r"y'?all",
    r"what do we (do|think)",
    r"should we (ask|tell|trust|go to)",
)
_LEADING = (
    r"^\W*(wait\s*[,.!?-]|wait (a|one) (sec|second|minute)|hold on|hang on|one sec\b|just a sec)"
)


@dataclass(frozen=True)
class TableTalkCue:
    kind: str  # mechanics, out_of_game, narration, asks_table, aside
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text!r}"


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(patterns) + r")\b")


_CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("aside", re.compile(_LEADING, re.IGNORECASE)),
    ("mechanics", _compile(_MECHANICS)),
    ("out_of_game", _compile(_OUT_OF_GAME)),
    ("narration", _compile(_NARRATION)),
    ("asks_table", _compile(_ASK_TABLE)),
)


def normalise(text: str) -> str:
    """Lower case, curly quotes straightened, punctuation except apostrophes and hyphens dropped."""
    lowered = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    lowered = re.sub(r"[^a-z0-9' -]+", " ", lowered)
    return re.sub(r"\s+", " ", lowered).strip()


def table_talk_cue(text: str) -> TableTalkCue | None:
    """The first sign that ``text`` is addressed to the table, or None."""
    plain = normalise(text)
    for kind, pattern in _CUES:
        m = pattern.search(text if kind == "aside" else plain)
        if m:
            return TableTalkCue(kind, m.group().strip())
    return None
