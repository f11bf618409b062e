"""The feature pipeline: canonical cohort rows -> the numeric matrix every learned model sees.

Built from the schema's field catalogue (``crlm.schema.predictor_fields``), never from a hand-kept column list:
per schema block (clinical, genomic, response, operative), one encoder per kind of field. Encoders learn their
parameters at fit and encode with plain numpy, so the same code serves a 50,000-patient training matrix and
an online request of one patient (where a ``ColumnTransformer`` spent ~12 ms in per-call checks).

Encodings (every output column has a readable name, see ``get_feature_names_out``):

- numbers: median imputation with a missing indicator (learned by ``SimpleImputer(add_indicator=True)``), then
  standard scaling (``StandardScaler``'s mean and scale) of the values; the indicators stay 0/1. ``cea_ng_ml``
  and ``ca19_9_u_ml`` are log1p-transformed first (``"cea_ng_ml (log)"``). Indicators exist only for fields
  with missing values in the training data.
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

__all__ = [
    "block_encoders", "BooleanEncoder", "CategoryEncoder", "DEFAULT_BLOCKS", "FeaturePreprocessor",
    "LOG_FIELDS", "make_preprocessor", "MISSING_LEVEL", "model_columns", "model_fields", "NumericEncoder",
    "ORDINAL_FIELDS", "ordinal_rank", "OrdinalRankEncoder", "present_columns", "TBS_INPUTS", "TBS_NAME",
    "tumour_burden_score", "TumourBurdenScore", "UNKNOWN_LEVEL",
]

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from crlm import schema
from crlm.cohort.base import CanonicalColumns, canonical_columns
from crlm.schema import DEFAULT_BLOCKS
from crlm.scores import tumour_burden_score

LOG_FIELDS = ("cea_ng_ml", "ca19_9_u_ml")  # right-skewed serum markers
ORDINAL_FIELDS = ("primary_t_stage", "primary_grade", "recist_response")  # schema category order is the order
TBS_INPUTS = ("largest_metastasis_cm", "n_liver_metastases")
TBS_NAME = "tumour_burden_score"
MISSING_LEVEL = "missing"
UNKNOWN_LEVEL = "unknown"


# --- the schema side -------------------------------------------------------------------------------------

def model_fields(blocks: Sequence[str] = DEFAULT_BLOCKS, *, postoperative: bool = False,
                 columns_present: Iterable[str] | None = None,
                 extra_fields: Sequence[schema.Field] = ()) -> list[schema.Field]:
    """Candidate predictor fields, in schema order: ``predictor_fields`` of the blocks (preoperative fields
    only; ``postoperative`` adds the postoperative fields and the operative block), then a centre's own
    ``extra_fields`` under the same rules, restricted to ``columns_present`` when given."""
    blocks = tuple(blocks) + (("operative",) if postoperative and "operative" not in blocks else ())
    fields = schema.predictor_fields(blocks, postoperative=postoperative)
    fields += [f for f in extra_fields if f.block in blocks and (postoperative or f.timing == "preoperative")]
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


# --- value conversion (to the canonical columns of crlm.cohort.base) --------------------------------------

def _frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    X = np.asarray(X, dtype=object)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])


def _columns(frame: pd.DataFrame) -> list[np.ndarray]:
    """The frame's columns in the canonical numpy form (``canonical_columns``), in the frame's order."""
    columns = canonical_columns(frame)
    return [columns[c] for c in frame.columns]


def _as_float(values: np.ndarray) -> np.ndarray:
    """Numbers of a canonical column (already float); other columns' text is read as numbers, else NaN."""
    if values.dtype.kind in "fiub":
        return values.astype(float, copy=False)
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


# --- per-kind encoders ----------------------------------------------------------------------------------
# Each learns its parameters at fit (with scikit-learn's imputer and scaler where they apply) and encodes
# with plain numpy in ``encode``: FeaturePreprocessor calls that directly on column arrays, so an online
# request of one patient costs microseconds per encoder instead of pandas/scikit-learn per-call overhead.

