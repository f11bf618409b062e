"""The published clinical risk scores for resected colorectal liver metastases (the benchmarks).

Definitions follow ``shared/references/clinical.md`` §1; every ``>`` versus ``>=`` choice is noted next to its
factor with its source. All scores are "higher = worse".

Missing data are strict: a factor whose inputs are missing (or a genomic marker that is ``unknown``) has NaN
points, and a score with any NaN factor has a NaN total and no group, never a partial sum. Inputs are the
canonical cohort fields of ``crlm.schema``; derived fields (``synchronous_metastases`` from the disease-free
interval, ``ras_status`` from KRAS/NRAS) are filled on a copy by ``crlm.cohort.base.canonical_columns``. Rules are
numpy functions of the canonical columns (numbers and yes/no as floats with NaN, categories as objects).
"""

from __future__ import annotations

__all__ = [
    "available_scores", "CEA", "Columns", "compute_score", "coverage_notes", "DFI", "Factor", "MULTI", "N",
    "NODE", "Rule", "score_coverage", "SCORE_NAMES", "score_patient", "score_patients", "score_table",
    "score_total", "ScoreDefinition", "SCORES", "SIZE", "SYNC", "tumour_burden_score",
]

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crlm.cohort.base import canonical_columns
from crlm.schema import FIELDS_BY_NAME

Columns = dict[str, np.ndarray]  # canonical inputs: float (NaN missing) for numbers and yes/no, else objects
Rule = Callable[[Columns], np.ndarray]

DFI = "disease_free_interval_months"
SYNC = "synchronous_metastases"
N = "n_liver_metastases"
MULTI = "multiple_metastases"  # derived from N when the count is known; some cohorts record only this
SIZE = "largest_metastasis_cm"
CEA = "cea_ng_ml"
NODE = "primary_node_positive"


# --- factor rules: each returns float points, NaN where the inputs do not decide the factor -------------
# Rules work on numpy columns (``_columns``): one vectorised pass serves a cohort and a single online request.

def _points(condition, known, points: float = 1.0) -> np.ndarray:
    return np.where(known, np.where(condition, points, 0.0), np.nan)


def _known(values: np.ndarray) -> np.ndarray:
    return ~np.isnan(values)


def _gt(col: str, cut: float) -> Rule:
    return lambda d: _points(d[col] > cut, _known(d[col]))


def _ge(col: str, cut: float) -> Rule:
    return lambda d: _points(d[col] >= cut, _known(d[col]))


def _yes(col: str, points: float = 1.0) -> Rule:
    return lambda d: _points(d[col] == 1, _known(d[col]), points)


def _isin(values: np.ndarray, options: tuple[str, ...]) -> np.ndarray:
    return np.fromiter((isinstance(v, str) and v in options for v in values), dtype=bool, count=len(values))


def _is(col: str, positive: tuple[str, ...], negative: tuple[str, ...]) -> Rule:
    """Category rule; any other value (NaN, genomic ``unknown``) leaves the factor missing."""
    return lambda d: _points(_isin(d[col], positive), _isin(d[col], positive + negative))


def _dfi_below(months: float) -> Rule:
    """DFI < ``months``. Without a DFI, synchronous metastases (DFI 0) score the point, but "metachronous"
    alone does not tell whether the DFI is below the cut-off, so the factor stays missing."""
    def rule(d: Columns) -> np.ndarray:
        dfi, sync = d[DFI], d[SYNC] == 1
        return _points(np.where(_known(dfi), dfi < months, sync), _known(dfi) | sync)
    return rule


def tumour_burden_score(size_cm, n_metastases) -> np.ndarray:
    """The Tumour Burden Score (Sasaki 2018): the distance from the origin on a plane of the largest liver
    metastasis's diameter and the number of liver metastases.

    Parameters
    ----------
    size_cm : array-like of float
        Largest diameter of a liver metastasis, in cm (NaN: unknown).
    n_metastases : array-like of float
        Number of liver metastases (NaN: unknown).

    Returns
    -------
    ndarray of float
        ``sqrt(size_cm ** 2 + n_metastases ** 2)``, NaN where either input is unknown.

    Examples
    --------
    >>> float(tumour_burden_score(3.0, 4))
    5.0
    """
    return np.hypot(np.asarray(size_cm, dtype=float), np.asarray(n_metastases, dtype=float))


