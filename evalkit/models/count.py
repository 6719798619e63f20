"""Count models for utilization outcomes (ER visits, outpatient visits, inpatient days).

One entry point, :func:`count_model`, fits

* ``poisson``: Poisson GLM, log link (R: ``glm(family = poisson)``);
* ``negbin``: negative binomial NB2 with theta by maximum likelihood (R: ``MASS::glm.nb``);
* ``zip`` / ``zinb``: zero-inflated Poisson / NB2 with a logit inflation part
  (R: ``pscl::zeroinfl``);
* ``hurdle_poisson`` / ``hurdle_negbin``: logit hurdle for any use plus a zero-truncated
  Poisson / NB2 count part (R: ``pscl::hurdle(zero.dist = "binomial")``);

with member-months as exposure (log offset), model-based, HC0/HC1 or cluster-robust
standard errors, and a :meth:`CountResult.effect` that turns the fit into events per 1,000
member-months and a rate ratio.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special
from statsmodels.genmod import families

from evalkit.errors import (
    ConvergenceError, DataValidationError, ParamsError, StatisticalWarning,
)
from evalkit.limits import release_fits
from evalkit.models.base import ModelResult, wald_table
from evalkit.models.effects import (
    EffectResult, build_matrix, check_alpha, check_fitted_probabilities, check_full_rank,
    check_no_empty_cells, drop_bad_exposure, fit_glm, one_blas_thread, parse_vcov, prepare_frame,
    recycled_effect, sandwich, vcov_label,
)

__all__ = ["count_model", "CountResult", "FAMILIES"]

FAMILIES = ("poisson", "negbin", "zip", "zinb", "hurdle_poisson", "hurdle_negbin")
_TWO_PART = ("zip", "zinb", "hurdle_poisson", "hurdle_negbin")
#: Bounds of log theta in the hand-written NB2 fits. A fit ending beyond theta = 1e8
#: (within a factor 10 of the bound) shows no overdispersion (the Poisson limit); below
#: 1e-8 the zero-truncated NB2 is at its log-series limit. Either way theta is not
#: estimable, and further out the likelihood's curvature is lost to rounding (``theta**2``
#: times a difference of nearly equal terms), which made the outcome depend on the BLAS
#: kernel.
_TAU_MAX = float(np.log(1e9))
_TAU_MIN = float(np.log(1e-9))
_TAU_MARGIN = float(np.log(10.0))
#: Beyond theta = exp(15) a search that stalls has met a likelihood flat in theta (the
#: rule of the NB2 theta search, :func:`_theta_ml`): no overdispersion.
_TAU_FLAT = 15.0
#: Linear predictors are capped here before ``exp`` (a mean of 1e130 events is already
#: meaningless); the cap only keeps overflow out of trial points a line search rejects.
_ETA_MAX = 300.0

_METHODS = {
    "poisson": "Poisson GLM (log link)",
    "negbin": "negative binomial NB2 (log link, theta by ML as MASS::glm.nb)",
    "zip": "zero-inflated Poisson (logit inflation, as pscl::zeroinfl)",
    "zinb": "zero-inflated negative binomial NB2 (logit inflation, as pscl::zeroinfl)",
    "hurdle_poisson": "hurdle: logit for any use + zero-truncated Poisson (as pscl::hurdle)",
    "hurdle_negbin": "hurdle: logit for any use + zero-truncated NB2 (as pscl::hurdle)",
}


# =========================================================================== result
@dataclass(frozen=True)
class CountResult(ModelResult):
    """A fitted count model (a :class:`~evalkit.models.base.ModelResult`) that also knows
    its NB2 size parameter and how to turn itself into an average treatment effect."""

    @property
    def theta(self) -> float | None:
        """NB2 size parameter (``Var = mu + mu^2/theta``); ``None`` for Poisson models."""
        return self.extra.get("theta")

    @property
    def se_theta(self) -> float | None:
        """Standard error of theta (MASS's ``SE.theta``; for pscl models by the delta
        method from ``SE.logtheta``)."""
        return self.extra.get("se_theta")

    @one_blas_thread
    def effect(self, treatment: str = "treated", alpha: float = 0.05) -> EffectResult:
        """Average treatment effect by recycled predictions.

        Every row's expected count is predicted twice, once with ``treatment`` set to 1 and
        once set to 0, everything else as observed; the two predictions are averaged over
        the rows used in the fit.

        * With an exposure column: the per-row predicted *rate* ``mu_i / exposure_i`` is
          averaged; reported are ``rate_difference_per_1000_mm`` (difference of the two
          averaged rates times 1,000) and ``rate_ratio`` (their ratio).
        * Without exposure: ``difference`` (events per member) and ``ratio``.

        For ``poisson`` and ``negbin`` with the treatment as a main effect, the ratio of
        averaged rates equals ``exp(coef)`` exactly and its interval equals
        ``exp(coef +/- z * se)``. For zero-inflated and hurdle models the predicted mean
        combines both parts (``(1 - pi) * mu``; ``P(y > 0) * mu / (1 - P_count(0))``), so
        the ratio is the ratio of marginal means. Standard errors by the delta method
        with the fit's ``vcov`` (see :func:`evalkit.models.effects.recycled_effect`).

        Parameters
        ----------
        treatment : str
            A 0/1 (or True/False) column used in the formula.
        alpha : float
            1 - confidence level.

        Returns
        -------
        EffectResult

        Examples
        --------
        >>> fit = count_model(df, "er_visits ~ treated + age", exposure="member_months")
        >>> fit.effect("treated").to_frame()   # doctest: +SKIP
        """
        alpha = check_alpha(alpha, "effect")
        fit: _CountFit = self.model
        if fit.exposure is not None:
            s = 1000.0 / fit.frame[fit.exposure].to_numpy(dtype=float)
            scales = ("rate_difference_per_1000_mm", "rate_ratio")
        else:
            s = None
            scales = ("difference", "ratio")
        return recycled_effect(
            fit.mean_and_gradient, fit.frame, treatment, fit.vcov, alpha, scales[0], scales[1],
            row_scale=s, method=f"recycled predictions from {self.method}",
            vcov_label=fit.vcov_label, what="effect",
        )


# =========================================================================== internals
#: Model matrices built in this process (:func:`_matrix`), the most recent last.
_MATRICES: OrderedDict = OrderedDict()
#: At most this many bytes of them are kept, and only for frames of at most
#: ``_MATRIX_ROWS`` rows (larger ones are built each time: the memory is worth more).
_MATRIX_BYTES = 64 * 2**20
_MATRIX_ROWS = 200_000


def _fingerprint(frame: pd.DataFrame) -> bytes:
    """A digest of ``frame``'s column names, types and values (not its index)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((list(frame.columns), [repr(t) for t in frame.dtypes], frame.shape)).encode())
    for name in frame.columns:
        col = frame[name]
        values = col.to_numpy()
        if values.dtype.kind in "biuf":
            h.update(np.ascontiguousarray(values).view(np.uint8))
        else:
            h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().view(np.uint8))
    return h.digest()


