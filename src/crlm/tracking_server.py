"""A shared MLflow tracking server for a team: one ``mlflow server`` with a database store and an artifact root.

Users point every crlm command at it with ``MLFLOW_TRACKING_URI=http://host:port``; the server proxies the
artifacts (``--serve-artifacts``: clients need no access to the artifact store itself). SQLite suits one
machine; for a team use PostgreSQL or MySQL (``postgresql://user:password@dbhost/mlflow``), whose concurrent
writers SQLite cannot serve. See the README's "A shared tracking server".
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from crlm.paths import project_root


def server_command(backend_store_uri: str, artifacts_destination: str, host: str = "127.0.0.1", port: int = 5000,
                   workers: int = 2) -> list[str]:
    """The ``mlflow server`` command line (relative SQLite paths and artifact directories made absolute).

    Parameters
    ----------
    backend_store_uri : str
        ``sqlite:///path.db`` (one machine) or a PostgreSQL / MySQL URI (a team).
    artifacts_destination : str
        A directory or an object-store URI (``s3://``, ``gs://``) the server writes artifacts to.
    host, port, workers
        Where the server listens, and its worker processes.

    Returns
    -------
    list of str
    """
    store = backend_store_uri
    if store.startswith("sqlite:///"):
        path = Path(store.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else project_root() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        store = f"sqlite:///{path}"
    artifacts = artifacts_destination
    if "://" not in artifacts:
        folder = Path(artifacts) if Path(artifacts).is_absolute() else project_root() / artifacts
        folder.mkdir(parents=True, exist_ok=True)
        artifacts = str(folder)
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    return [mlflow, "server", "--backend-store-uri", store, "--artifacts-destination", artifacts,
            "--serve-artifacts", "--host", host, "--port", str(port), "--workers", str(workers)]


def server_env(base: dict | None = None) -> dict[str, str]:
    """The server's environment: MLflow's job runner off unless the operator sets
    ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` (crlm logs runs and registers models; the runner is for MLflow's GenAI
    jobs and starts seven more processes, a job runner and six huey consumers)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def exec_server(backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int) -> None:
    """Replace this process with the server (``crlm tracking-server``)."""
    cmd = server_command(backend_store_uri, artifacts_destination, host, port, workers)
    os.execve(cmd[0], cmd, server_env())


def start_server(backend_store_uri: str, artifacts_destination: str, port: int, host: str = "127.0.0.1",
                 workers: int = 1, timeout: float = 90.0, log: Path | None = None) -> subprocess.Popen:
    """Start the server as a child process and wait until it answers (tests, benchmarks, scripts).

    Returns
    -------
    subprocess.Popen
        The server; stop it with ``stop_server``.
    """
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(server_command(backend_store_uri, artifacts_destination, host, port, workers),
                            env=server_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until_up(f"http://{host}:{port}", timeout, proc)
    return proc


def wait_until_up(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url/health`` until it answers 200; a clear error if the server exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the tracking server exited with code {proc.returncode} before answering at {url}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no tracking server answered at {url} within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started by ``start_server`` (its whole process group: the server and its workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
