"""Fleet scale (bev_quant_ros/fleet): drives and calibration sequences as independent tasks on a
local 2-CPU Ray cluster and on local worker processes give the single process's numbers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from bev_quant_ros.cli import main as bev_quant
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.drives.synth import SynthDrive, SynthSpec
from bev_quant_ros.evaluation.drive_tasks import (
    WHOLE_DRIVE,
    DriveRun,
    EvaluateJob,
    FrameSpan,
    drive_tasks,
    evaluate_drive,
    evaluate_fleet,
    evaluate_source,
    merge_chunks,
    task_name,
)
from bev_quant_ros.evaluation.offline import EvaluationRun
from bev_quant_ros.fleet.runners import (
    NOT_RUN,
    WORKER_RETRIES,
    InProcessRunner,
    LocalPoolRunner,
    RayRunner,
    Runner,
    TaskResult,
    run_tasks,
)
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.pipeline import BevPipeline
from bev_quant_ros.quant.calib_data import collect_activation_stats, record_drive
from bev_quant_ros.quant.parallel_stats import parallel_activation_stats
from bev_quant_ros.sim import generate_frames
from bev_quant_ros.sim.bag_writer import write_bag

ray = pytest.importorskip("ray", reason="ray (the optional 'fleet' extra) is not installed")

DRIVES = {"a_day": ("day", 100_011), "b_night": ("night", 100_012), "c_rain": ("rain", 100_013)}
FRAMES = 4
LONG_FRAMES, CHUNK, OVERLAP = 60, 20, 10  # a drive of three chunks
TIMING_KEYS = {"engine_ms_median", "pipeline_ms_median"}  # wall time: differs from run to run


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def drives_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fleet") / "drives"
    root.mkdir()
    for name, (condition, seed) in DRIVES.items():
        write_bag(root / name, generate_frames(seed, condition, FRAMES), load_rig())
    return root


def _evaluate(data: Path, model: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code = bev_quant(["evaluate", "--data", str(data), "--model", str(model), "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def _without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def _assert_same_metrics(got: dict, expected: dict) -> None:
    """Every number to 1e-9, every other value equal (timings left out)."""
    got, expected = _without_timing(got), _without_timing(expected)
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, dict):
            _assert_same_metrics(got[key], value)
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-9), key
        else:
            assert got[key] == value, key


@pytest.fixture(scope="module")
def single(drives_dir, tiny_model_path, tmp_path_factory) -> dict:
    code, summary = _evaluate(drives_dir, tiny_model_path, tmp_path_factory.mktemp("single") / "m.json")
    assert code == 0 and summary["frames"] == len(DRIVES) * FRAMES
    return summary


@pytest.mark.parametrize("how", [["--ray"], ["--workers", "2"]], ids=["ray", "workers"])
def test_tasks_give_the_single_process_metrics(how, ray_cluster, drives_dir, tiny_model_path, single, tmp_path):
    code, summary = _evaluate(drives_dir, tiny_model_path, tmp_path / "m.json", *how)
    assert code == 0
    assert list(summary["drives"]) == list(DRIVES)  # drive order, whatever finished first
    for name, per_drive in single["drives"].items():
        _assert_same_metrics(summary["drives"][name], per_drive)
    _assert_same_metrics({k: v for k, v in summary.items() if k != "drives"},
                         {k: v for k, v in single.items() if k != "drives"})
    assert single["detections_per_frame"] > 1 and single["drives"]["a_day"]["mAP"] > 0  # not empty runs


def test_each_task_returns_its_drives_own_detections(ray_cluster, drives_dir, tiny_model_path):
    job = EvaluateJob(str(tiny_model_path), "onnxruntime", 0.05, ReaderSettings.from_params(), "bag")
    with RayRunner() as runner:
        results = evaluate_fleet(job, drives_dir, runner)
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    for result, drive in zip(results, open_drives(drives_dir, job.settings)):
        expected = evaluate_drive(pipeline, drive)
        assert result.ok and result.value.name == drive.name and len(result.value.run.predictions) == FRAMES
        assert result.value.run.stamps_ns == expected.stamps_ns
        for got, want in zip(result.value.run.predictions, expected.predictions):
            assert got.class_names == want.class_names
            np.testing.assert_array_equal(got.scores, want.scores)
            np.testing.assert_array_equal(got.centers, want.centers)


def _with_broken(drives_dir: Path, root: Path, how: str) -> Path:
    shutil.copytree(drives_dir, root)
    if how == "metadata":
        (root / "broken").mkdir()
        (root / "broken" / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag\n")
    else:  # a copy whose data file is cut short
        shutil.copytree(drives_dir / "a_day", root / "broken")
        (data,) = (root / "broken").glob("*.mcap")
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    return root


@pytest.mark.parametrize("how, broken", [(["--ray"], "metadata"), (["--workers", "2"], "truncated")])
def test_a_corrupt_drive_is_named_and_the_others_are_scored(how, broken, ray_cluster, drives_dir, tiny_model_path,
                                                            single, tmp_path, capsys):
    data = _with_broken(drives_dir, tmp_path / "drives", broken)
    code, summary = _evaluate(data, tiny_model_path, tmp_path / "m.json", *how)
    assert code == 2
    assert "evaluate: drive broken failed" in capsys.readouterr().err
    assert list(summary["failed_drives"]) == ["broken"] and list(summary["drives"]) == list(DRIVES)
    _assert_same_metrics({k: v for k, v in summary.items() if k not in ("drives", "failed_drives", "data")},
                         {k: v for k, v in single.items() if k not in ("drives", "data")})


def _fail_on_b(name: str) -> str:
    if name == "b":
        raise ValueError("drive b is corrupt")
    return name.upper()


def test_fail_fast_stops_at_the_first_failure():
    names = ["a", "b", "c"]
    args = [(n,) for n in names]
    going_on = run_tasks(InProcessRunner(), _fail_on_b, names, args, "t")
    assert [(r.value, r.error) for r in going_on] == [("A", None), (None, "ValueError: drive b is corrupt"),
                                                      ("C", None)]
    stopped = run_tasks(InProcessRunner(), _fail_on_b, names, args, "t", fail_fast=True)
    assert [r.error for r in stopped] == [None, "ValueError: drive b is corrupt", NOT_RUN]


def _evaluate_or_die(job: EvaluateJob, source: str, span: FrameSpan) -> DriveRun:
    """evaluate_source, but a drive named killed_* has its worker process SIGKILLed (fault injection):
    killed_always on every attempt, killed_once on its first; each attempt's pid goes to the bag's attempts file."""
    bag = Path(source)
    if bag.name.startswith("killed_"):
        attempts = bag / "attempts"
        first = not attempts.exists()
        with attempts.open("a") as out:
            out.write(f"{os.getpid()}\n")
        if first or bag.name == "killed_always":
            os.kill(os.getpid(), signal.SIGKILL)
    return evaluate_source(job, source, span)


def _evaluate_with_kills(runner: Runner, job: EvaluateJob, data: Path,
                         fail_fast: bool = False) -> dict[str, TaskResult]:
    """evaluate_fleet's tasks, run by _evaluate_or_die."""
    tasks = drive_tasks(job, data)
    results = run_tasks(runner, _evaluate_or_die, [task_name(*t) for t in tasks], [(job, *t) for t in tasks],
                        "drives", fail_fast)
    return {r.name: r for r in merge_chunks(tasks, results)}