def _matrix(formula_or_spec, frame: pd.DataFrame, what: str = "model"):
    """:func:`evalkit.models.effects.build_matrix`, reusing the matrices of an earlier call
    with the same formula (or the same ``MatrixSpec``) on a frame of the same values.

    Choosing a count family fits up to six models of one formula on one frame, and
    each effect rebuilds the counterfactual matrices; patsy's build is the larger part of
    such a fit at 20,000 rows. The result is the same arrays (copies: callers may change
    them)."""
    if len(frame) > _MATRIX_ROWS:
        return build_matrix(formula_or_spec, frame, what)
    key = (formula_or_spec if isinstance(formula_or_spec, str) else id(formula_or_spec),
           _fingerprint(frame))
    if key not in _MATRICES:
        built = build_matrix(formula_or_spec, frame, what)
        size = sum(a.nbytes for a in built[:2] if a is not None)
        if size > _MATRIX_BYTES:
            return built
        _MATRICES[key] = (built, size)         # the spec in it keeps its id from being reused
        while sum(v[1] for v in _MATRICES.values()) > _MATRIX_BYTES:
            _MATRICES.popitem(last=False)
    _MATRICES.move_to_end(key)
    y, X, names, spec = _MATRICES[key][0]
    return (None if y is None else y.copy(), X.copy(), None if names is None else list(names),
            spec)


@dataclass
class _CountFit:
    """What :meth:`CountResult.effect` needs to predict on counterfactual data."""

    family: str
    frame: pd.DataFrame
    count_info: object
    zero_info: object
    exposure: str | None
    params: np.ndarray          # [count coefs, zero coefs, log theta] (parts as present)
    vcov: np.ndarray            # covariance of params (the chosen vcov)
    kx: int
    kz: int
    vcov_label: str

    def _offset(self, frame):
        if self.exposure is None:
            return 0.0
        return np.log(frame[self.exposure].to_numpy(dtype=float))

    def mean_and_gradient(self, frame, s):
        """Average of ``s * E[y | x]`` over ``frame`` and its gradient in ``params``."""
        _, X, _, _ = _matrix(self.count_info, frame)
        n = X.shape[0]
        b = self.params[: self.kx]
        eta = X @ b + self._offset(frame)
        mu = np.exp(eta)
        fam = self.family
        if fam in ("poisson", "negbin"):
            m = mu
            A = np.mean(s * m)
            return A, X.T @ (s * m) / n
        _, Z, _, _ = _matrix(self.zero_info, frame)
        g = self.params[self.kx: self.kx + self.kz]
        zeta = Z @ g
        tau = self.params[-1] if fam in ("zinb", "hurdle_negbin") else None
        dist = "negbin" if tau is not None else "poisson"
        if fam in ("zip", "zinb"):
            pi = special.expit(zeta)
            m = (1 - pi) * mu
            dm_e, dm_z, dm_t = m, -pi * m, np.zeros(n)
        else:
            c = _zero_terms(eta, tau, dist, order=1)
            p_pos = special.expit(zeta)
            r = 1.0 / np.expm1(-c["h"])                   # P0 / (1 - P0)
            m = p_pos * mu * (1.0 + r)                     # mu / (1 - P0) = mu * (1 + r)
            dm_e = m * (1.0 + r * c["h_e"])
            dm_z = m * (1.0 - p_pos)
            dm_t = m * r * c["h_t"] if tau is not None else np.zeros(n)
        A = np.mean(s * m)
        grad = [X.T @ (s * dm_e) / n, Z.T @ (s * dm_z) / n]
        if tau is not None:
            grad.append(np.array([np.mean(s * dm_t)]))
        return A, np.concatenate(grad)


def _split_bar(formula: str):
    """Split R's ``y ~ count_rhs | zero_rhs`` at a top-level ``|``."""
    depth = 0
    for i, ch in enumerate(formula):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            return formula[:i].strip(), formula[i + 1:].strip()
    return formula, None


def _zero_rhs(zero_formula: str | None, count_formula: str) -> str:
    if zero_formula is None:
        return "~ " + count_formula.split("~", 1)[1].strip()
    if not isinstance(zero_formula, str):
        raise ParamsError(f"zero_formula must be a string like '~ age + female', got {zero_formula!r}.")
    zf = zero_formula.strip()
    if "~" in zf:
        lhs, rhs = zf.split("~", 1)
        if lhs.strip():
            raise ParamsError(
                f"zero_formula {zero_formula!r} must not have an outcome; write '~ {rhs.strip()}'."
            )
        return "~ " + rhs.strip()
    return "~ " + zf


def _check_counts(y: np.ndarray, what: str, outcome: str) -> None:
    bad = ~np.isfinite(y) | (y < 0) | (y != np.round(y))
    if bad.any():
        examples = pd.unique(y[bad])[:5].tolist()
        raise DataValidationError(
            f"{what}: outcome {outcome!r} must hold non-negative whole numbers (counts); "
            f"{int(bad.sum())} rows do not, e.g. {examples}. For costs use two_part().",
            failures=[{"table": "data", "column": outcome, "reason": "not_a_count",
                       "count": int(bad.sum()), "examples": examples}],
        )


# --------------------------------------------------------------------------- NB2 theta
#: Largest count for which the gamma-function differences are summed term by term.
_SUM_LIMIT = 2000


def gamma_differences(values, th, order: int = 2) -> list:
    """``lgamma(v + th) - lgamma(th)``, ``psi(v + th) - psi(th)`` and
    ``psi'(v + th) - psi'(th)`` (up to ``order``) for whole counts ``values``.

    For counts up to :data:`_SUM_LIMIT` they are the finite sums ``sum_{k<v} log(th + k)``,
    ``sum 1/(th + k)`` and ``-sum 1/(th + k)^2`` (the recurrences of the gamma and
    polygamma functions), with ``log(th + k) = log th + log1p(k / th)``. Subtracting the
    special functions instead loses about ``log10(th)`` digits (at theta = 1e7, seven), which
    leaves the NB2 likelihood too noisy in theta for Newton's method and makes where a fit
    stops depend on the BLAS kernel's rounding.

    Parameters
    ----------
    values : (m,) array of whole numbers, ascending
    th : float or (b,) array (one theta per replicate)

    Returns
    -------
    list of (m,) arrays, or (m, b) arrays for an array ``th``.
    """
    values = np.asarray(values, dtype=float)
    th = np.asarray(th, dtype=float)
    top = int(values.max()) if values.size else 0
    if top > _SUM_LIMIT:
        v = values.reshape(values.shape + (1,) * th.ndim) + th
        out = [special.gammaln(v) - special.gammaln(th)]
        if order >= 1:
            out.append(special.digamma(v) - special.digamma(th))
        if order >= 2:
            out.append(special.polygamma(1, v) - special.polygamma(1, th))
        return out
    idx = values.astype(np.int64)
    k = np.arange(top, dtype=float).reshape((-1,) + (1,) * th.ndim)
    zero = np.zeros((1,) + th.shape)

    def total(terms):                                   # sum over k < v, for each v
        return np.concatenate([zero, np.cumsum(terms, axis=0)])[idx]

    out = [idx.reshape(idx.shape + (1,) * th.ndim) * np.log(th) + total(np.log1p(k / th))]
    if order >= 1:
        inv = 1.0 / (th + k)
        out.append(total(inv))
        if order >= 2:
            out.append(-total(inv * inv))
    return out


