"""The contract between training, the Predictor, the model card, tracking and serving: ``ModelMetadata``.

One frozen, typed document per Predictor, built once (``crlm.predictor_training.train_predictor``; a new centre's
recalibration derives a new one with ``replace``), serialised once (``to_dict`` / ``to_json``: the bundle's
``metadata.json``, identical in the MLflow registry's copy of the model) and read by the model card, tracking and
serving. ``from_dict`` accepts older and newer bundles: a key it does not know is kept, untouched, in ``extra``
(and written back by ``to_dict``); a key a bundle lacks is ``None``, honestly unknown, never a made-up value.

The registry identity (registered name, version, alias) is not part of the document: it is known only after the
model was logged, so it lives beside the bundle in ``registration.json`` (``Registration``).

``ModelMetadata`` also reads as a read-only mapping (``meta["cohort"]``, ``meta.get("headline")``, ``dict(meta)``)
over the keys it has: a field that is ``None`` is absent, as in the JSON.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGISTRATION_FILE = "registration.json"
LEGACY_REGISTRATION_KEYS = ("registered_name", "version", "alias")  # written into metadata.json before


@dataclass(frozen=True)
class ModelMetadata(Mapping):
    """What a Predictor is and how it was built and judged (JSON-able; every field ``None`` when unknown).

    Attributes
    ----------
    model_name, params, endpoint, endpoint_label, endpoint_description, event
        The model (zoo name and its hyperparameters) and the endpoint it predicts.
    cohort, cohort_source, licence, citation, caveats, simulated
        The training cohort as its mapping (or the simulator) declared it; ``caveats`` are the dataset's
        limitations in words, ``simulated`` whether its patients are synthetic.
    patients, events, max_follow_up_months, horizons, feature_blocks, postoperative
        The training set and the prediction horizons (months).
    fields_used, used_fields, required_fields, accepted_fields, extra_fields, plain_imputation, response_profile
        The inputs (``crlm.predictor.Predictor.input_metadata``) and a centre's own fields.
    calibration, recalibration, recalibration_applied, interval, interval_method, explainer, risk_groups
        How the answer is calibrated, bounded and explained.
    selection_rule, job, reference, score_coverage, validation, metrics, delta_c_vs_reference,
    champion_verdict, ici_noise_floor, headline
        The training job's benchmark (nested cross-validation) and, for the champion, its decision and its
        optimism-corrected headline.
    recalibrated_for, recalibration_cohort, ..., source_uri
        A model recalibrated for a new centre (``crlm.centre``): the centre, its cohort and the source model.
    model_card
        The model card (Markdown).
    package_versions, created_at, schema_version, schema_fields
        Reproducibility.
    extra
        Keys this version of crlm does not know (kept as they were read).
    """

    model_name: str | None = None
    params: dict | None = None
    endpoint: str | None = None
    endpoint_label: str | None = None
    endpoint_description: str | None = None
    event: str | None = None
    cohort: str | None = None
    cohort_source: str | None = None
    licence: str | None = None
    citation: str | None = None
    caveats: list[str] | None = None
    simulated: bool | None = None
    patients: int | None = None
    events: int | None = None
    max_follow_up_months: float | None = None
    horizons: list[float] | None = None
    feature_blocks: list[str] | None = None
    postoperative: bool | None = None
    fields_used: list[str] | None = None
    used_fields: list[str] | None = None
    required_fields: list[str] | None = None
    accepted_fields: list[str] | None = None
    extra_fields: list[dict] | None = None
    plain_imputation: list[str] | None = None
    response_profile: dict | None = None
    calibration: dict | None = None
    recalibration: str | None = None
    recalibration_applied: bool | None = None
    interval: str | None = None
    interval_method: str | None = None
    explainer: str | None = None
    risk_groups: str | None = None
    selection_rule: str | None = None
    job: str | None = None
    reference: str | None = None
    score_coverage: list[dict] | None = None
    validation: str | None = None
    metrics: dict | None = None
    delta_c_vs_reference: dict | None = None
    champion_verdict: str | None = None
    ici_noise_floor: dict | None = None
    headline: dict | None = None
    recalibrated_for: str | None = None
    recalibration_cohort: str | None = None
    recalibration_cohort_patients: int | None = None
    recalibration_cohort_events: int | None = None
    recalibration_method: str | None = None
    recalibration_held_out: list[dict] | None = None
    recalibration_centre: str | None = None
    source_model: str | None = None
    source_version: str | None = None
    source_uri: str | None = None
    model_card: str | None = None
    package_versions: dict | None = None
    created_at: str | None = None
    schema_version: str | None = None
    schema_fields: dict | None = None
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The document's keys (``extra`` excluded)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelMetadata:
        """The document of a bundle's ``metadata.json`` (or a legacy ``Predictor.metadata`` dict).

        Parameters
        ----------
        data : mapping or None
            Missing keys are ``None``; unknown keys go to ``extra`` unchanged.

        Returns
        -------
        ModelMetadata
        """
        data = dict(data or {})
        known = set(cls.field_names())
        extra = dict(data.pop("extra", None) or {}) | {k: v for k, v in data.items() if k not in known}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)

    @classmethod
    def coerce(cls, value: ModelMetadata | Mapping[str, Any] | None) -> ModelMetadata:
        """``value`` itself when already typed, else ``from_dict(value)``."""
        return value if isinstance(value, cls) else cls.from_dict(value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: every known field (``None`` ones left out) and the ``extra`` keys."""
        out = {name: getattr(self, name) for name in self.field_names() if getattr(self, name) is not None}
        return out | {k: v for k, v in self.extra.items() if k not in out}

    def to_json(self) -> str:
        """``to_dict`` as indented JSON (numpy scalars and other non-JSON values as text)."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        """The inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> ModelMetadata:
        """A new document with ``changes`` (unknown keys go to ``extra``); this one is unchanged."""
        return type(self).from_dict(self.to_dict() | changes)

    def __or__(self, other: Mapping[str, Any]) -> ModelMetadata:
        return self.replace(**dict(other))

    # ------------------------------------------------------------------ read-only mapping view

    def __getitem__(self, key: str) -> Any:
        if key in self.extra and key not in self.field_names():
            return self.extra[key]
        value = getattr(self, key, None) if key in self.field_names() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True)
class Registration:
    """Under which registry name, version and alias a bundle was published (``registration.json``)."""

    registered_name: str | None = None
    version: str | None = None
    alias: str | None = None

    def write(self, directory: str | Path) -> Path:
        """Write ``registration.json`` into the bundle ``directory``."""
        path = Path(directory) / REGISTRATION_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))
        return path

    @classmethod
    def read(cls, directory: str | Path, metadata: ModelMetadata | None = None) -> Registration:
        """The bundle's registration; a bundle from before ``registration.json`` kept it in its metadata
        (``extra``); none at all (a bundle never registered) is all ``None``."""
        path = Path(directory) / REGISTRATION_FILE
        if path.exists():
            data = json.loads(path.read_text())
        else:
            data = {k: v for k, v in (metadata.extra if metadata else {}).items() if k in LEGACY_REGISTRATION_KEYS}
        version = data.get("version")
        return cls(data.get("registered_name"), None if version is None else str(version), data.get("alias"))