@pytest.fixture()
def drives_with_killers(drives_dir, tmp_path) -> Path:
    """The three drives, killed_always (a copy of b_night) and killed_once (a copy of c_rain)."""
    root = tmp_path / "drives"
    shutil.copytree(drives_dir, root)
    shutil.copytree(drives_dir / "b_night", root / "killed_always")
    shutil.copytree(drives_dir / "c_rain", root / "killed_once")
    return root


def _attempts(bag: Path) -> list[str]:
    return (bag / "attempts").read_text().split()


@pytest.fixture()
def fault_injection_on_ray():
    """Ray workers cannot import this test module: its functions travel by value."""
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    yield
    ray.cloudpickle.unregister_pickle_by_value(module)


@pytest.mark.parametrize("where, last_death", [("workers", "killed by SIGKILL)"), ("ray", "WorkerCrashedError: ")],
                         ids=["workers", "ray"])
def test_a_killed_worker_is_retried_once_then_its_drive_is_named(where, last_death, ray_cluster, fault_injection_on_ray,
                                                                  drives_with_killers, tiny_model_path, single):
    with (LocalPoolRunner(2) if where == "workers" else RayRunner()) as runner:
        results = _evaluate_with_kills(runner, _job(tiny_model_path), drives_with_killers)
    assert list(results) == [*DRIVES, "killed_always", "killed_once"]
    dead = results["killed_always"]
    assert dead.error.startswith(f"worker process died ({1 + WORKER_RETRIES} attempts; last: {last_death}")
    assert len(set(_attempts(drives_with_killers / "killed_always"))) == 1 + WORKER_RETRIES  # a fresh worker each
    assert len(_attempts(drives_with_killers / "killed_once")) == 2  # killed, then run again and scored
    for name in DRIVES:
        _assert_same_metrics(results[name].value.run.summary("bag"), single["drives"][name])
    _assert_same_metrics(results["killed_once"].value.run.summary("bag"), single["drives"]["c_rain"])