class _Counts:
    """A count outcome plus what the NB2 formulas reuse.

    Functions of ``y + theta`` (lgamma, digamma, trigamma) are evaluated once per distinct
    count and spread to the rows: counts take few distinct values, and these special
    functions dominate the cost of a fit at a million rows.
    """

    def __init__(self, y):
        self.y = np.asarray(y, dtype=float)
        self.values, self.index = np.unique(self.y, return_inverse=True)
        self.lfact = special.gammaln(self.values + 1)[self.index]      # lgamma(y + 1)

    def __len__(self):
        return len(self.y)

    def subset(self, mask):
        return _Counts(self.y[mask])

    def gamma_terms(self, th, order):
        """``[lgamma(y+th) - lgamma(th), digamma(..) - digamma(th), trigamma(..) - trigamma(th)]``
        up to ``order``."""
        return [g[self.index] for g in gamma_differences(self.values, th, order)]


def _nb_loglik(cnt: _Counts, mu, theta):
    """NB2 log-likelihood (MASS's ``loglik``; includes ``-lgamma(y + 1)``)."""
    y = cnt.y
    (lg,) = cnt.gamma_terms(theta, 0)
    return float(np.sum(lg - cnt.lfact + theta * np.log(theta) + y * np.log(mu + (y == 0))
                        - (theta + y) * np.log(theta + mu)))


def _theta_score_info(cnt: _Counts, mu, th):
    """Score and observed information of theta at fixed mu (MASS ``theta.ml``)."""
    y = cnt.y
    _, dg, tg = cnt.gamma_terms(th, 2)
    a = th + mu
    # log(th) - log(th + mu) + 1 - (y + th)/a and 1/th - 2/a + (y + th)/a^2, written
    # without the differences of nearly equal terms they are at large theta
    score = np.sum(dg - np.log1p(mu / th) + (mu - y) / a)
    info = np.sum(-tg - (mu * mu + th * y) / (th * a * a))
    return float(score), float(info)


def _theta_ml(cnt: _Counts, mu, start=None, what="negbin"):
    """ML estimate of the NB2 size theta given the means, and its SE as MASS reports it.

    MASS's ``theta.ml`` runs Newton-Raphson on theta from the moment estimate
    ``n / sum((y/mu - 1)^2)``; here the same score and information drive Newton steps on
    log(theta) (which keeps theta positive) until a step is below 1e-10 or the score is at
    rounding level (MASS stops at steps below 1.2e-4; a stop tighter than rounding noise
    in the score never comes where the likelihood is flat in theta).
    Beyond theta = exp(15) where the likelihood is no longer concave in theta, or beyond
    exp(30), theta grows without bound: the counts show no overdispersion.
    """
    y = cnt.y
    if start is None:
        start = len(y) / np.sum((y / mu - 1.0) ** 2)
        if not np.isfinite(start) or start <= 0:
            start = 1.0
    tau = float(np.log(start))
    for _ in range(200):
        th = np.exp(tau)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            score, info = _theta_score_info(cnt, mu, th)
        if not (np.isfinite(score) and np.isfinite(info)):
            raise ConvergenceError(f"{what}: the likelihood of theta is not finite at theta = "
                                   f"{th:.3g} (fitted means overflow or underflow); try "
                                   "family='poisson' or check the outcome.")
        s_tau = th * score
        d_tau = th * score - th * th * info       # d(s_tau)/d(tau)
        if d_tau < 0:
            step = -s_tau / d_tau
        else:                                     # not concave here: move uphill
            step = np.sign(s_tau)
        step = float(np.clip(step, -3.0, 3.0))
        tau += step
        if tau < _TAU_MIN:
            raise _theta_bound_error(what, tau)
        if tau > 30 or (tau > 15 and d_tau >= 0):
            raise ConvergenceError(
                f"{what}: theta grows without bound (theta > {np.exp(min(tau, 30)):.0e}, "
                "the likelihood is flat in theta): the counts show no overdispersion. "
                "Fit family='poisson' instead."
            )
        # converged: a Newton step this small leaves only rounding, or the score is at
        # rounding level (where the likelihood is very flat in theta the step is not)
        if abs(step) < 1e-10 or abs(score) < 1e-12 * len(y):
            break
    else:
        raise ConvergenceError(f"{what}: the ML search for theta did not converge; "
                               "try family='poisson' or check the outcome.")
    th = float(np.exp(tau))
    _, info = _theta_score_info(cnt, mu, th)
    se = float(np.sqrt(1.0 / info)) if info > 0 else np.nan
    return th, se


def _fit_negbin(y, X, offset, what):
    """MASS::glm.nb: alternate IRLS for beta at fixed theta and ML for theta."""
    cnt = _Counts(y)
    pois = fit_glm(y, X, families.Poisson(), offset=offset, what=what, rtol=1e-8)
    beta, mu = pois.params, pois.fittedvalues
    theta, _ = _theta_ml(cnt, mu, what=what)
    L = _nb_loglik(cnt, mu, theta)
    d1 = np.sqrt(2 * max(1, len(y) - X.shape[1]))
    for it in range(1, 101):
        res = fit_glm(y, X, families.NegativeBinomial(alpha=1.0 / theta), offset=offset,
                   start=beta, what=what)
        beta_old = beta
        beta, mu = res.params, res.fittedvalues
        theta_old, L_old = theta, L
        theta, se_theta = _theta_ml(cnt, mu, start=theta, what=what)
        L = _nb_loglik(cnt, mu, theta)
        # MASS's criterion |dL|/sqrt(2 df) + |d theta|, with theta's change made relative;
        # or, where the likelihood is so flat in theta that theta is known only to rounding
        # noise, the likelihood and the coefficients no longer move
        if abs(L - L_old) / d1 + abs(theta - theta_old) / theta < 1e-11 or (
                abs(L - L_old) / d1 < 1e-12
                and np.max(np.abs(np.asarray(beta) - np.asarray(beta_old))) < 1e-10):
            break
    else:
        raise ConvergenceError(f"{what}: beta/theta alternation did not converge in 100 rounds.")
    w = mu / (1.0 + mu / theta)                         # IRLS weights at the final theta
    bread = np.linalg.inv(X.T @ (w[:, None] * X))
    scores = X * ((y - mu) / (1.0 + mu / theta))[:, None]
    return dict(params=np.asarray(beta), vcov=bread, scores=scores, loglik=L,
                extra=dict(theta=theta, se_theta=se_theta, alpha_nb=1.0 / theta,
                           iterations=it, df_residual=len(y) - X.shape[1]))


