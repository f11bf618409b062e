"""The feature pipeline: schema-derived columns, encodings, readable names, fit-time column decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from crlm import schema
from crlm.cohort.base import to_canonical
from crlm.features import (
    DEFAULT_BLOCKS,
    TBS_NAME,
    FeaturePreprocessor,
    TumourBurdenScore,
    make_preprocessor,
    model_columns,
    tumour_burden_score,
)


def cohort(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Canonical rows with every kind of field, missing values and the operative/postoperative fields."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "patient_id": [f"p{i}" for i in range(n)],
        "age_years": rng.normal(62, 10, n).round(),
        "sex": rng.choice(["male", "female"], n).astype(object),
        "primary_t_stage": rng.choice(["T1", "T2", "T3", "T4"], n),
        "primary_grade": rng.choice(["well", "moderate", "poor"], n),
        "disease_free_interval_months": np.where(rng.random(n) < 0.5, 0, rng.exponential(15, n)).round(),
        "n_liver_metastases": rng.poisson(1.5, n) + 1.0,
        "largest_metastasis_cm": np.round(rng.gamma(2, 1.8, n), 1),
        "cea_ng_ml": np.round(np.exp(rng.normal(2.5, 1.5, n)), 1),
        "ca19_9_u_ml": np.nan,  # never measured in this cohort
        "extrahepatic_disease": rng.random(n) < 0.2,
        "kras_status": rng.choice(["mutant", "wild_type", "unknown"], n),
        "nras_status": rng.choice(["mutant", "wild_type"], n, p=[0.05, 0.95]),
        "braf_v600e_status": np.nan,  # absent marker
        "chemo_regimen": rng.choice(["none", "folfox", "folfiri"], n),
        "recist_response": rng.choice(["CR", "PR", "SD", "PD"], n),
        "viable_tumour_percent": rng.uniform(0, 100, n),
        "resection_margin": rng.choice(["R0", "R1"], n),
        "major_hepatectomy": rng.random(n) < 0.4,
        "os_months": rng.exponential(40, n),
        "os_event": rng.random(n) < 0.6,
    })
    df["cea_ng_ml"] = df["cea_ng_ml"].where(rng.random(n) > 0.15)
    df["sex"] = df["sex"].where(rng.random(n) > 0.1)
    df["kras_status"] = df["kras_status"].where(rng.random(n) > 0.1)  # not recorded = unknown
    df["extrahepatic_disease"] = df["extrahepatic_disease"].astype(object).where(rng.random(n) > 0.1)
    return to_canonical(df)


def names_of(pre) -> list[str]:
    return list(pre.get_feature_names_out())


def column(pre, df, name) -> np.ndarray:
    return pre.transform(df)[:, names_of(pre).index(name)]


def is_affine(x, y) -> bool:
    slope, intercept = np.polyfit(x, y, 1)
    return bool(np.allclose(slope * x + intercept, y, atol=1e-8))


def test_columns_come_from_the_schema():
    df = cohort()
    pre = make_preprocessor().fit(df)
    expected = [f.name for f in schema.predictor_fields(DEFAULT_BLOCKS) if f.name in df and df[f.name].notna().any()]
    assert pre.columns_ == expected
    assert model_columns() == [f.name for f in schema.predictor_fields(DEFAULT_BLOCKS)]
    assert "patient_id" not in pre.columns_ and "os_months" not in pre.columns_


def test_a_new_schema_field_becomes_a_feature(monkeypatch):
    new = schema.Field("albumin_g_l", "float", "clinical", "preoperative", "Serum albumin.", "g/L", 10, 60)
    monkeypatch.setattr(schema, "FIELDS", (*schema.FIELDS, new))
    df = cohort().assign(albumin_g_l=np.random.default_rng(1).normal(40, 5, 300))
    pre = make_preprocessor().fit(df)
    assert "albumin_g_l" in pre.columns_ and "albumin_g_l" in names_of(pre)


def test_preoperative_variant_excludes_operative_and_postoperative_fields():
    df = cohort()
    pre = make_preprocessor(blocks=schema.PREDICTOR_BLOCKS, postoperative=False).fit(df)
    used = {schema.field(c) for c in pre.columns_}
    assert all(f.timing == "preoperative" and f.block != "operative" for f in used)
    assert not {"viable_tumour_percent", "resection_margin", "major_hepatectomy"} & set(pre.columns_)

    post = make_preprocessor(postoperative=True).fit(df)  # adds the operative block
    assert {"viable_tumour_percent", "resection_margin", "major_hepatectomy"} <= set(post.columns_)
    assert {"resection_margin=R1", "viable_tumour_percent"} <= set(names_of(post))


def test_cea_is_log_transformed():
    df = cohort()
    pre = make_preprocessor().fit(df)
    assert "cea_ng_ml (log)" in names_of(pre) and "cea_ng_ml" not in names_of(pre)
    observed = df["cea_ng_ml"].notna().to_numpy()
    feature = column(pre, df, "cea_ng_ml (log)")[observed]
    raw = df["cea_ng_ml"].to_numpy()[observed]
    assert is_affine(np.log1p(raw), feature)
    assert not is_affine(raw, feature)


def test_tumour_burden_score_is_the_hypotenuse():
    df = cohort()
    size, n = df["largest_metastasis_cm"].to_numpy(), df["n_liver_metastases"].to_numpy()
    np.testing.assert_allclose(tumour_burden_score(size, n), np.sqrt(size**2 + n**2))
    pre = make_preprocessor().fit(df)
    assert is_affine(np.sqrt(size**2 + n**2), column(pre, df, TBS_NAME))
    one_missing = df.head(2).assign(largest_metastasis_cm=[np.nan, 3.0])
    encoder = TumourBurdenScore().fit(df[["largest_metastasis_cm", "n_liver_metastases"]])
    imputed = encoder.transform(one_missing[["largest_metastasis_cm", "n_liver_metastases"]])[0, 0]
    assert imputed == pytest.approx((np.median(np.hypot(size, n)) - np.hypot(size, n).mean()) / np.hypot(size, n).std())


def test_encodings_equal_scikit_learns_reference_transformers():
    """The numpy encoders reproduce SimpleImputer + StandardScaler and OneHotEncoder(handle_unknown="ignore")
    exactly, on the training rows and on new rows with missing values and unseen levels."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, new = cohort(), cohort(n=40, seed=7)
    new.loc[:4, "age_years"] = np.nan
    new.loc[5:9, "chemo_regimen"] = "capox"  # not seen in training
    pre = make_preprocessor().fit(train)
    names = names_of(pre)
    numbers = ["age_years", "disease_free_interval_months", "n_liver_metastases", "largest_metastasis_cm"]
    reference = make_pipeline(SimpleImputer(strategy="median"), StandardScaler()).fit(train[numbers])
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(train[["chemo_regimen"]].astype(str))
    for rows in (train, new):
        X = pre.transform(rows)
        np.testing.assert_allclose(X[:, [names.index(c) for c in numbers]], reference.transform(rows[numbers]),
                                   rtol=0, atol=1e-12)
        levels = [f"chemo_regimen={c}" for c in onehot.categories_[0]]
        np.testing.assert_array_equal(X[:, [names.index(c) for c in levels]],
                                      onehot.transform(rows[["chemo_regimen"]].astype(str)))
    assert not X[5:10, [names.index(c) for c in names if c.startswith("chemo_regimen=")]].any()


