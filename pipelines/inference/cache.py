"""A bounded LRU cache of per-user results, keyed by model version.

Entries are stored under ``(version, key)``; ``set_version`` drops everything
when the served model (or its catalogue) changes, so no answer of an old
champion is ever returned by a new one. Hits and misses are counted for
``/metrics``. Not thread-safe by itself: the caller holds its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class VersionedLRU:
    def __init__(self, max_entries: int, version: str = "") -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self.version = version
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, Hashable], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def set_version(self, version: str) -> None:
        """Serve ``version`` from now on; a change empties the cache."""
        if version != self.version:
            self._entries.clear()
            self.version = version

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get((self.version, key))
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end((self.version, key))
        self.hits += 1
        return entry

    def put(self, key: Hashable, value: Any) -> None:
        if self.max_entries == 0:
            return
        self._entries[(self.version, key)] = value
        self._entries.move_to_end((self.version, key))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
