"""Per-patient contributions: what drives this patient's risk, per schema field, in words a clinician reads.

Methods, chosen by model family:
- linear Cox models (coxph, coxnet, cox_prior, literature_cox, fong_plus): exact contributions
  beta_j * (z_j - mean_j) on the log-hazard scale (a field's literature-coded column and its standard columns
  are summed; for cox_prior the method says how many patients updated the literature prior);
- tree ensembles (xgb_cox, xgb_aft, gbsa, rsf): exact TreeSHAP (the path-dependent algorithm, which is also
  xgboost's ``pred_contribs``) computed by shap on the trees as ``crlm.tree_kernel`` reads them: on the margin
  (log-hazard; for AFT the log-time margin with its sign flipped, so positive still means "raises the risk")
  and, for the random survival forest, on its risk score (the summed cumulative hazard, expected events);
- other models (the ensemble): field-wise background substitution on a fixed background of training patients
  (interventional occlusion): a field's contribution is the patient's risk minus the mean risk when that field
  takes the background patients' values instead.
Contributions of the model-matrix columns of one field (one-hot levels, missing indicators) are summed, so
each answer speaks of fields ("CEA"), not of encoded columns. The tumour burden score is its own entry.
"""

from __future__ import annotations

__all__ = ["DERIVED_LABELS", "EVENT_WORDS", "Explainer", "describe", "field_of", "value_text"]

import functools

import numpy as np
import pandas as pd
import shap

from crlm.answer import Contribution, direction_of
from crlm.models import final_estimator, linear_coefficients
from crlm.models.introspect import LINEAR_COX
from crlm.models.prior_cox import CoxPrior, LiteratureCox
from crlm.models.trees import GBSA, RSF
from crlm.models.xgb import XGBAFT, XGBCox
from crlm.schema import FIELDS_BY_NAME
from crlm.scores import score_total, tumour_burden_score
from crlm.tree_kernel import ensemble_trees

EVENT_WORDS = {"os": "death", "rfs": "recurrence or death", "liver_rfs": "liver recurrence or death"}
DERIVED_LABELS = {"tumour_burden_score": "Tumour burden score", "fong_score": "Fong score (computed)"}


def field_of(feature: str) -> str:
    """The schema field a model-matrix column comes from ('kras_status=mutant' -> 'kras_status')."""
    for sep in ("=", " (", " missing"):
        feature = feature.split(sep)[0]
    return feature.strip()


