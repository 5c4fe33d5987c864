"""YAML loading that names the field *and the line* of every mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from glyphoxa_campaign.model import Campaign


class CampaignError(ValueError):
    """A campaign file that cannot be used; ``problems`` holds one line per mistake."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: invalid campaign\n" + "\n".join(f"  {p}" for p in problems))


def load_campaign_file(path: str | Path) -> Campaign:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignError(str(path), [f"cannot read file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise CampaignError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from exc
    return load_campaign(text, source=str(path))


def load_campaign(text: str, source: str = "<campaign>") -> Campaign:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise CampaignError(source, [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if not isinstance(data, dict):
        raise CampaignError(source, ["line 1: the campaign must be a mapping with `name` and `npcs`"])
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # pydantic adds "npcs: Tuple should have at least 1 item" when an NPC is invalid
        errors = [e for e in errors if not (e["type"] == "too_short" and any(
            len(o["loc"]) > len(e["loc"]) and tuple(o["loc"][: len(e["loc"])]) == tuple(e["loc"])
            for o in errors))]
        raise CampaignError(source, [_describe(err, root) for err in errors]) from exc


def _describe(err: Any, root: yaml.Node | None) -> str:
    loc = tuple(err["loc"])
    line = _line_of(root, loc)
    field = dotted(loc) or "campaign"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    elif err["type"] == "value_error":
        message = str(err["ctx"]["error"])  # without pydantic's "Value error, " prefix
    prefix = f"line {line}: " if line else ""
    return f"{prefix}{field}: {message}"


def dotted(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a reader writes it: ``npcs[0].voice.pitch``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the composed YAML tree along a pydantic error location; return a 1-based line."""
    best, mark = node, (node.start_mark if node is not None else None)
    for part in loc:
        found = _child(best, part)
        if found is None:
            break
        key, best = found
        mark = (key if key is not None else best).start_mark  # a field is where its key is
    return mark.line + 1 if mark is not None else None


def _child(node: yaml.Node | None, part: Any) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(key node or None, value node) of one step of an error location."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if getattr(key, "value", None) == part:
                return key, value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None
