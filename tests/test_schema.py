import re

import pytest
from pydantic import ValidationError

from crlm import schema, schema_artefacts

UNIT_SUFFIXES = {"_months": "months", "_years": "years", "_cm": "cm", "_percent": "%", "_ng_ml": "ng/mL",
                 "_u_ml": "U/mL"}  # the convention: the unit is in the name where one applies


def test_catalogue_names_are_unique_snake_case_and_carry_their_unit():
    names = [f.name for f in schema.FIELDS]
    assert len(names) == len(set(names)) and set(schema.FIELDS_BY_NAME) == set(names)
    for f in schema.FIELDS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", f.name), f.name
        for suffix, unit in UNIT_SUFFIXES.items():
            if f.name.endswith(suffix):
                assert f.unit == unit, (f.name, f.unit)
        assert f.description.endswith("."), f.name


def test_every_field_is_consistent_with_its_kind():
    for f in schema.FIELDS:
        if f.kind in ("float", "int"):
            assert f.minimum is not None and f.maximum is not None and f.minimum < f.maximum, f.name
            assert f.categories is None
        else:
            assert f.minimum is None and f.maximum is None and f.unit is None, f.name
        assert (f.kind == "category") == bool(f.categories), f.name
        if f.categories:
            assert len(set(f.categories)) == len(f.categories) >= 2, f.name
        assert set(f.derived_from) <= set(schema.FIELDS_BY_NAME), f.name
        assert (f.block == "outcome") == (f.timing == "outcome"), f.name
        if f.required_for_prediction:
            assert f in schema.predictor_fields(), f.name  # a required input is a preoperative predictor


def test_every_field_reaches_the_generated_validators():
    columns = schema_artefacts.pandera_schema().columns
    assert set(columns) == {f.name for f in schema.FIELDS}
    patient = schema.patient_model().model_fields
    assert set(patient) == {f.name for f in schema.FIELDS if f.block != "outcome"}
    for f in schema.input_fields():
        required = patient[f.name].is_required()
        assert required == f.required_for_prediction, f.name
        rules = {type(m).__name__: m for m in patient[f.name].metadata}
        if f.minimum is not None:
            assert rules["Ge"].ge == f.minimum and rules["Le"].le == f.maximum, f.name
    for e in schema.ENDPOINTS.values():  # every endpoint's time and event are outcome fields of the right kind
        assert schema.field(e.time).kind == "float" and schema.field(e.event).kind == "bool"
        assert schema.field(e.time).block == schema.field(e.event).block == "outcome"
    for block in schema.PREDICTOR_BLOCKS:
        assert schema.predictor_fields([block], postoperative=True), f"block {block} has no field"


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

    text = schema_artefacts.data_dictionary_markdown()
    assert all(f"`{f.name}`" in text for f in schema.FIELDS)
    assert (ROOT / "data" / "DATA_DICTIONARY.md").read_text() == text, "run `crlm dictionary`"
