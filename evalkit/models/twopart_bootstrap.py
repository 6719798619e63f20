"""Bootstrap of the two-part cost effect, all replicates fitted at once
(:func:`bootstrap_two_part`; the batched solvers are in :mod:`evalkit.models.batched`)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special

from evalkit.errors import ConvergenceError, ParamsError
from evalkit.models.batched import (
    _DEFAULT, _P_EDGE, _P_EPS, CONVERGED, FAILED, RANK, RUNNING, _advance, _block_size,
    _check_batched, _complete_rows, _grad, _info, _info_slope, _inv, _newton_step, _rank_ok,
    _row_terms, _run_blocks, _unpack, _Work, row_spans,
)
from evalkit.models.bootstrap import BootstrapResult
from evalkit.models.effects import (
    binary_columns, build_matrix, counterfactual_frames, design_matrices, fit_glm,
    one_blas_thread,
)
from evalkit.models.resample import _design, _design_extra, _design_text, _summaries
from evalkit.models.twopart import part_family, two_part

__all__ = ["bootstrap_two_part", "TWO_PART_STATISTICS"]

TWO_PART_STATISTICS = ("cost_difference", "ratio", "mean_treated", "mean_control")


#: Rows x replicates in one chunk of work (2**17 doubles, 1 MB a buffer): each Newton
#: step walks the rows chunk by chunk, and everything it does to a chunk -- the linear
#: predictors, the elementwise terms, the chunk's share of the gradient and information
#: -- happens while the chunk is in the processor's cache, instead of one pass over
#: (rows, replicates) arrays in memory per operation.
_CHUNK = 2 ** 17
#: Chord steps (jackknife fits): a step with the previous information is kept while it is
#: below this fraction of the replicate's previous step.
_CHORD = 1e-2
#: Row counts in one block of replicates (rows x replicates; 64 MB as 2-byte counts).
_BLOCK_COUNTS = 2 ** 25
#: Recycled predictions take the treated linear predictors as the untreated ones plus the
#: treatment's shift of a fit while that shift is at most this (exp(30) ~ 1e13).
_SHIFT_MAX = 30.0


def _two_part_block(state, payload):
    """Fit one block of replicates; returns (values (b, 4), reasons, iterations)."""
    kind, data = payload
    n = state["X"].shape[0]
    if kind == "boot":
        C = np.ascontiguousarray(data.T)                  # (n, b) row counts
    elif sum(map(len, data)) <= n // 2:                   # jackknife: rows left out
        C = _LeftOut(data, n)
    else:       # large groups (a few big clusters): walking their rows saves little
        C = np.ones((n, len(data)), dtype=np.uint8)
        for j, rows in enumerate(data):
            C[rows, j] = 0
    return _fit_two_part_counts(state, C)


class _LeftOut:
    """The row counts of jackknife fits -- 1 on every row, 0 on the rows each fit leaves
    out -- kept as the left-out ``groups`` (row positions) rather than an (n, b) matrix.

    Any count-weighted sum over the rows is then the sum over all rows with counts 1
    minus the sum over the group's rows: ``rows`` holds every group's rows one after
    another and ``ind`` (rows, b) the 0/1 counts under which column ``j`` sums over group
    ``j``'s rows alone (see :func:`_pass`).
    """

    def __init__(self, groups, n: int):
        self.groups = [np.asarray(r, dtype=np.intp) for r in groups]
        self.shape = (n, len(self.groups))
        self.rows = np.concatenate(self.groups) if self.groups else np.zeros(0, np.intp)
        self.ind = np.zeros((len(self.rows), len(self.groups)), dtype=np.uint8)
        self.ind[np.arange(len(self.rows)),
                 np.repeat(np.arange(len(self.groups)), [len(r) for r in self.groups])] = 1

    def take(self, cols) -> _LeftOut:
        """The fits ``cols`` alone."""
        return _LeftOut([self.groups[j] for j in cols], self.shape[0])

    def within(self, keep) -> _LeftOut:
        """The same fits on the rows where the (n,) mask ``keep`` is true (the positive
        part's rows): each group's rows among them, numbered as positions among them."""
        rows = np.flatnonzero(keep)
        return _LeftOut([np.searchsorted(rows, r[keep[r]]) for r in self.groups], len(rows))

    def sums(self, total, A, w=None) -> np.ndarray:
        """``A' C`` (columns of ``A`` (n, m), times the rows' ``w`` (n, 1) if given, summed
        under each fit's counts; ``total`` their sums over all rows): (m, b)."""
        part = A[self.rows] if w is None else A[self.rows] * w[self.rows]
        return total[:, None] - part.T @ self.ind

    def parts(self, cols, *arrays):
        """The groups' rows of ``arrays`` (None stays None), and the 0/1 counts of the
        fits ``cols`` (None: all) on them."""
        sub = tuple(None if a is None else a[self.rows] for a in arrays)
        return sub, (self.ind if cols is None else self.ind[:, cols])


class _Chunks:
    """Row spans of about ``_CHUNK / b`` rows for ``b`` replicates, and the reusable
    chunk buffers; :meth:`counts` gives a chunk's counts as doubles."""

    def __init__(self, b: int):
        self.rows = rows = max(64, _CHUNK // max(b, 1))
        self.size = rows * b
        self.c = np.empty(self.size)
        self.cy = np.empty(self.size)
        self.work = _Work(self.size)

    def spans(self, m: int) -> list:
        """The chunks' row slices over ``m`` rows."""
        return row_spans(m, self.rows)

    def counts(self, C, sl, cols):
        """Counts of rows ``sl`` and replicates ``cols`` (None: all) as a float array."""
        part = C[sl] if cols is None else C[sl, cols]
        out = self.c[:part.size].reshape(part.shape)
        np.copyto(out, part)
        return out


def _pass(kind, X, iu, C, y, z, B, cols, chunks, first, info=True):
    """One walk over the rows: gradient sums (without the constant part), packed
    information (k(k+1)/2, a; None unless ``info``), for the logit on how many resampled
    rows each replicate has a fitted probability within ``_P_EDGE`` of 0 or 1, and on the
    first pass the packed resampled design X'CX (rank check).

    ``C`` is the (n, b) count matrix (of which the replicates ``cols``; None: all), None
    for counts 1 on every row, or a :class:`_LeftOut`: the walk with counts 1 minus a
    walk over the left-out rows alone.
    """
    if isinstance(C, _LeftOut):
        (Xg, yg, zg), ind = C.parts(cols, X, y, z)
        whole = _pass(kind, X, iu, None, y, z, B, None, chunks, first, info)
        left = _pass(kind, Xg, iu, ind, yg, zg, B, None, chunks, first, info)
        return tuple(None if w is None else w - v for w, v in zip(whole, left))
    k, a = B.shape
    p = k * (k + 1) // 2
    g, h = np.zeros((k, a)), (np.zeros((p, a)) if info else None)
    edge = np.zeros(a, dtype=np.int64)
    design = np.zeros((p, a)) if first else None
    for sl in chunks.spans(X.shape[0]):
        ones = C is None                     # counts 1: no count matrix, no products
        Cc = 1.0 if ones else chunks.counts(C, sl, cols)
        r = sl.stop - sl.start
        ctx = {"C": Cc, "g0": 0.0}
        if y is not None:
            ctx["Cy"] = y[sl] if ones else np.multiply(Cc, y[sl],
                                                       out=chunks.cy[:r * a].reshape(r, a))
        if z is not None:
            ctx["z"] = z[sl]
        u, v = chunks.work.views(r, a)
        g += _grad(kind, X[sl], B, ctx, u, v)
        if kind == "logit" and (u.min() <= _P_EDGE or u.max() >= 1.0 - _P_EDGE):
            edge += np.count_nonzero(((u <= _P_EDGE) | (u >= 1.0 - _P_EDGE)) & (Cc > 0),
                                     axis=0)
        if first or info:                    # the chunk's x_i x_i' (upper triangles)
            Xs = X[sl]
            XX = Xs[:, iu[0]] * Xs[:, iu[1]]
        if first:
            design += XX.sum(axis=0)[:, None] if ones else XX.T @ Cc
        if info:
            h += _info(kind, XX, ctx, u, v)
    return g, h, edge, design


def _full_sample_terms(kind, X, y, z, beta, iu) -> tuple:
    """A part's row factors at the full-sample estimate ``beta`` (:func:`_row_terms`:
    gradient ``q`` and information weight ``w``, (n,) each), the information's slope
    there, ``S = sum_i w'_i (x_i x_i') x_i'`` ((k(k+1)/2, k); :func:`_info_slope`), with
    which chord steps carry the information along (:func:`_chunked_fit`), and
    ``(min w / max w)**2``, with which the information there vouches for the rank of the
    design (:func:`_chunked_fit`; 0 where it cannot)."""
    q, w = np.empty(X.shape[0]), np.empty(X.shape[0])
    slope = np.zeros((len(iu[0]), X.shape[1]))
    for sl in _Chunks(1).spans(X.shape[0]):
        Xs = X[sl]
        eta = Xs @ beta
        q[sl], w[sl] = _row_terms(kind, eta, None if y is None else y[sl, 0],
                                  None if z is None else z[sl, 0])
        d = _info_slope(kind, eta, None if y is None else y[sl, 0])
        slope += (Xs[:, iu[0]] * Xs[:, iu[1]] * d[:, None]).T @ Xs
    lo, hi = (w.min(), w.max()) if len(w) else (0.0, 0.0)
    spread = float((lo / hi) ** 2) if np.isfinite(hi) and lo > 0 else 0.0
    return q, w, slope, spread


def _jackknife_full(state) -> dict:
    """Each part's first-walk sums (gradient, information, design; :func:`_pass`) at the
    full-sample estimate with counts 1 on every row -- what the first step of every
    jackknife fit downdates (:func:`_jackknife_start`) -- and the information's slope
    there (``state["terms"]``, :func:`_full_sample_terms`); and the column sums of the
    tallies and constant gradient parts of :func:`_fit_two_part_counts` (``M``, ``Xz``,
    ``Xy``)."""
    iu, chunks = state["iu"], _Chunks(1)
    out = {}
    for part, kind, X, y, z, beta in (
            ("first", state["first"], state["X"], None, state["z"][:, None], state["beta1"]),
            ("second", state["second"], state["X2"], state["y2"], None, state["beta2"])):
        g, h, _, design = _pass(kind, X, iu, None, y, z, beta[:, None], None, chunks, True)
        out[part] = (g, h, design, state["terms"][part][2])
    out.update(M=state["M"].sum(axis=0), Xz=state["Xz"].sum(axis=0),
               Xy=(state["X"] * state["yz"]).sum(axis=0))
    return out


def _bootstrap_start(X, iu, C, terms, chunks, m=0, extra=None) -> tuple:
    """The first step's sums of the fits under the (n, b) counts ``C``, at the
    full-sample estimate: gradient (less its constant part) ``X'(C q)`` and information
    ``X' diag(C w) X`` (packed) from the rows' factors there (``terms``,
    :func:`_full_sample_terms`), then None for the design (the information vouches for
    its rank, see :func:`_chunked_fit`), the information's slope and the weights'
    spread; and the sums ``A'C`` of ``m`` more columns, ``extra(sl)`` giving a chunk's
    rows of them (a list of (rows, m_j) arrays).

    Where :func:`_pass` computes every replicate's linear predictors and exponentials,
    at the full-sample estimate they are the same for every replicate: the sums are
    one matrix product of the counts per chunk of rows, as the tallies are.
    """
    q, w, slope, spread = terms
    k, p = X.shape[1], len(iu[0])
    out = np.zeros((k + p + m, C.shape[1]))
    rows = np.empty((k + p + m, min(chunks.rows, X.shape[0])))   # a column per row:
    pairs = np.empty((p, rows.shape[1]))
    for sl in chunks.spans(X.shape[0]):     # products of contiguous rows, not of columns
        r = sl.stop - sl.start
        A, XT = rows[:, :r], np.ascontiguousarray(X[sl].T)
        np.multiply(XT, q[sl], out=A[:k])
        o = 0
        for j in range(k):                          # x_j x_l, l >= j: the order of iu
            np.multiply(XT[j], XT[j:], out=pairs[o:o + k - j, :r])
            o += k - j
        np.multiply(pairs[:, :r], w[sl], out=A[k:k + p])
        if m:
            np.concatenate(extra(sl), axis=1, out=A[k + p:].T)
        out += A @ chunks.counts(C, sl, None)
    return out[:k], out[k:k + p], None, slope, spread, out[k + p:]


def _jackknife_start(kind, X, iu, left, y, z, beta0, full, chunks):
    """The first walk's sums (gradient, information, design; see :func:`_pass`) of the
    jackknife fits ``left`` (a :class:`_LeftOut`) at ``beta0``, and the information's
    slope over all rows (``full[3]``).

    Every jackknife fit starts at the full-sample estimate, where each sum is the sum
    over all rows with counts 1 (``full``, computed once by :func:`_jackknife_full`)
    minus the sum over the group's rows: the first Newton step of every fit walks the
    left-out rows (~1,000 a fit) instead of all rows.
    """
    (Xg, yg, zg), ind = left.parts(None, X, y, z)
    B0 = np.repeat(np.asarray(beta0, dtype=float)[:, None], ind.shape[1], axis=1)
    g, h, _, design = _pass(kind, Xg, iu, ind, yg, zg, B0, None, chunks, True)
    return full[0] - g, full[1] - h, full[2] - design, full[3]


def _logit_loglik(X, C, z, B, cols, chunks):
    """Log-likelihood of logit fits ``B`` (k, a) under the counts of replicates ``cols``
    (``C`` as for :func:`_pass`)."""
    if isinstance(C, _LeftOut):
        (Xg, zg), ind = C.parts(cols, X, z)
        return (_logit_loglik(X, None, z, B, None, chunks)
                - _logit_loglik(Xg, ind, zg, B, None, chunks))
    ll = np.zeros(B.shape[1])
    with np.errstate(over="ignore", divide="ignore"):
        for sl in chunks.spans(X.shape[0]):
            Cc = 1.0 if C is None else chunks.counts(C, sl, cols)
            mu = np.clip(special.expit(X[sl] @ B), _P_EPS, 1.0 - _P_EPS)
            ll += np.sum(Cc * np.where(z[sl] > 0, np.log(mu), np.log1p(-mu)), axis=0)
    return ll


#: The families whose information is the gradient's derivative (Newton's method; the
#: others take Fisher-scoring steps), so that the information's slope gives the
#: gradient's curvature (:func:`_curved_step`).
_NEWTON = ("logit", "gamma", "poisson")


def _curved_step(g, Hinv, S, step, k, iu, rounds: int = 3):
    """A first step from the full-sample estimate that allows for the gradient's
    curvature: ``d`` solving ``g - H d - T(d, d) / 2 = 0``, where ``g``, ``H`` (as
    ``Hinv``) are a replicate's gradient and information there and
    ``T(d, d) = sum_r d_r (dH / d beta_r) d`` is taken from the full-sample slope ``S``
    of the information (:func:`_full_sample_terms`). Starting from the Newton step
    ``step``, ``rounds`` fixed-point updates, each a few (k, k) products per replicate;
    a replicate whose update is not finite or moves the Newton step by more than a
    tenth of its size (in standard errors: far from the estimate, where the quadratic
    is no guide) keeps the Newton step.

    A bootstrap replicate starts about a standard error from its estimate, where the
    Newton step leaves an error of about a hundredth of one (the curvature term); this
    step leaves some sixty times less (on the 1M-member demo plan), and the walks
    over the rows that follow start that much closer."""
    d = step
    for _ in range(rounds):
        T = np.einsum("aij,ja->ia", _unpack(S @ d, k, iu), d)
        d = np.einsum("aij,ja->ia", Hinv, g - 0.5 * T)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.einsum("aii->ia", Hinv))
        moved = np.max(np.abs(d - step) / se, axis=0, initial=0.0)
        size = np.max(np.abs(step) / se, axis=0, initial=0.0)
        ok = np.all(np.isfinite(d), axis=0) & (moved <= 0.1 * size)
    return np.where(ok, d, step)


def _chunked_fit(kind, X, C, y, z, g0, beta0, tol, maxiter, iu, chunks, start):
    """Fit one GLM per replicate (column of the count matrix ``C``), all at once.

    The rules of :func:`evalkit.models.batched._batched_fit` -- Newton / Fisher scoring
    steps from the full-sample estimate ``beta0``, stop when every step is below ``tol``
    standard errors, a step with the previous information tried first, quasi-separated
    logit replicates stopped when their deviance no longer changes -- with the rows
    walked in cache-sized chunks (``chunks``). ``g0`` is the gradient's part that does
    not change (X'Cz for the logit, X'C for the gamma, X'Cy for the Poisson); ``y`` the
    outcome for the positive part, ``z`` the 0/1 outcome (n, 1) for the first part.

    ``start``: the sums of the first step at ``beta0`` -- gradient, information and
    design, as :func:`_pass` would return them -- found without walking the rows'
    exponentials (:func:`_bootstrap_start`, :func:`_jackknife_start`), and the
    information's slope ``S`` (k(k+1)/2, k) at ``beta0``. The first step is a Newton
    step from them that allows for the gradient's curvature (:func:`_curved_step`;
    Fisher scoring for the probit and inverse Gaussian). The fits then take chord
    steps: the later walks sum
    gradients only, and the step uses the first information carried to the current
    coefficients to first order, ``H(beta0) + S (beta - beta0)``: the full-sample slope
    stands in for the replicate's, so each such step divides a bootstrap replicate's
    error by about a thousand at a million members (a jackknife fit, a fraction of a
    standard error from its estimate, by more). A step is kept while it is below
    ``_CHORD`` times the replicate's previous step (in standard errors); otherwise the
    information is summed afresh (a second walk) and a Newton step taken. The stopping
    rule is unchanged.

    On the 1M-member demo plan a block of 33 bootstrap replicates took three walks of
    the rows for the quasi-Poisson part and three or four for the logit, gradients only;
    before, two Newton steps, each a walk summing the information too, and chord steps
    after them took four and six (4.6 -> 2.8 s a block).

    Returns (B (k, b), status (b,), iterations).
    """
    k = X.shape[1]
    b = C.shape[1]
    sign = {"logit": 1.0, "poisson": 1.0, "gamma": -1.0}.get(kind, 0.0)
    B0 = np.repeat(np.asarray(beta0, dtype=float)[:, None], b, axis=1)
    B = B0.copy()
    B_old = None
    status = np.full(b, RUNNING, dtype=np.int8)
    active = np.arange(b)
    Hinv = None
    chord = last = None
    carry = np.ones(b, dtype=bool)    # chord steps with the information carried from start
    it = 0
    for it in range(1, maxiter + 1):
        cols = None if len(active) == b else active
        if it == 1:
            fresh = True
            g, h, design = np.array(start[0]), np.array(start[1]), start[2]
            edge = np.zeros(b, dtype=bool)
        else:
            # walks sum gradients only, for chord steps (the information is computed in a
            # second walk only if some replicate needs it)
            fresh = Hinv is None
            g, h, edge, design = _pass(kind, X, iu, C, y, z, B[:, active], cols, chunks,
                                       Hinv is None, info=fresh)
        if last is not None and not fresh:
            chord = _CHORD * last
            if carry.any():
                a = active[carry]
                Hc = _unpack(start[1][:, a] + start[3] @ (B[:, a] - B0[:, a]), k, iu)
                # carried far (a quasi-separated replicate drifts), the information may
                # no longer be positive definite: no chord step then, it is summed afresh
                definite = np.all(np.isfinite(Hc), axis=(1, 2))
                definite[definite] = np.linalg.eigvalsh(Hc[definite])[:, 0] > 0
                posdef = definite[:, None, None]
                Hinv[carry] = np.where(posdef, _inv(np.where(posdef, Hc, np.eye(k))), np.nan)
        if sign:
            g += sign * g0[:, active]
        flat = np.zeros(len(active), dtype=bool)
        e = np.flatnonzero(edge) if B_old is not None else np.zeros(0, dtype=np.intp)
        if len(e):                               # deviance of quasi-separated replicates
            ecols = active[e]
            ll = _logit_loglik(X, C, z, B[:, ecols], ecols, chunks)
            ll_old = _logit_loglik(X, C, z, B_old[:, e], ecols, chunks)
            flat[e] = np.abs(ll - ll_old) <= 1e-10 * (np.abs(ll) + 0.1)

        def information(h=h, act=active, cols=cols):
            if h is None:
                h = _pass(kind, X, iu, C, y, z, B[:, act], cols, chunks, False)[1]
            return _unpack(h, k, iu)

        def design_of(H, d=design):
            """What the rank of the first step's design is judged on: the information
            for the gamma part (observed: positive weights y / mu), else X'CX."""
            if kind == "gamma":
                return H
            if d is not None:
                return _unpack(d, k, iu)
            # From a bootstrap start: with weights w_i in [lo, hi] on the rows,
            # v'Hv = sum c_i w_i (x_i'v)^2 lies within [lo, hi] v'(X'CX)v, so the ratio of
            # the extreme eigenvalues of the correlation-scaled X'CX is at least
            # (lo / hi)^2 (``start[4]``) times that of H. Where H clears the threshold
            # by that (and a factor 10), X'CX does; the others' X'CX is summed.
            sure = (_rank_ok(H, margin=10.0 / start[4]) if start[4] > 0
                    else np.zeros(len(H), dtype=bool))
            if sure.all():
                return H
            D = H.copy()
            redo = np.flatnonzero(~sure)
            D[redo] = _unpack(_pass(kind, X, iu, C, y, z, B0[:, redo], redo, chunks, True,
                                    info=False)[3], k, iu)
            return D

        step, small, Hinv, summed = _newton_step(g, Hinv, tol, status, active, information,
                                                 design_of, chord)
        if it > 1:      # a replicate's own information, once summed, serves its chords
            carry &= ~summed
        if it == 1 and kind in _NEWTON:
            step = _curved_step(g, Hinv, start[3], step, k, iu)
        stops = (small | flat)[e]
        if stops.any():
            # a fit that stops with fitted probabilities at 0 or 1 is quasi-separated, its
            # log-likelihood up from where it started; below it, Newton's steps overshot
            # and ran off (a small resample far from the full-sample fit): diverged
            s_ = e[stops]
            ll0 = _logit_loglik(X, C, z, B0[:, active[s_]], active[s_], chunks)
            off = ll[stops] < ll0 - 1e-8 * (np.abs(ll0) + 0.1)
            status[active[s_[off]]] = FAILED
        with np.errstate(invalid="ignore", divide="ignore"):
            se = np.sqrt(np.einsum("aii->ia", Hinv))     # the steps' sizes, for chord steps
            last = np.max(np.abs(step) / se, axis=0, initial=0.0)
        B_old = B[:, active].copy()
        keep = _advance(B, status, active, step, small | flat)
        if not keep.any():
            break
        if not keep.all():
            active = active[keep]
            Hinv = Hinv[keep]
            carry = carry[keep]
            B_old = B_old[:, keep]
            if last is not None:
                last = last[keep]
    return B, status, it


def _refit_failed(kind, X, y, C, B, status):
    """Refit one at a time, as :func:`two_part` fits the part (IRLS from its usual start,
    on the resample's rows), the replicates the batched steps could not fit (``FAILED``:
    a step not finite, or Newton's steps ran off; ``RUNNING``: not converged in
    ``maxiter`` steps). They start at the full-sample estimates, which in a small
    resample far from the full fit can be too far for unguarded Newton steps. ``C`` as
    for :func:`_pass`. A replicate whose refit fails too keeps its status; ``B`` and
    ``status`` are updated in place."""
    for j in np.flatnonzero((status == FAILED) | (status == RUNNING)):
        if isinstance(C, _LeftOut):
            counts = np.ones(C.shape[0], dtype=np.intp)
            counts[C.groups[j]] = 0
        else:
            counts = np.asarray(C[:, j], dtype=np.intp)
        rows = np.repeat(np.arange(len(counts)), counts)
        try:
            fit = fit_glm(y[rows], X[rows], part_family(kind), what="bootstrap replicate")
        except ConvergenceError:
            continue
        if np.all(np.isfinite(fit.params)):
            B[:, j] = fit.params
            status[j] = CONVERGED


def _fit_two_part_counts(state, C):
    """Two-part effects for each column of the (n, b) row-count matrix ``C``.

    For jackknife fits ``C`` is a :class:`_LeftOut`: every count-weighted sum is the sum
    over all rows minus the group's, the first Newton step of each part needs no walk over
    the rows (:func:`_jackknife_start`), and the fits take chord steps
    (:func:`_chunked_fit`), so that every later walk sums gradients only.
    """
    X, X1, X0 = state["X"], state["X1"], state["X0"]
    pos, iu, first, second = state["pos"], state["iu"], state["first"], state["second"]
    names, outcome = state["names"], state["outcome"]
    b = C.shape[1]
    k = X.shape[1]
    reasons: list = [None] * b
    # One walk over the rows for what does not change during the fits: cheap checks
    # that two_part makes too (zeros and positives present; each level of a 0/1 term has
    # both), and the constant parts of the gradients.
    chunks = _Chunks(b)
    M, Xz, yz = state["M"], state["Xz"], state["yz"]
    jack = isinstance(C, _LeftOut)
    if jack:
        full = state["jack_full"]
        tally, g01 = C.sums(full["M"], M), C.sums(full["Xz"], Xz)
        g02 = C.sums(full["Xy"], X, yz) if second == "poisson" else g01
    else:
        # tally rows: N, N_pos, n1 (per 0/1 term), e1; then X'Cz, and X'Cy for a poisson
        # positive part (else its constant part X2'C2 is X'Cz); with the first part's
        # first-step sums, in one walk
        poisson = second == "poisson"
        *start1, sums = _bootstrap_start(
            X, iu, C, state["terms"]["first"], chunks, M.shape[1] + k * (1 + poisson),
            lambda sl: [M[sl], Xz[sl]] + ([X[sl] * yz[sl]] if poisson else []))
        tally, g01 = sums[:M.shape[1]], sums[M.shape[1]:M.shape[1] + k]
        g02 = sums[M.shape[1] + k:] if second == "poisson" else g01
    N, Npos = tally[0], tally[1]
    bins = state["binary"]
    nb = len(bins)
    n1, e1 = tally[2:2 + nb], tally[2 + nb:]
    for j in range(b):
        if Npos[j] == 0 or Npos[j] == N[j]:
            reasons[j] = (f"every {outcome} in the resample is "
                          f"{'zero' if Npos[j] == 0 else 'positive'}")
    for r, jcol in enumerate(bins):
        for lev, nn, ee in ((1, n1[r], e1[r]), (0, N - n1[r], Npos - e1[r])):
            for j in np.flatnonzero(nn == 0):
                if reasons[j] is None:
                    reasons[j] = f"{names[jcol]} is constant ({1 - lev}) in the resample"
            # no positive value at a level: the positive part cannot be fitted there. Only
            # positive values at a level is separation in the logit alone, which converges
            # as R's glm.fit does (probabilities at 1 - eps), leaving the effect defined.
            for j in np.flatnonzero((nn > 0) & (ee == 0)):
                if reasons[j] is None:
                    reasons[j] = f"no positive {outcome} among rows with {names[jcol]} = {lev}"
    good = np.array([r is None for r in reasons])
    values = np.full((b, 4), np.nan)
    if not good.any():
        return values, reasons, (0, 0)
    g_cols = np.flatnonzero(good)
    if not good.all():
        C = C.take(g_cols) if jack else np.ascontiguousarray(C[:, good])
        chunks = _Chunks(C.shape[1])
        g01, g02 = g01[:, good], g02[:, good]
        if not jack:
            start1[:2] = (a[:, good] for a in start1[:2])
    tol, tol2, maxiter = state["tol"], state["tol2"], state["maxiter"]

    z = state["z"][:, None]
    if jack:
        C2 = C.within(state["z"] > 0)
        start1 = _jackknife_start(first, X, iu, C, None, z, state["beta1"], full["first"],
                                  chunks)
        start2 = _jackknife_start(second, state["X2"], iu, C2, state["y2"], None,
                                  state["beta2"], full["second"], chunks)
    B1, st1, it1 = _chunked_fit(first, X, C, None, z, g01, state["beta1"], tol, maxiter, iu,
                                chunks, start1)
    _refit_failed(first, X, state["z"], C, B1, st1)
    if not jack:
        C2 = np.take(C, pos, axis=0)
        start2 = _bootstrap_start(state["X2"], iu, C2, state["terms"]["second"], chunks)[:5]
    B2, st2, it2 = _chunked_fit(second, state["X2"], C2, state["y2"], None, g02,
                                state["beta2"], tol2, maxiter, iu, chunks, start2)
    _refit_failed(second, state["X2"], state["y2"][:, 0], C2, B2, st2)
    del C2
    # Fitted probabilities numerically 0 or 1 (quasi-separation, or an extreme covariate
    # value in the resample) are not a failure: the logit converged and its predictions,
    # hence the recycled effect, are well defined; R's glm warns and keeps such a fit.
    # Recycled predictions: A_t = sum_i c_i p_i(t) m_i(t) / sum_i c_i
    A = _recycled(first, X1, X0, C, B1, B2, chunks, state["shift"])
    a1, a0 = A / N[good]
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = np.column_stack([a1 - a0, a1 / a0, a1, a0])
    labels = {RUNNING: "did not converge", RANK: "has a constant or collinear term",
              FAILED: "diverged"}
    for r, j in enumerate(g_cols):
        if st1[r] != CONVERGED:
            reasons[j] = f"the {first} part {labels[int(st1[r])]} in the resample"
        elif st2[r] != CONVERGED:
            reasons[j] = (f"the {second} part (rows with {outcome} > 0) "
                          f"{labels[int(st2[r])]} in the resample")
        elif not np.all(np.isfinite(vals[r])):
            reasons[j] = "the effect is not finite"
        else:
            values[j] = vals[r]
    return values, reasons, (it1, it2)


def _recycled(first, X1, X0, C, B1, B2, chunks, shift=None):
    """Recycled-prediction sums ``A_t = sum_i c_i p_i(t) m_i(t)`` (2, b) of the fits
    ``B1``, ``B2`` with the treatment set to 1 (``X1``) and to 0 (``X0``); ``C`` as for
    :func:`_pass`.

    ``shift``: ``X1 - X0``, when it is the same on every row (the treatment enters
    without interactions). The linear predictors with the treatment set to 1 are then
    those set to 0 plus ``shift @ B``, so a logit first part takes two exponentials per
    row and fit instead of four (:func:`_recycled_shifted`).
    """
    if isinstance(C, _LeftOut):
        (X1g, X0g), ind = C.parts(None, X1, X0)
        whole = _recycled(first, X1, X0, None, B1, B2, chunks, shift)
        return whole - _recycled(first, X1g, X0g, ind, B1, B2, chunks)
    if shift is not None and first == "logit":
        t1, t2 = shift @ B1, shift @ B2
        # a fit whose coefficients drifted (quasi-separation) can have exp(-eta) overflow
        # where the shifted one would not: inf * exp(-shift @ B) is then no product, and
        # such fits are summed directly
        near = (np.abs(t1) <= _SHIFT_MAX) & (np.abs(t2) <= _SHIFT_MAX)
        if near.all():
            return _recycled_shifted(X0, C, np.exp(-t1), np.exp(-t2), B1, B2, chunks)
        A = np.empty((2, B1.shape[1]))
        for cols, shifted in ((np.flatnonzero(near), True), (np.flatnonzero(~near), False)):
            if len(cols):
                Cs = None if C is None else np.ascontiguousarray(C[:, cols])
                A[:, cols] = _recycled(first, X1, X0, Cs, B1[:, cols], B2[:, cols], chunks,
                                       shift if shifted else None)
        return A
    A = np.zeros((2, B1.shape[1]))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for sl in chunks.spans(X1.shape[0]):
            Cc = 1.0 if C is None else chunks.counts(C, sl, None)
            u, v = chunks.work.views(sl.stop - sl.start, B1.shape[1])
            for t, Xt in enumerate((X1[sl], X0[sl])):
                if first == "logit":
                    np.matmul(Xt, -B1, out=u)
                    np.exp(u, out=u)
                    u += 1.0                        # 1 / p
                else:
                    np.reciprocal(special.ndtr(Xt @ B1), out=u)
                np.matmul(Xt, -B2, out=v)
                np.exp(v, out=v)                    # 1 / m
                u *= v
                np.divide(Cc, u, out=u)             # c p m
                A[t] += u.sum(axis=0)
    return A


def _recycled_shifted(X0, C, s1, s2, B1, B2, chunks):
    """:func:`_recycled` of logit fits under the counts ``C`` (None: 1 on every row) where
    setting the treatment to 1 multiplies ``exp(-eta)`` by ``s1`` (first part) and ``s2``
    (second) on every row. Row 0 of the result is the treated, row 1 the untreated sum."""
    a = B1.shape[1]
    A = np.zeros((2, a))
    ones = np.ones(chunks.rows)           # sums over a chunk's rows as one matrix product
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for sl in chunks.spans(X0.shape[0]):
            r = sl.stop - sl.start
            u, v = chunks.work.views(r, a)
            w = chunks.cy[:r * a].reshape(r, a)
            np.matmul(X0[sl], -B1, out=u)
            np.exp(u, out=u)                        # 1 / p(0) - 1
            np.matmul(X0[sl], -B2, out=v)
            np.exp(v, out=v)                        # 1 / m(0)
            np.add(u, 1.0, out=w)
            w *= v
            u *= s1
            u += 1.0                                # 1 / p(1)
            u *= v
            u *= s2
            if C is None:
                np.reciprocal(w, out=w)             # p(0) m(0)
                np.reciprocal(u, out=u)             # p(1) m(1)
            else:
                Cc = chunks.counts(C, sl, None)
                np.divide(Cc, w, out=w)             # c p(0) m(0)
                np.divide(Cc, u, out=u)             # c p(1) m(1)
            A[1] += ones[:r] @ w
            A[0] += ones[:r] @ u
    return A


def _two_part_state(frame, formula, treatment, fit, first, second, tol, maxiter, what) -> dict:
    """What every block's fits read: the design, the counterfactual designs, the outcome
    split into its parts, the full-sample estimates of ``fit`` (:func:`two_part` on
    ``frame`` with parts ``first``, ``second``) and the settings."""
    model = fit.model
    y, X, names, _ = build_matrix(formula, frame, what)
    f1, f0 = counterfactual_frames(frame, treatment, what)
    X1, X0 = design_matrices(model.info, f1, f0)
    pos = y > 0
    z = pos.astype(float)
    shift = X1[0] - X0[0]
    binary = binary_columns(X, names)
    Xb = X[:, binary]
    X2, y2 = np.ascontiguousarray(X[pos]), y[pos][:, None]
    iu = np.triu_indices(X.shape[1])
    beta1 = np.asarray(model.params1, dtype=float)
    beta2 = np.asarray(model.params2, dtype=float)
    return dict(
        X=X, X1=X1, X0=X0, z=z, pos=np.flatnonzero(pos), Xz=X * z[:, None],
        M=np.column_stack([np.ones(len(z)), z, Xb, Xb * z[:, None]]),
        X2=X2, y2=y2, yz=np.where(pos, y, 0.0)[:, None], beta1=beta1, beta2=beta2,
        terms={"first": _full_sample_terms(first, X, None, z[:, None], beta1, iu),
               "second": _full_sample_terms(second, X2, y2, None, beta2, iu)},
        first=first, second=second, binary=binary, names=names,
        outcome=formula.split("~", 1)[0].strip(), iu=iu,
        tol=float(tol), maxiter=maxiter,
        # the positive part's steps are measured in the standard errors two_part reports,
        # which carry its dispersion (quasi-Poisson on dollars: thousands), not in the
        # unscaled sqrt(diag(H^-1)); never in smaller ones (see bootstrap_two_part)
        tol2=float(tol) * math.sqrt(max(float(fit.extra["dispersion"]), 1.0)),
        shift=shift if np.array_equal(X1 - X0, np.broadcast_to(shift, X1.shape)) else None)


@one_blas_thread
def bootstrap_two_part(data: pd.DataFrame, formula: str, treatment: str, n_boot: int = 1000,
                       seed: int | None = None, strata=_DEFAULT, cluster: str | None = None,
                       first: str = "logit", second: str = "gamma",
                       ci: str | Sequence[str] = ("percentile", "bca"), alpha: float = 0.05,
                       n_jobs: int = 2, progress: bool = False, *, max_jackknife: int = 1000,
                       block_size: int | None = None, tol: float = 1e-10,
                       maxiter: int = 100) -> BootstrapResult:
    r"""Bootstrap the two-part cost effect fast, by fitting all replicates at once.

    The statistic is the average treatment effect on mean cost per member of
    :func:`evalkit.models.twopart.two_part` by recycled predictions
    (:meth:`~evalkit.models.twopart.TwoPartResult.effect`): with
    ``E_i(t) = P(y > 0 | x_i, t) exp(x_i'beta(t))`` predicted for every member with the
    treatment set to ``t``,

    .. math::

        A_1 = \overline{E_i(1)}, \quad A_0 = \overline{E_i(0)}, \quad
        \text{cost\_difference} = A_1 - A_0, \quad \text{ratio} = A_1 / A_0

    (``mean_treated = A_1`` and ``mean_control = A_0`` are reported too). Each replicate
    refits both parts on a resample and averages over the resample's members.

    How it is fast
    --------------
    A resample is the data with row counts ``c_i`` (how often row ``i`` was drawn), and
    a GLM fitted on the resample is the GLM fitted on the data with frequency weights
    ``c_i``. The counts of a block of replicates form an ``(n, b)`` matrix of small
    integers. Each Newton step walks the rows in chunks of about ``2**17 / b`` rows: for
    a chunk, one matrix product gives every replicate's linear predictor, and the
    chunk's share of the gradients and of the information matrices
    ``sum_i c_i w_i x_i x_i'`` (one product of the chunk's ``x_i x_i'``, upper triangles,
    with the weights) is added while the chunk is in the processor's cache, rather than
    one pass over ``(n, b)`` arrays in memory per operation. Each replicate starts from
    the full-sample estimates, a few steps from its own: Newton's method for the logit
    and for the gamma (log link) part, whose log-likelihood is convex in the
    coefficients, so Newton converges quadratically where Fisher scoring (information
    ``X'CX``) would converge only linearly; Fisher scoring for the probit and the inverse
    Gaussian; Newton (= Fisher scoring) for quasi-Poisson. At the full-sample estimates
    every replicate's linear predictors are the same, so the first step needs no
    exponentials: its gradient and information are one product of the counts with
    fixed row terms (:func:`_bootstrap_start`), and for the Newton families it allows
    for the gradient's curvature, taken from the full-sample fit
    (:func:`_curved_step`). The replicates then take chord steps, which carry that
    information along and walk the rows for gradients only (see :func:`_chunked_fit`);
    three or four walks a part suffice.
    Blocks of ``b`` replicates bound memory (``2**25`` row counts, 64 MB, by
    default) and go to ``n_jobs`` threads with one BLAS thread each. No library fits many weighted
    GLMs at once, so this loop is written here; the estimates equal refitting
    :func:`two_part` on the resampled rows (to about 1e-10 relative;
    both stop when every step is below ``tol`` standard errors, see ``tol``). On 100,000 members,
    1,000 replicates take well under a minute on two cores where refitting takes several
    (``benchmarks/bootstrap_twopart.py``).

    BCa's jackknife refits the model without each group of rows (or clusters), again
    from the full-sample estimates. Its fits are cheaper: the counts are 1 except 0 on
    the group's rows, so every sum is the sum over all rows minus the group's, and no
    count matrix is walked. At the full-sample estimates the sums over all rows are the
    same for every fit, so the first Newton step of each fit needs only its group's rows
    (~1,000 at 1,000,000 members). The later steps are chord steps: each walk over the
    rows sums the gradients only, and the step uses the first step's information
    carried to the current coefficients to first order (its slope in the coefficients is
    summed once over all rows). A jackknife fit moves a fraction of a standard error, so
    these steps shrink nearly as fast as Newton's (usually two walks a part, gradients
    only, where the Newton steps took three, two of them with the information); a fit
    whose steps do not shrink at least a hundredfold gets a Newton step. Blocks whose
    groups hold more than half the rows (a few large clusters) are fitted under the
    count matrix like the replicates. The stopping rule is the same, so a jackknife value
    is still the converged fit without its group; it differs from the value Newton steps
    reach only within the tolerance (below 1e-13 relative on the benchmark's 100,000
    members and on the demo study).

    Parameters
    ----------
    data : DataFrame
        One row per member; not modified. Rows with missing values in the formula's,
        strata or cluster columns are left out with a warning (as :func:`two_part` does).
    formula : str
        As for :func:`two_part`, e.g. ``"total_cost ~ treated + age + female + comorbidity"``.
    treatment : str
        The 0/1 (or True/False) column of the formula whose effect is wanted.
    n_boot, seed, ci, alpha, n_jobs, progress, max_jackknife
        As for :func:`bootstrap` (``n_jobs`` threads here rather than processes); the same
        seed, strata and cluster give the same resamples as :func:`bootstrap` and
        :func:`bootstrap_indices` on the complete rows.
    strata : str or None
        Default: the treatment column, so arm sizes are fixed as in the study -- unless
        ``cluster`` is given and some cluster holds both arms (sites, matched pairs);
        then whole clusters are drawn without strata. ``None``: unstratified.
    cluster : str, optional
        Draw whole clusters (programme, site, matched pair); BCa's jackknife then leaves
        out clusters.
    first : {"logit", "probit"}
    second : {"gamma", "poisson", "inverse_gaussian"}
        As for :func:`two_part`.
    block_size : int, optional
        Replicates fitted together (default: about ``2**25 / n``, at most ``n_boot / 8``).
        It changes memory and speed only (the last bits of the replicates may move).
    tol, maxiter : float, int
        A replicate has converged when every step is below ``tol`` standard errors. For
        the positive part these are the standard errors :func:`two_part` reports, which
        carry the full fit's dispersion ``phi`` (``sqrt(phi)`` times the unscaled
        ``sqrt(diag(H^-1))``; when ``phi`` is below 1, the unscaled ones). A
        quasi-Poisson part on dollars has ``phi`` in the thousands: measured in unscaled
        standard errors, its steps reach the rounding noise of the sums over the rows
        (about 1e-10 of them at a million members) before the tolerance, and a replicate
        then walked the rows until a step fell below it by chance (up to 67 walks
        instead of 5-7; at a million members its replicates took about twice as long as
        a gamma part's).

    Returns
    -------
    BootstrapResult
        Statistics ``cost_difference``, ``ratio``, ``mean_treated``, ``mean_control``;
        ``estimate`` is :func:`two_part`'s on the complete rows; ``extra`` has the
        full-sample fit (``"fit"``) and the iteration counts.

    Raises
    ------
    ParamsError, DataValidationError
        As :func:`bootstrap` and :func:`two_part` (bad formula, treatment not 0/1...).

    Warns
    -----
    StatisticalWarning
        When some replicates cannot be fitted -- e.g. a resample in which an arm has no
        member with positive cost (the positive part's treatment coefficient does not
        exist): those replicates are ``NaN``, counted in ``n_failed`` with the reason.

    Examples
    --------
    >>> res = bootstrap_two_part(members, "total_cost ~ treated + age + female + comorbidity",
    ...                          "treated", n_boot=1000, seed=20240611)
    >>> res.to_frame()                                        # doctest: +SKIP

    References
    ----------
    Duan N, Manning WG, Morris CN, Newhouse JP (1983). *J Bus Econ Stat* 1(2):115-126.
    Deb P, Norton EC (2018). Modeling health care expenditures and use. *Annu Rev Public
    Health* 39:489-505 (recycled predictions, bootstrap SEs).
    Efron & Tibshirani (1993), ch. 14 (BCa); Davison & Hinkley (1997), sec. 3.2, 3.8.
    """
    what = "bootstrap_two_part"
    n_boot, seed, methods, alpha, n_jobs, max_jackknife, maxiter = _check_batched(
        what, n_boot, seed, ci, alpha, n_jobs, max_jackknife, maxiter, tol)
    if not isinstance(formula, str) or "~" not in formula:
        raise ParamsError(f"{what}: formula must be a string like 'cost ~ treated + age', got {formula!r}.")
    strata_given = strata is not _DEFAULT
    frame, dropped = _complete_rows(data, formula, treatment, strata if strata_given else None,
                                    cluster, "cluster", what)
    if not strata_given:
        strata = treatment
        if cluster is not None:
            nested = frame.groupby(cluster)[treatment].nunique().max() == 1
            strata = treatment if nested else None

    fit = two_part(frame, formula, first=first, second=second)
    eff = fit.effect(treatment, alpha=alpha)
    estimate = pd.Series({"cost_difference": eff.at("cost_difference"),
                          "ratio": eff.at("ratio"), "mean_treated": eff.mean_treated,
                          "mean_control": eff.mean_control}, dtype=float)
    design = _design(frame, strata, cluster, what)

    state = _two_part_state(frame, formula, treatment, fit, first, second, tol, maxiter, what)
    if "bca" in methods:        # what every jackknife fit downdates
        state["jack_full"] = _jackknife_full(state)
    if block_size is None:      # counts of a block: n x b small integers (2 bytes each)
        block_size = max(1, min(_BLOCK_COUNTS // max(len(frame), 1), math.ceil(n_boot / 8),
                                2000))
    block_size = _block_size(block_size, len(frame), n_boot, what)
    reps, jack, labels, failures, max_iter, jack_text = _run_blocks(
        _two_part_block, state, design, n_boot, seed, block_size, methods, max_jackknife, n_jobs,
        progress, "two-part bootstrap", len(TWO_PART_STATISTICS), what)
    se, bias, z0, acc, intervals = _summaries(estimate, reps, methods, alpha, jack, labels,
                                              stacklevel=4)
    extra = _design_extra(design, jack_text, n_jobs=n_jobs, block_size=block_size,
                          max_iterations={"first": max_iter[0], "second": max_iter[1]})
    extra.update(formula=formula, treatment=treatment, first=first, second=second,
                 dropped=dropped, fit=fit)
    method = (f"two-part bootstrap of the recycled-prediction effect of {treatment!r} "
              f"({first} + {second} GLM, log link; {_design_text(design)}; all replicates "
              "fitted together from the full-sample fit by batched Newton / Fisher scoring)")
    return BootstrapResult(
        estimate=estimate, replicates=pd.DataFrame(reps, columns=list(TWO_PART_STATISTICS)),
        std_error=se,
        intervals=intervals, n_boot=n_boot, seed=seed, alpha=alpha, bias=bias, z0=z0,
        acceleration=acc, n_failed=int(sum(failures.values())), failures=dict(failures),
        strata=design.strata, cluster=cluster, n_units=design.n_units, method=method,
        extra=extra)

