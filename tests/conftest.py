from pathlib import Path

import pytest

from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.benchmark import BenchmarkSpec, run_benchmark

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parents[1]


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def small_benchmark():
    """One small benchmark (Cox and the Fong score on 300 simulated patients), built once per session and
    shared by the files that only read it (the figures, the model card). Returns (cohort, result)."""
    cohort = simulate_cohort(300, seed=3)
    spec = BenchmarkSpec(models=("coxph",), baselines=("score:fong",), outer_repeats=1, outer_splits=2,
                         inner_splits=2, n_boot=20, ablation_models=0)
    return cohort, run_benchmark(cohort, spec)


# The end-to-end files, longest first (measured with --durations on an idle 2-core machine): under xdist
# (`make test` runs two workers, whole files per worker) they start first, so that the short files fill in
# around them and both workers finish together. Only the order changes; every test still runs.
LONGEST_FIRST = ("test_serve_http", "test_interrupted_jobs", "test_centre_end_to_end", "test_dashboard",
                 "test_tracking_server", "test_browser", "test_cluster", "test_training", "test_predictor",
                 "test_references", "test_benchmark", "test_wheel_serve")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: file order kept otherwise
