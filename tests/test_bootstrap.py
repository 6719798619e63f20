"""Nonparametric bootstrap (evalkit.models.bootstrap).

No R reference values exist for these (R's boot() draws from R's generator, so its
replicates cannot be reproduced in numpy). Instead every number is checked against an
independent computation on the *same resamples*:

* ``scipy.stats.bootstrap`` draws ``rng.integers(0, n, (B, n))`` from
  ``numpy.random.default_rng(seed)``, exactly the draws of an unstratified
  :func:`bootstrap` with the same seed, so replicates, standard error and the
  percentile, basic and BCa intervals must be equal;
* for stratified designs, scipy's multi-sample BCa (each sample resampled on its own =
  resampling within strata) is fed our replicates through ``bootstrap_result``;
* BCa is also coded by hand below from Efron & Tibshirani (1993), eqs. 14.14-14.15;
* each two-part replicate must equal refitting :func:`two_part` on the
  explicitly resampled rows given by :func:`bootstrap_indices`.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import reference_data
from scipy import stats

from evalkit.errors import DataValidationError, ParamsError, StatisticalWarning
from evalkit.models import bootstrap_two_part
from evalkit.models.batched import CONVERGED, FAILED, _info_slope
from evalkit.models.bootstrap import BootstrapResult, bootstrap, bootstrap_indices
from evalkit.models.resample import _design, _jackknife_plan
from evalkit.models.twopart import two_part
from evalkit.models.twopart_bootstrap import (
    _bootstrap_start,
    _chunked_fit,
    _Chunks,
    _curved_step,
    _jackknife_full,
    _jackknife_start,
    _LeftOut,
    _logit_loglik,
    _pass,
    _recycled,
    _refit_failed,
    _two_part_block,
    _two_part_state,
)

F = "total_cost ~ treated + age + female + comorbidity + baseline_cost"


@pytest.fixture(scope="module")
def synth():
    d = reference_data("synthetic_costs")
    d["site"] = (d["member_id"] * 7919) % 40          # 40 sites holding both arms
    d["team"] = d["member_id"] % 30 * 2 + d["treated"]  # 60 teams, each within one arm
    return d


@pytest.fixture(scope="module")
def skewed():
    rng = np.random.default_rng(20240611)
    return pd.DataFrame({"x": rng.lognormal(0.0, 1.0, 60)})


@pytest.fixture(scope="module")
def arms():
    rng = np.random.default_rng(7)
    g = np.r_[np.ones(25, int), np.zeros(45, int)]
    return pd.DataFrame({"arm": g, "y": rng.gamma(0.7, 10.0, 70) + 3.0 * g})


def mean_x(d):
    return d["x"].to_numpy().mean()


def arm_difference(d):
    return d.y[d.arm == 1].mean() - d.y[d.arm == 0].mean()


def effect_statistic(formula):
    """The two-part effect refitted by two_part(): what bootstrap_two_part batches."""
    def statistic(d):
        e = two_part(d, formula).effect("treated")
        return {"cost_difference": e.at("cost_difference"), "ratio": e.at("ratio"),
                "mean_treated": e.mean_treated, "mean_control": e.mean_control}
    return statistic


def hand_bca(theta, reps, jack, alpha):
    """BCa endpoints, Efron & Tibshirani (1993) eq. 14.14 (z0, strict <) and 14.15 (a)."""
    z0 = stats.norm.ppf(np.mean(reps < theta))
    d = jack.mean() - jack
    a = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5)
    za = stats.norm.ppf([alpha / 2, 1 - alpha / 2])
    q = stats.norm.cdf(z0 + (z0 + za) / (1 - a * (z0 + za)))
    return np.quantile(reps, q), a


# --------------------------------------------------------------------------- reproducibility
def test_same_seed_same_replicates_whatever_n_jobs(arms):
    kw = dict(n_boot=200, seed=11, strata="arm", ci="percentile")
    one = bootstrap(arms, arm_difference, n_jobs=1, **kw)
    two = bootstrap(arms, arm_difference, n_jobs=2, **kw)
    again = bootstrap(arms, arm_difference, n_jobs=1, **kw)
    other = bootstrap(arms, arm_difference, n_jobs=1, **{**kw, "seed": 12})
    assert isinstance(one, BootstrapResult)
    pd.testing.assert_frame_equal(one.replicates, two.replicates)
    pd.testing.assert_frame_equal(one.replicates, again.replicates)
    pd.testing.assert_frame_equal(one.intervals, two.intervals)
    assert not one.replicates.equals(other.replicates)
    assert one.n_boot == 200 and one.seed == 11 and len(one.replicates) == 200


def test_seed_none_is_recorded_and_reproduces(arms):
    res = bootstrap(arms, arm_difference, n_boot=50, seed=None, strata="arm", ci="percentile",
                    n_jobs=1)
    again = bootstrap(arms, arm_difference, n_boot=50, seed=res.seed, strata="arm",
                      ci="percentile", n_jobs=1)
    pd.testing.assert_frame_equal(res.replicates, again.replicates)


def test_two_part_identical_for_n_jobs_1_and_2(synth):
    kw = dict(n_boot=24, seed=3, ci="percentile", block_size=4)
    one = bootstrap_two_part(synth, F, "treated", n_jobs=1, **kw)
    two = bootstrap_two_part(synth, F, "treated", n_jobs=2, **kw)
    np.testing.assert_array_equal(one.replicates.to_numpy(), two.replicates.to_numpy())
    assert one.extra["n_jobs"] == 1 and two.extra["n_jobs"] == 2


# --------------------------------------------------------------------------- designs
def test_stratified_resampling_keeps_arm_sizes(synth):
    sizes = synth["treated"].value_counts()

    def arm_sizes(d):
        return {"treated": (d.treated == 1).sum(), "control": (d.treated == 0).sum()}

    strat = bootstrap(synth, arm_sizes, n_boot=30, seed=1, strata="treated", ci="percentile",
                      n_jobs=1)
    assert (strat.replicates["treated"] == sizes[1]).all()
    assert (strat.replicates["control"] == sizes[0]).all()
    plain = bootstrap(synth, arm_sizes, n_boot=30, seed=1, ci="percentile", n_jobs=1)
    assert plain.replicates["treated"].nunique() > 1        # unstratified: sizes vary
    assert (plain.replicates.sum(axis=1) == len(synth)).all()
    assert strat.extra["stratum_units"] == {0: int(sizes[0]), 1: int(sizes[1])}


def test_cluster_resampling_keeps_clusters_whole(synth):
    size = synth["site"].value_counts()
    for idx in bootstrap_indices(synth, n_boot=20, seed=5, cluster="site"):
        drawn = synth.iloc[idx]["site"].value_counts()
        # every drawn site brings all its rows, as many times as it was drawn
        assert (drawn % size[drawn.index] == 0).all()
        assert drawn.div(size[drawn.index]).sum() == synth["site"].nunique()

    def copies(d):
        per_copy = d.groupby("copy")["site"].agg(["nunique", "size", "first"])
        whole = (per_copy["nunique"] == 1) & (per_copy["size"] == size[per_copy["first"]].to_numpy())
        return {"whole": float(whole.all()), "n_copies": float(len(per_copy))}

    res = bootstrap(synth, copies, n_boot=10, seed=5, cluster="site", idcluster="copy",
                    ci="percentile", n_jobs=1)
    assert (res.replicates["whole"] == 1).all()
    assert (res.replicates["n_copies"] == 40).all()
    assert res.n_units == 40 and res.cluster == "site"


def test_clusters_within_strata(synth):
    d = synth
    n_teams = d.groupby("treated")["team"].nunique()
    for idx in bootstrap_indices(d, n_boot=10, seed=2, strata="treated", cluster="team"):
        r = d.iloc[idx]
        sizes = r.groupby("team").size() / d.groupby("team").size()[r["team"].unique()]
        assert np.allclose(sizes, np.round(sizes))               # whole teams
        # each arm keeps its number of teams
        drawn = sizes.groupby(d.groupby("team")["treated"].first()[sizes.index].to_numpy()).sum()
        assert drawn.to_dict() == n_teams.to_dict()
    with pytest.raises(DataValidationError, match="span more than one stratum"):
        bootstrap(synth, lambda x: 1.0, n_boot=5, seed=1, strata="treated", cluster="site")


# --------------------------------------------------------------------------- intervals
def test_unstratified_intervals_equal_scipy_on_the_same_draws(skewed):
    """scipy.stats.bootstrap(rng=default_rng(4)) draws the same resamples; its percentile,
    basic and BCa intervals (jackknife acceleration over all 60 rows) must match."""
    res = bootstrap(skewed, mean_x, n_boot=999, seed=4, ci=("percentile", "bca", "basic"),
                    n_jobs=1)
    for method in ("percentile", "bca", "basic"):
        ref = stats.bootstrap((skewed["x"].to_numpy(),), np.mean, n_resamples=999,
                              rng=np.random.default_rng(4), method=method)
        np.testing.assert_allclose(res.replicates["statistic"], ref.bootstrap_distribution,
                                   rtol=1e-13)
        np.testing.assert_allclose(res.ci(method=method), ref.confidence_interval, rtol=1e-12)
        assert res.std_error["statistic"] == pytest.approx(ref.standard_error, rel=1e-12)


def test_bca_by_hand_and_normal_interval(skewed):
    """BCa from the textbook formulas with an explicit leave-one-out loop; the normal
    interval as boot.ci(type = "norm"): theta - bias -/+ z * SE."""
    res = bootstrap(skewed, mean_x, n_boot=1999, seed=8, ci=("bca", "normal", "percentile"),
                    alpha=0.1, n_jobs=1)
    x = skewed["x"].to_numpy()
    theta = x.mean()
    reps = res.replicates["statistic"].to_numpy()
    jack = np.array([np.delete(x, i).mean() for i in range(len(x))])
    (lo, hi), a = hand_bca(theta, reps, jack, 0.1)
    assert res.acceleration["statistic"] == pytest.approx(a, rel=1e-10)
    assert res.ci(method="bca") == pytest.approx((lo, hi), rel=1e-10)
    bias = reps.mean() - theta
    z = stats.norm.ppf(0.95)
    se = reps.std(ddof=1)
    assert res.ci(method="normal") == pytest.approx((theta - bias - z * se, theta - bias + z * se),
                                                    rel=1e-12)
    assert res.ci(method="percentile") == pytest.approx(tuple(np.quantile(reps, [0.05, 0.95])))
    # a skewed sample's mean: BCa shifts the interval right of the percentile one
    assert res.ci(method="bca")[1] > res.ci(method="percentile")[1]
    table = res.to_frame()
    assert list(table.columns) == ["term", "estimate", "std_error", "bias", "method", "ci_low",
                                   "ci_high"]


def test_stratified_bca_equals_scipy_two_sample(arms):
    """Resampling within arms is scipy's two-sample bootstrap; feed scipy our replicates
    (bootstrap_result, n_resamples=0) and it computes the per-sample jackknife itself."""
    res = bootstrap(arms, arm_difference, n_boot=800, seed=2, strata="arm",
                    ci=("bca", "percentile"), n_jobs=1)

    class Previous:
        bootstrap_distribution = res.replicates["statistic"].to_numpy()

    y1 = arms.y[arms.arm == 1].to_numpy()
    y0 = arms.y[arms.arm == 0].to_numpy()
    ref = stats.bootstrap((y1, y0), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis),
                          n_resamples=0, bootstrap_result=Previous, method="BCa")
    np.testing.assert_allclose(res.ci(method="bca"), ref.confidence_interval, rtol=1e-12)


def test_grouped_jackknife_for_many_units():
    """With more units than max_jackknife, groups are left out; the acceleration stays
    close to the leave-one-out value (it estimates the same skewness)."""
    x = np.random.default_rng(3).gamma(0.5, 1.0, 800)
    d = pd.DataFrame({"x": x})
    exact = bootstrap(d, mean_x, n_boot=50, seed=1, ci="bca", n_jobs=1, max_jackknife=1000)
    grouped = bootstrap(d, mean_x, n_boot=50, seed=1, ci="bca", n_jobs=1, max_jackknife=200)
    assert "leave-one-out" in exact.extra["jackknife"]
    assert "200 random groups" in grouped.extra["jackknife"]
    pd.testing.assert_frame_equal(exact.replicates, grouped.replicates)   # drawn before
    assert grouped.acceleration["statistic"] == pytest.approx(
        exact.acceleration["statistic"], rel=0.35)


# --------------------------------------------------------------------------- two-part
@pytest.mark.parametrize("options", [
    {},                                               # strata = treatment (default)
    {"cluster": "site"},                              # sites hold both arms: no strata
    {"cluster": "team"},                              # teams nested in arms: strata kept
    {"first": "probit", "second": "poisson"},
    {"second": "inverse_gaussian", "strata": None},
])
def test_batched_two_part_equals_statsmodels_refits(synth, options):
    """Replicates b = 0, 1, n_boot-1 refitted by two_part() (IRLS + polish) on
    data.iloc[idx] with idx from bootstrap_indices (the same counts)."""
    n_boot = 12
    res = bootstrap_two_part(synth, F, "treated", n_boot=n_boot, seed=9, ci="percentile",
                             n_jobs=1, **options)
    strata = None if "strata" in options or options.get("cluster") == "site" else "treated"
    assert res.strata == strata
    idx = list(bootstrap_indices(synth, n_boot, 9, strata=strata, cluster=options.get("cluster")))
    for b in (0, 1, n_boot - 1):
        fit = two_part(synth.iloc[idx[b]].reset_index(drop=True), F,
                       first=options.get("first", "logit"), second=options.get("second", "gamma"))
        e = fit.effect("treated")
        got = res.replicates.iloc[b]
        assert got["cost_difference"] == pytest.approx(e.at("cost_difference"), rel=1e-8)
        assert got["ratio"] == pytest.approx(e.at("ratio"), rel=1e-8)
        assert got["mean_treated"] == pytest.approx(e.mean_treated, rel=1e-8)
        assert got["mean_control"] == pytest.approx(e.mean_control, rel=1e-8)
    full = two_part(synth, F).effect("treated") if not options.get("first") and not \
        options.get("second") else None
    if full is not None:
        assert res.estimate["cost_difference"] == pytest.approx(full.at("cost_difference"),
                                                                rel=1e-12)


def test_quasi_poisson_part_converges_whatever_the_cost_unit(synth):
    """Quasi-Poisson is unchanged by the unit of the cost but for its dispersion, which
    grows with it: the same resamples with costs in hundredths of a cent (x 10,000) give
    the same effects times 10,000 and ratios. Measured in unscaled standard errors, the
    positive part's steps stopped at the rounding noise of its sums above the tolerance
    (dispersion 2.6e7 here): 16 of these 20 replicates ran to ``maxiter`` and failed."""
    kw = dict(n_boot=20, seed=4, second="poisson", ci="percentile", n_jobs=1)
    dollars = bootstrap_two_part(synth, F, "treated", **kw)
    cents = bootstrap_two_part(synth.assign(total_cost=synth["total_cost"] * 1e4), F,
                               "treated", **kw)
    assert dollars.extra["fit"].extra["dispersion"] > 1e3
    assert dollars.n_failed == cents.n_failed == 0
    assert cents.extra["max_iterations"]["second"] <= 10
    scaled = dollars.replicates.to_numpy() * [1e4, 1.0, 1e4, 1e4]
    np.testing.assert_allclose(cents.replicates.to_numpy(), scaled, rtol=1e-9)


def test_two_part_matches_generic_bootstrap_and_warns_on_arm_without_costs():
    """A small arm with two members with cost: some resamples have no treated member
    with positive cost. Both paths must flag the same replicates (NaN, counted, warned)
    and agree on everything else, BCa included (leave-one-out jackknife over 80 rows)."""
    rng = np.random.default_rng(4)
    n = 80
    d = pd.DataFrame({"treated": np.r_[np.ones(8, int), np.zeros(n - 8, int)],
                      "age": rng.normal(50, 10, n)})
    d["cost"] = np.where(rng.random(n) < 0.5, rng.gamma(1.5, 1000, n), 0.0)
    d.loc[:7, "cost"] = [0, 0, 0, 0, 0, 0, 1500.0, 800.0]
    f = "cost ~ treated + age"
    with pytest.warns(StatisticalWarning, match=r"no positive cost among rows with treated = 1"):
        fast = bootstrap_two_part(d, f, "treated", n_boot=60, seed=1, n_jobs=1)
    with pytest.warns(StatisticalWarning, match="could not be computed"):
        slow = bootstrap(d, effect_statistic(f), n_boot=60, seed=1, strata="treated", n_jobs=2)
    assert fast.n_failed == slow.n_failed > 0
    assert fast.failures == {"no positive cost among rows with treated = 1": fast.n_failed}
    assert fast.replicates["cost_difference"].isna().sum() == fast.n_failed
    a, b = fast.replicates.to_numpy(), slow.replicates.to_numpy()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=1e-8)
    np.testing.assert_allclose(fast.intervals[["ci_low", "ci_high"]],
                               slow.intervals[["ci_low", "ci_high"]], rtol=1e-8)
    np.testing.assert_allclose(fast.acceleration, slow.acceleration, rtol=1e-6)
    # on_error="raise" stops at the first such resample instead
    with pytest.raises(DataValidationError):
        bootstrap(d, effect_statistic(f), n_boot=60, seed=1, strata="treated", n_jobs=1,
                  on_error="raise", ci="percentile")


def test_two_part_bca_and_jackknife_over_clusters(synth):
    res = bootstrap_two_part(synth, F, "treated", n_boot=40, seed=2, cluster="site", n_jobs=1)
    assert res.extra["jackknife"] == "leave-one-out jackknife over 40 clusters"
    assert np.isfinite(res.acceleration).all()
    lo, hi = res.ci("cost_difference", "bca")
    assert lo < res.estimate["cost_difference"] < hi
    assert res.method.startswith("two-part bootstrap")
    assert "fit" in res.extra and res.n_failed == 0


def _jackknife_block(data, formula, groups, **parts):
    """The batched two-part fits of ``data`` without each of ``groups`` (row positions),
    as bootstrap_two_part's BCa jackknife computes them."""
    fit = two_part(data, formula, **parts)
    state = _two_part_state(data, formula, "treated", fit, parts.get("first", "logit"),
                            parts.get("second", "gamma"), 1e-10, 100, "test")
    state["jack_full"] = _jackknife_full(state)
    return _two_part_block(state, ("jack", groups))


