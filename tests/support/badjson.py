"""JSON events gone wrong, for the fuzz test (``tests/support/hostile.py``): ``refused`` mutates
a valid event until the parser of its reader refuses it."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from glyphoxa_events.models import MalformedEvent

JUNK_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, 1e-300, 2**63, 2**64 + 7, -(2**63) - 1, 10**40, "", "x",
    "\u0000", "a\u0000b", "é" * 3, [], [1, "2"], {}, {"a": {"b": [None]}}, "null", "1e400",
]




def mutate(rng: random.Random, body: dict[str, Any]) -> bytes:
    """One way to get a JSON event wrong (the result may still parse: see ``refused``)."""
    body = dict(body)
    keys = list(body)
    kind = rng.randrange(12)
    if kind == 0 and keys:  # wrong JSON type
        body[rng.choice(keys)] = rng.choice(JUNK_VALUES)
    elif kind == 1 and keys:  # a required field missing
        body.pop(rng.choice(keys))
    elif kind == 2:  # an unknown field
        body[rng.choice(["extra", "admin", "__proto__", "type2", "\u0000"])] = rng.choice(JUNK_VALUES)
    elif kind == 3 and keys:  # a huge string (beyond any max_length; sometimes beyond 64 KiB)
        body[rng.choice(keys)] = "A" * (70_000 if rng.random() < 0.02 else rng.choice([4_001, 10_000]))
    elif kind == 4 and keys:  # huge, negative or tiny numbers
        body[rng.choice(keys)] = rng.choice([-1, -(2**62), 2**63, 2**64, 10**30, 1e308, -1e-308, 0.5])
    elif kind == 5 and keys:  # NUL characters
        key = rng.choice(keys)
        body[key] = f"{body[key]}\u0000" if isinstance(body[key], str) else "\u0000"
    elif kind == 6:  # invalid UTF-8 somewhere in it
        raw = json.dumps(body).encode()
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]) + raw[at:]
    elif kind == 7:  # empty, truncated or not JSON at all
        raw = json.dumps(body).encode()
        return rng.choice([b"", b" ", b"null", b"[]", b"{}", b'"event"', b"{\"type\":",
                           raw[: rng.randrange(len(raw))], rng.randbytes(40)])
    elif kind == 8:  # non-finite numbers (not JSON, but some parsers take them)
        raw = json.dumps(body)
        return (raw[:-1] + f', "n": {rng.choice(["NaN", "Infinity", "-Infinity", "1e400"])}}}').encode()
    elif kind == 9 and keys:  # a nested structure where a scalar belongs
        key = rng.choice(keys)
        body[key] = {"$gt": body[key]} if rng.random() < 0.5 else [body[key]] * 3
    elif kind == 10:  # the wrong event type
        body["type"] = rng.choice(["turn", "flush", "session.stopped", "TURN", "", "usage", "x" * 300])
        if keys:
            body.pop(rng.choice(keys), None)
    else:  # the same key twice (the last one wins in most parsers) with a wrong value
        raw = json.dumps(body)
        key = rng.choice(keys) if keys else "type"
        return (raw[:-1] + f', "{key}": {json.dumps(rng.choice(JUNK_VALUES))}}}').encode()
    return json.dumps(body, allow_nan=True).encode()


def lax_fails(model: type[BaseModel], data: bytes) -> bool:
    try:
        model.model_validate_json(data)
    except (ValidationError, ValueError):
        return True
    return False


def strict_fails(parse: Callable[[bytes], object], data: bytes) -> bool:
    try:
        parse(data)
    except (MalformedEvent, ValidationError, ValueError):
        return True
    return False


def refused(rng: random.Random, template: dict[str, Any], parse: Callable[[bytes], object],
            lax: type[BaseModel] | None = None) -> bytes:
    """A mutation of ``template`` that ``parse`` refuses (and, with ``lax``, which even that
    model's lenient parsing refuses: the scene player reads events so)."""
    for _ in range(100):
        body = mutate(rng, template)
        if strict_fails(parse, body) and (lax is None or lax_fails(lax, body)):
            return body
    return b"{"
