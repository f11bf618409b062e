"""The patient field catalogue: the single source of truth for every patient field.

Each field is declared once here (name, type, unit, valid range or categories, block, timing,
description). Generated from it: the pandera schema that validates a cohort, the pydantic model of one
patient (the API's input), the feature pipeline's column lists and ``data/DATA_DICTIONARY.md``.

Conventions: snake_case names with the unit in the name; times in months; genomic markers are
``mutant`` / ``wild_type`` / ``unknown`` (unknown is information, not an error); yes/no fields are booleans.
This module imports nothing of ours.
"""

from __future__ import annotations

__all__ = [
    "Block", "catalogue_hash", "changed_fields", "DEFAULT_HORIZONS_MONTHS",
    "Endpoint", "endpoint", "ENDPOINT_ALIASES", "ENDPOINTS", "Field", "field",
    "field_signature", "FIELDS", "FIELDS_BY_NAME", "input_fields", "Kind", "LABELS", "MARKER_VALUES",
    "model_fields", "outcome_fields", "patient_model", "PREDICTOR_BLOCKS",
    "predictor_fields", "schema_stamp", "SCHEMA_VERSION", "Timing",
]

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, create_model
from pydantic import Field as PydField

Kind = Literal["float", "int", "bool", "category", "string"]
Block = Literal["id", "clinical", "genomic", "response", "operative", "score", "outcome"]
Timing = Literal["preoperative", "postoperative", "outcome", "none"]

MARKER_VALUES = ("mutant", "wild_type", "unknown")
PREDICTOR_BLOCKS = ("clinical", "genomic", "response", "operative")
DEFAULT_BLOCKS: tuple[str, ...] = ("clinical", "genomic", "response")  # a job's default: preoperative blocks
DEFAULT_HORIZONS_MONTHS = (12.0, 36.0, 60.0)


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    block: Block
    timing: Timing
    description: str
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None
    required_for_prediction: bool = False  # the API refuses a patient without it
    derived_from: tuple[str, ...] = ()  # filled from these fields when absent

    @property
    def label(self) -> str:
        """Short label for forms and explanations ("CEA", "Node-positive primary")."""
        return LABELS.get(self.name, self.name.replace("_", " ").capitalize())

    @property
    def rule(self) -> str:
        """The validation rule in words, as reports and API errors show it."""
        if self.kind == "category":
            return f"one of {', '.join(self.categories or ())}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "string":
            return "text"
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        kind = "integer" if self.kind == "int" else "number"
        return f"{kind} {' and '.join(bounds)}".strip()


def _marker(name: str, gene: str, description: str) -> Field:
    return Field(name, "category", "genomic", "preoperative", description, categories=MARKER_VALUES)


