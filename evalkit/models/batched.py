"""Batched GLM solvers: one weighted fit per bootstrap replicate, all replicates at once.

A resample is the data with row counts (how often each row was drawn), so a model
refitted on a resample is the model fitted with those counts as frequency weights. The
counts of a block of replicates form one ``(n, b)`` matrix, and every replicate's linear
predictor, gradient and information come from a few matrix products. Used by
:func:`evalkit.models.twopart_bootstrap.bootstrap_two_part` and
:func:`evalkit.models.count_bootstrap.bootstrap_count_effect`.
"""
from __future__ import annotations

import math
import threading
import warnings
from collections import Counter

import numpy as np
import pandas as pd
from scipy import special

from evalkit.errors import DataValidationError, ParamsError, StatisticalWarning
from evalkit.models.count import gamma_differences
from evalkit.models.effects import check_alpha, prepare_frame
from evalkit.models.resample import (
    _check_ci, _check_n_boot, _check_n_jobs, _check_positive_int, _check_seed, _execute,
    _failure_warning, _jackknife_plan, _jackknife_size, _progress,
)

#: Marks a keyword argument the caller did not give (``strata``: default to the treatment).
_DEFAULT = object()
_TAU_MAX = 30.0          # theta = exp(30) ~ 1e13: no overdispersion left (as count_model)
_TAU_FLAT = 15.0         # beyond theta ~ 3e6 a likelihood that is not concave in theta is flat


# Replicate b is a GLM fitted with frequency weights c_ib, its row counts. With C the
# (m, b) count matrix, B the (k, b) coefficients and XX the (m, k(k+1)/2) matrix of
# row-wise products x_i x_i' (upper triangle), one matrix product gives every linear
# predictor (X @ B), one every gradient (X' @ ...) and one every information matrix
# (XX' @ ...). Elementwise work goes into two reused (m, b) buffers: allocating fresh
# 80 MB arrays costs more (page faults) than the arithmetic.
#
# Per family (all with the link two_part uses), gradient g and information H of the
# (quasi-)log-likelihood sum_i c_i l_i(beta):
#   logit    mu = expit(eta):  g = X'C(z - mu),           H = X' diag(C mu(1-mu)) X  (Newton)
#   probit   mu = Phi(eta):    g = X'C(z - mu) phi / V,   H = X' diag(C phi^2 / V) X (Fisher)
#   gamma    mu = exp(eta):    g = X'(Cy/mu) - X'C,       H = X' diag(Cy/mu) X       (Newton)
#   poisson  mu = exp(eta):    g = X'Cy - X'(C mu),       H = X' diag(C mu) X        (Newton)
#            (eta may carry an offset, log exposure, in ctx["off"])
#   inv. Gaussian, log link:   g = X'(Cy/mu^2 - C/mu),    H = X' diag(C/mu) X        (Fisher)
# The gamma log-likelihood is convex in beta (its observed information X' diag(c y/mu) X
# is positive definite), so Newton's method converges quadratically where Fisher scoring
# (information X'CX) is only linear; both reach the same maximum.


#: Logit probabilities are kept in [eps, 1 - eps], as R's ``binomial()$linkinv`` keeps
#: them: the information of a quasi-separated fit stays invertible, and the fit
#: converges the way R's ``glm.fit`` does (see :func:`_batched_fit`).
_P_EPS = float(np.finfo(float).eps)
#: A replicate whose fitted probabilities come this close to 0 or 1 on some resampled row
#: is treated as quasi-separated by the deviance rule of :func:`_batched_fit`. Such a
#: row adds under 1e-8 to the deviance, below what the rule can see, and the drifting
#: coefficient's Newton steps are rounding noise: where they stop, at 1 - 1e-15 or at
#: 1 - 1e-16, depends on the BLAS kernel, and must not decide whether the fit counts.
_P_EDGE = 1e-8


class _Work:
    """Two reusable float buffers, viewed as contiguous (m, a) arrays."""

    def __init__(self, size: int):
        self.one = np.empty(size)
        self.two = np.empty(size)

    def views(self, m: int, a: int):
        return self.one[:m * a].reshape(m, a), self.two[:m * a].reshape(m, a)


