"""The feature pipeline: canonical cohort rows -> the numeric matrix every learned model sees.

Built from the schema's field catalogue (``crlm.schema.predictor_fields``), never from a hand-kept column list:
one transformer per schema block (clinical, genomic, response, operative), each a ``ColumnTransformer`` over
the block's fields by kind, assembled into one ``ColumnTransformer``.

Encodings (every output column has a readable name, see ``get_feature_names_out``):

- numbers: median imputation with a missing indicator (``SimpleImputer(add_indicator=True)``), then standard
  scaling of the values; the indicators stay 0/1. ``cea_ng_ml`` and ``ca19_9_u_ml`` are log1p-transformed first
  (``"cea_ng_ml (log)"``). Indicators exist only for fields with missing values in the training data.
- the Tumour Burden Score ``tumour_burden_score`` = sqrt(largest_metastasis_cm^2 + n_liver_metastases^2) is
  added as a feature (imputed and scaled like the numbers, without its own indicator: the inputs' indicators
  already say when it is missing).
- yes/no: 1.0 / 0.0, missing -> 0.0 plus an indicator ``"<field> missing"``.
- ordered categories (T stage, grade, RECIST response): the rank in the schema's category order, then as
  numbers (``"primary_t_stage (ordinal)"``).
- other categories: one-hot, missing is its own level (``"sex=missing"``); levels are learned at fit, an unseen
  level at prediction encodes as all zeros. Genomic markers (and MMR) keep ``unknown`` as its own level, and a
  missing marker is ``unknown`` (not recorded = not known), so ``"ras_status=unknown"`` is a feature.
- RAS: the derived ``ras_status`` (mutant if KRAS or NRAS is) enters alongside ``kras_status`` and
  ``nras_status``. Dropping the sources would lose information: a cohort that tested only KRAS has
  ``ras_status`` mutant/unknown but never wild_type (the schema needs both wild_type), so the KRAS wild-type
  patients would be indistinguishable from the untested. The price is collinear columns (ridge/elastic-net
  and trees cope; attributions may share one effect between ``kras_status=mutant`` and ``ras_status=mutant``).

Fit-time decisions, learned from the training rows only: fields absent from the input, entirely missing, or
with a single value and no missing (no information) are dropped (``dropped_columns_`` says which and why).
At prediction, fields the model uses but the input lacks are treated as missing.

Output: numpy float64 by default; ``set_output(transform="pandas")`` returns a DataFrame with the readable
feature names (``crlm.models`` uses that, so fitted estimators and boosters carry the names).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from crlm import schema

DEFAULT_BLOCKS: tuple[str, ...] = ("clinical", "genomic", "response")
LOG_FIELDS = ("cea_ng_ml", "ca19_9_u_ml")  # right-skewed serum markers
ORDINAL_FIELDS = ("primary_t_stage", "primary_grade", "recist_response")  # schema category order is the order
TBS_INPUTS = ("largest_metastasis_cm", "n_liver_metastases")
TBS_NAME = "tumour_burden_score"
MISSING_LEVEL = "missing"
UNKNOWN_LEVEL = "unknown"
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


# --- the schema side -------------------------------------------------------------------------------------

def model_fields(blocks: Sequence[str] = DEFAULT_BLOCKS, *, postoperative: bool = False,
                 columns_present: Iterable[str] | None = None) -> list[schema.Field]:
    """Candidate predictor fields, in schema order: ``predictor_fields`` of the blocks (preoperative fields
    only; ``postoperative`` adds the postoperative fields and the operative block), restricted to
    ``columns_present`` when given."""
    blocks = tuple(blocks) + (("operative",) if postoperative and "operative" not in blocks else ())
    fields = schema.predictor_fields(blocks, postoperative=postoperative)
    if columns_present is not None:
        present = set(columns_present)
        fields = [f for f in fields if f.name in present]
    return fields


def model_columns(blocks: Sequence[str] = DEFAULT_BLOCKS, *, postoperative: bool = False,
                  columns_present: Iterable[str] | None = None) -> list[str]:
    """Names of ``model_fields``."""
    return [f.name for f in model_fields(blocks, postoperative=postoperative, columns_present=columns_present)]


def present_columns(df: pd.DataFrame) -> list[str]:
    """A cohort's columns that are not entirely missing (what ``columns_present`` expects)."""
    return [c for c in df.columns if df[c].notna().any()]


