"""Designs over time: difference-in-differences and interrupted time series.

Two ways to ask "did ER use change after the intervention, beyond what would have
happened anyway?" (the Healthwise self-care handbook question: a community-wide
intervention, an 18% average drop in ER use, pre/post with a comparison community):

* :func:`did` -- **difference-in-differences** on a unit x period panel (members, small
  areas, communities): two-way fixed effects (unit and period), the treated x post
  coefficient as the effect, cluster-robust errors, an event study (period-by-period
  effects relative to a reference period) and a joint pre-trend test. Linear
  (``gaussian``) or Poisson with a member-months offset (effect = rate ratio).
* :func:`its` -- **interrupted time series** (segmented regression) on a monthly series:
  level change and slope change at the intervention, Newey-West (HAC) errors, optional
  month-of-year terms and an optional comparison series (comparative ITS), plus the
  relative effect "with vs without the intervention" at a chosen horizon and on average
  over the post period, which is how a statement such as "an 18% drop" is read off.

Figures: :func:`event_study_plot` and :func:`its_plot` (each takes ``ax=`` and returns it).

References
----------
Angrist & Pischke (2009), *Mostly Harmless Econometrics*, ch. 5. Wooldridge (1999),
"Distribution-free estimation of some nonlinear panel data models", *J. Econometrics*
90:77-97 (Poisson fixed effects). Cameron & Miller (2015), "A practitioner's guide to
cluster-robust inference", *J. Human Resources* 50:317-372. Wagner, Soumerai, Zhang &
Ross-Degnan (2002), "Segmented regression analysis of interrupted time series studies in
medication use research", *J. Clin. Pharm. Ther.* 27:299-309. Newey & West (1987, 1994).
Driscoll & Kraay (1998), *Rev. Econ. Stat.* 80:549-560.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import linalg, sparse, special, stats

from evalkit.errors import (
    ConvergenceError, DataDroppedWarning, DataValidationError, ParamsError, StatisticalWarning,
)
from evalkit.models.base import ModelResult, wald_table
from evalkit.models.effects import (
    build_matrix, check_alpha, check_full_rank, one_blas_thread, prepare_frame,
)

__all__ = [
    "did", "DiDResult", "event_study_plot",
    "its", "ITSResult", "its_plot", "newey_west_lags",
]

FAMILIES = ("gaussian", "poisson")
EFFECT_COLUMNS = ["scale", "estimate", "std_error", "ci_low", "ci_high", "p_value"]
# Below these counts cluster-robust inference is unreliable (Cameron & Miller 2015, sec. VI).
_FEW_CLUSTERS = 20
_FEW_ARM_CLUSTERS = 5
# Fewer points than this on either side of an interruption give weak ITS estimates
# (Wagner et al. 2002 suggest about 12 monthly points before and after).
_FEW_ITS_POINTS = 8
_NEWTON_MAXITER = 100


# =========================================================================== helpers
def _check_name(value, arg: str, what: str, optional: bool = False):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ParamsError(f"{what}: {arg} must be a column name (a string), got {value!r}.")
    return value


def _binary(col: pd.Series, name: str, what: str) -> np.ndarray:
    """A 0/1 or True/False column as an int array (anything else is an error)."""
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=int)
    if pd.api.types.is_numeric_dtype(col):
        v = col.to_numpy(dtype=float)
        if np.all((v == 0) | (v == 1)):
            return v.astype(int)
    examples = [x for x in pd.unique(col) if x not in (0, 1, True, False)][:5]
    raise DataValidationError(
        f"{what}: column {name!r} must be coded 0/1 or True/False; found values such as "
        f"{examples}. Recode it (1 = yes) and call again.",
        failures=[{"table": "data", "column": name, "reason": "not_binary",
                   "count": 0, "examples": examples}],
    )


def _numeric_outcome(frame: pd.DataFrame, outcome: str, what: str) -> np.ndarray:
    col = frame[outcome]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise DataValidationError(f"{what}: outcome {outcome!r} must be numeric (got {col.dtype}).")
    y = col.to_numpy(dtype=float)
    if not np.all(np.isfinite(y)):
        raise DataValidationError(f"{what}: outcome {outcome!r} has infinite values.")
    return y


def _drop_bad_exposure(frame, exposure, dropped, what):
    e = frame[exposure]
    if not pd.api.types.is_numeric_dtype(e) or pd.api.types.is_bool_dtype(e):
        raise DataValidationError(f"{what}: exposure {exposure!r} must be numeric member-months.")
    v = e.to_numpy(dtype=float)
    bad = ~(v > 0) | ~np.isfinite(v)
    if bad.any():
        k = int(bad.sum())
        if k == len(frame):
            raise DataValidationError(f"{what}: exposure {exposure!r} is not positive in any row.")
        warnings.warn(f"{what}: {k} rows with exposure {exposure!r} <= 0 left out (no time at "
                      "risk).", DataDroppedWarning, stacklevel=3)
        dropped = {**dropped, "exposure <= 0": k}
        frame = frame.loc[~bad]
    return frame, dropped


def _covariate_rhs(covariates, what: str) -> str | None:
    if covariates is None:
        return None
    if isinstance(covariates, str):
        rhs = covariates.split("~", 1)[-1].strip()
    elif isinstance(covariates, (list, tuple)) and all(isinstance(c, str) for c in covariates):
        if not covariates:
            return None
        rhs = " + ".join(covariates)
    else:
        raise ParamsError(f"{what}: covariates must be a list of column names or a formula "
                          f"right-hand side such as 'age + comorbidity', got {covariates!r}.")
    return "~ " + rhs if rhs else None


def _check_gram_rank(gram: np.ndarray, names, what: str, hint: str) -> None:
    """Name the columns that add nothing, from a Gram (or information) matrix.

    The fixed-effects fits below never form the n x k model matrix, only its k x k
    cross-product, so the rank is read off a square root of that matrix by pivoted QR.
    """
    d = np.sqrt(np.clip(np.diag(gram), 0, None))
    zero = d == 0
    s = np.where(zero, 1.0, d)
    w, v = np.linalg.eigh(gram / np.outer(s, s))
    root = (np.sqrt(np.clip(w, 0, None))[:, None] * v.T)
    root[:, zero] = 0.0
    _, R, piv = linalg.qr(root, pivoting=True)
    dd = np.abs(np.diag(R))
    tol = 1e-7 * (dd[0] if dd.size else 0.0)
    rank = int((dd > tol).sum())
    if rank < len(names):
        aliased = [names[j] for j in piv[rank:]]
        raise DataValidationError(
            f"{what}: term(s) {aliased} cannot be estimated: they are constant or a linear "
            f"combination of the fixed effects and other terms{hint}. R would report them "
            "as NA; drop them (or check that every group has observations before and after)."
        )


def _solve_pd(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve with a positive-definite matrix after scaling to unit diagonal."""
    s = np.sqrt(np.diag(A))
    s[s == 0] = 1.0
    x = linalg.solve(A / np.outer(s, s), (b.T / s).T, assume_a="pos")
    return (x.T / s).T


def _inv_pd(A: np.ndarray) -> np.ndarray:
    return _solve_pd(A, np.eye(A.shape[0]))


# =========================================================================== DiD fits
class _Design:
    """An n x K model matrix of 0/1 indicator blocks and dense columns, never formed.

    Each indicator block is an integer array of codes (the block's column that is 1 in
    that row, -1 for none) and a width; ``Z`` holds dense covariates. Products with the
    matrix are grouped sums (``np.bincount``), which for period and event dummies are
    much cheaper than general sparse products and need no n x K storage.
    """

    def __init__(self, n, blocks, Z):
        self.n = n
        self.blocks = [(np.asarray(c, dtype=np.int64), k) for c, k in blocks if k > 0]
        self.valid = [c >= 0 for c, _ in self.blocks]
        self.Z = Z if (Z is not None and Z.shape[1]) else None
        widths = [k for _, k in self.blocks] + ([self.Z.shape[1]] if self.Z is not None else [])
        self.starts = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        self.K = int(self.starts[-1])

    def matvec(self, b):
        """``X b``."""
        out = np.zeros(self.n)
        for j, (c, k) in enumerate(self.blocks):
            out += np.append(b[self.starts[j]:self.starts[j] + k], 0.0)[c]   # code -1 -> 0
        if self.Z is not None:
            out += self.Z @ b[self.starts[len(self.blocks)]:]
        return out

    def group_sums(self, g, G, w=None):
        """``G x K`` matrix of ``sum_{r: g_r = j} w_r x_r`` (``X'w`` when ``G = 1``)."""
        out = np.empty((G, self.K))
        for j, (c, k) in enumerate(self.blocks):
            v = self.valid[j]
            s = self.starts[j]
            out[:, s:s + k] = np.bincount(g[v] * k + c[v], weights=None if w is None else w[v],
                                          minlength=G * k).reshape(G, k)
        if self.Z is not None:
            s = self.starts[len(self.blocks)]
            for j in range(self.Z.shape[1]):
                zw = self.Z[:, j] if w is None else self.Z[:, j] * w
                out[:, s + j] = np.bincount(g, weights=zw, minlength=G)
        return out

    def gram(self, w=None):
        """``X' diag(w) X``."""
        K = self.K
        M = np.zeros((K, K))
        w = np.ones(self.n) if w is None else w
        nb = len(self.blocks)
        for a in range(nb):
            ca, ka = self.blocks[a]
            sa = self.starts[a]
            for bi in range(a, nb):
                cb, kb = self.blocks[bi]
                sb = self.starts[bi]
                m = self.valid[a] & self.valid[bi]
                blk = np.bincount(ca[m] * kb + cb[m], weights=w[m],
                                  minlength=ka * kb).reshape(ka, kb)
                M[sa:sa + ka, sb:sb + kb] = blk
                M[sb:sb + kb, sa:sa + ka] = blk.T
            if self.Z is not None:
                sz = self.starts[nb]
                va = self.valid[a]
                for j in range(self.Z.shape[1]):
                    col = np.bincount(ca[va], weights=(w * self.Z[:, j])[va], minlength=ka)
                    M[sa:sa + ka, sz + j] = col
                    M[sz + j, sa:sa + ka] = col
        if self.Z is not None:
            sz = self.starts[nb]
            M[sz:, sz:] = self.Z.T @ (self.Z * w[:, None])
        return M


