"""Tenant, session, speaker and NPC tokens: the only identifiers allowed inside a subject.

A token that could contain a dot or a wildcard would let a client publish into another
tenant's subjects, so every identifier is checked at the boundary, before it is used.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

TOKEN_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
_TOKEN_RE = re.compile(TOKEN_PATTERN + r"\Z")


class InvalidToken(ValueError):
    """An identifier that may not appear in a subject."""


def validate_token(value: object, kind: str = "token") -> str:
    if not isinstance(value, str) or not _TOKEN_RE.match(value):
        shown = repr(value)[:80]
        raise InvalidToken(f"invalid {kind} {shown}: must match {TOKEN_PATTERN}")
    return value


def _check(value: str) -> str:
    return validate_token(value)


Token = Annotated[
    str, AfterValidator(_check), WithJsonSchema({"type": "string", "pattern": f"^{TOKEN_PATTERN}$"})
]


def slugify(name: str) -> str:
    """Turn a display name ("Captain Voss") into a token ("captain-voss")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:64]
    if not slug:
        raise InvalidToken(f"cannot make a token from {name!r}")
    return validate_token(slug, "name")
