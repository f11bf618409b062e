"""The simulator's truth: the generating model's exact survival for every simulated patient (the oracle).

Kept apart from the generator (``crlm.cohort.simulate``) so that a ``Cohort`` can carry its truth, and
evaluation can read it, without importing the simulator. The model is written down in ``docs/SIMULATOR.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crlm.schema import endpoint

OPERATIVE_WINDOW_MONTHS = 3.0  # perioperative (90-day) deaths fall uniformly in this window
COUPLING = 0.75  # probability that recurrence and cancer death share one uniform (one disease course)


@dataclass(frozen=True)
class CureBaseline:
    """Baseline of a promotion-time cure model: S0(t) = cure + (1 - cure) exp(-(t/scale)^shape).

    With S(t|x) = S0(t)^exp(lp) the hazard ratio between two patients is exp(lp1 - lp2) at every t
    (proportional hazards) and the patient's cure fraction is cure^exp(lp).
    """

    cure: float
    scale: float  # months
    shape: float

    def survival(self, t) -> np.ndarray:
        t = np.maximum(np.asarray(t, dtype=float), 0.0)
        return self.cure + (1.0 - self.cure) * np.exp(-((t / self.scale) ** self.shape))

    def quantile(self, v) -> np.ndarray:
        """The time t with S0(t) = v (inf where v <= cure: never)."""
        v = np.asarray(v, dtype=float)
        frac = np.clip((v - self.cure) / (1.0 - self.cure), 1e-300, 1.0)
        t = self.scale * (-np.log(frac)) ** (1.0 / self.shape)
        return np.where(v <= self.cure, np.inf, t)


# Baselines of the reference patient (every term of the linear predictor 0: node-negative, DFI long, one
# metastasis <= 2 cm, CEA <= 5, RAS/BRAF wild-type, left/rectum, age <= 60, R0, ...). Fitted (least squares
# on the truth's mean curves, n = 40000) so that the cohort's marginal curves meet clinical.md §3.1: OS 45 %
# at 5 years, 25 % at 10, median 52 months; RFS 65 % at 1 year, median 19 months, 25 % at 5 years. The
# Weibull shape > 1 gives the low hazard of the first months after surgery; without it the mixture over
# patients front-loads the marginal hazard and 1-year recurrence and median RFS cannot both be met.
# The death baseline was refitted (cure 0.623 -> 0.555, scale 95 -> 81) when the GAME-factor HRs below were
# attenuated to meet the external GAME group medians (Bolhuis 2022): the marginal OS targets still hold.
DEATH_BASELINE = CureBaseline(cure=0.555, scale=81.0, shape=1.48)
RECURRENCE_BASELINE = CureBaseline(cure=0.732, scale=27.2, shape=1.53)


@dataclass(frozen=True, eq=False)
class SimulationTruth:
    """The generating model's answers for each simulated patient (the oracle).

    ``lp_death`` and ``lp_recurrence`` are the true log hazard ratios against the reference patient;
    ``operative_mortality`` the probability of a perioperative death; ``liver_share`` the probability that a
    recurrence involves the liver. ``seed`` is the seed ``simulate_cohort`` drew the patients with (an
    independent cohort, e.g. the benchmark's ceiling, must be drawn with another).
    """

    lp_death: np.ndarray
    lp_recurrence: np.ndarray
    operative_mortality: np.ndarray
    liver_share: np.ndarray
    death_baseline: CureBaseline = DEATH_BASELINE
    recurrence_baseline: CureBaseline = RECURRENCE_BASELINE
    coupling: float = COUPLING
    operative_window: float = OPERATIVE_WINDOW_MONTHS
    seed: int | None = None  # the simulator's seed that drew these patients (None: not from simulate_cohort)

    def __len__(self) -> int:
        return len(self.lp_death)

    def _parts(self, times) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        t = np.atleast_1d(np.asarray(times, dtype=float))[None, :]
        s_op = 1.0 - self.operative_mortality[:, None] * np.minimum(t / self.operative_window, 1.0)
        s_cancer = self.death_baseline.survival(t) ** np.exp(self.lp_death)[:, None]
        s_rec = self.recurrence_baseline.survival(t) ** np.exp(self.lp_recurrence)[:, None]
        # P(recurrence > t and cancer death > t): comonotone with prob. coupling, else independent.
        joint = self.coupling * np.minimum(s_rec, s_cancer) + (1.0 - self.coupling) * s_rec * s_cancer
        return s_op, s_cancer, s_rec, joint

    def survival(self, endpoint_name: str, times) -> np.ndarray:
        """True S(t|x), shape (n, len(times)), for ``os``, ``rfs`` (alias ``dfs``) or ``liver_rfs``."""
        name = endpoint(endpoint_name).name
        s_op, s_cancer, _, joint = self._parts(times)
        if name == "os":
            return s_op * s_cancer
        if name == "rfs":
            return s_op * joint
        share = self.liver_share[:, None]  # liver_rfs: death, or a recurrence that involves the liver
        return s_op * ((1.0 - share) * s_cancer + share * joint)

    def risk(self, endpoint_name: str, horizon: float = 60.0) -> np.ndarray:
        """True probability of the event by ``horizon`` months (5 years by default); higher = worse."""
        return 1.0 - self.survival(endpoint_name, [horizon])[:, 0]

    def subset(self, idx) -> SimulationTruth:
        idx = np.asarray(idx)
        return SimulationTruth(self.lp_death[idx], self.lp_recurrence[idx], self.operative_mortality[idx],
                               self.liver_share[idx], self.death_baseline, self.recurrence_baseline,
                               self.coupling, self.operative_window, self.seed)