class _FEData:
    """Outcome, offset, unit and cluster codes of a panel, as the fixed-effects fits use
    them; the unit effects are never columns (see :func:`_fit_gaussian_fe`)."""

    def __init__(self, y, offset, u_codes, n_units, c_codes, n_clusters):
        self.y = y
        self.offset = offset
        self.u = np.asarray(u_codes, dtype=np.int64)
        self.N = n_units
        self.c = np.asarray(c_codes, dtype=np.int64)
        self.G = n_clusters
        self.n_i = np.bincount(self.u, minlength=n_units).astype(float)
        # distinct (cluster, unit) pairs, to spread unit means over clusters
        pair_codes, pairs = pd.factorize(self.c * n_units + self.u)
        self.pair = pair_codes
        self.pair_u = pairs % n_units
        self.pair_c = pairs // n_units

    def cluster_scores(self, X: _Design, e, xbar):
        """Cluster sums of ``(x_r - xbar_unit(r)) e_r``, a ``G x K`` matrix.

        ``sum_{r in g} x_r e_r`` are grouped sums; the unit-mean part is
        ``sum_i E[g, i] xbar_i`` with ``E[g, i]`` the sum of ``e`` over the rows of unit
        ``i`` in cluster ``g``.
        """
        raw = X.group_sums(self.c, self.G, e)
        e_pair = np.bincount(self.pair, weights=e, minlength=len(self.pair_u))
        P = sparse.csr_matrix((e_pair, (self.pair_c, np.arange(len(e_pair)))),
                              shape=(self.G, len(e_pair)))
        return raw - P @ xbar[self.pair_u]


def _fit_gaussian_fe(d: _FEData, X: _Design, names, what):
    """Least squares with unit effects absorbed (within transformation).

    By the Frisch-Waugh-Lovell theorem the coefficients of ``X`` in
    ``y = unit FE + X b + e`` equal those of the regression of the unit-demeaned ``y`` on
    the unit-demeaned ``X``, and the rows of ``(X'X)^-1 X'`` that belong to ``b`` in the
    dummy-variable regression equal ``(Xw'Xw)^-1 Xw'`` (``Xw`` demeaned). Hence the
    cluster-robust covariance of ``b`` from the demeaned data is *exactly* the ``b`` block
    of the dummy-variable sandwich, whatever the clustering. The cross-products are built
    from unit sums (``Xw'Xw = X'X - S' diag(1/n_i) S``, ``S`` = unit sums of ``X``), so
    neither an n x N dummy matrix nor a demeaned n x K matrix is formed (statsmodels has
    no absorbed fixed effects, hence the hand-written solve).
    """
    y = d.y
    S = X.group_sums(d.u, d.N)                                   # N x K unit sums of X
    sy = np.bincount(d.u, weights=y, minlength=d.N)
    inv_n = 1.0 / d.n_i
    gram = X.gram() - S.T @ (S * inv_n[:, None])
    _check_gram_rank(gram, names, what, " (a covariate constant within units is absorbed by "
                     "the unit fixed effects)")
    rhs = X.group_sums(np.zeros(len(y), dtype=np.int64), 1, y)[0] - S.T @ (sy * inv_n)
    beta = _solve_pd(gram, rhs)
    xbar = S * inv_n[:, None]
    e = (y - (sy * inv_n)[d.u]) - (X.matvec(beta) - (xbar @ beta)[d.u])   # dummy-model residuals
    bread = _inv_pd(gram)
    scores = d.cluster_scores(X, e, xbar)
    rss = float(e @ e)
    n = len(y)
    loglik = -0.5 * n * (np.log(2 * np.pi * rss / n) + 1.0) if rss > 0 else np.inf
    return {"beta": beta, "bread": bread, "cluster_scores": scores, "loglik": loglik,
            "rss": rss, "iterations": 1}


def _fit_poisson_fe(d: _FEData, X: _Design, names, what):
    """Poisson GLM with unit fixed effects, the unit effects concentrated out.

    For fixed ``b`` the unit effect that maximises the Poisson likelihood is
    ``alpha_i = log(n_i / sum_t exp(x_it'b + offset_it))`` (``n_i`` = the unit's total
    count), so the fitted mean is ``yhat_it = n_i p_it`` with ``p_it`` the unit's
    softmax share. Maximising the concentrated likelihood over ``b`` (Newton's method;
    it is concave) gives exactly the dummy-variable GLM estimate, with
    gradient ``X'(y - yhat)`` and information
    ``sum_i sum_t yhat_it (x_it - xbar_i)(x_it - xbar_i)'``, ``xbar_i`` the
    ``yhat``-weighted unit mean of ``x``. That information is the ``b`` block of the
    inverse of the full GLM information, and the sandwich is built from the same
    weighted-demeaned scores, so SEs equal those of the dummy-variable fit. Units whose
    counts are all zero carry no information (their effect is minus infinity); they stay
    in ``n``, ``k`` and the cluster count as they would in R's ``glm``.
    """
    y, off = d.y, d.offset
    n_tot = np.bincount(d.u, weights=y, minlength=d.N)
    inv_n = np.where(n_tot > 0, 1.0 / np.where(n_tot > 0, n_tot, 1.0), 0.0)
    K = X.K
    lgy = special.gammaln(y + 1.0).sum()
    pos = y > 0
    zero_g = np.zeros(len(y), dtype=np.int64)

    def evaluate(b):
        eta = X.matvec(b) + off
        top = np.full(d.N, -np.inf)
        np.maximum.at(top, d.u, eta)
        ex = np.exp(eta - top[d.u])
        den = np.bincount(d.u, weights=ex, minlength=d.N)
        yhat = n_tot[d.u] * ex / den[d.u]
        ll = float(np.sum(y[pos] * np.log(yhat[pos])) - n_tot.sum() - lgy)
        return ll, yhat

    def information(yhat):
        Sw = X.group_sums(d.u, d.N, yhat)
        info = X.gram(yhat) - Sw.T @ (Sw * inv_n[:, None])
        return info, Sw * inv_n[:, None]

    b = np.zeros(K)
    ll, yhat = evaluate(b)
    info, _ = information(yhat)
    _check_gram_rank(info, names, what, " (a covariate constant within units is absorbed by "
                     "the unit fixed effects)")
    converged = False
    for it in range(1, _NEWTON_MAXITER + 1):
        grad = X.group_sums(zero_g, 1, y - yhat)[0]
        step = _solve_pd(info, grad)
        t = 1.0
        while True:
            ll_new, yhat_new = evaluate(b + t * step)
            if ll_new >= ll - 1e-12 * abs(ll) or t < 1e-8:
                break
            t /= 2
        b = b + t * step
        change = np.max(np.abs(t * step)) / (1.0 + np.max(np.abs(b)))
        ll, yhat = ll_new, yhat_new
        info, xbar = information(yhat)
        if change < 1e-11:
            converged = True
            break
    if not converged or not np.all(np.isfinite(b)):
        raise ConvergenceError(
            f"{what}: the Poisson fixed-effects fit did not converge in {_NEWTON_MAXITER} "
            "Newton steps. A period or treated-period cell with almost no events makes a "
            "coefficient run off to infinity; pool periods or use family='gaussian'."
        )
    e = y - yhat
    bread = _inv_pd(info)
    scores = d.cluster_scores(X, e, xbar)
    deviance = float(2 * np.sum(y[pos] * np.log(y[pos] / yhat[pos])) - 2 * np.sum(e))
    return {"beta": b, "bread": bread, "cluster_scores": scores, "loglik": ll,
            "deviance": deviance, "iterations": it}


def _fe_fit(d, X, names, family, what):
    if family == "gaussian":
        return _fit_gaussian_fe(d, X, names, what)
    return _fit_poisson_fe(d, X, names, what)


@dataclass(frozen=True)
class DiDResult(ModelResult):
    """A difference-in-differences fit (a :class:`~evalkit.models.base.ModelResult`).

    Attributes
    ----------
    table : DataFrame
        ``term, estimate, std_error, ci_low, ci_high, p_value`` of the two-way
        fixed-effects model: the treated x post term and any covariates (unit and period
        effects are not listed). Log scale for ``poisson``.
    effect : DataFrame
        One row: ``scale`` (``difference`` or ``rate_ratio``), ``estimate``,
        ``std_error``, ``ci_low``, ``ci_high``, ``p_value``; for ``poisson`` also
        ``percent_change`` (``100 * (rate ratio - 1)``) and its interval.
    event_study : DataFrame or None
        One row per period: ``period``, ``event_time`` (periods since the first
        post-intervention period), ``term``, ``estimate``, ``std_error``, ``ci_low``,
        ``ci_high``, ``p_value``, ``post``, ``reference``; the reference period has
        estimate 0 and no SE. For ``poisson`` also ``rate_ratio`` with its interval.
    pretrend : dict
        ``run`` (bool), ``test``, ``statistic``, ``df``, ``p_value``, ``f_statistic``,
        ``f_df``, ``f_p_value`` and ``reason`` (why it was not run, when it was not).
    family : str
    """

    effect: pd.DataFrame | None = None
    event_study: pd.DataFrame | None = None
    pretrend: dict = field(default_factory=dict)
    family: str = "gaussian"

    def summary(self) -> str:
        lines = [super().summary(), "", "effect:",
                 self.effect.to_string(index=False, float_format=lambda v: f"{v:.6g}")]
        pt = self.pretrend
        if pt.get("run"):
            lines.append(f"pre-trend test: {pt['test']}: statistic {pt['statistic']:.4g} on "
                         f"{pt['df']} df, p = {pt['p_value']:.4g}")
        else:
            lines.append(f"pre-trend test not run: {pt.get('reason')}")
        if self.event_study is not None:
            cols = ["period", "event_time", "estimate", "std_error", "ci_low", "ci_high"]
            lines += ["", "event study:", self.event_study[cols].to_string(
                index=False, float_format=lambda v: f"{v:.4g}")]
        return "\n".join(lines)