def row_spans(n: int, rows: int) -> list:
    """Slices of at most ``rows`` rows covering ``range(n)``, in order: the stretches the
    batched fits walk the rows in."""
    return [slice(lo, min(lo + rows, n)) for lo in range(0, n, rows)]


def _probit(eta):
    """Probit means, their derivative in ``eta`` and the binomial variance, the means
    kept within [eps, 1 - eps] in the variance as statsmodels' binomial family keeps them
    (which :func:`evalkit.models.twopart.two_part` fits with): beyond ``|eta|`` of about
    8.3 the mean is 0 or 1 to double precision, and the weights would be 0 / 0."""
    mu = special.ndtr(eta)
    m = np.clip(mu, _P_EPS, 1.0 - _P_EPS)
    return mu, np.exp(-0.5 * eta * eta) / math.sqrt(2 * math.pi), m * (1.0 - m)


def _grad(kind, X, B, ctx, u, v):
    """Gradient (k, a); leaves what the information needs in the buffers ``u``, ``v``."""
    with np.errstate(over="ignore", divide="ignore"):
        if kind == "logit":
            np.matmul(X, -B, out=u)
            np.exp(u, out=u)
            u += 1.0
            np.reciprocal(u, out=u)                 # mu
            np.clip(u, _P_EPS, 1.0 - _P_EPS, out=u)  # as R's binomial()$linkinv
            np.multiply(ctx["C"], u, out=v)         # C mu
            return ctx["g0"] - X.T @ v              # g0 = X'Cz
        if kind == "gamma":
            np.matmul(X, -B, out=u)
            np.exp(u, out=u)
            u *= ctx["Cy"]                          # C y / mu
            return X.T @ u - ctx["g0"]              # g0 = X'C
        if kind == "poisson":
            np.matmul(X, B, out=u)
            if "off" in ctx:                        # log exposure (count models)
                u += ctx["off"]
            np.exp(u, out=u)
            u *= ctx["C"]                           # C mu
            return ctx["g0"] - X.T @ u              # g0 = X'Cy
        if kind == "inverse_gaussian":
            np.matmul(X, -B, out=u)
            np.exp(u, out=u)                        # 1/mu
            np.multiply(u, u, out=v)
            v *= ctx["Cy"]                          # C y / mu^2
            u *= ctx["C"]                           # C / mu
            return X.T @ v - X.T @ u
        if kind == "probit":
            eta = X @ B
            mu, dens, var = _probit(eta)
            ctx["_w"] = ctx["C"] * dens * dens / var
            return X.T @ (ctx["C"] * (ctx["z"] - mu) * dens / var)
    raise ValueError(kind)


def _info(kind, XX, ctx, u, v):
    """Packed information matrices (k(k+1)/2, a) from what :func:`_grad` left behind."""
    if kind == "logit":
        np.multiply(v, u, out=u)                    # C mu^2
        np.subtract(v, u, out=u)                    # C mu (1 - mu)
        return XX.T @ u
    if kind in ("gamma", "poisson", "inverse_gaussian"):
        return XX.T @ u
    return XX.T @ ctx.pop("_w")