def test_fail_fast_stops_at_a_killed_worker(drives_with_killers, tiny_model_path, single):
    with LocalPoolRunner(1) as runner:  # one lane: drives in order, so what ran before the failure is known
        results = _evaluate_with_kills(runner, _job(tiny_model_path), drives_with_killers, fail_fast=True)
    assert results["killed_always"].error.startswith("worker process died")
    assert results["killed_once"].error == NOT_RUN and not (drives_with_killers / "killed_once" / "attempts").exists()
    for name in DRIVES:
        _assert_same_metrics(results[name].value.run.summary("bag"), single["drives"][name])


def _block_or_die(name: str, folder: str) -> None:
    """'blocker' writes its pid and sleeps for an hour; 'dier' waits for that pid, then SIGKILLs its own worker."""
    pid_file = Path(folder) / "blocker.pid"
    if name == "blocker":
        pid_file.write_text(str(os.getpid()))
        time.sleep(3600)
    while not pid_file.exists():
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)


def test_fail_fast_kills_the_local_tasks_still_running(tmp_path):
    names = ["blocker", "dier"]
    results = run_tasks(LocalPoolRunner(2), _block_or_die, names, [(n, str(tmp_path)) for n in names], "t",
                        fail_fast=True)
    assert results[0].error == NOT_RUN and results[1].error.startswith("worker process died")
    with pytest.raises(ProcessLookupError):  # the blocker's worker was killed (and reaped), not left running
        os.kill(int((tmp_path / "blocker.pid").read_text()), 0)


def test_statistics_merged_from_tasks_equal_the_single_process(ray_cluster, tiny_model_path):
    sequences = [s for condition, seed in (("day", 50_001), ("fog", 50_002))
                 for s in record_drive(tiny_model_path, SynthDrive(SynthSpec(condition, seed, 6)), condition, 3)]
    assert len(sequences) == 4
    model = onnx.load(tiny_model_path)
    float_ops = {"Conv", "Relu", "GridSample", "MatMul", "Concat", "Sigmoid", "Mul"}
    tensors = [out for node in model.graph.node if node.op_type in float_ops for out in node.output]
    expected = collect_activation_stats(model, sequences, tensors)
    with RayRunner() as runner:  # joins the test's cluster, leaves it running
        got = parallel_activation_stats(tiny_model_path, sequences, tensors, runner)
    assert list(got) == list(expected) == ["day", "fog"]
    for condition, per_tensor in expected.items():
        assert list(got[condition]) == tensors
        for name, stats in per_tensor.items():
            merged = got[condition][name]
            assert stats.count > 0 and merged.count == stats.count, name
            assert (merged.minimum, merged.maximum, merged.top) == (stats.minimum, stats.maximum, stats.top), name
            np.testing.assert_array_equal(merged.hist, stats.hist, err_msg=name)
            np.testing.assert_allclose(merged.power_sums, stats.power_sums, rtol=1e-12, err_msg=name)
    assert ray.is_initialized()


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--chunk-frames", "0"], "--chunk-frames must be >= 1, got 0"),
    (["--chunk-frames", "5", "--chunk-overlap", "-1"], "--chunk-overlap must be >= 0, got -1"),
], ids=["workers", "chunk-frames", "chunk-overlap"])
def test_bad_task_options_are_one_line_errors(flags, message, tiny_model_path, capsys):
    assert bev_quant(["evaluate", "--data", "synth:day:100001:1", "--model", str(tiny_model_path), *flags]) == 2
    assert capsys.readouterr().err.strip() == f"evaluate: {message}"