def _tbs(d: Columns) -> np.ndarray:
    return tumour_burden_score(d[SIZE], d[N])


def _game_tbs(d: Columns) -> np.ndarray:
    # Margonis 2018: TBS "3-8" = 1 point, ">= 9" = 2; the gap between 8 and 9 is closed with < 9 (as PLATO).
    tbs = _tbs(d)
    return np.where(np.isnan(tbs), np.nan, np.select([tbs >= 9, tbs >= 3], [2.0, 1.0], 0.0))


def _value(col: str) -> Rule:
    return lambda d: d[col].astype(float)


# --- definitions ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Factor:
    name: str  # column name in compute_score's output
    fields: tuple[str, ...]  # inputs it reads (reported as missing when they are)
    rule: Rule


@dataclass(frozen=True)
class ScoreDefinition:
    name: str
    label: str
    reference: str
    fields: tuple[str, ...]  # input fields read (ras_status is derived from kras/nras_status when absent)
    groups: tuple[str, ...]  # in order of increasing risk
    preoperative: bool
    factors: tuple[Factor, ...] = ()
    group_starts: tuple[float, ...] = ()  # lowest total of each group (same order as groups)
    total: Callable[[Columns], np.ndarray] | None = None  # default: sum of the factor points


def _score(name, label, reference, groups, group_starts, factors, *, preoperative=True, total=None):
    fields = tuple(dict.fromkeys(f for factor in factors for f in factor.fields))
    return ScoreDefinition(name, label, reference, fields, groups, preoperative, tuple(factors),
                           group_starts, total)


_FONG_REF = "Fong Y et al. Ann Surg 1999;230(3):309-18. PMID 10493478"