def test_unknown_genomic_status_is_its_own_level():
    df = cohort()
    pre = make_preprocessor().fit(df)
    names = names_of(pre)
    assert {"kras_status=mutant", "kras_status=wild_type", "kras_status=unknown"} <= set(names)
    assert "kras_status=missing" not in names  # a marker that was not recorded is unknown
    unknown = (df["kras_status"].isna() | (df["kras_status"] == "unknown")).to_numpy()
    np.testing.assert_array_equal(column(pre, df, "kras_status=unknown"), unknown.astype(float))
    # RAS: the derived status enters with its sources (a KRAS-only cohort keeps its wild-type patients)
    assert {"ras_status=mutant", "ras_status=unknown"} <= set(names)


def test_missing_values_are_imputed_with_indicators():
    df = cohort()
    pre = make_preprocessor().fit(df)
    X = pre.transform(df)
    assert np.isfinite(X).all()
    missing = df["cea_ng_ml"].isna().to_numpy()
    np.testing.assert_array_equal(column(pre, df, "cea_ng_ml missing"), missing.astype(float))
    imputed = column(pre, df, "cea_ng_ml (log)")[missing]
    assert np.ptp(imputed) == 0  # one value: the training median
    slope, intercept = np.polyfit(np.log1p(df["cea_ng_ml"][~missing]), column(pre, df, "cea_ng_ml (log)")[~missing], 1)
    assert imputed[0] == pytest.approx(slope * np.median(np.log1p(df["cea_ng_ml"][~missing])) + intercept)
    # yes/no with pd.NA: 0/1 and an indicator
    ehd = df["extrahepatic_disease"]
    assert str(ehd.dtype) == "boolean" and ehd.isna().any()
    np.testing.assert_array_equal(column(pre, df, "extrahepatic_disease missing"), ehd.isna().to_numpy(float))
    np.testing.assert_array_equal(column(pre, df, "extrahepatic_disease"), ehd.fillna(False).to_numpy(float))
    # categories: missing is a level of its own
    np.testing.assert_array_equal(column(pre, df, "sex=missing"), df["sex"].isna().to_numpy(float))
    # indicators only where the training data had missing values
    assert "age_years missing" not in names_of(pre)


