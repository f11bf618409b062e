"""The Predictor's answers to the tumour board's questions: response scenarios, conditional survival, and the
inputs each model really needs."""

import numpy as np
import pandas as pd
import pytest

from crlm.cohort.base import Cohort, predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.predictor_training import train_predictor


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(400, seed=8)


@pytest.fixture(scope="module")
def predictor(cohort):
    return train_predictor(cohort, "os", "coxnet", n_interval_models=12, seed=2)


def record(cohort, i=0) -> dict:
    row = predictors_frame(cohort.data).iloc[i].to_dict()
    return {k: v for k, v in row.items() if not pd.isna(v)}


def without(cohort, *columns):
    return Cohort(data=cohort.data.drop(columns=list(columns)), name=cohort.name, source=cohort.source)


# ---------------------------------------------------------------- the inputs a model uses

def test_a_model_trained_without_a_field_answers_without_it_and_without_a_warning(cohort):
    p = train_predictor(without(cohort, "largest_metastasis_cm"), "os", "coxnet", n_interval_models=5, seed=0)
    assert "largest_metastasis_cm" not in p.used_fields + p.required_fields
    assert p.metadata["required_fields"] == p.required_fields == ["age_years", "n_liver_metastases"]
    patient = record(cohort)
    patient.pop("largest_metastasis_cm")
    [answer] = p.predict([patient])
    assert not any("largest_metastasis_cm" in w for w in answer["warnings"])
    assert 0 < answer["horizons"][0]["survival"] < 1


@pytest.mark.parametrize("model_name, params", [("coxnet", {"alpha": 0.15, "l1_ratio": 1.0}),
                                                ("rsf", {"n_estimators": 15})])
def test_fields_a_model_never_uses_change_nothing_and_draw_no_warning(cohort, model_name, params):
    p = train_predictor(cohort, "os", model_name, params, n_interval_models=3, seed=0)
    unused = [f for f in p.fields_used if f not in p.used_fields]
    assert unused, "the sparse / shallow model should leave some fields unused"
    assert p.metadata["used_fields"] == p.used_fields
    patient = record(cohort, 3)
    stripped = {k: v for k, v in patient.items() if k not in unused}
    full, bare = p.predict([patient])[0], p.predict([stripped])[0]
    assert full["horizons"] == bare["horizons"] and full["curve"] == bare["curve"]
    assert not any(w.split()[0] in unused for w in bare["warnings"])
    # a used field that is missing is still warned about
    used = next(f for f in p.used_fields if f not in p.required_fields and f in patient)
    [answer] = p.predict([{k: v for k, v in patient.items() if k != used}])
    assert any(w.startswith(f"{used} is missing") for w in answer["warnings"])


# ---------------------------------------------------------------- response scenarios

def test_scenarios_are_the_models_answers_for_the_record_with_each_response(predictor, cohort):
    patient = record(cohort, 5)
    out = predictor.scenarios(patient)
    assert out["available"] and "not the effect of a treatment" in out["label"]
    assert out["as_given"]["recist_response"] == patient.get("recist_response")
    keys = [s["key"] for s in out["scenarios"]]
    assert keys == ["complete_response", "partial_response", "stable_disease", "progression",
                    "progression_before_surgery"]
    profile = predictor.metadata["response_profile"]
    assert sum(s["available"] for s in out["scenarios"]) >= 4
    for s in out["scenarios"]:
        if not s["available"]:  # a sparse refit may drop a response field: said, with the reason
            field = "progression_before_surgery" if s["key"] == "progression_before_surgery" else "recist_response"
            assert field not in predictor.used_fields and field in s["reason"]
            continue
        changed = {k: v for k, v in (patient | s["inputs"]).items() if v is not None}
        [expected] = predictor.predict([changed])
        assert s["horizons"] == expected["horizons"] and s["curve"] == expected["curve"]
        for h in s["horizons"]:
            assert h["lower"] <= h["survival"] <= h["upper"]
    pd_scenario = out["scenarios"][3]
    assert pd_scenario["inputs"]["recist_response"] == "PD"
    assert pd_scenario["inputs"]["tumour_size_change_percent"] == profile["recist"]["PD"]["median_size_change_percent"]
    assert pd_scenario["training_patients"] == profile["recist"]["PD"]["patients"]
    assert out["scenarios"][4]["inputs"]["progression_before_surgery"] is True
    # the simulator's patients with progression on chemotherapy fare worse than responders (docs/SIMULATOR.md)
    five_year = {s["key"]: s["horizons"][-1]["survival"] for s in out["scenarios"] if s["available"]}
    assert five_year["progression"] < five_year["partial_response"] - 0.05