def _info_slope(kind, eta, y=None):
    """Derivative in ``eta`` of each row's weight ``w`` in the information
    ``X' diag(C w) X`` of :func:`_info` (counts 1), at the linear predictors ``eta``:
    how the information moves with the coefficients,
    ``dH / d beta_q = X' diag(w' x_q) X``. ``y``: the outcome (gamma part)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if kind == "logit":                         # w = mu (1 - mu)
            mu = np.clip(special.expit(eta), _P_EPS, 1.0 - _P_EPS)
            return mu * (1.0 - mu) * (1.0 - 2.0 * mu)
        if kind == "gamma":                         # w = y / mu (observed information)
            return -y * np.exp(-eta)
        if kind == "poisson":                       # w = mu
            return np.exp(eta)
        if kind == "inverse_gaussian":              # w = 1 / mu (Fisher)
            return -np.exp(-eta)
        if kind == "probit":                        # w = phi^2 / (Phi (1 - Phi)) (Fisher)
            mu, dens, var = _probit(eta)
            return dens * dens / var * (-2.0 * eta + dens * (2.0 * mu - 1.0) / var)
    raise ValueError(kind)


def _row_terms(kind, eta, y=None, z=None):
    """Each row's factors ``q`` and ``w`` at the linear predictors ``eta`` (n,): the
    gradient of :func:`_grad` less its constant part ``g0`` is ``X'(C q)`` and the
    information of :func:`_info` is ``X' diag(C w) X``, for any counts ``C``. ``y``: the
    outcome (positive part), ``z``: the 0/1 outcome (first part)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if kind == "logit":
            mu = np.clip(special.expit(eta), _P_EPS, 1.0 - _P_EPS)
            return -mu, mu * (1.0 - mu)
        if kind == "gamma":                         # g = X'(C y / mu) - X'C
            w = y * np.exp(-eta)
            return w, w
        if kind == "poisson":                       # g = X'Cy - X'(C mu)
            mu = np.exp(eta)
            return -mu, mu
        if kind == "inverse_gaussian":              # no constant part
            inv = np.exp(-eta)
            return y * inv * inv - inv, inv
        if kind == "probit":
            mu, dens, var = _probit(eta)
            return (z - mu) * dens / var, dens * dens / var
    raise ValueError(kind)


def _unpack(h: np.ndarray, k: int, iu) -> np.ndarray:
    """(k(k+1)/2, b) upper-triangle sums -> (b, k, k) symmetric matrices."""
    H = np.empty((h.shape[1], k, k))
    H[:, iu[0], iu[1]] = h.T
    H[:, iu[1], iu[0]] = h.T
    return H


def _rank_ok(H: np.ndarray, margin: float = 1.0) -> np.ndarray:
    """Which (b, k, k) information matrices are numerically of full rank: the smallest
    eigenvalue of the correlation-scaled matrix above 1e-12 (times ``margin``) of the
    largest."""
    d = np.sqrt(np.clip(np.einsum("bii->bi", H), 0, None))
    ok = np.all(d > 0, axis=1) & np.all(np.isfinite(H), axis=(1, 2))
    dd = np.where(d > 0, d, 1.0)
    R = np.where(ok[:, None, None], H / (dd[:, :, None] * dd[:, None, :]), np.eye(H.shape[1]))
    ev = np.linalg.eigvalsh(R)
    return ok & (ev[:, 0] > 1e-12 * margin * ev[:, -1])


