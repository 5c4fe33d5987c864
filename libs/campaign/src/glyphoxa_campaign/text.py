"""Text that can be stored: PostgreSQL's ``text`` cannot hold NUL (U+0000), so a NUL in what
a GM or an operator sends is refused where it enters (a 422 naming the field), not found
later as a database error."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

_NUL = PydanticCustomError(
    "nul_character", "text must not contain NUL characters (\\u0000): they cannot be stored")


def nul_at(value: Any, loc: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where in ``value`` (nested dicts, lists and strings) a string holds NUL, or None."""
    if isinstance(value, str):
        return loc if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return (*loc, key)
        found = nul_at(item, (*loc, key))
        if found is not None:
            return found
    return None


def refuse_nul(title: str, data: Any) -> Any:
    """``data`` unchanged, or a ValidationError at the first string holding NUL (for a
    ``model_validator(mode="before")``)."""
    loc = nul_at(data)
    if loc is not None:
        raise ValidationError.from_exception_data(title, [
            InitErrorDetails(type=_NUL, loc=loc, input="<text with NUL>")])
    return data
