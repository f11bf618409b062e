"""Which input fields a Predictor's models actually use, so that a patient need not give the others.

A model-matrix column is used when any of the Predictor's models (the refit or a bootstrap refit: they all shape
the answer) depends on it: a linear Cox model through a non-zero coefficient, a tree ensemble through a split
on it. A field is used when one of its columns is (its value, its missing indicator, its one-hot levels; the
tumour burden score uses both of its inputs). Models the kernel cannot read (its generic fallback) use every
field their preprocessing kept.

- ``used_fields``: what the answer depends on; only these are checked and warned about;
- ``required_fields``: the used fields the schema requires for a prediction (``required_for_prediction``);
- ``accepted_fields``: the used fields and the fields they are derived from when absent (``ras_status`` from
  ``kras_status`` and ``nras_status``): what a form offers for this model;
- ``input_warnings``: per patient, the used inputs that were missing or outside the training data.
"""

from __future__ import annotations

__all__ = [
    "accepted_fields", "input_warnings", "required_fields", "uncomputable_score", "used_columns", "used_fields",
    "warning_rules", "WarningRule",
]

import numpy as np
import pandas as pd

from crlm.cohort.base import CanonicalColumns
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


WarningRule = tuple[str, str, "set[str] | None", "dict | None"]  # (field, missing message, known categories, range)


def warning_rules(used: list[str], training_ranges: dict) -> list[WarningRule]:
    """Per used field: its name, its missing message, its known categories (a genomic marker's ``unknown``
    too) and its training range or categories (``training_ranges``), for ``input_warnings``.

    Parameters
    ----------
    used : list of str
        The used fields, in the order the warnings list them.
    training_ranges : dict
        Per field, ``{"min", "max"}`` or ``{"categories"}`` of the training data.

    Returns
    -------
    list of tuple
        One ``WarningRule`` per used field.
    """
    rules: list[WarningRule] = []
    for name in used:
        f = FIELDS_BY_NAME.get(name)
        genomic = f is not None and f.block == "genomic"
        rng = training_ranges.get(name)
        seen = (set(rng["categories"]) | ({"unknown"} if genomic else set())
                if rng is not None and "categories" in rng else None)
        rules.append((name, f"{name} is missing and was {'treated as unknown' if genomic else 'imputed'}",
                      seen, rng))
    return rules


def input_warnings(columns: CanonicalColumns, rules: list[WarningRule], imputes: bool = True) -> list[list[str]]:
    """List, per patient, the inputs that were missing and the values outside the training data.

    Parameters
    ----------
    columns : CanonicalColumns
        The patients' canonical columns.
    rules : list of WarningRule
        ``warning_rules`` of the model's used fields.
    imputes : bool, default True
        Whether a missing input is imputed (a served score imputes nothing: no missing message).

    Returns
    -------
    list of list of str
        Per patient, in the order of ``rules``: missing inputs (imputed, or a genomic marker treated as
        unknown) and values outside the training range or categories.
    """
    if columns.n_rows > 16:
        return _batch_warnings(columns, rules, imputes)
    # Python values per column and Python comparisons: the per-field numpy calls of the vectorised check
    # cost more than the check for the usual batch of one patient (the same messages, in the same order)
    out: list[list[str]] = [[] for _ in range(columns.n_rows)]
    for name, message, seen, rng in rules:
        values = columns.get(name)
        if values is None:
            for row in out if imputes else ():
                row.append(message)
            continue
        listed = values.tolist()
        missing = [v != v for v in listed] if values.dtype.kind == "f" else np.asarray(pd.isna(values)).tolist()
        for i, (gone, value) in enumerate(zip(missing, listed, strict=True)):
            if gone:
                if imputes:
                    out[i].append(message)
            elif rng is not None and "min" in rng:
                if not (rng["min"] <= float(value) <= rng["max"]):
                    out[i].append(_out_of_range(name, value, rng))
            elif seen is not None and str(value) not in seen:
                out[i].append(f"{name} {value!r} was not seen in training")
    return out


def _out_of_range(name: str, value, rng: dict) -> str:
    return (f"{name} {float(value):g} is outside the training range ({rng['min']:g}-{rng['max']:g}): the "
            "prediction is an extrapolation")


def _batch_warnings(columns: CanonicalColumns, rules: list[WarningRule], imputes: bool) -> list[list[str]]:
    """``input_warnings`` of a large batch: the checks vectorised over the patients, only flagged ones loop."""
    out: list[list[str]] = [[] for _ in range(columns.n_rows)]
    for name, message, seen, rng in rules:
        values = columns.get(name)
        missing = (np.ones(columns.n_rows, dtype=bool) if values is None else np.isnan(values)
                   if values.dtype.kind == "f" else np.asarray(pd.isna(values)))
        for i in np.flatnonzero(missing).tolist() if imputes else ():
            out[i].append(message)
        if values is None or rng is None:
            continue
        present = np.flatnonzero(~missing)
        if "min" in rng:
            numbers = np.asarray(values[present], dtype=float)
            for i in present[~((rng["min"] <= numbers) & (numbers <= rng["max"]))].tolist():
                out[i].append(_out_of_range(name, values[i], rng))
        elif seen is not None:
            texts = np.asarray(values[present]).astype(str)
            for i in present[~np.isin(texts, list(seen))].tolist():
                out[i].append(f"{name} {values[i]!r} was not seen in training")
    return out