class Explainer:
    def __init__(self, model, Z_train: pd.DataFrame, endpoint: str, background_size: int = 20, seed: int = 0):
        self.estimator = final_estimator(model)
        self.features = list(Z_train.columns)
        self.fields = [field_of(f) for f in self.features]
        self.field_names = list(dict.fromkeys(self.fields))
        self.endpoint = endpoint
        if isinstance(self.estimator, LINEAR_COX):
            self.method = "exact linear contributions (log hazard ratio vs the training mean)"
            self.coef = linear_coefficients(model).reindex(self.features).to_numpy(dtype=float)
            self.mean = Z_train.to_numpy(dtype=float).mean(axis=0)
            if isinstance(self.estimator, CoxPrior):
                self.method += (f"; literature prior ({len(self.estimator.literature_features_)} published "
                                f"effects), updated by {self.estimator.n_patients_} patients "
                                f"({self.estimator.n_events_} events)")
            elif isinstance(self.estimator, LiteratureCox):
                self.method += (f"; published effects, only the baseline estimated from "
                                f"{self.estimator.n_patients_} patients")
        elif isinstance(self.estimator, RSF | GBSA | XGBCox | XGBAFT):
            scale = ("forest's risk score (summed cumulative hazard)" if isinstance(self.estimator, RSF)
                     else "log-time margin, sign flipped" if isinstance(self.estimator, XGBAFT) else "log-hazard")
            self.method = f"exact TreeSHAP (path-dependent, as xgboost's pred_contribs) on the {scale}"
        else:
            self.method = (f"field-wise background substitution on {background_size} fixed training patients "
                           "(risk minus mean risk with the field replaced)")
            rng = np.random.default_rng(seed)
            take = rng.choice(len(Z_train), size=min(background_size, len(Z_train)), replace=False)
            self.background = Z_train.iloc[np.sort(take)].reset_index(drop=True)

    @property
    def reads_arrays(self) -> bool:
        """Whether ``feature_contributions`` takes the model matrix as an array (columns in ``features``'
        order): the exact methods do, occlusion needs the frame."""
        return hasattr(self, "coef") or isinstance(self.estimator, RSF | GBSA | XGBCox | XGBAFT)

    def feature_contributions(self, Z: pd.DataFrame | np.ndarray) -> np.ndarray:
        """(n, n_fields) contributions on the risk scale (positive = raises the risk); ``Z`` a frame, or an
        array with the columns of ``features`` (the exact methods)."""
        if not self.reads_arrays:
            return self._occlusion(Z)  # its rows may hold categories (the ensemble reads canonical rows)
        if isinstance(Z, np.ndarray):
            Zv = np.asarray(Z, dtype=float)
        else:
            Zv = (Z if list(Z.columns) == self.features else Z[self.features]).to_numpy(dtype=float)
        if hasattr(self, "coef"):
            per_feature = (Zv - self.mean) * self.coef
        elif isinstance(self.estimator, RSF | GBSA | XGBCox | XGBAFT):
            per_feature = self.tree_shap.shap_values(Zv, check_additivity=False)
            if isinstance(self.estimator, XGBAFT):
                per_feature = -per_feature
        else:
            return self._occlusion(Z)
        return np.einsum("nf,fg->ng", per_feature, self.field_matrix)  # batch-independent rounding (no BLAS)

    @functools.cached_property
    def tree_shap(self) -> shap.TreeExplainer:
        """shap's TreeSHAP on the refit's trees, handed over in shap's dictionary format (shap does not accept
        scikit-survival's ensembles, shap #3308); built on first use, not stored in bundles."""
        trees, scale = ensemble_trees(self.estimator)
        # shap rewrites the internal nodes' values in place: it gets copies
        model = {"trees": [{k: np.array(v, copy=True) for k, v in t.shap_dict(s).items()}
                           for t, s in zip(trees, scale, strict=True)], "input_dtype": np.float32}
        return shap.TreeExplainer(model, feature_perturbation="tree_path_dependent", model_output="raw")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "tree_shap"}

    @functools.cached_property
    def field_matrix(self) -> np.ndarray:
        """(n_features, n_fields) 0/1: which field each model-matrix column belongs to (columns sum per field)."""
        return np.array([[float(f == name) for name in self.field_names] for f in self.fields])

    def _occlusion(self, Z: pd.DataFrame, max_rows: int = 50_000) -> np.ndarray:
        """Field substitution for many patients in few ``predict`` calls: each patient is repeated once per
        (field, background patient) and the field's columns take the background values (chunks of at most
        ``max_rows`` rows; one call per patient made the training's importance table take minutes)."""
        nb, nf = len(self.background), len(self.field_names)
        columns = [[f for f, fld in zip(self.features, self.fields, strict=True) if fld == name]
                   for name in self.field_names]
        rows = Z[self.features].reset_index(drop=True)
        base = np.asarray(self.estimator.predict(rows), dtype=float)
        per_patient = nb * nf
        chunk = max(1, max_rows // per_patient)
        out = np.zeros((len(rows), nf))
        for start in range(0, len(rows), chunk):
            part = rows.iloc[start:start + chunk]
            m = len(part)
            stacked = part.loc[part.index.repeat(per_patient)].reset_index(drop=True)
            for k, cols in enumerate(columns):
                idx = (np.arange(m)[:, None] * per_patient + k * nb + np.arange(nb)[None, :]).ravel()
                stacked.loc[idx, cols] = np.tile(self.background[cols].to_numpy(), (m, 1))
            risks = np.asarray(self.estimator.predict(stacked), dtype=float).reshape(m, nf, nb)
            out[start:start + m] = base[start:start + m, None] - risks.mean(axis=2)
        return out

    def explain(self, Z: pd.DataFrame, rows: list[dict], top: int = 6) -> list[list[Contribution]]:
        """Top contributors per patient, largest absolute contribution first (``rows``: the canonical records)."""
        if top <= 0:
            return [[] for _ in rows]
        contributions = self.feature_contributions(Z)
        # the top fields of every patient at once (each row sorted by the same algorithm as one patient alone)
        order = np.argsort(-np.abs(contributions), axis=1)[:, :top]
        sizes = np.take_along_axis(contributions, order, axis=1)
        words = [_FieldWords.of(name) for name in self.field_names]
        answers: list[list[Contribution]] = []
        for row, ks, row_sizes in zip(rows, order.tolist(), sizes.tolist(), strict=True):
            answers.append([words[k].describe(row.get(words[k].name), size, self.endpoint, row)
                            for k, size in zip(ks, row_sizes, strict=True) if abs(size) >= 1e-9])
        return answers


def value_text(name: str, value, row: dict | None = None) -> str:
    """How ``value`` of field ``name`` reads in an explanation (a derived score's from its patient's ``row``)."""
    return _FieldWords.of(name).read(value, row)[0]


class _FieldWords:
    """How one field reads in an explanation: its label, and a value as text and as JSON. The field's label, kind
    and unit are looked up once per field (an explanation of 1,000 patients describes ~12,000 contributions)."""

    def __init__(self, name: str):
        f = FIELDS_BY_NAME.get(name)
        self.name, self.kind = name, f.kind if f is not None else None
        self.label = f.label if f else DERIVED_LABELS.get(name, name.replace("_", " "))
        self.unit = "" if f is None else {"count": "", "years": "years", "points": "points"}.get(f.unit or "", f.unit or "")

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def of(name: str) -> _FieldWords:
        return _FieldWords(name)

    def read(self, value, row: dict | None) -> tuple[str, bool | float | str | None]:
        """(text, JSON value) of ``value``; the derived scores recomputed from ``row``; unknown: JSON null."""
        if self.name == "tumour_burden_score" and row is not None:
            size, n = row.get("largest_metastasis_cm"), row.get("n_liver_metastases")
            if pd.notna(size) and pd.notna(n):
                tbs = float(tumour_burden_score(size, n))
                return f"{tbs:.1f}", tbs
            return "unknown (imputed)", None
        if self.name == "fong_score" and row is not None:
            total = score_total("fong", [row])[0]
            return ("unknown (imputed)", None) if np.isnan(total) else (f"{total:g} points", float(f"{total:g}"))
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            return "unknown (imputed)", None
        if self.name in ("tumour_burden_score", "fong_score"):  # a derived score given without its row
            return str(value), float(value)
        if self.kind == "bool":
            return ("yes" if bool(value) else "no"), bool(value)
        if self.kind in ("float", "int"):
            return f"{float(value):g} {self.unit}".strip(), float(value)
        text = str(value) if self.kind is None else str(value).replace("_", " ")
        return text, None if text.startswith("unknown (") else str(value)  # a category reading "unknown (...)"

    def describe(self, value, size: float, endpoint: str, row: dict | None) -> Contribution:
        """The contribution ``size`` (risk scale) of this field at ``value`` for ``endpoint``, in words."""
        text, json_value = self.read(value, row)
        direction = direction_of(size)
        event = EVENT_WORDS.get(endpoint, "the event")
        return {"field": self.name, "label": self.label, "value": json_value, "value_text": text,
                "direction": direction, "size": size, "sentence": f"{self.label} {text} {direction} the risk of {event}"}


def describe(name: str, value, size: float, endpoint: str, row: dict | None = None) -> Contribution:
    """One contribution in words: field, label, the value as JSON and as text, direction, size, a sentence."""
    return _FieldWords.of(name).describe(value, size, endpoint, row)
