"""Where a job's parallel work runs: joblib's local processes, or a Dask cluster through joblib's ``dask`` backend.

Every parallel loop in crlm is a ``joblib.Parallel`` (the benchmark's fold x model x hyperparameter fits, the
ablation, the Predictor's bootstrap refits, any bootstrap added later). ``backend(cluster, n_jobs)`` wraps a
job and routes all of them at once:

- ``None`` / ``""``: joblib's local processes (``n_jobs`` of them), as before;
- ``"local:N"``: a ``dask.distributed.LocalCluster`` of N single-threaded worker processes on 127.0.0.1,
  started for the job and closed after it;
- ``"tcp://host:8786"`` (or ``host:port``): an existing Dask scheduler and its workers.

Determinism: every task derives its seed from the job's seed and the task's own index (fold, resample), never
from the worker it lands on or the order tasks finish in, and joblib returns results in submission order;
so the same seed gives the same numbers on any backend and any number of workers.

``scatter(*objects)`` sends large inputs (the cohort's model matrix and outcomes) to the workers once per job,
so tasks carry a reference instead of a copy. ``isolated`` marks a task function as one unit of work: the
joblib loops inside it (a grid search, a forest's trees) run sequentially in the worker instead of
spawning nested cluster tasks. A worker that dies is replaced by Dask and its tasks are retried
(``distributed.scheduler.allowed-failures`` times); beyond that the job fails with ``ClusterError``, before
anything is registered.
"""

from __future__ import annotations

__all__ = [
    "Backend", "ClusterError", "LOCAL_CLUSTER", "active", "backend", "effective_n_jobs", "isolated",
    "parse_cluster", "scatter",
]

import asyncio
import contextlib
import functools
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import joblib

LOCAL_CLUSTER = re.compile(r"^local:(\d+)$")


class ClusterError(RuntimeError):
    """The cluster could not run the job (unreachable scheduler, workers that kept dying)."""


@dataclass
class Backend:
    """What a job ran on, recorded with its MLflow run.

    Parameters
    ----------
    kind : str
        ``"loky"`` (joblib's local processes) or ``"dask"``.
    address : str
        The scheduler's address (dask), else ``"local"``.
    workers : int
        Worker processes at the start of the job (``n_jobs`` for loky).
    threads : int
        Worker threads in total (the tasks that run at once).
    client : object
        The ``dask.distributed.Client`` (dask only).
    """

    kind: str
    address: str
    workers: int
    threads: int
    client: Any = None  # a dask.distributed.Client (untyped here: dask is imported only for a cluster)
    _checked: float = field(default=0.0, repr=False)
    _joblib_backend: Any = field(default=None, repr=False)
    _scattered: list = field(default_factory=list, repr=False)  # kept alive: joblib matches them by id()

    def workers_now(self) -> int:
        """Workers connected now (a cluster may scale or lose workers); re-read at most once a second."""
        if self.client is not None and time.monotonic() - self._checked > 1.0:
            with contextlib.suppress(Exception):  # a busy scheduler must not break progress reporting
                self.workers = len(self.client.nthreads())
            self._checked = time.monotonic()
        return self.workers

    def label(self) -> str:
        """Short text for progress bars: ``dask 4 workers`` / ``local 2 processes``."""
        if self.kind == "dask":
            return f"dask {self.workers_now()} workers"
        return f"local {self.workers} process{'es' if self.workers != 1 else ''}"

    def params(self) -> dict[str, str]:
        """The backend as MLflow params."""
        return {"parallel.backend": self.kind, "parallel.address": self.address,
                "parallel.workers": str(self.workers), "parallel.threads": str(self.threads)}


_active: list[Backend] = []


def active() -> Backend | None:
    """The backend of the job running in this process, if any."""
    return _active[-1] if _active else None


def effective_n_jobs(n_jobs: int) -> int:
    """Tasks that run at once: the cluster's threads under a Dask backend, else ``n_jobs``."""
    current = active()
    return max(1, current.threads) if current is not None and current.kind == "dask" else max(1, n_jobs)


def parse_cluster(cluster: str | None) -> tuple[str, int | None]:
    """``(kind, local_workers)`` of a cluster string: ``("loky", None)``, ``("local", N)`` or ``("remote", None)``.

    Raises
    ------
    ValueError
        Naming the value and the accepted forms.
    """
    if cluster is None or not str(cluster).strip():
        return "loky", None
    text = str(cluster).strip()
    match = LOCAL_CLUSTER.match(text)
    if match:
        n = int(match.group(1))
        if not 1 <= n <= 256:
            raise ValueError(f"cluster {text!r}: local:N needs 1 <= N <= 256 workers")
        return "local", n
    if re.match(r"^(tcp|tls|ucx|inproc)://\S+$", text) or re.match(r"^[\w.-]+:\d+$", text):
        return "remote", None
    raise ValueError(f"cluster {text!r}: use local:N (a LocalCluster of N workers) or a scheduler address such "
                     "as tcp://scheduler:8786")


