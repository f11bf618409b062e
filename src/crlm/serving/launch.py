"""Launching the service: ``crlm serve`` runs ``bentoml serve crlm.serving.service:CRLMService`` (from any
directory: the service is imported from the installed package)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from crlm.serving.settings import ModelConfig, validate_environment
from crlm.serving.tracking_lock import open_tracking_store

SERVICE_IMPORT = "crlm.serving.service:CRLMService"


def serve_command(host: str = "127.0.0.1", port: int = 3000, python: str | None = None) -> list[str]:
    """The ``bentoml serve`` command line that ``crlm serve`` runs."""
    return [python or sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--host", host, "--port",
            str(port)]


def bentoml_home(port: int) -> str:
    """A BentoML home of its own for the server on ``port``: BentoML keeps its Prometheus files in
    ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties that directory when a server starts, so two
    servers sharing the default home (``~/bentoml``) would wipe each other's ``/metrics``."""
    return str(Path(tempfile.gettempdir()) / f"crlm-bentoml-{os.getuid()}" / str(port))


def serve_env(models_dir: str | Path | None = None, api_key: str | None = None, workers: int | None = None,
              base: dict | None = None, port: int | None = None) -> dict[str, str]:
    """The environment of the served process (no usage tracking: the service never calls home). With the
    server's ``port``, BentoML's home is that server's own (``bentoml_home``) unless ``BENTOML_HOME`` is set."""
    env = dict(os.environ if base is None else base)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    if port is not None:
        env.setdefault("BENTOML_HOME", bentoml_home(port))
    if models_dir is not None:  # bundles named by directory: not a tracking store the caller may have set
        env["CRLM_MODELS_DIR"] = str(Path(models_dir).resolve())
        env.setdefault("CRLM_MODEL_SOURCE", "bundle")
    if api_key:
        env["CRLM_API_KEY"] = api_key
    if workers:
        env["CRLM_SERVE_WORKERS"] = str(workers)
    return env


def serve(host: str = "127.0.0.1", port: int = 3000, *, models_dir: str | Path | None = None,
          api_key: str | None = None, workers: int | None = None) -> None:
    """Run the service in the foreground (replaces the current process; Ctrl-C stops it).

    Every setting is validated first (``SettingsError`` names the variable), and the MLflow tracking store is
    opened once here, before the server forks its workers (a new store is created by the first opener).
    """
    cmd = serve_command(host, port)
    env = serve_env(models_dir, api_key, workers, port=port)
    validate_environment(env)
    if ModelConfig.from_env(env).source == "registry":
        open_tracking_store()
    os.execve(cmd[0], cmd, env)
