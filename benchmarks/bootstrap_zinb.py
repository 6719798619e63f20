"""The cost-benefit workbook's ZINB bootstrap: replicates fitted together against one by one.

Prepares (once, cached in benchmarks/_data/) a synthetic plan through evalkit's own
preparation (20,000 members by default, the size of params/demo.yaml), takes the member
frame and terms the cost-benefit workbook's joint bootstrap uses for its ER model
(zero-inflated NB2, member-months as exposure), draws the bootstrap's row counts, and
times, interleaved in this one process on the same blocks of replicates:

* batched: :func:`evalkit.models.count_bootstrap._zi_newton`, every replicate of a block
  fitted together by the trust-region Newton method, its per-row derivatives summed over
  chunks of rows (``_CHUNK_ROWS``);
* batched, whole segments: the same with each segment of rows (zero and positive counts)
  summed at once, as before the chunks (at a million rows their per-row terms no longer
  fit in the processor's cache);
* one by one: every replicate refitted alone by ``count_model``'s maximiser on its
  resampled rows (:func:`evalkit.models.count_bootstrap._refit_one_by_one`), the route
  the replicates took whose plain Newton steps from the full-sample estimates failed
  (87 of the demo's 100).

Prints the median seconds per block, the ratios, the replicates that needed the one-by-one
fallback and the largest differences between the routes' effects. ``--run RUN_DIR`` takes
the data of a finished run instead (such as a million-member run of params/demo.yaml, where
blocks hold 6 replicates); ``--no-refit`` leaves out the one-by-one route (15-20 s a
replicate at a million members).

Usage: python benchmarks/bootstrap_zinb.py [--members 20000 | --run RUN_DIR] [--blocks 2]
       [--repeats 3] [--no-refit]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import special
from threadpoolctl import threadpool_limits

import evalkit
from evalkit import params as _params
from evalkit.analysis.spec import model_frame
from evalkit.analysis.study import prepare_study
from evalkit.models import count_bootstrap as cb

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
SEED = 20240611                     # params/demo.yaml's


def study_for(members: int) -> evalkit.Study:
    """A prepared run of the demo plan with ``members`` members (cached)."""
    out = DATA / f"zinb_{members}"
    if not (out / "work" / "analysis.duckdb").exists() or not (out / "params.json").exists():
        t = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        prepare_study(_params.validate({"data": {"members": members}, "seed": SEED}), out)
        print(f"prepared {members:,} members in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return evalkit.Study(out / "params.json")


def blocks(study: evalkit.Study, n_blocks: int):
    """The bootstrap's state for the ZINB and its first ``n_blocks`` blocks of row counts."""
    mf = model_frame(study.treated_frame(), study.covariates())
    rhs = " + ".join(["treated", *mf.names])
    data = mf.frame[["treated", "er_visits", "member_months", *dict.fromkeys(mf.columns)]]
    captured = {}
    fit_block = cb._fit_count_counts

    def capture(state, C, cache):
        captured.setdefault("state", state)
        captured.setdefault("C", []).append(C.copy())
        return fit_block(state, C, cache)

    cb._fit_count_counts = capture
    try:
        cb.bootstrap_count_effect(data, f"er_visits ~ {rhs}", "treated", family="zinb",
                                  exposure="member_months", n_boot=100, seed=SEED,
                                  ci="percentile", n_jobs=1)
    finally:
        cb._fit_count_counts = fit_block
    return captured["state"], captured["C"][:n_blocks]


def effects(state, C, Pm):
    """Rate difference per 1,000 member-months of each replicate's parameters."""
    kx, kz = state["kx"], state["kz"]
    out = []
    for Xt, Zt in ((state["X1"], state["Z1"]), (state["X0"], state["Z0"])):
        m = np.exp(Xt @ Pm[:kx]) * special.expit(-(Zt @ Pm[kx:kx + kz]))
        out.append(1000.0 * np.sum(C * m, axis=0) / C.sum(axis=0))
    return out[0] - out[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=20_000)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--run", type=Path, help="a finished run's folder, whose data to use")
    ap.add_argument("--no-refit", action="store_true", help="leave out the one-by-one route")
    args = ap.parse_args()
    study = evalkit.Study(args.run / "params.json") if args.run else study_for(args.members)
    state, Cs = blocks(study, args.blocks)
    chunk_rows = cb._CHUNK_ROWS
    times = {"chunks": [], "whole": [], "refit": []}
    fallback, n_separated, diff = 0, 0, {"whole": 0.0, "refit": 0.0}
    with threadpool_limits(limits=1, user_api="blas"):
        for rep in range(args.repeats):             # interleaved, same process
            for C in Cs:
                Pm = {}
                for route, rows in (("chunks", chunk_rows), ("whole", 2**62)):
                    cb._CHUNK_ROWS = rows
                    try:
                        t = time.perf_counter()
                        Pm[route], conv, sep, _ = cb._zi_newton(state, C)
                        times[route].append(time.perf_counter() - t)
                    finally:
                        cb._CHUNK_ROWS = chunk_rows
                    if route == "chunks":
                        fitted = conv & ~sep            # failed replicates are not compared
                        if rep == 0:
                            fallback += int(np.sum(~conv))
                            n_separated += int(np.sum(sep))
                if not args.no_refit:
                    Pm["refit"] = np.repeat(state["p0"][:, None], C.shape[1], axis=1)
                    reasons = [f"the {state['family']} model did not converge"] * C.shape[1]
                    t = time.perf_counter()
                    cb._refit_one_by_one(state, C, Pm["refit"], reasons)
                    times["refit"].append(time.perf_counter() - t)
                if rep == 0:
                    a = effects(state, C, Pm["chunks"])
                    for route in Pm.keys() - {"chunks"}:
                        b = effects(state, C, Pm[route])
                        diff[route] = max(diff[route],
                                          float(np.max(np.abs(a / b - 1)[fitted], initial=0)))
    n = len(state["y"])
    print(f"\nZINB bootstrap, {n:,} members, blocks of {Cs[0].shape[1]} replicates, "
          f"median of {args.repeats * len(Cs)} blocks (seconds per block; ratio to the "
          "chunks)\n")
    base = statistics.median(times["chunks"])
    for route, label in (("chunks", "batched, chunks of rows"),
                         ("whole", "batched, whole segments"), ("refit", "one by one")):
        if times[route]:
            t = statistics.median(times[route])
            print(f"{label:<26} {t:>8.2f} {t / base:>7.2f}x"
                  + (f"   effects differ by at most {diff[route]:.1e} relative "
                     "(replicates the batched route fitted)"
                     if route != "chunks" else ""))
    print(f"replicates left to the one-by-one fallback: {fallback} of "
          f"{sum(C.shape[1] for C in Cs)}; failed (zero part separating the zeros): "
          f"{n_separated}")


if __name__ == "__main__":
    main()
