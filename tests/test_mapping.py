"""The mapping cannot lie: missing in, missing out; text in expressions; one column, several fields; yes/no
spellings; duplicate and missing IDs; values as written; the per-field summary."""

import math

import pandas as pd

from crlm.cohort import load_cohort
from crlm.cohort.base import _to_bool


def _write(tmp_path, csv: str, yaml: str):
    (tmp_path / "c.csv").write_text(csv)
    (tmp_path / "m.yaml").write_text(yaml)
    return load_cohort(tmp_path / "c.csv", tmp_path / "m.yaml")


def test_derive_propagates_missing_through_every_operator(tmp_path):
    cohort = _write(tmp_path, "id,dfi,stage\nA,6,IV\nB,,III\nC,30,\n",
                    "name: t\nmissing_values: ['']\n"
                    "derive: {early: 'dfi < 12', later: 'dfi + 1', stage4: \"stage == 'IV'\", both: 'dfi * 0'}\n"
                    "rename: {id: patient_id, early: synchronous_metastases, later: disease_free_interval_months,"
                    " both: chemo_cycles}\n")
    d = cohort.data
    # the unknown DFI of B stays unknown (pandas alone would say "not < 12" and "0")
    assert d["synchronous_metastases"].tolist()[0] is True and pd.isna(d["synchronous_metastases"][1])
    assert d["synchronous_metastases"].tolist()[2] is False
    assert math.isnan(d["disease_free_interval_months"][1]) and d["disease_free_interval_months"][0] == 7
    assert math.isnan(d["chemo_cycles"][1]) and d["chemo_cycles"][0] == 0


def test_text_columns_in_expressions_and_one_column_feeding_two_fields(tmp_path):
    cohort = _write(tmp_path, "id,stage,nmets\nA,T4,3\nB,T2,1\nC,,2\n",
                    "name: t\nderive: {t4: \"stage == 'T4'\"}\n"
                    "rename: {id: patient_id, t4: primary_node_positive, stage: primary_t_stage,"
                    " nmets: [n_liver_metastases, chemo_cycles]}\n")
    d = cohort.data
    assert d["primary_node_positive"].tolist()[:2] == [True, False] and pd.isna(d["primary_node_positive"][2])
    assert d["primary_t_stage"].tolist()[:2] == ["T4", "T2"]
    assert d["n_liver_metastases"].tolist() == d["chemo_cycles"].tolist() == [3.0, 1.0, 2.0]


def test_yes_no_spellings():
    for yes in ("1", "1.0", "true", "TRUE", "Yes", "y", "Y", 1, 1.0, True):
        assert _to_bool(yes) is True, yes
    for no in ("0", "0.0", "false", "No", "n", "N", 0, 0.0, False):
        assert _to_bool(no) is False, no


def test_yes_no_floats_accepted_on_load(tmp_path):
    cohort = _write(tmp_path, "id,node\nA,1.0\nB,0.0\nC,Y\nD,maybe\n",
                    "name: t\nrename: {id: patient_id, node: primary_node_positive}\n")
    assert cohort.data["primary_node_positive"].tolist() == [True, False, True]
    assert [(p.row, p.field) for p in cohort.report.problems] == [(4, "primary_node_positive")]


def test_duplicate_and_missing_ids_are_bad_rows(tmp_path):
    cohort = _write(tmp_path, "id,age\nA,60\nB,61\nA,62\n,63\nC,64\n",
                    "name: t\nrename: {id: patient_id, age: age_years}\n")
    rules = {(p.row, p.rule) for p in cohort.report.problems}
    assert rules == {(1, "must be unique (also in row 3)"), (3, "must be unique (also in row 1)"),
                     (4, "required: every row needs a patient ID")}
    assert cohort.data["patient_id"].tolist() == ["B", "C"]


def test_report_shows_the_value_as_written_and_a_field_summary(tmp_path):
    cohort = _write(tmp_path, "id,dfi_days,sex\nA,-9,1\nB,400,2\nC,-999,3\nD,30,1\n",
                    "name: t\nmissing_values: [-999]\nrename: {id: patient_id, dfi_days: disease_free_interval_months,"
                    " sex: sex}\nrecode: {sex: {1: male, 2: female}}\nunits: {disease_free_interval_months: days}\n")
    frame = cohort.report.to_frame()
    dfi = frame[frame.field == "disease_free_interval_months"].iloc[0]
    assert dfi["row"] == 1 and str(dfi["as_written"]) == "-9" and round(float(dfi["value"]), 4) == -0.2957
    sex = frame[frame.field == "sex"].iloc[0]
    assert sex["row"] == 3 and str(sex["as_written"]) == "3"
    assert "written '-9'" in str(cohort.report.problems[0]) or "written '-9'" in str(cohort.report.problems[1])
    summary = cohort.report.fields.set_index("field")
    assert summary.loc["disease_free_interval_months"].tolist() == [2, 0, 1]  # B and D recorded; A rejected
    assert summary.loc["sex", "rejected"] == 1


def test_join_with_repeated_keys_is_refused(tmp_path):
    (tmp_path / "labs.csv").write_text("pid,cea\nA,5\nA,6\n")
    try:
        _write(tmp_path, "id,age\nA,60\n", "name: t\njoin: [{path: labs.csv, left_key: id, right_key: pid, "
               "columns: [cea]}]\nrename: {id: patient_id, cea: cea_ng_ml}\n")
    except ValueError as err:
        assert "repeats A" in str(err)
    else:
        raise AssertionError("a repeated join key must be refused")


def test_none_is_a_value_not_a_missing_code(tmp_path):
    cohort = _write(tmp_path, "id,regimen\nA,None\nB,FOLFOX\nC,NA\n",
                    "name: t\nrename: {id: patient_id, regimen: chemo_regimen}\n"
                    "recode: {chemo_regimen: {None: none, FOLFOX: folfox}}\n")
    assert cohort.data["chemo_regimen"].tolist()[:2] == ["none", "folfox"]
    assert pd.isna(cohort.data["chemo_regimen"][2])  # NA is still missing
