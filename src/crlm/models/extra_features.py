"""Model-matrix columns beyond the schema-driven features, for the models that learn from small cohorts:

- ``LiteratureFeatures``: the factors of ``crlm.literature_prior`` in the coding of their sources (``cox_prior``,
  ``literature_cox``): 1/0 per factor, an unknown value imputed with the training prevalence (an average
  effect; the standard features carry the missing indicators and the Predictor warns about the field).
- ``ScoreFeature``: a reference score's total in points (``fong_plus``), recorded or computed; a missing total
  is imputed with the training median plus an indicator.
- ``AugmentedPreprocessor``: the standard ``FeaturePreprocessor`` columns followed by those extra columns, with
  the ``columns_`` (fields used) the Predictor reads for its warnings and training ranges.

All read canonical rows (a DataFrame or ``CanonicalColumns``) and encode with numpy.
"""

from __future__ import annotations

__all__ = ["AUTO", "AugmentedPreprocessor", "LiteratureFeatures", "ScoreFeature", "canonical_inputs"]

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from crlm.cohort.base import canonical_columns
from crlm.features import FeaturePreprocessor, model_columns
from crlm.literature_prior import PRIOR, PRIOR_BY_NAME, RULE_INPUTS, PriorFactor
from crlm.schema import DEFAULT_BLOCKS, FIELDS_BY_NAME
from crlm.scores import score_total

AUTO = "auto"  # fong_plus: the recorded Fong score when the rows carry one, else Fong computed from its factors


