"""Recorded-timing playback (player.py) on a simulated clock: deadlines, lateness, /clock, loop."""

from __future__ import annotations

import pytest

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.replay.player import PlaybackConfig, Record, Timeline, play_records

MS = 1_000_000  # ns
T0 = 5_000 * 10**9


class FakeWaiter:
    """Simulated monotonic time: wait() advances it, plus ``oversleep_s`` of wake-up delay."""

    def __init__(self, oversleep_s: float = 0.0, stop_at_s: float = float("inf")) -> None:
        self.time_s, self.oversleep_s, self.stop_at_s = 100.0, oversleep_s, stop_at_s

    def now(self) -> float:
        return self.time_s

    def wait(self, seconds: float) -> bool:
        self.time_s += seconds + self.oversleep_s
        return self.stopped()

    def stopped(self) -> bool:
        return self.time_s >= self.stop_at_s


class RecordingSink:
    """Keeps what was published with the simulated time it went out."""

    def __init__(self, waiter: FakeWaiter, publish_cost_s: float = 0.0) -> None:
        self.waiter, self.publish_cost_s = waiter, publish_cost_s
        self.messages: list[tuple[float, str, int]] = []  # (wall s, topic, stamp)
        self.clock: list[tuple[float, int]] = []

    def publish(self, topic: str, raw: bytes) -> None:
        self.messages.append((self.waiter.now(), topic, int.from_bytes(raw, "little")))
        self.waiter.time_s += self.publish_cost_s

    def publish_clock(self, stamp_ns: int) -> None:
        self.clock.append((self.waiter.now(), stamp_ns))


def records(offsets_ms: list[int], topic: str = "/a"):
    """A pass factory; each record's payload is its stamp so the sink can identify it."""
    stamps = [T0 + ms * MS for ms in offsets_ms]
    return lambda: (Record(topic, s, s.to_bytes(8, "little")) for s in stamps)


def publish_times(sink: RecordingSink) -> list[float]:
    return [t - sink.messages[0][0] for t, _, _ in sink.messages]


def test_deadlines_follow_stamps_and_rate_two_halves_the_spacing():
    offsets = [0, 100, 150, 400]
    sinks = {}
    for rate in (1.0, 2.0):
        waiter = FakeWaiter()
        sinks[rate] = RecordingSink(waiter)
        summary = play_records(records(offsets), sinks[rate], PlaybackConfig(rate=rate, clock_hz=0), waiter)
        assert summary.counts == {"/a": 4} and summary.lateness_max_ms == 0.0
    assert publish_times(sinks[1.0]) == pytest.approx([0.0, 0.1, 0.15, 0.4])
    assert publish_times(sinks[2.0]) == pytest.approx([0.0, 0.05, 0.075, 0.2])
    # the summary tells when each stamp was due (what a latency measured in wall time starts from)
    first_sent = sinks[2.0].messages[0][0]
    assert summary.first_pass.deadline_s(T0 + 400 * MS) == pytest.approx(first_sent + 0.2)


def test_timeline_maps_both_ways():
    timeline = Timeline(bag_start_ns=T0, wall_start_s=10.0, rate=4.0)
    assert timeline.deadline_s(T0 + 2 * 10**9) == pytest.approx(10.5)
    assert timeline.bag_time_ns(10.5) == T0 + 2 * 10**9


def test_late_wakeups_do_not_accumulate_drift():
    waiter = FakeWaiter(oversleep_s=0.003)  # every sleep overshoots by 3 ms
    sink = RecordingSink(waiter)
    summary = play_records(records(list(range(0, 1000, 10))), sink, PlaybackConfig(clock_hz=0), waiter)
    # Relative to the first message, the last is 990 ms later plus ONE overshoot, not 99 of them.
    assert publish_times(sink)[-1] == pytest.approx(0.990 + 0.003)
    assert summary.lateness_p50_ms == pytest.approx(3.0)
    assert summary.lateness_max_ms == pytest.approx(3.0)
    assert summary.late_messages == 99  # all but the first, each 3 ms > the 1 ms threshold


