"""Derivations shared by the loader, the simulator and the API: fields computed from others when a record
lacks them (``Field.derived_from`` in ``crlm.schema``), never overwriting a value that was given."""

from __future__ import annotations

__all__ = ["derive_fields"]

import numpy as np
import pandas as pd


def derive_fields(columns):
    """Fill derived fields (``synchronous_metastases``, ``multiple_metastases``, ``ras_status``) where missing.

    A value given by the source is kept.

    Parameters
    ----------
    columns : CanonicalColumns or dict of ndarray
        Canonical numpy columns (numbers and yes/no as floats with NaN, categories as objects), changed in
        place.

    Returns
    -------
    CanonicalColumns or dict of ndarray
        ``columns``, with the derived fields.
    """
    def keep_given(name, derived):
        if name in columns:
            given = columns[name]
            derived = np.where(pd.isna(given), derived, given)
        columns[name] = derived

    def status(name, n):
        values = columns.get(name, np.full(n, np.nan, dtype=object))
        return np.where(pd.isna(values), "unknown", values)

    if "disease_free_interval_months" in columns:
        dfi = columns["disease_free_interval_months"]
        keep_given("synchronous_metastases", np.where(np.isnan(dfi), np.nan, dfi == 0))
    if "n_liver_metastases" in columns:
        n = columns["n_liver_metastases"]
        keep_given("multiple_metastases", np.where(np.isnan(n), np.nan, n > 1))
    if "kras_status" in columns or "nras_status" in columns:
        n = len(columns["kras_status" if "kras_status" in columns else "nras_status"])
        kras, nras = status("kras_status", n), status("nras_status", n)
        ras = np.where((kras == "mutant") | (nras == "mutant"), "mutant",
                       np.where((kras == "wild_type") & (nras == "wild_type"), "wild_type", "unknown"))
        keep_given("ras_status", ras.astype(object))
    return columns