# --------------------------------------------------------------------------- mixtures
def _zero_terms(eta, tau, dist, order=2):
    """``h = log P(y = 0)`` of the count distribution and its derivatives in eta (``_e``)
    and log theta (``_t``), up to ``order``."""
    mu = np.exp(np.minimum(eta, _ETA_MAX))
    if dist == "poisson":
        out = dict(h=-mu)
        if order >= 1:
            out["h_e"] = -mu
        if order >= 2:
            out["h_ee"] = -mu
        return out
    th = np.exp(tau)
    a = th + mu
    out = dict(h=-th * np.logaddexp(0.0, eta - tau))        # th (tau - log a), in log space
    if order >= 1:
        h_th = mu / a - np.log1p(mu / th)
        out.update(h_e=-th * mu / a, h_t=th * h_th)
        if order >= 2:
            h_thth = mu * mu / (th * a * a)                   # 1/th - 1/a - mu/a^2
            out.update(h_ee=-th * th * mu / a ** 2, h_tt=th * th * h_thth + th * h_th,
                       h_et=-th * mu * mu / a ** 2)
    return out


def _pmf_terms(cnt: _Counts, eta, tau, dist, order=2):
    """Log pmf ``l`` of the count distribution and its derivatives in eta (``_e``) and
    log theta (``_t``), up to ``order``.

    NB2 with ``th = exp(tau)``, ``mu = exp(eta)``, ``a = th + mu``::

        l    = lgamma(y+th) - lgamma(th) - lgamma(y+1) + th tau + y eta - (th+y) log a
        l_e  = th (y - mu) / a                 l_ee = -th mu (y + th) / a^2
        l_t  = th [psi(y+th) - psi(th) + tau + 1 - log a - (y+th)/a]
        l_et = th (y - mu) mu / a^2            l_tt = th^2 l_thth + l_t

    and ``h = log P(0) = th (tau - log a)``, ``h_e = -th mu / a`` (see :func:`_zero_terms`).
    """
    y = cnt.y
    mu = np.exp(np.minimum(eta, _ETA_MAX))
    if dist == "poisson":
        out = dict(l=y * eta - mu - cnt.lfact)
        if order >= 1:
            out["l_e"] = y - mu
        if order >= 2:
            out["l_ee"] = -mu
        return out
    th = np.exp(tau)
    l1p = np.logaddexp(0.0, eta - tau)                  # log(1 + mu/theta) = log a - tau
    a = th + mu
    g = cnt.gamma_terms(th, order)
    # th tau - (th + y) log a, without subtracting the large th tau and th log a
    out = dict(l=g[0] - cnt.lfact + y * (eta - tau - l1p) - th * l1p)
    if order >= 1:
        l_th = g[1] - l1p + (mu - y) / a                # tau + 1 - log a - (y+th)/a
        out.update(l_e=th * (y - mu) / a, l_t=th * l_th)
        if order >= 2:
            l_thth = g[2] + (mu * mu + th * y) / (th * a * a)   # 1/th - 2/a + (y+th)/a^2
            out.update(l_ee=-th * mu * (y + th) / a ** 2, l_tt=th * th * l_thth + th * l_th,
                       l_et=th * (y - mu) * mu / a ** 2)
    return out


