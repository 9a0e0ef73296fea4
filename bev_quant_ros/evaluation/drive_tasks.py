"""`evaluate` over many drives as independent tasks: one per drive (or per chunk of a long one), merged in order.

A drive's frames are sequential (the recurrent state carries over), so the drive is the
unit of work. Each task builds its own pipeline from the model path and options it is
shipped (on a cluster the paths are on shared storage), opens its drive with the same
reader settings and runs it from a reset state; the driver merges the per-drive runs with
`EvaluationRun.merged` in drive order, so the metrics equal a single process's.

With ``chunk_frames`` a long drive becomes several tasks, each scoring ``chunk_frames``
frames after a warm-up of ``overlap`` unscored frames that builds the recurrent state. The
state at a chunk's start then comes from those frames only, not from the drive's start, so
chunked metrics are close to, not equal to, the one-pass run's (measured: docs/fleet.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby, islice
from pathlib import Path

from rosbags.rosbag2 import Reader

from bev_quant_ros.drives.frames import Drive
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import drive_sources, open_drives
from bev_quant_ros.drives.synth import SYNTH_PREFIX, SynthSpec
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.evaluation.offline import EvaluationRun, run_pipeline
from bev_quant_ros.fleet.runners import NOT_RUN, Runner, TaskResult, run_tasks
from bev_quant_ros.perception.pipeline import BevPipeline

# a task holds one CPU (Ray: num_cpus=1), so its ONNX Runtime uses one thread: N tasks on N cores
# do not fight over them (the metrics do not depend on the thread count: test_fleet.py)
ONE_THREAD = {"intra_op_num_threads": 1, "inter_op_num_threads": 1}
DEFAULT_OVERLAP = 10  # warm-up frames before a chunk (1/3 s of 30 Hz cameras; measured: docs/fleet.md)


@dataclass(frozen=True)
class EvaluateJob:
    """Everything a worker needs besides its drive (all picklable, paths as seen by the workers)."""

    model_path: str
    backend: str
    score_threshold: float
    settings: ReaderSettings
    condition: str


@dataclass(frozen=True)
class FrameSpan:
    """The frames of a drive one task scores: [start, stop) (stop None: to the drive's end),
    after running the ``warm_up`` frames before ``start`` unscored to build the recurrent state."""

    start: int = 0
    stop: int | None = None
    warm_up: int = 0

    def __str__(self) -> str:
        return f"frames {self.start}-{'end' if self.stop is None else self.stop - 1}"


WHOLE_DRIVE = FrameSpan()


@dataclass
class DriveRun:
    """One drive's evaluation, as a task returns it (``path``: the bag; None for synth:)."""

    name: str
    condition: str
    path: Path | None
    run: EvaluationRun


def evaluate_drive(pipeline: BevPipeline, drive: Drive, span: FrameSpan = WHOLE_DRIVE) -> EvaluationRun:
    """The frames of ``span`` from a reset state on the drive's own rig (all of them by default).

    Frames before the warm-up are still read (a drive is a stream: a bag's frame assembly
    needs every message before) but not run through the model.
    """
    pipeline.set_rig(drive.rig)
    pipeline.request_reset()
    frames = islice(drive.frames(pipeline.model_config), span.start - span.warm_up, span.stop)
    for frame in islice(frames, span.warm_up):
        pipeline.process(frame.sensors)
    return run_pipeline(pipeline, frames)


def source_name(source: str) -> str:
    """The name the drive will have (BagDrive: its directory; SynthDrive: its spec)."""
    return source if source.startswith(SYNTH_PREFIX) else Path(source).name


def evaluate_source(job: EvaluateJob, source: str, span: FrameSpan = WHOLE_DRIVE) -> DriveRun:
    """The worker's task: its own pipeline, its drive opened here, ``span`` run from a reset state."""
    options = {} if job.backend == "tensorrt" else ONE_THREAD  # with auto, dropped if TensorRT is chosen
    pipeline = BevPipeline.from_model(job.model_path, backend=job.backend, score_threshold=job.score_threshold,
                                      **options)
    (drive,) = open_drives(source, job.settings, job.condition, progress=False)  # one source, one drive
    return DriveRun(drive.name, drive.condition, getattr(drive, "path", None), evaluate_drive(pipeline, drive, span))


def estimated_frames(source: str, settings: ReaderSettings) -> int | None:
    """A drive's frame count without reading its frames: a synth: spec's, or a bag's camera message
    count from its metadata (one camera set per frame); None if the bag cannot be opened (its task
    will say why)."""
    if source.startswith(SYNTH_PREFIX):
        return SynthSpec.parse(source).frames
    try:
        reader = Reader(source)
        reader.open()
    except Exception:  # a corrupt bag is reported by its task, with the drive's name
        return None
    try:
        return max((c.msgcount for c in reader.connections if c.topic in settings.image_topics), default=None)
    finally:
        reader.close()


def chunk_spans(frames: int | None, chunk_frames: int | None, overlap: int) -> list[FrameSpan]:
    """A drive of about ``frames`` frames in chunks of ``chunk_frames`` scored frames, each after up to
    ``overlap`` warm-up frames; the last chunk runs to the drive's end, so every frame is scored once
    even where the estimate is short (a drive of unknown length is one task)."""
    if chunk_frames is None or frames is None or frames <= chunk_frames:
        return [WHOLE_DRIVE]
    starts = range(0, frames, chunk_frames)
    return [FrameSpan(start, start + chunk_frames if start + chunk_frames < frames else None, min(overlap, start))
            for start in starts]


def drive_tasks(job: EvaluateJob, data: str | Path, chunk_frames: int | None = None,
                overlap: int = DEFAULT_OVERLAP) -> list[tuple[str, FrameSpan]]:
    """The (source, frames) tasks of ``data`` in drive and frame order: one per drive, or its chunks."""
    if chunk_frames is not None and chunk_frames < 1:
        raise ConfigError(f"--chunk-frames must be >= 1, got {chunk_frames}")
    if overlap < 0:
        raise ConfigError(f"--chunk-overlap must be >= 0, got {overlap}")
    tasks = []
    for source in drive_sources(data):
        frames = estimated_frames(source, job.settings) if chunk_frames else None
        tasks += [(source, span) for span in chunk_spans(frames, chunk_frames, overlap)]
    return tasks


def task_name(source: str, span: FrameSpan) -> str:
    """The drive's name, and the frames when the task is one chunk of it."""
    return source_name(source) if span == WHOLE_DRIVE else f"{source_name(source)} ({span})"


def merge_chunks(tasks: list[tuple[str, FrameSpan]], results: list[TaskResult]) -> list[TaskResult]:
    """One result per drive, in drive order: its chunks' runs merged in frame order, or the error of
    its first failed chunk, a real failure before a not-run one (the whole drive is left out: its
    frames would be incomplete)."""
    merged = []
    for source, group in groupby(zip(tasks, results), key=lambda item: item[0][0]):
        chunks = list(group)
        failed = [(span, result) for (_, span), result in chunks if not result.ok]
        if failed:
            span, result = min(failed, key=lambda f: f[1].error == NOT_RUN)  # the cause before "not run"
            prefix = "" if span == WHOLE_DRIVE else f"{span}: "
            merged.append(TaskResult(source_name(source), error=prefix + str(result.error)))
            continue
        first = chunks[0][1].value
        run = EvaluationRun.merged(result.value.run for _, result in chunks)
        merged.append(TaskResult(first.name, DriveRun(first.name, first.condition, first.path, run)))
    return merged


def evaluate_fleet(job: EvaluateJob, data: str | Path, runner: Runner, fail_fast: bool = False,
                   chunk_frames: int | None = None, overlap: int = DEFAULT_OVERLAP) -> list[TaskResult]:
    """One task per drive of ``data`` (or per chunk); results per drive in drive order (a DriveRun, or the error)."""
    tasks = drive_tasks(job, data, chunk_frames, overlap)
    results = run_tasks(runner, evaluate_source, [task_name(*t) for t in tasks], [(job, *t) for t in tasks],
                        desc="drives", fail_fast=fail_fast)
    return merge_chunks(tasks, results)
