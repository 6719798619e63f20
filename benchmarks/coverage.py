"""Coverage of the 95% intervals over many seeds, on scenarios whose true effects are known.

For each seed the scenario is generated, loaded and aggregated exactly as `evalkit run`
does, then the workbooks' estimators are applied: crude follow-up rate ratio, the
covariate-adjusted count model (family chosen by AIC), and the member-level
difference-in-differences; with ``--bootstrap N`` also the two-part cost model's ratio of
means, with its delta-method interval and its bootstrap (BCa, N replicates) interval. The
table gives, per scenario, outcome and method, the mean estimate, the true ratio, the share
of 95% intervals that contain it, the share of seeds on which the estimator stopped with a
named error (``failed_fits``) and, for the bootstrap, the mean share of replicates that
could not be computed (``failed_replicates``).

Usage: python benchmarks/coverage.py [--seeds 100] [--scenarios humphreys_moos healthwise_er]
       [--adjusted] [--bootstrap 200]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from evalkit import params as P
from evalkit.errors import EvalkitError
from evalkit.results import write_json_atomic
from evalkit.analysis.study import Study
from evalkit.prepare import prepare


def _attempt(estimates: dict, failed: list, method: str, compute) -> None:
    """Run one estimator; a named evalkit error is a failed fit for this seed."""
    try:
        estimates[method] = compute()
    except EvalkitError:
        failed.append(method)


def one(scenario: str, seed: int, members: int | None, adjusted: bool,
        n_boot: int = 0) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        raw = {"data": {"scenario": scenario, **({"members": members} if members else {})},
               "seed": seed}
        p = P.validate(raw)
        prepare(p, tmp)
        write_json_atomic(Path(tmp) / "params.json", p.to_dict())
        study = Study(Path(tmp) / "params.json")
        truth = study.true_effects(list(dict.fromkeys([*study.outcomes(), "total_cost"])))
        estimates, failed = {}, []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, crude = study.rates()
            estimates["crude"] = crude[(crude.period == "followup") & (crude.scale == "rate_ratio")]
            _attempt(estimates, failed, "pre/post (DiD)", study.prepost)
            if adjusted:
                _attempt(estimates, failed, "adjusted model", lambda: study.adjusted_counts().effects)
            if n_boot:
                _attempt(estimates, failed, "two-part",
                         lambda: study.cost_effect(n_boot=n_boot, seed=seed).effects)
        study.close()
    rows = [{"scenario": scenario, "seed": seed, "outcome": "(any)", "method": m, "failed": True}
            for m in failed]
    for method, table in estimates.items():
        ratios = table[table.scale.isin(["rate_ratio", "ratio"])]
        for r in ratios.itertuples():
            if r.outcome not in truth:
                continue
            boot = "n_replicates" in ratios and not pd.isna(getattr(r, "n_replicates", np.nan))
            rows.append({"scenario": scenario, "seed": seed, "outcome": r.outcome,
                         "method": f"{method}, bootstrap BCa" if boot else method,
                         "estimate": r.estimate, "true": truth[r.outcome],
                         "covered": r.ci_low <= truth[r.outcome] <= r.ci_high, "failed": False,
                         "failed_replicates": r.n_failed / r.n_replicates if boot else np.nan})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--scenarios", nargs="+", default=["humphreys_moos", "healthwise_er"])
    ap.add_argument("--members", type=int, default=None, help="override the scenario's size")
    ap.add_argument("--adjusted", action="store_true", help="also the adjusted count models (slow)")
    ap.add_argument("--bootstrap", type=int, default=0,
                    help="also the two-part cost ratio, with this many bootstrap replicates")
    args = ap.parse_args()
    rows, t0 = [], time.perf_counter()
    for scenario in args.scenarios:
        for seed in range(1, args.seeds + 1):
            rows += one(scenario, seed, args.members, args.adjusted, args.bootstrap)
            print(f"\r{scenario}: {seed}/{args.seeds} seeds, {time.perf_counter() - t0:.0f}s",
                  end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    df = pd.DataFrame(rows)
    for col in ("covered", "failed_replicates"):
        if col not in df:
            df[col] = np.nan
    fits = df[~df["failed"]]
    summary = (fits.groupby(["scenario", "outcome", "method"], sort=False)
                   .agg(seeds=("seed", "nunique"), mean_estimate=("estimate", "mean"),
                        true=("true", "first"), coverage=("covered", "mean"),
                        failed_replicates=("failed_replicates", "mean"))
                   .reset_index())
    failed = df[df["failed"]].groupby(["scenario", "method"]).size()
    summary["failed_fits"] = [
        failed.get((s, m.removesuffix(", bootstrap BCa")), 0) / args.seeds
        for s, m in zip(summary["scenario"], summary["method"])]
    print(f"\nCoverage of 95% intervals ({args.seeds} seeds per scenario)")
    print(summary.round(3).to_string(index=False))
    if len(failed):
        print("\nEstimators that stopped with a named error (seeds):")
        print(failed.to_string())


if __name__ == "__main__":
    main()