class _Mixture:
    """Log-likelihood, score and Hessian of the zero-inflated model (``kind="zi"``) or of
    the zero-truncated count part of a hurdle model (``kind="truncated"``).

    Written by hand because statsmodels' ZeroInflatedNegativeBinomialP computes its
    Hessian by numerical differentiation (seconds at 20k rows, approximate), and its
    HurdleCountModel uses a censored count model, not a logit, for the zero part. With
    the analytic derivatives below a Newton fit is fast and exact.

    Parameters are ``[beta (count), gamma (zero, zi only), log theta (negbin only)]``.
    Rows are handled in segments (zero counts, positive counts), each with its designs
    ``D_k`` (k = e: count, z: zero part, t: log theta) and per-row derivatives ``d_k``,
    ``d_kl`` of the row log-likelihood; the score is ``sum D_k' d_k`` and the Hessian
    block ``sum D_k' diag(d_kl) D_l`` over segments.

    Zero-inflated, with ``pi = expit(zeta)`` and ``q = P(structural zero | y = 0) =
    expit(zeta - h)``::

        y = 0:  L = log(e^zeta + e^h) - log(1 + e^zeta)
                L_z = q - pi,  L_e = (1-q) h_e,  L_ee = (1-q) h_ee + q(1-q) h_e^2,
                L_zz = q(1-q) - pi(1-pi),  L_ez = -q(1-q) h_e   (likewise for tau)
        y > 0:  L = l - log(1 + e^zeta),  L_z = -pi,  L_zz = -pi(1-pi),  L_e = l_e, ...

    Zero-truncated, ``r = P0 / (1 - P0)``: ``L = l - log(1 - e^h)``,
    ``L_e = l_e + r h_e``, ``L_ee = l_ee + r h_ee + r (1 + r) h_e^2`` (likewise for tau).
    """

    def __init__(self, kind, dist, y, X, offset, Z=None):
        self.kind, self.dist = kind, dist
        cnt = y if isinstance(y, _Counts) else _Counts(y)
        self.y = cnt.y
        self.n = len(self.y)
        self.kx = X.shape[1]
        self.kz = Z.shape[1] if Z is not None else 0
        self.has_theta = dist == "negbin"
        offset = np.broadcast_to(np.asarray(offset, dtype=float), (self.n,))
        if kind == "zi":
            zero = self.y == 0
            self.segments = [
                dict(name="zero", rows=np.flatnonzero(zero), X=X[zero], Z=Z[zero],
                     off=offset[zero]),
                dict(name="pos", rows=np.flatnonzero(~zero), X=X[~zero], Z=Z[~zero],
                     off=offset[~zero], cnt=cnt.subset(~zero)),
            ]
        else:
            self.segments = [dict(name="trunc", rows=np.arange(self.n), X=X, Z=None,
                                  off=offset, cnt=cnt)]
        self._cache_key, self._cache_order, self._cache = None, -1, None

    def split(self, p):
        b = p[: self.kx]
        g = p[self.kx: self.kx + self.kz]
        tau = p[-1] if self.has_theta else None
        return b, g, tau

    def _segment_terms(self, seg, b, g, tau, order):
        nb = self.has_theta
        eta = seg["X"] @ b + seg["off"]
        d, dd = {}, {}
        if seg["name"] == "zero":
            zeta = seg["Z"] @ g
            c = _zero_terms(eta, tau, self.dist, order)
            h = c["h"]
            L = np.logaddexp(zeta, h) - np.logaddexp(0.0, zeta)
            if order >= 1:
                pi = special.expit(zeta)
                q = special.expit(zeta - h)
                d["e"] = (1 - q) * c["h_e"]
                d["z"] = q - pi
                if nb:
                    d["t"] = (1 - q) * c["h_t"]
            if order >= 2:
                qq = q * (1 - q)
                dd[("e", "e")] = (1 - q) * c["h_ee"] + qq * c["h_e"] ** 2
                dd[("z", "z")] = qq - pi * (1 - pi)
                dd[("e", "z")] = -qq * c["h_e"]
                if nb:
                    dd[("t", "t")] = (1 - q) * c["h_tt"] + qq * c["h_t"] ** 2
                    dd[("e", "t")] = (1 - q) * c["h_et"] + qq * c["h_e"] * c["h_t"]
                    dd[("z", "t")] = -qq * c["h_t"]
        elif seg["name"] == "pos":
            zeta = seg["Z"] @ g
            c = _pmf_terms(seg["cnt"], eta, tau, self.dist, order)
            L = c["l"] - np.logaddexp(0.0, zeta)
            if order >= 1:
                pi = special.expit(zeta)
                d["e"] = c["l_e"]
                d["z"] = -pi
                if nb:
                    d["t"] = c["l_t"]
            if order >= 2:
                dd[("e", "e")] = c["l_ee"]
                dd[("z", "z")] = -pi * (1 - pi)
                if nb:
                    dd[("t", "t")] = c["l_tt"]
                    dd[("e", "t")] = c["l_et"]
        else:                                                  # zero-truncated count part
            c = _pmf_terms(seg["cnt"], eta, tau, self.dist, order)
            c.update(_zero_terms(eta, tau, self.dist, order))
            L = c["l"] - np.log(-np.expm1(c["h"]))
            if order >= 1:
                r = 1.0 / np.expm1(-c["h"])                    # P0 / (1 - P0)
                d["e"] = c["l_e"] + r * c["h_e"]
                if nb:
                    d["t"] = c["l_t"] + r * c["h_t"]
            if order >= 2:
                rr = r * (1 + r)
                dd[("e", "e")] = c["l_ee"] + r * c["h_ee"] + rr * c["h_e"] ** 2
                if nb:
                    dd[("t", "t")] = c["l_tt"] + r * c["h_tt"] + rr * c["h_t"] ** 2
                    dd[("e", "t")] = c["l_et"] + r * c["h_et"] + rr * c["h_e"] * c["h_t"]
        return L, d, dd

    def terms(self, p, order=2):
        key = p.tobytes()
        if key == self._cache_key and order <= self._cache_order:
            return self._cache
        b, g, tau = self.split(p)
        out = [self._segment_terms(seg, b, g, tau, order) for seg in self.segments]
        self._cache_key, self._cache_order, self._cache = key, order, out
        return out

    def _blocks(self, seg):
        blocks = [("e", seg["X"])]
        if self.kind == "zi":
            blocks.append(("z", seg["Z"]))
        if self.has_theta:
            blocks.append(("t", None))
        return blocks

    def loglik(self, p):
        return float(sum(np.sum(L) for L, _, _ in self.terms(p, 0)))

    def score_obs(self, p):
        P = self.kx + self.kz + int(self.has_theta)
        S = np.zeros((self.n, P))
        for seg, (_, d, _) in zip(self.segments, self.terms(p, 1)):
            cols = [D * d[k][:, None] if D is not None else d[k][:, None]
                    for k, D in self._blocks(seg)]
            S[seg["rows"]] = np.hstack(cols)
        return S

    def score(self, p):
        total = 0.0
        for seg, (_, d, _) in zip(self.segments, self.terms(p, 1)):
            total = total + np.concatenate([D.T @ d[k] if D is not None else np.array([d[k].sum()])
                                            for k, D in self._blocks(seg)])
        return total

    def hessian(self, p):
        P = self.kx + self.kz + int(self.has_theta)
        H = np.zeros((P, P))
        for seg, (_, _, dd) in zip(self.segments, self.terms(p, 2)):
            blocks = self._blocks(seg)
            sizes = [D.shape[1] if D is not None else 1 for _, D in blocks]
            starts = np.cumsum([0] + sizes)
            for i, (ki, Di) in enumerate(blocks):
                for j in range(i, len(blocks)):
                    kj, Dj = blocks[j]
                    w = dd.get((ki, kj), dd.get((kj, ki)))
                    if w is None:                               # zero in this segment
                        continue
                    if Di is None and Dj is None:
                        block = np.array([[w.sum()]])
                    elif Dj is None:
                        block = (Di.T @ w)[:, None]
                    else:
                        block = Di.T @ (w[:, None] * Dj)
                    H[starts[i]:starts[i + 1], starts[j]:starts[j + 1]] += block
                    if j != i:
                        H[starts[j]:starts[j + 1], starts[i]:starts[i + 1]] += block.T
        return H


class _OutOfBounds(Exception):
    """Log theta left [_TAU_MIN, _TAU_MAX], or the curvature is not finite."""


def _theta_bound_error(what: str, tau: float) -> ConvergenceError:
    if tau > 0:
        return ConvergenceError(
            f"{what}: theta grows without bound (theta = {np.exp(tau):.2g}; beyond "
            f"{np.exp(_TAU_FLAT):.0e} the likelihood is flat in theta): the counts show no "
            "overdispersion beyond the zeros. Fit the Poisson version (zip / hurdle_poisson) "
            "instead.")
    return ConvergenceError(
        f"{what}: theta shrinks towards 0 (theta < {np.exp(_TAU_MIN + _TAU_MARGIN):.0e}): the positive "
        "counts are more dispersed than any negative binomial with these means (its "
        "log-series limit); theta is not estimable. Use another family.")


