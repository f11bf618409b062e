"""A job's defaults are defined once and every consumer reads the same ones."""

from __future__ import annotations

import dataclasses
import inspect

import yaml

from crlm.config import JobConfig
from crlm.evaluation.benchmark import BenchmarkSpec
from crlm.features import model_columns
from crlm.models import DEFAULT_BASELINES, DEFAULT_MODELS, MODEL_NAMES, make_model
from crlm.predictor_training import train_predictor
from crlm.schema import DEFAULT_BLOCKS, DEFAULT_HORIZONS_MONTHS, PREDICTOR_BLOCKS, predictor_fields
from crlm.workspace import init_workspace


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_job_config_and_benchmark_spec_share_the_defaults():
    job = JobConfig(job="x", cohort={"simulate": {"n": 100}})
    spec = {f.name: f.default for f in dataclasses.fields(BenchmarkSpec)}
    assert tuple(job.horizons) == tuple(spec["horizons"]) == DEFAULT_HORIZONS_MONTHS
    assert tuple(job.blocks) == tuple(spec["blocks"]) == DEFAULT_BLOCKS
    assert tuple(job.models) == tuple(spec["models"]) == DEFAULT_MODELS
    assert tuple(job.baselines) == tuple(spec["baselines"]) == DEFAULT_BASELINES


def test_the_defaults_are_known_names():
    assert set(DEFAULT_MODELS) | set(DEFAULT_BASELINES) <= set(MODEL_NAMES)
    assert set(DEFAULT_BLOCKS) <= set(PREDICTOR_BLOCKS) and "operative" not in DEFAULT_BLOCKS  # preoperative
    assert all(h > 0 for h in DEFAULT_HORIZONS_MONTHS) and list(DEFAULT_HORIZONS_MONTHS) == sorted(DEFAULT_HORIZONS_MONTHS)


def test_builders_default_to_the_same_blocks_and_horizons():
    assert _default(train_predictor, "blocks") == DEFAULT_BLOCKS
    assert _default(train_predictor, "horizons") == DEFAULT_HORIZONS_MONTHS
    assert _default(make_model, "blocks") == DEFAULT_BLOCKS
    assert model_columns() == [f.name for f in predictor_fields(DEFAULT_BLOCKS)]


def test_a_new_workspace_job_starts_from_the_defaults(tmp_path):
    written = init_workspace(tmp_path / "centre", None, "centre")
    (config,) = [p for p in written if p.parent.name == "configs"]
    job = yaml.safe_load(config.read_text())
    assert tuple(job["horizons"]) == DEFAULT_HORIZONS_MONTHS
    assert tuple(job["blocks"]) == DEFAULT_BLOCKS
