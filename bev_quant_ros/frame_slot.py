"""A one-element hand-off between sensor callbacks and the inference worker.

Latest wins: when the worker is busy and a newer frame arrives, the waiting
older frame is replaced (and counted as dropped), so output latency stays
bounded by one inference instead of growing with a queue.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Thread-safe single slot; ``put`` never blocks, ``take`` waits."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.dropped = 0
        self.accepted = 0

    def put(self, item: T) -> None:
        with self._condition:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.accepted += 1
            self._condition.notify()

    def take(self, timeout_s: float | None = None) -> T | None:
        """The newest item, or None when closed or when ``timeout_s`` passed."""
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed, timeout_s)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake the worker for shutdown; later takes return at once."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
