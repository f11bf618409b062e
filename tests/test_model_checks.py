"""The schema version a model is built with, checked against the server's catalogue when it is loaded (issue 15:
every loaded model is checked against its slot, schema version included). Real bundles, trained and loaded
through the server's own store."""

from __future__ import annotations

import dataclasses
import logging
import shutil

from crlm import schema
from crlm.predictor import Predictor
from crlm.serving.settings import ModelConfig
from crlm.serving.store import ModelStore

pytest_plugins = ["serving_fixtures"]

NAMES = {"os": "crlm-sim-os", "rfs": "crlm-sim-rfs"}


def _store(models_dir) -> ModelStore:
    return ModelStore(ModelConfig("bundle", NAMES, models_dir)).load_now()


def _change(monkeypatch, name: str, **changes) -> None:
    """This server's catalogue with ``name`` changed (FIELDS, FIELDS_BY_NAME and SCHEMA_VERSION agree)."""
    fields = tuple(dataclasses.replace(f, **changes) if f.name == name else f for f in schema.FIELDS)
    monkeypatch.setattr(schema, "FIELDS", fields)
    monkeypatch.setitem(schema.FIELDS_BY_NAME, name, dataclasses.replace(schema.FIELDS_BY_NAME[name], **changes))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", f"{schema.SCHEMA_RELEASE}+{schema.catalogue_hash(fields)}")


def test_the_version_follows_what_a_model_depends_on_in_the_catalogue():
    base = schema.catalogue_hash()
    assert f"{schema.SCHEMA_RELEASE}+{base}" == schema.SCHEMA_VERSION
    cea = schema.field("cea_ng_ml")

    def with_cea(**changes):
        return schema.catalogue_hash([dataclasses.replace(cea, **changes) if f is cea else f for f in schema.FIELDS])

    for changes in ({"unit": "ug/l"}, {"maximum": (cea.maximum or 0) + 1}, {"kind": "int"},
                    {"derived_from": ("ca19_9_u_ml",)}):
        assert with_cea(**changes) != base, changes
    marker = schema.field("kras_status")
    recoded = [dataclasses.replace(f, categories=("mutant", "wild_type")) if f is marker else f for f in schema.FIELDS]
    assert schema.catalogue_hash(recoded) != base
    assert with_cea(description="reworded") == base  # words do not change a model's inputs


def test_a_trained_model_records_the_schema_of_the_fields_it_uses(models_dir):
    meta = Predictor.load(models_dir / "crlm-sim-os").metadata
    assert meta["schema_version"] == schema.SCHEMA_VERSION
    used = Predictor.load(models_dir / "crlm-sim-os").fields_used
    assert set(used) <= set(meta["schema_fields"])
    assert meta["schema_fields"]["age_years"]["unit"] == schema.field("age_years").unit
    assert schema.changed_fields(meta["schema_fields"]) == {}
    store = _store(models_dir)
    assert store.state == "ready", store.error


def test_a_model_whose_used_field_changed_is_refused_naming_it(models_dir, monkeypatch):
    used = Predictor.load(models_dir / "crlm-sim-os").fields_used
    assert "age_years" in used
    _change(monkeypatch, "age_years", unit="months", maximum=1200)
    store = _store(models_dir)
    assert store.state == "failed" and store.engine is None
    assert "age_years" in store.error and "'years' -> 'months'" in store.error and "1200" in store.error
    assert schema.SCHEMA_VERSION in store.error


def test_a_model_from_another_catalogue_with_its_fields_unchanged_is_served_with_a_warning(models_dir, monkeypatch,
                                                                                          caplog):
    meta = Predictor.load(models_dir / "crlm-sim-os").metadata
    unused = next(f.name for f in schema.FIELDS if f.name not in meta["schema_fields"] and f.kind == "float")
    _change(monkeypatch, unused, maximum=12345)
    assert meta["schema_version"] != schema.SCHEMA_VERSION
    with caplog.at_level(logging.WARNING, logger="crlm.serving"):
        store = _store(models_dir)
    assert store.state == "ready", store.error
    assert any(meta["schema_version"] in r.getMessage() and "unchanged" in r.getMessage() for r in caplog.records)


def test_a_bundle_without_a_schema_version_is_checked_by_field_names(models_dir, tmp_path, monkeypatch, caplog):
    old = shutil.copytree(models_dir, tmp_path / "models")
    for name in NAMES.values():
        predictor = Predictor.load(old / name)
        predictor.metadata = {k: v for k, v in predictor.metadata.items()
                              if k not in ("schema_version", "schema_fields")}
        predictor.save(old / name)
    with caplog.at_level(logging.WARNING, logger="crlm.serving"):
        assert _store(old).state == "ready"
    assert any("no schema version" in r.getMessage() for r in caplog.records)
    _change(monkeypatch, "age_years", unit="months")  # unknowable for an old bundle: its names still match
    assert _store(old).state == "ready"
    predictor = Predictor.load(old / NAMES["os"])
    predictor.fields_used = [*predictor.fields_used, "no_such_field"]
    predictor.save(old / NAMES["os"])
    store = _store(old)
    assert store.state == "failed" and "no_such_field" in store.error
