"""Independent tasks run in-process, on a local pool of worker processes, or on Ray.

Every runner yields ``(index, TaskResult)`` as tasks complete; `run_tasks` puts them back
in submission order, so whatever ran where, the caller merges in a fixed order and gets
the numbers of a single process. A task's own error travels back as one line
(`TaskResult.error`); a dead worker fails only the task it was running.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from bev_quant_ros.errors import ConfigError

NOT_RUN = "not run (--fail-fast: an earlier task failed)"


@dataclass
class TaskResult:
    """What one task returned, or why it did not (``error``: one line)."""

    name: str
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (a traceback is for the worker's log, not the report)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else '(no message)'}"


def call_task(fn: Callable[..., Any], name: str, args: tuple) -> TaskResult:
    """Run ``fn(*args)`` where the worker is; its exception becomes the task's error."""
    try:
        return TaskResult(name, fn(*args))
    except Exception as exc:  # any failure of one drive is that drive's, the fleet goes on
        return TaskResult(name, error=one_line(exc))


class Runner:
    """Where tasks run; a context manager that releases what it started (a Ray cluster)."""

    def run(self, fn: Callable[..., Any], names: Sequence[str],
            args: Sequence[tuple]) -> Iterator[tuple[int, TaskResult]]:
        """Submit every task; yield (index, result) as each completes. Closing the iterator
        early cancels what has not finished."""
        raise NotImplementedError

    def close(self) -> None:
        """Nothing is held unless a runner says otherwise."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class InProcessRunner(Runner):
    """One task after the other in this process (the reference the others must equal)."""

    def run(self, fn: Callable[..., Any], names: Sequence[str],
            args: Sequence[tuple]) -> Iterator[tuple[int, TaskResult]]:
        for index, (name, task_args) in enumerate(zip(names, args)):
            yield index, call_task(fn, name, task_args)


class LocalPoolRunner(Runner):
    """``workers`` processes on this machine, one task each at a time.

    Each worker is its own single-process pool (a "lane"), so a worker that dies
    fails exactly its task; the lane is replaced and the remaining tasks go on.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or ORT sessions

    def _lane(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=self._context)

    def run(self, fn: Callable[..., Any], names: Sequence[str],
            args: Sequence[tuple]) -> Iterator[tuple[int, TaskResult]]:
        todo = deque(enumerate(zip(names, args)))
        lanes = [self._lane() for _ in range(min(self.workers, len(todo)))]
        running: dict[Future, tuple[int, int]] = {}  # future -> (task index, lane index)

        def feed(lane: int) -> None:
            if todo:
                index, (name, task_args) = todo.popleft()
                running[lanes[lane].submit(call_task, fn, name, task_args)] = (index, lane)

        try:
            for lane in range(len(lanes)):
                feed(lane)
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index, lane = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool as exc:
                        lanes[lane].shutdown(wait=False)
                        lanes[lane] = self._lane()
                        result = TaskResult(names[index], error=f"worker process died ({one_line(exc)})")
                    feed(lane)
                    yield index, result
        finally:
            for lane_pool in lanes:
                lane_pool.shutdown(wait=False, cancel_futures=True)


class RayRunner(Runner):
    """Tasks on a Ray cluster (``address``, e.g. ``ray://head:10001``), or on a local one
    started here with ``num_cpus`` when there is no address; one CPU per task."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--ray needs ray (the optional 'fleet' extra: pip install ray)") from exc
        self._ray = ray
        self._owner = not ray.is_initialized()  # a cluster someone else connected to is left running
        if self._owner:
            try:
                ray.init(address=address or None, num_cpus=None if address else num_cpus,
                         include_dashboard=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"cannot connect to the Ray cluster {address or '(local)'}: {one_line(exc)}") from exc

    def run(self, fn: Callable[..., Any], names: Sequence[str],
            args: Sequence[tuple]) -> Iterator[tuple[int, TaskResult]]:
        ray = self._ray
        # max_retries=0: a worker that dies (corrupt input, out of memory) is reported, not run again
        remote = ray.remote(num_cpus=1, max_retries=0)(call_task)
        pending = {remote.remote(fn, name, task_args): index
                   for index, (name, task_args) in enumerate(zip(names, args))}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayError as exc:  # the worker died or the task could not run
                    result = TaskResult(names[index], error=one_line(exc))
                yield index, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owner:
            self._ray.shutdown()


def make_runner(workers: int | None, ray_address: str | None) -> Runner:
    """``--ray`` (ADDRESS or '' = a local cluster of ``workers`` CPUs, default all), else
    ``--workers`` processes here; neither (or one worker) runs in this process."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if ray_address is not None:
        return RayRunner(ray_address or None, workers)
    if workers and workers > 1:
        return LocalPoolRunner(workers)
    return InProcessRunner()


def run_tasks(runner: Runner, fn: Callable[..., Any], names: Sequence[str], args: Sequence[tuple],
              desc: str, fail_fast: bool = False) -> list[TaskResult]:
    """Every task's result in submission order, with a progress bar over completed tasks.

    With ``fail_fast`` the first failure cancels the rest (they are reported as not run).
    """
    results: list[TaskResult | None] = [None] * len(names)
    stream = runner.run(fn, names, args)
    with tqdm(total=len(names), desc=desc, unit="task") as bar:
        try:
            for index, result in stream:
                results[index] = result
                bar.update(1)
                if result.error:
                    bar.write(f"{desc}: {result.name} failed: {result.error}", file=sys.stderr)
                    if fail_fast:
                        break
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()
    return [r if r is not None else TaskResult(name, error=NOT_RUN) for r, name in zip(results, names)]
