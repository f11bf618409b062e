"""Where the project's files live: the repository root (editable install) or the current directory."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root when running from a checkout, else the working directory."""
    if env := os.environ.get("CRLM_HOME"):
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def data_dir() -> Path:
    return project_root() / "data"


TCIA_FILE = "tcia-crlm/clinical_v1_oct2022_n197.csv"
TCIA_MAPPING = "tcia-crlm/mapping.yaml"
