"""The batched count-model bootstrap against refitting count_model on each resample."""
import warnings

import numpy as np
import pandas as pd
import pytest

from evalkit.errors import ConvergenceError, DataValidationError, ParamsError
from evalkit.models import bootstrap_count_effect, bootstrap_indices
from evalkit.models.count import count_model

FORMULA = "er_visits ~ treated + age + female + log1p_baseline"


def _members(n=1500, theta=1.3, seed=7, zeros=0.0, level=-1.0):
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 70, n)
    female = rng.integers(0, 2, n)
    baseline = rng.negative_binomial(1.0, 0.6, n)
    treated = (rng.uniform(size=n) < 0.3 + 0.2 * (baseline > 0)).astype(int)
    months = rng.uniform(3, 12, n)
    mu = months / 12 * np.exp(level - 0.25 * treated + 0.01 * age + 0.2 * female
                              + 0.4 * np.log1p(baseline))
    y = rng.negative_binomial(theta, theta / (theta + mu))
    y[rng.uniform(size=n) < zeros * (1 - 0.5 * female)] = 0       # structural zeros
    return pd.DataFrame({"er_visits": y, "treated": treated, "age": age, "female": female,
                         "log1p_baseline": np.log1p(baseline), "member_months": months})


def _refit(df, family, exposure, scale):
    """The statistic the slow way: count_model on the resampled rows (Poisson when the
    NB dispersion search diverges, as the joint bootstrap's statistic does)."""
    try:
        fit = count_model(df, FORMULA, family=family, exposure=exposure)
    except ConvergenceError:
        fit = count_model(df, FORMULA, family="poisson", exposure=exposure)
    return fit.effect("treated").at(scale)


@pytest.mark.parametrize("family,exposure,scale,data", [
    ("negbin", "member_months", "rate_difference_per_1000_mm", {}),
    ("poisson", "member_months", "rate_difference_per_1000_mm", {}),
    ("negbin", None, "difference", {}),
    # excess zeros that the zero part can pick out (35% of men, 20% of women)
    ("zinb", "member_months", "rate_difference_per_1000_mm", dict(theta=2.0, zeros=0.4, level=1.0)),
    ("zip", None, "difference", dict(theta=20.0, zeros=0.4, level=1.0)),
])
def test_replicates_equal_refits_on_the_same_resamples(family, exposure, scale, data):
    df = _members(**data)
    res = bootstrap_count_effect(df, FORMULA, "treated", family=family, exposure=exposure,
                                 n_boot=40, seed=11, ci="percentile", n_jobs=1)
    full = count_model(df, FORMULA, family=family, exposure=exposure).effect("treated")
    assert res.estimate[scale] == pytest.approx(full.at(scale), rel=1e-12)
    ratio = "rate_ratio" if exposure else "ratio"
    assert res.estimate[ratio] == pytest.approx(full.at(ratio), rel=1e-12)
    idx = list(bootstrap_indices(df, 40, seed=11, strata="treated"))
    for b in range(0, 40, 4):
        want = _refit(df.iloc[idx[b]].reset_index(drop=True), family, exposure, scale)
        assert res.replicates[scale].iloc[b] == pytest.approx(want, rel=1e-7, abs=1e-9), b
    assert res.n_failed == 0
    # the same seed gives the same replicates whatever the blocks and threads
    again = bootstrap_count_effect(df, FORMULA, "treated", family=family, exposure=exposure,
                                   n_boot=40, seed=11, ci="percentile", n_jobs=2, block_size=7)
    np.testing.assert_allclose(again.replicates.to_numpy(), res.replicates.to_numpy(),
                               rtol=1e-9)


def test_resamples_without_overdispersion_get_the_poisson_fit():
    """Barely overdispersed counts: in some resamples theta grows without bound, and
    those replicates equal the Poisson refit (count_model's advice); the others equal
    the NB refit, also where theta is large and the likelihood flat in it."""
    df = _members(n=400, theta=15.0, seed=4)
    res = bootstrap_count_effect(df, FORMULA, "treated", exposure="member_months",
                                 n_boot=60, seed=5, ci="percentile", n_jobs=1)
    scale = "rate_difference_per_1000_mm"
    limits = 0
    for b, idx in enumerate(bootstrap_indices(df, 60, seed=5, strata="treated")):
        d = df.iloc[idx].reset_index(drop=True)
        try:
            count_model(d, FORMULA, family="negbin", exposure="member_months")
        except ConvergenceError as err:
            assert "grows without bound" in str(err)
            limits += 1
        want = _refit(d, "negbin", "member_months", scale)
        assert res.replicates[scale].iloc[b] == pytest.approx(want, rel=1e-7), b
    assert limits > 0                     # the case this test is about did occur
    assert res.n_failed == 0


