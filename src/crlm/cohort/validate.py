"""Validate a cohort frame against the schema: every bad cell reported with its row, field, value and rule.

Types are checked cell by cell here (so a word in a numeric column is reported as that cell, not as a
column-wide coercion failure); ranges and categories are checked by the pandera schema generated from
the catalogue, run lazily so that every bad cell is collected. A row with any bad cell is set aside.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.errors as pa_errors

from crlm.cohort.base import Problem, ValidationReport, _to_bool, to_canonical
from crlm.schema import FIELDS_BY_NAME, pandera_schema

ROW_COLUMN = "_source_row"  # 1-based data row of the source file, carried through mapping and validation


def validate_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, ValidationReport]:
    """Returns the accepted rows in canonical dtypes and the report of what was set aside."""
    df = df.reset_index(drop=True)
    rows = df[ROW_COLUMN].to_numpy() if ROW_COLUMN in df else np.arange(1, len(df) + 1)
    report = ValidationReport(n_rows=len(df))
    unknown = [c for c in df.columns if c not in FIELDS_BY_NAME and c != ROW_COLUMN]
    if unknown:
        report.warnings.append(f"columns not in the schema, ignored: {', '.join(map(str, unknown))}")
    typed = pd.DataFrame(index=df.index)
    for name in [c for c in df.columns if c in FIELDS_BY_NAME]:
        typed[name] = _check_types(df[name], FIELDS_BY_NAME[name], rows, report)
    _check_ranges(typed, rows, report)
    _check_consistency(typed, rows, report)

    bad = sorted({p.row for p in report.problems if p.row is not None})
    report.rejected_rows = bad
    keep = ~pd.Series(rows).isin(bad).to_numpy()
    accepted = to_canonical(typed.loc[keep].reset_index(drop=True))
    return accepted, report


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
    return {"float": "must be a number", "int": "must be a whole number", "bool": "must be yes/no (true/false, 1/0)"
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
