"""A bounded hand-off between sensor callbacks and the node's workers.

Latest wins: when the worker is busy and more than ``capacity`` frames wait, the
oldest waiting frame is dropped (and counted), so output latency stays bounded by
``capacity`` frames instead of growing with a queue. Capacity 1 keeps only the
newest frame; capacity 2 absorbs one frame of delivery jitter (two camera sets
completing close together) at the cost of at most one frame of extra latency.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Thread-safe bounded slot; ``put`` never blocks, ``take`` waits."""

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"slot capacity must be >= 1, got {capacity}")
        self._condition = threading.Condition()
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._closed = False
        self.dropped = 0
        self.accepted = 0

    def put(self, item: T) -> None:
        with self._condition:
            if len(self._items) == self._capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.accepted += 1
            self._condition.notify()

    def take(self, timeout_s: float | None = None) -> T | None:
        """The oldest kept item (frames stay in order), or None when closed or when ``timeout_s`` passed."""
        with self._condition:
            self._condition.wait_for(lambda: bool(self._items) or self._closed, timeout_s)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """Wake the worker for shutdown; later takes return at once."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
