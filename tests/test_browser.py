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