def test_scenarios_of_an_untreated_patient_assume_chemotherapy_with_its_details_unknown(predictor):
    out = predictor.scenarios({"age_years": 60.0, "n_liver_metastases": 2, "largest_metastasis_cm": 3.0,
                               "neoadjuvant_chemotherapy": False, "chemo_regimen": "none"})
    assert out["available"] and out["notes"]
    assert all(s["inputs"]["neoadjuvant_chemotherapy"] is True and s["inputs"]["chemo_regimen"] is None
               for s in out["scenarios"])


def test_scenarios_say_why_not_when_the_model_ignores_the_response(cohort):
    p = train_predictor(cohort, "os", "coxnet", blocks=("clinical", "genomic"), n_interval_models=3, seed=0)
    out = p.scenarios(record(cohort))
    assert not out["available"] and "does not use the response" in out["reason"] and out["scenarios"] == []
    q = train_predictor(without(cohort, "progression_before_surgery"), "os", "coxnet", n_interval_models=3, seed=0)
    out = q.scenarios(record(cohort))
    assert out["available"]
    last = out["scenarios"][-1]
    assert last["key"] == "progression_before_surgery" and not last["available"] and "does not use" in last["reason"]
    with pytest.raises(ValueError, match="one patient"):
        p.scenarios(predictors_frame(cohort.data).head(2))


# ---------------------------------------------------------------- conditional survival

def test_conditional_survival_is_the_ratio_of_each_refits_curve(predictor, cohort):
    rows = [record(cohort, i) for i in range(4)]
    s = 24.0
    answers = predictor.conditional(rows, s)
    columns, Z = predictor._prepare(rows)
    curves = predictor.refit_curves(Z, columns)  # (1 + B, n, T): the refit and the interval's replicates
    times = predictor.curve_times
    j = int(np.flatnonzero(times == s)[0])
    for i, a in enumerate(answers):
        assert a["available"] and a["condition"] == "alive 24 months after resection"
        ratio = curves[:, i, j:] / curves[:, i, j:j + 1]
        np.testing.assert_allclose(a["curve"]["months"], times[j:])
        np.testing.assert_allclose(a["curve"]["survival"], np.minimum.accumulate(ratio[0]), atol=1e-5)
        band_lower, _ = predictor.band(ratio[:1], ratio[1:, None])  # the same method as the unconditional band
        np.testing.assert_allclose(a["curve"]["lower"], np.minimum.accumulate(band_lower[0]), atol=1e-5)
        for h in a["horizons"]:
            if not h["available"]:
                assert h["months_since_resection"] > times[-1]
                continue
            assert h["lower"] <= h["survival"] <= h["upper"]
            k = int(np.flatnonzero(times == h["months_since_resection"])[0])
            assert h["survival"] == pytest.approx(ratio[0, k - j], abs=1e-6)
        assert a["horizons"][0]["survival"] > predictor.predict([rows[i]])[0]["horizons"][1]["survival"]


def test_conditional_at_zero_is_the_unconditional_answer_and_bad_times_are_refused(predictor, cohort):
    patient = record(cohort, 1)
    [a] = predictor.conditional([patient], 0)
    [b] = predictor.predict([patient])
    assert a["curve"]["survival"] == b["curve"]["survival"]
    assert a["horizons"][0]["survival"] == pytest.approx(b["horizons"][0]["survival"], abs=1e-9)
    # between grid points, S(s) is interpolated: the curve starts at s with S = 1
    [c] = predictor.conditional([patient], 13.5)
    assert c["curve"]["months"][0] == 13.5 and c["curve"]["survival"][0] == 1.0
    for bad in (-1, predictor.curve_times[-1], float("nan")):
        with pytest.raises(ValueError, match="event_free_at_months"):
            predictor.conditional([patient], bad)
