"""Multi-topic approximate-time assembly of one model frame (no ROS imports).

message_filters is not installable on the CPU setup, and its ApproximateTime
policy would stall the output when one camera dies. FrameAssembler instead:

* groups camera images whose stamps lie within ``sync_slop_s`` of the set's
  first stamp; a set with all cameras is emitted at once;
* emits an incomplete set with the missing cameras marked invalid once it is
  older than ``camera_timeout_s`` — measured both in stamp time (a newer camera
  stamp arrived) and in arrival time (no camera arrives at all), so it works
  with wall clock, sim time, or a bag replayed without ``use_sim_time``;
* emits sets strictly in stamp order: when a newer set completes, older pending
  sets are emitted first (partial) so the recurrent state never sees time go
  backwards because of reordering;
* attaches the latest lidar sweep whose stamp is within ``max_lidar_age_s``
  before the camera stamp (or at most ``sync_slop_s`` after it).

Every message that cannot be used is counted by cause in :class:`SyncCounters`.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

import numpy as np

ImageT = TypeVar("ImageT")
LidarT = TypeVar("LidarT")

NS_PER_S = 1_000_000_000


@dataclass
class SyncCounters:
    """Why messages were not (fully) used; published in diagnostics."""

    frames_complete: int = 0
    frames_partial: int = 0
    frames_without_lidar: int = 0
    frames_lidar_only: int = 0  # a sweep emitted on its own while every camera was silent
    late_camera_messages: int = 0  # their frame was already emitted
    duplicate_camera_messages: int = 0  # same camera twice in one set (second one replaces)
    late_lidar_messages: int = 0  # older than the newest sweep already held
    time_jumps_back: int = 0  # camera stamps jumped back by > backward_jump_s (bag loop)
    missing_camera_frames: list[int] = field(default_factory=list)  # per camera index


@dataclass
class AssembledFrame(Generic[ImageT, LidarT]):
    """One model frame: up to six images, a lidar sweep, and their stamps."""

    stamp_ns: int  # the set's reference stamp (earliest camera stamp in the set)
    images: list[ImageT | None]  # per camera in model order; None = missing
    camera_stamps_ns: list[int | None]
    lidar: LidarT | None
    lidar_stamp_ns: int | None

    @property
    def camera_valid(self) -> np.ndarray:
        """[num_cameras] float32 mask, the engine's ``camera_valid`` input."""
        return np.array([image is not None for image in self.images], dtype=np.float32)


@dataclass
class _PendingSet(Generic[ImageT]):
    stamp_ns: int
    created_monotonic_s: float
    images: list[ImageT | None]
    stamps_ns: list[int | None]

    def complete(self) -> bool:
        return all(image is not None for image in self.images)