def test_resamples_whose_zero_part_separates_the_zeros_fail():
    """NB counts with no excess zeros, except that five of the six oldest members have
    none: the full sample cannot single them out (the oldest has three visits), but a
    resample without the oldest member can, and there the zero part predicts those zeros
    with probability numerically 1 and its coefficients run off. Such replicates are
    counted as failed, with the reason; their effect would turn on where the maximiser
    stops (it moved by 4e-4 between two OpenBLAS kernels on the demo plan)."""
    df = _members(n=600, theta=3.0, zeros=0.0, level=0.5, seed=1)
    oldest = df.index[np.argsort(-df["age"].to_numpy())[:6]]
    df.loc[oldest, "er_visits"] = 0
    df.loc[oldest[0], "er_visits"] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap_count_effect(df, FORMULA, "treated", family="zinb",
                                     exposure="member_months", n_boot=30, seed=3,
                                     ci="percentile", n_jobs=1)
    reason = ("the zero part separates the zeros in the resample (zero-inflation "
              "probabilities numerically 1): its coefficients and the effect are not identified")
    assert res.failures == {reason: res.n_failed} and res.n_failed > 0
    failed = set(np.flatnonzero(res.replicates["rate_ratio"].isna()))
    without_oldest = {b for b, idx in enumerate(bootstrap_indices(df, 30, seed=3, strata="treated"))
                      if oldest[0] not in idx}
    assert failed <= without_oldest