def _fmt(v):
    return v.isoformat()[:10] if isinstance(v, pd.Timestamp) else v


@one_blas_thread
def did(data: pd.DataFrame, outcome: str, unit: str, time: str, treated: str,
        post: str | None = None, covariates=None, family: str = "gaussian",
        exposure: str | None = None, cluster: str | None = None, event_study: bool = True,
        reference_period=None, alpha: float = 0.05, intervention_time=None,
        small_sample: str = "nested") -> DiDResult:
    r"""Difference-in-differences with unit and period fixed effects.

    What it estimates
    -----------------
    With ``D_it = treated_i * post_t``, the two-way fixed-effects (TWFE) model

    .. math:: g(E[y_{it}]) = \alpha_i + \lambda_t + \delta D_{it} + x_{it}'\beta

    (``g`` = identity for ``gaussian``; log for ``poisson``, with ``log(exposure)`` as an
    offset). ``delta`` is the average effect on the treated after the intervention
    under *parallel trends* (without the intervention, treated and comparison units
    would have changed alike -- on the additive scale for ``gaussian``, the
    multiplicative scale for ``poisson``). With one intervention date and a balanced
    panel, the linear ``delta`` equals the 2x2 difference of the four means
    ``(treated post - treated pre) - (comparison post - comparison pre)``. For
    ``poisson`` ``exp(delta)`` is the rate ratio (e.g. 0.82 = an 18% drop) and
    ``effect["percent_change"] = 100 (exp(delta) - 1)``.

    Event study: the same model with ``delta D_it`` replaced by
    ``sum_{s != ref} gamma_s treated_i 1[t = s]``, so ``gamma_s`` is the treated-vs-
    comparison gap in period ``s`` relative to the reference period (default: the last
    pre-intervention period). Pre-period ``gamma_s`` should be near 0; the pre-trend
    test is the joint (cluster-robust) Wald test that they all are:
    ``W = g' V^{-1} g ~ chi2(q)``, ``q`` = pre-periods - 1; ``f_statistic = W / q`` on
    ``(q, G - 1)`` df is the few-clusters version. It needs at least two pre-periods;
    otherwise ``pretrend["run"]`` is False, ``pretrend["reason"]`` says why and a
    :class:`~evalkit.errors.StatisticalWarning` is issued. A non-significant pre-trend
    test does not prove parallel trends (it may lack power); look at the event-study plot.

    How it is fitted
    ----------------
    * ``gaussian``: least squares with the unit effects absorbed by the within
      transformation (unit demeaning) and period dummies; no dummy matrix for units is
      built, so 100,000 members x 36 months are fine.
    * ``poisson``: Poisson GLM (log link) with unit and period effects; the unit effects
      are concentrated out analytically (Poisson fixed-effects / conditional
      multinomial likelihood), which gives exactly the estimates and SEs of R's
      ``glm(y ~ D + factor(unit) + factor(time) + offset(log(exposure)), poisson)`` for
      any number of units. Non-integer outcomes are allowed (pseudo-Poisson).

    Standard errors are cluster-robust, by ``unit`` unless ``cluster`` names another
    column, exactly as ``sandwich::vcovCL(fit, cluster = ~unit, type = "HC1")`` on that
    dummy-variable fit: ``V = c (B M B)`` with bread ``B`` = inverse (X'WX), meat ``M``
    = sum over clusters of the outer product of the summed scores and
    ``c = G/(G-1) * (n-1)/(n-k)``. With ``small_sample="nested"`` (default) the unit
    effects are left out of ``k`` when every unit lies within one cluster (always so
    when clustering by unit), as ``fixest`` and Stata's ``reghdfe`` do: absorbed effects
    nested in the clusters cost no degrees of freedom of the cluster-robust variance.
    With ``small_sample="dummies"`` ``k`` counts every coefficient of the dummy-variable
    model (``k = N + K``), exactly ``sandwich::vcovCL`` on that ``glm``/``lm``; with few
    periods per unit this inflates the variance by about ``T/(T-1)`` (2 for a pre/post
    panel), and intervals over-cover. Intervals and p-values use ``t(n - k)`` for ``gaussian`` (as
    ``lmtest::coeftest`` on ``lm``) and the normal for ``poisson``. With fewer than 20
    clusters, or fewer than 5 treated or comparison clusters, cluster-robust SEs are too
    small and a :class:`~evalkit.errors.StatisticalWarning` says so; with two
    communities and nothing finer, use :func:`its` with ``control=``.

    Parameters
    ----------
    data : DataFrame
        Long panel, one row per unit x period (repeated rows are allowed). Not modified.
    outcome : str
        Numeric outcome (counts for ``poisson``: ER visits per member-month cell).
    unit : str
        Unit id (member, small area, community); unit fixed effects.
    time : str
        Period (month number, date, or any sortable value); period fixed effects.
    treated : str
        0/1 or bool column marking treated units; must be constant within a unit.
    post : str, optional
        0/1 column marking periods after the intervention; must be constant within a
        period and, in time order, switch from 0 to 1 once (a single intervention date;
        staggered adoption is not supported). Give this or ``intervention_time``.
    covariates : list of str or str, optional
        Time-varying covariates (``["age", "comorbidity"]`` or ``"age + I(age**2)"``).
        Covariates constant within units are absorbed by the unit effects and rejected.
    family : {"gaussian", "poisson"}
    exposure : str, optional
        Member-months; ``log(exposure)`` is the offset (``poisson`` only).
    cluster : str, optional
        Cluster column for the robust variance (default: ``unit``).
    event_study : bool
        Also fit the event-study model and the pre-trend test.
    reference_period : optional
        A pre-intervention value of ``time`` used as the event-study reference (default:
        the last pre-intervention period).
    alpha : float
        1 - confidence level.
    intervention_time : optional
        First post-intervention value of ``time``; ``post = time >= intervention_time``.

    Returns
    -------
    DiDResult
        ``table``, ``effect``, ``event_study``, ``pretrend``, ``summary()``; ``extra``
        holds counts (units, periods, clusters), ``k``, the small-sample factor and, for
        ``poisson``, the deviance and Newton iterations.

    Raises
    ------
    DataValidationError
        Missing columns, non-binary ``treated``/``post``, ``treated`` varying within a
        unit, ``post`` varying within a period or not switching once, no pre- or
        post-intervention periods, no treated or no comparison units, an empty
        treated/comparison x pre/post cell, a constant outcome, a cell without events
        (``poisson``), terms absorbed by the fixed effects.
    ParamsError
        Unknown family, both or neither of ``post``/``intervention_time``, ``exposure``
        with ``gaussian``, a reference period that is not a pre-intervention period,
        fewer than 2 clusters.
    ConvergenceError
        The Poisson fit did not converge.

    Examples
    --------
    >>> res = did(panel, "er_visits", unit="area", time="month", treated="healthwise",
    ...           intervention_time=25, family="poisson", exposure="member_months")
    >>> res.effect          # rate ratio, e.g. 0.82 -> percent_change -18   # doctest: +SKIP
    >>> res.pretrend["p_value"]                                            # doctest: +SKIP
    >>> event_study_plot(res)                                              # doctest: +SKIP

    References
    ----------
    Angrist & Pischke (2009), ch. 5; Wooldridge (1999) for Poisson fixed effects;
    Cameron & Miller (2015) for cluster-robust inference; Zeileis, Koell & Graham (2020),
    "Various versatile variances", *JSS* 95(1) (``vcovCL``).
    """
    what = f"did({family})"
    if family not in FAMILIES:
        raise ParamsError(f"did: family must be one of {list(FAMILIES)}, got {family!r}.")
    alpha = check_alpha(alpha, what)
    for arg, val in (("outcome", outcome), ("unit", unit), ("time", time), ("treated", treated)):
        _check_name(val, arg, what)
    _check_name(post, "post", what, optional=True)
    _check_name(exposure, "exposure", what, optional=True)
    _check_name(cluster, "cluster", what, optional=True)
    if (post is None) == (intervention_time is None):
        raise ParamsError(f"{what}: give either post (a 0/1 column) or intervention_time "
                          "(the first post-intervention value of time), not both or neither.")
    if exposure is not None and family != "poisson":
        raise ParamsError(f"{what}: exposure (log offset) needs family='poisson'; for a linear "
                          "DiD on rates compute the rate column and use it as the outcome.")
    cov_rhs = _covariate_rhs(covariates, what)
    cluster_col = cluster if cluster is not None else unit
    cols = [outcome, unit, time, treated] + [c for c in (post, exposure, cluster) if c]
    frame, dropped = prepare_frame(data, [cov_rhs] if cov_rhs else [],
                                   list(dict.fromkeys(cols)), what)
    if exposure is not None:
        frame, dropped = _drop_bad_exposure(frame, exposure, dropped, what)

    y = _numeric_outcome(frame, outcome, what)
    if family == "poisson" and (y < 0).any():
        raise DataValidationError(f"{what}: outcome {outcome!r} has negative values; a Poisson "
                                  "model needs counts (or non-negative amounts).")
    offset = np.log(frame[exposure].to_numpy(dtype=float)) if exposure else np.zeros(len(y))
    level = y / np.exp(offset) if family == "poisson" else y
    if np.ptp(level) == 0:
        raise DataValidationError(
            f"{what}: outcome {outcome!r} is constant ({level[0]:g}"
            f"{' per unit of exposure' if exposure else ''}) in all {len(y)} rows used; "
            "there is no change to analyse.")

    # --- structure: units, periods, treated, post
    u_codes, u_uniques = pd.factorize(frame[unit], sort=False)
    try:
        t_codes, t_uniques = pd.factorize(frame[time], sort=True)
    except TypeError:
        raise DataValidationError(f"{what}: time column {time!r} cannot be sorted; use month "
                                  "numbers or dates.") from None
    N, T = len(u_uniques), len(t_uniques)
    tr = _binary(frame[treated], treated, what)
    n_per_unit = np.bincount(u_codes, minlength=N)
    tr_sum = np.bincount(u_codes, weights=tr, minlength=N)
    varying = (tr_sum > 0) & (tr_sum < n_per_unit)
    if varying.any():
        ex = list(u_uniques[np.flatnonzero(varying)[:5]])
        raise DataValidationError(
            f"{what}: {treated!r} must be constant within each {unit!r} (it marks treated "
            f"units, not treated periods); it varies for {int(varying.sum())} units, e.g. "
            f"{ex}. Give the period switch as post= or intervention_time=.")
    unit_treated = tr_sum > 0
    if not unit_treated.any() or unit_treated.all():
        which = "treated" if not unit_treated.any() else "comparison"
        raise DataValidationError(
            f"{what}: there are no {which} units ({treated!r} is "
            f"{0 if which == 'treated' else 1} for all {N} units); DiD needs both groups.")

    if intervention_time is not None:
        tcol = frame[time]
        it_value = intervention_time
        if pd.api.types.is_datetime64_any_dtype(tcol):
            it_value = pd.Timestamp(intervention_time)
        try:
            post_row = (tcol >= it_value).to_numpy(dtype=int)
        except TypeError:
            raise ParamsError(f"{what}: intervention_time {intervention_time!r} cannot be "
                              f"compared with the values of {time!r} ({tcol.dtype}).") from None
        post_name = "post"
    else:
        post_row = _binary(frame[post], post, what)
        post_name = post
    n_per_t = np.bincount(t_codes, minlength=T)
    post_sum = np.bincount(t_codes, weights=post_row, minlength=T)
    mixed = (post_sum > 0) & (post_sum < n_per_t)
    if mixed.any():
        raise DataValidationError(
            f"{what}: {post_name!r} must be the same for every row of a period (one "
            f"intervention date); it differs within period(s) {list(t_uniques[mixed][:5])}. "
            "Staggered adoption is not supported by this estimator.")
    period_post = (post_sum > 0).astype(int)
    if np.any(np.diff(period_post) < 0):
        raise DataValidationError(
            f"{what}: {post_name!r} switches back from 1 to 0 in time order; it must mark "
            "all periods from the intervention on.")
    n_pre = int((period_post == 0).sum())
    if n_pre == 0:
        raise DataValidationError(
            f"{what}: no pre-intervention periods (every period has {post_name} = 1); "
            "DiD needs data before the intervention.")
    if n_pre == T:
        raise DataValidationError(
            f"{what}: no post-intervention periods (every period has {post_name} = 0); "
            "nothing after the intervention to compare.")
    cells = {}
    for g_lab, g in (("treated", 1), ("comparison", 0)):
        for p_lab, p in (("pre", 0), ("post", 1)):
            m = (tr == g) & (post_row == p)
            cells[(g_lab, p_lab)] = m
            if not m.any():
                raise DataValidationError(
                    f"{what}: no rows for {g_lab} units in the {p_lab}-intervention periods; "
                    "the treated x post effect is not identified.")
            if family == "poisson" and not (y[m] > 0).any():
                raise DataValidationError(
                    f"{what}: no events ({outcome} > 0) among {g_lab} units in the "
                    f"{p_lab}-intervention periods; the rate ratio is 0 or infinite. Check "
                    "the data or pool periods.")
    if family == "poisson":
        ev_t = np.bincount(t_codes, weights=y, minlength=T)
        if (ev_t == 0).any():
            raise DataValidationError(
                f"{what}: no events in period(s) {list(t_uniques[ev_t == 0][:5])}; their "
                "period effects are minus infinity. Drop or pool those periods.")

    c_codes, c_uniques = pd.factorize(frame[cluster_col], sort=False)
    G = len(c_uniques)
    if G < 2:
        raise ParamsError(f"{what}: cluster-robust SEs need at least 2 clusters in "
                          f"{cluster_col!r}; found {G}.")
    c_tr = np.bincount(c_codes, weights=tr, minlength=G)
    c_n = np.bincount(c_codes, minlength=G)
    nested = np.all((c_tr == 0) | (c_tr == c_n))
    g_treat = int((c_tr > 0).sum()) if nested else None
    g_comp = G - g_treat if nested else None
    if G < _FEW_CLUSTERS or (nested and min(g_treat, g_comp) < _FEW_ARM_CLUSTERS):
        arms = f" ({g_treat} treated, {g_comp} comparison)" if nested else ""
        warnings.warn(
            f"{what}: only {G} clusters{arms} in {cluster_col!r}; cluster-robust standard "
            "errors are too small with few clusters (Cameron & Miller 2015). Read the "
            "intervals as optimistic, use finer units, or use its() with a comparison series.",
            StatisticalWarning, stacklevel=3)

    Z, znames = None, []
    if cov_rhs:
        _, Zfull, zn, _ = build_matrix(cov_rhs, frame, what)
        keep = [j for j, nm in enumerate(zn) if nm != "(Intercept)"]
        Z = Zfull[:, keep]
        znames = [zn[j] for j in keep]

    n = len(y)
    d = _FEData(y, offset, u_codes, N, c_codes, G)
    # period dummies for periods 1..T-1 (period 0 is the reference of the period effects)
    period_block = (t_codes - 1, T - 1)
    period_names = [f"factor({time}){_fmt(v)}" for v in t_uniques[1:]]
    did_term = f"{treated}:{post_name}"
    D = (tr * post_row).astype(bool)
    X = _Design(n, [period_block, (np.where(D, 0, -1), 1)], Z)
    names = period_names + [did_term] + znames
    fit = _fe_fit(d, X, names, family, what)
    K = X.K
    k = N + K
    if n - k <= 0:
        raise DataValidationError(f"{what}: {n} rows for {k} coefficients (incl. {N} unit "
                                  "effects); no residual degrees of freedom.")
    if small_sample not in ("nested", "dummies"):
        raise ParamsError(f"{what}: small_sample must be 'nested' or 'dummies', got {small_sample!r}")
    units_nested = bool(np.all(pd.Series(c_codes).groupby(u_codes).nunique() == 1))
    k_adj = K if (small_sample == "nested" and units_nested) else k
    adj = G / (G - 1) * (n - 1) / (n - k_adj)
    M = fit["cluster_scores"]
    V = adj * fit["bread"] @ (M.T @ M) @ fit["bread"]
    se = np.sqrt(np.clip(np.diag(V), 0, None))
    tdf = n - k if family == "gaussian" else None
    sel = slice(T - 1, K)
    table = wald_table(names[sel], fit["beta"][sel], se[sel], alpha, df=tdf)
    effect = _did_effect(table.iloc[0], family, alpha, tdf)

    # --- event study
    ref_idx = n_pre - 1
    if reference_period is not None:
        hits = np.flatnonzero(t_uniques == reference_period) if len(t_uniques) else []
        if len(hits) == 0:
            raise ParamsError(f"{what}: reference_period {reference_period!r} is not a value "
                              f"of {time!r}.")
        ref_idx = int(hits[0])
        if period_post[ref_idx]:
            raise ParamsError(f"{what}: reference_period {reference_period!r} is after the "
                              "intervention; choose a pre-intervention period.")
    es_table = None
    if not event_study:
        pretrend = _pretrend_not_run("event_study=False: the event-study model was not fitted.")
    else:
        ev_periods = [s for s in range(T) if s != ref_idx]
        col_of = np.full(T, -1)
        col_of[ev_periods] = np.arange(T - 1)
        ev_block = (np.where(tr == 1, col_of[t_codes], -1), T - 1)
        ev_names = [f"{treated}:factor({time}){_fmt(t_uniques[s])}" for s in ev_periods]
        if family == "poisson":
            ev_y = np.bincount(t_codes[tr == 1], weights=y[tr == 1], minlength=T)
            empty = [s for s in ev_periods if ev_y[s] == 0]
            if empty:
                raise DataValidationError(
                    f"{what}: no events among treated units in period(s) "
                    f"{[_fmt(t_uniques[s]) for s in empty][:5]}; their event-study "
                    "coefficients are minus infinity. Pool periods or set event_study=False.")
        Xe = _Design(n, [period_block, ev_block], Z)
        enames = period_names + ev_names + znames
        efit = _fe_fit(d, Xe, enames, family, what + " event study")
        Me = efit["cluster_scores"]
        k_e = N + Xe.K
        if n - k_e <= 0:
            raise DataValidationError(f"{what}: {n} rows for the {k_e} coefficients of the "
                                      "event-study model; set event_study=False.")
        adj_e = G / (G - 1) * (n - 1) / (n - (Xe.K if k_adj == K else k_e))
        Ve_full = adj_e * efit["bread"] @ (Me.T @ Me) @ efit["bread"]
        idx = np.arange(T - 1, 2 * (T - 1))
        ge = efit["beta"][idx]
        Ve = Ve_full[np.ix_(idx, idx)]
        es_table = _event_table(t_uniques, ev_periods, ref_idx, ge, Ve, period_post, n_pre,
                                ev_names, treated, time, alpha,
                                n - k_e if family == "gaussian" else None, family)
        lead_pos = [j for j, s in enumerate(ev_periods) if not period_post[s]]
        if len(lead_pos) == 0:
            reason = (f"only {n_pre} pre-intervention period (the reference); the pre-trend "
                      "test needs at least 2 pre-intervention periods.")
            warnings.warn(f"{what}: pre-trend test not run: {reason} Parallel trends cannot be "
                          "checked from these data.", StatisticalWarning, stacklevel=3)
            pretrend = _pretrend_not_run(reason)
        else:
            gq = ge[lead_pos]
            Vq = Ve[np.ix_(lead_pos, lead_pos)]
            W = float(gq @ linalg.solve(Vq, gq, assume_a="sym"))
            q = len(lead_pos)
            pretrend = {
                "run": True, "test": "joint Wald chi-square, cluster-robust (pre-period "
                "event-study coefficients = 0)", "statistic": W, "df": q,
                "p_value": float(stats.chi2.sf(W, q)), "f_statistic": W / q,
                "f_df": (q, G - 1), "f_p_value": float(stats.f.sf(W / q, q, G - 1)),
                "reason": None,
            }

    vc = f"cluster-robust by {cluster_col} (vcovCL HC1: G/(G-1)*(n-1)/(n-k))"
    if family == "gaussian":
        method = ("difference-in-differences: linear two-way fixed effects (unit effects "
                  f"absorbed by within transformation, period dummies); {vc}")
    else:
        method = ("difference-in-differences: Poisson GLM, log link"
                  + (f", offset log({exposure})" if exposure else "")
                  + ", unit and period fixed effects (unit effects concentrated out, "
                  f"identical to the dummy-variable GLM); {vc}")
    rhs = f"{did_term} + factor({unit}) + factor({time})"
    if znames:
        rhs += " + " + " + ".join(znames)
    if exposure:
        rhs += f" + offset(log({exposure}))"
    extra = {
        "n_units": N, "n_treated_units": int(unit_treated.sum()), "n_periods": T,
        "n_pre_periods": n_pre, "n_post_periods": T - n_pre, "n_clusters": G,
        "cluster": cluster_col, "time_column": time, "k": k, "df_residual": n - k,
        "small_sample_factor": adj,
        "reference_period": _fmt(t_uniques[ref_idx]),
        "first_post_period": _fmt(t_uniques[n_pre]),
    }
    if family == "poisson":
        extra.update(deviance=fit["deviance"], iterations=fit["iterations"],
                     rate_ratio=float(effect["estimate"].iloc[0]),
                     percent_change=float(effect["percent_change"].iloc[0]))
        if exposure:
            extra["exposure"] = exposure
    else:
        extra["rss"] = fit["rss"]
    return DiDResult(table=table, method=method, formula=f"{outcome} ~ {rhs}", nobs=n,
                     dropped=dropped, loglik=float(fit["loglik"]), alpha=alpha, extra=extra,
                     model={"vcov": V[sel, sel], "terms": names[sel]},
                     effect=effect, event_study=es_table, pretrend=pretrend, family=family)


