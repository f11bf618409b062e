"""What is generated from the field catalogue (``crlm.schema``) besides the API's patient model: the pandera
schema that validates a cohort and the data dictionary (``data/DATA_DICTIONARY.md``)."""

from __future__ import annotations

__all__ = ["data_dictionary_markdown", "pandera_schema"]

from crlm.schema import ENDPOINT_ALIASES, ENDPOINTS, FIELDS


def pandera_schema():
    """Build the pandera schema of a cohort (every field optional and nullable; ranges and categories enforced).

    Returns
    -------
    pandera.DataFrameSchema
        One column check per field of ``FIELDS``; extra columns are allowed.
    """
    import pandera.pandas as pa  # deferred: pandera (heavy) loads only to validate a cohort, not for the API

    columns = {}
    for f in FIELDS:
        checks = []
        if f.kind == "category":
            checks.append(pa.Check.isin(list(f.categories), error=f.rule))
        elif f.kind in ("float", "int"):
            if f.minimum is not None:
                checks.append(pa.Check.ge(f.minimum, error=f">= {f.minimum:g}"))
            if f.maximum is not None:
                checks.append(pa.Check.le(f.maximum, error=f"<= {f.maximum:g}"))
            if f.kind == "int":
                checks.append(pa.Check(lambda s: s.isna() | (s == s.round()), element_wise=False,
                                       error="integer"))
        dtype = {"float": float, "int": float, "bool": "boolean", "category": object, "string": object}[f.kind]
        columns[f.name] = pa.Column(dtype, checks=checks, nullable=True, required=False,
                                    coerce=f.kind in ("float", "int"))
    return pa.DataFrameSchema(columns, strict=False, name="crlm-cohort")


def data_dictionary_markdown() -> str:
    """Write the data dictionary (``data/DATA_DICTIONARY.md``) from the catalogue.

    Returns
    -------
    str
        Markdown: one table row per field, then the endpoints and their aliases.
    """
    lines = [
        "# Data dictionary",
        "",
        "Generated from `src/crlm/schema.py` by `crlm dictionary`; do not edit by hand.",
        "",
        "Timing: *preoperative* fields are known before the liver resection and may enter preoperative",
        "models; *postoperative* fields (pathology, operative details) only enter postoperative models.",
        "Genomic markers are `mutant` / `wild_type` / `unknown`; unknown is information, not an error.",
        "",
        "| field | block | timing | type | unit | valid values | required by the API | description |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in FIELDS:
        derived = f" Derived from {', '.join(f.derived_from)} when absent." if f.derived_from else ""
        lines.append(
            f"| `{f.name}` | {f.block} | {f.timing} | {f.kind} | {f.unit or ''} | {f.rule} | "
            f"{'yes' if f.required_for_prediction else ''} | {f.description}{derived} |")
    lines += ["", "Endpoints:", ""]
    for e in ENDPOINTS.values():
        lines.append(f"- `{e.name}`: {e.description} (`{e.time}`, `{e.event}`)")
    lines.append("- aliases: " + ", ".join(f"`{a}` = `{b}`" for a, b in ENDPOINT_ALIASES.items()))
    return "\n".join(lines) + "\n"
