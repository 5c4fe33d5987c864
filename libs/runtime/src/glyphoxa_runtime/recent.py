"""A bounded map of the newest entries: what a service remembers about recent turns."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(OrderedDict[K, V]):
    """The newest ``size`` entries: remembering a key makes it the newest, and the oldest
    are forgotten beyond ``size``. Used as a bounded set with ``remember(key)``."""

    def __init__(self, size: int = 1024):
        super().__init__()
        self.size = size

    def remember(self, key: K, value: V = None) -> None:  # type: ignore[assignment]
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