def test_behind_schedule_publishes_immediately_and_counts_lateness():
    waiter = FakeWaiter()
    sink = RecordingSink(waiter, publish_cost_s=0.025)  # each publish takes 25 ms, messages 10 ms apart
    summary = play_records(records([0, 10, 20, 30]), sink, PlaybackConfig(clock_hz=0), waiter)
    assert publish_times(sink) == pytest.approx([0.0, 0.025, 0.05, 0.075])  # back-to-back, no sleep
    assert summary.lateness_max_ms == pytest.approx(45.0)  # the 4th: due at 30 ms, sent at 75 ms
    assert summary.late_messages == 3


def test_clock_ticks_at_its_rate_and_announces_each_message_stamp():
    waiter = FakeWaiter()
    sink = RecordingSink(waiter)
    summary = play_records(records([0, 100]), sink, PlaybackConfig(clock_hz=100.0), waiter)
    stamps = [s for _, s in sink.clock]
    assert stamps == sorted(stamps)  # never backwards within a pass
    assert stamps[0] == T0 and stamps[-1] == T0 + 100 * MS
    assert T0 + 50 * MS in stamps  # a tick mid-way reports the bag time of that instant
    # 10 ms ticks over the 100 ms gap (first tick at 0) + one announcement per message.
    assert summary.clock_messages == len(sink.clock) == 10 + 2
    clock_at_message = dict(sink.clock)
    for wall_s, _, stamp in sink.messages:
        assert clock_at_message[wall_s] == stamp  # /clock went out right before the message


def test_clock_follows_rate():
    waiter = FakeWaiter()
    sink = RecordingSink(waiter)
    play_records(records([0, 200]), sink, PlaybackConfig(rate=2.0, clock_hz=100.0), waiter)
    start_s = sink.clock[0][0]
    for wall_s, stamp in sink.clock:
        assert stamp - T0 == pytest.approx(2.0 * (wall_s - start_s) * 1e9, abs=1e3)


def test_loop_restarts_one_interval_later_with_time_going_backwards():
    waiter = FakeWaiter(stop_at_s=100.0 + 0.37)  # stop during the 3rd pass
    sink = RecordingSink(waiter)
    summary = play_records(records([0, 50, 100]), sink, PlaybackConfig(loop=True, clock_hz=100.0), waiter)
    assert [s - T0 for _, _, s in sink.messages] == [0, 50 * MS, 100 * MS] * 2 + [0, 50 * MS]
    # The next pass starts one mean interval (50 ms) after the last message: a steady stream.
    assert publish_times(sink) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35])
    assert summary.passes == 2 and summary.interrupted
    clock = [s for _, s in sink.clock]
    backwards = [i for i in range(1, len(clock)) if clock[i] < clock[i - 1]]
    assert len(backwards) == 2 and all(clock[i] == T0 for i in backwards)


def test_looping_a_single_message_is_paced_not_a_busy_loop():
    waiter = FakeWaiter(stop_at_s=100.0 + 0.0975)
    sink = RecordingSink(waiter)
    summary = play_records(records([0]), sink, PlaybackConfig(rate=2.0, loop=True, clock_hz=0), waiter)
    assert publish_times(sink) == pytest.approx([0.005 * k for k in range(20)])  # 10 ms of bag at 2×
    assert summary.passes == 20 and summary.interrupted


def test_stop_during_a_long_wait_returns_promptly():
    waiter = FakeWaiter(stop_at_s=100.0 + 1.0)
    sink = RecordingSink(waiter)
    summary = play_records(records([0, 60_000]), sink, PlaybackConfig(clock_hz=10.0), waiter)
    assert summary.interrupted and summary.counts == {"/a": 1}
    assert summary.wall_duration_s == pytest.approx(1.0, abs=0.11)  # within one clock period


def test_empty_stream_plays_nothing():
    waiter = FakeWaiter()
    summary = play_records(lambda: iter(()), RecordingSink(waiter), PlaybackConfig(loop=True), waiter)
    assert summary.total_messages == 0 and summary.passes == 0 and not summary.interrupted


@pytest.mark.parametrize("kwargs", [{"rate": 0.0}, {"rate": -1.0}, {"rate": float("nan")},
                                    {"clock_hz": -5.0}])
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        PlaybackConfig(**kwargs)