def _pretrend_not_run(reason: str) -> dict:
    return {"run": False, "test": None, "statistic": np.nan, "df": 0, "p_value": np.nan,
            "f_statistic": np.nan, "f_df": None, "f_p_value": np.nan, "reason": reason}


def _did_effect(row, family, alpha, tdf) -> pd.DataFrame:
    q = (stats.norm if tdf is None else stats.t(tdf)).ppf(1 - alpha / 2)
    b, se, p = float(row["estimate"]), float(row["std_error"]), float(row["p_value"])
    if family == "gaussian":
        return pd.DataFrame([("difference", b, se, b - q * se, b + q * se, p)],
                            columns=EFFECT_COLUMNS)
    rr = np.exp(b)
    lo, hi = np.exp(b - q * se), np.exp(b + q * se)
    out = pd.DataFrame([("rate_ratio", rr, rr * se, lo, hi, p)], columns=EFFECT_COLUMNS)
    out["percent_change"] = 100 * (rr - 1)
    out["percent_ci_low"] = 100 * (lo - 1)
    out["percent_ci_high"] = 100 * (hi - 1)
    return out


def _event_table(t_uniques, ev_periods, ref_idx, ge, Ve, period_post, n_pre, ev_names,
                 treated, time, alpha, tdf, family):
    T = len(t_uniques)
    est = np.zeros(T)
    se = np.full(T, np.nan)
    est[ev_periods] = ge
    se[ev_periods] = np.sqrt(np.clip(np.diag(Ve), 0, None))
    terms = [""] * T
    for s, nm in zip(ev_periods, ev_names):
        terms[s] = nm
    terms[ref_idx] = f"{treated}:factor({time}){_fmt(t_uniques[ref_idx])} (reference)"
    tab = wald_table(terms, est, np.where(np.isnan(se), 1.0, se), alpha, df=tdf)
    ref = np.arange(T) == ref_idx
    for c in ("std_error", "ci_low", "ci_high", "p_value"):
        tab.loc[ref, c] = np.nan
    tab.loc[ref, ["ci_low", "ci_high"]] = 0.0
    tab.insert(0, "event_time", np.arange(T) - n_pre)
    tab.insert(0, "period", list(t_uniques))
    tab["post"] = period_post.astype(bool)
    tab["reference"] = ref
    if family == "poisson":
        tab["rate_ratio"] = np.exp(tab["estimate"])
        tab["rr_ci_low"] = np.exp(tab["ci_low"])
        tab["rr_ci_high"] = np.exp(tab["ci_high"])
    return tab


