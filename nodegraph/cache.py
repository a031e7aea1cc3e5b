"""Output cache: signature → node outputs, least-recently-used out first.

Bounded both by entry count and by an estimate of bytes held, because one cached model can weigh
gigabytes while a thousand cached numbers weigh nothing.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol


class Cache(Protocol):
    def get(self, key: str) -> Any | None: ...
    def put(self, key: str, value: Any) -> None: ...
    def evict(self, key: str) -> None: ...
    def __contains__(self, key: object) -> bool: ...
    def clear(self) -> None: ...  # the executor empties the cache after an out-of-memory error


def estimate_nbytes(value: Any, _depth: int = 0) -> int:
    """Rough size of a node output: tensors, arrays, modules, and containers of them."""
    if _depth > 6 or value is None:
        return 0
    sized = getattr(value, "cache_nbytes", None)
    if callable(sized):
        return int(sized())
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    params = getattr(value, "parameters", None)
    if callable(params):
        try:
            return int(sum(p.numel() * p.element_size() for p in params()))
        except (TypeError, AttributeError):
            return 0
    if isinstance(value, dict):
        return sum(estimate_nbytes(v, _depth + 1) for v in value.values())
    if isinstance(value, list | tuple | set):
        return sum(estimate_nbytes(v, _depth + 1) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return sum(estimate_nbytes(v, _depth + 1) for v in vars(value).values())
    if isinstance(value, str | bytes):
        return len(value)
    return 64


def default_max_bytes(share: float = 0.4, ceiling: int = 16 * 2**30) -> int:
    """What the cache may hold by default: a share of the machine's RAM, at most `ceiling`, so a
    long-running editor that switches between many checkpoints stops growing well before the
    machine runs out (the oldest outputs, a checkpoint no longer used first, are dropped)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: keep the ceiling
        return ceiling
    return min(ceiling, int(ram * share))


class LRUCache:
    """In-memory LRU. The newest entry is always kept, even when it alone exceeds `max_bytes`."""

    def __init__(self, max_entries: int = 256, max_bytes: int | None = None,
                 sizer: Callable[[Any], int] = estimate_nbytes):
        self.max_entries = max_entries
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self._sizer = sizer
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.bytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def get(self, key: str) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: Any) -> None:
        self.evict(key)
        size = self._sizer(value)
        self._items[key] = (value, size)
        self.bytes += size
        while len(self._items) > 1 and (len(self._items) > self.max_entries or self.bytes > self.max_bytes):
            oldest = next(iter(self._items))
            self.evict(oldest)

    def evict(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
