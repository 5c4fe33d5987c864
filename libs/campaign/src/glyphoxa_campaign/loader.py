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
        raise CampaignError(source, [_describe(err, root) for err in exc.errors()]) from exc


def _describe(err: Any, root: yaml.Node | None) -> str:
    loc = tuple(err["loc"])
    line = _line_of(root, loc)
    field = _dotted(loc) or "campaign"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    prefix = f"line {line}: " if line else ""
    return f"{prefix}{field}: {message}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the composed YAML tree along a pydantic error location; return a 1-based line."""
    best = node
    for part in loc:
        child = _child(best, part)
        if child is None:
            break
        best = child
    return best.start_mark.line + 1 if best is not None else None


def _child(node: yaml.Node | None, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if getattr(key, "value", None) == part:
                # an unknown key is best pointed at by the key itself
                return value if not isinstance(value, yaml.ScalarNode) else value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None