class FrameAssembler(Generic[ImageT, LidarT]):
    """Approximate-time assembly of camera sets plus the matching lidar sweep."""

    def __init__(self, num_cameras: int, sync_slop_s: float, camera_timeout_s: float,
                 max_lidar_age_s: float, max_pending_sets: int = 8, lidar_history: int = 8,
                 backward_jump_s: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        if num_cameras <= 0:
            raise ValueError("num_cameras must be positive")
        self.num_cameras = num_cameras
        self.sync_slop_ns = int(round(sync_slop_s * NS_PER_S))
        self.camera_timeout_ns = int(round(camera_timeout_s * NS_PER_S))
        self.camera_timeout_s = camera_timeout_s
        self.max_lidar_age_ns = int(round(max_lidar_age_s * NS_PER_S))
        self.max_pending_sets = max_pending_sets
        self.backward_jump_ns = int(round(backward_jump_s * NS_PER_S))
        self._monotonic = monotonic
        self._pending: list[_PendingSet[ImageT]] = []  # sorted by stamp
        self._lidar: deque[tuple[int, LidarT]] = deque(maxlen=lidar_history)
        self._last_emitted_ns: int | None = None
        self._newest_camera_ns: int | None = None
        self._last_camera_arrival_s: float | None = None
        self._last_lidar_only_ns: int | None = None  # kept apart: a lidar-only frame never makes a camera set late
        self._newest_lidar_arrival_s: float | None = None
        self.counters = SyncCounters(missing_camera_frames=[0] * num_cameras)

    def add_lidar(self, stamp_ns: int, sweep: LidarT) -> None:
        """Hold a sweep for later camera sets."""
        if self._lidar and stamp_ns < self._lidar[-1][0] - self.backward_jump_ns:
            self._lidar.clear()  # time jumped back: the held sweeps belong to the old timeline
        if self._lidar and stamp_ns <= self._lidar[-1][0]:
            self.counters.late_lidar_messages += 1
            return
        self._lidar.append((stamp_ns, sweep))
        self._newest_lidar_arrival_s = self._monotonic()

    def add_camera(self, camera_index: int, stamp_ns: int,
                   image: ImageT) -> list[AssembledFrame[ImageT, LidarT]]:
        """Add one image; return the frames that became ready, oldest first."""
        if not 0 <= camera_index < self.num_cameras:
            raise ValueError(f"camera_index {camera_index} outside 0..{self.num_cameras - 1}")
        if self._newest_camera_ns is not None and stamp_ns < self._newest_camera_ns - self.backward_jump_ns:
            self.counters.time_jumps_back += 1
            self._pending.clear()
            self._last_emitted_ns = None
            self._newest_camera_ns = None
        if self._last_emitted_ns is not None and stamp_ns <= self._last_emitted_ns + self.sync_slop_ns \
                and not self._fits_pending(stamp_ns):
            self.counters.late_camera_messages += 1
            return []
        self._newest_camera_ns = stamp_ns if self._newest_camera_ns is None \
            else max(self._newest_camera_ns, stamp_ns)
        self._last_camera_arrival_s = self._monotonic()
        target = self._find_or_create_set(stamp_ns)
        if target.images[camera_index] is not None:
            self.counters.duplicate_camera_messages += 1
        target.images[camera_index] = image
        target.stamps_ns[camera_index] = stamp_ns
        return self._collect_ready()

    def poll(self) -> list[AssembledFrame[ImageT, LidarT]]:
        """Emit sets that timed out in arrival time, and a lidar-only frame for a new sweep while
        every camera has been silent for ``camera_timeout_s``; call periodically (e.g. a timer)."""
        return self._collect_ready() or self._lidar_only()

    def _lidar_only(self) -> list[AssembledFrame[ImageT, LidarT]]:
        """All cameras down, the lidar alive: the sweep is a frame of its own (stamped with the
        sweep), so perception goes on lidar-only instead of stopping with the cameras."""
        if self._pending or not self._lidar:
            return []
        now_s = self._monotonic()
        stamp_ns, sweep = self._lidar[-1]
        cameras_silent = (self._last_camera_arrival_s is None
                          or now_s - self._last_camera_arrival_s >= self.camera_timeout_s)
        sweep_waited = now_s - self._newest_lidar_arrival_s >= self.camera_timeout_s  # its cameras had their chance
        newest = max((s for s in (self._last_emitted_ns, self._last_lidar_only_ns) if s is not None), default=None)
        is_new = newest is None or stamp_ns > newest + self.sync_slop_ns
        if not (cameras_silent and sweep_waited and is_new):
            return []
        self.counters.frames_lidar_only += 1
        self._last_lidar_only_ns = stamp_ns
        return [AssembledFrame(stamp_ns, [None] * self.num_cameras, [None] * self.num_cameras, sweep, stamp_ns)]

    def _fits_pending(self, stamp_ns: int) -> bool:
        return any(abs(stamp_ns - s.stamp_ns) <= self.sync_slop_ns for s in self._pending)

    def _find_or_create_set(self, stamp_ns: int) -> _PendingSet[ImageT]:
        for pending in self._pending:
            if abs(stamp_ns - pending.stamp_ns) <= self.sync_slop_ns:
                return pending
        new = _PendingSet(stamp_ns, self._monotonic(), [None] * self.num_cameras,
                          [None] * self.num_cameras)
        stamps = [p.stamp_ns for p in self._pending]
        self._pending.insert(bisect.bisect(stamps, stamp_ns), new)
        return new

    def _collect_ready(self) -> list[AssembledFrame[ImageT, LidarT]]:
        now_s = self._monotonic()
        ready_until = -1  # index of the newest pending set that must be emitted now
        for i, pending in enumerate(self._pending):
            timed_out = (now_s - pending.created_monotonic_s >= self.camera_timeout_s
                         or (self._newest_camera_ns is not None
                             and self._newest_camera_ns - pending.stamp_ns > self.camera_timeout_ns))
            if pending.complete() or timed_out or len(self._pending) - i > self.max_pending_sets:
                ready_until = i
        emitted = [self._emit(p) for p in self._pending[:ready_until + 1]]
        del self._pending[:ready_until + 1]
        return emitted

    def _emit(self, pending: _PendingSet[ImageT]) -> AssembledFrame[ImageT, LidarT]:
        if pending.complete():
            self.counters.frames_complete += 1
        else:
            self.counters.frames_partial += 1
            for index, image in enumerate(pending.images):
                if image is None:
                    self.counters.missing_camera_frames[index] += 1
        lidar_stamp, sweep = self._lidar_for(pending.stamp_ns)
        if sweep is None:
            self.counters.frames_without_lidar += 1
        self._last_emitted_ns = pending.stamp_ns
        return AssembledFrame(pending.stamp_ns, pending.images, pending.stamps_ns, sweep, lidar_stamp)

    def _lidar_for(self, stamp_ns: int) -> tuple[int | None, LidarT | None]:
        for lidar_stamp, sweep in reversed(self._lidar):
            if lidar_stamp <= stamp_ns + self.sync_slop_ns:
                if stamp_ns - lidar_stamp <= self.max_lidar_age_ns:
                    return lidar_stamp, sweep
                break
        return None, None