@pytest.mark.parametrize("parts", [{}, {"second": "poisson"},
                                   {"first": "probit", "second": "inverse_gaussian"}])
def test_jackknife_fits_equal_statsmodels_refits_without_each_group(synth, parts):
    """The jackknife values for BCa start from full-sample sums minus the group's and take
    chord steps; each must still be the two-part effect fitted from scratch by two_part()
    (statsmodels IRLS + polish) on the data without the group. Groups as BCa draws them:
    random groups of rows within the treatment strata."""
    design = _design(synth, "treated", None, "test")
    drops, _, text = _jackknife_plan(design, 40, np.random.default_rng(3))
    assert text == "grouped jackknife: 40 random groups of rows (within strata)"
    groups = [design.rows(d) for d in drops]
    values, reasons, _ = _jackknife_block(synth, F, groups, **parts)
    assert reasons == [None] * len(groups)
    for j, rows in enumerate(groups):
        e = two_part(synth.drop(index=rows).reset_index(drop=True), F, **parts).effect("treated")
        want = [e.at("cost_difference"), e.at("ratio"), e.mean_treated, e.mean_control]
        np.testing.assert_allclose(values[j], want, rtol=1e-8, err_msg=f"group {j}")


@pytest.mark.parametrize("parts", [{}, {"second": "poisson"},
                                   {"first": "probit", "second": "inverse_gaussian"}])
