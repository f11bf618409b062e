"""``crlm init``: a workspace a user understands, and a draft mapping from their export.

A workspace is a folder with ``crlm-workspace.yaml`` (the marker ``crlm.paths.project_root`` looks for):
jobs started in it or below keep their tracking store (``mlflow.db``, ``mlartifacts/``), exported models
(``models/``) and benchmark results (``results/``) there, and relative paths in a config resolve against the
config's folder. ``--from export.csv`` drafts ``mappings/<name>.yaml``: every source column with the schema
fields it probably maps to (name similarity and a table of usual spellings), the codes seen, and a guessed
unit; the user confirms each line before training.
"""

from __future__ import annotations

__all__ = [
    "JOB_TEMPLATE", "MARKER_TEXT", "MAX_CODES", "SYNONYMS", "UNIT_HINTS", "candidate_fields", "draft_mapping",
    "init_workspace",
]

import difflib
import re
from pathlib import Path

import pandas as pd

from crlm.cohort.base import _to_bool
from crlm.cohort.loader import read_table
from crlm.paths import WORKSPACE_MARKER
from crlm.schema import DEFAULT_BLOCKS, DEFAULT_HORIZONS_MONTHS, FIELDS, FIELDS_BY_NAME, Field

# Usual spellings of schema fields in exports (lower case, words separated by _); the first match wins.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "patient_id": ("id", "patient", "patient_id", "mrn", "record", "subject", "case", "pid"),
    "age_years": ("age",),
    "sex": ("sex", "gender"),
    "primary_side": ("side", "sidedness", "laterality", "primary_location", "primary_site"),
    "primary_t_stage": ("t_stage", "pt", "t_cat", "tstage"),
    "primary_node_positive": ("node", "nodal", "pn", "n_stage", "lymph", "ln_positive", "nodes"),
    "primary_grade": ("grade", "differentiation"),
    "disease_free_interval_months": ("dfi", "disease_free_interval", "interval"),
    "synchronous_metastases": ("synchronous", "sync", "synchron"),
    "n_liver_metastases": ("n_mets", "nmets", "number", "count", "no_mets", "num_mets", "lesions"),
    "largest_metastasis_cm": ("size", "diameter", "diam", "largest", "max_size", "dia", "maxdiam"),
    "bilobar_disease": ("bilobar", "bilobular", "bilateral"),
    "cea_ng_ml": ("cea",),
    "ca19_9_u_ml": ("ca19", "ca199", "ca_19", "ca19_9"),
    "extrahepatic_disease": ("extrahepatic", "ehd", "extra_hepatic"),
    "major_comorbidity": ("comorbidity", "comorb", "asa", "charlson"),
    "body_mass_index": ("bmi",),
    "kras_status": ("kras",), "nras_status": ("nras",), "braf_v600e_status": ("braf",),
    "pik3ca_status": ("pik3ca",), "ras_status": ("ras",), "mmr_status": ("mmr", "msi", "dmmr", "mss"),
    "neoadjuvant_chemotherapy": ("neoadjuvant", "preop_chemo", "chemo"),
    "chemo_regimen": ("regimen",), "chemo_biologic": ("biologic", "bevacizumab", "cetuximab", "panitumumab"),
    "chemo_cycles": ("cycles",), "chemo_line": ("line",), "recist_response": ("recist", "response"),
    "resection_margin": ("margin", "r_status", "rstatus"), "major_hepatectomy": ("major", "hepatectomy"),
    "two_stage_hepatectomy": ("two_stage",), "portal_vein_embolisation": ("pve", "portal"),
    "ablation": ("ablation", "rfa", "mwa"), "fong_score_recorded": ("fong", "crs"),
    "os_months": ("os", "os_months", "survival_time", "follow_up", "fu", "fu_days", "fu_months", "os_time",
                  "followup"),
    "os_event": ("death", "dead", "vital", "deceased", "os_event", "os_status"),
    "rfs_months": ("rfs", "dfs", "rfs_months", "dfs_months", "recurrence_time"),
    "rfs_event": ("recurrence", "relapse", "rfs_event", "dfs_event", "rfs_status", "dfs_status"),
}
UNIT_HINTS = (("mm", "mm"), ("days", "days"), ("day", "days"), ("weeks", "weeks"), ("years", "years"),
              ("yrs", "years"))
