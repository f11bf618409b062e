"""Load a cohort file (CSV or Parquet) with an optional YAML mapping, then validate it.

A mapping turns an institution's export into schema fields, in this order: missing-value codes become
missing; supplementary files are joined on a key; expressions derive new columns from source columns;
columns are renamed to schema fields; values are recoded (1/2 -> male/female); units are converted
(mm -> cm, fraction -> percent). Source columns not named by the mapping are not kept.
Rows that fail validation are set aside with a report; ``strict=True`` fails the whole load instead.
"""

from __future__ import annotations

__all__ = [
    "ExtraField", "JoinSpec", "Mapping", "MappingError", "NA_STRINGS", "RecordedScore", "UNIT_FACTORS",
    "apply_mapping", "load_cohort", "map_with_written", "read_mapping", "read_table",
]

import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from crlm.cohort.base import Cohort, CohortValidationError
from crlm.cohort.validate import ROW_COLUMN, validate_frame
from crlm.schema import FIELDS_BY_NAME, Field

UNIT_FACTORS = {"mm": 0.1, "cm": 1.0, "fraction": 100.0, "percent": 1.0, "ug_l": 1.0, "ng_ml": 1.0,
                "days": 12 / 365.25, "weeks": 12 / 52.1775, "years": 12.0, "months": 1.0}


# pandas' default missing-value strings except "None", which exports use as a value (no chemotherapy, no
# biologic): reading it as missing would turn a known "none" into an unknown.
NA_STRINGS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
              "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"]


class JoinSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    left_key: str
    right_key: str
    columns: list[str]
    encoding: str | None = None


class ExtraField(BaseModel):
    """A centre's own predictor (TMB, TP53, a molecular subtype): validated like a schema field and used by
    the feature pipelines of its block."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["float", "int", "bool", "category"]
    description: str = ""
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None
    block: Literal["clinical", "genomic", "response", "operative"] = "clinical"
    timing: Literal["preoperative", "postoperative"] = "preoperative"

    def to_field(self) -> Field:
        return Field(self.name, self.kind, self.block, self.timing, self.description or self.name, self.unit,
                     self.minimum, self.maximum, tuple(self.categories) if self.categories else None)


class RecordedScore(BaseModel):
    """A score the export records (a local score, a published score computed elsewhere); higher = worse.
    Never a model input; usable as the benchmark's reference (``reference: recorded:<name>``)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    label: str
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None

    def to_field(self) -> Field:
        text = f"{self.label}: {self.description}" if self.description else self.label
        return Field(self.name, "float", "score", "preoperative", text, "points", self.minimum, self.maximum)


class Mapping(BaseModel):
    """The YAML mapping. Unknown keys are refused, naming the key."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    source: str = ""
    licence: str = ""
    citation: str = ""
    caveats: list[str] = []  # the dataset's limitations, printed by the model card (Markdown, one bullet each)
    encoding: str | None = None
    missing_values: list[Any] = []
    join: list[JoinSpec] = []
    derive: dict[str, str] = {}
    rename: dict[str, str | list[str]]  # source column -> schema field (a list: one column feeds several)
    recode: dict[str, dict[Any, Any]] = {}
    units: dict[str, Literal[tuple(UNIT_FACTORS)]] = {}  # type: ignore[valid-type]
    extra_fields: list[ExtraField] = []
    recorded_scores: list[RecordedScore] = []

    def own_fields(self) -> tuple[Field, ...]:
        """The centre's declared fields (extra predictors, then recorded scores) as schema ``Field`` objects."""
        return (*(f.to_field() for f in self.extra_fields), *(s.to_field() for s in self.recorded_scores))


class MappingError(ValueError):
    pass