@pytest.fixture(scope="module")
def long_drives_dir(drives_dir, tmp_path_factory) -> Path:
    """a_day (4 frames, one task) next to long_day (LONG_FRAMES frames: three chunks)."""
    root = tmp_path_factory.mktemp("long") / "drives"
    shutil.copytree(drives_dir / "a_day", root / "a_day")
    write_bag(root / "long_day", generate_frames(100_021, "day", LONG_FRAMES), load_rig())
    return root


def _job(model: Path) -> EvaluateJob:
    return EvaluateJob(str(model), "onnxruntime", 0.05, ReaderSettings.from_params(), "bag")


def _runs(job: EvaluateJob, data: Path, **chunking: int) -> dict[str, EvaluationRun]:
    results = evaluate_fleet(job, data, InProcessRunner(), **chunking)
    assert all(r.ok for r in results)
    return {r.name: r.value.run for r in results}


def _score_change(got: EvaluationRun, expected: EvaluationRun) -> np.ndarray:
    """Per frame, the largest change of a detection score (sorted), inf where the count changed."""
    return np.array([np.inf if len(g) != len(e) else np.abs(np.sort(g.scores) - np.sort(e.scores)).max(initial=0.0)
                     for g, e in zip(got.predictions, expected.predictions)])


def test_a_long_drive_runs_in_chunks_each_frame_scored_once(long_drives_dir, tiny_model_path):
    job = _job(tiny_model_path)
    a_day, long_day = (str(long_drives_dir / name) for name in ("a_day", "long_day"))
    assert drive_tasks(job, long_drives_dir, CHUNK, OVERLAP) == [
        (a_day, WHOLE_DRIVE), (long_day, FrameSpan(0, 20, 0)), (long_day, FrameSpan(20, 40, 10)),
        (long_day, FrameSpan(40, None, 10))]
    one_pass = _runs(job, long_drives_dir)
    cold, warm = (_runs(job, long_drives_dir, chunk_frames=CHUNK, overlap=w) for w in (0, OVERLAP))
    for chunked in (cold, warm):
        assert list(chunked) == ["a_day", "long_day"]
        assert chunked["long_day"].stamps_ns == one_pass["long_day"].stamps_ns  # every frame once, in order
        assert len(chunked["long_day"].predictions) == LONG_FRAMES
        assert chunked["long_day"].summary("day")["frames"] == LONG_FRAMES
        assert not _score_change(chunked["a_day"], one_pass["a_day"]).any()  # short drive: one task, as before
        assert not _score_change(chunked["long_day"], one_pass["long_day"])[:CHUNK].any()  # chunk 0: same start
    # measured on this tiny graph: a cold chunk start moves scores by 1.2e-2, after 10 warm-up frames 3.6e-7
    cold_change, warm_change = (_score_change(r["long_day"], one_pass["long_day"]) for r in (cold, warm))
    assert cold_change[CHUNK::CHUNK].min() > 1e-3
    assert warm_change.max() < 1e-5
    assert (EvaluationRun.merged(warm.values()).summary("all")["NDS"]
            == pytest.approx(EvaluationRun.merged(one_pass.values()).summary("all")["NDS"], abs=1e-6))


def test_chunks_as_parallel_tasks_equal_chunks_in_process(long_drives_dir, tiny_model_path, single, tmp_path):
    chunking = ("--chunk-frames", str(CHUNK), "--chunk-overlap", str(OVERLAP))
    code, in_process = _evaluate(long_drives_dir, tiny_model_path, tmp_path / "one.json", *chunking)
    assert code == 0
    code, parallel = _evaluate(long_drives_dir, tiny_model_path, tmp_path / "two.json", *chunking, "--workers", "2")
    assert code == 0
    _assert_same_metrics(parallel, in_process)  # a chunk's numbers do not depend on where it ran
    assert parallel["frames"] == FRAMES + LONG_FRAMES and parallel["drives"]["long_day"]["frames"] == LONG_FRAMES
    _assert_same_metrics(parallel["drives"]["a_day"], single["drives"]["a_day"])
