"""The MLflow dashboard as a newcomer opens it: a real ``mlflow ui`` on a crlm store, in headless Chromium. The
link crlm prints opens the runs list (not the GenAI overview); every model is a top-level row whose name carries
C with its interval, delta C vs Fong, ICI and IBS; the comparison page lists those metrics. Leaves screenshots
in tests/artifacts/ (the README's pictures are copies of them)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import mlflow
import pytest
import yaml

from crlm import tracking
from crlm.cohort.simulate import simulate_cohort
from crlm.config import load_config
from crlm.tracking_server import server_env, stop_server, wait_until_up
from crlm.training import run_job

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--no-first-run"]
pytestmark = [
    pytest.mark.slow, pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (`make browser` installs it)"),
]
NAME = "crlm-dashtest-os"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    simulate_cohort(220, 6).data.to_csv(root / "cohort.csv", index=False)
    config = {"job": "dash-test", "cohort": {"file": str(root / "cohort.csv"), "name": "dashtest"},
              "endpoint": "os", "horizons": [12, 36], "models": ["coxph", "coxnet"], "baselines": ["score:fong"],
              "search_spaces": {"coxnet": {}}, "n_interval_models": 5, "n_jobs": 1,
              "resampling": {"outer_repeats": 1, "outer_splits": 2, "inner_splits": 2, "n_boot": 20,
                             "optimism_boot": 8},  # the default 200 headline refits: not what is tested
              "export_dir": str(root / "models" / NAME)}
    (root / "job.yaml").write_text(yaml.safe_dump(config))
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    outcome = run_job(load_config(root / "job.yaml"), log=lambda _: None)
    yield root, outcome
    mp.undo()


@pytest.fixture(scope="module")
def ui(store):
    root, _ = store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow_bin, "ui", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--host",
                             "127.0.0.1", "--port", str(port)], env=server_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, 90, proc)
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        try:
            yield browser.new_context(viewport={"width": 1500, "height": 820}).new_page()
        finally:
            browser.close()


def test_the_printed_link_opens_the_model_comparison_with_readable_rows(store, ui, page):
    _, outcome = store
    experiment = mlflow.get_experiment_by_name(NAME)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    link = tracking.dashboard_url(experiment.experiment_id, ui)
    page.goto(link)
    board = outcome.result.leaderboard().set_index("model")
    coxph = board.loc["coxph"]
    row = page.get_by_text(f"dash-test · coxph · C {coxph.harrell_c:.3f} {coxph.harrell_c_ci}", exact=False)
    row.first.wait_for(timeout=60_000)
    body = page.inner_text("body")
    assert "Token Usage" not in body and "Runs" in body  # the training runs list, not the GenAI overview
    for model in ("coxph", "coxnet", "score:fong"):  # every model is a row of its own, none folded under the job
        assert page.get_by_text(f"dash-test · {model} · C ", exact=False).count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "mlflow_runs.png"))


def test_the_comparison_page_lists_c_delta_ici_and_ibs(store, ui, page):
    experiment = mlflow.get_experiment_by_name(NAME)
    runs = mlflow.search_runs(experiment_names=[NAME], filter_string="tags.crlm_role = 'model'")
    page.goto(f"{ui}/#/compare-runs?runs={quote(json.dumps(list(runs.run_id)))}"
              f"&experiments={quote(json.dumps([experiment.experiment_id]))}")
    page.get_by_text("Run details").first.wait_for(timeout=60_000)
    page.get_by_text("Run details").first.scroll_into_view_if_needed()
    body = page.inner_text("body")
    # the headline metrics come first in the (alphabetical, truncated) metrics table
    for metric in ("1_C_harrell", "1_C_harrell_ci_low", "1_C_harrell_ci_high", "2_delta_C_vs_reference",
                   "2_delta_C_vs_reference_ci_low", "3_ICI_36", "4_IBS"):
        assert f"\n{metric}\n" in f"\n{body}\n", metric
    assert body.count("ΔC vs fong") == 2  # the learned models' names carry the paired delta vs the reference
    page.get_by_text("1_C_harrell", exact=True).first.scroll_into_view_if_needed()  # the headline rows in view
    page.screenshot(path=str(ARTIFACTS / "mlflow_compare.png"))
