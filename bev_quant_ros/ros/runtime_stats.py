"""Rolling rates, latency percentiles and error counters for diagnostics.

Kept in plain Python so the node's status can be tested without ROS; the node
only copies :meth:`RuntimeStats.key_values` into a DiagnosticStatus.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Callable, Iterable

import numpy as np


class LatencyWindow:
    """The last ``size`` samples of one latency, in milliseconds."""

    def __init__(self, size: int = 300) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value_ms: float) -> None:
        self._samples.append(value_ms)

    def percentiles(self, qs: Iterable[float] = (50, 95, 99)) -> dict[str, float]:
        if not self._samples:
            return {}
        values = np.percentile(np.fromiter(self._samples, float), list(qs))
        return {f"p{q:g}": float(v) for q, v in zip(qs, values)}


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()

    def tick(self) -> None:
        self._times.append(self._clock())

    def rate_hz(self) -> float:
        now = self._clock()
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)


class RuntimeStats:
    """Everything the node reports; updated from several threads."""

    def __init__(self, stages: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self.latency = {stage: LatencyWindow() for stage in stages}
        self.rates: dict[str, RateMeter] = {}
        self.errors: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()

    def add_latency(self, stage: str, value_ms: float) -> None:
        with self._lock:
            self.latency[stage].add(value_ms)

    def tick(self, name: str) -> None:
        with self._lock:
            self.rates.setdefault(name, RateMeter()).tick()

    def count(self, name: str, increment: int = 1) -> None:
        with self._lock:
            self.counters[name] += increment

    def set_count(self, name: str, value: int) -> None:
        """Mirror a counter kept elsewhere (e.g. by the FrameAssembler)."""
        with self._lock:
            self.counters[name] = value

    def error(self, cause: str) -> int:
        """Count one error of ``cause``; return how often it happened (for throttled logs)."""
        with self._lock:
            self.errors[cause] += 1
            return self.errors[cause]

    def key_values(self) -> dict[str, str]:
        """Flat, sorted, human-readable snapshot (DiagnosticStatus values)."""
        with self._lock:
            values: dict[str, str] = {}
            for name, meter in self.rates.items():
                values[f"rate_hz.{name}"] = f"{meter.rate_hz():.2f}"
            for stage, window in self.latency.items():
                for q, v in window.percentiles().items():
                    values[f"latency_ms.{stage}.{q}"] = f"{v:.2f}"
            for name, count in self.counters.items():
                values[f"count.{name}"] = str(count)
            for cause, count in self.errors.items():
                values[f"error.{cause}"] = str(count)
            return dict(sorted(values.items()))


class LogThrottle:
    """At most one log line per key per ``period_s``: rclpy's own throttle is keyed by the call
    site, so one cause logged from a shared line would hide every other cause for the period."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._period_s, self._clock = period_s, clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period_s:
                return False
            self._last[key] = now
            return True
