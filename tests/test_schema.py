import pytest
from pydantic import ValidationError

from crlm import schema


def test_catalogue_names_are_unique_and_complete():
    names = [f.name for f in schema.FIELDS]
    assert len(names) == len(set(names))
    for required in ["age_years", "sex", "primary_side", "primary_t_stage", "primary_node_positive", "primary_grade",
                     "disease_free_interval_months", "n_liver_metastases", "largest_metastasis_cm", "bilobar_disease",
                     "cea_ng_ml", "ca19_9_u_ml", "extrahepatic_disease", "kras_status", "nras_status",
                     "braf_v600e_status", "pik3ca_status", "mmr_status", "ras_status", "neoadjuvant_chemotherapy",
                     "chemo_regimen", "chemo_biologic", "chemo_cycles", "chemo_line", "recist_response",
                     "tumour_size_change_percent", "viable_tumour_percent", "progression_before_surgery",
                     "resection_margin", "major_hepatectomy", "two_stage_hepatectomy", "portal_vein_embolisation",
                     "ablation", "os_months", "os_event", "rfs_months", "rfs_event"]:
        assert required in names


def test_preoperative_models_never_see_postoperative_fields():
    pre = {f.name for f in schema.predictor_fields()}
    post = {f.name for f in schema.predictor_fields(postoperative=True)}
    assert "resection_margin" not in pre and "viable_tumour_percent" not in pre
    assert {"resection_margin", "viable_tumour_percent"} <= post
    assert all(f.timing == "preoperative" for f in schema.predictor_fields())
    with pytest.raises(ValueError, match="unknown feature block"):
        schema.predictor_fields(["clinical", "imaging"])


def test_patient_model_names_the_field_and_rule():
    Patient = schema.patient_model()
    ok = Patient(age_years=64, n_liver_metastases=2, largest_metastasis_cm=3.5, kras_status="unknown")
    assert ok.kras_status == "unknown" and ok.cea_ng_ml is None
    with pytest.raises(ValidationError) as err:
        Patient(age_years=12, n_liver_metastases=2, largest_metastasis_cm=3.5, sex="x", shoe_size=42)
    locs = {e["loc"][0]: e["type"] for e in err.value.errors()}
    assert locs == {"age_years": "greater_than_equal", "sex": "literal_error", "shoe_size": "extra_forbidden"}
    with pytest.raises(ValidationError) as err:
        Patient(age_years=64, largest_metastasis_cm=3.5)
    assert err.value.errors()[0]["loc"] == ("n_liver_metastases",)


def test_derived_fields():
    import pandas as pd

    from crlm.cohort.base import to_canonical

    df = to_canonical(pd.DataFrame({
        "disease_free_interval_months": [0, 14, None], "n_liver_metastases": [1, 3, None],
        "kras_status": ["wild_type", "mutant", "unknown"], "nras_status": ["wild_type", None, "mutant"],
        "multiple_metastases": [None, None, True]}))  # a source may record only "more than one"
    assert df["synchronous_metastases"].tolist() == [True, False, pd.NA]
    assert df["multiple_metastases"].tolist() == [False, True, True]
    assert df["ras_status"].tolist() == ["wild_type", "mutant", "mutant"]


def test_endpoint_aliases():
    assert schema.endpoint("dfs").time == "rfs_months"
    with pytest.raises(ValueError, match="unknown endpoint"):
        schema.endpoint("pfs")


def test_data_dictionary_is_generated_and_current():
    from tests.conftest import ROOT

    text = schema.data_dictionary_markdown()
    assert all(f"`{f.name}`" in text for f in schema.FIELDS)
    assert (ROOT / "data" / "DATA_DICTIONARY.md").read_text() == text, "run `crlm dictionary`"
