"""Text that can be stored: PostgreSQL's ``text`` cannot hold NUL (U+0000), so a NUL in what
a GM or an operator sends is refused where it enters (a 422 naming the field), not found
later as a database error."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

_NUL = PydanticCustomError(
    "nul_character", "text must not contain NUL characters (\\u0000): they cannot be stored")
M = TypeVar("M", bound=BaseModel)


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


def refuse_nul(model: M) -> M:
    """``model`` unchanged, or a ValidationError at its first string holding NUL (for a
    ``model_validator(mode="after")``: a before-validator would make pydantic validate the
    fields in Python mode, which strict JSON parsing of bus events cannot take)."""
    loc = nul_at(model.model_dump())
    if loc is not None:
        raise ValidationError.from_exception_data(type(model).__name__, [
            InitErrorDetails(type=_NUL, loc=loc, input="<text with NUL>")])
    return model
