"""A centre's own fields: declared in the mapping, validated like schema fields, used by the feature pipeline;
per field, missing-as-information or plain imputation."""

import numpy as np
import pytest

from crlm.cohort import MappingError, load_cohort
from crlm.cohort.simulate import simulate_cohort
from crlm.features import make_preprocessor
from crlm.schema import Field

MAPPING = """name: t
rename: {id: patient_id, tmb: tmb_mut_mb, cms: cms_subtype, local: local_score, age: age_years}
extra_fields:
  - {name: tmb_mut_mb, kind: float, minimum: 0, maximum: 500, block: genomic, unit: mut/Mb, description: TMB}
  - {name: cms_subtype, kind: category, categories: [CMS1, CMS2, CMS3, CMS4], block: genomic}
recorded_scores:
  - {name: local_score, label: Local score, minimum: 0, maximum: 4}
"""


def test_extra_fields_are_validated_like_schema_fields(tmp_path):
    (tmp_path / "c.csv").write_text("id,tmb,cms,local,age\nA,3.1,CMS2,1,60\nB,-2,CMS1,2,61\nC,4,CMS9,0,62\n"
                                    "D,x,CMS4,7,63\n")
    (tmp_path / "m.yaml").write_text(MAPPING)
    cohort = load_cohort(tmp_path / "c.csv", tmp_path / "m.yaml")
    found = {(p.row, p.field, p.rule) for p in cohort.report.problems}
    assert found == {(2, "tmb_mut_mb", "number >= 0 and <= 500"), (3, "cms_subtype", "one of CMS1, CMS2, CMS3, CMS4"),
                     (4, "tmb_mut_mb", "must be a number"), (4, "local_score", "number >= 0 and <= 4")}
    assert cohort.data["tmb_mut_mb"].tolist() == [3.1] and [f.name for f in cohort.recorded_scores] == ["local_score"]
    assert set(cohort.report.fields.field) >= {"tmb_mut_mb", "cms_subtype", "local_score"}


def test_declared_fields_need_a_source_and_a_name_of_their_own(tmp_path):
    (tmp_path / "c.csv").write_text("id\nA\n")
    (tmp_path / "m.yaml").write_text(MAPPING.replace("tmb: tmb_mut_mb, ", ""))
    with pytest.raises(MappingError, match="tmb_mut_mb.*get no source column"):
        load_cohort(tmp_path / "c.csv", tmp_path / "m.yaml")
    (tmp_path / "m.yaml").write_text("name: t\nrename: {id: patient_id}\nextra_fields:\n"
                                     "  - {name: age_years, kind: float}\n")
    with pytest.raises(MappingError, match="not a schema field"):
        load_cohort(tmp_path / "c.csv", tmp_path / "m.yaml")


def test_extra_fields_enter_the_features_and_plain_imputation_drops_missing_as_information():
    data = simulate_cohort(200, 3).data
    data["tmb_mut_mb"] = np.random.default_rng(0).lognormal(1, 0.5, len(data))
    tmb = Field("tmb_mut_mb", "float", "genomic", "preoperative", "TMB", "mut/Mb", 0, 500)
    informative = make_preprocessor(extra_fields=(tmb,)).fit(data)
    names = list(informative.get_feature_names_out())
    assert "tmb_mut_mb" in names and "braf_v600e_status=unknown" in names and "ca19_9_u_ml missing" in names
    plain = make_preprocessor(extra_fields=(tmb,), plain_imputation=("braf_v600e_status", "ca19_9_u_ml")).fit(data)
    names = list(plain.get_feature_names_out())
    assert "braf_v600e_status=unknown" not in names and "ca19_9_u_ml missing" not in names
    assert "braf_v600e_status=wild_type" in names and "ca19_9_u_ml (log)" in names
    Z = plain.transform(data)
    unknown = data["braf_v600e_status"].eq("unknown").to_numpy()
    wild = names.index("braf_v600e_status=wild_type")
    assert np.all(Z[unknown, wild] == 1.0)  # not sequenced -> the most frequent known level, not a level of its own