def canonical_inputs(X, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Canonical columns of ``names`` (absent ones all missing: NaN floats or NaN objects)."""
    columns = canonical_columns(X)
    missing = np.full(columns.n_rows, np.nan)
    return {c: columns[c] if c in columns else
            (missing if FIELDS_BY_NAME[c].kind in ("float", "int", "bool") else missing.astype(object))
            for c in names}


class _Columns(TransformerMixin, BaseEstimator):
    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "feature_names_out_")
        return np.asarray(self.feature_names_out_, dtype=object)


class LiteratureFeatures(_Columns):
    """The prior's factors whose fields the model may use, coded as in their sources (1/0 per factor).

    Parameters
    ----------
    blocks : sequence of str
        Feature blocks the model may use.
    postoperative : bool
        Whether postoperative factors may be used.
    columns_present : sequence of str or None
        The columns of the training data (None: every field).

    Attributes
    ----------
    factors_ : list of str
        Names of the kept factors (the rules are looked up, so the fitted encoder pickles);
        ``prevalence_`` the imputation values; ``dropped_factors_`` ({name: reason}) the factors never known,
        or constant, in the training rows (they carry no information).
    """

    def __init__(self, blocks: Sequence[str] = DEFAULT_BLOCKS, postoperative: bool = False,
                 columns_present: Sequence[str] | None = None):
        self.blocks = blocks
        self.postoperative = postoperative
        self.columns_present = columns_present

    def _candidates(self) -> list[PriorFactor]:
        allowed = set(model_columns(self.blocks, postoperative=self.postoperative))
        present = None if self.columns_present is None else set(self.columns_present)
        return [p for p in PRIOR if (self.postoperative or not p.postoperative) and p.field in allowed
                and (present is None or any(f in present for f in p.inputs))]

    @staticmethod
    def _values(factors: list[PriorFactor], X) -> np.ndarray:
        d = canonical_inputs(X, RULE_INPUTS)
        n = len(next(iter(d.values())))
        if not factors:
            return np.empty((n, 0))
        return np.column_stack([np.asarray(p.rule(d), dtype=float) for p in factors])

    def fit(self, X, y=None):
        candidates = self._candidates()
        values = self._values(candidates, X)
        self.factors_, self.dropped_factors_, prevalence = [], {}, []
        for j, p in enumerate(candidates):
            known = values[~np.isnan(values[:, j]), j]
            if len(known) == 0:
                self.dropped_factors_[p.name] = "never known"
            elif np.all(known == known[0]):
                self.dropped_factors_[p.name] = f"constant {known[0]:g}"
            else:
                self.factors_.append(p.name)
                prevalence.append(float(known.mean()))
        self.prevalence_ = np.asarray(prevalence, dtype=float)
        kept = [PRIOR_BY_NAME[name] for name in self.factors_]
        self.columns_ = list(dict.fromkeys(f for p in kept for f in p.inputs))
        self.feature_names_out_ = [p.feature for p in kept]
        return self

    def transform(self, X):
        check_is_fitted(self, "factors_")
        values = self._values([PRIOR_BY_NAME[name] for name in self.factors_], X)
        return np.where(np.isnan(values), self.prevalence_[None, :], values)


class ScoreFeature(_Columns):
    """A reference score's total in points (not scaled, so its coefficient is a log-HR per point).

    Parameters
    ----------
    score : str
        ``"fong_recorded"``, ``"fong"`` (or another ``crlm.scores`` name) or ``"auto"`` (recorded if any row
        of the training data has it, else computed).

    Attributes
    ----------
    score_ : str
        The score used; ``median_`` the training median that imputes a missing total.
    """

    def __init__(self, score: str = AUTO):
        self.score = score

    def _resolve(self, X) -> str:
        if self.score != AUTO:
            return self.score
        recorded = canonical_inputs(X, ["fong_score_recorded"])["fong_score_recorded"]
        return "fong_recorded" if np.isfinite(recorded).any() else "fong"

    def fit(self, X, y=None):
        self.score_ = self._resolve(X)
        total = score_total(self.score_, X)
        if not np.isfinite(total).any():
            raise ValueError(f"score {self.score_!r} cannot be computed for any training row")
        self.median_ = float(np.nanmedian(total))
        self.indicator_ = bool(np.isnan(total).any())
        name = "fong_score_recorded" if self.score_ == "fong_recorded" else f"{self.score_}_score"
        self.columns_ = ["fong_score_recorded"] if self.score_ == "fong_recorded" else []
        self.feature_names_out_ = [f"{name} (points)"] + ([f"{name} (points) missing"] if self.indicator_ else [])
        return self

    def transform(self, X):
        check_is_fitted(self, "score_")
        total = score_total(self.score_, X)
        missing = np.isnan(total)
        out = [np.where(missing, self.median_, total)]
        if self.indicator_:
            out.append(missing.astype(float))
        return np.column_stack(out)


class AugmentedPreprocessor(_Columns):
    """The standard feature columns followed by extra columns (literature factors or a score).

    Parameters
    ----------
    features : FeaturePreprocessor or None
        The standard preprocessor (None: the extra columns only).
    extra : LiteratureFeatures, ScoreFeature or None
        The extra columns.
    """

    def __init__(self, features: FeaturePreprocessor | None = None, extra: _Columns | None = None):
        self.features = features
        self.extra = extra

    def fit(self, X, y=None):
        self.parts_ = [clone(p).fit(X) for p in (self.features, self.extra) if p is not None]
        if not self.parts_:
            raise ValueError("AugmentedPreprocessor needs features or extra columns")
        self.columns_ = list(dict.fromkeys(c for p in self.parts_ for c in p.columns_))
        self.feature_names_out_ = [str(n) for p in self.parts_ for n in p.get_feature_names_out()]
        if not self.feature_names_out_:
            dropped = {k: v for p in self.parts_ for k, v in getattr(p, "dropped_factors_", {}).items()}
            raise ValueError("no usable predictor column: none of the published factors (crlm.literature_prior) is "
                             f"recorded and informative in the training rows (dropped: {dropped or 'none present'})")
        return self

    def transform(self, X):
        return self.transform_array(X)

    def transform_array(self, X) -> np.ndarray:
        """``transform`` as a float array whatever ``set_output`` says (``FeaturePreprocessor.transform_array``)."""
        check_is_fitted(self, "parts_")
        X = canonical_columns(X)  # once for every part (CanonicalColumns pass unchanged)
        return np.hstack([np.asarray(p.transform(X), dtype=float) for p in self.parts_])
