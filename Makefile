# The README's two commands: `make demo` (the main job on the embedded data) and `make test`.
# Both set up a fresh machine from a clean clone: a virtual environment with the pinned stack.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)

.PHONY: demo test test-fast lint setup browser clean tracking-server

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP)

# Debian's Chromium for the web calculator's browser test (the project installs it; nothing by hand).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	$(BIN)/crlm demo

# Two pytest-xdist workers (whole files per worker: a module's fixtures are built once), one per core of the
# 2-core machine the suite is sized for; TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP) browser
	$(BIN)/ruff check src tests
	$(PYTEST)

# The edit loop: everything except the end-to-end runs (real servers, browsers, training jobs) marked slow.
test-fast: $(STAMP)
	$(PYTEST) -q -m "not slow"

# A shared MLflow tracking server (SQLite + artifact root in mlflow-server/; see the README for a team database).
tracking-server: $(STAMP)
	$(BIN)/crlm tracking-server

# The public API whose docstrings numpydoc validates (the objects checked: [tool.numpydoc_validation] in
# pyproject.toml). `make lint` is separate from `make test` (mypy alone takes about a minute).
NUMPYDOC_FILES := src/crlm/predictor.py src/crlm/predictor_training.py src/crlm/evaluation/benchmark.py src/crlm/scores.py src/crlm/schema.py \
	$(addprefix src/crlm/models/,base.py linear.py trees.py xgb.py prior_cox.py score_cox.py ensemble.py extra_features.py)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/numpydoc lint $(NUMPYDOC_FILES)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) mlflow.db mlartifacts mlflow-server .pytest_cache