def test_jackknife_sums_equal_those_under_the_count_matrix(synth, parts):
    """A jackknife fit's sums are taken as all rows minus the left-out rows, the first
    step's from sums over all rows computed once; each must equal the same sum under the
    explicit 0/1 row-count matrix (what a bootstrap block walks): gradient, information,
    design, log-likelihood and recycled predictions, at the full-sample estimate and
    elsewhere."""
    first, second = parts.get("first", "logit"), parts.get("second", "gamma")
    fit = two_part(synth, F, **parts)
    state = _two_part_state(synth, F, "treated", fit, first, second, 1e-10, 100, "test")
    full = _jackknife_full(state)
    n = len(synth)
    groups = [np.arange(j, n, 7)[:40] for j in range(5)] + [np.array([3, 9]), np.arange(0)]
    left = _LeftOut(groups, n)
    C = np.ones((n, len(groups)))
    for j, rows in enumerate(groups):
        C[rows, j] = 0.0
    pos = state["pos"]
    chunks = _Chunks(len(groups))
    rng = np.random.default_rng(1)
    for kind, X, counts, jack, y, z, beta, part in (
            (first, state["X"], C, left, None, state["z"][:, None], state["beta1"], "first"),
            (second, state["X2"], C[pos], left.within(state["z"] > 0), state["y2"], None,
             state["beta2"], "second")):
        B0 = np.repeat(beta[:, None], len(groups), axis=1)
        want = _pass(kind, X, state["iu"], counts, y, z, B0, None, chunks, True)
        got = _jackknife_start(kind, X, state["iu"], jack, y, z, beta, full[part], chunks)
        for w, g in zip((want[0], want[1], want[3]), got[:3]):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-9 * np.abs(w).max())
        B = B0 + 0.01 * rng.standard_normal(B0.shape) * np.abs(B0)
        cols = np.array([0, 2, 5, 6])
        want = _pass(kind, X, state["iu"], counts, y, z, B[:, cols], cols, chunks, True)
        got = _pass(kind, X, state["iu"], jack, y, z, B[:, cols], cols, chunks, True)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-9 * np.abs(w).max())
        if kind == "logit":
            np.testing.assert_allclose(_logit_loglik(X, jack, z, B[:, cols], cols, chunks),
                                       _logit_loglik(X, counts, z, B[:, cols], cols, chunks),
                                       rtol=1e-12)
        if part == "first":
            B1 = B
        else:
            B2 = B
    assert state["shift"] is not None            # "treated" enters without interactions
    for shift in (None, state["shift"]):
        np.testing.assert_allclose(
            _recycled(first, state["X1"], state["X0"], left, B1, B2, chunks, shift),
            _recycled(first, state["X1"], state["X0"], C, B1, B2, chunks), rtol=1e-12)


