"""A centre's own cohort, end to end, through the commands a new user runs (README "Your own cohort"):
crlm init --from, validate, scores, train (reference: a declared recorded score; Fong is not computable),
evaluate on a second centre, recalibrate for it, and serve the recalibrated model.

The exports (tests/data/centre/, made by make_exports.py) are in a real export's style: own column names,
codes and units, a lab file to join, a duplicated and a missing patient ID, an unknown code, an extra field
(TMB), a recorded local score, no CEA. Everything runs in a fresh workspace with no MLFLOW_TRACKING_URI and no
CRLM_HOME: the tracking store, models and results must land in the workspace.
"""

import shutil
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from crlm.cli import app
from serving_fixtures import LiveServer

pytestmark = pytest.mark.slow
runner = CliRunner()
CENTRE = Path(__file__).parent / "data" / "centre"
ROOT = Path(__file__).resolve().parents[1]


def crlm(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"crlm {' '.join(map(str, args))}:\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("CRLM_HOME", raising=False)
    ws = tmp_path_factory.mktemp("centre") / "ws"
    out = crlm("init", ws, "--from", CENTRE / "centre_a.csv")
    assert "mappings/ws.yaml" in out
    for f in CENTRE.iterdir():
        if f.suffix in (".csv", ".yaml"):
            shutil.copy(f, ws / "data" / f.name)  # the user's finished mappings and configs beside the exports
    mp.chdir(ws)
    yield ws
    mp.undo()


def test_init_drafts_a_mapping_of_every_column(workspace):
    draft = (workspace / "mappings" / "ws.yaml").read_text()
    header = (CENTRE / "centre_a.csv").read_text().splitlines()[0].split(",")
    assert all(f"{column}:" in draft for column in header)
    assert "Gender: sex" in draft and "codes: M (" in draft and "MaxDiam_mm: largest_metastasis_cm" in draft


def test_validate_reports_ids_codes_and_fields(workspace):
    out = crlm("validate", "data/centre_a.csv", "--mapping", "data/centre_a.yaml", "--report", "bad.csv")
    assert "320 rows read, 316 accepted, 4 set aside" in out
    assert "must be unique (also in row 5)" in out and "required: every row needs a patient ID" in out
    assert "one of male, female" in out and "tmb_mut_mb" in out  # the extra field is validated and summarised


def test_scores_say_why_fong_is_missing(workspace):
    out = crlm("scores", "data/centre_a.csv", "--mapping", "data/centre_a.yaml", "--n-boot", "20")
    from crlm.cohort import load_cohort
    from crlm.scores import score_coverage

    assert "which scores this cohort can compute" in out and "cea_gt_200" in out  # the table, wrapped by rich
    cohort = load_cohort("data/centre_a.csv", "data/centre_a.yaml")
    fong = score_coverage(cohort.data).set_index("score").loc["fong"]
    assert fong.computable == 0 and "cea_gt_200 (cea_ng_ml, not in the file): 316 of 316" in fong.lacking
    assert "Centre clinical score (recorded)" in out


def test_train_evaluate_recalibrate_serve(workspace):
    out = crlm("train", "--config", "data/centre-a-os.yaml")
    assert "registered as crlm-centre-a-os" in out and "(reference)" in out
    assert (workspace / "mlflow.db").exists() and (workspace / "models" / "crlm-centre-a-os").exists()
    assert list((workspace / "results" / "centre-a-os").glob("*/leaderboard/leaderboard.csv"))
    crlm("train", "--config", "data/centre-a-rfs.yaml")
    from crlm.predictor import Predictor

    trained = Predictor.load(workspace / "models" / "crlm-centre-a-os")
    assert "tmb_mut_mb" in trained.fields_used  # the centre's own field entered the model
    assert "braf_v600e_status" in trained.metadata["plain_imputation"]

    out = crlm("evaluate", "data/centre_b.csv", "--model", "models:/crlm-centre-a-os@champion", "--mapping",
               "data/centre_b.yaml", "--n-boot", "20")
    assert "harrell_c" in out and "noise floor" in out and "decision curves" in out and "score:tbs" in out
    out = crlm("recalibrate", "data/centre_b.csv", "--model", "models:/crlm-centre-a-os@champion", "--mapping",
               "data/centre_b.yaml", "--name", "centre-b")
    assert "registered crlm-centre-b-os" in out
    client = MlflowClient()
    versions = client.search_model_versions("name='crlm-centre-b-os'")
    assert versions and versions[0].tags["source_model"] == "crlm-centre-a-os"

    # serve: a real `bentoml serve` on the centre's bundles (the recalibrated OS model, centre A's RFS model)
    mp = pytest.MonkeyPatch()
    mp.setenv("CRLM_MODEL_SOURCE", "bundle")
    mp.setenv("CRLM_OS_MODEL", "crlm-centre-b-os")
    mp.setenv("CRLM_RFS_MODEL", "crlm-centre-a-rfs")
    mp.delenv("CRLM_API_KEY", raising=False)
    try:
        server = LiveServer(workspace / "models", workers=1, log_path=workspace / "serve.log", cwd=workspace)
        try:
            server.wait_ready(timeout=180)
            resp = httpx.post(f"{server.url}/predict", timeout=60,
                              json={"patient": {"age_years": 64, "n_liver_metastases": 3,
                                                "largest_metastasis_cm": 4.5}})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["os"]["horizons"][0]["months"] == 12
            assert any("tmb_mut_mb" in w for w in body["os"]["warnings"])  # not sent: imputed, and said so
        finally:
            server.stop()
    finally:
        mp.undo()
