"""Validate a cohort frame against the schema: every bad cell reported with its row, field, value and rule.

Types are checked cell by cell here (so a word in a numeric column is reported as that cell, not as a
column-wide coercion failure); ranges and categories are checked by the pandera schema generated from
the catalogue, run lazily so that every bad cell is collected. A row with any bad cell is set aside.
"""

from __future__ import annotations

__all__ = ["ROW_COLUMN", "validate_frame"]

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import pandera.errors as pa_errors

from crlm.cohort.base import Problem, ValidationReport, _to_bool, to_canonical
from crlm.schema import FIELDS_BY_NAME, Field
from crlm.schema_artefacts import pandera_schema

ROW_COLUMN = "_source_row"  # 1-based data row of the source file, carried through mapping and validation


def validate_frame(df: pd.DataFrame, written: pd.DataFrame | None = None,
                   extra_fields: Sequence[Field] = ()) -> tuple[pd.DataFrame, ValidationReport]:
    """Returns the accepted rows in canonical dtypes and the report of what was set aside.

    Parameters
    ----------
    df : DataFrame
        Mapped rows (schema field names, plus ``_source_row``).
    written : DataFrame, optional
        The same cells as the source file holds them (same index and columns), shown beside bad values.
    extra_fields : sequence of Field
        A centre's own fields declared in its mapping, validated like schema fields.

    Returns
    -------
    (DataFrame, ValidationReport)
        Accepted rows (canonical dtypes) and the report (bad cells, rows set aside, per-field summary).
    """
    df = df.reset_index(drop=True)
    rows = df[ROW_COLUMN].to_numpy() if ROW_COLUMN in df else np.arange(1, len(df) + 1)
    report = ValidationReport(n_rows=len(df))
    catalogue = {**FIELDS_BY_NAME, **{f.name: f for f in extra_fields}}
    unknown = [c for c in df.columns if c not in catalogue and c != ROW_COLUMN]
    if unknown:
        report.warnings.append(f"columns not in the schema, ignored: {', '.join(map(str, unknown))}")
    typed = pd.DataFrame(index=df.index)
    for name in [c for c in df.columns if c in catalogue]:
        typed[name] = _check_types(df[name], catalogue[name], rows, report)
        if name not in FIELDS_BY_NAME and catalogue[name].kind == "bool":  # outside the schema: 1.0/0.0/NaN
            typed[name] = typed[name].astype("Float64").astype(float)
    _check_ranges(typed[[c for c in typed.columns if c in FIELDS_BY_NAME]], rows, report)
    _check_extra_ranges(typed, [f for f in extra_fields if f.name in typed], rows, report)
    _check_consistency(typed, rows, report)
    _check_ids(typed, rows, report)
    if written is not None:
        written = written.reset_index(drop=True)
        position = {int(r): i for i, r in enumerate(rows)}
        report.problems = [p if p.row is None or p.field not in written else
                           replace(p, as_written=_cell(written.at[position[p.row], p.field]))
                           for p in report.problems]

    bad = sorted({p.row for p in report.problems if p.row is not None})
    report.rejected_rows = bad
    keep = ~pd.Series(rows).isin(bad).to_numpy()
    accepted = to_canonical(typed.loc[keep].reset_index(drop=True))
    report.fields = _field_summary(accepted, report, list(typed.columns))
    return accepted, report


def _cell(value):
    return None if _is_missing(value) else value


def _field_summary(accepted: pd.DataFrame, report: ValidationReport, names: list[str]) -> pd.DataFrame:
    """Per field: values recorded and missing among the accepted rows, and bad cells (rows set aside)."""
    bad = pd.Series([p.field for p in report.problems], dtype=object).value_counts()
    rows = []
    for name in names:
        col = accepted[name] if name in accepted else pd.Series(dtype=object)
        missing = int(col.isna().sum())
        rows.append({"field": name, "recorded": int(len(col) - missing), "missing": missing,
                     "rejected": int(bad.get(name, 0))})
    return pd.DataFrame(rows, columns=["field", "recorded", "missing", "rejected"])


