"""The Cohort: validated patients with outcomes, and what was set aside on load.

Canonical dtypes of ``Cohort.data`` (the loader, the simulator and the API all produce them):
numeric fields (float and int) are float64 with NaN for missing; yes/no fields are pandas' nullable
``boolean``; categories and text are ``object`` with NaN for missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crlm.schema import FIELDS, FIELDS_BY_NAME, derive_fields, endpoint

if TYPE_CHECKING:  # pragma: no cover
    from crlm.cohort.simulate import SimulationTruth


@dataclass(frozen=True)
class Problem:
    """One bad cell: which row of the source file, which field, the value found and the rule it breaks."""

    row: int | None  # 1-based data row in the source file (header excluded); None for whole-file problems
    field: str
    value: Any
    rule: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        return f"{where}: {self.field} = {self.value!r} breaks rule '{self.rule}'"


@dataclass
class ValidationReport:
    n_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    rejected_rows: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected_rows)

    @property
    def n_accepted(self) -> int:
        return self.n_rows - self.n_rejected

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([p.__dict__ for p in self.problems], columns=["row", "field", "value", "rule"])

    def summary(self) -> str:
        return (f"{self.n_rows} rows read, {self.n_accepted} accepted, {self.n_rejected} set aside "
                f"({len(self.problems)} bad cells)")


class CohortValidationError(ValueError):
    """Raised in strict mode: the whole load fails with the report."""

    def __init__(self, report: ValidationReport, source: str):
        self.report = report
        lines = [f"{source}: {report.summary()}"] + [f"  {p}" for p in report.problems[:50]]
        if len(report.problems) > 50:
            lines.append(f"  ... and {len(report.problems) - 50} more")
        super().__init__("\n".join(lines))


@dataclass
class Cohort:
    data: pd.DataFrame
    name: str
    source: str
    licence: str = ""
    citation: str = ""
    report: ValidationReport = field(default_factory=ValidationReport)
    truth: SimulationTruth | None = None  # only for simulated cohorts: the generating model's answers

    def __len__(self) -> int:
        return len(self.data)

    def y(self, endpoint_name: str) -> np.ndarray:
        """scikit-survival structured outcome (fields ``event``, ``time``) for an endpoint."""
        ep = endpoint(endpoint_name)
        missing = [c for c in (ep.time, ep.event) if c not in self.data]
        if missing:
            raise ValueError(f"cohort {self.name!r} has no {ep.name} outcome (missing {missing})")
        frame = self.data[[ep.time, ep.event]]
        if frame.isna().any().any():
            raise ValueError(f"cohort {self.name!r}: {int(frame.isna().any(axis=1).sum())} patients lack the "
                             f"{ep.name} outcome; use Cohort.with_outcome({endpoint_name!r}) first")
        return make_y(frame[ep.event].astype(bool).to_numpy(), frame[ep.time].astype(float).to_numpy())

    def with_outcome(self, endpoint_name: str) -> Cohort:
        """The patients who have this endpoint's time and event recorded."""
        ep = endpoint(endpoint_name)
        if ep.time not in self.data or ep.event not in self.data:
            raise ValueError(f"cohort {self.name!r} has no {ep.name} outcome")
        keep = self.data[ep.time].notna() & self.data[ep.event].notna()
        return self.subset(keep.to_numpy())

    def subset(self, mask_or_index) -> Cohort:
        idx = np.flatnonzero(mask_or_index) if np.asarray(mask_or_index).dtype == bool else np.asarray(
            mask_or_index)
        truth = self.truth.subset(idx) if self.truth is not None else None
        return Cohort(self.data.iloc[idx].reset_index(drop=True), self.name, self.source, self.licence,
                      self.citation, self.report, truth)


def predictors_frame(data: pd.DataFrame) -> pd.DataFrame:
    """Cohort rows without the outcome columns: everything a model may see."""
    outcomes = {f.name for f in FIELDS if f.block == "outcome"}
    return data.drop(columns=[c for c in data.columns if c in outcomes])


def make_y(event, time) -> np.ndarray:
    """The structured outcome array used everywhere (scikit-survival convention)."""
    y = np.empty(len(time), dtype=[("event", "?"), ("time", "<f8")])
    y["event"] = np.asarray(event, dtype=bool)
    y["time"] = np.asarray(time, dtype=float)
    return y


def to_canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Cast known schema columns to the canonical dtypes and fill derived fields. Unknown columns pass.

    Columns are converted as arrays and assembled into one frame at the end (setting them one by one on a
    copy costs pandas' bookkeeping per column, which dominates for the single rows of online requests)."""
    columns: dict[str, object] = {}
    for name in df.columns:
        f = FIELDS_BY_NAME.get(name)
        col = df[name]
        if f is None:
            columns[name] = col.to_numpy()
        elif f.kind in ("float", "int"):
            columns[name] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        elif f.kind == "bool":
            columns[name] = pd.array([_to_bool(v) for v in col.tolist()], dtype="boolean")
        else:
            values = col.to_numpy(dtype=object).copy()
            values[pd.isna(values)] = np.nan
            columns[name] = values
    out = pd.DataFrame(columns, index=df.index)
    derive_fields(out)
    for name in ("synchronous_metastases", "multiple_metastases"):
        if name in out and out[name].dtype != "boolean":
            out[name] = pd.array([_to_bool(v) for v in out[name].tolist()], dtype="boolean")
    ordered = [f.name for f in FIELDS if f.name in out] + [c for c in out.columns if c not in FIELDS_BY_NAME]
    return out[ordered]


def _to_bool(v):
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return pd.NA
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | float | np.integer | np.floating) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "1", "y"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("false", "no", "0", "n"):
        return False
    raise ValueError(f"not a yes/no value: {v!r}")
