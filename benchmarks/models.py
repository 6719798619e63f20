"""Model fits at 1M members: evalkit against statsmodels' own fitting of the same model.

Prepares (once, cached in benchmarks/_data/) the analysis database of a synthetic plan of
1M members through evalkit's own preparation, takes the member-level analysis frame the
workbooks use, and times, interleaved in this one process:

* negative binomial count model of follow-up ER visits with member-months as exposure:
  ``evalkit.models.count_model(family="negbin")`` (NB2, theta by maximum likelihood, as
  MASS::glm.nb) vs ``statsmodels.discrete.NegativeBinomial(...).fit()``;
* two-part cost model: ``evalkit.models.two_part`` (logit + gamma GLM, log link) vs
  statsmodels Logit + GLM(Gamma, log) fitted one after the other;
* Cox model of days to the first ER visit: ``evalkit.survival.cox`` (Efron ties) vs
  ``statsmodels.duration.PHReg(ties="efron")``;
* one bootstrap replicate of the NB effect (the cost-benefit joint bootstrap's ER part):
  ``evalkit.models.count_bootstrap.bootstrap_count_effect`` fits 20 replicates at once (seconds
  per replicate) vs refitting ``count_model`` on one resample, as the generic bootstrap
  does.

R's times on comparable synthetic data of the same size (tests/reference/expected/
r_timings.json, measured on a machine like this one) are printed for context; they are not
the same data, so they are not turned into a ratio.

Usage: python benchmarks/models.py [--members 1000000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import patsy
import statsmodels.api as sm

import evalkit
from evalkit import params as _params
from evalkit.models import bootstrap_count_effect, bootstrap_indices
from evalkit.models.count import count_model
from evalkit.models.twopart import two_part
from evalkit.analysis.spec import model_frame
from evalkit.analysis.study import prepare_study
from evalkit.survival import cox

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
R_TIMINGS = HERE.parent / "tests" / "reference" / "expected" / "r_timings.json"


def study_for(members: int) -> evalkit.Study:
    """A prepared run of a demo plan with ``members`` members (cached)."""
    out = DATA / f"models_{members}"
    if (out / "work" / "analysis.duckdb").exists() and (out / "params.json").exists():
        return evalkit.Study(out / "params.json")
    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    study = prepare_study(_params.validate({"data": {"members": members}, "seed": 7}), out,
                          progress=True)
    print(f"prepared {members:,} members in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return study


BOOT = 20      # replicates fitted together in the bootstrap row


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def contenders(study: evalkit.Study) -> dict[str, tuple]:
    # the spec's covariate terms, entered as the workbooks enter them (model_frame:
    # log1p(x) as a log1p_x column, C(x) as categories)
    mf = model_frame(study.treated_frame(), study.covariates())
    frame, covs = mf.frame, mf.names
    rhs = " + ".join(["treated", *covs])
    X = patsy.dmatrix(rhs, frame, return_type="dataframe")
    offset = np.log(frame["member_months"].to_numpy(float))
    er = frame["er_visits"].to_numpy(float)
    cost = frame["total_cost"].to_numpy(float)
    pos = cost > 0
    tte = model_frame(study.time_to_first("er"), study.covariates()).frame
    Xc = patsy.dmatrix(f"0 + {rhs}", tte, return_type="dataframe")

    def sm_negbin():
        sm.NegativeBinomial(er, X, offset=offset, loglike_method="nb2").fit(disp=0, maxiter=200)

    def sm_two_part():
        sm.Logit(pos.astype(float), X).fit(disp=0)
        sm.GLM(cost[pos], X[pos], family=sm.families.Gamma(sm.families.links.Log())).fit()

    resample = frame.iloc[next(bootstrap_indices(frame, 2, seed=1, strata="treated"))]

    def refit_one():
        count_model(resample.reset_index(drop=True), f"er_visits ~ {rhs}", family="negbin",
                    exposure="member_months")

    def batched_20():
        bootstrap_count_effect(frame, f"er_visits ~ {rhs}", "treated", family="negbin",
                               exposure="member_months", n_boot=BOOT, seed=1,
                               ci="percentile")

    def sm_cox():
        sm.PHReg(tte["days"].to_numpy(float), Xc, status=tte["event"].to_numpy(int),
                 ties="efron").fit()

    return {
        "negative binomial (ER visits)": (
            len(frame),
            lambda: count_model(frame, f"er_visits ~ {rhs}", family="negbin",
                                exposure="member_months"),
            sm_negbin, "glm.nb, 6 regressors, n=1,000,000"),
        "two-part cost (logit + gamma)": (
            len(frame), lambda: two_part(frame, f"total_cost ~ {rhs}"), sm_two_part, None),
        "Cox, days to first ER visit (Efron)": (
            len(tte), lambda: cox(tte, rhs, duration="days", event="event"), sm_cox,
            "coxph efron, 5 covariates, n=1,000,000"),
        f"NB bootstrap, per replicate ({BOOT} batched)": (
            len(frame), batched_20, refit_one, None, BOOT),
    }


def main():
    ap = argparse.ArgumentParser(description="Time evalkit's model fits against statsmodels "
                                 "on a synthetic plan (prepared once, cached in "
                                 "benchmarks/_data/).")
    ap.add_argument("--members", type=int, default=1_000_000, help="members of the plan")
    ap.add_argument("--repeats", type=int, default=3, help="timings per model (median kept)")
    args = ap.parse_args()
    r_times = {r["task"]: r["seconds"] for r in json.loads(R_TIMINGS.read_text())["results"]}
    study = study_for(args.members)
    rows = []
    for name, (n, ours, baseline, r_task, *per) in contenders(study).items():
        t_ours, t_base = [], []
        for _ in range(args.repeats):               # interleaved, same process
            t_ours.append(timed(ours) / (per[0] if per else 1))
            t_base.append(timed(baseline))
        a, b = statistics.median(t_ours), statistics.median(t_base)
        rows.append((name, n, a, b, b / a, r_times.get(r_task)))
    print(f"\nmodel fits, median of {args.repeats} (seconds per fit)\n")
    print(f"{'model':<38} {'rows':>10} {'evalkit':>9} {'statsmodels':>12} {'sm/evalkit':>11} {'R (other data)':>15}")
    for name, n, a, b, ratio, r in rows:
        print(f"{name:<38} {n:>10,} {a:>9.2f} {b:>12.2f} {ratio:>10.2f}x {(f'{r:.1f}' if r else '-'):>15}")


if __name__ == "__main__":
    main()