def _has_unknown_level(f: schema.Field) -> bool:
    return f.kind == "category" and UNKNOWN_LEVEL in (f.categories or ())


def _uninformative(f: schema.Field, values: pd.Series) -> str | None:
    """Why a training column carries no information (None if it does)."""
    if _has_unknown_level(f):
        values = values.astype(object).where(values.notna(), UNKNOWN_LEVEL)
    observed = values.dropna()
    if observed.empty:
        return "all missing"
    if len(observed) == len(values) and observed.astype(object).nunique() == 1:
        return f"single value {observed.iloc[0]!r}"
    return None


# --- value conversion (canonical dtypes, pd.NA, strings from the API) -----------------------------------

def _frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    X = np.asarray(X, dtype=object)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])


def _to_float(value) -> float:
    if value is None or value is pd.NA:
        return np.nan
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
        try:
            return float(text)
        except ValueError:
            return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _float_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Float matrix with NaN for missing; handles float, nullable boolean/Float64, pd.NA and objects."""
    columns = []
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_float_dtype(col.dtype) and not isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
            columns.append(col.to_numpy(dtype=float))
        else:
            columns.append(np.array([_to_float(v) for v in col.astype(object)], dtype=float))
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def _input_names(transformer, input_features) -> list[str]:
    if input_features is not None:
        return [str(n) for n in input_features]
    return list(transformer.feature_names_in_)


# --- per-kind transformers ----------------------------------------------------------------------------

class _ImputeScale(TransformerMixin, BaseEstimator):
    """Median imputation with missing indicators, then scaling of the values (the indicators stay 0/1)."""

    def _values(self, frame: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def _label(self, name: str) -> str:
        return name

    def _indicator(self) -> bool:
        return True

    def fit(self, X, y=None):
        frame = _frame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        values = self._values(frame)
        # numpy inside whatever the global sklearn output config says (we slice by position)
        self.imputer_ = SimpleImputer(strategy="median", add_indicator=self._indicator(),
                                      keep_empty_features=True).set_output(transform="default").fit(values)
        imputed = self.imputer_.transform(values)
        self.scaler_ = StandardScaler().set_output(transform="default").fit(imputed[:, : self.n_features_in_])
        return self

    def transform(self, X):
        check_is_fitted(self, "imputer_")
        imputed = self.imputer_.transform(self._values(_frame(X)))
        k = self.n_features_in_
        return np.hstack([self.scaler_.transform(imputed[:, :k]), imputed[:, k:]])

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "imputer_")
        names = _input_names(self, input_features)
        out = [self._label(n) for n in names]
        if self.imputer_.indicator_ is not None:
            out += [f"{names[i]} missing" for i in self.imputer_.indicator_.features_]
        return np.asarray(out, dtype=object)


class NumericEncoder(_ImputeScale):
    """Numbers: optional log1p (negative values clipped to 0), median imputation + indicators, scaling."""

    def __init__(self, log: bool = False, indicator: bool = True):
        self.log = log
        self.indicator = indicator

    def _values(self, frame):
        values = _float_matrix(frame)
        return np.log1p(np.clip(values, 0, None)) if self.log else values

    def _label(self, name):
        return f"{name} (log)" if self.log else name

    def _indicator(self):
        return self.indicator


class OrdinalRankEncoder(_ImputeScale):
    """Ordered categories -> rank in the schema's category order (unknown values are missing), then as numbers."""

    def __init__(self, indicator: bool = True):
        self.indicator = indicator

    def _values(self, frame):
        columns = []
        for name in frame.columns:
            order = {c: float(i) for i, c in enumerate(schema.field(str(name)).categories or ())}
            columns.append(np.array([order.get(v, np.nan) if isinstance(v, str) else np.nan
                                     for v in frame[name].astype(object)], dtype=float))
        return np.column_stack(columns)

    def _label(self, name):
        return f"{name} (ordinal)"

    def _indicator(self):
        return self.indicator