@pytest.mark.parametrize("parts", [{}, {"second": "poisson"},
                                   {"first": "probit", "second": "inverse_gaussian"}])
def test_bootstrap_start_equals_the_first_walk(synth, parts):
    """A replicate's first step is taken from sums at the full-sample estimate formed as
    one product of the counts with fixed row terms; they must equal the sums _pass walks
    (with every replicate's exponentials) under the same counts: gradient, information,
    and the tallies beside them. And the recycled predictions of logit fits
    with the treatment's shift equal those computed with four exponentials."""
    first, second = parts.get("first", "logit"), parts.get("second", "gamma")
    fit = two_part(synth, F, **parts)
    state = _two_part_state(synth, F, "treated", fit, first, second, 1e-10, 100, "test")
    n, b = len(synth), 6
    C = np.random.default_rng(2).poisson(1.0, (n, b)).astype(np.uint16)
    chunks = _Chunks(b)
    chunks.rows = 500                                # several chunks, the last one short
    pos = state["pos"]
    rng = np.random.default_rng(3)
    for part, kind, X, counts, y, z, beta in (
            ("first", first, state["X"], C, None, state["z"][:, None], state["beta1"]),
            ("second", second, state["X2"], C[pos], state["y2"], None, state["beta2"])):
        B0 = np.repeat(beta[:, None], b, axis=1)
        want = _pass(kind, X, state["iu"], counts, y, z, B0, None, chunks, True)
        M = state["M"] if part == "first" else state["M"][pos]
        *got, sums = _bootstrap_start(X, state["iu"], counts, state["terms"][part], chunks,
                                      M.shape[1], lambda sl, M=M: [M[sl]])
        for w, g in zip(want[:2], got[:2]):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10 * np.abs(w).max())
        assert got[2] is None                         # the design: see the rank test below
        assert got[3] is state["terms"][part][2]
        assert 0 < got[4] < 1                         # weights' spread (min / max)^2
        np.testing.assert_array_equal(sums, M.T @ counts)
        B = B0 + 0.05 * rng.standard_normal(B0.shape) * np.abs(B0)
        if part == "first":
            B1 = B
        else:
            B2 = B
    if first == "logit":
        np.testing.assert_allclose(
            _recycled(first, state["X1"], state["X0"], C, B1, B2, chunks, state["shift"]),
            _recycled(first, state["X1"], state["X0"], C, B1, B2, chunks), rtol=1e-13)


