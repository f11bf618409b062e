"""Checks of a loaded model against the slot it fills: its endpoint, the patient schema it was trained on and
the versions of the libraries its pickle needs (a centre's own fields count when the model declares them). A model that fails one is refused with the reason."""

from __future__ import annotations

from importlib import metadata as importlib_metadata

from crlm import schema

# Pickles of these libraries are not portable across these version parts (pitfall P4): major.minor, or major.
PICKLE_SENSITIVE = {"scikit-survival": 2, "scikit-learn": 2, "xgboost-cpu": 2, "xgboost": 2, "numpy": 1}


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
    trained = meta.get("package_versions") or {}
    for name, parts in PICKLE_SENSITIVE.items():
        have, built = _installed(name), trained.get(name)
        if have and built and _part(have, parts) != _part(str(built), parts):
            raise ModelRefused(f"{source}: built with {name} {built}, this server has {have}; its pickle is not "
                               "portable across these versions: retrain it, or serve it with the versions it "
                               "was built with")


def _known_endpoint(name: str) -> bool:
    try:
        schema.endpoint(name)
    except ValueError:
        return False
    return True