MAX_CODES = 12  # columns with at most this many distinct values list them as codes


def _words(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def candidate_fields(column: str, k: int = 3) -> list[str]:
    """Schema fields a source column probably maps to, best first.

    Parameters
    ----------
    column : str
        The source column's name.
    k : int
        How many candidates at most.

    Returns
    -------
    list of str
        Field names: exact spellings from ``SYNONYMS`` first, then the closest names and labels.
    """
    words = _words(column)
    tokens = set(words.split("_"))
    hits = [name for name, spellings in SYNONYMS.items()
            if words in spellings or any(s in tokens or (len(s) > 3 and s in words) for s in spellings)]
    labels = {_words(f.label): f.name for f in FIELDS} | {f.name: f.name for f in FIELDS}
    close = [labels[m] for m in difflib.get_close_matches(words, list(labels), n=k, cutoff=0.75)]
    return list(dict.fromkeys([*hits, *close]))[:k]


def _codes(values: pd.Series) -> list[str]:
    seen = values.dropna().astype(str).str.strip()
    distinct = seen.value_counts()
    numeric = pd.to_numeric(seen, errors="coerce").notna().all()
    limit = 6 if numeric else MAX_CODES  # a few numbers are codes (1/2, 0/1); many are measurements
    return [f"{code} ({count})" for code, count in distinct.items()] if 0 < len(distinct) <= limit else []


def _describe(values: pd.Series) -> str:
    known = values.dropna()
    numbers = pd.to_numeric(known, errors="coerce")
    text = f"{len(known)} of {len(values)} recorded"
    if len(known) and numbers.notna().all():
        text += f", numbers {numbers.min():g} to {numbers.max():g}"
    return text


def draft_mapping(export: Path, name: str) -> str:
    """A draft YAML mapping of ``export``: confident guesses as ``rename`` entries, the rest as comments.

    Parameters
    ----------
    export : Path
        The centre's export (.csv, .tsv or .parquet).
    name : str
        The cohort's name (used in registered model names).

    Returns
    -------
    str
        The mapping's text, with a comment per source column (candidate fields, codes seen, a unit guess).
    """
    raw = read_table(export)
    lines = [f"# Draft mapping of {export.name}, written by `crlm init --from`: check every line, then run",
             f"#   crlm validate data/{export.name} --mapping mappings/{name}.yaml   (join paths: relative to this file)",
             "# Each source column is listed with the schema fields it probably maps to (first = best guess),",
             "# the codes seen and a unit guess. Columns you do not need can stay commented out.",
             f"name: {name}", f"source: {export.name}", "missing_values: []  # codes meaning 'not recorded', "
             "e.g. [-9, 999, NA, unknown]", "rename:"]
    recode, units, used = [], [], set()
    for column in raw.columns:
        guesses = [g for g in candidate_fields(column) if g not in used]
        codes = _codes(raw[column])
        note = f"{_describe(raw[column])}" + (f"; codes: {', '.join(codes)}" if codes else "")
        if guesses:
            best = guesses[0]
            used.add(best)
            others = f" (or: {', '.join(guesses[1:])})" if len(guesses) > 1 else ""
            lines.append(f"  {_yaml_key(column)}: {best}  # {note}{others}")
            f = FIELDS_BY_NAME[best]
            if codes and f.kind in ("category", "bool") and not _codes_fit(raw[column], f):
                target = f"one of {', '.join(f.categories or ())}" if f.kind == "category" else "true/false"
                recode.append(f"#  {best}: {{{', '.join(_yaml_key(c.rsplit(' (', 1)[0]) + ': ?' for c in codes)}}}"
                              f"  # to {target}")
            unit = next((u for hint, u in UNIT_HINTS if hint in _words(column).split("_")), None)
            if unit and f.unit and unit != f.unit:
                units.append(f"  {best}: {unit}  # the column name says {unit}; the schema wants {f.unit}")
        else:
            lines.append(f"  # {_yaml_key(column)}: ?  # {note}; no schema field matched: map it, derive from it, "
                         "or declare it under extra_fields")
    lines.append("recode: {}  # fill in and uncomment codes that are not the schema's own")
    lines += recode
    lines.append("units:" if units else "units: {}")
    lines += units
    lines += ["# A centre's own predictors (validated like schema fields, used by the models):",
              "# extra_fields:",
              "#   - {name: tmb_mut_mb, kind: float, unit: mut/Mb, minimum: 0, maximum: 500, block: genomic,",
              "#      description: Tumour mutational burden}",
              "# A score the export records (the reference of a job: reference: recorded:<name>):",
              "# recorded_scores:",
              "#   - {name: local_score, label: Local risk score, description: what it is and who computed it}"]
    return "\n".join(lines) + "\n"


def _codes_fit(values: pd.Series, f: Field) -> bool:
    seen = values.dropna().astype(str).str.strip().unique()
    if f.kind == "bool":
        try:
            [_to_bool(v) for v in seen]
        except ValueError:
            return False
        return True
    return set(seen) <= set(f.categories or ())


def _yaml_key(text: str) -> str:
    text = str(text)
    return text if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ .-]*", text) and text.strip() == text else repr(text)


