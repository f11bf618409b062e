"""Checks of a loaded model against the slot it fills: its endpoint, the patient schema it was trained on and
the versions of the libraries its pickle needs (a centre's own fields count when the model declares them). A
model that fails one is refused with the reason.

The schema (``crlm.schema.SCHEMA_VERSION``, recorded at training as ``metadata["schema_version"]`` with the
signature of each field the model uses, ``metadata["schema_fields"]``):

- the same version: served;
- another version: refused if a field the model uses changed its type, unit, range, categories or derivation
  (``schema.changed_fields``: the message names each field and what changed); served with a warning in the
  log if only fields it does not use changed (a bundle from an older crlm keeps working);
- no version (a bundle from before crlm recorded one): checked by field names only, as before, with a warning.
"""

from __future__ import annotations

import logging
from importlib import metadata as importlib_metadata

from crlm import schema

# Pickles of these libraries are not portable across these version parts (pitfall P4): major.minor, or major.
PICKLE_SENSITIVE = {"scikit-survival": 2, "scikit-learn": 2, "xgboost-cpu": 2, "xgboost": 2, "numpy": 1}
logger = logging.getLogger("crlm.serving")


class ModelRefused(ValueError):
    """A model that cannot fill its slot (the message says which model, which slot and why)."""


def _installed(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def _part(version: str, n: int) -> tuple[str, ...]:
    return tuple(version.split(".")[:n])


def check_slot(endpoint: str, predictor, source: str) -> None:
    """Raise ``ModelRefused`` unless ``predictor`` may answer ``endpoint``.

    Parameters
    ----------
    endpoint : str
        The slot (``os`` or ``rfs``).
    predictor : crlm.predictor.Predictor
        The loaded model.
    source : str
        Where it came from (named in the message).
    """
    meta = dict(getattr(predictor, "metadata", {}) or {})
    declared = {str(v) for v in (getattr(predictor, "endpoint", None), meta.get("endpoint")) if v is not None}
    if not declared:
        raise ModelRefused(f"{source}: the model does not say which endpoint it predicts; it cannot fill the "
                           f"{endpoint} slot")
    canonical = {schema.endpoint(v).name if _known_endpoint(v) else v for v in declared}
    if canonical != {endpoint}:
        raise ModelRefused(f"{source}: a model of {'/'.join(sorted(canonical))} cannot fill the {endpoint} slot "
                           f"(check CRLM_{endpoint.upper()}_MODEL and the bundle directory)")
    declared_extra = {d.get("name") for d in meta.get("extra_fields") or []}  # a centre's own, with their rules
    unknown = sorted(f for f in getattr(predictor, "fields_used", [])
                     if f not in schema.FIELDS_BY_NAME and f not in declared_extra)
    if unknown:
        raise ModelRefused(f"{source}: trained on field(s) this schema does not have ({', '.join(unknown)}): it "
                           "was built with another version of crlm.schema")
    _check_schema(meta, source)
    trained = meta.get("package_versions") or {}
    for name, parts in PICKLE_SENSITIVE.items():
        have, built = _installed(name), trained.get(name)
        if have and built and _part(have, parts) != _part(str(built), parts):
            raise ModelRefused(f"{source}: built with {name} {built}, this server has {have}; its pickle is not "
                               "portable across these versions: retrain it, or serve it with the versions it "
                               "was built with")


def _check_schema(meta: dict, source: str) -> None:
    """The schema version rule of the module docstring (refuses, warns or passes)."""
    recorded = meta.get("schema_version")
    if recorded is None:
        logger.warning("%s records no schema version (built before crlm recorded one): checked by field names "
                       "only", source)
        return
    if recorded == schema.SCHEMA_VERSION:
        return
    changed = schema.changed_fields(meta.get("schema_fields") or {})
    if changed:
        what = "; ".join(f"{name}: {change}" for name, change in sorted(changed.items()))
        raise ModelRefused(f"{source}: built with patient schema {recorded}, this server has "
                           f"{schema.SCHEMA_VERSION}, and field(s) the model uses changed ({what}): retrain it "
                           "with this version of crlm")
    if not meta.get("schema_fields"):
        logger.warning("%s: built with patient schema %s (this server: %s) without the signatures of its fields: "
                       "checked by field names only", source, recorded, schema.SCHEMA_VERSION)
        return
    logger.warning("%s: built with patient schema %s, this server has %s; the fields the model uses are "
                   "unchanged, so it is served", source, recorded, schema.SCHEMA_VERSION)


def _known_endpoint(name: str) -> bool:
    try:
        schema.endpoint(name)
    except ValueError:
        return False
    return True
