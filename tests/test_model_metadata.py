"""The typed metadata document (``crlm.model_metadata``): one shape, lossless round trips, old bundles load."""

from __future__ import annotations

import dataclasses
import json

import pytest

from crlm.model_metadata import REGISTRATION_FILE, ModelMetadata, Registration
from crlm.predictor import Predictor

DOCUMENT = {"model_name": "coxph", "endpoint": "os", "cohort": "tcia-crlm", "patients": 197, "events": 120,
            "horizons": [12.0, 36.0, 60.0], "caveats": ["**Single centre:** one institution."],
            "headline": {"harrell_c": {"apparent": 0.7, "optimism": 0.02, "corrected": 0.68}},
            "calibration": {"36": {"ici_before": 0.04, "ici_after": 0.02}}, "schema_version": "1"}


def test_round_trip_is_lossless_and_keeps_unknown_keys():
    legacy = DOCUMENT | {"registered_name": "crlm-tcia-os", "version": "3", "a_future_key": [1, 2]}
    meta = ModelMetadata.from_dict(legacy)
    assert meta.patients == 197 and meta.headline["harrell_c"]["corrected"] == 0.68
    assert meta.extra == {"registered_name": "crlm-tcia-os", "version": "3", "a_future_key": [1, 2]}
    assert meta.to_dict() == legacy
    assert ModelMetadata.from_json(meta.to_json()) == meta
    assert json.loads(meta.to_json()) == legacy


def test_missing_keys_are_unknown_not_invented():
    meta = ModelMetadata.from_dict({"model_name": "coxph"})
    assert meta.patients is None and meta.headline is None and meta.caveats is None and meta.simulated is None
    assert meta.to_dict() == {"model_name": "coxph"}  # nothing is written that was not known
    assert "patients" not in meta and meta.get("patients", "absent") == "absent"
    with pytest.raises(KeyError):
        meta["headline"]
    assert ModelMetadata.from_dict(None) == ModelMetadata()


def test_the_document_is_frozen_and_reads_as_a_mapping():
    meta = ModelMetadata.from_dict(DOCUMENT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.patients = 5
    with pytest.raises(TypeError):
        meta["patients"] = 5  # no item assignment either
    assert dict(meta) == DOCUMENT and meta["cohort"] == "tcia-crlm" and len(meta) == len(DOCUMENT)
    changed = meta.replace(patients=200, model_card="# card")
    assert (changed.patients, changed.model_card, meta.patients, meta.model_card) == (200, "# card", 197, None)
    assert (meta | {"cohort": "other"}).cohort == "other" and meta.cohort == "tcia-crlm"
    assert ModelMetadata.coerce(meta) is meta and ModelMetadata.coerce(DOCUMENT) == meta


def test_building_with_an_unknown_key_is_refused():
    with pytest.raises(TypeError, match="no_such_key"):
        ModelMetadata(**(DOCUMENT | {"no_such_key": 1}))


def test_a_predictor_holds_the_typed_document_whatever_it_is_given():
    predictor = Predictor.__new__(Predictor)
    predictor.__setstate__({"model_name": "coxph", "metadata": dict(DOCUMENT)})  # a bundle pickled with a dict
    assert isinstance(predictor.metadata, ModelMetadata) and predictor.metadata.patients == 197
    predictor.metadata = {"cohort": "x"}
    assert isinstance(predictor.metadata, ModelMetadata) and predictor.metadata.cohort == "x"


def test_registration_beside_the_bundle(tmp_path):
    assert Registration.read(tmp_path) == Registration()  # never registered: unknown
    legacy = ModelMetadata.from_dict(DOCUMENT | {"registered_name": "crlm-tcia-os", "version": 3, "alias": None})
    assert Registration.read(tmp_path, legacy) == Registration("crlm-tcia-os", "3", None)  # an old bundle
    Registration("crlm-tcia-os", "4", "champion").write(tmp_path)
    assert json.loads((tmp_path / REGISTRATION_FILE).read_text())["version"] == "4"
    assert Registration.read(tmp_path, legacy) == Registration("crlm-tcia-os", "4", "champion")