def read_mapping(path: str | Path) -> Mapping:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mapping file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        mapping = Mapping.model_validate(raw)
    except ValidationError as err:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise MappingError(f"invalid mapping {path}: {details}") from None
    own = [f.name for f in mapping.own_fields()]
    clash = [n for n in own if n in FIELDS_BY_NAME or not re.fullmatch(r"[a-z][a-z0-9_]*", n)]
    if clash:
        raise MappingError(f"invalid mapping {path}: extra field or recorded score name(s) {clash} must be "
                           "snake_case and not a schema field (map the column to the schema field instead)")
    bad = [f.name for f in mapping.extra_fields if f.kind == "category" and not f.categories]
    if bad:
        raise MappingError(f"invalid mapping {path}: extra field(s) {bad} of kind category need 'categories'")
    targets = [t for v in mapping.rename.values() for t in ([v] if isinstance(v, str) else v)]
    unknown = [f for f in [*targets, *mapping.recode, *mapping.units] if f not in FIELDS_BY_NAME and f not in own]
    if unknown:
        raise MappingError(f"invalid mapping {path}: unknown schema field(s) {sorted(set(unknown))} (a centre's "
                           "own field must be declared under extra_fields or recorded_scores)")
    undeclared = [n for n in own if n not in targets]
    if undeclared:
        raise MappingError(f"invalid mapping {path}: declared field(s) {undeclared} get no source column: add "
                           "'<source column>: <name>' under rename")
    return mapping


def read_table(path: str | Path, encoding: str | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cohort file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding=encoding or "utf-8-sig",
                               dtype=object, keep_default_na=False, na_values=NA_STRINGS)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, ValueError) as err:
        raise ValueError(f"cannot read {path} as {suffix[1:]}: {err}") from None
    raise ValueError(f"unreadable format {suffix or '(no extension)'} for {path}: use .csv, .tsv or .parquet")


def apply_mapping(raw: pd.DataFrame, mapping: Mapping, base_dir: Path) -> pd.DataFrame:
    """The source rows as schema fields (see the module docstring); ``_source_row`` keeps each row's number."""
    return map_with_written(raw, mapping, base_dir)[0]


