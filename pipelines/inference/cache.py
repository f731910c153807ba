"""A result cache bounded in bytes, keyed by model version.

Entries are serialized responses (``bytes``), stored under ``(version, key)``, and
the cache never holds more than ``max_bytes`` of them (keys and bookkeeping are
counted too, at a fixed ``OVERHEAD`` per entry), whatever ``k`` or the number of
users: a token holder asking for every user at k = 100 evicts old entries, it does
not grow the worker. ``set_version`` drops everything when the served model changes,
so no answer of an old champion is ever returned by a new one. Hits and misses are
counted for ``/metrics``. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

# bytes per entry for the key (a short tuple of ids and numbers), the dict slot and the
# bytes object's header: measured with tracemalloc at about 200 on CPython 3.11
OVERHEAD = 256


def entry_size(value: bytes) -> int:
    return len(value) + OVERHEAD


class BytesLRU:
    def __init__(self, max_bytes: int, version: str = "") -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.version = version
        self.hits = 0
        self.misses = 0
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, Hashable], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def set_version(self, version: str) -> None:
        """Serve ``version`` from now on; a change empties the cache."""
        with self._lock:
            if version != self.version:
                self._entries.clear()
                self.bytes = 0
                self.version = version

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            entry = self._entries.get((self.version, key))
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end((self.version, key))
            self.hits += 1
            return entry

    def put(self, key: Hashable, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError("the cache stores serialized responses (bytes)")
        size = entry_size(value)
        if size > self.max_bytes:
            return  # larger than the whole budget: never stored
        with self._lock:
            slot = (self.version, key)
            old = self._entries.pop(slot, None)
            if old is not None:
                self.bytes -= entry_size(old)
            self._entries[slot] = bytes(value)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= entry_size(evicted)
