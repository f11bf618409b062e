"""The literature-calibrated simulator: synthetic resected-CRLM cohorts whose true survival is known.

Every prevalence, correlation and hazard ratio comes from ``shared/references/clinical.md`` §3 (the written-down
model with its sources is ``docs/SIMULATOR.md``). Outline:

- Covariates: a latent tumour-burden factor drives the number of metastases, their size, CEA (and CA19-9),
  node status, synchronous presentation, extrahepatic disease and the choice of chemotherapy; BRAF V600E is
  tied to right side, female sex and age >= 65; RAS and BRAF are mutually exclusive; response to chemotherapy
  depends on RAS/BRAF, burden, anti-EGFR and line. Missingness (genomic testing by era, CEA, CA19-9, grade ...)
  is applied after the outcomes are drawn, so the truth always uses the true values.
- Outcomes: proportional-hazards promotion-time cure models, S(t|x) = S0(t) ** exp(lp(x)) with
  S0(t) = cure + (1 - cure) * exp(-(t / scale) ** shape), one for cancer death and one for recurrence, plus
  a perioperative death risk in the first 3 months. The linear predictors hold the clinical.md HRs, non-linear
  terms (CEA flat below 5 ng/mL, log-linear to a plateau at 1000; size flat below 2 cm, log-linear to 10 cm;
  a decaying DFI effect; age above 60) and a RAS x response interaction (response matters less in RAS mutants).
  Recurrence and cancer death share one uniform with probability ``COUPLING`` (the same disease course), else
  they are drawn independently; RFS = min(recurrence, death), so RFS <= OS for every patient.
- Censoring: accrual uniform over 14 years, common closing date at 15 years (administrative follow-up 12-180
  months), and loss to follow-up at 3 % per year.

``SimulationTruth`` gives the exact S(t|x) of every patient for ``os``, ``rfs`` (alias ``dfs``) and ``liver_rfs``:
the oracle no model can beat (``crlm.cohort.truth``; it also records the seed that drew the cohort).
``check_table`` (``crlm.evaluation.simulator_check``) compares a cohort with the clinical.md and
external-validation targets.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from crlm.cohort.base import Cohort, to_canonical
from crlm.cohort.truth import (  # noqa: F401  (re-exported: the simulator's public names)
    COUPLING,
    DEATH_BASELINE,
    OPERATIVE_WINDOW_MONTHS,
    RECURRENCE_BASELINE,
    CureBaseline,
    SimulationTruth,
)

# --------------------------------------------------------------------------- parameters

ACCRUAL_MONTHS = 168.0  # patients enter uniformly over 14 years ...
CLOSING_MONTHS = 180.0  # ... and are followed to a common closing date 15 years after the first entry
LOSS_PER_YEAR = 0.03  # random loss to follow-up (exponential)
_NONE = np.array(None, dtype=object)  # np.where's missing value (numpy's stubs refuse a bare None)
SIMULATED_CAVEATS = (  # the simulated cohort's limitations, printed by the model card (as a mapping's caveats)
    "**Synthetic data:** the cohort is simulated from published effect sizes; the figures describe the method on "
    "synthetic data and say nothing about real patients.",
    f"**Simulated follow-up:** accrual is uniform over {ACCRUAL_MONTHS / 12:g} years with a common closing date "
    f"(the end of follow-up) {CLOSING_MONTHS / 12:g} years after the first entry.",
)
RAS_RESPONSE_FACTOR = 0.4  # in RAS mutants the response log-HRs (SD, PD, pCR) are multiplied by this


# Hazard ratios (OS = cancer death, RFS = recurrence) per unit of each term of the linear predictor.
# Terms are defined in ``_terms``; sources are clinical.md sections (see docs/SIMULATOR.md).
HAZARD_RATIOS: dict[str, tuple[float, float]] = {
    # OS HRs of the GAME factors (node, CEA, number, extrahepatic, RAS) are attenuated from the single-centre
    # figures so that GAME groups separate OS as much as large external validations report, no more: Dutch
    # nationwide cohort (Bolhuis, Cancers 2022;14:2356, n = 1105) median OS 68.1 / 46.7 / 32.4 months for low /
    # medium / high GAME, GAME C 0.596, Fong C 0.577 (see check_table and docs/SIMULATOR.md) [D].
    "node_positive": (1.20, 1.40),  # §3.2 meta-RR 1.6 (unadjusted); §3.6 RFS 1.4-1.6; OS attenuated [D]
    "early_dfi": (1.30, 1.60),  # exp(-DFI/12): synchronous vs long DFI; §3.2/§3.6 sync 1.2-1.5, RFS 1.5
    "metastases": (1.20, 1.45),  # log(n)/log(4), n capped at 20; §3.2 >1 RR 1.6; §3.6 RFS 1.2/lesion
    "size": (1.40, 1.60),  # log(size/2)/log(4) on 2-10 cm; §3.2 >5 cm RR 1.5; §3.6 RFS 1.08/cm
    "cea": (1.30, 1.40),  # log(CEA/5)/log(40) on 5-1000 ng/mL: 1 at 200; §3.2 CEA>200 RR 1.9
    "ca19_9": (1.30, 1.25),  # log(CA19-9/37)/log(10) on 37-1000 U/mL; §1.11 (Imai, Beppu cut-offs) [D]
    "extrahepatic": (1.45, 2.00),  # §3.2 meta-RR 1.9 (unadjusted); §3.6 RFS >= 1.9; OS attenuated [D]
    "ras": (1.45, 1.55),  # §3.3 KRAS HR 1.85-1.86 OS in single centres, attenuated [D]; 1.55-1.65 RFS
    "braf": (3.00, 2.30),  # §3.3 BRAF V600E HR 2.8 OS, DFS 2.29
    "pik3ca": (1.00, 1.10),  # §3.3 HR 0.96 OS, PFS 1.20
    "right_side": (1.30, 1.15),  # §3.4 HR 1.39 OS, DFS 1.18
    "age": (1.25, 1.00),  # per decade above 60 (capped at 90); §3.4/§3.6 >70 vs <=70 HR 1.3, RFS ~1.0
    "comorbidity": (1.20, 1.00),  # [D] competing non-cancer mortality
    "poor_grade": (1.35, 1.25),  # §3.2 poor grade meta-RR 1.9 (unadjusted), attenuated [D]
    "t4": (1.15, 1.15),  # §1.2/§1.6 pT4 in Nordlinger/Nagashima [D]
    "response_stable": (1.10, 1.15),  # §3.5 SD vs response ~1.2-1.4
    "response_progression": (2.20, 1.90),  # §3.5 PD vs response ~2.0-3.0
    "pcr": (0.35, 0.35),  # §3.5 pCR HR ~0.3-0.4
    "progression_before_surgery": (1.80, 2.00),  # §3.5 Viganò 2018 early progression, DFS 21.6 vs 6.3 mo [D]
    "margin_r1": (1.70, 1.70),  # §3.4 R1 HR 1.60-1.92 OS, §3.6 RFS 1.5-2.0
    "margin_r2": (2.50, 3.00),  # [D] macroscopic residue, worse than R1
    "ablation": (1.00, 1.15),  # [D] local recurrence after ablation
}

# Operative (90-day) mortality: base probability and log-odds-like multipliers (§3.1: 2.8 % Fong, 0.55-8 %).
OPERATIVE_MORTALITY = {"base": 0.012, "major_hepatectomy": 0.6, "age_per_year": 0.05, "comorbidity": 0.4,
                       "two_stage": 0.5}


# --------------------------------------------------------------------------- generation helpers


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def _choice(rng: np.random.Generator, labels, probs) -> np.ndarray:
    """One categorical draw per row of ``probs`` (n, k)."""
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    pick = (rng.random(len(cum))[:, None] > cum).sum(axis=1)
    return np.asarray(labels, dtype=object)[np.minimum(pick, len(labels) - 1)]


def _terms(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The linear predictor's terms from the true patient values (non-linear transforms and interaction)."""
    ras_factor = np.where(d["ras"], RAS_RESPONSE_FACTOR, 1.0)
    return {
        "node_positive": d["node"].astype(float),
        "early_dfi": np.exp(-d["dfi"] / 12.0),
        "metastases": np.log(np.minimum(d["n"], 20)) / np.log(4.0),
        "size": np.log(np.clip(d["size"], 2.0, 10.0) / 2.0) / np.log(4.0),
        "cea": np.log(np.clip(d["cea"], 5.0, 1000.0) / 5.0) / np.log(40.0),
        "ca19_9": np.log(np.clip(d["ca19_9"], 37.0, 1000.0) / 37.0) / np.log(10.0),
        "extrahepatic": d["ehd"].astype(float),
        "ras": d["ras"].astype(float),
        "braf": d["braf"].astype(float),
        "pik3ca": d["pik3ca"].astype(float),
        "right_side": (d["side"] == "right").astype(float),
        "age": np.clip(d["age"] - 60.0, 0.0, 30.0) / 10.0,
        "comorbidity": d["comorbidity"].astype(float),
        "poor_grade": (d["grade"] == "poor").astype(float),
        "t4": (d["t_stage"] == "T4").astype(float),
        "response_stable": (d["recist"] == "SD") * ras_factor,
        "response_progression": (d["recist"] == "PD") * ras_factor,
        "pcr": d["pcr"] * ras_factor,
        "progression_before_surgery": d["progression"].astype(float),
        "margin_r1": (d["margin"] == "R1").astype(float),
        "margin_r2": (d["margin"] == "R2").astype(float),
        "ablation": d["ablation"].astype(float),
    }