FIELDS: tuple[Field, ...] = (
    Field("patient_id", "string", "id", "none", "Pseudonymous patient identifier (never used as a predictor)."),
    # --- clinical (all known before surgery) -------------------------------------------------------
    Field("age_years", "float", "clinical", "preoperative", "Age at liver resection.", "years", 18, 100,
          required_for_prediction=True),
    Field("sex", "category", "clinical", "preoperative", "Sex.", categories=("male", "female")),
    Field("primary_side", "category", "clinical", "preoperative",
          "Side of the primary tumour: right (caecum to transverse), left (splenic flexure to sigmoid), rectum.",
          categories=("right", "left", "rectum")),
    Field("primary_t_stage", "category", "clinical", "preoperative", "Pathological T stage of the primary.",
          categories=("T1", "T2", "T3", "T4")),
    Field("primary_node_positive", "bool", "clinical", "preoperative",
          "Lymph-node metastases in the primary tumour (pN1-2)."),
    Field("primary_grade", "category", "clinical", "preoperative", "Differentiation of the primary tumour.",
          categories=("well", "moderate", "poor")),
    Field("disease_free_interval_months", "float", "clinical", "preoperative",
          "Months from the primary's diagnosis to detection of the liver metastases; 0 = synchronous.",
          "months", 0, 600),
    Field("synchronous_metastases", "bool", "clinical", "preoperative",
          "Liver metastases found with the primary (derived from the disease-free interval when it is known).",
          derived_from=("disease_free_interval_months",)),
    Field("n_liver_metastases", "int", "clinical", "preoperative", "Number of liver metastases.", "count", 1, 100,
          required_for_prediction=True),
    Field("multiple_metastases", "bool", "clinical", "preoperative",
          "More than one liver metastasis (derived from the count when it is known).",
          derived_from=("n_liver_metastases",)),
    Field("largest_metastasis_cm", "float", "clinical", "preoperative",
          "Largest diameter of the largest liver metastasis (0 only after a complete radiological response).",
          "cm", 0, 30, required_for_prediction=True),
    Field("bilobar_disease", "bool", "clinical", "preoperative", "Metastases in both liver lobes."),
    Field("cea_ng_ml", "float", "clinical", "preoperative", "Serum CEA before liver resection (ng/mL = ug/L).",
          "ng/mL", 0, 100_000),
    Field("ca19_9_u_ml", "float", "clinical", "preoperative", "Serum CA19-9 before liver resection.", "U/mL",
          0, 100_000),
    Field("extrahepatic_disease", "bool", "clinical", "preoperative",
          "Extrahepatic disease present at liver resection (e.g. lung, nodes), treated or resectable."),
    Field("major_comorbidity", "bool", "clinical", "preoperative", "A major comorbidity is present."),
    Field("body_mass_index", "float", "clinical", "preoperative", "Body mass index.", "kg/m2", 10, 80),
    # --- genomic ------------------------------------------------------------------------------------
    _marker("kras_status", "KRAS", "KRAS mutation status of the tumour."),
    _marker("nras_status", "NRAS", "NRAS mutation status of the tumour."),
    _marker("braf_v600e_status", "BRAF", "BRAF V600E mutation status (non-V600E variants count as wild_type)."),
    _marker("pik3ca_status", "PIK3CA", "PIK3CA mutation status of the tumour."),
    Field("ras_status", "category", "genomic", "preoperative",
          "RAS (KRAS or NRAS) status: mutant if either is, wild_type if both are, else unknown.",
          categories=MARKER_VALUES, derived_from=("kras_status", "nras_status")),
    Field("mmr_status", "category", "genomic", "preoperative",
          "Mismatch-repair status: deficient (dMMR/MSI-high) or proficient (pMMR/MSS).",
          categories=("deficient", "proficient", "unknown")),
    # --- response to preoperative chemotherapy -------------------------------------------------------
    Field("neoadjuvant_chemotherapy", "bool", "response", "preoperative",
          "Chemotherapy given before the liver resection."),
    Field("chemo_regimen", "category", "response", "preoperative", "Preoperative chemotherapy backbone.",
          categories=("none", "folfox", "capox", "folfiri", "folfoxiri", "fluoropyrimidine", "other")),
    Field("chemo_biologic", "category", "response", "preoperative", "Biologic agent given with chemotherapy.",
          categories=("none", "bevacizumab", "anti_egfr")),
    Field("chemo_cycles", "int", "response", "preoperative", "Number of preoperative chemotherapy cycles.",
          "cycles", 0, 60),
    Field("chemo_line", "category", "response", "preoperative", "Line of the preoperative chemotherapy.",
          categories=("first", "second_or_later")),
    Field("recist_response", "category", "response", "preoperative",
          "Best RECIST 1.1 response of the liver metastases on preoperative chemotherapy.",
          categories=("CR", "PR", "SD", "PD")),
    Field("tumour_size_change_percent", "float", "response", "preoperative",
          "Change in the sum of target-lesion diameters on chemotherapy (negative = shrinkage).", "%", -100, 500),
    Field("progression_before_surgery", "bool", "response", "preoperative",
          "Progression between the end of chemotherapy and the liver resection."),
    Field("viable_tumour_percent", "float", "response", "postoperative",
          "Residual viable tumour in the resected metastases (pathological response; 0 = complete).", "%", 0, 100),
    # --- operative (postoperative models only) -------------------------------------------------------
    Field("resection_margin", "category", "operative", "postoperative",
          "Resection margin: R0 (>= 1 mm), R1 (< 1 mm, microscopic), R2 (macroscopic residue).",
          categories=("R0", "R1", "R2")),
    Field("major_hepatectomy", "bool", "operative", "postoperative", "Resection of three or more segments."),
    Field("two_stage_hepatectomy", "bool", "operative", "postoperative", "Planned two-stage hepatectomy."),
    Field("portal_vein_embolisation", "bool", "operative", "postoperative",
          "Portal vein embolisation before the resection (part of the operative strategy)."),
    Field("ablation", "bool", "operative", "postoperative", "Ablation of some metastases with the resection."),
    # --- scores recorded by the source cohort ---------------------------------------------------------
    Field("fong_score_recorded", "int", "score", "preoperative",
          "Fong clinical risk score as recorded by the source institution (0-5).", "points", 0, 5),
    # --- outcomes --------------------------------------------------------------------------------------
    Field("os_months", "float", "outcome", "outcome", "Overall survival time from liver resection.", "months",
          0, 600),
    Field("os_event", "bool", "outcome", "outcome", "Death from any cause observed (false = censored)."),
    Field("rfs_months", "float", "outcome", "outcome",
          "Recurrence-free survival time (recurrence or death, whichever first).", "months", 0, 600),
    Field("rfs_event", "bool", "outcome", "outcome", "Recurrence or death observed (false = censored)."),
    Field("liver_rfs_months", "float", "outcome", "outcome",
          "Liver recurrence-free survival time (liver recurrence or death).", "months", 0, 600),
    Field("liver_rfs_event", "bool", "outcome", "outcome", "Liver recurrence or death observed."),
)

FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

LABELS = {
    "age_years": "Age", "sex": "Sex", "primary_side": "Primary tumour side", "primary_t_stage": "Primary T stage",
    "primary_node_positive": "Node-positive primary", "primary_grade": "Primary grade",
    "disease_free_interval_months": "Disease-free interval", "synchronous_metastases": "Synchronous metastases",
    "n_liver_metastases": "Number of liver metastases", "multiple_metastases": "More than one metastasis",
    "largest_metastasis_cm": "Largest metastasis", "bilobar_disease": "Bilobar disease", "cea_ng_ml": "CEA",
    "ca19_9_u_ml": "CA19-9", "extrahepatic_disease": "Extrahepatic disease", "major_comorbidity": "Major comorbidity",
    "body_mass_index": "BMI", "kras_status": "KRAS", "nras_status": "NRAS", "braf_v600e_status": "BRAF V600E",
    "pik3ca_status": "PIK3CA", "ras_status": "RAS", "mmr_status": "MMR status",
    "neoadjuvant_chemotherapy": "Preoperative chemotherapy", "chemo_regimen": "Chemotherapy regimen",
    "chemo_biologic": "Biologic agent", "chemo_cycles": "Chemotherapy cycles", "chemo_line": "Chemotherapy line",
    "recist_response": "RECIST response", "tumour_size_change_percent": "Tumour size change on chemotherapy",
    "progression_before_surgery": "Progression before surgery", "viable_tumour_percent": "Viable tumour",
    "resection_margin": "Resection margin", "major_hepatectomy": "Major hepatectomy",
    "two_stage_hepatectomy": "Two-stage hepatectomy", "portal_vein_embolisation": "Portal vein embolisation",
    "ablation": "Ablation", "fong_score_recorded": "Fong score (recorded)",
}


@dataclass(frozen=True)
class Endpoint:
    name: str
    time: str
    event: str
    description: str


ENDPOINTS: dict[str, Endpoint] = {
    "os": Endpoint("os", "os_months", "os_event", "overall survival"),
    "rfs": Endpoint("rfs", "rfs_months", "rfs_event", "recurrence-free survival (recurrence or death)"),
    "liver_rfs": Endpoint("liver_rfs", "liver_rfs_months", "liver_rfs_event",
                          "liver recurrence-free survival (liver recurrence or death)"),
}
# Published names for the same endpoints (TCIA calls recurrence-or-death "DFS").
ENDPOINT_ALIASES = {"dfs": "rfs", "liver_dfs": "liver_rfs"}


