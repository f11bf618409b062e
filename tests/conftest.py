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
