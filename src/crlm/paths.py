"""Where the project's files live.

The *workspace* holds what a user's jobs make (``mlflow.db`` and ``mlartifacts/`` unless
``MLFLOW_TRACKING_URI`` says otherwise, ``models/``, ``results/``): ``CRLM_HOME`` when set; else the nearest
folder at or above the working directory holding ``crlm-workspace.yaml`` (written by ``crlm init``); else the
repository checkout when working inside it; else the working directory. The vendored data (TCIA) and the
demo's configs live in the checkout.
"""

from __future__ import annotations

__all__ = ["TCIA_FILE", "TCIA_MAPPING", "WORKSPACE_MARKER", "checkout_root", "data_dir", "project_root"]

import os
from pathlib import Path

WORKSPACE_MARKER = "crlm-workspace.yaml"


def checkout_root() -> Path | None:
    """The repository checkout this package runs from (editable install), or None."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else None


def project_root() -> Path:
    """The workspace (see the module docstring)."""
    if env := os.environ.get("CRLM_HOME"):
        return Path(env)
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / WORKSPACE_MARKER).exists():
            return folder
    checkout = checkout_root()
    if checkout is not None and (cwd == checkout or checkout in cwd.parents):
        return checkout
    return cwd


def data_dir() -> Path:
    """The vendored data (in the checkout; else the workspace's ``data/``)."""
    return (checkout_root() or project_root()) / "data"


TCIA_FILE = "tcia-crlm/clinical_v1_oct2022_n197.csv"
TCIA_MAPPING = "tcia-crlm/mapping.yaml"
