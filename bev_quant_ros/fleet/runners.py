"""Independent tasks run in-process, on a local pool of worker processes, or on Ray.

Every runner yields ``(index, TaskResult)`` as tasks complete; `run_tasks` puts them back
in submission order, so whatever ran where, the caller merges in a fixed order and gets
the numbers of a single process. A task's own error travels back as one line
(`TaskResult.error`); a dead worker fails only the task it was running, after
`WORKER_RETRIES` more attempts on other workers.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections import Counter, deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from bev_quant_ros.errors import ConfigError

NOT_RUN = "not run (--fail-fast: an earlier task failed)"
# A task whose worker process dies runs once more on another worker: a worker also dies of causes
# outside its task (a node preempted or drained, the OOM killer choosing it for another process's
# memory); a task that kills its worker again is reported. A task's exception is never retried.
WORKER_RETRIES = 1


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


def worker_died(cause: str) -> str:
    """The error of a task whose worker died on every attempt (``cause``: how the last one ended)."""
    return f"worker process died ({1 + WORKER_RETRIES} attempts; last: {cause})"


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


def _serve(conn: Connection) -> None:
    """A lane's worker process: run each task it is sent and send back the result, until the pipe closes."""
    while True:
        try:
            fn, name, args = conn.recv()
        except EOFError:
            return
        conn.send(call_task(fn, name, args))


class _Lane:
    """One worker process fed one task at a time over a pipe; the worker's death reads as EOF."""

    def __init__(self, context: BaseContext) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), name="bev-quant-worker")
        self.process.start()
        child.close()  # the worker holds the only other end: it dies, the pipe ends
        self.task: int | None = None  # index of the task it runs

    def send(self, index: int, fn: Callable[..., Any], name: str, args: tuple) -> None:
        self.task = index
        try:
            self.conn.send((fn, name, args))
        except OSError:  # already dead (killed while idle): receive() reads EOF and reports it
            pass

    def receive(self) -> TaskResult | None:
        """The task's result, or None if the worker died."""
        try:
            result = self.conn.recv()
        except (EOFError, OSError):
            return None
        self.task = None
        return result

    def death(self) -> str:
        """How the dead worker ended (after waiting for it)."""
        self.process.join()
        self.conn.close()
        code = self.process.exitcode or 0
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

    def stop(self) -> None:
        """End the worker; one still running a task is killed (a cancelled task must not run on)."""
        if self.task is not None:
            self.process.kill()
        self.conn.close()  # an idle worker reads EOF and returns
        self.process.join()


class LocalPoolRunner(Runner):
    """``workers`` processes on this machine, one task each at a time.

    Each worker is its own process on its own pipe (a "lane"), so a worker that dies takes
    exactly its task down: the task runs again first, on a fresh lane (up to WORKER_RETRIES
    times), and the other tasks go on. Closing the run kills the workers still running tasks.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or ORT sessions

    def run(self, fn: Callable[..., Any], names: Sequence[str],
            args: Sequence[tuple]) -> Iterator[tuple[int, TaskResult]]:
        todo = deque(range(len(names)))
        idle: list[_Lane] = []
        busy: dict[Connection, _Lane] = {}
        deaths: Counter[int] = Counter()  # task index -> workers that died running it
        try:
            while todo or busy:
                free = min(self.workers - len(busy), len(todo))
                idle += [_Lane(self._context) for _ in range(free - len(idle))]  # all start before any is sent to
                for _ in range(free):
                    lane, index = idle.pop(), todo.popleft()
                    lane.send(index, fn, names[index], args[index])
                    busy[lane.conn] = lane
                for conn in wait(list(busy)):
                    lane = busy.pop(conn)
                    index, result = lane.task, lane.receive()
                    if result is not None:
                        idle.append(lane)
                    else:
                        cause = lane.death()
                        deaths[index] += 1
                        if deaths[index] <= WORKER_RETRIES:  # again, first, on a fresh lane
                            todo.appendleft(index)
                            continue
                        result = TaskResult(names[index], error=worker_died(cause))
                    yield index, result
        finally:
            for lane in [*idle, *busy.values()]:
                lane.stop()


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
        remote = ray.remote(num_cpus=1, max_retries=WORKER_RETRIES)(call_task)  # retried only if the worker dies
        pending = {remote.remote(fn, name, task_args): index
                   for index, (name, task_args) in enumerate(zip(names, args))}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.WorkerCrashedError as exc:
                    result = TaskResult(names[index], error=worker_died(one_line(exc)))
                except ray.exceptions.RayError as exc:  # the task could not run (its node lost, ...)
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
