"""`evaluate` over many drives as independent tasks: one task per drive, merged in drive order.

A drive's frames are sequential (the recurrent state carries over), so the drive is the
unit of work. Each task builds its own pipeline from the model path and options it is
shipped (on a cluster the paths are on shared storage), opens its drive with the same
reader settings and runs it from a reset state; the driver merges the per-drive runs with
`EvaluationRun.merged` in drive order, so the metrics equal a single process's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bev_quant_ros.drives.frames import Drive
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import drive_sources, open_drives
from bev_quant_ros.drives.synth import SYNTH_PREFIX
from bev_quant_ros.evaluation.offline import EvaluationRun, run_pipeline
from bev_quant_ros.fleet.runners import Runner, TaskResult, run_tasks
from bev_quant_ros.perception.pipeline import BevPipeline

# a task holds one CPU (Ray: num_cpus=1), so its ONNX Runtime uses one thread: N tasks on N cores
# do not fight over them (the metrics do not depend on the thread count: test_fleet.py)
ONE_THREAD = {"intra_op_num_threads": 1, "inter_op_num_threads": 1}


@dataclass(frozen=True)
class EvaluateJob:
    """Everything a worker needs besides its drive (all picklable, paths as seen by the workers)."""

    model_path: str
    backend: str
    score_threshold: float
    settings: ReaderSettings
    condition: str


@dataclass
class DriveRun:
    """One drive's evaluation, as a task returns it (``path``: the bag; None for synth:)."""

    name: str
    condition: str
    path: Path | None
    run: EvaluationRun


def evaluate_drive(pipeline: BevPipeline, drive: Drive) -> EvaluationRun:
    """One drive from a reset state on its own rig."""
    pipeline.set_rig(drive.rig)
    pipeline.request_reset()
    return run_pipeline(pipeline, drive.frames(pipeline.model_config))


def source_name(source: str) -> str:
    """The name the drive will have (BagDrive: its directory; SynthDrive: its spec)."""
    return source if source.startswith(SYNTH_PREFIX) else Path(source).name


def evaluate_source(job: EvaluateJob, source: str) -> DriveRun:
    """The worker's task: its own pipeline, its drive opened here, run from a reset state."""
    options = {} if job.backend == "tensorrt" else ONE_THREAD  # with auto, dropped if TensorRT is chosen
    pipeline = BevPipeline.from_model(job.model_path, backend=job.backend, score_threshold=job.score_threshold,
                                      **options)
    (drive,) = open_drives(source, job.settings, job.condition, progress=False)  # one source, one drive
    return DriveRun(drive.name, drive.condition, getattr(drive, "path", None), evaluate_drive(pipeline, drive))


def evaluate_fleet(job: EvaluateJob, data: str | Path, runner: Runner,
                   fail_fast: bool = False) -> list[TaskResult]:
    """One task per drive of ``data``; results in drive order (value: a DriveRun, or the error)."""
    sources = drive_sources(data)
    return run_tasks(runner, evaluate_source, [source_name(s) for s in sources],
                     [(job, s) for s in sources], desc="drives", fail_fast=fail_fast)