def _inv(H: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:
        out = np.full_like(H, np.nan)
        for j in range(len(H)):
            try:
                out[j] = np.linalg.inv(H[j])
            except np.linalg.LinAlgError:
                pass
        return out


RUNNING, CONVERGED, RANK, FAILED = 0, 1, 2, 3
POISSON = 4          # a negbin replicate at its Poisson limit (theta -> infinity)


def _newton_step(g, Hinv, tol, status, active, information, design, chord=None):
    """Newton / Fisher-scoring steps ``H^-1 g`` (k, a) of the ``active`` replicates.

    With the previous inverse information ``Hinv`` (a, k, k) a step is tried first; the
    information (``information()``: (a, k, k)) is computed only if some step is not
    below ``tol`` standard errors. On the first iteration (``Hinv`` None) the replicates
    whose ``design(H)`` is not of full rank are marked ``RANK`` in ``status``. With
    ``chord`` (a,), a step with the previous information whose largest coefficient is
    below ``chord`` standard errors is kept too (a chord step: the previous information
    still contracts the steps fast enough). Returns the steps, which are below ``tol``
    standard errors, the inverse information, and which replicates' information was
    computed afresh (a, bool).
    """
    if Hinv is not None:
        step = np.einsum("aij,ja->ia", Hinv, g)
        se = np.sqrt(np.einsum("aii->ia", Hinv))
        small = np.all(np.abs(step) <= tol * se, axis=0)
        kept = small if chord is None else small | np.all(np.abs(step) <= chord * se, axis=0)
    else:
        step = np.zeros_like(g)
        small = kept = np.zeros(len(active), dtype=bool)
    if not kept.all():
        H = information()
        if Hinv is None:                          # first iteration: rank of the design
            ok = _rank_ok(design(H))
            status[active[~ok]] = RANK
            Hinv = np.zeros_like(H)
            if ok.any():
                Hinv[ok] = _inv(H[ok])
        else:
            ok = np.ones(len(active), dtype=bool)
            Hinv[~kept] = _inv(H[~kept])
        redo = ~kept & ok
        step[:, redo] = np.einsum("aij,ja->ia", Hinv[redo], g[:, redo])
        small = np.all(np.abs(step) <= tol * np.sqrt(np.einsum("aii->ia", Hinv)), axis=0)
    return step, small, Hinv, ~kept


def _advance(B, status, active, step, small):
    """Take the finite steps, mark replicates FAILED (a step not finite) or CONVERGED
    (``small``); returns which of the ``active`` replicates still run."""
    finite = np.all(np.isfinite(step), axis=0)
    B[:, active] += np.where(finite, step, 0.0)
    live = status[active] == RUNNING
    status[active[live & ~finite]] = FAILED
    status[active[live & finite & small]] = CONVERGED
    return status[active] == RUNNING


def _batched_fit(kind, X, XX, ctx, beta0, tol, maxiter, work, iu):
    """Fit one GLM per replicate (column of ``ctx["C"]``), all at once.

    Every replicate starts at ``beta0`` (the full-sample estimate) and takes Newton /
    Fisher-scoring steps ``H^-1 g``. A replicate stops once every coefficient's step is
    below ``tol`` standard errors (``sqrt(diag(H^-1))``), the rule
    :func:`evalkit.models.effects.fit_glm` uses; it is then frozen and dropped from later
    iterations. Once close, a step with the previous ``H`` is tried first, which saves
    recomputing ``H`` on the last iteration.

    A logit replicate with resampled rows whose fitted probability is at 0 or 1 (to
    machine precision: quasi-separation) has a coefficient that drifts without changing
    any prediction; it stops, as R's ``glm.fit`` does, once its deviance no longer
    changes (relative change below 1e-10; "at 0 or 1" here is within ``_P_EDGE``). Its predictions, hence the recycled effect,
    are those of the limit.

    Returns
    -------
    B : (k, b), status : (b,) of RUNNING (did not converge), CONVERGED, RANK, FAILED;
    iterations : int
    """
    m, k = X.shape
    b = ctx["g0"].shape[1]
    B = np.repeat(np.asarray(beta0, dtype=float)[:, None], b, axis=1)
    status = np.full(b, RUNNING, dtype=np.int8)
    active = np.arange(b)
    Hinv = None
    ll_old = np.full(b, np.inf)
    it = 0
    for it in range(1, maxiter + 1):
        u, v = work.views(m, len(active))
        g = _grad(kind, X, B[:, active], ctx, u, v)
        flat = np.zeros(len(active), dtype=bool)
        if kind == "logit":                       # deviance of quasi-separated replicates
            z, Ca = ctx["z"], ctx["C"]
            ll = np.sum(Ca * np.where(z > 0, np.log(u), np.log1p(-u)), axis=0)
            edge = np.any(((u <= _P_EDGE) | (u >= 1.0 - _P_EDGE)) & (Ca > 0), axis=0)
            flat = edge & (np.abs(ll - ll_old) <= 1e-10 * (np.abs(ll) + 0.1))
            ll_old = ll
        # the rank of the design is judged on the resampled design X'CX where the row
        # counts are known: the information of a logit with fitted probabilities near 0
        # or 1 is badly conditioned without any term being constant or collinear
        step, small, Hinv, _ = _newton_step(
            g, Hinv, tol, status, active,
            lambda u=u, v=v: _unpack(_info(kind, XX, ctx, u, v), k, iu),
            lambda H: _unpack(XX.T @ ctx["C"], k, iu) if "C" in ctx else H)
        keep = _advance(B, status, active, step, small | flat)
        if not keep.any():
            break
        if not keep.all():
            active = active[keep]
            Hinv = Hinv[keep]
            ll_old = ll_old[keep]
            for key in ("C", "Cy"):
                if key in ctx and ctx[key].ndim == 2 and ctx[key].shape[1] == len(keep):
                    ctx[key] = ctx[key][:, keep]
            ctx["g0"] = ctx["g0"][:, keep]
    return B, status, it


def _row_count_matrix(state, payload):
    """The (n, b) row-count matrix of one block and this process's reusable buffers.

    ``payload`` is ``("boot", counts)`` with counts (b, n), or ``("jack", rows)`` with the
    rows each jackknife value leaves out. Buffers are kept from block to block in
    ``state["_buffers"]``, one set per thread (fresh large arrays page-fault).
    """
    kind, data = payload
    n = state["X"].shape[0]
    b = data.shape[0] if kind == "boot" else len(data)
    cache = state.setdefault("_buffers", {}).setdefault(threading.get_ident(), {})
    if cache.get("size", 0) < n * b:
        cache.clear()
        cache.update(size=n * b, C=np.empty(n * b), C2=np.empty(len(state.get("pos", ())) * b),
                     work=_Work(n * b))
    C = cache["C"][:n * b].reshape(n, b)
    if kind == "boot":
        np.copyto(C, data.T)                                          # (n, b) row counts
    else:
        C.fill(1.0)
        for j, rows in enumerate(data):
            C[rows, j] = 0.0
    return C, cache


def _check_batched(what, n_boot, seed, ci, alpha, n_jobs, max_jackknife, maxiter, tol):
    """The checked settings shared by the batched bootstraps."""
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ParamsError(f"{what}: tol must be a small positive number, got {tol!r}.")
    return (_check_n_boot(n_boot, what), _check_seed(seed, what), _check_ci(ci, what),
            check_alpha(alpha, what), _check_n_jobs(n_jobs, what),
            _check_positive_int(max_jackknife, "max_jackknife", what, minimum=2),
            _check_positive_int(maxiter, "maxiter", what))


def _complete_rows(data, formula, treatment, strata, extra, extra_role, what):
    """The complete rows a batched bootstrap fits (index reset), and how many were
    dropped; checks the data, the strata and ``extra`` (cluster or exposure) columns and
    that the treatment is a column of the formula."""
    if not isinstance(treatment, str):
        raise ParamsError(f"{what}: treatment must be the name of a 0/1 column, got {treatment!r}.")
    if not isinstance(data, pd.DataFrame):
        raise DataValidationError(f"{what}: data must be a pandas DataFrame, got {type(data).__name__}.")
    extras = [c for c in (strata, extra) if c is not None]
    missing = [c for c in extras if c not in data.columns]
    if missing:
        raise DataValidationError(
            f"{what}: column(s) {missing} (strata / {extra_role}) not found in the data "
            f"(available: {sorted(map(str, data.columns))}).",
            failures=[{"table": "data", "column": c, "reason": "missing_column", "count": 0,
                       "examples": []} for c in missing])
    frame, dropped = prepare_frame(data, [formula], extras, what)
    frame = frame.reset_index(drop=True)
    if treatment not in frame.columns:
        raise ParamsError(f"{what}: treatment {treatment!r} is not a column of the formula "
                          f"{formula!r}; name the 0/1 treatment column.")
    return frame, dropped


def _block_size(block_size, n, n_boot, what, cells: int = 10_000_000) -> int:
    """Replicates fitted together: about ``cells / n`` (a few (n, b) float buffers; fits
    that hold many per-row terms at once pass fewer cells), at most n_boot / 8 (so blocks
    spread over workers) and 2,000."""
    if block_size is None:
        block_size = max(1, min(cells // max(n, 1), math.ceil(n_boot / 8), 2000))
    return _check_positive_int(block_size, "block_size", what)


def _run_blocks(fit, state, design, n_boot, seed, block_size, methods, max_jackknife, n_jobs,
                progress, desc, n_stats, what):
    """Draw the resamples (and jackknife leave-outs for BCa) as row-count blocks, fit
    each block with ``fit(state, payload)`` in ``n_jobs`` threads (the fits are array
    algebra that releases the GIL; threads share the data instead of copying it into
    worker processes), and gather the values.

    Returns ``reps`` (n_boot, n_stats), ``jack`` and its stratum ``labels`` (None without
    BCa), the failure reasons (Counter), the largest iteration counts and the jackknife's
    description.
    """
    n = design.n_rows
    rng = np.random.default_rng(seed)
    want_jack = "bca" in methods
    n_jack = _jackknife_size(design, max_jackknife) if want_jack else 0
    plan = {}

    def tasks():
        for start in range(0, n_boot, block_size):
            m = min(block_size, n_boot - start)
            counts = np.empty((m, n), dtype=np.uint16)
            for r in range(m):
                c = design.draw_counts(rng)
                if c.max() > np.iinfo(np.uint16).max:      # only with enormous clusters counts
                    counts = counts.astype(np.int64)
                counts[r] = c
            yield ("boot", start), ("boot", counts), m
        if want_jack:
            drops, labels, text = _jackknife_plan(design, max_jackknife, rng)
            plan.update(labels=labels, text=text)
            for start in range(0, len(drops), block_size):
                part = [design.rows(d) for d in drops[start:start + block_size]]
                yield ("jack", start), ("jack", part), len(part)

    with _progress(progress, n_boot + n_jack, desc) as bar:
        results = _execute(fit, state, tasks(), min(n_jobs, math.ceil(n_boot / block_size)), bar,
                           threads=True)

    reps = np.full((n_boot, n_stats), np.nan)
    jack_parts = []
    failures: Counter = Counter()
    jack_failures = 0
    max_iter = None
    for (part, start), (values, reasons, iters) in sorted(results.items()):
        max_iter = iters if max_iter is None else tuple(map(max, max_iter, iters))
        if part == "boot":
            reps[start:start + len(values)] = values
            failures.update(r for r in reasons if r is not None)
        else:
            jack_parts.append(values)
            jack_failures += sum(r is not None for r in reasons)
    _failure_warning(what, failures, n_boot, stacklevel=5)     # caller, past one_blas_thread
    jack = labels = None
    if want_jack:
        jack, labels = np.vstack(jack_parts), plan["labels"]
        if jack_failures:
            warnings.warn(f"{what}: {jack_failures} of {len(jack)} jackknife fits failed; the "
                          "BCa acceleration uses the others.", StatisticalWarning, stacklevel=4)
    return reps, jack, labels, failures, max_iter, plan.get("text")


def _batched_negbin(X, XX, ctx, beta0, tau0, tol, maxiter, iu):
    r"""NB2 regressions with frequency weights, one per column of ``ctx["C"]``, at once.

    Newton's method on the joint log-likelihood in ``(beta, tau = log theta)`` from the
    full-sample estimates. Per row (weight c, mean mu, r = theta + mu):

    * d l / d eta = c theta (y - mu) / r;   -d2 l / d eta2 = c theta (y + theta) mu / r^2
    * -d2 l / d eta d tau = -c theta mu (y - mu) / r^2
    * d l / d theta = c [psi(y + theta) - psi(theta) + log theta + 1 - log r - (y + theta) / r]
    * d2 l / d theta2 = c [psi'(y + theta) - psi'(theta) + 1 / theta - 2 / r + (y + theta) / r^2]

    The digamma terms depend on y only through its value, so they are summed over the
    distinct counts weighted by ``ctx["Ny"]`` (replicate counts of each value). The
    maximum is the one MASS::glm.nb reaches by alternating IRLS and theta.ml. Steps in tau
    are capped at 3. Where the joint information is not positive definite, beta takes a
    Newton step at fixed theta and tau moves one uphill. A replicate whose tau passes 30,
    or 15 with the likelihood flat in theta, has no overdispersion left and is marked
    ``POISSON`` (its estimate is the Poisson fit), the rule of :func:`count_model`.

    Returns (B (k, b), tau (b,), status (b,), iterations).
    """
    m, k = X.shape
    C, Cy, off = ctx["C"], ctx["Cy"], ctx["off"]
    uy, Ny, Ntot = ctx["uy"], ctx["Ny"], ctx["Ntot"]
    b = C.shape[1]
    B = np.repeat(np.asarray(beta0, dtype=float)[:, None], b, axis=1)
    tau = np.full(b, float(tau0))
    status = np.full(b, RUNNING, dtype=np.int8)
    active = np.arange(b)
    it = 0
    for it in range(1, maxiter + 1):
        Ca, Cya = C[:, active], Cy[:, active]
        th = np.exp(tau[active])
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            mu = np.exp(X @ B[:, active] + off)
            r = mu + th
            q = 1.0 / r
            e = Cya - Ca * mu                        # c (y - mu)
            g_beta = X.T @ (e * q) * th
            wq2 = Ca * mu * q * q
            h_bb = XX.T @ ((Cya + Ca * th) * wq2) * th
            h_bt = -(X.T @ (e * mu * q * q)) * th
            nya, nt = Ny[:, active], Ntot[active]
            _, dgv, tgv = gamma_differences(uy, th, 2)
            dg = np.sum(nya * dgv, axis=0)
            tg = np.sum(nya * tgv, axis=0)
            s_log = np.sum(Ca * np.log(r), axis=0)
            s1 = np.sum((Cya + Ca * th) * q, axis=0)
            s2 = np.sum((Cya + Ca * th) * q * q, axis=0)
            s0 = np.sum(Ca * q, axis=0)
            d_th = dg + nt * (np.log(th) + 1.0) - s_log - s1
            d2_th = tg + nt / th - 2.0 * s0 + s2
            g_tau = th * d_th
            h_tt = -(th * th * d2_th + th * d_th)
            H = np.empty((len(active), k + 1, k + 1))
            H[:, :k, :k] = _unpack(h_bb, k, iu)
            H[:, :k, k] = h_bt.T
            H[:, k, :k] = h_bt.T
            H[:, k, k] = h_tt
            g = np.vstack([g_beta, g_tau])
            ok = np.all(np.isfinite(H), axis=(1, 2)) & np.all(np.isfinite(g), axis=0)
            Hs = np.where(ok[:, None, None], H, np.eye(k + 1))
            if it == 1:
                ok &= _rank_ok(Hs[:, :k, :k])
            # where the joint information is not positive definite (far out in theta,
            # where the likelihood is flat), step beta at fixed theta and move log theta
            # uphill by one, as count_model's theta search does
            d = np.sqrt(np.abs(np.einsum("aii->ai", Hs)))
            d[d == 0] = 1.0
            pd_ = ok & (np.linalg.eigvalsh(Hs / (d[:, :, None] * d[:, None, :]))[:, 0] > 1e-12)
            step = np.full((k + 1, len(active)), np.nan)
            se = np.full_like(step, np.inf)
            if pd_.any():
                Hinv = _inv(H[pd_])
                step[:, pd_] = np.einsum("aij,ja->ia", Hinv, g[:, pd_])
                se[:, pd_] = np.sqrt(np.einsum("aii->ia", Hinv))
            flat = ok & ~pd_
            if flat.any():
                step[:k, flat] = np.einsum("aij,ja->ia", _inv(H[flat][:, :k, :k]), g_beta[:, flat])
                step[k, flat] = np.sign(g_tau[flat])
        # converged: every coefficient's step below tol standard errors, and the gain
        # the theta step promises at rounding level (where the likelihood rises slowly
        # towards theta = infinity, its step stays near one log unit however large the
        # standard error)
        small = np.all(np.abs(step[:k]) <= tol * se[:k], axis=0) & (
            np.abs(step[k] * g_tau) <= 1e-12 * nt)
        step[k] = np.clip(step[k], -3.0, 3.0)
        finite = np.all(np.isfinite(step), axis=0)
        B[:, active] += np.where(finite, step[:k], 0.0)
        tau[active] += np.where(finite, step[k], 0.0)
        status[active[~ok]] = RANK if it == 1 else FAILED
        live = status[active] == RUNNING
        status[active[live & ~finite]] = FAILED
        ta = tau[active]
        status[active[live & finite & ((ta > _TAU_MAX) | ((ta > _TAU_FLAT) & flat))]] = POISSON
        status[active[(status[active] == RUNNING) & small]] = CONVERGED
        active = active[status[active] == RUNNING]
        if not len(active):
            break
    return B, tau, status, it