class BooleanEncoder(TransformerMixin, BaseEstimator):
    """Yes/no -> 1.0/0.0; missing -> 0.0 plus a ``"<field> missing"`` indicator (if missing at fit)."""

    def fit(self, X, y=None):
        frame = _frame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        self.indicator_features_ = np.flatnonzero(np.isnan(_float_matrix(frame)).any(axis=0))
        return self

    def transform(self, X):
        check_is_fitted(self, "indicator_features_")
        values = _float_matrix(_frame(X))
        missing = np.isnan(values)
        return np.hstack([np.where(missing, 0.0, values != 0).astype(float),
                          missing[:, self.indicator_features_].astype(float)])

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "indicator_features_")
        names = _input_names(self, input_features)
        return np.asarray(names + [f"{names[i]} missing" for i in self.indicator_features_], dtype=object)


class FillMissing(TransformerMixin, BaseEstimator):
    """Categories as text with missing (NaN, None, pd.NA) replaced by a level of its own."""

    def __init__(self, fill: str = MISSING_LEVEL):
        self.fill = fill

    def fit(self, X, y=None):
        frame = _frame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, X):
        frame = _frame(X)
        return np.column_stack([[self.fill if pd.isna(v) else str(v) for v in frame[c].astype(object)]
                                for c in frame.columns]).astype(object)

    def get_feature_names_out(self, input_features=None):
        return np.asarray(_input_names(self, input_features), dtype=object)


def _equals(feature: str, category) -> str:
    """One-hot column names as ``field=level`` (module level so fitted pipelines pickle)."""
    return f"{feature}={category}"


def category_encoder(fill: str = MISSING_LEVEL) -> Pipeline:
    """One-hot with missing as its own level (``fill``); unseen levels at prediction encode as all zeros."""
    return Pipeline([("fill", FillMissing(fill)),
                     ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=float,
                                              feature_name_combiner=_equals))])


class TumourBurdenScore(TransformerMixin, BaseEstimator):
    """TBS = sqrt(largest diameter (cm)^2 + number of metastases^2) (Sasaki 2018); NaN if either is missing.

    Input columns: the largest diameter, then the number (``TBS_INPUTS``)."""

    def fit(self, X, y=None):
        frame = _frame(X)
        if frame.shape[1] != 2:
            raise ValueError(f"TumourBurdenScore needs 2 columns {TBS_INPUTS}, got {frame.shape[1]}")
        self.n_features_in_ = 2
        return self

    def transform(self, X):
        values = _float_matrix(_frame(X))
        return np.hypot(values[:, 0], values[:, 1]).reshape(-1, 1)

    def get_feature_names_out(self, input_features=None):
        return np.asarray([TBS_NAME], dtype=object)


# --- assembly --------------------------------------------------------------------------------------------