def event_study_plot(result: DiDResult, ax=None):
    """Event-study coefficients with confidence intervals, by period.

    Pre-intervention points should hover around the null (0, or a rate ratio of 1 for
    ``poisson``); the reference period is drawn hollow at the null; a dashed line marks
    the intervention. Returns the matplotlib ``ax``.
    """
    import matplotlib.pyplot as plt

    es = getattr(result, "event_study", None)
    if es is None:
        raise ParamsError("event_study_plot: the result has no event study; fit with "
                          "did(..., event_study=True).")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    periods = es["period"]
    dated = pd.api.types.is_datetime64_any_dtype(periods)
    numeric = pd.api.types.is_numeric_dtype(periods) or dated
    x = periods.to_numpy() if numeric else es["event_time"].to_numpy()
    ratio = result.family == "poisson"
    if ratio:
        yv, lo, hi, null = es["rate_ratio"], es["rr_ci_low"], es["rr_ci_high"], 1.0
        ylabel = "rate ratio vs reference period"
    else:
        yv, lo, hi, null = es["estimate"], es["ci_low"], es["ci_high"], 0.0
        ylabel = "difference vs reference period"
    yv, lo, hi = (np.asarray(v, dtype=float) for v in (yv, lo, hi))
    ref = es["reference"].to_numpy()
    post = es["post"].to_numpy()
    ax.axhline(null, color="0.5", lw=0.8)
    for mask, color, label in ((~post & ~ref, "#762a83", "before"), (post, "#1b7837", "after")):
        ax.errorbar(x[mask], yv[mask], yerr=np.vstack([yv[mask] - lo[mask], hi[mask] - yv[mask]]),
                    fmt="o", color=color, capsize=2, ms=4, label=label)
    ax.plot(x[ref], yv[ref], "o", mfc="white", color="0.3", ms=5, label="reference")
    first_post = int(np.argmax(post))
    if not numeric:
        xline = -0.5                                    # x is event time
    elif first_post == 0:
        xline = x[0]
    elif dated:
        before, after = periods.iloc[first_post - 1], periods.iloc[first_post]
        xline = before + (after - before) / 2
    else:
        xline = (float(x[first_post - 1]) + float(x[first_post])) / 2
    ax.axvline(xline, color="0.3", ls="--", lw=0.8)
    if ratio:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(result.extra.get("time_column", "period") if numeric
                  else "periods since the intervention")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


# =========================================================================== ITS
def newey_west_lags(n_times: int) -> int:
    """Default Newey-West truncation lag ``floor(4 (T/100)^(2/9))`` (Newey & West 1994),
    with ``T`` the number of time points; e.g. 3 for 36 to 100+ monthly points."""
    return int(np.floor(4 * (n_times / 100.0) ** (2.0 / 9.0)))


