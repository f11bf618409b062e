"""The web calculator in Debian's Chromium (headless, driven by playwright): fill the form, submit, and check
the rendered 1/3/5-year figures against the API's answer for the same patient. Leaves a screenshot."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

pytest_plugins = ["serving_fixtures"]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--no-first-run",
               "--disable-component-update", "--disable-sync"]
pytestmark = [
    pytest.mark.slow, pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (`make browser` installs it)"),
]

# What a clinician types (values the form offers; selects use the schema's categories).
INPUTS = {"age_years": "67", "n_liver_metastases": "4", "largest_metastasis_cm": "5.5", "cea_ng_ml": "240",
          "disease_free_interval_months": "7", "body_mass_index": "26.5"}
CHOICES = {"sex": "female", "primary_side": "right", "primary_node_positive": "true", "kras_status": "mutant",
           "extrahepatic_disease": "false", "bilobar_disease": "true", "primary_t_stage": "T3"}
PATIENT = {"age_years": 67.0, "n_liver_metastases": 4, "largest_metastasis_cm": 5.5, "cea_ng_ml": 240.0,
           "disease_free_interval_months": 7.0, "body_mass_index": 26.5, "sex": "female", "primary_side": "right",
           "primary_node_positive": True, "kras_status": "mutant", "extrahepatic_disease": False,
           "bilobar_disease": True, "primary_t_stage": "T3"}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, live_server):
    """A page that may only reach the live server: anything else is aborted and recorded."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.foreign = []
    allowed = urlparse(live_server.url).netloc

    def guard(route):
        url = urlparse(route.request.url)
        if url.scheme in ("data", "blob") or url.netloc == allowed:
            route.continue_()
        else:
            page.foreign.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.console_errors = []
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: page.console_errors.append(str(err)))
    yield page
    context.close()


def open_calculator(page, live_server):
    page.goto(f"{live_server.url}/ui/")
    page.wait_for_selector("body[data-state='ready']")
    page.wait_for_selector("#f-age_years")


def test_calculator_matches_the_api(page, live_server):
    open_calculator(page, live_server)
    for name, value in INPUTS.items():
        page.fill(f"#f-{name}", value)
    for name, value in CHOICES.items():
        page.select_option(f"#f-{name}", value)
    page.click("#submit")
    page.wait_for_selector("body[data-state='done']", timeout=30_000)

    answer = httpx.post(f"{live_server.url}/predict", json={"patient": PATIENT}, timeout=60).json()
    for ep in ("os", "rfs"):
        for h in answer[ep]["horizons"]:
            cell = f"#{ep}-{h['months']:g}"
            assert page.inner_text(f"{cell} .pct") == f"{100 * h['survival']:.1f}%"
            assert page.inner_text(f"{cell} .ci") == f"({100 * h['lower']:.1f}\u2013{100 * h['upper']:.1f})"
        assert page.inner_text(f"#{ep}-group") == answer[ep]["risk_group"]
        assert page.locator(f"#contrib-{ep} .bar-row").count() == len(answer[ep]["contributions"]) > 0
        assert page.locator(f"#chart polyline[data-series='{ep}']").count() == 1
        assert page.locator(f"#chart polygon[data-series='{ep}-band']").count() == 1
    for name in ("fong", "game", "mcs", "tbs", "nordlinger"):
        row = page.inner_text(f"#score-{name}")
        group = answer["scores"][name]["group"]
        assert (group or "not computable") in row
    assert "Not for clinical use without local validation" in page.inner_text("body")
    assert "simulated" in page.inner_text("#model-line")
    assert page.foreign == [], f"the page tried to reach {page.foreign}"
    assert page.console_errors == []

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "calculator.png"), full_page=True)
    assert (ARTIFACTS / "calculator.png").stat().st_size > 10_000


def test_form_enforces_ranges_and_shows_server_errors(page, live_server):
    open_calculator(page, live_server)
    assert page.get_attribute("#f-age_years", "min") == "18" and page.get_attribute("#f-age_years", "max") == "100"
    assert page.get_attribute("#f-n_liver_metastases", "step") == "1"
    options = page.eval_on_selector_all("#f-sex option", "els => els.map(e => e.value)")
    assert options == ["", "male", "female"]
    page.fill("#f-age_years", "140")
    page.fill("#f-n_liver_metastases", "2")
    page.fill("#f-largest_metastasis_cm", "3")
    page.click("#submit")
    page.wait_for_selector("#form-error:not([hidden])")
    assert page.locator(".field.invalid[data-field='age_years']").count() == 1
    assert page.is_hidden("#results-body")
    # the example patient is valid and gets an answer
    page.click("#example")
    page.click("#submit")
    page.wait_for_selector("body[data-state='done']", timeout=30_000)
    assert page.inner_text("#os-12 .pct").endswith("%")
    assert page.foreign == []


# ---------------------------------------------------------------------------------------------- issue 13