def block_transformer(fields: Sequence[schema.Field]) -> ColumnTransformer:
    """The transformer of one schema block: its fields routed by kind to the encoders above."""
    names = [f.name for f in fields]
    numeric = [f.name for f in fields if f.kind in ("float", "int") and f.name not in LOG_FIELDS]
    logged = [f.name for f in fields if f.kind in ("float", "int") and f.name in LOG_FIELDS]
    boolean = [f.name for f in fields if f.kind == "bool"]
    ordinal = [f.name for f in fields if f.kind == "category" and f.name in ORDINAL_FIELDS]
    others = [f for f in fields if f.kind == "category" and f.name not in ORDINAL_FIELDS]
    markers = [f.name for f in others if _has_unknown_level(f)]
    categorical = [f.name for f in others if not _has_unknown_level(f)]
    parts = [
        ("numeric", NumericEncoder(), numeric),
        ("log", NumericEncoder(log=True), logged),
        ("boolean", BooleanEncoder(), boolean),
        ("ordinal", OrdinalRankEncoder(), ordinal),
        ("categorical", category_encoder(MISSING_LEVEL), categorical),
        ("marker", category_encoder(UNKNOWN_LEVEL), markers),
    ]
    if all(n in names for n in TBS_INPUTS):
        parts.append(("tumour_burden", Pipeline([("tbs", TumourBurdenScore()),
                                                 ("scale", NumericEncoder(indicator=False))]), list(TBS_INPUTS)))
    return ColumnTransformer([p for p in parts if p[2]], remainder="drop", sparse_threshold=0,
                             verbose_feature_names_out=False)


def build_column_transformer(fields: Sequence[schema.Field]) -> ColumnTransformer:
    """One ``ColumnTransformer`` with one block transformer per schema block present in ``fields``."""
    blocks = []
    for block in schema.PREDICTOR_BLOCKS:
        in_block = [f for f in fields if f.block == block]
        if in_block:
            blocks.append((block, block_transformer(in_block), [f.name for f in in_block]))
    return ColumnTransformer(blocks, remainder="drop", sparse_threshold=0,
                             verbose_feature_names_out=False).set_output(transform="default")


class FeaturePreprocessor(TransformerMixin, BaseEstimator):
    """Canonical cohort rows -> model matrix; the column transformer is assembled at fit from the schema.

    Fitted attributes: ``columns_`` (fields used, schema order), ``dropped_columns_`` ({field: reason}),
    ``column_transformer_`` and ``get_feature_names_out()``.
    """

    def __init__(self, blocks: Sequence[str] = DEFAULT_BLOCKS, postoperative: bool = False,
                 columns_present: Sequence[str] | None = None):
        self.blocks = blocks
        self.postoperative = postoperative
        self.columns_present = columns_present

    def fit(self, X, y=None):
        frame = _frame(X)
        candidates = model_fields(self.blocks, postoperative=self.postoperative,
                                  columns_present=self.columns_present)
        kept, dropped = [], {}
        for f in candidates:
            reason = "absent" if f.name not in frame.columns else _uninformative(f, frame[f.name])
            if reason:
                dropped[f.name] = reason
            else:
                kept.append(f)
        if not kept:
            raise ValueError(f"no usable predictor among {[f.name for f in candidates]} "
                             f"(blocks {list(self.blocks)}): {dropped}")
        self.columns_ = [f.name for f in kept]
        self.dropped_columns_ = dropped
        self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        self.n_features_in_ = len(self.columns_)
        self.column_transformer_ = build_column_transformer(kept).fit(self._select(frame))
        return self

    def _select(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.reindex(columns=self.columns_)  # a field the input lacks is missing for every row

    def transform(self, X):
        check_is_fitted(self, "column_transformer_")
        return np.asarray(self.column_transformer_.transform(self._select(_frame(X))), dtype=float)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "column_transformer_")
        return np.asarray(self.column_transformer_.get_feature_names_out(), dtype=object)


def make_preprocessor(blocks: Sequence[str] = DEFAULT_BLOCKS, postoperative: bool = False,
                      columns_present: Sequence[str] | None = None) -> FeaturePreprocessor:
    """The feature pipeline for these blocks; ``postoperative=True`` adds the operative block and the
    postoperative fields (``viable_tumour_percent``)."""
    return FeaturePreprocessor(blocks=tuple(blocks), postoperative=postoperative,
                               columns_present=None if columns_present is None else tuple(columns_present))
