"""In-process Predictor speed for a linear, a boosting and a forest champion: before and after the tree kernel.

Trains Predictors on the real TCIA cohort (OS; the champions' settings: 50 bootstrap refits for the interval),
then measures, for the same patients and in the same run:
- ``after``: ``Predictor.predict`` as shipped (all trees of the refit and its bootstrap refits evaluated together
  from leaf tables, ``crlm.tree_kernel``, routed by its compiled loops, ``crlm.tree_routing``; exact TreeSHAP for
  the contributions);
- ``numpy``: the same with the tree kernel's numpy and per-tree routes instead of the compiled loops (the
  routes before ``crlm.tree_routing``);
- ``before``: the same Predictor on the previous paths: every model's own ``predict_survival`` (scikit-survival's
  per-tree loop; xgboost's ``inplace_predict`` per booster) and the previous explainers (background substitution
  on 20 training patients for rsf / gbsa; xgboost ``pred_contribs`` through a ``DMatrix``).
Every call answers in full: horizons with intervals, the curve, the top contributors and the warnings.
Prints the median per single-patient call (``--calls`` distinct patients), batch throughput (``--batch``
patients per call; median of 3 runs, 1 for the slow previous paths) and the before/after ratios; the linear model (coxnet) is the reference that forests and
boosting should match. Nothing is asserted.

Usage: ``.venv/bin/python benchmarks/predictor_speed.py [--models coxnet,xgb_cox,gbsa,rsf] [--calls 100]
[--batch 1000] [--interval-models 50]``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import time

import numpy as np
import pandas as pd
import xgboost as xgb

from crlm import tree_kernel
from crlm.cohort import load_tcia
from crlm.cohort.base import predictors_frame
from crlm.models import GBSA, RSF, XGBAFT, XGBCox
from crlm.predictor import Predictor
from crlm.predictor_training import train_predictor


def previous_paths(p: Predictor, Z_train: pd.DataFrame) -> Predictor:
    """A copy of ``p`` that evaluates and explains as before the tree kernel (same models, same answers)."""
    before = copy.copy(p)
    before.kernel = copy.copy(p.kernel)
    if before.kernel.kind == "trees":
        before.kernel.kind = "generic"
    explainer = copy.copy(p.explainer)
    estimator = explainer.estimator
    if isinstance(estimator, RSF | GBSA):
        rng = np.random.default_rng(0)
        explainer.background = Z_train.iloc[np.sort(rng.choice(len(Z_train), 20, replace=False))].reset_index(
            drop=True)
        explainer.feature_contributions = explainer._occlusion
    elif isinstance(estimator, XGBCox | XGBAFT):
        booster = estimator.booster_

        def pred_contribs(Z: pd.DataFrame) -> np.ndarray:
            contribs = booster.predict(xgb.DMatrix(Z.to_numpy(dtype=float), feature_names=booster.feature_names),
                                       pred_contribs=True)[:, :-1]
            return (-contribs if isinstance(estimator, XGBAFT) else contribs) @ explainer.field_matrix

        explainer.feature_contributions = pred_contribs
    before.explainer = explainer
    return before


def single_call_ms(p: Predictor, rows: pd.DataFrame, calls: int) -> float:
    p.predict(rows.iloc[[0]])  # warm-up (first-use caches)
    times = []
    for i in range(calls):
        row = rows.iloc[[i % len(rows)]]
        start = time.perf_counter()
        p.predict(row)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def batch_rate(p: Predictor, rows: pd.DataFrame, batch: int, repeats: int = 3) -> float:
    frame = rows.sample(batch, replace=True, random_state=0).reset_index(drop=True)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        p.predict(frame)
        rates.append(batch / (time.perf_counter() - start))
    return float(np.median(rates))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="coxnet,xgb_cox,gbsa,rsf")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--interval-models", type=int, default=50)
    args = parser.parse_args(argv)

    cohort = load_tcia()
    rows = predictors_frame(cohort.data)
    print(f"TCIA cohort, OS, {len(rows)} patients; {args.interval_models} bootstrap refits per Predictor; "
          f"single calls: median of {args.calls} distinct patients; batch: {args.batch} patients\n")
    header = (f"{'model':8s} {'kernel':8s} {'trees':>6s} {'before ms':>10s} {'numpy ms':>9s} {'after ms':>9s} "
              f"{'ratio':>6s} {'before pat/s':>13s} {'numpy pat/s':>12s} {'after pat/s':>12s} {'ratio':>6s}")
    print(header)
    print("-" * len(header))
    reference = None
    for name in args.models.split(","):
        p = train_predictor(cohort, "os", name, n_interval_models=args.interval_models, seed=0)
        _, Z_train = p._prepare(rows)
        before = previous_paths(p, Z_train)
        np.testing.assert_allclose(  # the previous paths answer the same (contributions: other methods)
            [h["survival"] for h in before.predict(rows.head(3))[0]["horizons"]],
            [h["survival"] for h in p.predict(rows.head(3))[0]["horizons"]], atol=1e-5)
        gc.collect()
        after_ms, before_ms = single_call_ms(p, rows, args.calls), single_call_ms(before, rows, args.calls)
        after_rate, before_rate = batch_rate(p, rows, args.batch), batch_rate(before, rows, args.batch, repeats=1)
        tree_kernel.COMPILED_ROUTE = False  # the numpy / per-tree routes, same Predictor
        numpy_ms, numpy_rate = single_call_ms(p, rows, args.calls), batch_rate(p, rows, args.batch)
        tree_kernel.COMPILED_ROUTE = True
        trees = len(p.kernel.trees.roots) if p.kernel.kind == "trees" else 0
        print(f"{name:8s} {p.kernel.kind:8s} {trees:6d} {before_ms:10.2f} {numpy_ms:9.2f} {after_ms:9.2f} "
              f"{before_ms / after_ms:6.1f} {before_rate:13.0f} {numpy_rate:12.0f} {after_rate:12.0f} "
              f"{after_rate / before_rate:6.1f}")
        if name == "coxnet":
            reference = after_ms
    if reference is not None:
        print(f"\nreference: the linear Predictor (coxnet) answers one patient in {reference:.2f} ms in this run")


if __name__ == "__main__":
    main()
