"""Published effects of the prognostic factors after resection of colorectal liver metastases: the prior.

One declarative table (``PRIOR``), beside the scores, from ``shared/references/clinical.md`` §3 and the sources it
cites: per factor its coding (a rule on the canonical columns, as the scores' rules), and per endpoint (OS, RFS)
the published hazard ratio with its 95% confidence interval, or a plausible range where no interval was
retrieved, the source and year, and the evidence tag of clinical.md (V verified in the named source, U
unverified, D derived here). The log-HR's standard error is (ln high - ln low) / (2 x 1.96), treating a
plausible range as a 95% interval. A factor without a published effect for an endpoint has ``None`` there:
models penalise it towards zero like any other field.

Caveats a user must know: most pooled estimates are univariate (meta-analyses of unadjusted HRs), so taken
together in one model they overstate correlated factors (number, size, CEA); some codings differ from the
source's (noted per row). ``cox_prior`` tunes how far to trust the table; ``literature_cox`` trusts it fully.
Liver RFS uses the RFS effects (no liver-specific pooled estimates were retrieved).
"""

from __future__ import annotations

__all__ = [
    "ENDPOINT_EFFECTS", "Effect", "PRIOR", "PRIOR_BY_FEATURE", "PRIOR_BY_NAME", "PriorFactor", "RULE_INPUTS",
    "Z95", "prior_card_lines", "prior_table",
]

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crlm.schema import endpoint as get_endpoint
from crlm.scores import CEA, MULTI, NODE, SIZE, SYNC, Columns, _gt, _is, _yes

Z95 = 1.959964
ENDPOINT_EFFECTS = {"os": "os", "rfs": "rfs", "liver_rfs": "rfs"}  # which column of the table an endpoint uses


@dataclass(frozen=True)
class Effect:
    hazard_ratio: float
    low: float
    high: float
    source: str
    year: int
    evidence: str  # clinical.md tag: V / U / D
    interval: str = "95% CI"  # or "plausible range"

    @property
    def log_hr(self) -> float:
        return math.log(self.hazard_ratio)

    @property
    def se(self) -> float:
        return (math.log(self.high) - math.log(self.low)) / (2 * Z95)


@dataclass(frozen=True)
class PriorFactor:
    name: str
    field: str  # the schema field the coding reads (explanations speak of it)
    inputs: tuple[str, ...]  # fields the rule reads
    coding: str  # the literature coding, in words (no "=" : it is part of a feature name)
    rule: Callable[[Columns], np.ndarray]  # 1.0 / 0.0, NaN where the inputs do not decide
    os: Effect | None
    rfs: Effect | None
    postoperative: bool = False

    @property
    def feature(self) -> str:
        """The model-matrix column name (``crlm.explain.field_of`` maps it back to ``field``)."""
        return f"{self.field} (literature: {self.coding})"

    def effect(self, endpoint: str) -> Effect | None:
        return getattr(self, ENDPOINT_EFFECTS[get_endpoint(endpoint).name])


def _ras(d: Columns) -> np.ndarray:
    """RAS mutant (KRAS or NRAS) vs KRAS wild type with NRAS not mutant: the pooled studies compared KRAS
    mutant with KRAS wild type, NRAS mostly untested, so an untested NRAS does not make the factor unknown."""
    kras, nras = d["kras_status"], d["nras_status"]
    mutant = (kras == "mutant") | (nras == "mutant")
    return np.where(mutant, 1.0, np.where(kras == "wild_type", 0.0, np.nan))


_KANAS = "Kanas GP et al. Clin Epidemiol 2012;4:283-301 (meta-analysis; PMC3496330)"
_ADAM = "Adam R et al. Ann Surg 2004 (5-yr OS 37/30/8% by response/stable/progression; HR derived under PH)"
_RESPONDED = ("CR", "PR")

