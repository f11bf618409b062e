"""The Cohort: validated patients with outcomes, and what was set aside on load.

Canonical dtypes of ``Cohort.data`` (the loader, the simulator and the API all produce them):
numeric fields (float and int) are float64 with NaN for missing; yes/no fields are pandas' nullable
``boolean``; categories and text are ``object`` with NaN for missing. ``CanonicalColumns`` is the same data
as numpy columns (yes/no as 1.0/0.0/NaN), the form the hot path of the API reads.
"""

from __future__ import annotations

__all__ = [
    "CanonicalColumns", "Cohort", "CohortValidationError", "NO_WORDS", "Problem", "ValidationReport",
    "YES_WORDS", "canonical_columns", "make_y", "predictors_frame", "to_canonical",
]

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from crlm.cohort.truth import SimulationTruth
from crlm.derived_fields import derive_fields
from crlm.schema import FIELDS, FIELDS_BY_NAME, Field, endpoint


@dataclass(frozen=True)
class Problem:
    """One bad cell: which row of the source file, which field, the value found and the rule it breaks."""

    row: int | None  # 1-based data row in the source file (header excluded); None for whole-file problems
    field: str
    value: Any  # the value after the mapping (recoded, unit-converted)
    rule: str
    as_written: Any = None  # the cell as the source file holds it (None when the field has no source cell)

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        written = (f" (written {self.as_written!r})" if self.as_written is not None
                   and str(self.as_written) != str(self.value) else "")
        return f"{where}: {self.field} = {self.value!r}{written} breaks rule '{self.rule}'"


@dataclass
class ValidationReport:
    n_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    rejected_rows: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # per field: recorded (known in accepted rows), missing (in accepted rows), rejected (bad cells)
    fields: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["field", "recorded", "missing", "rejected"]))

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
        return pd.DataFrame([p.__dict__ for p in self.problems],
                            columns=["row", "field", "value", "as_written", "rule"])

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
    extra_fields: tuple[Field, ...] = ()  # a centre's own fields and recorded scores, declared by its mapping
    caveats: tuple[str, ...] = ()  # the dataset's limitations in words, declared by its mapping (or the simulator)

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
                      self.citation, self.report, truth, self.extra_fields, self.caveats)

    @property
    def recorded_scores(self) -> list[Field]:
        """Score columns declared by the mapping (a centre's own score, a recorded published score)."""
        return [f for f in self.extra_fields if f.block == "score"]


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


class CanonicalColumns(dict):
    """Canonical patient data as columns: field name -> numpy array, all of length ``n_rows``.

    Numbers and yes/no fields are float64 (yes/no as 1.0/0.0), categories and text are objects, NaN is missing;
    derived fields are filled; columns outside the schema pass unchanged. The scores, the feature encoders and
    the Predictor read this form, so an online request of one patient never builds a DataFrame (pandas'
    per-column bookkeeping used to cost more than the models)."""

    def __init__(self, columns: dict[str, np.ndarray], n_rows: int):
        super().__init__(columns)
        self.n_rows = n_rows

    def records(self) -> list[dict]:
        """One dict per row: Python floats and strings, yes/no as True/False, missing as NaN (None for yes/no)."""
        lists = {}
        for name, values in self.items():
            f = FIELDS_BY_NAME.get(name)
            if f is not None and f.kind == "bool":
                lists[name] = [None if v != v else v == 1 for v in values.tolist()]
            else:
                lists[name] = values.tolist()
        if not lists:
            return [{} for _ in range(self.n_rows)]
        names = list(lists)
        return [dict(zip(names, row, strict=True)) for row in zip(*lists.values(), strict=True)]

    def frame(self, index=None) -> pd.DataFrame:
        """The canonical DataFrame (schema order first; yes/no as pandas' nullable ``boolean``)."""
        ordered = [f.name for f in FIELDS if f.name in self] + [c for c in self if c not in FIELDS_BY_NAME]
        data = {}
        for name in ordered:
            values, f = self[name], FIELDS_BY_NAME.get(name)
            data[name] = pd.arrays.BooleanArray(values == 1, np.isnan(values)) if f is not None and \
                f.kind == "bool" else values
        return pd.DataFrame(data, index=index if index is not None else pd.RangeIndex(self.n_rows))


def canonical_columns(data) -> CanonicalColumns:
    """``CanonicalColumns`` of a DataFrame or of records (dicts; a missing key is a missing value). Values are
    coerced: numbers from numeric text (otherwise missing), yes/no from booleans, 0/1 and yes/no words (other
    values raise ``ValueError``)."""
    if isinstance(data, CanonicalColumns):
        return data
    if isinstance(data, pd.DataFrame):
        n = len(data)
        raw = {name: data[name] for name in data.columns}
    else:
        records = list(data)
        n = len(records)
        raw = {name: [r.get(name) for r in records] for name in dict.fromkeys(k for r in records for k in r)}
    columns = {}
    for name, values in raw.items():
        f = FIELDS_BY_NAME.get(name)
        if f is None:
            columns[name] = values.to_numpy() if isinstance(values, pd.Series) else _objects(values, fill=False)
        elif f.kind == "bool":
            columns[name] = _yes_no(values)
        elif f.kind in ("float", "int"):
            columns[name] = _numbers(values)
        else:
            columns[name] = _objects(values)
    derive_fields(columns)
    return CanonicalColumns(columns, n)


def to_canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Cast known schema columns to the canonical dtypes and fill derived fields. Unknown columns pass."""
    return canonical_columns(df).frame(df.index)


def _numbers(values) -> np.ndarray:
    if isinstance(values, pd.Series):
        if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            return values.to_numpy(dtype=float, na_value=np.nan)
        values = values.tolist()
    try:
        return np.array(values, dtype=float)  # None -> NaN
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _yes_no(values) -> np.ndarray:
    if isinstance(values, pd.Series):
        if pd.api.types.is_bool_dtype(values.dtype):
            return values.to_numpy(dtype=float, na_value=np.nan)
        values = values.tolist()
    return np.array([_yes_no_value(v) for v in values], dtype=float)


_YES_NO = {True: 1.0, False: 0.0, None: np.nan}  # True == 1 == 1.0 and False == 0 == 0.0 as keys too


def _yes_no_value(v) -> float:
    """One yes/no value as 1.0 / 0.0 / NaN: the common JSON values looked up, the others by ``_to_bool``."""
    try:
        return _YES_NO[v]
    except (KeyError, TypeError):
        return np.nan if (b := _to_bool(v)) is pd.NA else float(b)


def _objects(values, fill: bool = True) -> np.ndarray:
    """A 1-d object array (missing values as NaN when ``fill``)."""
    if isinstance(values, pd.Series):
        out = values.to_numpy(dtype=object).copy()
    else:
        out = np.empty(len(values), dtype=object)
        out[:] = values
    if fill:
        out[pd.isna(out)] = np.nan
    return out


YES_WORDS = ("true", "yes", "y", "1", "t")
NO_WORDS = ("false", "no", "n", "0", "f")


def _to_bool(v):
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return pd.NA
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | float | np.integer | np.floating) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        word = v.strip().lower()
        if word in YES_WORDS:
            return True
        if word in NO_WORDS:
            return False
        try:  # "1.0" / "0.0", as spreadsheets write 1/0
            number = float(word)
        except ValueError:
            number = None
        if number in (0.0, 1.0):
            return number == 1.0
    raise ValueError(f"not a yes/no value: {v!r}")
