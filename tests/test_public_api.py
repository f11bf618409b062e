"""Every module of crlm that declares ``__all__`` keeps it true: each listed name exists, and each public function
or class the module defines is listed (so ``from crlm.x import *`` and the docs see the whole public API)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

import crlm

PACKAGE = Path(crlm.__file__).parent
# the modules whose source declares __all__ (read, not imported, so collecting this file stays cheap)
DECLARING = sorted(
    "crlm." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py") if "__all__ =" in p.read_text())


@pytest.mark.parametrize("name", DECLARING)
def test_all_lists_exactly_the_public_api_a_module_defines(name):
    module = importlib.import_module(name)
    listed = set(module.__all__)
    assert len(listed) == len(module.__all__), "a name is listed twice"
    missing = sorted(n for n in listed if not hasattr(module, n))
    assert not missing, f"{name}.__all__ names what the module lacks: {missing}"
    defined = {n for n, obj in vars(module).items() if not n.startswith("_")
               and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == name}
    assert defined <= listed, f"{name} defines public {sorted(defined - listed)} but does not list them"


def test_the_public_api_modules_declare_all():
    """The modules of the documented public API (docs/ARCHITECTURE.md) declare theirs."""
    for name in ("crlm.schema", "crlm.scores", "crlm.predictor", "crlm.evaluation.benchmark", "crlm.models.zoo",
                 "crlm.features", "crlm.selection", "crlm.cohort.base", "crlm.cohort.loader"):
        assert name in DECLARING, name
