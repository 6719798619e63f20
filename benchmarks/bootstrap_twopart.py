"""Bootstrap of the two-part cost effect: refits one by one vs batched replicate weights.

Builds a synthetic cohort of members (numpy, seeded; the same data-generating process as
tests/reference/make_synthetic.py: confounded treatment, ~30% zero costs, gamma costs
when positive), then, in this one process and interleaved over ``--repeats`` rounds:

* **naive** (the baseline): for a few replicates, resample the rows (within arms) and
  refit :func:`evalkit.models.twopart.two_part`, then ``.effect()``;
  the time per replicate is extrapolated to ``--n-boot`` replicates (1,000) -- refitting
  all of them would take several minutes;
* **batched**: :func:`evalkit.models.twopart_bootstrap.bootstrap_two_part` with all ``--n-boot``
  replicates, once with percentile intervals only (the replicates alone, like the naive
  loop) and once with the default percentile + BCa (adds the grouped jackknife for the
  acceleration: 1,000 fits without a group of rows each, whose sums are taken as the
  sums over all rows minus the group's, with chord steps; see ``bootstrap_two_part``).

Both use the same seed and strata, hence the same resampling counts
(:func:`evalkit.models.bootstrap.bootstrap_indices`), so the naive replicates can be
compared with the batched ones: the table reports the largest relative difference.

With ``--run RUN_DIR`` (a finished or prepared run's output folder) the data are that
run's members instead, with the cost outcome and the covariate terms its workbooks use
(``Study.treated_frame``, ``Study.covariates``) and the positive part's family the Park
test chooses there, as the costs workbook fits it (``analysis.outcomes.cost_effect``):
e.g. the 1M-member default run, whose nine coefficients a part make each replicate more
work than the synthetic six, and whose positive part is quasi-Poisson.

Usage: python benchmarks/bootstrap_twopart.py [--members 100000] [--n-boot 1000]
       [--naive 5] [--repeats 3] [--n-jobs 2] [--seed 20240611] [--run RUN_DIR]
Prints medians over the repeats; wall seconds are what a user waits, CPU seconds
(this process and its workers) show the work done when the machine is shared.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from evalkit.models import bootstrap_indices, bootstrap_two_part
from evalkit.models.twopart import two_part

FORMULA = "total_cost ~ treated + age + female + comorbidity + baseline_cost"
STATS = ["cost_difference", "ratio", "mean_treated", "mean_control"]


def members(n: int, seed: int) -> pd.DataFrame:
    """Synthetic members: the process of tests/reference/make_synthetic.py, ``n`` rows."""
    rng = np.random.default_rng(seed)
    age = np.clip(np.rint(rng.normal(48.0, 14.0, n)), 18, 85)
    female = rng.binomial(1, 0.52, n)
    comorbidity = np.minimum(rng.poisson(0.4 + 0.035 * (age - 18)), 12)
    treated = rng.binomial(1, expit(-0.4 - 0.012 * (age - 48) + 0.25 * female + 0.10 * comorbidity))
    base_mean = 1800.0 * np.exp(0.22 * comorbidity + 0.008 * (age - 48))
    baseline = np.maximum(np.round(rng.gamma(0.9, base_mean / 0.9), 2), 0.01)
    p_pos = expit(0.40 + 0.012 * (age - 48) + 0.35 * female + 0.30 * comorbidity
                  + 0.00008 * (baseline - 1800.0) - 0.40 * treated)
    mean = np.exp(7.7 + 0.010 * (age - 48) + 0.05 * female + 0.16 * comorbidity
                  + 0.00005 * (baseline - 1800.0) - 0.20 * treated)
    cost = np.where(rng.random(n) < p_pos,
                    np.maximum(np.round(rng.gamma(1.2, mean / 1.2), 2), 0.01), 0.0)
    return pd.DataFrame({"treated": treated, "age": age, "female": female,
                         "comorbidity": comorbidity, "baseline_cost": baseline,
                         "total_cost": cost})


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the bootstrap's workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_members(run: str) -> tuple[pd.DataFrame, str, str]:
    """A run's members, the two-part formula its costs workbook fits and the family of the
    positive part the Park test chooses there."""
    import evalkit
    from evalkit.analysis.outcomes import positive_part_family
    from evalkit.analysis.spec import model_frame
    study = evalkit.Study(str(Path(run) / "params.json"))
    mf = model_frame(study.treated_frame(), study.covariates())
    outcome = study.cost_outcome()
    data = mf.frame[["treated", outcome, *mf.names]]
    formula = f"{outcome} ~ " + " + ".join(["treated", *mf.names])
    return data, formula, positive_part_family(data, formula)[1]


def naive(data, which, indices, formula, second):
    """Refit two_part on the explicitly resampled rows of the replicates ``which``."""
    out, times = {}, []
    for b in which:
        t = time.perf_counter()
        eff = two_part(data.iloc[indices[b]].reset_index(drop=True), formula,
                       second=second).effect("treated")
        times.append(time.perf_counter() - t)
        out[b] = [eff.at("cost_difference"), eff.at("ratio"), eff.mean_treated,
                  eff.mean_control]
    return out, times


def batched(data, args, ci, formula, second):
    t, c = time.perf_counter(), cpu_seconds()
    res = bootstrap_two_part(data, formula, "treated", n_boot=args.n_boot, seed=args.seed,
                             ci=ci, n_jobs=args.n_jobs, second=second)
    return res, time.perf_counter() - t, cpu_seconds() - c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--naive", type=int, default=5, help="naive replicates per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--run", help="a run's output folder: its members, outcome and covariates "
                                  "instead of synthetic ones (--members is then ignored)")
    args = ap.parse_args(argv)

    if args.run:
        data, formula, second = run_members(args.run)
        args.members = len(data)
        print(f"{args.run}: {formula}; positive part {second} (the Park test's choice)",
              file=sys.stderr)
    else:
        data, formula, second = members(args.members, args.seed), FORMULA, "gamma"
    print(f"{args.members:,} members, {args.n_boot:,} replicates, resampling within arms, "
          f"n_jobs={args.n_jobs}, {os.cpu_count()} cores; load average at start "
          f"{os.getloadavg()[0]:.1f}", file=sys.stderr)
    # The resamples both methods use (same seed, strata = treatment).
    wanted = args.naive * args.repeats
    indices = {}
    for b, idx in enumerate(bootstrap_indices(data, args.n_boot, args.seed, strata="treated")):
        if b >= wanted:
            break
        indices[b] = idx

    naive_times, naive_vals = [], {}
    wall_pct, cpu_pct, wall_bca, cpu_bca = [], [], [], []
    res = None
    for r in range(args.repeats):
        vals, times = naive(data, range(r * args.naive, (r + 1) * args.naive), indices,
                            formula, second)
        naive_vals.update(vals)
        naive_times.extend(times)
        res, w, c = batched(data, args, "percentile", formula, second)
        wall_pct.append(w)
        cpu_pct.append(c)
        res_bca, w, c = batched(data, args, ("percentile", "bca"), formula, second)
        wall_bca.append(w)
        cpu_bca.append(c)
        print(f"round {r + 1}: naive {statistics.median(times):.2f} s/replicate; batched "
              f"{wall_pct[-1]:.1f} s (percentile), {wall_bca[-1]:.1f} s (+BCa)", file=sys.stderr)

    per_rep = statistics.median(naive_times)
    naive_total = per_rep * args.n_boot
    reps = res.replicates[STATS].to_numpy()
    common = sorted(naive_vals)
    ref = np.array([naive_vals[b] for b in common])
    rel = np.abs(reps[common] / ref - 1.0)
    same = np.array_equal(res.replicates.to_numpy(), res_bca.replicates.to_numpy(), equal_nan=True)

    rows = [
        ("naive: two_part() refit per replicate (1 process)",
         f"{naive_total:8.1f}", f"extrapolated from {len(naive_times)} replicates "
         f"(median {per_rep:.3f} s each) x {args.n_boot}"),
        ("batched replicate weights, percentile only",
         f"{statistics.median(wall_pct):8.1f}", f"measured, {args.n_boot} replicates, "
         f"CPU {statistics.median(cpu_pct):.1f} s"),
        ("batched replicate weights, percentile + BCa (jackknife)",
         f"{statistics.median(wall_bca):8.1f}", f"measured, {args.n_boot} replicates + "
         f"{res_bca.extra.get('jackknife', '')}, CPU {statistics.median(cpu_bca):.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nTwo-part cost effect bootstrap, {args.members:,} members, {args.n_boot:,} "
          f"replicates (median of {args.repeats} rounds; n_jobs={args.n_jobs})")
    print(f"{'method':<{width}}  {'seconds':>8}  note")
    for name, sec, note in rows:
        print(f"{name:<{width}}  {sec}  {note}")
    print(f"\nspeed-up (naive / batched): {naive_total / statistics.median(wall_pct):.1f}x "
          f"(percentile only), {naive_total / statistics.median(wall_bca):.1f}x (with BCa)")
    print(f"max relative difference, batched vs naive replicate estimates on the "
          f"{len(common)} replicates both computed (same resampling counts): {rel.max():.2e} "
          f"(per statistic: " + ", ".join(f"{s} {m:.1e}" for s, m in zip(STATS, rel.max(axis=0)))
          + ")")
    print(f"batched replicates identical with and without BCa: {same}; failed replicates: "
          f"{res.n_failed}")
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: this process {me:,.0f} MB (data, design, naive refits), largest "
          f"worker {kids:,.0f} MB")
    print("\n" + res_bca.to_frame().to_string(index=False, float_format=lambda v: f"{v:.6g}"))


if __name__ == "__main__":
    main()
