"""Coverage of the 95% intervals over many seeds, on scenarios whose true effects are known.

For each seed the scenario is generated, loaded and aggregated exactly as `evalkit run`
does, then the workbooks' estimators are applied: crude follow-up rate ratio, the
covariate-adjusted count model (family chosen by AIC), and the member-level
difference-in-differences. The table gives, per scenario, outcome and method, the mean
estimate, the true ratio and the share of 95% intervals that contain it.

Usage: python benchmarks/coverage.py [--seeds 100] [--scenarios humphreys_moos healthwise_er]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from evalkit import params as P
from evalkit.results import write_json_atomic
from evalkit.study import Study, prepare


def one(scenario: str, seed: int, members: int | None, adjusted: bool) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        raw = {"data": {"scenario": scenario, **({"members": members} if members else {})},
               "seed": seed}
        p = P.validate(raw)
        prepare(p, tmp)
        write_json_atomic(Path(tmp) / "params.json", p.to_dict())
        study = Study(Path(tmp) / "params.json")
        truth = study.true_effects()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, crude = study.rates()
            estimates = {"crude": crude[(crude.period == "followup") & (crude.scale == "rate_ratio")],
                         "pre/post (DiD)": study.prepost()}
            if adjusted:
                estimates["adjusted model"] = study.adjusted_counts().effects
        study.close()
    rows = []
    for method, table in estimates.items():
        for r in table[table.scale == "rate_ratio"].itertuples():
            if r.outcome in truth:
                rows.append({"scenario": scenario, "seed": seed, "outcome": r.outcome, "method": method,
                             "estimate": r.estimate, "true": truth[r.outcome],
                             "covered": r.ci_low <= truth[r.outcome] <= r.ci_high})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--scenarios", nargs="+", default=["humphreys_moos", "healthwise_er"])
    ap.add_argument("--members", type=int, default=None, help="override the scenario's size")
    ap.add_argument("--adjusted", action="store_true", help="also the adjusted count models (slow)")
    args = ap.parse_args()
    rows, t0 = [], time.perf_counter()
    for scenario in args.scenarios:
        for seed in range(1, args.seeds + 1):
            rows += one(scenario, seed, args.members, args.adjusted)
            print(f"\r{scenario}: {seed}/{args.seeds} seeds, {time.perf_counter() - t0:.0f}s",
                  end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    df = pd.DataFrame(rows)
    summary = (df.groupby(["scenario", "outcome", "method"], sort=False)
                 .agg(seeds=("seed", "nunique"), mean_estimate=("estimate", "mean"),
                      true=("true", "first"), coverage=("covered", "mean"))
                 .reset_index())
    print(f"\nCoverage of 95% intervals ({args.seeds} seeds per scenario)")
    print(summary.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