SCORES: dict[str, ScoreDefinition] = {s.name: s for s in (
    _score("fong", "Fong CRS", _FONG_REF, ("low", "high"), (0, 3), [  # groups 0-2 / 3-5 (Fong 1999; S1)
        Factor("node_positive", (NODE,), _yes(NODE)),
        Factor("dfi_lt_12", (DFI, SYNC), _dfi_below(12)),  # "DFI < 12 months"; synchronous counts as < 12
        Factor("n_gt_1", (N, MULTI), _yes(MULTI)),  # "> 1 hepatic tumour" (MULTI = N > 1 when N is known)
        Factor("cea_gt_200", (CEA,), _gt(CEA, 200)),  # "CEA > 200 ng/mL"
        Factor("size_gt_5", (SIZE,), _gt(SIZE, 5)),  # "largest tumour > 5 cm"
    ]),
    _score("game", "GAME score", "Margonis GA et al. Br J Surg 2018;105(9):1210-20. doi:10.1002/bjs.10838",
           ("low", "medium", "high"), (0, 2, 4), [  # low 0-1, medium 2-3, high >= 4 (Margonis 2018)
        Factor("kras_mutant", ("kras_status",), _is("kras_status", ("mutant",), ("wild_type",))),  # KRAS only
        Factor("cea_ge_20", (CEA,), _ge(CEA, 20)),  # paper: ">= 20 ng/mL"; PLATO codes > 20, we follow the paper
        Factor("node_positive", (NODE,), _yes(NODE)),
        Factor("tbs", (SIZE, N), _game_tbs),  # 0 / 1 / 2 points, see _game_tbs
        Factor("extrahepatic", ("extrahepatic_disease",), _yes("extrahepatic_disease", 2.0)),  # 2 points
    ]),
    _score("mcs", "m-CS (modified clinical score)",
           "Brudvik KW et al. Ann Surg 2019;269(1):120-6. doi:10.1097/SLA.0000000000002319",
           # PLATO's four groups (0 / 1 / 2 / 3); the original "low 0, medium 1-2, high 3" is unverified.
           ("low", "intermediate", "moderate", "high"), (0, 1, 2, 3), [
        Factor("ras_mutant", ("ras_status",), _is("ras_status", ("mutant",), ("wild_type",))),  # KRAS or NRAS
        Factor("node_positive", (NODE,), _yes(NODE)),
        Factor("size_gt_5", (SIZE,), _gt(SIZE, 5)),  # "> 5 cm" (PLATO)
    ]),
    # TBS = sqrt(size_cm^2 + n^2); zones < 3 / 3 to < 9 / >= 9 (Sasaki 2018, cut-offs verified through GAME).
    # Its "factors" are the two inputs themselves and its total is the TBS value.
    _score("tbs", "Tumor Burden Score",
           "Sasaki K et al. Ann Surg 2018;267(1):132-41. doi:10.1097/SLA.0000000000002064",
           ("zone 1", "zone 2", "zone 3"), (0, 3, 9),
           [Factor("size_cm", (SIZE,), _value(SIZE)), Factor("n_metastases", (N,), _value(N))], total=_tbs),
    # Margin is post-resection, so the score is not preoperative. The data have R status, not margin width:
    # R1/R2 (< 1 mm) are certainly < 1 cm and score; R0 (>= 1 mm) is taken as the "adequate margin" (no
    # point), an approximation since an R0 margin may still be < 1 cm.
    _score("nordlinger", "Nordlinger score", "Nordlinger B et al. Cancer 1996;77(7):1254-62. PMID 8608500",
           ("low", "intermediate", "high"), (0, 3, 5), [  # 0-2 / 3-4 / 5-7 (PLATO)
        Factor("age_gt_60", ("age_years",), _gt("age_years", 60)),  # "> 60 years"
        Factor("pt4", ("primary_t_stage",), _is("primary_t_stage", ("T4",), ("T1", "T2", "T3"))),  # serosa
        Factor("node_positive", (NODE,), _yes(NODE)),
        Factor("dfi_lt_24", (DFI, SYNC), _dfi_below(24)),  # "DFI < 24 months"
        Factor("n_ge_4", (N,), _ge(N, 4)),  # ">= 4 nodules" (PLATO > 3: the same for counts)
        Factor("size_ge_5", (SIZE,), _ge(SIZE, 5)),  # paper ">= 5 cm"; PLATO > 50 mm, we follow the paper
        Factor("margin_lt_1cm", ("resection_margin",),
               _is("resection_margin", ("R1", "R2"), ("R0",))),  # "< 1 cm", see the note above
    ], preoperative=False),
    _score("konopke", "Konopke score",
           "Konopke R et al. Liver Int 2009;29(1):89-102. doi:10.1111/j.1478-3231.2008.01845.x",
           ("low", "intermediate", "high"), (0, 1, 2), [  # 0 / 1 / >= 2 factors
        Factor("synchronous", (SYNC, DFI), _yes(SYNC)),  # synchronous_metastases, else DFI == 0 (derived)
        Factor("n_ge_4", (N,), _ge(N, 4)),  # ">= 4 metastases"
        Factor("cea_ge_200", (CEA,), _ge(CEA, 200)),  # ">= 200 ng/mL" (§1.7; the §4.4 table's "> 200" is loose)
    ]),
    _score("fong_recorded", "Fong CRS (recorded)", f"As recorded by the source cohort; definition: {_FONG_REF}",
           ("low", "high"), (0, 3),  # 0-2 / 3-5 as Fong
           [Factor("fong_score_recorded", ("fong_score_recorded",), _value("fong_score_recorded"))]),
)}

SCORE_NAMES: tuple[str, ...] = ("fong", "game", "mcs", "tbs", "nordlinger", "konopke", "fong_recorded")
assert tuple(SCORES) == SCORE_NAMES

# Every column a score reads, plus the sources of derived ones.
_INPUTS = tuple(dict.fromkeys([f for s in SCORES.values() for f in s.fields] + ["kras_status", "nras_status"]))


def _definition(name: str) -> ScoreDefinition:
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; known scores: {', '.join(SCORE_NAMES)}")
    return SCORES[name]


def _columns(data) -> tuple[Columns, set[str]]:
    """The score inputs as numpy columns (``canonical_columns``: derived fields filled; absent inputs all
    missing), and the set of inputs that were available (given or derived)."""
    canonical = canonical_columns(data)
    present = {c for c in _INPUTS if c in canonical}
    missing = np.full(canonical.n_rows, np.nan)
    columns = {c: canonical[c] if c in present else
               (missing if FIELDS_BY_NAME[c].kind in ("float", "int", "bool") else missing.astype(object))
               for c in _INPUTS}
    return columns, present


