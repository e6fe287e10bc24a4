"""A small bounded, thread-safe cache kept in each web worker process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class BoundedCache:
    """Least-recently-used eviction beyond ``size`` entries; with ``ttl`` (seconds) an entry is
    also forgotten once that old. ``size`` 0 disables the cache (every lookup misses)."""

    def __init__(self, size: int, ttl: float | None = None) -> None:
        self.size, self.ttl = size, ttl
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        found, _ = self.get_many([key])
        return found.get(key)

    def get_many(self, keys: list[Hashable]) -> tuple[dict[Hashable, Any], list[Hashable]]:
        """The cached values among ``keys``, and the keys that were not there."""
        found: dict[Hashable, Any] = {}
        missing: list[Hashable] = []
        now = time.monotonic()
        with self._lock:
            for key in keys:
                item = self._items.get(key)
                if item is not None and (self.ttl is None or now - item[0] < self.ttl):
                    self._items.move_to_end(key)
                    found[key] = item[1]
                else:
                    missing.append(key)
            self.hits += len(found)
            self.misses += len(missing)
        return found, missing

    def put(self, key: Hashable, value: Any) -> None:
        self.put_many({key: value})

    def put_many(self, values: dict[Hashable, Any]) -> None:
        if self.size <= 0:
            return
        now = time.monotonic()
        with self._lock:
            for key, value in values.items():
                self._items[key] = (now, value)
                self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