PRIOR: tuple[PriorFactor, ...] = (
    PriorFactor("node_positive", NODE, (NODE,), "pN1-2", _yes(NODE),
                os=Effect(1.6, 1.5, 1.7, _KANAS, 2012, "V"), rfs=None),
    PriorFactor("synchronous", SYNC, (SYNC, "disease_free_interval_months"), "synchronous", _yes(SYNC),
                os=Effect(1.35, 1.2, 1.5, "Fong Y et al. Ann Surg 1999 (DFI < 12 months, p = .03); HR range of "
                          "clinical.md §3.6", 1999, "D", "plausible range"),
                rfs=Effect(1.5, 1.2, 1.9, "World J Surg Oncol 2015 (synchronous HR 1.50 for time to recurrence)",
                           2015, "V", "plausible range")),
    PriorFactor("multiple", MULTI, (MULTI, "n_liver_metastases"), "more than one", _yes(MULTI),
                os=Effect(1.6, 1.4, 1.8, _KANAS, 2012, "V"), rfs=None),
    # Kanas pooled "> 3 cm"; Fong's factor is > 5 cm. The source's coding is kept.
    PriorFactor("size_gt_3", SIZE, (SIZE,), "> 3 cm", _gt(SIZE, 3),
                os=Effect(1.5, 1.3, 1.8, _KANAS, 2012, "V"), rfs=None),
    # Kanas pooled "elevated CEA" (cut-offs vary); Fong's > 200 ng/mL is used.
    PriorFactor("cea_gt_200", CEA, (CEA,), "> 200 ng/mL", _gt(CEA, 200),
                os=Effect(1.9, 1.1, 3.2, _KANAS, 2012, "V"), rfs=None),
    PriorFactor("extrahepatic", "extrahepatic_disease", ("extrahepatic_disease",), "present",
                _yes("extrahepatic_disease"),
                os=Effect(1.9, 1.5, 2.4, _KANAS, 2012, "V"),
                rfs=Effect(1.9, 1.5, 2.4, f"{_KANAS}; OS estimate, clinical.md §3.6 takes RFS >= OS", 2012, "D",
                           "plausible range")),
    PriorFactor("poor_grade", "primary_grade", ("primary_grade",), "poor",
                _is("primary_grade", ("poor",), ("well", "moderate")),
                os=Effect(1.9, 1.3, 2.7, _KANAS, 2012, "V"), rfs=None),
    PriorFactor("ras_mutant", "ras_status", ("kras_status", "nras_status"), "mutant", _ras,
                os=Effect(1.86, 1.51, 2.30, "Passiglia F et al. 2016 (meta-analysis, 7 studies, 1403 patients)",
                          2016, "V"),
                rfs=Effect(1.65, 1.23, 2.21, "Passiglia F et al. 2016 (meta-analysis)", 2016, "V")),
    PriorFactor("braf_v600e", "braf_v600e_status", ("braf_v600e_status",), "V600E mutant",
                _is("braf_v600e_status", ("mutant",), ("wild_type",)),
                os=Effect(2.8, 2.09, 3.77, "Am J Surg 2021 meta-analysis (6 studies, 1857 patients)", 2021, "V"),
                rfs=Effect(2.29, 1.5, 3.5, "Am J Surg 2021 meta-analysis (DFS HR 2.29; interval not retrieved)",
                           2021, "V", "plausible range")),
    PriorFactor("pik3ca_mutant", "pik3ca_status", ("pik3ca_status",), "mutant",
                _is("pik3ca_status", ("mutant",), ("wild_type",)),
                os=Effect(0.96, 0.83, 1.12, "Mei ZB et al. Ann Oncol 2016 (CRC overall, 28 studies, 12,747 "
                          "patients)", 2016, "V"),
                rfs=Effect(1.20, 0.98, 1.46, "Mei ZB et al. Ann Oncol 2016 (CRC PFS)", 2016, "V")),
    PriorFactor("right_sided", "primary_side", ("primary_side",), "right vs left or rectum",
                _is("primary_side", ("right",), ("left", "rectum")),
                os=Effect(1.354, 1.238, 1.482, "Liu W et al. Eur J Surg Oncol 2019 (meta-analysis, 12 studies, "
                          "6387 patients)", 2019, "V"),
                rfs=Effect(1.104, 0.987, 1.235, "Liu W et al. Eur J Surg Oncol 2019 (DFS)", 2019, "V")),
    PriorFactor("recist_stable", "recist_response", ("recist_response",), "stable vs response",
                _is("recist_response", ("SD",), (*_RESPONDED, "PD")),
                os=Effect(1.2, 1.05, 1.4, _ADAM, 2004, "D", "plausible range"),
                rfs=Effect(1.15, 1.0, 1.4, _ADAM + "; 5-yr DFS 21/17%", 2004, "D", "plausible range")),
    PriorFactor("recist_progression", "recist_response", ("recist_response",), "progression vs response",
                _is("recist_response", ("PD",), (*_RESPONDED, "SD")),
                os=Effect(2.5, 2.0, 3.0, _ADAM, 2004, "D", "plausible range"),
                rfs=Effect(2.3, 1.8, 3.0, _ADAM + "; 3-yr DFS 32/7%", 2004, "D", "plausible range")),
    # postoperative factors: only in postoperative models
    PriorFactor("margin_r1_r2", "resection_margin", ("resection_margin",), "R1 or R2 vs R0",
                _is("resection_margin", ("R1", "R2"), ("R0",)),
                os=Effect(1.603, 1.464, 1.755, "Liu W et al. Int J Colorectal Dis 2015 (18 studies, 6790 patients)",
                          2015, "V"),
                rfs=Effect(1.73, 1.5, 2.0, "Dhir M et al. 2012 (5-yr DFS 34.4 vs 21.0%); range of clinical.md §3.6",
                           2012, "D", "plausible range"),
                postoperative=True),
    PriorFactor("pathological_complete", "viable_tumour_percent", ("viable_tumour_percent",), "no viable tumour",
                lambda d: np.where(np.isnan(d["viable_tumour_percent"]), np.nan,
                                   (d["viable_tumour_percent"] == 0).astype(float)),
                os=Effect(0.35, 0.25, 0.5, "Xu D et al. J Cancer 2020;11:6256 (10-yr OS 85.2 vs 31.3%)", 2020, "D",
                          "plausible range"),
                rfs=Effect(0.35, 0.25, 0.5, "Xu D et al. J Cancer 2020;11:6256 (10-yr DFS 73.7 vs 15.2%)", 2020,
                           "D", "plausible range"),
                postoperative=True),
)

