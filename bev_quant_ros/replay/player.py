"""Recorded-timing playback, free of ROS so its clock arithmetic is testable with a fake clock.

Message i of a pass goes out at ``t0 + (stamp_i - stamp_0) / rate`` on a monotonic clock.
Each pass is anchored once, so a late wake-up never shifts later deadlines (no drift):
a message that is already due is sent at once and its lateness is recorded instead.
While waiting, the bag time is announced at ``clock_hz`` (the ``/clock`` of ``use_sim_time``),
and once more with the message's own stamp right before each message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Protocol

import numpy as np

from bev_quant_ros.errors import ConfigError

# Wake-up jitter of a sleeping thread stays below this on an idle Linux box; later is "late".
LATE_THRESHOLD_MS = 1.0
# Bag time between two looped passes at least this, so a bag whose messages all share one
# stamp (a single message, say) repeats at a bounded rate instead of in a busy loop.
MIN_LOOP_GAP_NS = 10_000_000


class Record(NamedTuple):
    """One bag message: topic, recorded stamp (ns) and its serialized CDR bytes."""

    topic: str
    stamp_ns: int
    raw: bytes


class Sink(Protocol):
    """Where playback goes: the ROS publishers, or a list in a test."""

    def publish(self, topic: str, raw: bytes) -> None: ...

    def publish_clock(self, stamp_ns: int) -> None: ...


class Waiter(Protocol):
    """Time source and interruptible sleep; a fake one makes the schedule testable."""

    def now(self) -> float: ...

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when playback must stop."""

    def stopped(self) -> bool: ...


class MonotonicWaiter:
    """Real time: sleeps on the stop event so a stop request ends the wait at once."""

    def __init__(self, stop_event: threading.Event) -> None:
        self._stop_event = stop_event

    def now(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float) -> bool:
        return self._stop_event.wait(max(0.0, seconds))

    def stopped(self) -> bool:
        return self._stop_event.is_set()


@dataclass(frozen=True)
class Timeline:
    """Maps bag time to wall deadlines for one pass (anchored once, hence drift-free)."""

    bag_start_ns: int
    wall_start_s: float
    rate: float

    def deadline_s(self, stamp_ns: int) -> float:
        return self.wall_start_s + (stamp_ns - self.bag_start_ns) / (self.rate * 1e9)

    def bag_time_ns(self, wall_s: float) -> int:
        return self.bag_start_ns + int(round((wall_s - self.wall_start_s) * self.rate * 1e9))


@dataclass(frozen=True)
class PlaybackConfig:
    """How to pace playback; validated here so the CLI and the Python API agree."""

    rate: float = 1.0
    loop: bool = False
    clock_hz: float = 100.0  # 0 disables /clock

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"rate must be > 0, got {self.rate}")
        if not self.clock_hz >= 0:
            raise ConfigError(f"clock rate must be >= 0 Hz, got {self.clock_hz}")


@dataclass(frozen=True)
class PlaybackSummary:
    """What a playback did: per-topic counts, lateness percentiles, passes, stop cause."""

    counts: dict[str, int]
    lateness_p50_ms: float
    lateness_p95_ms: float
    lateness_max_ms: float
    late_messages: int
    passes: int
    clock_messages: int
    wall_duration_s: float
    interrupted: bool
    # bag time -> monotonic wall time of the first pass: when a stamp was due to go out
    first_pass: Timeline | None = None

    @property
    def total_messages(self) -> int:
        return sum(self.counts.values())

    def format(self) -> str:
        """Human-readable report printed by ``bev-quant replay`` at the end."""
        lines = [f"replayed {self.total_messages} messages in {self.wall_duration_s:.2f} s, "
                 f"{self.passes} pass(es){', interrupted' if self.interrupted else ''}; "
                 f"{self.clock_messages} /clock messages"]
        lines += [f"  {topic}: {count}" for topic, count in sorted(self.counts.items())]
        lines.append(f"lateness ms: p50 {self.lateness_p50_ms:.2f}  p95 {self.lateness_p95_ms:.2f}"
                     f"  max {self.lateness_max_ms:.2f}  (> {LATE_THRESHOLD_MS:g} ms: "
                     f"{self.late_messages})")
        return "\n".join(lines)


