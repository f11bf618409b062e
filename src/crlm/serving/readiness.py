"""Readiness across the service's worker processes (``/readyz``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class WorkerReadiness:
    """Each worker loads its own models; a worker whose models are loaded leaves a marker (its pid) in a
    directory named after the server process, and /readyz is true only when every worker has one, so a client
    told "ready" by one worker never meets another that is still loading.

    Parameters
    ----------
    workers : int
        Worker processes of the server (1: the worker's own store decides alone).
    directory : Path, optional
        Where the markers live (default: ``crlm-ready-<server pid>`` in the temporary directory).
    """

    def __init__(self, workers: int, directory: Path | None = None):
        self.workers = workers
        self.directory = directory or Path(tempfile.gettempdir()) / f"crlm-ready-{os.getppid()}"

    def mark_ready(self) -> None:
        if self.workers > 1:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / str(os.getpid())).touch()

    def all_ready(self) -> bool:
        if self.workers <= 1:
            return True
        markers = self.directory.glob("*") if self.directory.is_dir() else []
        return sum(1 for m in markers if m.name.isdigit() and alive(int(m.name))) >= self.workers


def alive(pid: int) -> bool:
    """Whether a process exists (signal 0: an existence check only)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True
