"""Readiness across the service's worker processes (``/readyz``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "crlm-ready-"
LOAD_FILE = "load"  # beside the markers: the workers' shared load (crlm.serving.balance)


def server_directory() -> Path:
    """The directory a server's workers share: ``crlm-ready-<server pid>`` in the temporary directory."""
    return Path(tempfile.gettempdir()) / f"{PREFIX}{os.getppid()}"


class WorkerReadiness:
    """Each worker loads its own models; a worker whose models are loaded leaves a marker (its pid) in a
    directory named after the server process, and /readyz is true only when every worker has a marker and is
    alive, so a client told "ready" by one worker never meets another that is still loading or was killed.

    Parameters
    ----------
    workers : int
        Worker processes of the server (1: the worker's own store decides alone).
    directory : Path, optional
        Where the markers live (default: ``crlm-ready-<server pid>`` in the temporary directory).
    """

    def __init__(self, workers: int, directory: Path | None = None):
        self.workers = workers
        self.directory = directory or server_directory()

    def _live_markers(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return [int(m.name) for m in self.directory.iterdir() if m.name.isdigit() and alive(int(m.name))]

    def mark_ready(self) -> None:
        if self.workers > 1:
            remove_stale_directories(self.directory.parent)
            self.directory.mkdir(parents=True, exist_ok=True)
            for marker in self.directory.iterdir():  # a killed worker's marker
                if marker.name.isdigit() and not alive(int(marker.name)):
                    marker.unlink(missing_ok=True)
            (self.directory / str(os.getpid())).touch()

    def unmark(self) -> None:
        """This worker stops (shutdown): its marker goes, and the directory with the last one."""
        if self.workers > 1:
            (self.directory / str(os.getpid())).unlink(missing_ok=True)
            if not self._live_markers():  # the last one: the workers' shared load file goes too
                (self.directory / LOAD_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: another worker still serves
                self.directory.rmdir()

    def others_ready(self) -> bool:
        """Another worker of this server already serves (this one is a replacement of a killed worker)."""
        return self.workers > 1 and any(pid != os.getpid() for pid in self._live_markers())

    def all_ready(self) -> bool:
        if self.workers <= 1:
            return True
        return len(self._live_markers()) >= self.workers


def remove_stale_directories(parent: Path) -> None:
    """Marker directories of servers that no longer run (killed without a shutdown)."""
    for directory in parent.glob(f"{PREFIX}*"):
        pid = directory.name.removeprefix(PREFIX)
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether a process runs: it exists (signal 0) and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux): existence is all we know
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