class _ITSFit:
    """Design and estimates needed to predict with and without the intervention."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def design(self, t, g, counterfactual: bool, season_codes=None, season_avg=False):
        """Model rows at relative times ``t`` for series ``g`` (1 = intervention)."""
        t = np.asarray(t, dtype=float)
        g = np.asarray(g, dtype=float) * np.ones_like(t)
        post = (t >= self.t0).astype(float)
        cols = [np.ones_like(t), t, post, (t - self.t0) * post]
        if self.control:
            on = 0.0 if counterfactual else 1.0
            cols += [g, g * t, on * g * post, on * g * (t - self.t0) * post]
        elif counterfactual:
            cols[2] = cols[2] * 0.0
            cols[3] = cols[3] * 0.0
        X = np.column_stack(cols)
        if self.season_levels is not None and getattr(self, "harmonics", 0):
            # Fourier terms sin/cos(2 pi j s / period), j = 1..harmonics; each averages
            # to zero over a whole cycle, so the deseasonalised row is all zeros.
            H = self.harmonics
            if season_avg:
                S = np.zeros((len(t), 2 * H))
            else:
                ang = 2 * np.pi * np.asarray(season_codes, dtype=float) / self.period
                S = np.column_stack([f(j * ang) for j in range(1, H + 1)
                                     for f in (np.sin, np.cos)])
            X = np.column_stack([X, S])
        elif self.season_levels is not None:
            lv = self.season_levels[1:]
            if season_avg:
                S = np.full((len(t), len(lv)), 1.0 / len(self.season_levels))
            else:
                S = (np.asarray(season_codes)[:, None] == np.asarray(lv)[None, :]).astype(float)
            X = np.column_stack([X, S])
        return X


@dataclass(frozen=True)
class ITSResult(ModelResult):
    """An interrupted time series fit (a :class:`~evalkit.models.base.ModelResult`).

    Attributes
    ----------
    table : DataFrame
        All coefficients with HAC standard errors: ``(Intercept)``, ``time`` (pre slope
        per period), ``level_change``, ``slope_change`` (+ ``intervention``,
        ``intervention:time``, ``intervention:level_change``,
        ``intervention:slope_change`` with a comparison series; + month or season
        terms). Log scale for ``poisson``.
    effect : DataFrame
        ``quantity, scale, estimate, std_error, ci_low, ci_high, p_value,
        percent_change``: the level change, the slope change (or their differences from
        the comparison series), the ratio with/without the intervention at ``horizon``
        and the average ratio over the observed post-intervention period.
    fitted : DataFrame
        ``series, time, observed, fitted, counterfactual`` on the analysis scale (rate per
        1,000 exposure units when ``exposure`` is given), for :func:`its_plot`.
    horizon : float
        Periods after the intervention at which the ratio row of ``effect`` is taken.
    lags : int
        Newey-West truncation lag used.
    family : str
    """

    effect: pd.DataFrame | None = None
    fitted: pd.DataFrame | None = None
    horizon: float = 0.0
    lags: int = 0
    family: str = "gaussian"

    def summary(self) -> str:
        return "\n".join([super().summary(), "", "effects:", self.effect.to_string(
            index=False, float_format=lambda v: f"{v:.6g}")])

    def relative_effect(self, horizon: float, alpha: float | None = None) -> pd.DataFrame:
        """Predicted outcome with vs without the intervention ``horizon`` periods after it.

        For the intervention series at time ``intervention_time + horizon`` (``horizon =
        0`` is the intervention period itself):

        * ``gaussian``: ``ratio = x1'b / x0'b`` where ``x1`` includes the level and slope
          changes and ``x0`` does not (the counterfactual continues the pre-intervention
          trend; with a comparison series it also follows the comparison's changes).
          Month/season terms enter at their average, so the ratio is deseasonalised.
          Delta method on the log ratio: ``se^2 = g'Vg``, ``g = x1/(x1'b) - x0/(x0'b)``.
        * ``poisson``: ``ratio = exp(level_change + horizon * slope_change)`` (season and
          exposure cancel), interval ``exp(log ratio +/- q se)``.

        Returns a one-row DataFrame: ``horizon, predicted_with, predicted_without,
        ratio, std_error, ci_low, ci_high, p_value, percent_change`` (predictions on the
        analysis scale, e.g. visits per 1,000 member-months).
        """
        fit: _ITSFit = self.model
        alpha = self.alpha if alpha is None else check_alpha(alpha, "relative_effect")
        h = float(horizon)
        if not np.isfinite(h) or h < 0:
            raise ParamsError(f"relative_effect: horizon must be >= 0 periods after the "
                              f"intervention, got {horizon!r}.")
        if h > fit.h_max:
            warnings.warn(f"relative_effect: horizon {h:g} is beyond the last observed "
                          f"post-intervention period ({fit.h_max:g}); the ratio extrapolates "
                          "the fitted segments.", StatisticalWarning, stacklevel=2)
        t = np.array([fit.t0 + h])
        x1 = fit.design(t, 1, False, season_avg=True)[0]
        x0 = fit.design(t, 1, True, season_avg=True)[0]
        row = _ratio_row(x1, x0, fit.params, fit.vcov, fit.family, alpha, fit.tdf, fit.scale)
        return pd.DataFrame([{"horizon": h, **row}])


def _ratio_row(x1, x0, b, V, family, alpha, tdf, scale):
    q = (stats.norm if tdf is None else stats.t(tdf)).ppf(1 - alpha / 2)
    if family == "poisson":
        m1, m0 = np.exp(x1 @ b), np.exp(x0 @ b)
        grad = x1 - x0
    else:
        m1, m0 = x1 @ b, x0 @ b
        if not (m1 > 0 and m0 > 0):
            warnings.warn("its: a predicted value with or without the intervention is not "
                          "positive, so their ratio is not defined; read the level and slope "
                          "changes instead.", StatisticalWarning, stacklevel=3)
            return {"predicted_with": m1 * scale, "predicted_without": m0 * scale,
                    "ratio": np.nan, "std_error": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                    "p_value": np.nan, "percent_change": np.nan}
        grad = x1 / m1 - x0 / m0
    lr = np.log(m1 / m0)
    se = float(np.sqrt(max(grad @ V @ grad, 0.0)))
    dist = stats.norm if tdf is None else stats.t(tdf)
    p = float(2 * dist.sf(abs(lr) / se)) if se > 0 else np.nan
    r = float(np.exp(lr))
    return {"predicted_with": float(m1 * scale), "predicted_without": float(m0 * scale),
            "ratio": r, "std_error": r * se, "ci_low": float(np.exp(lr - q * se)),
            "ci_high": float(np.exp(lr + q * se)), "p_value": p, "percent_change": 100 * (r - 1)}


def _month_number(values) -> np.ndarray:
    """Dates (or date strings) -> absolute month numbers ``year * 12 + month - 1``."""
    ts = pd.to_datetime(pd.Series(values))
    return (ts.dt.year * 12 + ts.dt.month - 1).to_numpy(dtype=float)


def _season(t_abs: np.ndarray, period: int, dated: bool) -> np.ndarray:
    """Season codes: calendar month 1..12 for dates, else ``time mod period``."""
    pos = np.round(t_abs).astype(int) % period
    return pos + 1 if (dated and period == 12) else pos


@one_blas_thread
def its(data: pd.DataFrame, outcome: str, time: str, intervention_time,
        exposure: str | None = None, control: str | None = None, lags: int | None = None,
        seasonal=False, family: str = "gaussian", alpha: float = 0.05,
        horizon: float | None = None, harmonics: int = 0) -> ITSResult:
    r"""Interrupted time series: segmented regression with Newey-West standard errors.

    What it estimates
    -----------------
    For one series observed at times ``t`` with the intervention at ``t0``
    (``post = t >= t0``)

    .. math:: g(E[y_t]) = b_0 + b_1 (t - t_{first}) + b_2\,post_t
              + b_3 (t - t_0)\,post_t\;[+ \text{month-of-year terms}]

    ``b_2`` (``level_change``) is the jump at the intervention and ``b_3``
    (``slope_change``) the change in trend per period; the counterfactual is the
    pre-intervention segment extended. ``g`` is the identity for ``gaussian`` (the
    outcome itself, or ``1000 * outcome / exposure`` -- a rate per 1,000 member-months --
    when ``exposure`` is given) and log for ``poisson`` (counts, ``log(exposure)``
    offset; ``exp(b_2)`` is then the rate ratio at the intervention and ``exp(b_3)``
    the ratio per period).

    With a comparison series (``control``: 1 marks the comparison rows, 0 the
    intervention rows), comparative ITS stacks both series and adds ``intervention``
    (1 for the intervention series) times each term: ``intervention:level_change`` and
    ``intervention:slope_change`` are the *differences* in level and slope change
    (intervention minus comparison); month terms are shared. The counterfactual for the
    intervention series then follows its own pre-trend plus the comparison's changes.

    Relative effect: the ratio of the predicted outcome with vs without the
    intervention, at ``horizon`` periods after ``t0`` (deseasonalised; see
    :meth:`ITSResult.relative_effect`) and averaged over the observed post-intervention
    periods (``sum of predictions with / sum without``, observed months and exposure);
    100 * (ratio - 1) is the percentage change ("ER use fell by 18%" = ratio 0.82).
    Intervals by the delta method on the log ratio.

    Standard errors: Newey-West HAC (Bartlett kernel, no prewhitening) with truncation
    lag ``lags``; default ``floor(4 (T/100)^(2/9))`` with ``T`` the number of time
    points (:func:`newey_west_lags`; 3 for 36-125 months). The small-sample factor
    ``n/(n-k)`` **is** applied, i.e. statsmodels ``cov_type="HAC"`` with
    ``use_correction=True`` (= R ``sandwich::NeweyWest(fit, lag, prewhite = FALSE,
    adjust = TRUE)``). For ``poisson`` the sandwich uses the Poisson scores, so
    overdispersion is allowed for. With a comparison series the scores of both series
    are summed within each time point before the Newey-West weighting (Driscoll-Kraay;
    statsmodels ``cov_type="hac-groupsum"``, ``use_correction="hac"``), which also
    allows the two series to share shocks. ``gaussian`` intervals use ``t(n-k)``,
    ``poisson`` the normal. Rows are assumed equally spaced in time; gaps give a
    :class:`~evalkit.errors.StatisticalWarning`.

    Parameters
    ----------
    data : DataFrame
        One row per time point (per series). Not modified.
    outcome : str
        The series (a rate, or counts with ``exposure``).
    time : str
        Month number (any numeric period index) or dates (taken as calendar months).
    intervention_time
        First period of the post-intervention segment, in the units of ``time``.
    exposure : str, optional
        Member-months per time point: offset for ``poisson``; for ``gaussian`` the
        outcome is analysed as ``1000 * outcome / exposure``.
    control : str, optional
        0/1 column, 1 = comparison series (comparative ITS).
    lags : int, optional
        Newey-West truncation lag (default: the rule above).
    seasonal : bool or int
        Add season dummies: calendar month for dates; for numeric time ``time mod 12``
        (or ``time mod seasonal`` when an int, e.g. 4 for quarters).
    harmonics : int
        With ``seasonal``: model the season by this many sine/cosine pairs of the cycle
        (``sin(2 pi j s / period)``, ``cos(...)``, ``j = 1..harmonics``, terms ``sin1,
        cos1, ...``) instead of one dummy per season. 0 (default) = dummies. A short
        series needs this: with 12 months before and 12 after an intervention at a
        year boundary, the pre-intervention trend is a linear combination of 11 month
        dummies and the level change, so it cannot be estimated; one or two harmonics
        (2 or 4 terms) keep it identified (Bhaskaran et al. 2013, "Time series
        regression studies in environmental epidemiology", *Int. J. Epidemiol.*
        42:1187-1195).
    family : {"gaussian", "poisson"}
    alpha : float
    horizon : float, optional
        Periods after the intervention for the ratio row of ``effect`` (default: the last
        observed post-intervention period of the intervention series).

    Returns
    -------
    ITSResult
        ``table``, ``effect``, ``fitted``, ``relative_effect(h)``, ``summary()``.

    Raises
    ------
    DataValidationError
        Missing columns, no points before or after ``intervention_time``, repeated time
        points within a series, a constant outcome, a comparison series given but
        missing, terms that cannot be estimated.
    ParamsError
        Unknown family, bad ``lags``/``seasonal``/``horizon``.

    Examples
    --------
    >>> res = its(monthly, "er_visits", "month", intervention_time=25,
    ...           exposure="member_months", family="poisson", seasonal=True, horizon=12)
    >>> res.effect    # level, slope, ratio at 12 months, average ratio  # doctest: +SKIP
    >>> its_plot(res)                                                        # doctest: +SKIP

    References
    ----------
    Wagner et al. (2002); Bernal, Cummins & Gasparrini (2017), "Interrupted time series
    regression for the evaluation of public health interventions: a tutorial", *Int. J.
    Epidemiol.* 46:348-355; Linden (2015), "Conducting interrupted time-series analysis
    for single- and multiple-group comparisons", *Stata Journal* 15:480-500; Newey & West
    (1987, 1994); Driscoll & Kraay (1998).
    """
    what = f"its({family})"
    if family not in FAMILIES:
        raise ParamsError(f"its: family must be one of {list(FAMILIES)}, got {family!r}.")
    alpha = check_alpha(alpha, what)
    _check_name(outcome, "outcome", what)
    _check_name(time, "time", what)
    _check_name(exposure, "exposure", what, optional=True)
    _check_name(control, "control", what, optional=True)
    if intervention_time is None:
        raise ParamsError(f"{what}: intervention_time is required (first post-intervention "
                          "value of time).")
    if isinstance(seasonal, bool):
        period = 12 if seasonal else None
    elif isinstance(seasonal, (int, np.integer)) and seasonal >= 2:
        period = int(seasonal)
    else:
        raise ParamsError(f"{what}: seasonal must be True/False or a cycle length >= 2, got "
                          f"{seasonal!r}.")
    if isinstance(harmonics, bool) or not isinstance(harmonics, (int, np.integer)) or \
            harmonics < 0 or (period and harmonics and 2 * harmonics >= period):
        raise ParamsError(f"{what}: harmonics must be a whole number from 0 to "
                          f"{(period - 1) // 2 if period else 'period/2'} (sine/cosine pairs "
                          f"below the Nyquist frequency), got {harmonics!r}.")
    if harmonics and not period:
        raise ParamsError(f"{what}: harmonics={harmonics} needs seasonal=True (or a cycle "
                          "length).")
    cols = [outcome, time] + [c for c in (exposure, control) if c]
    frame, dropped = prepare_frame(data, [], list(dict.fromkeys(cols)), what)
    if exposure is not None:
        frame, dropped = _drop_bad_exposure(frame, exposure, dropped, what)
    y_raw = _numeric_outcome(frame, outcome, what)

    # --- time axis
    tcol = frame[time]
    dated = pd.api.types.is_datetime64_any_dtype(tcol) or not pd.api.types.is_numeric_dtype(tcol)
    if dated:
        try:
            t_abs = _month_number(tcol)
            it_abs = float(_month_number([intervention_time])[0])
        except (ValueError, TypeError):
            raise DataValidationError(
                f"{what}: time {time!r} must be numeric (month numbers) or dates, and "
                f"intervention_time ({intervention_time!r}) of the same kind.") from None
    else:
        t_abs = tcol.to_numpy(dtype=float)
        try:
            it_abs = float(intervention_time)
        except (TypeError, ValueError):
            raise ParamsError(f"{what}: intervention_time must be a number like the values "
                              f"of {time!r}, got {intervention_time!r}.") from None
    season_prefix = "month" if (dated and period == 12) else "season"
    if control is not None:
        g = 1 - _binary(frame[control], control, what)
        if g.all() or not g.any():
            which = "comparison (control = 1)" if g.all() else "intervention (control = 0)"
            raise DataValidationError(f"{what}: no {which} rows; comparative ITS needs both "
                                      "series.")
    else:
        g = np.ones(len(frame), dtype=int)
    key = pd.DataFrame({"g": g, "t": t_abs})
    dup = key.duplicated()
    if dup.any():
        raise DataValidationError(
            f"{what}: {int(dup.sum())} repeated time point(s) within a series (e.g. "
            f"{list(tcol[dup.to_numpy()][:3])}); aggregate to one row per time point"
            + (" and series." if control else " (or give control= for two series)."))
    t_first = float(t_abs.min())
    t_rel = t_abs - t_first
    t0 = it_abs - t_first
    order = np.lexsort((t_rel, g))             # by series, then time
    frame = frame.iloc[order]
    y_raw, t_rel, t_abs, g = y_raw[order], t_rel[order], t_abs[order], g[order]
    for lab, m in (("intervention", g == 1), ("comparison", g == 0)):
        if not m.any():
            continue
        n_before, n_after = int((t_rel[m] < t0).sum()), int((t_rel[m] >= t0).sum())
        if n_before == 0 or n_after == 0:
            side = "before" if n_before == 0 else "at or after"
            raise DataValidationError(
                f"{what}: the {lab} series has no time points {side} intervention_time "
                f"{intervention_time!r}; ITS needs data on both sides.")
        if min(n_before, n_after) < _FEW_ITS_POINTS:
            warnings.warn(
                f"{what}: the {lab} series has {n_before} points before and {n_after} after "
                f"the intervention; with fewer than {_FEW_ITS_POINTS} on a side level and "
                "slope changes are poorly determined (about 12 each is the usual advice).",
                StatisticalWarning, stacklevel=3)
        steps = np.diff(np.sort(t_rel[m]))
        if steps.size and not np.allclose(steps, steps.min()):
            warnings.warn(
                f"{what}: the {lab} series has gaps in time (steps {sorted(set(steps))[:5]}); "
                "Newey-West lags count rows, so fill missing periods if you can.",
                StatisticalWarning, stacklevel=3)

    # --- outcome on the analysis scale
    if exposure is not None:
        expo = frame[exposure].to_numpy(dtype=float)
    if family == "poisson":
        if (y_raw < 0).any():
            raise DataValidationError(f"{what}: outcome {outcome!r} has negative values; a "
                                      "Poisson model needs counts.")
        y = y_raw
        offset = np.log(expo) if exposure is not None else None
        scale_rows = 1000.0 / expo if exposure is not None else np.ones(len(y))
        scale = 1000.0 if exposure is not None else 1.0
        level = y * scale_rows
    else:
        y = 1000.0 * y_raw / expo if exposure is not None else y_raw
        offset = None
        scale_rows = np.ones(len(y))
        scale = 1.0
        level = y
    if np.ptp(level) == 0:
        raise DataValidationError(f"{what}: outcome {outcome!r} is constant ({level[0]:g}) "
                                  "over the whole series; there is no change to analyse.")

    # --- design
    season_codes = _season(t_abs, period, dated) if period else None
    season_levels = np.unique(season_codes) if period else None
    fit_info = _ITSFit(t0=t0, control=control is not None, season_levels=season_levels,
                       harmonics=int(harmonics), period=period,
                       family=family)
    X = fit_info.design(t_rel, g, False, season_codes)
    names = ["(Intercept)", "time", "level_change", "slope_change"]
    if control is not None:
        names += ["intervention", "intervention:time", "intervention:level_change",
                  "intervention:slope_change"]
    if period and harmonics:
        names += [f"{f}{j}" for j in range(1, harmonics + 1) for f in ("sin", "cos")]
    elif period:
        names += [f"{season_prefix}{s}" for s in season_levels[1:]]
    check_full_rank(X, names, what)

    t_codes, t_uniques = pd.factorize(t_rel, sort=True)
    n_times = len(t_uniques)
    if lags is None:
        lags = newey_west_lags(n_times)
        lag_rule = "floor(4*(T/100)^(2/9))"
    else:
        if isinstance(lags, bool) or not isinstance(lags, (int, np.integer)) or lags < 0:
            raise ParamsError(f"{what}: lags must be a non-negative integer, got {lags!r}.")
        lags = int(lags)
        lag_rule = "given"
    if lags >= n_times:
        raise ParamsError(f"{what}: lags ({lags}) must be smaller than the number of time "
                          f"points ({n_times}).")
    if control is None:
        cov_type, cov_kwds = "HAC", {"maxlags": lags, "use_correction": True}
        vc = f"Newey-West HAC, Bartlett kernel, {lags} lags, small-sample factor n/(n-k)"
    else:
        cov_type = "hac-groupsum"
        cov_kwds = {"time": t_codes, "maxlags": lags, "use_correction": "hac"}
        vc = (f"Driscoll-Kraay HAC (scores summed over series per time point), Bartlett "
              f"kernel, {lags} lags, small-sample factor n/(n-k)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family == "gaussian":
            res = sm.OLS(y, X).fit(cov_type=cov_type, cov_kwds=cov_kwds)
        else:
            model = sm.GLM(y, X, family=sm.families.Poisson(), offset=offset)
            res = model.fit(method="IRLS", atol=1e-10, rtol=1e-12, maxiter=100,
                            cov_type=cov_type, cov_kwds=cov_kwds)
    if family == "poisson" and not res.converged:
        raise ConvergenceError(f"{what}: the Poisson fit did not converge; check for months "
                               "with no events or extreme values.")
    b = np.asarray(res.params)
    V = np.asarray(res.cov_params())
    n, k = X.shape
    tdf = n - k if family == "gaussian" else None
    if tdf is not None and tdf <= 0:
        raise DataValidationError(f"{what}: {n} time points for {k} coefficients; use a "
                                  "longer series or fewer terms (seasonal=False).")
    se = np.sqrt(np.clip(np.diag(V), 0, None))
    table = wald_table(names, b, se, alpha, df=tdf)

    h_max = float(t_rel[g == 1].max() - t0)
    fit_info.__dict__.update(params=b, vcov=V, tdf=tdf, scale=scale, h_max=h_max)
    if horizon is None:
        horizon = h_max

    # --- effects
    q = (stats.norm if tdf is None else stats.t(tdf)).ppf(1 - alpha / 2)
    rows = []
    lvl, slp = (("intervention:level_change", "intervention:slope_change") if control
                else ("level_change", "slope_change"))
    labels = {lvl: "difference in level change (intervention - comparison)" if control
              else "level change", slp: "difference in slope change per period "
              "(intervention - comparison)" if control else "slope change per period"}
    for term in (lvl, slp):
        r = table.loc[table["term"] == term].iloc[0]
        if family == "poisson":
            e = np.exp(r["estimate"])
            rows.append({"quantity": labels[term], "scale": "rate_ratio", "estimate": e,
                         "std_error": e * r["std_error"], "ci_low": np.exp(r["ci_low"]),
                         "ci_high": np.exp(r["ci_high"]), "p_value": r["p_value"],
                         "percent_change": 100 * (e - 1)})
        else:
            rows.append({"quantity": labels[term], "scale": "difference",
                         "estimate": r["estimate"], "std_error": r["std_error"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                         "p_value": r["p_value"], "percent_change": np.nan})
    res_obj_kw = dict(family=family)
    # ratio at horizon
    tmp = ITSResult(table=table, method="", formula="", nobs=n, alpha=alpha, model=fit_info,
                    **res_obj_kw)
    with warnings.catch_warnings():
        if horizon <= h_max:
            warnings.simplefilter("ignore", StatisticalWarning)
        hz = tmp.relative_effect(horizon)
    hz_row = hz.iloc[0]
    rows.append({"quantity": f"ratio with/without intervention at {horizon:g} periods after",
                 "scale": "ratio", "estimate": hz_row["ratio"], "std_error": hz_row["std_error"],
                 "ci_low": hz_row["ci_low"], "ci_high": hz_row["ci_high"],
                 "p_value": hz_row["p_value"], "percent_change": hz_row["percent_change"]})
    # average ratio over the observed post period of the intervention series
    pm = (g == 1) & (t_rel >= t0)
    sc_post = season_codes[pm] if period else None
    X1 = fit_info.design(t_rel[pm], 1, False, sc_post)
    X0 = fit_info.design(t_rel[pm], 1, True, sc_post)
    if family == "poisson":
        off_p = offset[pm] if offset is not None else np.zeros(pm.sum())
        w1, w0 = np.exp(X1 @ b + off_p), np.exp(X0 @ b + off_p)
        a1, a0 = w1.sum(), w0.sum()
        grad = (X1.T @ w1) / a1 - (X0.T @ w0) / a0
    else:
        a1, a0 = (X1 @ b).sum(), (X0 @ b).sum()
        grad = X1.sum(0) / a1 - X0.sum(0) / a0 if (a1 > 0 and a0 > 0) else None
    if grad is not None:
        lr = np.log(a1 / a0)
        se_lr = float(np.sqrt(max(grad @ V @ grad, 0.0)))
        dist = stats.norm if tdf is None else stats.t(tdf)
        ratio = float(np.exp(lr))
        rows.append({"quantity": "average ratio with/without intervention over the "
                     "post-intervention period", "scale": "ratio", "estimate": ratio,
                     "std_error": ratio * se_lr, "ci_low": float(np.exp(lr - q * se_lr)),
                     "ci_high": float(np.exp(lr + q * se_lr)),
                     "p_value": float(2 * dist.sf(abs(lr) / se_lr)) if se_lr > 0 else np.nan,
                     "percent_change": 100 * (ratio - 1)})
    effect = pd.DataFrame(rows, columns=["quantity", "scale", "estimate", "std_error",
                                         "ci_low", "ci_high", "p_value", "percent_change"])

    # --- fitted and counterfactual values for plotting
    Xcf = fit_info.design(t_rel, g, True, season_codes)
    if family == "poisson":
        off_all = offset if offset is not None else np.zeros(n)
        fitted = np.exp(X @ b + off_all) * scale_rows
        cf = np.exp(Xcf @ b + off_all) * scale_rows
    else:
        fitted, cf = X @ b, Xcf @ b
    cf = np.where((g == 1) & (t_rel >= t0), cf, np.nan)
    fitted_df = pd.DataFrame({
        "series": np.where(g == 1, "intervention", "comparison"),
        "time": frame[time].to_numpy(), "post": t_rel >= t0,
        "observed": level, "fitted": fitted, "counterfactual": cf,
    })

    scale_txt = ("rate per 1,000 " + exposure if exposure and family == "gaussian" else outcome)
    if family == "gaussian":
        method = f"interrupted time series: segmented linear regression (OLS) of {scale_txt}; {vc}"
    else:
        method = ("interrupted time series: segmented Poisson regression (log link"
                  + (f", offset log({exposure})" if exposure else "") + f"); {vc}")
    rhs = "time + level_change + slope_change"
    if control:
        rhs += " + intervention * (time + level_change + slope_change)"
    if period and harmonics:
        rhs += f" + {harmonics} sine/cosine pair(s) of {season_prefix} (period {period})"
    elif period:
        rhs += f" + factor({season_prefix})"
    lhs = f"I(1000 * {outcome} / {exposure})" if exposure and family == "gaussian" else outcome
    if exposure and family == "poisson":
        rhs += f" + offset(log({exposure}))"
    extra = {"n_times": n_times, "lags": lags, "lag_rule": lag_rule,
             "scale_label": (f"{outcome} per 1,000 {exposure}" if exposure else outcome),
             "time_column": time,
             "intervention_time": intervention_time, "t0_relative": t0,
             "horizon": float(horizon), "df_residual": n - k}
    if family == "poisson":
        extra["deviance"] = float(res.deviance)
        extra["pearson_chi2"] = float(res.pearson_chi2)
        extra["dispersion_ratio"] = float(res.pearson_chi2) / (n - k)
    loglik = float(res.llf)
    return ITSResult(table=table, method=method, formula=f"{lhs} ~ {rhs}", nobs=n,
                     dropped=dropped, loglik=loglik, alpha=alpha, extra=extra, model=fit_info,
                     effect=effect, fitted=fitted_df, horizon=float(horizon), lags=lags,
                     family=family)


def its_plot(result: ITSResult, ax=None):
    """Observed points, fitted segments before and after the intervention, and the
    counterfactual (pre-intervention trend continued, dashed) for an :func:`its` fit.

    Returns the matplotlib ``ax``; a dotted vertical line marks the intervention.
    """
    import matplotlib.pyplot as plt

    fd = getattr(result, "fitted", None)
    if fd is None:
        raise ParamsError("its_plot: expects the result of its().")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4))
    colors = {"intervention": "#1b7837", "comparison": "#762a83"}
    for series, sub in fd.groupby("series", sort=False):
        col = colors.get(series, "0.3")
        ax.plot(sub["time"], sub["observed"], "o", color=col, ms=3.5, alpha=0.7,
                label=f"{series}: observed")
        for is_post in (False, True):
            seg = sub[sub["post"] == is_post]
            ax.plot(seg["time"], seg["fitted"], "-", color=col, lw=1.6,
                    label=f"{series}: fitted" if not is_post else None)
        cf = sub[sub["counterfactual"].notna()]
        if len(cf):
            ax.plot(cf["time"], cf["counterfactual"], "--", color=col, lw=1.3,
                    label="counterfactual (no intervention)")
    first_post = fd.loc[fd["post"], "time"].min()
    ax.axvline(first_post, color="0.4", ls=":", lw=1)
    ax.set_xlabel(result.extra.get("time_column", "time"))
    ax.set_ylabel(result.extra.get("scale_label", "outcome"))
    ax.legend(frameon=False, fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return ax