def test_feature_names_are_readable_and_survive_pandas_output():
    df = cohort()
    pre = make_preprocessor().fit(df)
    names = names_of(pre)
    assert len(names) == len(set(names)) == pre.transform(df).shape[1]
    for expected in ("age_years", "cea_ng_ml (log)", "primary_t_stage (ordinal)", "sex=female",
                     "extrahepatic_disease", TBS_NAME, "ras_status=mutant", "chemo_regimen=folfox"):
        assert expected in names
    fields = {f.name for f in schema.FIELDS} | {TBS_NAME}
    assert all(n.split(" ")[0].split("=")[0] in fields for n in names), names
    assert not any("__" in n or "missingindicator" in n for n in names)
    out = clone(pre).set_output(transform="pandas").fit(df).transform(df)
    assert list(out.columns) == names and out.index.equals(df.index)


def test_ordinal_categories_follow_the_schema_order():
    df = cohort()
    pre = make_preprocessor().fit(df)
    t = column(pre, df, "primary_t_stage (ordinal)")
    means = [t[(df["primary_t_stage"] == s).to_numpy()].mean() for s in ("T1", "T2", "T3", "T4")]
    assert means == sorted(means) and means[0] < means[-1]


def test_all_missing_and_absent_columns_are_dropped_at_fit():
    df = cohort()
    pre = make_preprocessor().fit(df)
    assert pre.dropped_columns_["ca19_9_u_ml"] == "all missing"
    assert pre.dropped_columns_["braf_v600e_status"] == "single value 'unknown'"  # all missing -> unknown
    assert pre.dropped_columns_["body_mass_index"] == "absent"
    assert not any(n.startswith(("ca19_9", "braf")) for n in names_of(pre))
    # a fit-time decision: later values in that column do not change the features
    test = df.assign(ca19_9_u_ml=50.0)
    assert pre.transform(test).shape == pre.transform(df).shape
    # a cohort without the genomic block (e.g. TCIA) still works, and so does columns_present
    no_genomic = df.drop(columns=[c for c in df if c.endswith("_status")])
    assert not any("status" in n for n in names_of(make_preprocessor().fit(no_genomic)))
    restricted = make_preprocessor(columns_present=["age_years", "cea_ng_ml", "sex"]).fit(df)
    assert restricted.columns_ == ["age_years", "sex", "cea_ng_ml"]


def test_prediction_rows_may_lack_fields():
    df = cohort()
    pre = make_preprocessor().fit(df)
    patient = pd.DataFrame([{"age_years": 70.0, "n_liver_metastases": 3.0, "largest_metastasis_cm": 4.0}])
    X = pre.transform(patient)
    assert X.shape == (1, len(names_of(pre))) and np.isfinite(X).all()
    assert X[0, names_of(pre).index("cea_ng_ml missing")] == 1.0


def test_robust_to_object_and_nullable_inputs():
    df = cohort(n=50)
    raw = df.copy()
    raw["extrahepatic_disease"] = raw["extrahepatic_disease"].astype(object).map(
        lambda v: None if v is pd.NA else ("yes" if v else "no"))
    raw["age_years"] = raw["age_years"].astype("Float64")
    raw.loc[0, "age_years"] = pd.NA
    pre = make_preprocessor().fit(df)
    X_raw, X = pre.transform(raw), pre.transform(df)
    same = [i for i, n in enumerate(names_of(pre)) if not n.startswith("age_years")]
    np.testing.assert_allclose(X_raw[:, same], X[:, same])
    assert np.isfinite(X_raw).all()


def test_sklearn_compatible():
    pre = make_preprocessor(postoperative=True)
    assert isinstance(pre, FeaturePreprocessor)
    assert pre.get_params()["postoperative"] is True
    copy = clone(pre).set_params(blocks=("clinical",)).fit(cohort())
    assert set(copy.columns_) <= set(model_columns(("clinical",), postoperative=True))
    assert {schema.field(c).block for c in copy.columns_} == {"clinical", "operative"}
    with pytest.raises(ValueError, match="unknown feature block"):
        make_preprocessor(blocks=("imaging",)).fit(cohort())