def endpoint(name: str) -> Endpoint:
    """Look an endpoint up by name or published alias.

    Parameters
    ----------
    name : str
        ``os``, ``rfs``, ``liver_rfs`` or an alias (``dfs``, ``liver_dfs``).

    Returns
    -------
    Endpoint
        Its time and event fields and description.

    Raises
    ------
    ValueError
        An unknown endpoint (the known ones are named).
    """
    key = ENDPOINT_ALIASES.get(name, name)
    if key not in ENDPOINTS:
        known = ", ".join(sorted([*ENDPOINTS, *ENDPOINT_ALIASES]))
        raise ValueError(f"unknown endpoint {name!r}; known endpoints: {known}")
    return ENDPOINTS[key]


def field(name: str) -> Field:
    """Look a patient field up by its canonical name.

    Parameters
    ----------
    name : str
        The canonical field name.

    Returns
    -------
    Field
        The field's declaration.

    Raises
    ------
    KeyError
        An unknown field.
    """
    try:
        return FIELDS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown patient field {name!r}") from None


def predictor_fields(blocks: tuple[str, ...] | list[str] = PREDICTOR_BLOCKS, *, postoperative: bool = False
                     ) -> list[Field]:
    """List the fields a model may use: the chosen blocks, postoperative ones only for postoperative models.

    Parameters
    ----------
    blocks : sequence of str
        Feature blocks (``PREDICTOR_BLOCKS``).
    postoperative : bool
        Whether fields known only after surgery may be used.

    Returns
    -------
    list of Field
        In catalogue order.

    Raises
    ------
    ValueError
        An unknown block.
    """
    unknown = set(blocks) - set(PREDICTOR_BLOCKS)
    if unknown:
        raise ValueError(f"unknown feature block(s) {sorted(unknown)}; blocks are {list(PREDICTOR_BLOCKS)}")
    return [f for f in FIELDS if f.block in blocks
            and (postoperative or f.timing == "preoperative")]


def input_fields() -> list[Field]:
    """List the fields a patient record may carry at prediction time (predictors and recorded scores).

    Returns
    -------
    list of Field
        Every field except the outcomes, in catalogue order.
    """
    return [f for f in FIELDS if f.block not in ("outcome",)]


def outcome_fields() -> list[Field]:
    """List the outcome fields (times and event indicators of the endpoints).

    Returns
    -------
    list of Field
        In catalogue order.
    """
    return [f for f in FIELDS if f.block == "outcome"]


# --- generated artefacts -----------------------------------------------------------------------------

def patient_model(required: Iterable[str] | None = None, extra_fields: Iterable[Field] = ()):
    """Build the pydantic model of one patient, the API's input.

    Unknown fields, wrong types and out-of-range values are refused with the field's name and the rule.
    Strict types: no string is read as a number, no number or string as a yes/no; the one conversion is JSON's
    own, an integer for a decimal field (``60`` for 60.0).

    Parameters
    ----------
    required : iterable of str, optional
        The fields a patient must give (default: the schema's ``required_for_prediction``; a served model
        needs only those it uses).
    extra_fields : iterable of Field
        A centre's own fields, accepted beside the schema's.

    Returns
    -------
    type[pydantic.BaseModel]
        The model class ``Patient``.

    Examples
    --------
    >>> Patient = patient_model()
    >>> Patient(age_years=64, n_liver_metastases=2, largest_metastasis_cm=3.5).kras_status is None
    True
    """
    definitions: dict[str, Any] = {}
    must = None if required is None else set(required)
    for f in (*input_fields(), *extra_fields):
        if f.block == "id":
            annotation: object = str | None
            definitions[f.name] = (annotation, PydField(None, description=f.description, max_length=64,
                                                        pattern=r"^[^\x00-\x1f\x7f]*$"))
            continue
        if f.kind == "category":
            annotation = Literal[f.categories]
        elif f.kind == "bool":
            annotation = bool
        elif f.kind == "int":
            annotation = int
        else:
            annotation = float
        constraints: dict[str, Any] = {}
        if f.minimum is not None:
            constraints["ge"] = f.minimum
        if f.maximum is not None:
            constraints["le"] = f.maximum
        description = f.description + (f" Unit: {f.unit}." if f.unit else "")
        if f.required_for_prediction if must is None else f.name in must:
            definitions[f.name] = (annotation, PydField(..., description=description, **constraints))
        else:
            definitions[f.name] = (annotation | None, PydField(None, description=description, **constraints))
    return create_model("Patient", __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False),
                        **definitions)


