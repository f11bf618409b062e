"""One process at a time opens the MLflow tracking store (the served set's registry source): the lock and the
one opening ``crlm serve`` does before the server forks its workers."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tracking_store_lock() -> Iterator[None]:
    """One process at a time opens the MLflow tracking store: opening a new SQLite store creates its schema,
    and two workers doing it at once failed ("table ... already exists") or left it half-migrated."""
    import mlflow  # deferred: MLflow loads only when models come from a registry

    uri = mlflow.get_tracking_uri()
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"crlm-mlflow-{digest}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_tracking_store() -> None:
    """Open (and if new, create) the tracking store once, under the lock (``crlm serve`` calls it before the
    server forks its workers; each worker's first registry call takes the same lock)."""
    from mlflow import MlflowClient  # deferred: MLflow loads only when models come from a registry

    with tracking_store_lock():
        MlflowClient().search_registered_models(max_results=1)