@dataclass
class PlaybackStats:
    """Accumulates counts and lateness while playing."""

    counts: dict[str, int] = field(default_factory=dict)
    lateness_ms: list[float] = field(default_factory=list)
    clock_messages: int = 0
    passes: int = 0
    first_pass: Timeline | None = None

    def count(self, topic: str) -> None:
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def summary(self, wall_duration_s: float, interrupted: bool) -> PlaybackSummary:
        late = np.asarray(self.lateness_ms or [0.0])
        p50, p95 = np.percentile(late, [50, 95])
        return PlaybackSummary(dict(self.counts), float(p50), float(p95), float(late.max()),
                               int(np.count_nonzero(late > LATE_THRESHOLD_MS)), self.passes,
                               self.clock_messages, wall_duration_s, interrupted, self.first_pass)


class _ClockTicker:
    """Announces bag time at a fixed wall rate, never backwards within a pass."""

    def __init__(self, sink: Sink, stats: PlaybackStats, hz: float) -> None:
        self._sink, self._stats = sink, stats
        self._period_s = 1.0 / hz if hz > 0 else None
        self.next_tick_s = float("inf")
        self._last_ns: int | None = None

    def start_pass(self, wall_s: float) -> None:
        self._last_ns = None
        if self._period_s is not None:
            self.next_tick_s = wall_s

    def tick_due(self, now_s: float, timeline: Timeline) -> None:
        """Send the bag time now and schedule the next tick (skipping missed ones)."""
        self.announce(timeline.bag_time_ns(now_s))
        self.next_tick_s += self._period_s
        if self.next_tick_s <= now_s:
            self.next_tick_s = now_s + self._period_s

    def announce(self, stamp_ns: int) -> None:
        if self._period_s is None:
            return
        stamp_ns = stamp_ns if self._last_ns is None else max(stamp_ns, self._last_ns)
        self._sink.publish_clock(stamp_ns)
        self._last_ns = stamp_ns
        self._stats.clock_messages += 1


def play_records(records: Callable[[], Iterable[Record]], sink: Sink, config: PlaybackConfig,
                 waiter: Waiter, stats: PlaybackStats | None = None) -> PlaybackSummary:
    """Publish ``records()`` (one call per pass) through ``sink`` with recorded timing.

    With ``config.loop`` each new pass starts one mean message interval (at least
    MIN_LOOP_GAP_NS) after the last message of the previous one, so looping looks like a
    continuous stream whose bag time jumps backwards. Returns when the records run out
    (no loop) or the waiter stops.
    """
    stats = stats if stats is not None else PlaybackStats()
    clock = _ClockTicker(sink, stats, config.clock_hz)
    started_s = pass_start_s = waiter.now()
    interrupted = False
    while not interrupted:
        timeline: Timeline | None = None
        first_ns = last_ns = count = 0
        for record in records():
            if timeline is None:
                timeline = Timeline(record.stamp_ns, pass_start_s, config.rate)
                stats.first_pass = stats.first_pass or timeline
                first_ns = record.stamp_ns
                clock.start_pass(pass_start_s)
            if _wait_until(timeline.deadline_s(record.stamp_ns), timeline, clock, waiter):
                interrupted = True
                break
            clock.announce(record.stamp_ns)
            stats.lateness_ms.append(1e3 * max(0.0, waiter.now() - timeline.deadline_s(record.stamp_ns)))
            sink.publish(record.topic, record.raw)
            stats.count(record.topic)
            last_ns, count = record.stamp_ns, count + 1
        if timeline is None or interrupted:
            break
        stats.passes += 1
        if not config.loop:
            break
        gap_ns = max(MIN_LOOP_GAP_NS, (last_ns - first_ns) // (count - 1) if count > 1 else 0)
        pass_start_s = timeline.deadline_s(last_ns + gap_ns)
        interrupted = waiter.stopped()
    return stats.summary(waiter.now() - started_s, interrupted or waiter.stopped())


def _wait_until(deadline_s: float, timeline: Timeline, clock: _ClockTicker, waiter: Waiter) -> bool:
    """Sleep until the deadline, ticking /clock on the way; True when asked to stop."""
    while True:
        now_s = waiter.now()
        if now_s >= deadline_s:
            return waiter.stopped()
        if clock.next_tick_s <= now_s:
            clock.tick_due(now_s, timeline)
            continue
        if waiter.wait(min(deadline_s, clock.next_tick_s) - now_s):
            return True
