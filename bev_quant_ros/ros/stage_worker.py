"""A pipeline stage on its own thread: take from a latest-wins slot, handle, repeat.

The node runs two (prepare, then infer + publish). An exception while handling one
item is reported and the loop goes on: one bad frame must never stop perception.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

from bev_quant_ros.ros.frame_slot import LatestSlot

T = TypeVar("T")


class StageWorker(Generic[T]):
    """Serves ``slot`` with ``handle`` until the slot is closed (see module docstring)."""

    def __init__(self, name: str, slot: LatestSlot[T], handle: Callable[[T], None],
                 on_error: Callable[[Exception], None], poll_s: float = 0.5) -> None:
        self.slot = slot
        self._handle, self._on_error, self._poll_s = handle, on_error, poll_s
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the slot (wakes the thread) and wait for the item in hand to finish."""
        self.slot.close()
        self._thread.join(timeout=timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _serve(self) -> None:
        while not self.slot.closed:
            item = self.slot.take(timeout_s=self._poll_s)
            if item is None:
                continue
            try:
                self._handle(item)
            except Exception as exc:  # keep the stage alive whatever one frame does
                self._on_error(exc)