JOB_TEMPLATE = """# A training job (crlm train --config configs/{name}-os.yaml). Paths are relative to this file's folder.
job: {name}-os
cohort:
  file: {file}
  mapping: ../mappings/{name}.yaml
  name: {name}
  strict: false  # rows with bad cells are set aside and reported (true: any bad cell fails the job)
endpoint: os
horizons: [{horizons}]
blocks: [{blocks}]
models: [coxph, coxnet, rsf, gbsa, xgb_cox, xgb_aft]
# reference: a published score computable on your data (score:fong, score:game, ...), a score your export
# records declared in the mapping (recorded:<name>), auto (the published score computable for the most
# patients), or none (models compared with each other and with Kaplan-Meier). `crlm scores` shows which
# scores your data can compute and what the others lack.
reference: auto
# missing: per field, 'indicator' (missing-as-information) or 'impute' (plain imputation)
missing: {{}}
resampling: {{outer_splits: 2, outer_repeats: 5, inner_splits: 3, n_boot: 200}}
seed: 0
n_jobs: 1
"""

MARKER_TEXT = """# crlm workspace. Commands run in this folder (or below it) keep their files here:
#   mlflow.db, mlartifacts/  the tracking store (unless MLFLOW_TRACKING_URI is set)
#   models/                  exported model bundles (crlm serve reads them)
#   results/                 benchmark results of each job, written before anything else can fail
# configs/ holds job configs, mappings/ the mappings from your exports to the schema, data/ your exports.
workspace: {name}
"""


def init_workspace(directory: Path, export: Path | None = None, name: str | None = None) -> list[Path]:
    """Create a workspace (see the module docstring); existing files are never overwritten.

    Parameters
    ----------
    directory : Path
        The workspace folder (created).
    export : Path, optional
        A centre's export: a draft mapping is written from it.
    name : str, optional
        The cohort's name (default: the folder's name).

    Returns
    -------
    list of Path
        The files written.
    """
    directory = Path(directory)
    name = _words(name or directory.resolve().name) or "centre"
    for sub in ("configs", "mappings", "data", "models", "results"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    file = f"../data/{export.name}" if export is not None else f"../data/{name}.csv"
    mapping = (draft_mapping(export, name) if export is not None else
               f"name: {name}\nsource: ''\nmissing_values: []\nrename: {{}}\nrecode: {{}}\nunits: {{}}\n")
    job = JOB_TEMPLATE.format(name=name, file=file, horizons=", ".join(f"{h:g}" for h in DEFAULT_HORIZONS_MONTHS),
                              blocks=", ".join(DEFAULT_BLOCKS))
    files = {directory / WORKSPACE_MARKER: MARKER_TEXT.format(name=name),
             directory / "configs" / f"{name}-os.yaml": job,
             directory / "mappings" / f"{name}.yaml": mapping}
    written = []
    for path, text in files.items():
        if path.exists():
            continue
        path.write_text(text)
        written.append(path)
    if export is not None and not (directory / "data" / export.name).exists() and \
            export.resolve().parent != (directory / "data").resolve():
        (directory / "data" / export.name).write_bytes(export.read_bytes())
        written.append(directory / "data" / export.name)
    return written