def linear_predictors(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lp_death, lp_recurrence): sums of log-HR x term."""
    terms = _terms(d)
    lp_os = sum(math.log(HAZARD_RATIOS[k][0]) * v for k, v in terms.items())
    lp_rfs = sum(math.log(HAZARD_RATIOS[k][1]) * v for k, v in terms.items())
    return np.asarray(lp_os, dtype=float), np.asarray(lp_rfs, dtype=float)


def _covariates(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """True patient values (no missingness yet)."""
    d: dict[str, np.ndarray] = {}
    d["entry"] = rng.uniform(0.0, ACCRUAL_MONTHS, n)
    era = d["entry"] / ACCRUAL_MONTHS
    burden = rng.standard_normal(n)  # latent tumour burden
    d["burden"] = burden
    female = rng.random(n) < 0.40
    d["sex"] = np.where(female, "female", "male")
    d["age"] = np.round(np.clip(rng.normal(62.0, 10.5, n), 28.0, 88.0))
    d["side"] = rng.choice(np.array(["right", "left", "rectum"], dtype=object), n, p=[0.30, 0.40, 0.30])
    right = d["side"] == "right"

    # Genomics: BRAF V600E with right side, female sex, age >= 65 (§3.3); RAS only in BRAF wild-type.
    d["braf"] = rng.random(n) < _expit(-4.35 + 1.3 * right + 0.6 * female + 0.5 * (d["age"] >= 65))
    ras = (rng.random(n) < _expit(-0.62 + 0.35 * right)) & ~d["braf"]
    nras_only = rng.random(n) < 0.10  # ~10 % of RAS mutations are NRAS
    d["kras"] = ras & ~nras_only
    d["nras"] = ras & nras_only
    d["ras"] = ras
    d["pik3ca"] = rng.random(n) < _expit(-2.1 + 0.4 * ras)
    d["dmmr"] = rng.random(n) < _expit(-4.0 + 1.2 * right + 1.5 * d["braf"])

    # Primary tumour.
    t_latent = 0.25 * burden + rng.standard_normal(n)
    d["t_stage"] = np.select([t_latent < -1.88, t_latent < -1.15, t_latent < 0.70], ["T1", "T2", "T3"], "T4")
    early_t = np.isin(d["t_stage"], ["T1", "T2"])
    d["node"] = rng.random(n) < _expit(0.40 + 0.40 * burden + 0.5 * (d["t_stage"] == "T4") - 0.8 * early_t)
    poor = rng.random(n) < _expit(-1.95 + 0.5 * right + 0.9 * d["braf"] + 0.8 * d["dmmr"])
    well = ~poor & (rng.random(n) < 0.11)
    d["grade"] = np.where(poor, "poor", np.where(well, "well", "moderate"))

    # Liver disease: number, size and CEA load on the burden factor.
    sync = rng.random(n) < _expit(-0.12 + 0.35 * burden)
    meta_dfi = np.maximum(1.0, np.round(np.exp(rng.normal(math.log(22.0), 0.8, n))))
    d["dfi"] = np.where(sync, 0.0, np.minimum(meta_dfi, 480.0))
    z_n = 0.6 * burden + 0.8 * rng.standard_normal(n)
    d["n"] = np.clip(np.round(np.exp(0.685 + 1.108 * z_n)), 1, 60)
    z_s = 0.5 * burden + 0.866 * rng.standard_normal(n)
    d["size_baseline"] = np.clip(np.round(np.exp(math.log(4.2) + 0.72 * z_s), 1), 0.5, 22.0)
    e_cea = rng.standard_normal(n)
    d["cea"] = np.clip(np.round(np.exp(math.log(10.0) + 2.1 * (0.5 * burden + 0.866 * e_cea)), 1), 0.3, 50000.0)
    z_ca = 0.3 * burden + 0.4 * e_cea + 0.866 * rng.standard_normal(n)
    d["ca19_9"] = np.clip(np.round(np.exp(math.log(18.0) + 1.6 * z_ca), 1), 0.5, 50000.0)
    d["bilobar"] = (d["n"] > 1) & (rng.random(n) < _expit(-0.8 + 1.0 * np.log(d["n"])))
    d["ehd"] = rng.random(n) < _expit(-2.55 + 0.5 * burden + 0.4 * ras)
    d["comorbidity"] = rng.random(n) < _expit(-1.45 + 0.05 * (d["age"] - 62.0))
    d["bmi"] = np.round(np.clip(rng.normal(27.0, 4.5, n), 16.0, 50.0), 1)

    # Genomic testing became routine over the accrual period: untested markers are "unknown".
    d["kras_tested"] = rng.random(n) < 0.68 + 0.30 * era
    d["nras_tested"] = d["kras_tested"] & (rng.random(n) < 0.65 + 0.35 * era)
    d["braf_tested"] = d["kras_tested"] & (rng.random(n) < 0.75 + 0.25 * era)
    d["pik3ca_tested"] = rng.random(n) < 0.25 + 0.40 * era
    d["mmr_tested"] = rng.random(n) < 0.35 + 0.40 * era
    _chemotherapy(rng, d, era)
    _operation(rng, d)
    return d


def _chemotherapy(rng: np.random.Generator, d: dict[str, np.ndarray], era: np.ndarray) -> None:
    n = len(era)
    burden, ras = d["burden"], d["ras"]
    treated = rng.random(n) < _expit(0.05 + 0.7 * burden + 0.4 * (d["dfi"] == 0) + 0.5 * d["ehd"]
                                     + 0.8 * (era - 0.5))
    d["treated"] = treated
    second = treated & (rng.random(n) < np.where(d["dfi"] == 0, 0.05, 0.20))
    d["line"] = np.where(treated, np.where(second, "second_or_later", "first"), _NONE)
    first_probs = [0.45, 0.22, 0.12, 0.08, 0.08, 0.05]
    second_probs = [0.20, 0.05, 0.55, 0.05, 0.05, 0.10]
    regimens = ["folfox", "capox", "folfiri", "folfoxiri", "fluoropyrimidine", "other"]
    probs = np.where(second[:, None], second_probs, first_probs)
    d["regimen"] = np.where(treated, _choice(rng, regimens, probs), "none")
    # Anti-EGFR only for known RAS wild-type, non-BRAF, left-sided/rectal primaries (S2 via §3.3).
    ras_wt_known = d["kras_tested"] & d["nras_tested"] & ~ras & ~(d["braf_tested"] & d["braf"])
    egfr_ok = ras_wt_known & (d["side"] != "right")
    bio_probs = np.where(egfr_ok[:, None], [0.30, 0.30, 0.40], [0.55, 0.45, 0.0])
    d["biologic"] = np.where(treated, _choice(rng, ["none", "bevacizumab", "anti_egfr"], bio_probs), "none")
    d["cycles"] = np.where(treated, np.clip(3 + rng.poisson(3.0, n) + 2 * second, 2, 24), 0).astype(float)

    # Response (§3.5): ordinal latent, worse with RAS/BRAF, burden and later lines, better with anti-EGFR.
    r = (-0.50 * ras - 0.70 * d["braf"] - 0.25 * burden + 0.35 * (d["biologic"] == "anti_egfr")
         + 0.25 * (d["regimen"] == "folfoxiri") - 0.50 * second + rng.standard_normal(n))
    recist = np.select([r < -1.65, r < -0.40, r < 1.95], ["PD", "SD", "PR"], "CR")
    d["recist"] = np.where(treated, recist, _NONE)
    u = rng.random(n)
    change = np.select(
        [recist == "CR", recist == "PR", recist == "SD"],
        [-100.0, -30.0 - 60.0 * rng.beta(2.0, 2.5, n), -29.0 + 48.0 * u],
        20.0 + 100.0 * rng.beta(1.5, 4.0, n))
    d["change"] = np.where(treated, np.round(change, 1), np.nan)
    post = d["size_baseline"] * (1.0 + np.nan_to_num(d["change"]) / 100.0)
    d["size"] = np.where(treated & (recist == "CR"), 0.0,
                         np.clip(np.round(post, 1), 0.3, 30.0))
    pcr_prob = np.select([recist == "CR", recist == "PR", recist == "SD"], [0.55, 0.11, 0.01], 0.0)
    d["pcr"] = treated & (rng.random(n) < pcr_prob)
    viable = np.select([recist == "CR", recist == "PR", recist == "SD"],
                       [5.0 + 40.0 * rng.beta(1.5, 3.0, n), 5.0 + 70.0 * rng.beta(2.0, 3.0, n),
                        20.0 + 75.0 * rng.beta(3.0, 2.0, n)],
                       50.0 + 50.0 * rng.beta(3.0, 1.5, n))
    d["viable"] = np.where(treated, np.where(d["pcr"], 0.0, np.clip(np.round(viable), 1.0, 100.0)), np.nan)
    d["progression"] = treated & (rng.random(n) < _expit(-3.4 + 1.0 * (recist == "SD")
                                                         + 1.7 * (recist == "PD")))


def _operation(rng: np.random.Generator, d: dict[str, np.ndarray]) -> None:
    n = len(d["n"])
    burden = d["burden"]
    d["major"] = rng.random(n) < _expit(-0.55 + 0.6 * burden + 0.5 * (d["size_baseline"] > 5) + 0.3 * d["bilobar"])
    d["two_stage"] = rng.random(n) < np.where(d["bilobar"] & (d["n"] >= 4), 0.18, 0.004)
    d["pve"] = rng.random(n) < np.where(d["two_stage"], 0.7, np.where(d["major"], 0.08, 0.0))
    d["ablation"] = rng.random(n) < _expit(-2.9 + 0.9 * np.log(d["n"]) + 0.5 * d["bilobar"])
    p_r2 = np.where(d["two_stage"], 0.05, 0.012)
    p_r1 = _expit(-2.35 + 0.40 * burden + 0.6 * d["ras"] + 0.5 * d["two_stage"] + 0.3 * (d["n"] >= 4))
    u = rng.random(n)
    d["margin"] = np.where(u < p_r2, "R2", np.where(u < p_r2 + p_r1, "R1", "R0"))


def _outcomes(rng: np.random.Generator, d: dict[str, np.ndarray], truth: SimulationTruth) -> dict[str, np.ndarray]:
    n = len(truth)
    # Perioperative death, uniform in the first OPERATIVE_WINDOW_MONTHS.
    op_death = rng.random(n) < truth.operative_mortality
    t_op = np.where(op_death, rng.uniform(0.0, truth.operative_window, n), np.inf)
    # Cancer death and recurrence from S0(t)^exp(lp): S0(T) = U^(1 / exp(lp)).
    u_death = rng.random(n)
    shared = rng.random(n) < truth.coupling
    u_rec = np.where(shared, u_death, rng.random(n))
    t_cancer = truth.death_baseline.quantile(u_death ** np.exp(-truth.lp_death))
    t_rec = truth.recurrence_baseline.quantile(u_rec ** np.exp(-truth.lp_recurrence))
    liver = rng.random(n) < truth.liver_share
    t_death = np.minimum(t_op, t_cancer)
    t_rfs = np.minimum(t_rec, t_death)
    t_liver = np.where(liver & (t_rec <= t_death), t_rec, t_death)
    # Censoring: administrative (common closing date) and random loss to follow-up.
    admin = CLOSING_MONTHS - d["entry"]
    loss = rng.exponential(12.0 / LOSS_PER_YEAR, n)
    censor = np.minimum(admin, loss)
    out = {}
    for name, t in (("os", t_death), ("rfs", t_rfs), ("liver_rfs", t_liver)):
        observed = np.minimum(t, censor)
        out[f"{name}_months"] = np.maximum(np.round(observed, 2), 0.01)
        out[f"{name}_event"] = t <= censor
    return out


def _missing(rng: np.random.Generator, values: np.ndarray, share: float | np.ndarray) -> np.ndarray:
    """``values`` with a random ``share`` set to missing (object or float arrays)."""
    drop = rng.random(len(values)) < share
    if values.dtype.kind == "f":
        return np.where(drop, np.nan, values)
    return np.where(drop, _NONE, values.astype(object))


def _marker(mutant: np.ndarray, tested: np.ndarray) -> np.ndarray:
    return np.where(tested, np.where(mutant, "mutant", "wild_type"), "unknown").astype(object)


def _fong(d: dict[str, np.ndarray]) -> np.ndarray:
    return (d["node"].astype(int) + (d["dfi"] < 12) + (d["n"] > 1) + (d["cea"] > 200)
            + (d["size"] > 5)).astype(float)


# --------------------------------------------------------------------------- the cohort


def simulate_cohort(n: int, seed: int) -> Cohort:
    """A synthetic resected-CRLM cohort of ``n`` patients, the same for the same seed, with its truth."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = np.random.default_rng(seed)
    d = _covariates(rng, n)
    lp_death, lp_rec = linear_predictors(d)
    om = OPERATIVE_MORTALITY
    operative = np.clip(om["base"] * np.exp(om["major_hepatectomy"] * d["major"]
                                            + om["age_per_year"] * (d["age"] - 62.0)
                                            + om["comorbidity"] * d["comorbidity"]
                                            + om["two_stage"] * d["two_stage"]), 0.0, 0.3)
    liver_share = np.where(d["ras"], 0.55, 0.70)  # RAS mutants recur more often in the lung (§3.3)
    truth = SimulationTruth(lp_death, lp_rec, operative, liver_share, seed=seed)
    outcomes = _outcomes(rng, d, truth)

    treated = d["treated"]
    recist_known = ~treated | (rng.random(n) >= 0.05)
    change_known = recist_known & (rng.random(n) >= 0.05)
    dfi = _missing(rng, d["dfi"], 0.03)
    data = {
        "patient_id": np.array([f"SIM-{i:05d}" for i in range(1, n + 1)], dtype=object),
        "age_years": d["age"],
        "sex": d["sex"],
        "primary_side": _missing(rng, d["side"], 0.02),
        "primary_t_stage": _missing(rng, d["t_stage"], 0.06),
        "primary_node_positive": _missing(rng, d["node"], 0.02),
        "primary_grade": _missing(rng, d["grade"], 0.12),
        "disease_free_interval_months": dfi,
        "synchronous_metastases": d["dfi"] == 0,  # recorded even where the interval itself is missing
        "n_liver_metastases": d["n"].astype(float),
        "largest_metastasis_cm": d["size"],
        "bilobar_disease": _missing(rng, d["bilobar"], 0.03),
        "cea_ng_ml": _missing(rng, d["cea"], 0.04),
        "ca19_9_u_ml": _missing(rng, d["ca19_9"], 0.28),
        "extrahepatic_disease": d["ehd"],
        "major_comorbidity": _missing(rng, d["comorbidity"], 0.04),
        "body_mass_index": _missing(rng, d["bmi"], 0.15),
        "kras_status": _marker(d["kras"], d["kras_tested"]),
        "nras_status": _marker(d["nras"], d["nras_tested"]),
        "braf_v600e_status": _marker(d["braf"], d["braf_tested"]),
        "pik3ca_status": _marker(d["pik3ca"], d["pik3ca_tested"]),
        "mmr_status": np.where(d["mmr_tested"], np.where(d["dmmr"], "deficient", "proficient"), "unknown"),
        "neoadjuvant_chemotherapy": treated,
        "chemo_regimen": d["regimen"],
        "chemo_biologic": d["biologic"],
        "chemo_cycles": np.where(treated & (rng.random(n) < 0.06), np.nan, d["cycles"]),
        "chemo_line": d["line"],
        "recist_response": np.where(recist_known, d["recist"], _NONE),
        "tumour_size_change_percent": np.where(change_known, d["change"], np.nan),
        "progression_before_surgery": d["progression"],
        "viable_tumour_percent": _missing(rng, d["viable"], 0.12),
        "resection_margin": _missing(rng, d["margin"], 0.03),
        "major_hepatectomy": _missing(rng, d["major"], 0.01),
        "two_stage_hepatectomy": d["two_stage"],
        "portal_vein_embolisation": d["pve"],
        "ablation": d["ablation"],
        "fong_score_recorded": _missing(rng, _fong(d), 0.10),
        **outcomes,
    }
    df = to_canonical(pd.DataFrame(data))
    return Cohort(df, name="simulated", source=f"crlm simulator n={n} seed={seed}",
                  licence="synthetic, no real patients", truth=truth, caveats=SIMULATED_CAVEATS)
