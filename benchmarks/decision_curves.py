"""Decision-curve benchmark: crlm's vectorised net benefit against ``dcurves.dca`` measured in the same run.

On a simulated cohort of ``--n`` patients, both compute the net benefit at one horizon for ``--rules`` rules
(continuous risks and yes/no groups) over 48 thresholds, ``--repeats`` times each. Prints the median wall time
of each, their ratio, and the largest absolute difference between the two answers (they must agree: crlm's
implementation is dcurves' computation, vectorised).

Usage: ``.venv/bin/python benchmarks/decision_curves.py [--n 300] [--rules 8] [--repeats 3]``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rules", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--horizon", type=float, default=36.0)
    args = parser.parse_args()

    from dcurves import dca

    from crlm.cohort.simulate import simulate_cohort
    from crlm.evaluation.decision_curves import THRESHOLDS, TREAT_ALL, TREAT_NONE, decision_curves

    cohort = simulate_cohort(args.n, seed=3).with_outcome("os")
    y = cohort.y("os")
    rng = np.random.default_rng(0)
    rules = {f"risk{i}": rng.random(len(y)) if i % 2 == 0 else (rng.random(len(y)) < 0.4).astype(float)
             for i in range(args.rules)}
    data = pd.DataFrame({"event": y["event"].astype(int), "time": y["time"], **rules})

    def ours():
        return decision_curves(y, rules, [args.horizon], thresholds=THRESHOLDS)

    def reference():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dca(data=data, outcome="event", modelnames=list(rules), thresholds=list(THRESHOLDS),
                       time=args.horizon, time_to_outcome_col="time")

    times = {"crlm": [], "dcurves": []}
    for _ in range(args.repeats):
        for name, fn in (("crlm", ours), ("dcurves", reference)):
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            if name == "crlm":
                mine = out
            else:
                ref = out
    ref = ref.assign(model=ref["model"].replace({"all": TREAT_ALL, "none": TREAT_NONE}))
    merged = mine.merge(ref, on=["model", "threshold"], suffixes=("", "_ref"))
    diff = np.nanmax(np.abs(merged.net_benefit.to_numpy(float) - pd.to_numeric(merged.net_benefit_ref).to_numpy(float)))
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"n = {len(y)} patients, {args.rules} rules + treat all/none, {len(THRESHOLDS)} thresholds, horizon "
          f"{args.horizon:g} months, {args.repeats} repeats")
    print(f"{'implementation':<16}{'median s':>10}")
    for k, v in med.items():
        print(f"{k:<16}{v:>10.3f}")
    print(f"ratio dcurves / crlm: {med['dcurves'] / med['crlm']:.1f}x; largest |difference| in net benefit: {diff:.2e}")


if __name__ == "__main__":
    main()
