"""Which input fields a Predictor's models actually use, so that a patient need not give the others.

A model-matrix column is used when any of the Predictor's models (the refit or a bootstrap refit: they all shape
the answer) depends on it: a linear Cox model through a non-zero coefficient, a tree ensemble through a split
on it. A field is used when one of its columns is (its value, its missing indicator, its one-hot levels; the
tumour burden score uses both of its inputs). Models the kernel cannot read (its generic fallback) use every
field their preprocessing kept.

- ``used_fields``: what the answer depends on; only these are checked and warned about;
- ``required_fields``: the used fields the schema requires for a prediction (``required_for_prediction``);
- ``accepted_fields``: the used fields and the fields they are derived from when absent (``ras_status`` from
  ``kras_status`` and ``nras_status``): what a form offers for this model.
"""

from __future__ import annotations

__all__ = ["accepted_fields", "required_fields", "uncomputable_score", "used_columns", "used_fields"]

import numpy as np
import pandas as pd

from crlm.features import TBS_INPUTS, TBS_NAME
from crlm.schema import FIELDS_BY_NAME
from crlm.survival_kernel import SurvivalKernel


def used_columns(kernel: SurvivalKernel, n_features: int) -> np.ndarray:
    """The model-matrix columns any of the kernel's models depends on.

    Parameters
    ----------
    kernel : SurvivalKernel
        The Predictor's kernel (the refit and its bootstrap refits).
    n_features : int
        Number of model-matrix columns.

    Returns
    -------
    array of bool, shape (n_features,)
    """
    if kernel.kind == "linear":
        return np.any(kernel.coef != 0, axis=1)
    if kernel.kind == "trees":
        used = np.zeros(n_features, dtype=bool)
        used[kernel.trees.split_features()] = True
        return used
    return np.ones(n_features, dtype=bool)


def used_fields(features: list[str], fields: list[str], used: np.ndarray, kept_fields: list[str]) -> list[str]:
    """The fields of the used columns.

    Parameters
    ----------
    features : list of str
        The model-matrix columns.
    fields : list of str
        The field each column comes from.
    used : array of bool
        Which columns are used (``used_columns``).
    kept_fields : list of str
        The fields the preprocessing kept, in schema order.

    Returns
    -------
    list of str
        The used fields, in the order of ``kept_fields``.
    """
    names: set[str] = set()
    for feature, name, is_used in zip(features, fields, used, strict=True):
        if is_used:
            names.update(TBS_INPUTS if feature == TBS_NAME else (name,))
    return [f for f in kept_fields if f in names]


def required_fields(used: list[str]) -> list[str]:
    """The used fields a prediction cannot do without.

    Parameters
    ----------
    used : list of str
        The used fields.

    Returns
    -------
    list of str
        Those the schema marks ``required_for_prediction``.
    """
    return [f for f in used if FIELDS_BY_NAME.get(f) is not None and FIELDS_BY_NAME[f].required_for_prediction]


def accepted_fields(used: list[str]) -> list[str]:
    """The fields a form offers for the model.

    Parameters
    ----------
    used : list of str
        The used fields.

    Returns
    -------
    list of str
        The used fields, then the fields the derived ones are derived from (each once).
    """
    out = list(used)
    for name in used:
        f = FIELDS_BY_NAME.get(name)
        for source in (f.derived_from if f is not None else ()):
            if source not in out:
                out.append(source)
    return out


def uncomputable_score(model_name: str, fields_used, columns, rows: np.ndarray) -> str:
    """Say why a served score could not answer: the rows and the fields the score needs that they lack.

    Parameters
    ----------
    model_name : str
        The served score (``score:<name>``).
    fields_used : list of str
        The score's inputs.
    columns : CanonicalColumns or dict of ndarray
        The request's canonical columns.
    rows : numpy.ndarray
        Indices of the patients without a score (the first five are named).

    Returns
    -------
    str
        The message of the ``ValueError`` (or the row's warning).
    """
    needed = [f for f in fields_used if f != "fong_score_recorded"]
    parts = []
    for i in rows[:5]:
        missing = [f for f in needed if f not in columns or pd.isna(columns[f][i])]
        parts.append(f"row {int(i)}: {', '.join(missing) or 'an input'} missing")
    return (f"{model_name} cannot be computed ({'; '.join(parts)}); the served model is the score "
            "itself, so each of its factors must be given")