def test_replicates_stop_where_their_zero_part_separates(monkeypatch):
    """The batched Newton steps stop a replicate at the first point it accepts where its
    zero part separates the zeros (count_bootstrap._zi_newton): it is failed with that
    reason and never refitted one by one, and no replicate the steps stopped so is valid."""
    from evalkit.models import count_bootstrap as cb

    df = _members(n=600, theta=3.0, zeros=0.0, level=0.5, seed=1)
    oldest = df.index[np.argsort(-df["age"].to_numpy())[:6]]
    df.loc[oldest, "er_visits"] = 0
    df.loc[oldest[0], "er_visits"] = 3
    stopped, refitted = [], []
    newton, refit = cb._zi_newton, cb._refit_one_by_one

    def spy_newton(state, C):
        out = newton(state, C)
        assert not np.any(out[1] & out[2])              # separated replicates are not converged
        assert np.all(cb._zero_part_separates(state, C[:, out[2]], out[0][:, out[2]]))
        stopped.append(out[2].copy())
        return out

    def spy_refit(state, C, Pm, reasons):
        refitted.append([r is not None and "did not converge" in r for r in reasons])
        return refit(state, C, Pm, reasons)

    monkeypatch.setattr(cb, "_zi_newton", spy_newton)
    monkeypatch.setattr(cb, "_refit_one_by_one", spy_refit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap_count_effect(df, FORMULA, "treated", family="zinb",
                                     exposure="member_months", n_boot=30, seed=3,
                                     ci="percentile", n_jobs=1, block_size=30)
    (sep,), (to_refit,) = stopped, refitted
    assert sep.any()                                    # the case this test is about did occur
    assert not np.any(sep & np.asarray(to_refit))
    assert set(np.flatnonzero(sep)) <= set(np.flatnonzero(res.replicates["rate_ratio"].isna()))
    assert res.failures == {cb._SEPARATES: res.n_failed}

def test_bca_and_failed_replicates_are_reported():
    df = _members(n=300, seed=2)
    df.loc[df["treated"] == 1, "er_visits"] = 0
    df.loc[df.index[df["treated"] == 1][:2], "er_visits"] = 1   # two events in the arm
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = bootstrap_count_effect(df, FORMULA, "treated", exposure="member_months",
                                     n_boot=200, seed=1, n_jobs=1)
    assert res.n_failed > 0
    assert any("no er_visits events among rows with treated = 1" in r for r in res.failures)
    assert any("could not be computed" in str(x.message) for x in w)
    lo, hi = res.ci("rate_difference_per_1000_mm", "bca")
    assert lo < res.estimate["rate_difference_per_1000_mm"] < hi


def test_bad_input():
    df = _members(n=200)
    with pytest.raises(ParamsError, match="family must be one of poisson, negbin, zip, zinb"):
        bootstrap_count_effect(df, FORMULA, "treated", family="hurdle_negbin", n_boot=10)
    with pytest.raises(ParamsError, match="treatment 'referred' is not a column"):
        bootstrap_count_effect(df, FORMULA, "referred", n_boot=10)
    with pytest.raises(DataValidationError, match="'months'"):
        bootstrap_count_effect(df, FORMULA, "treated", exposure="months", n_boot=10)
    with pytest.raises(ParamsError, match="no zero part"):
        bootstrap_count_effect(df, FORMULA + " | age", "treated", n_boot=10)


def test_a_given_full_sample_fit_is_used_as_it_is_and_checked():
    """The caller's fit of the same model on the same rows gives the same numbers, bit for
    bit, as the fit the bootstrap makes itself; another model or other rows are refused."""
    df = _members(zeros=0.4, level=1.0, theta=2.0, n=600)
    kw = dict(family="zinb", exposure="member_months", n_boot=6, seed=5, ci="percentile",
              n_jobs=1)
    own = bootstrap_count_effect(df, FORMULA, "treated", **kw)
    fit = count_model(df, FORMULA, family="zinb", exposure="member_months")
    given = bootstrap_count_effect(df, FORMULA, "treated", fit=fit, **kw)
    pd.testing.assert_frame_equal(given.replicates, own.replicates, check_exact=True)
    pd.testing.assert_series_equal(given.estimate, own.estimate, check_exact=True)
    assert given.extra["fit"] is fit
    nb = count_model(df, FORMULA, family="negbin", exposure="member_months")
    with pytest.raises(ParamsError, match="family 'negbin'"):
        bootstrap_count_effect(df, FORMULA, "treated", fit=nb, **kw)
    with pytest.raises(ParamsError, match="is not count_model"):
        bootstrap_count_effect(df, FORMULA.replace(" + age", ""), "treated", fit=fit, **kw)
    with pytest.raises(ParamsError, match="other rows"):
        bootstrap_count_effect(df.iloc[:500], FORMULA, "treated", fit=fit, **kw)
    other = df.assign(age=df["age"].to_numpy()[::-1])
    with pytest.raises(ParamsError, match="other rows"):
        bootstrap_count_effect(other, FORMULA, "treated", fit=fit, **kw)
    # the same rows under another index are the same rows
    moved = bootstrap_count_effect(df.set_axis(df.index + 10), FORMULA, "treated", fit=fit, **kw)
    pd.testing.assert_frame_equal(moved.replicates, own.replicates, check_exact=True)


def test_joint_bootstrap_pairs_the_batched_er_effect_with_the_saving():
    """The cost-benefit joint bootstrap takes its ER effect from the batched fits; each
    replicate equals the refit-per-resample statistic it replaced, on the same members."""
    import functools

    from evalkit.models.bootstrap import bootstrap
    from evalkit.analysis.valuation import _er_statistic, joint_bootstrap
    df = _members(n=800, seed=9)
    rng = np.random.default_rng(1)
    df["total_cost"] = np.where(rng.uniform(size=len(df)) < 0.2, 0.0,
                                rng.gamma(2.0, 900.0 * (1 + df["er_visits"]), len(df)))
    covs = ["age", "female", "log1p_baseline"]
    joint = joint_bootstrap(df, covs, "negbin", "gamma", 365, n_boot=24, seed=3, n_jobs=1,
                            count_outcome="er_visits", cost_outcome="total_cost")
    slow = bootstrap(df[["treated", "er_visits", "member_months", *covs]],
                     functools.partial(_er_statistic, er_formula=FORMULA, family="negbin"),
                     n_boot=24, seed=3, strata="treated", ci=("percentile",), n_jobs=1)
    np.testing.assert_allclose(joint.replicates["er_visits_averted"].to_numpy(),
                               slow.replicates.iloc[:, 0].to_numpy(), rtol=1e-7)
    assert joint.n_failed == 0 and np.isfinite(joint.correlation)
    # the count model the workbook already chose and fitted gives the same replicates
    fit = count_model(df, FORMULA, family="negbin", exposure="member_months")
    again = joint_bootstrap(df, covs, "negbin", "gamma", 365, n_boot=24, seed=3, n_jobs=1,
                            count_outcome="er_visits", cost_outcome="total_cost", count_fit=fit)
    pd.testing.assert_frame_equal(again.replicates, joint.replicates, check_exact=True)


def test_trust_region_steps_solve_the_subproblem():
    """The zero-inflated replicates' steps: the Newton step where the model is concave and
    the step fits; otherwise the maximiser of the quadratic model on the ball's boundary
    (checked against the model's value at many points of the ball)."""
    from evalkit.models.count_bootstrap import _trust_steps
    rng = np.random.default_rng(3)
    P = 6
    Q = np.linalg.qr(rng.normal(size=(P, P)))[0]
    concave = Q @ np.diag([5.0, 3.0, 2.0, 1.0, 0.5, 0.2]) @ Q.T
    saddle = Q @ np.diag([5.0, 3.0, 2.0, 1.0, -0.5, -2.0]) @ Q.T
    g = rng.normal(size=P)
    A = np.stack([concave, concave, saddle])
    gs = np.stack([0.01 * g, g, g])
    radius = np.array([1.0, 0.5, 0.5])
    d, newton = _trust_steps(A, gs, radius)
    assert newton.tolist() == [True, False, False]
    np.testing.assert_allclose(d[0], np.linalg.solve(concave, 0.01 * g), rtol=1e-12)

    def model(a, x):
        return x @ gs[a] - 0.5 * np.einsum("...p,pq,...q->...", x, A[a], x)

    for a in (1, 2):
        assert np.linalg.norm(d[a]) == pytest.approx(radius[a], rel=1e-9)
        pts = rng.normal(size=(20000, P))
        pts *= (radius[a] * rng.uniform(size=(20000, 1)) ** (1 / P)
                / np.linalg.norm(pts, axis=1, keepdims=True))
        assert model(a, d[a]) >= model(a, pts).max() - 1e-12


def _zi_problem(n: int, seed: int, a: int = 3):
    """A zero-inflated NB2 likelihood on ``n`` simulated rows (intercept, a 0/1 and a
    normal covariate, the zero part on the same terms), row counts of ``a`` bootstrap
    resamples and parameters near each other for them: what the tests of the batched
    derivatives evaluate."""
    from evalkit.models.count import _Mixture

    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.normal(size=n)])
    y = rng.negative_binomial(2, 0.5, n) * (rng.random(n) < 0.6)
    lik = _Mixture("zi", "negbin", y.astype(float), X, np.log(rng.integers(1, 13, n)), X)
    C = rng.multinomial(n, np.full(n, 1.0 / n), size=a).T.astype(float)
    Pm = np.column_stack([np.r_[-1.0, 0.2, 0.1, -0.5, 0.3, -0.2, 0.4] + 0.05 * r
                          for r in range(a)])
    return lik, C, Pm