@contextlib.contextmanager
def backend(cluster: str | None = None, n_jobs: int = 1, memory_limit: str | None = None) -> Iterator[Backend]:
    """Run every ``joblib.Parallel`` inside the block on the chosen backend (see the module docstring).

    Parameters
    ----------
    cluster : str or None
        ``None`` for joblib's local processes, ``"local:N"`` or a scheduler address for Dask.
    n_jobs : int
        Local processes (ignored on Dask, where the cluster's threads decide).
    memory_limit : str or None
        Memory per worker of a ``local:N`` cluster (e.g. ``"2GiB"``); Dask's default otherwise.

    Yields
    ------
    Backend
        What the block runs on.
    """
    kind, local_workers = parse_cluster(cluster)
    if kind == "loky":
        info = Backend("loky", "local", max(1, n_jobs), max(1, n_jobs))
        _active.append(info)
        try:
            with joblib.parallel_config(backend="loky"):  # local even inside another backend's block
                yield info
        finally:
            _active.pop()
        return
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(_client(kind, str(cluster).strip(), local_workers, memory_limit))
        nthreads = client.nthreads()
        dask_backend = _joblib_dask_backend(client)  # one instance for the job: scattered data persists
        info = Backend("dask", str(client.scheduler.address), len(nthreads), sum(nthreads.values()), client,
                       _joblib_backend=dask_backend)
        _active.append(info)
        stack.callback(_active.pop)
        stack.enter_context(joblib.parallel_config(backend=dask_backend))
        try:
            yield info
        except Exception as err:
            if type(err).__name__ == "KilledWorker":
                raise ClusterError(f"the Dask cluster at {info.address} lost the workers running a task too "
                                   f"many times ({err}); the job stopped and registered nothing. Check the "
                                   "workers' memory (docs/SCALE_OUT.md) and logs") from err
            raise


def _joblib_dask_backend(client):
    """joblib's Dask backend, also reporting tasks that Dask itself failed (``KilledWorker``, cancelled).

    joblib 1.6's backend only fails its internal future for those and never calls joblib's completion callback,
    so ``Parallel`` would wait forever after a worker died too often; here joblib receives the error and the job
    stops with ``ClusterError``. (Dask is imported only by jobs that use it.)
    """
    # deferred: Dask (optional, heavy) loads only for jobs that run on a cluster
    from joblib._dask import DaskDistributedBackend

    class FailingFastDaskBackend(DaskDistributedBackend):
        def effective_n_jobs(self, n_jobs):
            # Never 1: joblib would then run the tasks in this process instead of on a one-worker cluster.
            return max(2, super().effective_n_jobs(n_jobs))

        async def _collect(self):
            while self._continue:
                async for future, result in self.waiting_futures:
                    cf_future = self._results.pop(future)
                    callback = self._callbacks.pop(future)
                    if future.status == "error":
                        _, exc, _ = result
                        cf_future.set_exception(exc)
                        callback(exc)  # joblib registers the task as failed and raises it in Parallel
                    else:
                        cf_future.set_result(result)
                        callback(result)
                await asyncio.sleep(0.01)

    return FailingFastDaskBackend(client=client)


@contextlib.contextmanager
def _client(kind: str, address: str, local_workers: int | None, memory_limit: str | None):
    # deferred: Dask (optional, heavy) loads only for jobs that run on a cluster
    from distributed import Client, LocalCluster

    if kind == "local":
        # Single-threaded worker processes: the models release the GIL only in places, so one task per process.
        # The dashboard on a free port: the default 8787 would clash between users of one machine.
        with LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", memory_limit=memory_limit or "auto",
                          silence_logs=40) as cluster, Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(local_workers, timeout=120)
            yield client
        return
    try:
        client = Client(address, timeout=os.environ.get("CRLM_DASK_CONNECT_TIMEOUT", "20s"), set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {err}") from None
    try:
        if not client.nthreads():
            client.wait_for_workers(1, timeout=60)
        yield client
    except TimeoutError:
        raise ClusterError(f"the Dask scheduler at {address} has no workers (waited 60 s)") from None
    finally:
        client.close()


def scatter(*objects) -> None:
    """Send ``objects`` to every worker once for the rest of the job (Dask only; a no-op locally).

    Tasks that receive one of these very objects (same identity) as an argument get the workers' copy instead
    of a new one per task. Call it where the cohort's matrices are built, before the loops that use them.
    """
    current = active()
    if current is None or current.kind != "dask":
        return
    futures = current._joblib_backend.data_futures
    new = [o for o in objects if id(o) not in futures]
    if new:
        scattered = current.client.scatter(new, broadcast=True, hash=False)
        current._scattered.extend(new)
        futures.update({id(o): f for o, f in zip(new, scattered, strict=True)})


def isolated(fn):
    """Decorate a task function: joblib loops inside it run sequentially where the task runs.

    On a Dask worker joblib would otherwise send a nested ``Parallel`` (even ``n_jobs=1``) back to the cluster
    as many tiny tasks; the task is the unit of parallel work, so its inside stays on its own thread.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with joblib.parallel_config(backend="sequential"):
            return fn(*args, **kwargs)

    return wrapper