def _near_separated(n: int = 60):
    """Few members and a strong predictor x of any cost: resamples far from the
    full-sample fit, some quasi-separated."""
    rng = np.random.default_rng(71)
    t, age = rng.integers(0, 2, n), rng.normal(50, 10, n)
    female, x = rng.integers(0, 2, n), rng.normal(0, 1, n)
    any_cost = rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.5 * t + 4.0 * x)))
    mu = np.exp(6 + 0.3 * t + 0.01 * (age - 50) + 0.2 * x)
    d = pd.DataFrame(dict(total_cost=np.where(any_cost, rng.gamma(2.0, mu / 2.0), 0.0),
                          treated=t, age=age, female=female, x=x))
    return d, "total_cost ~ treated + age + female + x"


def test_probit_rows_at_probability_0_or_1_do_not_spoil_their_block():
    """Probit rows whose linear predictor is beyond about 8.3 have fitted probabilities
    of exactly 0 or 1: their weights were 0 / 0 and, NaN times 0 being NaN, every
    replicate of their block failed as diverged (19 of 40 here). The binomial variance
    keeps the means within [eps, 1 - eps], as statsmodels' family does in two_part:
    every replicate is fitted, and those that failed equal two_part refits of the
    resampled rows."""
    d, f = _near_separated()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = bootstrap_two_part(d, f, "treated", n_boot=40, seed=5, strata=None, n_jobs=1,
                                 ci="percentile", first="probit")
    assert res.n_failed == 0
    idx = list(bootstrap_indices(d, 40, 5, strata=None))
    for b in (1, 8, 9, 17, 38):                     # failed before
        with warnings.catch_warnings():             # probabilities at 0 or 1 on some rows
            warnings.simplefilter("ignore", StatisticalWarning)
            fit = two_part(d.iloc[idx[b]].reset_index(drop=True), f, first="probit")
        e = fit.effect("treated")
        assert res.replicates.iloc[b]["cost_difference"] == pytest.approx(
            e.at("cost_difference"), rel=1e-8)


def test_logit_replicate_that_runs_off_is_refitted_not_kept():
    """60 members, a strong predictor of any cost, unstratified draws: in one resample,
    far from the full-sample fit, Newton's steps from the full-sample estimate overshoot
    and run off to coefficients of ~1e15, where the fitted probabilities sit at 0 or 1
    and the deviance stops changing as a quasi-separated fit's does. It was kept as
    converged, with a cost difference of 207.8 where refitting the resample gives 157.6.
    Its log-likelihood is below where it started, which a fit converging towards a
    separation never is: it is taken as diverged and refitted from two_part's own start,
    as two_part fits the resample."""
    d, f = _near_separated()
    res = bootstrap_two_part(d, f, "treated", n_boot=40, seed=5, strata=None, n_jobs=1,
                             ci="percentile")
    assert res.n_failed == 0
    rows = list(bootstrap_indices(d, 40, 5, strata=None))[38]
    refit_fit = two_part(d.iloc[rows].reset_index(drop=True), f)
    refit = refit_fit.effect("treated")
    assert refit.at("cost_difference") == pytest.approx(157.585, abs=1e-3)
    got = res.replicates.iloc[38]
    assert got["cost_difference"] == pytest.approx(refit.at("cost_difference"), rel=1e-8)
    assert got["mean_treated"] == pytest.approx(refit.mean_treated, rel=1e-8)
    # the one-at-a-time refit itself: a replicate the batched steps fail is refitted
    fit = two_part(d, f)
    state = _two_part_state(d, f, "treated", fit, "logit", "gamma", 1e-10, 100, "test")
    counts = np.bincount(rows, minlength=len(d)).astype(np.uint16)[:, None]
    B, status = np.full((state["X"].shape[1], 1), np.nan), np.array([FAILED], dtype=np.int8)
    _refit_failed("logit", state["X"], state["z"], counts, B, status)
    assert status[0] == CONVERGED
    np.testing.assert_allclose(B[:, 0], refit_fit.model.params1, rtol=1e-10)


