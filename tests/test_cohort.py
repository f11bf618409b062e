import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crlm.cli import app
from crlm.cohort import CohortValidationError, MappingError, load_cohort, load_tcia
from crlm.cohort.summary import endpoint_summary
from crlm.kaplan_meier import km_median

runner = CliRunner()


def test_five_bad_cells_are_reported_exactly(data_dir):
    cohort = load_cohort(data_dir / "five_bad_cells.csv")
    found = {(p.row, p.field, str(p.value)) for p in cohort.report.problems}
    assert found == {(3, "age_years", "abc"), (4, "n_liver_metastases", "0.0"), (5, "primary_side", "middle"),
                     (7, "kras_status", "maybe"), (8, "cea_ng_ml", "-5.0")}
    rules = {p.field: p.rule for p in cohort.report.problems}
    assert rules["age_years"] == "must be a number"
    assert rules["primary_side"] == "one of right, left, rectum"
    assert ">= 1" in rules["n_liver_metastases"]
    assert cohort.report.n_rows == 9 and cohort.report.n_rejected == 5 and len(cohort) == 4
    assert cohort.data["patient_id"].tolist() == ["P01", "P02", "P06", "P09"]
    assert cohort.data["extrahepatic_disease"].dtype == "boolean"


def test_strict_mode_fails_the_whole_load(data_dir):
    with pytest.raises(CohortValidationError) as err:
        load_cohort(data_dir / "five_bad_cells.csv", strict=True)
    assert len(err.value.report.problems) == 5 and "row 5: primary_side = 'middle'" in str(err.value)


def test_validate_cli_report_and_exit_codes(data_dir, tmp_path):
    out = tmp_path / "report.csv"
    lenient = runner.invoke(app, ["validate", str(data_dir / "five_bad_cells.csv"), "--report", str(out)])
    assert lenient.exit_code == 0, lenient.output
    assert "9 rows read, 4 accepted, 5 set aside" in lenient.output
    assert len(pd.read_csv(out)) == 5
    strict = runner.invoke(app, ["validate", str(data_dir / "five_bad_cells.csv"), "--strict"])
    assert strict.exit_code == 1
    missing = runner.invoke(app, ["validate", str(data_dir / "nope.csv")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_mapping_renames_recodes_converts_and_derives(data_dir):
    cohort = load_cohort(data_dir / "export_mm.csv", data_dir / "export_mm.yaml", strict=True)
    d = cohort.data
    assert d["sex"].tolist() == ["male", "female", "female"]
    assert d["largest_metastasis_cm"].tolist() == [3.5, 6.2, 1.8]
    assert math.isnan(d["cea_ng_ml"][0]) and d["cea_ng_ml"][1] == 210
    assert d["viable_tumour_percent"].round(6).tolist()[0] == 80.0 and math.isnan(d["viable_tumour_percent"][1])
    assert d["multiple_metastases"].tolist() == [True, False, True]
    assert cohort.name == "test-export"


def test_mapping_errors_are_clear(data_dir, tmp_path):
    bad_key = tmp_path / "m.yaml"
    bad_key.write_text("name: x\nrename: {age: age_years}\nrenmae: {}\n")
    with pytest.raises(MappingError, match="renmae"):
        load_cohort(data_dir / "export_mm.csv", bad_key)
    bad_field = tmp_path / "f.yaml"
    bad_field.write_text("name: x\nrename: {age: age_in_years}\n")
    with pytest.raises(MappingError, match="age_in_years"):
        load_cohort(data_dir / "export_mm.csv", bad_field)
    bad_column = tmp_path / "c.yaml"
    bad_column.write_text("name: x\nrename: {years: age_years}\n")
    with pytest.raises(MappingError, match="years"):
        load_cohort(data_dir / "export_mm.csv", bad_column)
    odd = tmp_path / "cohort.xlsx"
    odd.write_text("x")
    with pytest.raises(ValueError, match="unreadable format"):
        load_cohort(odd)
    result = runner.invoke(app, ["validate", str(data_dir / "export_mm.csv"), "--mapping", str(bad_key)])
    assert result.exit_code == 2 and "renmae" in result.output


def test_parquet_round_trip(data_dir, tmp_path):
    csv = load_cohort(data_dir / "export_mm.csv", data_dir / "export_mm.yaml")
    path = tmp_path / "c.parquet"
    csv.data.to_parquet(path)
    again = load_cohort(path)
    pd.testing.assert_frame_equal(again.data, csv.data)


def test_tcia_cohort_facts():
    tcia = load_tcia()
    assert len(tcia) == 197 and tcia.report.ok
    y = tcia.y("os")
    assert int(y["event"].sum()) == 107
    assert int(tcia.y("dfs")["event"].sum()) == 138
    assert 70 <= km_median(y["time"], y["event"]) <= 82  # the README's KM median OS is about 76 months
    assert tcia.data["fong_score_recorded"].notna().sum() == 168
    assert tcia.data["cea_ng_ml"].notna().sum() < 127  # v2 subset only, with its own gaps
    assert "CC BY 4.0" in tcia.licence and "Simpson" in tcia.citation
    summary = endpoint_summary(tcia).set_index("endpoint")
    assert set(summary.index) == {"os", "rfs", "liver_rfs"}
    assert np.all(tcia.data["rfs_months"] <= tcia.data["os_months"])


def test_canonical_columns_of_records_equal_the_canonical_frame():
    """The API's records path (no DataFrame) and the cohort path give the same canonical values, with the
    same coercions and derived fields."""
    from crlm.cohort.base import canonical_columns, to_canonical

    records = [
        {"age_years": 64, "n_liver_metastases": 3, "primary_node_positive": True, "kras_status": "mutant",
         "disease_free_interval_months": 0, "patient_id": "a"},
        {"age_years": "71.5", "n_liver_metastases": 1, "primary_node_positive": "no", "nras_status": "wild_type",
         "sex": "female"},
        {"age_years": None, "primary_node_positive": None, "sex": None, "cea_ng_ml": "not measured"},
    ]
    columns = canonical_columns(records)
    frame = to_canonical(pd.DataFrame(records))
    assert columns.n_rows == 3 and set(columns) == set(frame.columns)
    np.testing.assert_array_equal(columns["age_years"], [64.0, 71.5, np.nan])
    assert np.isnan(columns["cea_ng_ml"]).all()  # text that is not a number is missing
    np.testing.assert_array_equal(columns["primary_node_positive"], [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(columns["multiple_metastases"], [1.0, 0.0, np.nan])  # derived from the count
    np.testing.assert_array_equal(columns["synchronous_metastases"], [1.0, np.nan, np.nan])  # DFI 0
    assert columns["ras_status"].tolist() == ["mutant", "unknown", "unknown"]
    pd.testing.assert_frame_equal(columns.frame(), frame)
    assert canonical_columns(frame).frame().equals(frame)
    first = columns.records()[0]
    assert first["primary_node_positive"] is True and first["age_years"] == 64.0 and first["patient_id"] == "a"
    assert columns.records()[2]["primary_node_positive"] is None and math.isnan(columns.records()[2]["age_years"])
    with pytest.raises(ValueError, match="not a yes/no value"):
        canonical_columns([{"primary_node_positive": "maybe"}])