class _Encoder(TransformerMixin, BaseEstimator):
    """Fit/transform on frames; ``encode`` maps a list of canonical column arrays to a matrix."""

    def fit(self, X, y=None):
        frame = _frame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        self._fit_columns(_columns(frame))
        self.feature_names_out_ = self._output_names(list(self.feature_names_in_))
        return self

    def transform(self, X):
        check_is_fitted(self, "feature_names_out_")
        frame = _frame(X)
        return self.encode(_columns(frame))

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "feature_names_out_")
        return np.asarray(self.feature_names_out_, dtype=object)

    def _fit_columns(self, columns: list[np.ndarray]) -> None:
        raise NotImplementedError

    def _output_names(self, names: list[str]) -> list[str]:
        raise NotImplementedError

    def encode(self, columns: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class _ImputeScale(_Encoder):
    """Median imputation with missing indicators, then scaling of the values (the indicators stay 0/1)."""

    indicator: bool = True

    def _values(self, columns: list[np.ndarray]) -> np.ndarray:
        return np.column_stack([_as_float(c) for c in columns])

    def _labels(self, names: list[str]) -> list[str]:
        return names

    def _fit_columns(self, columns):
        values = self._values(columns)
        # numpy inside whatever the global sklearn output config says; all-missing columns are imputed with 0
        imputer = SimpleImputer(strategy="median", add_indicator=self.indicator,
                                keep_empty_features=True).set_output(transform="default").fit(values)
        self.medians_ = imputer.statistics_
        self.indicator_features_ = (np.asarray(imputer.indicator_.features_, dtype=int)
                                    if imputer.indicator_ is not None else np.empty(0, dtype=int))
        scaler = StandardScaler().fit(np.where(np.isnan(values), self.medians_, values))
        self.mean_, self.scale_ = scaler.mean_, scaler.scale_

    def _output_names(self, names):
        return self._labels(names) + [f"{names[i]} missing" for i in self.indicator_features_]

    def encode(self, columns):
        values = self._values(columns)
        missing = np.isnan(values)
        scaled = (np.where(missing, self.medians_, values) - self.mean_) / self.scale_
        return np.hstack([scaled, missing[:, self.indicator_features_].astype(float)])


class NumericEncoder(_ImputeScale):
    """Numbers: optional log1p (negative values clipped to 0), median imputation + indicators, scaling."""

    def __init__(self, log: bool = False, indicator: bool = True):
        self.log = log
        self.indicator = indicator

    def _values(self, columns):
        values = super()._values(columns)
        return np.log1p(np.clip(values, 0, None)) if self.log else values

    def _labels(self, names):
        return [f"{n} (log)" for n in names] if self.log else names


class OrdinalRankEncoder(_ImputeScale):
    """Ordered categories -> rank in the schema's category order (unknown values are missing), then as numbers."""

    def __init__(self, indicator: bool = True):
        self.indicator = indicator

    def _values(self, columns):
        return np.column_stack([ordinal_rank(str(name), col)
                                for name, col in zip(self.feature_names_in_, columns, strict=True)])

    def _labels(self, names):
        return [f"{n} (ordinal)" for n in names]


def ordinal_rank(name: str, values: np.ndarray) -> np.ndarray:
    """Rank of each value in the schema's category order of field ``name`` (NaN for missing or unknown values)."""
    order = {c: float(i) for i, c in enumerate(schema.field(name).categories or ())}
    return np.array([order.get(v, np.nan) if isinstance(v, str) else np.nan for v in values], dtype=float)


class TumourBurdenScore(_ImputeScale):
    """TBS = sqrt(largest diameter (cm)^2 + number of metastases^2) (Sasaki 2018), NaN if either is missing;
    then imputed and scaled like a number, without an indicator (the inputs' indicators say it is missing).

    Input columns: the largest diameter, then the number (``TBS_INPUTS``); ``tumour_burden_score`` is the raw
    value."""

    indicator = False

    def _values(self, columns):
        if len(columns) != 2:
            raise ValueError(f"TumourBurdenScore needs 2 columns {TBS_INPUTS}, got {len(columns)}")
        return tumour_burden_score(_as_float(columns[0]), _as_float(columns[1])).reshape(-1, 1)

    def _labels(self, names):
        return [TBS_NAME]


class BooleanEncoder(_Encoder):
    """Yes/no -> 1.0/0.0; missing -> 0.0 plus a ``"<field> missing"`` indicator (if missing at fit); with
    ``indicator=False`` (plain imputation) missing -> the training share of yes, without an indicator."""

    def __init__(self, indicator: bool = True):
        self.indicator = indicator

    def _fit_columns(self, columns):
        values = np.column_stack([_as_float(c) for c in columns])
        self.fill_ = np.nan_to_num(np.nanmean(np.where(np.isnan(values), np.nan, values != 0), axis=0)) \
            if not self.indicator and len(values) else np.zeros(values.shape[1])
        self.indicator_features_ = (np.flatnonzero(np.isnan(values).any(axis=0)) if self.indicator
                                    else np.empty(0, dtype=int))

    def _output_names(self, names):
        return names + [f"{names[i]} missing" for i in self.indicator_features_]

    def encode(self, columns):
        values = np.column_stack([_as_float(c) for c in columns])
        missing = np.isnan(values)
        return np.hstack([np.where(missing, self.fill_, values != 0).astype(float),
                          missing[:, self.indicator_features_].astype(float)])


class CategoryEncoder(_Encoder):
    """One-hot (``field=level``) with missing values as a level of their own (``fill``); levels are learned
    at fit in sorted order, and an unseen level at prediction encodes as all zeros. With ``impute=True``
    (plain imputation) a missing (or ``fill``) value is the training cohort's most frequent known level
    instead: "not recorded" then cannot become a risk factor of its own."""

    def __init__(self, fill: str = MISSING_LEVEL, impute: bool = False):
        self.fill = fill
        self.impute = impute

    def _filled(self, col: np.ndarray, modes=None) -> np.ndarray:
        col = np.asarray(col, dtype=object)
        filled = np.where(pd.isna(col), self.fill, col).astype(str)
        if modes is not None:
            filled = np.where(filled == self.fill, modes, filled)
        return filled

    def _fit_columns(self, columns):
        self.modes_ = None
        if self.impute:
            modes = []
            for c in columns:
                known = pd.Series(self._filled(c))
                known = known[known != self.fill]
                modes.append(known.mode().iloc[0] if len(known) else self.fill)
            self.modes_ = modes
        self.categories_ = [np.unique(self._filled(c, None if self.modes_ is None else self.modes_[i]))
                            for i, c in enumerate(columns)]

    def _output_names(self, names):
        return [f"{name}={level}" for name, levels in zip(names, self.categories_, strict=True) for level in levels]

    def encode(self, columns):
        modes = getattr(self, "modes_", None) or [None] * len(columns)
        return np.hstack([(self._filled(col, mode)[:, None] == levels[None, :]).astype(float)
                          for col, levels, mode in zip(columns, self.categories_, modes, strict=True)])


# --- assembly --------------------------------------------------------------------------------------------

def block_encoders(fields: Sequence[schema.Field], plain_imputation: Iterable[str] = ()
                   ) -> list[tuple[str, _Encoder, list[str]]]:
    """The unfitted encoders of one schema block: (kind, encoder, input fields), its fields routed by kind.

    Fields named in ``plain_imputation`` are imputed without a missing indicator or a missing/unknown level
    (their own encoders, suffix ``/imputed``); the others keep missing-as-information."""
    plain = set(plain_imputation)
    informative = [f for f in fields if f.name not in plain]
    parts = _encoders(informative, impute=False)
    parts += [(f"{kind}/imputed", encoder, inputs)
              for kind, encoder, inputs in _encoders([f for f in fields if f.name in plain], impute=True)]
    # TBS needs both inputs, wherever they are routed
    names = {f.name for f in fields}
    tbs = [p for p in parts if p[0].startswith("tumour_burden")]
    parts = [p for p in parts if not p[0].startswith("tumour_burden")]
    if names >= set(TBS_INPUTS) and not tbs:
        tbs = [("tumour_burden", TumourBurdenScore(), list(TBS_INPUTS))]
    return parts + tbs[:1]


def _encoders(fields: Sequence[schema.Field], impute: bool) -> list[tuple[str, _Encoder, list[str]]]:
    indicator = not impute
    numeric = [f.name for f in fields if f.kind in ("float", "int") and f.name not in LOG_FIELDS]
    logged = [f.name for f in fields if f.kind in ("float", "int") and f.name in LOG_FIELDS]
    boolean = [f.name for f in fields if f.kind == "bool"]
    ordinal = [f.name for f in fields if f.kind == "category" and f.name in ORDINAL_FIELDS]
    others = [f for f in fields if f.kind == "category" and f.name not in ORDINAL_FIELDS]
    markers = [f.name for f in others if _has_unknown_level(f)]
    categorical = [f.name for f in others if not _has_unknown_level(f)]
    names = {f.name for f in fields}
    parts = [
        ("numeric", NumericEncoder(indicator=indicator), numeric),
        ("log", NumericEncoder(log=True, indicator=indicator), logged),
        ("boolean", BooleanEncoder(indicator=indicator), boolean),
        ("ordinal", OrdinalRankEncoder(indicator=indicator), ordinal),
        ("categorical", CategoryEncoder(MISSING_LEVEL, impute=impute), categorical),
        ("marker", CategoryEncoder(UNKNOWN_LEVEL, impute=impute), markers),
        ("tumour_burden", TumourBurdenScore(), list(TBS_INPUTS) if names >= set(TBS_INPUTS) else []),
    ]
    return [p for p in parts if p[2]]


class FeaturePreprocessor(TransformerMixin, BaseEstimator):
    """Canonical cohort rows -> model matrix; the encoders are assembled at fit from the schema.

    Fitted attributes: ``columns_`` (fields used, schema order), ``dropped_columns_`` ({field: reason}),
    ``encoders_`` ([(block/kind, fitted encoder, input fields)], in output order) and
    ``get_feature_names_out()``.
    """

    def __init__(self, blocks: Sequence[str] = DEFAULT_BLOCKS, postoperative: bool = False,
                 columns_present: Sequence[str] | None = None, extra_fields: Sequence[schema.Field] = (),
                 plain_imputation: Sequence[str] = ()):
        self.blocks = blocks
        self.postoperative = postoperative
        self.columns_present = columns_present
        self.extra_fields = extra_fields
        self.plain_imputation = plain_imputation

    def fit(self, X, y=None):
        frame = _frame(X)
        candidates = model_fields(self.blocks, postoperative=self.postoperative,
                                  columns_present=self.columns_present, extra_fields=self.extra_fields)
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
        self.encoders_ = []
        for block in schema.PREDICTOR_BLOCKS:
            for kind, encoder, inputs in block_encoders([f for f in kept if f.block == block],
                                                        self.plain_imputation):
                self.encoders_.append((f"{block}/{kind}", encoder.fit(frame[inputs]), inputs))
        self.feature_names_out_ = [n for _, encoder, _ in self.encoders_ for n in encoder.feature_names_out_]
        return self

    def transform(self, X):
        """The model matrix of canonical rows: a DataFrame or ``CanonicalColumns``; other frames are
        canonicalised first (a DataFrame under ``set_output(transform="pandas")``)."""
        return self.transform_array(X)

    def transform_array(self, X) -> np.ndarray:
        """``transform`` as a float array whatever ``set_output`` says (the prediction path reads numbers;
        wrapping a one-patient matrix in a DataFrame cost more than the model)."""
        check_is_fitted(self, "encoders_")
        columns = canonical_columns(X if isinstance(X, CanonicalColumns) else _frame(X))
        missing = np.full(columns.n_rows, np.nan)  # a field the input lacks is missing for every row
        return np.hstack([encoder.encode([columns.get(c, missing) for c in inputs])
                          for _, encoder, inputs in self.encoders_])

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "feature_names_out_")
        return np.asarray(self.feature_names_out_, dtype=object)


def make_preprocessor(blocks: Sequence[str] = DEFAULT_BLOCKS, postoperative: bool = False,
                      columns_present: Sequence[str] | None = None, extra_fields: Sequence[schema.Field] = (),
                      plain_imputation: Sequence[str] = ()) -> FeaturePreprocessor:
    """The feature pipeline for these blocks; ``postoperative=True`` adds the operative block and the
    postoperative fields (``viable_tumour_percent``); ``extra_fields``: a centre's own predictors;
    ``plain_imputation``: fields imputed without missing-as-information."""
    return FeaturePreprocessor(blocks=tuple(blocks), postoperative=postoperative,
                               columns_present=None if columns_present is None else tuple(columns_present),
                               extra_fields=tuple(extra_fields), plain_imputation=tuple(plain_imputation))