def test_recycled_sums_of_drifted_fits_do_not_take_the_shift():
    """A quasi-separated logit replicate's coefficients drift into the thousands, where
    exp(-eta) overflows for the untreated rows and exp(-shift @ B) underflows: the sums
    with the treatment's shift must still equal the direct ones, finite and without
    warnings (the fit in column 0 is summed directly, column 1 with the shift)."""
    x = np.array([-1.0, -0.5, 0.2, 1.0])
    X0 = np.column_stack([np.ones(4), np.zeros(4), x])
    X1 = np.column_stack([np.ones(4), np.ones(4), x])
    B1 = np.array([[0.0, 0.1], [1000.0, 0.5], [1000.0, -0.3]])
    B2 = np.array([[5.0, 5.0], [0.2, 0.1], [0.1, 0.2]])
    C = np.array([[1, 2], [0, 1], [2, 0], [1, 1]], dtype=np.uint16)
    chunks = _Chunks(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _recycled("logit", X1, X0, C, B1, B2, chunks, X1[0] - X0[0])
    want = _recycled("logit", X1, X0, C, B1, B2, chunks)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("second", ["gamma", "poisson"])
def test_resample_losing_a_term_is_found_without_summing_every_design(synth, second):
    """A continuous term that is nonzero on four rows only (two with costs, two without)
    is lost (all zero) in a resample that draws none of them, and in the positive part
    of one that draws neither of the two with costs: that part's design is singular and
    the replicate is reported, as a refit would fail. The rank is judged on the
    information where the rows' weights vouch for it, X'CX summed only for the others:
    with the weights' spread set to 0 (every X'CX summed) the replicates are the same,
    bit for bit, and so are the reasons."""
    d = synth.assign(spike=0.0)
    cost = d["total_cost"].to_numpy()
    with_cost = np.flatnonzero(cost > 0)[[5, 1500]]
    rows = np.r_[with_cost, np.flatnonzero(cost == 0)[[7, 700]]]
    d.loc[rows, "spike"] = [1.3, 2.7, 0.4, 1.9]
    f = F + " + spike"
    kw = dict(n_boot=80, seed=3, second=second, ci="percentile", n_jobs=1)
    with pytest.warns(StatisticalWarning):
        res = bootstrap_two_part(d, f, "treated", **kw)
    idx = list(bootstrap_indices(d, 80, 3, strata="treated"))
    lost = np.array([not np.isin(rows, i).any() for i in idx])
    lost_pos = np.array([not np.isin(with_cost, i).any() for i in idx]) & ~lost
    assert lost.sum() >= 1 and lost_pos.sum() >= 1
    want = {"the logit part has a constant or collinear term in the resample": lost.sum(),
            f"the {second} part (rows with total_cost > 0) has a constant or collinear term "
            "in the resample": lost_pos.sum()}
    assert res.failures == want
    np.testing.assert_array_equal(res.replicates["cost_difference"].isna(), lost | lost_pos)
    fit = two_part(d, f, second=second)
    state = _two_part_state(d, f, "treated", fit, "logit", second, 1e-10, 100, "test")
    # the weights can vouch (a gamma part's rank is judged on its information anyway)
    assert all(t[3] > 1e-6 for p, t in state["terms"].items() if (p, second) != ("second", "gamma"))
    counts = np.array([np.bincount(i, minlength=len(d)) for i in idx[:30]], dtype=np.uint16)
    values, reasons, _ = _two_part_block(state, ("boot", counts))
    state["terms"] = {part: (*t[:3], 0.0) for part, t in state["terms"].items()}
    every, every_reasons, _ = _two_part_block(state, ("boot", counts))
    np.testing.assert_array_equal(every, values)
    assert every_reasons == reasons
    assert [r is not None for r in reasons] == list((lost | lost_pos)[:30])


@pytest.mark.parametrize("second", ["gamma", "poisson"])
def test_curved_first_step_lands_closer_and_the_fits_converge(synth, second):
    """From the full-sample estimate a replicate's first step allowing for the gradient's
    curvature must land closer to the replicate's estimate than the Newton step (about a
    standard error away, the Newton step leaves an error of the order of the curvature),
    and the fits must stop at the estimates statsmodels' IRLS finds with the counts as
    frequency weights. A step far from the estimate, where the quadratic is no guide, is
    left as Newton's."""
    fit = two_part(synth, F, second=second)
    state = _two_part_state(synth, F, "treated", fit, "logit", second, 1e-10, 100, "test")
    n, b = len(synth), 8
    C = np.random.default_rng(5).poisson(1.0, (n, b)).astype(np.uint16)
    chunks, iu = _Chunks(b), state["iu"]
    X2, pos, tol2 = state["X2"], state["pos"], state["tol2"]
    *start, _ = _bootstrap_start(X2, iu, C[pos], state["terms"]["second"], chunks)
    g2, h2, _, S2, _ = start
    g0 = (X2.T @ (C[pos] * state["y2"]) if second == "poisson"
          else state["Xz"].T @ C.astype(float))
    B, status, _ = _chunked_fit(second, X2, C[pos], state["y2"], None, g0, state["beta2"],
                                tol2, 100, iu, chunks, start)
    assert (status == 1).all()
    family = sm.families.Gamma if second == "gamma" else sm.families.Poisson
    for j in (0, b - 1):                 # the counts as frequency weights, fitted by IRLS
        ref = sm.GLM(state["y2"][:, 0], X2, family=family(sm.families.links.Log()),
                     freq_weights=C[pos, j]).fit(tol=1e-13, maxiter=200)
        np.testing.assert_allclose(B[:, j], ref.params, rtol=1e-8)
    sign = 1.0 if second == "poisson" else -1.0
    g = g2 + sign * g0
    H = np.empty((b, X2.shape[1], X2.shape[1]))
    H[:, iu[0], iu[1]] = h2.T
    H[:, iu[1], iu[0]] = h2.T
    Hinv = np.linalg.inv(H)
    newton = np.einsum("aij,ja->ia", Hinv, g)
    curved = _curved_step(g, Hinv, S2, newton, X2.shape[1], iu)
    se = np.sqrt(np.einsum("aii->ia", Hinv))
    target = B - state["beta2"][:, None]
    err_newton = np.max(np.abs(newton - target) / se, axis=0)
    err_curved = np.max(np.abs(curved - target) / se, axis=0)
    assert np.max(np.abs(target) / se) > 0.3          # replicates start well away
    assert np.all(err_curved < err_newton)
    assert np.median(err_curved / err_newton) < 0.5
    far = _curved_step(g, Hinv, 1e4 * S2, newton, X2.shape[1], iu)
    np.testing.assert_array_equal(far, newton)


@pytest.mark.parametrize("kind", ["logit", "probit", "gamma", "poisson", "inverse_gaussian"])
def test_information_slope_is_the_derivative_of_the_information(kind):
    """The chord steps carry the information along with its slope: the information of
    one row per linear predictor, summed by _pass at eta +- h, differenced, must match
    _info_slope (central differences, h = 1e-5)."""
    eta = np.linspace(-2.5, 2.5, 11)
    y, z = np.linspace(0.5, 5.0, 11)[:, None], (eta > 0).astype(float)[:, None]
    X = np.ones((1, 1))
    iu = np.triu_indices(1)

    def info(e):                       # each row alone: X = 1, beta = its eta
        return np.array([_pass(kind, X, iu, None, y[i:i + 1], z[i:i + 1], np.array([[v]]),
                               None, _Chunks(1), False)[1][0, 0] for i, v in enumerate(e)])
    h = 1e-5
    want = (info(eta + h) - info(eta - h)) / (2 * h)
    np.testing.assert_allclose(_info_slope(kind, eta, y[:, 0]), want, rtol=1e-6, atol=1e-9)


def test_jackknife_of_large_groups_walks_the_count_matrix(synth):
    """Groups that leave out more than half the rows of a block (a few large clusters)
    are fitted under the 0/1 count matrix instead; the values are the same refits."""
    groups = [np.arange(0, 1200), np.arange(800, 2000)]
    values, reasons, _ = _jackknife_block(synth, F, groups)
    assert reasons == [None, None]
    for j, rows in enumerate(groups):
        e = two_part(synth.drop(index=rows).reset_index(drop=True), F).effect("treated")
        assert values[j][0] == pytest.approx(e.at("cost_difference"), rel=1e-8)
        assert values[j][2] == pytest.approx(e.mean_treated, rel=1e-8)


def test_jackknife_group_leaving_a_term_constant_is_reported(synth):
    """A group holding every row with rare = 1 leaves that 0/1 term constant: its value is
    NaN with the reason two_part's checks give; the groups around it are fitted (checked
    against statsmodels refits)."""
    d = synth.assign(rare=0)
    d.loc[[5, 17, 40], "rare"] = 1
    f = F + " + rare"
    groups = [np.array([3, 5, 17, 40, 41]), np.arange(100, 160), np.arange(1000, 1030)]
    values, reasons, _ = _jackknife_block(d, f, groups)
    assert reasons[0] == "rare is constant (0) in the resample"
    assert np.isnan(values[0]).all()
    assert reasons[1:] == [None, None]
    for j in (1, 2):
        e = two_part(d.drop(index=groups[j]).reset_index(drop=True), f).effect("treated")
        assert values[j][0] == pytest.approx(e.at("cost_difference"), rel=1e-8)
        assert values[j][1] == pytest.approx(e.at("ratio"), rel=1e-8)


# --------------------------------------------------------------------------- bad input
def test_bad_input_gives_clear_errors(arms, synth):
    with pytest.raises(ParamsError, match="n_boot must be an integer >= 2"):
        bootstrap(arms, arm_difference, n_boot=1, seed=1)
    with pytest.raises(ParamsError, match="n_boot"):
        bootstrap_two_part(synth, F, "treated", n_boot=1.5, seed=1)
    with pytest.raises(ParamsError, match=r"unknown interval method\(s\) \['studentized'\]"):
        bootstrap(arms, arm_difference, n_boot=10, seed=1, ci=("percentile", "studentized"))
    with pytest.raises(ParamsError, match="unknown interval method"):
        bootstrap_two_part(synth, F, "treated", n_boot=10, seed=1, ci="bcA")
    with pytest.raises(DataValidationError, match="strata column 'group' not found"):
        bootstrap(arms, arm_difference, n_boot=10, seed=1, strata="group")
    with pytest.raises(DataValidationError, match=r"\['arm'\] \(strata / cluster\) not found"):
        bootstrap_two_part(synth, F, "treated", n_boot=10, seed=1, strata="arm")
    with pytest.raises(DataValidationError, match="cluster column 'clinic' not found"):
        bootstrap(arms, arm_difference, n_boot=10, seed=1, cluster="clinic")
    with pytest.raises(DataValidationError, match="missing values"):
        bootstrap(arms.assign(arm=arms.arm.where(arms.index > 0)), arm_difference, n_boot=10,
                  seed=1, strata="arm")
    with pytest.raises(ParamsError, match="alpha"):
        bootstrap(arms, arm_difference, n_boot=10, seed=1, alpha=1.5)
    with pytest.raises(ParamsError, match="n_jobs"):
        bootstrap(arms, arm_difference, n_boot=10, seed=1, n_jobs=0)
    with pytest.raises(ParamsError, match="seed"):
        bootstrap(arms, arm_difference, n_boot=10, seed=-3)
    with pytest.raises(ParamsError, match="must return a number or a dict"):
        bootstrap(arms, lambda d: "big", n_boot=10, seed=1)
    with pytest.raises(ParamsError, match="same names every time"):
        bootstrap(arms, lambda d: {f"k{len(d.y.unique()) == len(d)}": 1.0}, n_boot=10, seed=1,
                  n_jobs=1, ci="percentile")
    with pytest.raises(ParamsError, match="treatment 'arm' is not a column of the formula"):
        bootstrap_two_part(synth.assign(arm=1), F, "arm", n_boot=10, seed=1)
    with pytest.raises(ParamsError, match="idcluster needs cluster"):
        bootstrap(arms, arm_difference, n_boot=10, seed=1, idcluster="copy")


def test_values_not_modified_and_progress(arms, capsys):
    before = arms.copy()

    def meddling(d):
        d["y"] = 0.0                                   # must not reach the caller's frame
        return 1.0

    bootstrap(arms, meddling, n_boot=10, seed=1, ci="percentile", n_jobs=1)
    pd.testing.assert_frame_equal(arms, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # a constant statistic: BCa undefined
        res = bootstrap(arms, arm_difference, n_boot=20, seed=1, ci="percentile", n_jobs=1,
                        progress=True)
    assert np.isfinite(res.std_error["statistic"])
    with pytest.warns(StatisticalWarning, match="BCa interval of 'statistic' is undefined"):
        const = bootstrap(arms, lambda d: 1.0, n_boot=20, seed=1, n_jobs=1)
    assert np.isnan(const.ci(method="bca")).all()
    assert const.ci(method="percentile") == (1.0, 1.0)


def _quasi_separated(n=400, seed=3):
    """Every member with a prior visit (x > 0) has some cost; the others sometimes do:
    x's logit coefficient runs off (quasi-complete separation), the predictions do not."""
    rng = np.random.default_rng(seed)
    treated = rng.integers(0, 2, n)
    x = np.where(rng.random(n) < 0.3, np.log1p(rng.poisson(2.0, n) + 1.0), 0.0)
    age = rng.normal(size=n)
    p_any = np.where(x > 0, 1.0, 1 / (1 + np.exp(-(0.3 + 0.5 * age - 0.4 * treated))))
    cost = np.where(rng.random(n) < p_any, rng.gamma(2.0, 300.0 * np.exp(0.2 * x), n), 0.0)
    return pd.DataFrame({"treated": treated, "x": x, "age": age, "cost": cost})


def test_quasi_separation_is_kept_as_r_keeps_it():
    """R: glm(any ~ treated + x + age, binomial) warns "fitted probabilities numerically 0
    or 1 occurred" and returns the fit; its predictions are well defined. two_part warns
    and fits; the bootstrap keeps every such replicate (the any-cost logit converged and
    the effect is finite), where it used to count most of them as failures."""
    df = _quasi_separated()
    with pytest.warns(StatisticalWarning, match="numerically 0 or 1"):
        fit = two_part(df, "cost ~ treated + x + age")
    assert fit.extra["fitted_probabilities_0_or_1"]
    eff = fit.effect("treated").table
    assert np.isfinite(eff["estimate"]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        res = bootstrap_two_part(df, "cost ~ treated + x + age", "treated", n_boot=200,
                                 seed=5, strata="treated", ci=("percentile",), n_jobs=1)
    assert res.n_failed == 0, res.failures
    assert np.isfinite(res.replicates.to_numpy()).all()
    assert res.record_fields() == {"n_replicates": 200, "n_failed": 0}
    # a replicate is the statistic of its resample: refit replicate 0 in full
    from evalkit.models.bootstrap import bootstrap_indices
    idx = next(bootstrap_indices(df, 200, seed=5, strata="treated"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        refit = two_part(df.iloc[idx].reset_index(drop=True), "cost ~ treated + x + age")
    d = refit.effect("treated").table.set_index("term").loc["cost_difference", "estimate"]
    assert res.replicates["cost_difference"].iloc[0] == pytest.approx(d, rel=1e-6)


def test_replicate_fields_flag_above_five_percent():
    from evalkit.models.bootstrap import replicate_fields, replicates_sentence
    assert replicate_fields(1000, 50) == {"n_replicates": 1000, "n_failed": 50}
    flagged = replicate_fields(1000, 51)
    assert flagged["n_failed"] == 51 and "more than 5%" in flagged["replicates_flag"]
    assert replicates_sentence(200, 0).endswith("0 failed (0.0%).")


def test_resample_where_one_arm_all_has_cost_is_kept():
    """Resamples in which every control member has some cost: the logit separates on the
    arm (R's glm converges with the control probabilities at 1 and warns), and the
    recycled prediction for 'nobody referred' is then the positive part's mean alone.
    Such replicates are kept; their mean_control equals that limit, computed here with a
    plain statsmodels gamma GLM on the resample's positive rows."""
    from evalkit.models.bootstrap import bootstrap_indices
    rng = np.random.default_rng(8)
    n = 300
    treated = np.repeat([0, 1], n // 2)
    age = rng.normal(size=n)
    any_cost = np.where(treated == 0, True, rng.random(n) < 0.7)
    any_cost[np.flatnonzero(treated == 0)[:2]] = False        # two controls without cost
    cost = np.where(any_cost, rng.gamma(2.0, 500.0 * np.exp(0.3 * age), n), 0.0)
    df = pd.DataFrame({"treated": treated, "age": age, "cost": cost})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        res = bootstrap_two_part(df, "cost ~ treated + age", "treated", n_boot=60, seed=2,
                                 strata="treated", ci=("percentile",), n_jobs=1)
    assert res.n_failed == 0, res.failures
    checked = 0
    for b, idx in enumerate(bootstrap_indices(df, 60, seed=2, strata="treated")):
        sample = df.iloc[idx]
        if (sample.loc[sample.treated == 0, "cost"] > 0).all():
            pos = sample[sample.cost > 0]
            X2 = sm.add_constant(pos[["treated", "age"]].to_numpy(float))
            g = sm.GLM(pos.cost.to_numpy(), X2, family=sm.families.Gamma(
                sm.families.links.Log())).fit(tol=1e-12)
            X0 = sm.add_constant(sample.assign(treated=0)[["treated", "age"]].to_numpy(float),
                                 has_constant="add")
            expected = float(np.mean(np.exp(X0 @ g.params)))
            assert res.replicates["mean_control"].iloc[b] == pytest.approx(expected, rel=1e-6)
            checked += 1
    assert checked >= 3                  # 4 of these 60 resamples (seed 2)


@pytest.mark.parametrize("strata,cluster", [(None, None), ("arm", None), (None, "site"),
                                            ("arm", "site")])
def test_counting_draws_by_position_gives_the_same_resamples(strata, cluster):
    """The batched bootstraps count each replicate's draws straight from the random
    numbers (``draw_counts``); the counts equal those of the rows of the drawn units
    (``rows(draw())``, what the generic bootstrap resamples), from the same generator
    state, for every design."""
    rng = np.random.default_rng(8)
    site = rng.integers(0, 40, 3000)
    df = pd.DataFrame({"site": site, "arm": site % 2})
    design = _design(df, strata, cluster, "test")
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(4):
        want = np.bincount(design.rows(design.draw(a)), minlength=len(df))
        got = design.draw_counts(b)
        np.testing.assert_array_equal(got, want)
    assert a.integers(0, 10**9) == b.integers(0, 10**9)       # same numbers consumed