PRIOR_BY_FEATURE: dict[str, PriorFactor] = {p.feature: p for p in PRIOR}
PRIOR_BY_NAME: dict[str, PriorFactor] = {p.name: p for p in PRIOR}
RULE_INPUTS = tuple(dict.fromkeys(f for p in PRIOR for f in p.inputs))


def prior_table() -> list[dict]:
    """The table as rows (for the model card, the docs and the report): one row per factor and endpoint."""
    rows = []
    for p in PRIOR:
        for ep in ("os", "rfs"):
            e = p.effect(ep)
            rows.append({"factor": p.name, "field": p.field, "coding": p.coding, "endpoint": ep,
                         "hazard_ratio": None if e is None else e.hazard_ratio,
                         "log_hr": None if e is None else round(e.log_hr, 4),
                         "se": None if e is None else round(e.se, 4),
                         "interval": None if e is None else f"{e.low:g}-{e.high:g} ({e.interval})",
                         "source": None if e is None else e.source, "year": None if e is None else e.year,
                         "evidence": None if e is None else e.evidence, "postoperative": p.postoperative})
    return rows


def prior_card_lines(model_name: str, endpoint: str, postoperative: bool = False) -> list[str]:
    """Model-card lines for the models built on the table (``cox_prior``, ``literature_cox``): the published
    effects used for this endpoint, with interval, source, year and evidence tag; nothing for other models."""
    if model_name not in ("cox_prior", "literature_cox"):
        return []
    role = ("the centre of the penalty (its strength tuned by inner CV)" if model_name == "cox_prior"
            else "fixed coefficients (only the baseline survival is estimated from the cohort)")
    lines = ["", f"Published effects used as {role} (`crlm.literature_prior`; factors the cohort does not "
             "record are left out at fit):", "",
             "| factor | coding | HR | interval | source | year | evidence |", "|---|---|---|---|---|---|---|"]
    for p in PRIOR:
        e = p.effect(endpoint)
        if e is not None and (postoperative or not p.postoperative):
            lines.append(f"| {p.field} | {p.coding} | {e.hazard_ratio:g} | {e.low:g}-{e.high:g} ({e.interval}) | "
                         f"{e.source} | {e.year} | {e.evidence} |")
    lines.append("")
    return lines