def map_with_written(raw: pd.DataFrame, mapping: Mapping, base_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mapped rows, the same cells as written in the source files): reports show both."""
    df = raw.copy()
    df[ROW_COLUMN] = np.arange(1, len(df) + 1)
    written = df.copy()
    df = _replace_missing(df, mapping.missing_values)
    for join in mapping.join:
        extra_raw = read_table(base_dir / join.path, join.encoding)
        _require_columns(extra_raw, [join.right_key, *join.columns], base_dir / join.path)
        _require_columns(df, [join.left_key], "the cohort file")
        repeated = extra_raw[join.right_key].dropna()
        repeated = sorted(map(str, repeated[repeated.duplicated()].unique()))
        if repeated:
            raise MappingError(f"join {join.path}: key {join.right_key!r} repeats {', '.join(repeated[:10])}: "
                               "one row per patient is needed to join")
        before = df
        df = _join(df, _replace_missing(extra_raw, mapping.missing_values), join)
        written = _join(written, extra_raw, join, fill=before)
    for target, expression in mapping.derive.items():
        df[target], used = _derive(df, target, expression)
        # a derived cell "as written" is its inputs as written
        written[target] = written[used].astype(str).apply(
            lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1) if used else expression
    _require_columns(df, list(mapping.rename), "the cohort file")
    out = pd.DataFrame({ROW_COLUMN: df[ROW_COLUMN].to_numpy()}, index=df.index)
    as_written = pd.DataFrame(index=df.index)
    for source, targets in mapping.rename.items():
        for target in [targets] if isinstance(targets, str) else targets:
            out[target] = df[source]
            as_written[target] = written[source]
    for field_name, codes in mapping.recode.items():
        if field_name in out:
            lookup = {_code_key(k): v for k, v in codes.items()}
            out[field_name] = out[field_name].map(lambda v, lk=lookup: lk.get(_code_key(v), v)
                                                  if not pd.isna(v) else v)
    for field_name, unit in mapping.units.items():
        if field_name in out:
            values = pd.to_numeric(out[field_name], errors="coerce")
            # non-numeric cells are left as they are, so validation reports them as they were written
            out[field_name] = out[field_name].where(values.isna(), values * UNIT_FACTORS[unit])
    return out, as_written


def _join(df: pd.DataFrame, extra: pd.DataFrame, join: JoinSpec, fill: pd.DataFrame | None = None) -> pd.DataFrame:
    """Left join on the key; where both files have a column, the main file wins and the supplement fills its
    gaps (judged on ``fill``, the missing-coded frame, when given)."""
    extra = extra[[join.right_key, *join.columns]].rename(columns={join.right_key: join.left_key})
    clash = [c for c in join.columns if c in df.columns]
    out = df.merge(extra, on=join.left_key, how="left", suffixes=("", "__joined"))
    for c in clash:
        known = (fill[c] if fill is not None else out[c]).notna().to_numpy()
        out[c] = out[c].where(known, out[f"{c}__joined"])
        out = out.drop(columns=f"{c}__joined")
    return out


_STRING_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")


def _derive(df: pd.DataFrame, target: str, expression: str) -> tuple[pd.Series, list[str]]:
    """Evaluate a derive expression; missing in, missing out.

    Columns are numbers when every recorded value is numeric, else text (so ``stage == 'IV'`` works). A row
    with any input missing gets a missing result whatever the operator (pandas would make ``NaN < 12`` False).
    """
    code = _STRING_LITERAL.sub("", expression)
    used = [c for c in df.columns if c != ROW_COLUMN and (
        f"`{c}`" in code or re.search(rf"(?<![\w.]){re.escape(str(c))}(?![\w(])", code))]
    local = {}
    for c in used:
        numbers = pd.to_numeric(df[c], errors="coerce")
        text = df[c].where(df[c].isna(), df[c].astype(str).str.strip())
        local[c] = numbers if numbers.notna().sum() == df[c].notna().sum() else text
    frame = pd.DataFrame(local, index=df.index)
    try:
        result = frame.eval(expression, engine="python") if used else pd.eval(expression, engine="python")
    except Exception as err:  # pandas raises many types for a bad expression
        raise MappingError(f"derive {target!r}: cannot evaluate {expression!r}: {err} "
                           f"(columns available: {', '.join(map(str, df.columns[:40]))})") from None
    result = pd.Series(result, index=df.index) if np.ndim(result) else pd.Series([result] * len(df), index=df.index)
    unknown = frame.isna().any(axis=1) if used else pd.Series(False, index=df.index)
    return result.astype(object).where(~unknown, np.nan), used


def load_cohort(path: str | Path, mapping: str | Path | Mapping | None = None, *, strict: bool = False,
                name: str | None = None) -> Cohort:
    """Read, map and validate a cohort. Bad rows are set aside and reported (``cohort.report``)."""
    path = Path(path)
    if isinstance(mapping, str | Path):
        mapping_path = Path(mapping)
        mapping = read_mapping(mapping_path)
        base_dir = mapping_path.parent
    else:
        base_dir = path.parent
    raw = read_table(path, mapping.encoding if mapping else None)
    if mapping is not None:
        frame, written = map_with_written(raw, mapping, base_dir)
    else:
        frame = raw.copy()
        frame[ROW_COLUMN] = np.arange(1, len(frame) + 1)
        written = frame
    own = mapping.own_fields() if mapping is not None else ()
    data, report = validate_frame(frame, written, own)
    if strict and not report.ok:
        raise CohortValidationError(report, str(path))
    return Cohort(data=data, name=name or (mapping.name if mapping else path.stem),
                  source=(mapping.source if mapping and mapping.source else str(path)),
                  licence=mapping.licence if mapping else "", citation=mapping.citation if mapping else "",
                  report=report, extra_fields=own, caveats=tuple(mapping.caveats) if mapping else ())


def _replace_missing(df: pd.DataFrame, codes: list[Any]) -> pd.DataFrame:
    if not codes:
        return df
    keys = {_code_key(c) for c in codes}
    return df.apply(lambda col: col.map(lambda v: np.nan if _code_key(v) in keys else v)
                    if col.name != ROW_COLUMN else col)


def _code_key(v) -> str:
    """Compare codes across types: 1, 1.0 and '1' are the same code."""
    try:
        x = float(v)
        return f"{x:g}"
    except (TypeError, ValueError):
        return str(v).strip()


def _require_columns(df: pd.DataFrame, columns: list[str], where) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        available = ", ".join(map(str, df.columns[:40]))
        raise MappingError(f"column(s) {missing} named by the mapping are not in {where} (it has: {available})")