@pytest.fixture(scope="module")
def set_server(model_set_dir, tmp_path_factory):
    """A real server on the model set: the simulated pair and a centre's (real-described) pair."""
    from serving_fixtures import LiveServer

    server = LiveServer(model_set_dir, workers=1, log_path=tmp_path_factory.mktemp("set-server") / "bentoml.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def set_page(browser, set_server):
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: page.console_errors.append(str(err)))
    page.on("response", lambda r: page.console_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield page
    context.close()


def submit_and_wait(page):
    page.click("#submit")
    page.wait_for_selector("body[data-state='done']", timeout=30_000)


def assert_cell(page, selector, x):
    assert page.inner_text(f"{selector} .pct") == f"{100 * x['survival']:.1f}%"
    assert page.inner_text(f"{selector} .ci") == f"({100 * x['lower']:.1f}\u2013{100 * x['upper']:.1f})"


def test_models_scenarios_conditional_and_print(set_page, set_server):
    from crlm.cohort_kind import DEMONSTRATION_LABEL

    page, url = set_page, set_server.url
    page.goto(f"{url}/ui/")
    page.wait_for_selector("body[data-state='ready']")
    # the real-patient pair is the default; its form does not ask for largest_metastasis_cm, offers the centre's field
    assert page.input_value("#model-os") == "centre-os" and page.input_value("#model-rfs") == "centre-rfs"
    assert page.locator(".field[data-field='largest_metastasis_cm'] .req").count() == 0
    assert page.locator(".field[data-field='age_years'] .req").count() == 1
    assert page.locator("#f-tmb_mut_mb").count() == 1
    assert "centre-x" in page.inner_text("#model-cohorts") and "300 patients" in page.inner_text("#model-cohorts")
    patient = {"age_years": 58.0, "n_liver_metastases": 3, "tmb_mut_mb": 6.5, "sex": "female"}
    page.fill("#f-age_years", "58")
    page.fill("#f-n_liver_metastases", "3")
    page.fill("#f-tmb_mut_mb", "6.5")
    page.select_option("#f-sex", "female")
    page.fill("#f-event_free_at_months", "24")
    page.check("#f-scenarios")
    submit_and_wait(page)
    api = httpx.post(f"{url}/predict", json={"patient": patient, "event_free_at_months": 24, "scenarios": True},
                     timeout=60).json()
    for ep in ("os", "rfs"):
        for h in api[ep]["horizons"]:
            assert_cell(page, f"#{ep}-{h['months']:g}", h)
        for h in api["conditional"][ep]["horizons"]:
            if h["available"]:
                assert_cell(page, f"#cond-{ep}-{h['months_from_now']:g}", h)
        assert page.locator(f"#conditional-chart polyline[data-series='cond-{ep}']").count() == 1
        assert "centre-x" in page.inner_text(f"#answer-model-{ep}")
        assert DEMONSTRATION_LABEL not in page.inner_text(f"#answer-model-{ep}")
    assert "no scenarios" in page.inner_text("#scenario-label")  # the centre's models do not use the response
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "calculator-real-conditional.png"), full_page=True)

    # the simulated pair: labelled, asks for largest_metastasis_cm, and has response scenarios
    page.select_option("#model-os", "crlm-sim-os")
    page.select_option("#model-rfs", "crlm-sim-rfs")
    page.wait_for_selector("#f-tmb_mut_mb", state="detached")  # no model of the pair declares it
    assert page.locator(".field[data-field='largest_metastasis_cm'] .req").count() == 1
    assert page.input_value("#f-age_years") == "58"  # what was typed is kept
    sim_patient = {"age_years": 58.0, "n_liver_metastases": 3, "sex": "female", "largest_metastasis_cm": 4.0,
                   "neoadjuvant_chemotherapy": True, "recist_response": "PD"}
    page.fill("#f-largest_metastasis_cm", "4")
    page.select_option("#f-neoadjuvant_chemotherapy", "true")
    page.select_option("#f-recist_response", "PD")
    page.fill("#f-event_free_at_months", "")
    submit_and_wait(page)
    models = {"os": "crlm-sim-os", "rfs": "crlm-sim-rfs"}
    api = httpx.post(f"{url}/predict", json={"patient": sim_patient, "scenarios": True, "models": models},
                     timeout=60).json()
    assert DEMONSTRATION_LABEL in page.inner_text("#answer-model-os")
    assert DEMONSTRATION_LABEL in page.inner_text("#answered-by")
    assert page.is_hidden("#conditional-box")
    for ep in ("os", "rfs"):
        sc = api["scenarios"][ep]
        assert sc["available"]
        for item in sc["scenarios"]:
            if not item["available"]:
                continue
            for h in item["horizons"]:
                assert_cell(page, f"#scn-{ep}-{item['key']}-{h['months']:g}", h)
        n_curves = sum(s["available"] for s in sc["scenarios"])
        assert page.locator(f"#scenario-chart-{ep} polyline").count() == n_curves >= 4
    assert "not the effect of a treatment" in page.inner_text("#scenario-label")
    assert page.locator("#scenario-rows tr").count() == 5
    page.screenshot(path=str(ARTIFACTS / "calculator-simulated-scenarios.png"), full_page=True)

    # the print layout: inputs, curves, tables, scores, contributions, models and cohorts, the date
    page.emulate_media(media="print")
    assert page.is_hidden("#patient-form") and page.is_hidden("#model-picker")
    assert page.is_visible("#print-header") and page.is_visible("#chart") and page.is_visible("#scores-table")
    assert page.is_visible("#contrib-os") and page.is_visible("#scenario-table")
    printed = page.inner_text("#print-header")
    assert "Printed 20" in printed and "crlm-sim-os" in printed and DEMONSTRATION_LABEL in printed
    assert "Largest metastasis" in printed or "largest metastasis" in printed.lower()
    page.screenshot(path=str(ARTIFACTS / "calculator-print.png"), full_page=True)
    page.pdf(path=str(ARTIFACTS / "calculator-print.pdf"))
    assert (ARTIFACTS / "calculator-print.pdf").stat().st_size > 10_000
    assert page.console_errors == []