def test_shared_design_products_give_the_same_hessian():
    """With the zero part on the count part's terms, the zero-inflated bootstrap sums the
    count, zero and cross Hessian blocks with one product of the count block's design
    products (count_bootstrap._shared_blocks); the derivatives equal those of the three
    separate products (to rounding; on the machines measured, bit for bit)."""
    from evalkit.models import count_bootstrap as cb

    lik, C, Pm = _zi_problem(n=400, seed=5)
    n, a = C.shape
    segs = cb._zi_segments(lik, C)
    assert all(seg["shared"] is not None for seg in segs)
    shared = cb._zi_derivatives(lik, segs, Pm, np.arange(a), 2)
    separate = cb._zi_derivatives(lik, [dict(seg, shared=None) for seg in segs], Pm,
                                  np.arange(a), 2)
    for got, want in zip(shared, separate):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    assert np.abs(shared[2][:, :3, 3:6]).max() > 0       # the cross block is filled


def test_derivatives_summed_chunk_by_chunk_are_those_of_whole_segments(monkeypatch):
    """The zero-inflated bootstrap sums its per-row derivatives over chunks of rows, with
    the row-wise design products kept (small segments) or, above the memory limit, formed
    chunk by chunk one replicate at a time; all ways give the log-likelihood, score and
    Hessian of the whole segments (to rounding), and those of ``_Mixture`` itself."""
    from evalkit.models import count_bootstrap as cb

    lik, C, Pm = _zi_problem(n=1000, seed=8)
    n, a = C.shape
    segs = cb._zi_segments(lik, C)
    assert len(segs) == 2                                      # zeros and positive counts
    whole = cb._zi_derivatives(lik, segs, Pm, np.arange(a), 2)
    monkeypatch.setattr(cb, "_CHUNK_ROWS", 64)
    for limit in (cb._PAIR_LIMIT, 0):
        monkeypatch.setattr(cb, "_PAIR_LIMIT", limit)
        segs = cb._zi_segments(lik, C)
        assert len(segs) > 10 and all((s["pairs"] is None) == (limit == 0) for s in segs)
        for active in (np.arange(a), np.array([1])):
            got = cb._zi_derivatives(lik, segs, Pm, active, 2)
            for g_, w_ in zip(got, whole):
                w_ = w_[..., active] if w_.ndim == 2 else w_[active]
                np.testing.assert_allclose(g_, w_, rtol=1e-11, atol=1e-9)
    # the replicate with all row counts 1 is the model itself
    ones = np.ones((n, 1))
    segs = cb._zi_segments(lik, ones)
    ll, g, H = cb._zi_derivatives(lik, segs, Pm[:, :1], np.arange(1), 2)
    np.testing.assert_allclose(ll[0], lik.loglik(Pm[:, 0]), rtol=1e-12)
    np.testing.assert_allclose(g[:, 0], lik.score(Pm[:, 0]), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(H[0], lik.hessian(Pm[:, 0]), rtol=1e-10, atol=1e-9)


def test_a_refused_stretched_step_is_not_tried_again(monkeypatch):
    """Where a stretched step (count_bootstrap._run_off) lowers the log-likelihood it is
    refused, and the replicate's next step is a plain one: here every step after a Newton
    step is stretched 50 times, too far, and the replicates still converge, to where they
    converge without stretching (before, the same refused step was tried again until
    ``maxiter``)."""
    from evalkit.models import count_bootstrap as cb

    df = _members(n=1500, seed=6)
    fit_all = []
    real_newton = cb._zi_newton

    def spy_newton(state, C):
        out = real_newton(state, C)
        fit_all.append(out)
        return out

    monkeypatch.setattr(cb, "_zi_newton", spy_newton)
    kw = dict(family="zinb", exposure="member_months", n_boot=6, seed=2, ci="percentile",
              n_jobs=1, block_size=6)
    plain = bootstrap_count_effect(df, FORMULA, "treated", **kw)
    stretched_tries = []

    def too_far(d, newton, decrement, last_step, last_decrement):
        stretch = newton & (last_decrement > 0) & (decrement >= 1e-12)
        stretched_tries.append(int(stretch.sum()))
        return np.where(stretch[:, None], 50.0 * d, d)

    monkeypatch.setattr(cb, "_run_off", too_far)
    res = bootstrap_count_effect(df, FORMULA, "treated", **kw)
    assert sum(stretched_tries) > 0                      # the case this test is about did occur
    (_, conv_plain, _, _), (_, conv, _, it) = fit_all
    assert conv.all() and conv_plain.all() and it < 100
    np.testing.assert_allclose(res.replicates.to_numpy(), plain.replicates.to_numpy(),
                               rtol=1e-9)


def test_replicates_running_off_take_the_remaining_steps_at_once():
    """A Newton step equal to the previous one whose decrement fell by e (the signature of
    coefficients running off along a line, where the log-likelihood rises like
    ``L* - k exp(eta)``) is stretched to where the decrement would fall below 1e-12;
    other steps are left alone."""
    from evalkit.models.count_bootstrap import _run_off
    step = np.array([0.3, -2.9, -1.6])
    d = np.tile(step, (5, 1))
    last = d.copy()
    last[4] = [1.0, -2.0, 0.5]                              # another direction
    decrement = np.array([1e-3, 1e-3, 1e-3, 5e-13, 1e-3])
    last_decrement = decrement * np.e
    last_decrement[1] = decrement[1] * 2                    # falling, not by e
    newton = np.array([True, True, False, True, True])      # 2: a step on the boundary
    out = _run_off(d, newton, decrement, last * (1 + 1e-4), last_decrement)
    m = np.ceil(np.log(1e-3 / 1e-12))                       # 21 steps of one unit of eta
    np.testing.assert_array_equal(out[0], m * step)
    np.testing.assert_array_equal(out[1:], d[1:])
    # along L* - k exp(eta) each step cuts the decrement by e: after the stretched step
    # it is below the threshold, as after the 21 steps it replaces
    assert 1e-12 / np.e < 1e-3 * np.exp(-m) <= 1e-12