def _maximize(lik: _Mixture, start: np.ndarray, what: str):
    """Maximise a hand-written likelihood by Newton's method with the exact Hessian.

    Newton steps with backtracking while the Hessian is negative definite (the usual case
    from the starting values); otherwise scipy's trust-region Newton (``trust-exact``)
    takes over. Stops after a full Newton step taken from a Newton decrement
    ``g' (-H)^-1 g`` below 1e-12 (the remaining error is then far below 1e-6 standard
    errors).

    Log theta is kept in ``[_TAU_MIN, _TAU_MAX]``: a trial point outside counts as an
    infinitely bad one (the line search backtracks), and a fit that ends at a bound, or
    whose score or Hessian is not finite at an accepted point, is a ConvergenceError
    with the reason. Nothing that is not finite reaches scipy.
    """
    n = lik.n

    def inside(q):
        return not lik.has_theta or _TAU_MIN < q[-1] < _TAU_MAX

    def loglik(q):
        if not inside(q):
            return -np.inf
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = lik.loglik(q)
        return value if np.isfinite(value) else -np.inf

    def derivatives(q):
        """Score and Hessian at an accepted point; _OutOfBounds when not finite."""
        if not inside(q):
            raise _OutOfBounds
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            g, H = lik.score(q), lik.hessian(q)
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(H))):
            raise _OutOfBounds
        return g, H

    def scaled(q):
        """Score and Hessian over n for scipy. At a trial point whose likelihood is -inf
        (outside the bounds), which the trust region rejects whatever its derivatives,
        scipy still builds a model: it gets zeros and minus the identity, never inf."""
        if not np.isfinite(loglik(q)):
            return np.zeros(len(q)), -np.eye(len(q))
        g, H = derivatives(q)
        return g / n, H / n

    def stopped(q) -> ConvergenceError:
        if lik.has_theta and not (_TAU_MIN + _TAU_MARGIN < q[-1] < _TAU_MAX - _TAU_MARGIN):
            return _theta_bound_error(what, q[-1])
        return ConvergenceError(
            f"{what}: the likelihood's score or curvature is not finite at the current "
            "estimates (fitted means overflow or underflow); the model does not fit these "
            "data. Try rescaling covariates or a simpler family.")

    p = np.asarray(start, dtype=float).copy()
    if not inside(p):
        p[-1] = np.clip(p[-1], _TAU_MIN + _TAU_MARGIN, _TAU_MAX - _TAU_MARGIN)
    L = loglik(p)
    if not np.isfinite(L):
        raise stopped(p)
    message = "Newton"
    converged = False
    for _ in range(200):
        try:
            g, H = derivatives(p)
        except _OutOfBounds:
            raise stopped(p) from None
        try:
            chol = np.linalg.cholesky(-H)
            step = np.linalg.solve(chol.T, np.linalg.solve(chol, g))
        except np.linalg.LinAlgError:
            step = None
        if step is None or not np.all(np.isfinite(step)):
            try:
                res = optimize.minimize(
                    lambda q: -loglik(q) / n, p, jac=lambda q: -scaled(q)[0],
                    hess=lambda q: -scaled(q)[1], method="trust-exact",
                    options={"gtol": 1e-9, "maxiter": 500},
                )
            except _OutOfBounds:
                raise stopped(p) from None
            except (ValueError, np.linalg.LinAlgError) as err:   # scipy's own checks
                raise ConvergenceError(f"{what}: the trust-region search failed ({err}). Try "
                                       "rescaling covariates or a simpler family.") from None
            message = f"trust-exact: {res.message}"
            if np.allclose(res.x, p, rtol=0, atol=0) or not np.isfinite(loglik(res.x)):
                break
            p, L = res.x, loglik(res.x)
            continue
        decrement = float(g @ step)          # Newton decrement: 2 x predicted loglik gain
        t = 1.0
        while True:
            p_new = p + t * step
            L_new = loglik(p_new)
            if np.isfinite(L_new) and L_new >= L - 1e-12 * abs(L):
                break
            t /= 2
            if t < 1e-10:
                break
        if t < 1e-10:
            break
        p, L = p_new, L_new
        # A full step from a decrement below 1e-12 leaves an error of ~1e-12 standard
        # errors (quadratic convergence); an error of 1e-6 SE is all the decrement says.
        if decrement < 1e-12 and t == 1.0:
            converged = True
            break
    if lik.has_theta and not (_TAU_MIN + _TAU_MARGIN < p[-1] < _TAU_MAX - _TAU_MARGIN):
        raise _theta_bound_error(what, p[-1])
    if lik.has_theta and not converged and p[-1] > _TAU_FLAT:
        raise _theta_bound_error(what, p[-1])
    try:
        g, H = derivatives(p)
    except _OutOfBounds:
        raise stopped(p) from None
    try:
        decrement = float(g @ np.linalg.solve(-H, g))   # Newton decrement (loglik units)
        eig_max = float(np.max(np.linalg.eigvalsh(H)))
    except np.linalg.LinAlgError:
        decrement, eig_max = np.inf, np.inf
    if not converged and (not np.isfinite(decrement) or decrement > 1e-8 or eig_max >= 0):
        raise ConvergenceError(
            f"{what}: the maximum likelihood fit did not converge ({message}; converged="
            f"{converged}). Try rescaling covariates (dollars in thousands), fewer terms in "
            "the zero part, or a simpler family (negbin / hurdle)."
        )
    return p, H


# --------------------------------------------------------------------------- fits
#: A coefficient SE (log scale) above this means the data do not identify it (a
#: coefficient running off: separation, no excess zeros).
MAX_SE = 20.0

# Each returns params, the model-based covariance ("vcov", also the sandwich's bread),
# per-row scores, the log-likelihood and facts for ``extra``.

def _fit_poisson(y, X, offset, what):
    res = fit_glm(y, X, families.Poisson(), offset=offset, what=what)
    mu = res.fittedvalues
    pearson = float(np.sum((y - mu) ** 2 / mu))
    df = len(y) - X.shape[1]
    return dict(params=res.params, vcov=res.bread, scores=X * (y - mu)[:, None],
                loglik=res.llf,
                extra=dict(deviance=res.deviance, pearson_chi2=pearson, df_residual=df,
                           dispersion_ratio=pearson / df))