# --- the schema's version ------------------------------------------------------------------------------

# Raised by hand when the catalogue's meaning changes in a way its content hash cannot see (a field's values
# re-coded under the same name, type, unit and range); the hash follows every other change.
SCHEMA_RELEASE = "1"


def field_signature(f: Field) -> dict:
    """What a fitted model depends on in a field: its type, unit, valid range, categories and the fields it
    is derived from (its description, label, block and timing may change without changing a model's inputs).

    Parameters
    ----------
    f : Field
        A catalogue field.

    Returns
    -------
    dict
        JSON-able: ``kind``, ``unit``, ``minimum``, ``maximum``, ``categories``, ``derived_from``.
    """
    return {"kind": f.kind, "unit": f.unit, "minimum": f.minimum, "maximum": f.maximum,
            "categories": None if f.categories is None else list(f.categories),
            "derived_from": list(f.derived_from)}


def catalogue_hash(fields: Iterable[Field] = FIELDS) -> str:
    """A content hash (12 hex digits of SHA-256) of the name and ``field_signature`` of every field.

    Parameters
    ----------
    fields : iterable of Field, default FIELDS
        The catalogue to hash.

    Returns
    -------
    str
        12 lower-case hex digits.
    """
    document = {f.name: field_signature(f) for f in fields}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:12]


SCHEMA_VERSION = f"{SCHEMA_RELEASE}+{catalogue_hash()}"  # e.g. "1+3f9c0a1b2c4d": the release, then the hash


def model_fields(names: Iterable[str]) -> list[str]:
    """``names`` and, recursively, the catalogue fields they are derived from.

    Parameters
    ----------
    names : iterable of str
        Field names (e.g. a model's ``fields_used``).

    Returns
    -------
    list of str
        The names and the catalogue fields they derive from, sorted; names not in the catalogue, such as a
        centre's own fields, are left out.
    """
    todo, seen = [n for n in names if n in FIELDS_BY_NAME], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(d for d in FIELDS_BY_NAME[name].derived_from if d in FIELDS_BY_NAME)
    return sorted(seen)


def schema_stamp(fields_used: Iterable[str]) -> dict:
    """What a model records of the schema it was trained with (``Predictor.metadata``): ``schema_version``
    and ``schema_fields``, the ``field_signature`` of each field it uses (``model_fields``).

    Parameters
    ----------
    fields_used : iterable of str
        The model's input fields.

    Returns
    -------
    dict
        ``{"schema_version": SCHEMA_VERSION, "schema_fields": {name: field_signature}}``.
    """
    return {"schema_version": SCHEMA_VERSION,
            "schema_fields": {name: field_signature(FIELDS_BY_NAME[name]) for name in model_fields(fields_used)}}


def changed_fields(recorded: dict[str, dict]) -> dict[str, str]:
    """The fields of ``recorded`` whose signature differs in this catalogue.

    Parameters
    ----------
    recorded : dict of str to dict
        ``schema_stamp``'s ``schema_fields``: field name -> its ``field_signature`` when the model was trained.

    Returns
    -------
    dict of str to str
        Name -> what changed in words ("unit 'mm' -> 'cm'", "no longer in the catalogue"); empty when
        nothing did.
    """
    out = {}
    for name, old in recorded.items():
        if name not in FIELDS_BY_NAME:
            out[name] = "no longer in the catalogue"
            continue
        new = field_signature(FIELDS_BY_NAME[name])
        diffs = [f"{key} {old.get(key)!r} -> {new[key]!r}" for key in new if old.get(key) != new[key]]
        if diffs:
            out[name] = ", ".join(diffs)
    return out