def _check_ids(typed: pd.DataFrame, rows, report: ValidationReport) -> None:
    """Every row needs a patient ID, and an ID names one patient: missing and repeated IDs are bad rows."""
    if "patient_id" not in typed:
        return
    ids = typed["patient_id"]
    for i in np.flatnonzero(ids.isna().to_numpy()):
        report.problems.append(Problem(int(rows[i]), "patient_id", None, "required: every row needs a patient ID"))
    repeated = ids[ids.duplicated(keep=False) & ids.notna()]
    for value, group in repeated.groupby(repeated):
        where = [int(rows[i]) for i in group.index]
        for i in group.index:
            others = ", ".join(str(r) for r in where if r != int(rows[i]))
            report.problems.append(Problem(int(rows[i]), "patient_id", value,
                                           f"must be unique (also in row {others})"))


def _check_extra_ranges(typed: pd.DataFrame, fields: list[Field], rows, report: ValidationReport) -> None:
    for f in fields:
        col = typed[f.name]
        if f.kind == "category":
            bad = col.notna() & ~col.isin(list(f.categories or ()))
        elif f.kind in ("float", "int"):
            low = -np.inf if f.minimum is None else f.minimum
            high = np.inf if f.maximum is None else f.maximum
            bad = col.notna() & ((col < low) | (col > high) | ((col != col.round()) if f.kind == "int" else False))
        else:
            continue
        for i in np.flatnonzero(bad.to_numpy()):
            report.problems.append(Problem(int(rows[i]), f.name, col.iloc[i], f.rule))


def _is_missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())


def _check_types(col: pd.Series, f, rows, report: ValidationReport) -> pd.Series:
    values = []
    for i, v in enumerate(col.tolist()):
        if _is_missing(v):
            values.append(np.nan if f.kind not in ("bool",) else pd.NA)
            continue
        try:
            if f.kind in ("float", "int"):
                x = float(v)
                if not np.isfinite(x):
                    raise ValueError
                values.append(x)
            elif f.kind == "bool":
                values.append(_to_bool(v))
            else:
                values.append(str(v).strip())
        except (TypeError, ValueError):
            report.problems.append(Problem(int(rows[i]), f.name, v, _type_rule(f)))
            values.append(np.nan)
    if f.kind in ("float", "int"):
        return pd.Series(values, index=col.index, dtype=float)
    if f.kind == "bool":
        return pd.Series(values, index=col.index, dtype="boolean")
    return pd.Series(values, index=col.index, dtype=object)


def _type_rule(f) -> str:
    return {"float": "must be a number", "int": "must be a whole number", "bool": "must be yes/no (yes/no, y/n, true/false, 1/0)"
            }.get(f.kind, f.rule)


def _check_ranges(typed: pd.DataFrame, rows, report: ValidationReport) -> None:
    try:
        pandera_schema().validate(typed, lazy=True)
    except pa_errors.SchemaErrors as err:
        cases = err.failure_cases
        for _, case in cases.iterrows():
            if case["index"] is None or pd.isna(case["index"]):
                continue  # column-level messages duplicate the cell-level ones we keep
            field = FIELDS_BY_NAME[case["column"]]
            rule = f"{field.rule}" if field.kind == "category" else str(case["check"])
            if field.kind in ("float", "int"):
                rule = field.rule if rule != "integer" else "must be a whole number"
            report.problems.append(Problem(int(rows[int(case["index"])]), case["column"],
                                           case["failure_case"], rule))


def _check_consistency(typed: pd.DataFrame, rows, report: ValidationReport) -> None:
    """Rules across fields: recurrence-free time cannot exceed overall survival time."""
    for later in ("rfs_months", "liver_rfs_months"):
        if later in typed and "os_months" in typed:
            bad = typed[later] > typed["os_months"] + 1e-6
            for i in np.flatnonzero(bad.to_numpy()):
                report.problems.append(Problem(int(rows[i]), later, typed[later].iloc[i],
                                               "must not exceed os_months"))