def _fit_zero_inflated(y, X, Z, offset, dist, what):
    kx, kz = X.shape[1], Z.shape[1]
    zero = y == 0
    # starting values as pscl: separate Poisson and binomial GLMs, theta = 1
    pois = fit_glm(y, X, families.Poisson(), offset=offset, what=what, rtol=1e-6)
    binom = fit_glm(zero.astype(float), Z, families.Binomial(), what=what, rtol=1e-6)
    start = np.concatenate([pois.params, binom.params] + ([[0.0]] if dist == "negbin" else []))
    lik = _Mixture("zi", dist, y, X, offset, Z)
    params, H = _maximize(lik, start, what)
    V = np.linalg.inv(-H)
    eta = Z @ params[kx:kx + kz]
    pi_max = float(special.expit(eta.max()))
    certain = int(np.count_nonzero((special.expit(-eta) < 1e-6) & zero))
    # rows at pi = 1 are separation only when a zero-part coefficient has run off (an
    # extreme value of a well-estimated continuous term also gives pi near 1)
    runaway = np.sqrt(np.abs(np.diag(V)[kx:kx + kz])).max() > MAX_SE
    if certain and runaway:
        warnings.warn(
            f"{what}: the zero-inflation probability is 1 (to within 1e-6) for {certain:,} "
            "rows, all zeros: the zero part separates them from the rest, and the zero-part "
            "coefficients that set them apart are not identified (they drift to +infinity, "
            "their standard errors meaningless); the count part is estimated from the other "
            "rows. Drop that term from the zero part, or merge its levels.",
            StatisticalWarning, stacklevel=4)
    if pi_max < 1e-6:
        warnings.warn(
            f"{what}: the zero-inflation probability is below {pi_max:.1g} for every row: "
            "the data show no excess zeros and the zero-part coefficients are not "
            "identified (they drift to -infinity). Use family='poisson' or 'negbin'.",
            StatisticalWarning, stacklevel=4)
    return dict(params=params, vcov=V, scores=lik.score_obs(params), loglik=lik.loglik(params),
                extra=_theta_extra(params, V, dist))


def _fit_hurdle(y, X, Z, offset, dist, what):
    """Logit for y > 0 on all rows and a zero-truncated count model on y > 0: the
    likelihood factorises, so the parts are fitted apart (pscl's ``separate = TRUE``)."""
    n, kx, kz = len(y), X.shape[1], Z.shape[1]
    pos = y > 0
    binom = fit_glm(pos.astype(float), Z, families.Binomial(), what=what)
    check_fitted_probabilities(binom.fittedvalues, what + " zero hurdle")
    pstart = fit_glm(y[pos], X[pos], families.Poisson(), offset=offset[pos], what=what,
                     rtol=1e-6)
    start = np.concatenate([pstart.params] + ([[0.0]] if dist == "negbin" else []))
    lik = _Mixture("truncated", dist, y[pos], X[pos], offset[pos])
    pc, Hc = _maximize(lik, start, what)
    params = np.concatenate([pc[:kx], binom.params, pc[kx:]])   # count, zero, log theta
    idx_c = np.r_[np.arange(kx), kx + kz + np.arange(len(pc) - kx)]
    idx_z = kx + np.arange(kz)
    P = len(params)
    V = np.zeros((P, P))                                         # block-diagonal information
    V[np.ix_(idx_c, idx_c)] = np.linalg.inv(-Hc)
    V[np.ix_(idx_z, idx_z)] = binom.bread
    scores = np.zeros((n, P))
    scores[np.ix_(pos, idx_c)] = lik.score_obs(pc)
    scores[:, idx_z] = Z * (pos - binom.fittedvalues)[:, None]
    ll_count = lik.loglik(pc)
    return dict(params=params, vcov=V, scores=scores, loglik=ll_count + binom.llf,
                extra=dict(_theta_extra(params, V, dist), loglik_count=ll_count,
                           loglik_zero=binom.llf))


def _theta_extra(params, V, dist):
    if dist != "negbin":
        return {}
    tau, se_tau = float(params[-1]), float(np.sqrt(V[-1, -1]))
    return dict(theta=float(np.exp(tau)), log_theta=tau, se_log_theta=se_tau,
                se_theta=float(np.exp(tau) * se_tau))