@dataclass(frozen=True)
class _Result:
    points: dict[str, np.ndarray]  # factor name -> points (NaN when its inputs are missing)
    total: np.ndarray  # NaN when any factor is
    group: np.ndarray  # objects, NaN with the total


def _compute(defn: ScoreDefinition, d: Columns) -> _Result:
    points = {f.name: np.asarray(f.rule(d), dtype=float) for f in defn.factors}
    stacked = np.column_stack(list(points.values()))
    total = np.asarray(defn.total(d), dtype=float) if defn.total else stacked.sum(axis=1)
    total = np.where(np.isnan(stacked).any(axis=1), np.nan, total)
    idx = np.searchsorted(np.asarray(defn.group_starts, dtype=float), np.nan_to_num(total), side="right") - 1
    labels = np.asarray(defn.groups, dtype=object)[np.clip(idx, 0, len(defn.groups) - 1)]
    return _Result(points, total, np.where(np.isnan(total), np.nan, labels))


def compute_score(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Compute a score's points per factor, ``total`` and ``group`` for every row of ``df``.

    Parameters
    ----------
    name : str
        A score of ``SCORES`` (``"fong"``, ``"game"``, ...).
    df : DataFrame
        Canonical cohort rows; absent input columns count as all-missing.

    Returns
    -------
    DataFrame
        With the index of ``df``: one float column of points per factor (NaN when its inputs are missing),
        ``total`` (NaN when any factor is) and ``group`` (object, NaN with the total). For ``tbs`` the factor
        columns are the size (cm) and number, the total is the TBS value and the group is ``zone 1`` /
        ``zone 2`` / ``zone 3``.

    Raises
    ------
    ValueError
        An unknown score name.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"primary_node_positive": [True], "disease_free_interval_months": [6.0],
    ...                      "n_liver_metastases": [2], "cea_ng_ml": [250.0], "largest_metastasis_cm": [6.0]})
    >>> compute_score("fong", rows)[["total", "group"]].to_dict("records")
    [{'total': 5.0, 'group': 'high'}]
    """
    result = _compute(_definition(name), _columns(df)[0])
    return pd.DataFrame({**result.points, "total": result.total, "group": result.group}, index=df.index)


def score_total(name: str, data) -> np.ndarray:
    """Compute a score's total per row without building a DataFrame (a model can use it online).

    Parameters
    ----------
    name : str
        A score of ``SCORES``.
    data : DataFrame, list of dict or CanonicalColumns
        Canonical patient rows.

    Returns
    -------
    ndarray
        The total per row (NaN where a factor is missing).
    """
    return _compute(_definition(name), _columns(data)[0]).total


def _has_inputs(defn: ScoreDefinition, present: set[str]) -> bool:
    return all(any(f in present for f in factor.fields) for factor in defn.factors)


def score_table(df: pd.DataFrame, names=SCORE_NAMES) -> pd.DataFrame:
    """Tabulate the total and group of each score whose every factor has an input column in ``df``.

    Parameters
    ----------
    df : DataFrame
        Canonical cohort rows.
    names : sequence of str
        Scores to compute (default: every score).

    Returns
    -------
    DataFrame
        Columns ``{name}`` (total) and ``{name}_group`` per computable score (``fong_recorded`` therefore only
        when ``fong_score_recorded`` is present), with the index of ``df``.
    """
    defs = [_definition(n) for n in names]
    d, present = _columns(df)
    columns = {}
    for defn in defs:
        if _has_inputs(defn, present):
            result = _compute(defn, d)
            columns[defn.name] = result.total
            columns[f"{defn.name}_group"] = result.group
    return pd.DataFrame(columns, index=df.index)


def available_scores(df: pd.DataFrame) -> list[str]:
    """List the scores that can be computed for at least one row of ``df``.

    Parameters
    ----------
    df : DataFrame
        Canonical cohort rows.

    Returns
    -------
    list of str
        Score names, in the order of ``SCORES``.
    """
    d, _ = _columns(df)
    return [n for n, defn in SCORES.items() if (~np.isnan(_compute(defn, d).total)).any()]


def _is_missing(value) -> bool:
    return value == "unknown" if isinstance(value, str) else bool(pd.isna(value))


def score_patients(patients, names: Sequence[str] = SCORE_NAMES) -> list[dict[str, dict]]:
    """Compute each patient's scores, with what prevented a computation, in one vectorised pass.

    Parameters
    ----------
    patients : list of dict, DataFrame or CanonicalColumns
        Canonical patient rows.
    names : sequence of str
        Scores to compute (default: every score).

    Returns
    -------
    list of dict
        Per patient, per score name, a dict with ``name``, ``label``, ``total``, ``group``, ``groups``,
        ``points`` per factor (None when missing), ``missing`` (input fields that prevented the computation),
        ``reason`` (None when computed), ``preoperative`` and ``reference``.
    """
    defs = [_definition(n) for n in names]
    d, _ = _columns(patients)
    n = len(next(iter(d.values())))
    out: list[dict[str, dict]] = [{} for _ in range(n)]
    for defn in defs:
        result = _compute(defn, d)
        # Python values of the whole batch at once (one conversion per array, not per patient)
        names = list(result.points)
        per_factor = [[None if v != v else v for v in values.tolist()] for values in result.points.values()]
        totals = [None if v != v else v for v in result.total.tolist()]
        groups = result.group.tolist()
        for i, (total, group, *factor_points) in enumerate(zip(totals, groups, *per_factor, strict=True)):
            points = dict(zip(names, factor_points, strict=True))
            missing = [] if None not in factor_points else list(dict.fromkeys(
                f for factor in defn.factors if points[factor.name] is None for f in factor.fields
                if _is_missing(d[f][i])))
            why = [f"{f} (unknown)" if isinstance(d[f][i], str) else f for f in missing]
            out[i][defn.name] = {
                "name": defn.name, "label": defn.label, "total": total,
                "group": None if total is None else str(group), "groups": list(defn.groups),
                "points": points, "missing": missing,
                "reason": None if total is not None else f"not computable: missing {', '.join(why) or 'inputs'}",
                "preoperative": defn.preoperative, "reference": defn.reference,
            }
    return out


def score_patient(name: str, patient: dict) -> dict:
    """Compute one score of one patient.

    Parameters
    ----------
    name : str
        A score of ``SCORES``.
    patient : dict
        The patient's canonical fields.

    Returns
    -------
    dict
        As one entry of ``score_patients``.
    """
    return score_patients([patient], [name])[0][name]


def score_coverage(df: pd.DataFrame, names: Sequence[str] = SCORE_NAMES) -> pd.DataFrame:
    """Which scores a cohort can compute, and for the rest, which factors they lack for how many patients.

    Parameters
    ----------
    df : DataFrame
        Canonical cohort rows.
    names : sequence of str
        Scores to check.

    Returns
    -------
    DataFrame
        One row per score: ``score``, ``label``, ``computable`` (patients with a total), ``patients`` and
        ``lacking``: each factor that is missing for some patients, with its input fields and how many
        patients lack it (``"cea_gt_200 (cea_ng_ml): 300 of 300"``); empty when every patient has the score.
    """
    d, present = _columns(df)
    n = len(df)
    rows = []
    for defn in (_definition(name) for name in names):
        result = _compute(defn, d)
        lacking = []
        for factor in defn.factors:
            missing = int(np.isnan(result.points[factor.name]).sum())
            if missing:
                absent = "" if any(f in present for f in factor.fields) else ", not in the file"
                lacking.append(f"{factor.name} ({' or '.join(factor.fields)}{absent}): {missing} of {n}")
        rows.append({"score": defn.name, "label": defn.label, "computable": int((~np.isnan(result.total)).sum()),
                     "patients": n, "lacking": "; ".join(lacking)})
    return pd.DataFrame(rows, columns=["score", "label", "computable", "patients", "lacking"])


def coverage_notes(coverage: pd.DataFrame) -> list[str]:
    """Write one sentence per score not computable for every patient (reports, leaderboard, model card).

    Parameters
    ----------
    coverage : DataFrame
        The table of ``score_coverage``.

    Returns
    -------
    list of str
        One sentence per incompletely computable score; empty when every score covers every patient.
    """
    notes = []
    for r in coverage.itertuples():
        if r.computable < r.patients:
            state = "not computable for any patient" if r.computable == 0 else \
                f"computable for {r.computable} of {r.patients} patients"
            notes.append(f"{r.label} ({r.score}) {state}; lacking {r.lacking}")
    return notes
