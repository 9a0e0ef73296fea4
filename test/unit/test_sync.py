"""FrameAssembler: approximate-time camera sets, timeouts, ordering and lidar matching."""

from __future__ import annotations

import numpy as np

from bev_quant_ros.perception.frame_assembly import FrameAssembler

MS = 1_000_000
FRAME_NS = 33 * MS


class FakeClock:
    """Monotonic arrival time under test control (a real clock would make timeouts flaky)."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def make(clock: FakeClock | None = None, **kwargs) -> FrameAssembler:
    params = dict(num_cameras=6, sync_slop_s=0.02, camera_timeout_s=0.1, max_lidar_age_s=0.2)
    params.update(kwargs)
    return FrameAssembler(monotonic=clock or FakeClock(), **params)


def feed_set(assembler, stamp_ns, cameras=range(6), jitter_ns=0):
    frames = []
    for i in cameras:
        frames += assembler.add_camera(i, stamp_ns + i * jitter_ns, f"img{i}@{stamp_ns}")
    return frames


def test_complete_set_within_slop_is_emitted_once_with_all_cameras_valid():
    assembler = make()
    assembler.add_lidar(1000 * MS - 40 * MS, "sweep0")
    frames = feed_set(assembler, 1000 * MS, jitter_ns=3 * MS)  # spread 15 ms < 20 ms slop
    assert len(frames) == 1
    frame = frames[0]
    assert frame.stamp_ns == 1000 * MS
    assert frame.camera_valid.tolist() == [1.0] * 6
    assert frame.camera_stamps_ns[5] == 1015 * MS
    assert frame.lidar == "sweep0" and frame.lidar_stamp_ns == 960 * MS
    assert assembler.counters.frames_complete == 1 and assembler.counters.frames_partial == 0


def test_images_outside_slop_start_a_new_set():
    assembler = make()
    assert feed_set(assembler, 1000 * MS, cameras=range(5)) == []
    # camera 5 is 25 ms later than the set: beyond the 20 ms slop, it opens its own set
    assert assembler.add_camera(5, 1025 * MS, "late") == []


def test_dead_camera_times_out_by_stamp_and_is_marked_invalid():
    assembler = make()
    emitted = []
    for k in range(6):  # camera 2 never publishes
        emitted += feed_set(assembler, 1000 * MS + k * FRAME_NS, cameras=[0, 1, 3, 4, 5])
    # newest stamp 1165 ms: sets more than 100 ms older (1000, 1033) are emitted, 1066 waits
    assert [f.stamp_ns for f in emitted] == [1000 * MS, 1033 * MS]
    assert all(f.camera_valid.tolist() == [1, 1, 0, 1, 1, 1] for f in emitted)
    assert assembler.counters.missing_camera_frames == [0, 0, 2, 0, 0, 0]


def test_all_cameras_silent_times_out_by_arrival_time():
    clock = FakeClock()
    assembler = make(clock)
    assert feed_set(assembler, 1000 * MS, cameras=[0, 1]) == []
    clock.now_s += 0.05
    assert assembler.poll() == []
    clock.now_s += 0.06
    frames = assembler.poll()
    assert len(frames) == 1 and frames[0].camera_valid.tolist() == [1, 1, 0, 0, 0, 0]


def test_newer_complete_set_flushes_older_partial_first_in_stamp_order():
    assembler = make()
    feed_set(assembler, 1000 * MS, cameras=[0, 1, 2])
    frames = feed_set(assembler, 1033 * MS)
    assert [f.stamp_ns for f in frames] == [1000 * MS, 1033 * MS]
    assert frames[0].camera_valid.sum() == 3 and frames[1].camera_valid.sum() == 6
    # the missing cameras of the first set now arrive: too late, counted, not re-emitted
    assert feed_set(assembler, 1000 * MS, cameras=[3, 4, 5]) == []
    assert assembler.counters.late_camera_messages == 3


def test_duplicate_camera_in_a_set_replaces_and_is_counted():
    assembler = make()
    assembler.add_camera(0, 1000 * MS, "first")
    assembler.add_camera(0, 1005 * MS, "second")
    frames = feed_set(assembler, 1000 * MS, cameras=range(1, 6))
    assert frames[0].images[0] == "second"
    assert assembler.counters.duplicate_camera_messages == 1


def test_lidar_is_the_latest_sweep_within_max_age():
    assembler = make()
    for stamp in (700, 800, 900):
        assembler.add_lidar(stamp * MS, f"sweep{stamp}")
    frame = feed_set(assembler, 1000 * MS)[0]
    assert frame.lidar == "sweep900"
    assembler.add_lidar(1010 * MS, "slightly-after")  # within slop after the camera stamp
    assert feed_set(assembler, 1033 * MS)[0].lidar == "slightly-after"
    # 250 ms after the newest sweep: too old, the frame has no lidar
    assert feed_set(assembler, 1260 * MS)[0].lidar is None
    assert assembler.counters.frames_without_lidar == 1


def test_out_of_order_lidar_is_counted_and_ignored():
    assembler = make()
    assembler.add_lidar(900 * MS, "new")
    assembler.add_lidar(800 * MS, "old")
    assert assembler.counters.late_lidar_messages == 1
    assert feed_set(assembler, 1000 * MS)[0].lidar == "new"


def test_time_jump_back_starts_a_new_timeline():
    assembler = make()
    assembler.add_lidar(5000 * MS, "end-of-bag")
    feed_set(assembler, 5000 * MS)
    assembler.add_lidar(990 * MS, "loop-start")  # bag looped: accepted, old sweeps dropped
    frames = feed_set(assembler, 1000 * MS)
    assert len(frames) == 1 and frames[0].stamp_ns == 1000 * MS
    assert frames[0].lidar == "loop-start"
    assert assembler.counters.time_jumps_back == 1
    assert assembler.counters.late_camera_messages == 0


def test_pending_sets_are_bounded():
    assembler = make(max_pending_sets=3, camera_timeout_s=10.0)
    emitted = []
    for k in range(6):  # only camera 0 publishes, stamps 33 ms apart, long timeout
        emitted += assembler.add_camera(0, 1000 * MS + k * FRAME_NS, k)
    assert [f.images[0] for f in emitted] == [0, 1, 2]
    assert np.all([f.camera_valid.sum() == 1 for f in emitted])


def test_every_camera_silent_makes_each_new_sweep_a_lidar_only_frame():
    clock = FakeClock()
    assembler = make(clock)
    assert feed_set(assembler, 1000 * MS) and assembler.poll() == []  # healthy: one full set
    clock.now_s += 0.05
    assembler.add_lidar(1090 * MS, "sweep@1090")
    clock.now_s += 0.05  # cameras silent 0.1 s, but the sweep arrived only 0.05 s ago: its cameras may come
    assert assembler.poll() == []
    clock.now_s += 0.06
    [frame] = assembler.poll()
    assert (frame.stamp_ns, frame.lidar, frame.lidar_stamp_ns) == (1090 * MS, "sweep@1090", 1090 * MS)
    assert frame.camera_valid.tolist() == [0] * 6 and assembler.counters.frames_lidar_only == 1
    assert assembler.poll() == []  # that sweep once only
    assembler.add_lidar(1190 * MS, "sweep@1190")
    clock.now_s += 0.11
    assert [f.stamp_ns for f in assembler.poll()] == [1190 * MS]
    # the cameras come back: the next set is a normal frame, no lidar-only frame while they are alive
    assert [f.camera_valid.sum() for f in feed_set(assembler, 1230 * MS)] == [6]
    assembler.add_lidar(1290 * MS, "sweep@1290")
    clock.now_s += 0.05
    assert assembler.poll() == [] and assembler.counters.frames_lidar_only == 2


def test_a_sweep_whose_cameras_come_in_time_is_not_a_lidar_only_frame():
    clock = FakeClock()
    assembler = make(clock)
    assembler.add_lidar(1000 * MS, "sweep")  # start-up: the lidar first
    clock.now_s += 0.03
    [frame] = feed_set(assembler, 1000 * MS)
    assert frame.lidar == "sweep" and frame.camera_valid.all()
    clock.now_s += 1.0
    assert assembler.poll() == [] and assembler.counters.frames_lidar_only == 0


def test_a_lidar_only_frame_does_not_make_the_late_cameras_of_its_sweep_late():
    clock = FakeClock()
    assembler = make(clock)
    assembler.add_lidar(1000 * MS, "sweep")
    clock.now_s += 0.2  # the cameras are slower than camera_timeout_s: the sweep goes out alone
    [alone] = assembler.poll()
    assert alone.camera_valid.sum() == 0
    [frame] = feed_set(assembler, 1000 * MS)  # then they come: still a frame, with the sweep
    assert frame.camera_valid.all() and frame.lidar == "sweep" and assembler.counters.late_camera_messages == 0