# =========================================================================== main API
@one_blas_thread
def count_model(data: pd.DataFrame, formula: str, family: str = "poisson",
                exposure: str | None = None, zero_formula: str | None = None,
                vcov="model", alpha: float = 0.05) -> CountResult:
    r"""Fit a regression model for a count outcome, agreeing with R.

    Parameters
    ----------
    data : DataFrame
        One row per member (or member x window). Not modified.
    formula : str
        Wilkinson formula, e.g. ``"er_visits ~ treated + age + female + comorbidity"``.
        For zero-inflated and hurdle families R's ``"y ~ count_rhs | zero_rhs"`` also works.
        Term names come out as R names them (``(Intercept)``, ``I(age^2)``).
    family : {"poisson", "negbin", "zip", "zinb", "hurdle_poisson", "hurdle_negbin"}
        * ``poisson``: :math:`y \sim \text{Poisson}(\mu)`, :math:`\log\mu = x'\beta + \log E`.
        * ``negbin``: NB2, :math:`\text{Var}(y) = \mu + \mu^2/\theta`. As
          ``MASS::glm.nb``: IRLS for beta at fixed theta alternates with the ML of theta
          given the fitted means until both settle (the joint MLE). Coefficient SEs are
          the IRLS (expected-information) SEs of beta at the final theta, theta treated
          as known; ``extra["se_theta"]`` is MASS's ``SE.theta`` (inverse observed
          information of theta at the fitted means).
        * ``zip`` / ``zinb``: :math:`P(y=0) = \pi + (1-\pi) f(0)`,
          :math:`P(y=k) = (1-\pi) f(k)`, :math:`\text{logit}\,\pi = z'\gamma`; the zero
          part models the probability of a *structural* zero (as ``pscl::zeroinfl``).
        * ``hurdle_poisson`` / ``hurdle_negbin``: :math:`P(y>0) = \text{logit}^{-1}(z'\gamma)`;
          :math:`P(y=k \mid y>0) = f(k)/(1-f(0))`; the zero part models the probability
          of *any* use (as ``pscl::hurdle`` with ``zero.dist = "binomial"``).

        Zero-inflated and hurdle models are fitted by Newton's method with analytic
        derivatives; SEs come from the inverse of the exact Hessian over
        (count coefficients, zero coefficients, log theta).
    exposure : str, optional
        Column of member-months (or any exposure); ``log(exposure)`` enters the count part
        as an offset, so coefficients are log rate ratios per unit of exposure. Rows with
        exposure <= 0 are left out with a warning.
    zero_formula : str, optional
        Right-hand side of the zero part (``"~ age + female"``); defaults to the count
        formula's right-hand side. Only for zero-inflated and hurdle families.
    vcov : "model", "HC0", "HC1" or {"cluster": column}
        ``model``: inverse information. ``HC0``: sandwich ``B (S'S) B`` (R's
        ``sandwich::vcovHC(type = "HC0")``); ``HC1``: HC0 times ``n/(n-k)``; cluster:
        scores summed within clusters times ``G/(G-1) (n-1)/(n-k)`` (``vcovCL``, HC1).
        For ``negbin`` the sandwich treats theta as known (as R does for ``glm.nb``);
        for zero-inflated and hurdle models it is the full M-estimation sandwich over all
        parameters including log theta (pscl's ``estfun`` leaves theta out).
    alpha : float
        1 - confidence level of the Wald intervals.

    Returns
    -------
    CountResult
        ``table`` (``part`` = ``count`` / ``zero`` for zero-inflated and hurdle models),
        ``loglik`` (R's ``logLik``), ``theta`` / ``extra["theta"]``, ``nobs``,
        ``dropped``; ``.effect(treatment)`` gives events per 1,000 member-months and the
        rate ratio.

    Raises
    ------
    DataValidationError
        Missing columns, outcome not a count, constant or collinear terms, a 0/1
        covariate with no events at one of its levels (e.g. an arm with no events).
    ConvergenceError
        The fit did not converge, or theta runs off to infinity (no overdispersion).
    ParamsError
        Unknown family or vcov, zero_formula given to a one-part family.

    Examples
    --------
    >>> fit = count_model(members, "er_visits ~ treated + age + female + comorbidity",
    ...                   family="negbin", exposure="member_months", vcov="HC1")
    >>> fit.table, fit.theta                                   # doctest: +SKIP
    >>> fit.effect("treated").to_frame()                       # doctest: +SKIP

    References
    ----------
    Venables & Ripley (2002), *Modern Applied Statistics with S*, 4th ed., sec. 7.4
    (``glm.nb``). Zeileis, Kleiber & Jackman (2008), "Regression models for count data in
    R", *Journal of Statistical Software* 27(8). Cameron & Trivedi (2013), *Regression
    Analysis of Count Data*, 2nd ed. Zeileis (2006), "Object-oriented computation of
    sandwich estimators", *JSS* 16(9).
    """
    release_fits(len(data))   # earlier fits' arrays, before this one's
    what = f"count_model({family})"
    if family not in FAMILIES:
        raise ParamsError(f"count_model: family must be one of {list(FAMILIES)}, got {family!r}.")
    alpha = check_alpha(alpha, what)
    kind, cluster = parse_vcov(vcov, what)
    if not isinstance(formula, str) or "~" not in formula:
        raise ParamsError(f"{what}: formula must be a string like 'y ~ x1 + x2', got {formula!r}.")
    if exposure is not None and not isinstance(exposure, str):
        raise ParamsError(f"{what}: exposure must be a column name, got {exposure!r}.")

    count_formula, bar_zero = _split_bar(formula)
    if family in _TWO_PART:
        if bar_zero is not None and zero_formula is not None:
            raise ParamsError(f"{what}: give the zero part either after '|' or as zero_formula, not both.")
        zero_rhs = _zero_rhs(zero_formula if bar_zero is None else bar_zero, count_formula)
    else:
        if zero_formula is not None or bar_zero is not None:
            raise ParamsError(
                f"{what}: a zero part ('|' or zero_formula) needs a zero-inflated or hurdle "
                f"family ({list(_TWO_PART)})."
            )
        zero_rhs = None

    extra_cols = [c for c in (exposure, cluster) if c is not None]
    formulas = [count_formula] + ([zero_rhs] if zero_rhs else [])
    frame, dropped = prepare_frame(data, formulas, extra_cols, what)
    if exposure is not None:
        frame, dropped = drop_bad_exposure(frame, exposure, dropped, what)

    outcome = count_formula.split("~", 1)[0].strip()
    y, X, xnames, xinfo = _matrix(count_formula, frame, what)
    _check_counts(y, what, outcome)
    check_full_rank(X, xnames, what + " count part")
    offset = np.log(frame[exposure].to_numpy(dtype=float)) if exposure else np.zeros(len(y))
    if not (y > 0).any():
        raise DataValidationError(f"{what}: every {outcome!r} is 0; there is nothing to model.")
    check_no_empty_cells(X, xnames, y > 0, what, f"{outcome} > 0")
    groups = frame[cluster].to_numpy() if cluster else None

    extra: dict = {"exposure": exposure} if exposure else {}
    Z = zinfo = None
    znames: list = []
    if family == "poisson":
        fit = _fit_poisson(y, X, offset, what)
    elif family == "negbin":
        fit = _fit_negbin(y, X, offset, what)
    else:
        _, Z, znames, zinfo = _matrix(zero_rhs, frame, what)
        check_full_rank(Z, znames, what + " zero part")
        if not (y == 0).any():
            raise DataValidationError(
                f"{what}: no zero counts in {outcome!r}; a zero part cannot be fitted. "
                "Use family='poisson' or 'negbin'."
            )
        dist = "negbin" if family in ("zinb", "hurdle_negbin") else "poisson"
        if family in ("zip", "zinb"):
            fit = _fit_zero_inflated(y, X, Z, offset, dist, what)
        else:
            check_full_rank(X[y > 0], xnames, what + " count part (rows with counts > 0)")
            check_no_empty_cells(Z, znames, y > 0, what, f"{outcome} > 0", f"{outcome} = 0")
            fit = _fit_hurdle(y, X, Z, offset, dist, what)
    extra.update(fit["extra"])
    params, V_model, scores = fit["params"], fit["vcov"], fit["scores"]
    kx = X.shape[1]
    kz = 0 if Z is None else Z.shape[1]
    n = len(y)

    # R's convention: k in the small-sample factors counts coefficients, not theta
    V = V_model if kind == "model" else sandwich(scores, V_model, kind, groups, n_coef=kx + kz)
    se_all = np.sqrt(np.diag(V))

    if family in ("poisson", "negbin"):
        table = wald_table(xnames, params, se_all[:kx], alpha)
    else:
        table = pd.concat([
            wald_table(xnames, params[:kx], se_all[:kx], alpha, part="count"),
            wald_table(znames, params[kx:kx + kz], se_all[kx:kx + kz], alpha, part="zero"),
        ], ignore_index=True)

    state = _CountFit(family=family, frame=frame, count_info=xinfo,
                      zero_info=zinfo, exposure=exposure,
                      params=np.asarray(params, dtype=float), vcov=V, kx=kx, kz=kz,
                      vcov_label=vcov_label(kind, cluster))
    full_formula = count_formula + (f" + offset(log({exposure}))" if exposure else "")
    if zero_rhs:
        full_formula += " | " + zero_rhs.split("~", 1)[1].strip()
    extra["vcov"] = vcov_label(kind, cluster)
    return CountResult(table=table, method=_METHODS[family], formula=full_formula, nobs=n,
                       dropped=dropped, loglik=fit["loglik"], alpha=alpha, extra=extra, model=state)

