"""Bootstrap of the recycled-prediction effect of a Poisson, NB2, ZIP or ZINB count model,
all replicates fitted at once (:func:`bootstrap_count_effect`)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse, special

from evalkit.errors import EvalkitError, ParamsError
from evalkit.models.batched import (
    _DEFAULT, CONVERGED, FAILED, POISSON, RANK, RUNNING, _batched_fit, _batched_negbin,
    _block_size, _check_batched, _complete_rows, _row_count_matrix, _run_blocks, row_spans,
)
from evalkit.models.bootstrap import BootstrapResult
from evalkit.models.count import (
    _TAU_MARGIN, _TAU_MAX, _TAU_MIN, _maximize, _Mixture, count_model, gamma_differences,
)
from evalkit.models.effects import (
    binary_columns, build_matrix, counterfactual_frames, design_matrices, one_blas_thread,
)
from evalkit.models.resample import _design, _design_extra, _design_text, _summaries

__all__ = ["bootstrap_count_effect", "BATCHED_COUNT_FAMILIES", "COUNT_STATISTICS"]

COUNT_STATISTICS = {True: ("rate_difference_per_1000_mm", "rate_ratio", "rate_treated",
                           "rate_control"),
                    False: ("difference", "ratio", "mean_treated", "mean_control")}
BATCHED_COUNT_FAMILIES = ("poisson", "negbin", "zip", "zinb")


def _count_block(state, payload):
    """Fit one block of count-model replicates; returns (values (b, 4), reasons, iterations)."""
    return _fit_count_counts(state, *_row_count_matrix(state, payload))


def _fit_count_counts(state, C, cache):
    """Count-model effects for each column of the row-count matrix ``C``."""
    X, X1, X0, XX, iu = state["X"], state["X1"], state["X0"], state["XX"], state["iu"]
    y, off, family = state["y"], state["off"], state["family"]
    tol, maxiter = state["tol"], state["maxiter"]
    n, b = C.shape
    reasons: list = [None] * b
    N = C.sum(axis=0)
    events = y @ C
    tally = state["Mb"].T @ C                       # per 0/1 term: rows with 1, their events
    nb = len(state["binary"])
    n1, e1 = tally[:nb], tally[nb:]
    for j in np.flatnonzero(events == 0):
        reasons[j] = f"no {state['outcome']} events in the resample"
    for r, jcol in enumerate(state["binary"]):
        for lev, nn, ee in ((1, n1[r], e1[r]), (0, N - n1[r], events - e1[r])):
            for j in np.flatnonzero((nn == 0) | (ee == 0)):
                if reasons[j] is None:
                    reasons[j] = (f"{state['names'][jcol]} is constant ({1 - lev}) in the resample"
                                  if nn[j] == 0 else
                                  f"no {state['outcome']} events among rows with "
                                  f"{state['names'][jcol]} = {lev}")
    good = np.flatnonzero([r is None for r in reasons])
    values = np.full((b, 4), np.nan)
    if not len(good):
        return values, reasons, (0, 0)
    Cg = C if len(good) == b else np.ascontiguousarray(C[:, good])
    if family in ("zip", "zinb"):
        vals, st, its = _zero_inflated_effects(state, Cg, N[good])
        for r, j in enumerate(good):
            if st[r] is not None:
                reasons[j] = st[r]
            elif not np.all(np.isfinite(vals[r])):
                reasons[j] = "the effect is not finite"
            else:
                values[j] = vals[r]
        return values, reasons, its
    B = np.full((X.shape[1], len(good)), np.nan)
    st = np.full(len(good), FAILED, dtype=np.int8)
    it_nb = 0
    pois = np.ones(len(good), dtype=bool)
    if family == "negbin":
        ctx = {"C": Cg, "Cy": Cg * y[:, None], "off": off, "y": y, "uy": state["uy"],
               "Ny": np.asarray(state["Y"].T @ Cg), "Ntot": N[good]}
        B_nb, _, st_nb, it_nb = _batched_negbin(X, XX, ctx, state["beta_nb"], state["tau_nb"],
                                                tol, maxiter, iu)
        pois = st_nb == POISSON
        B[:, ~pois], st[~pois] = B_nb[:, ~pois], st_nb[~pois]
    it_p = 0
    if pois.any():
        Cp = np.ascontiguousarray(Cg[:, pois])
        work = cache["work"]
        ctx = {"C": Cp, "g0": X.T @ (Cp * y[:, None]), "off": off}
        B_p, st_p, it_p = _batched_fit("poisson", X, XX, ctx, state["beta_p"], tol, maxiter,
                                       work, iu)
        B[:, pois], st[pois] = B_p, st_p
    # recycled predictions: A_t = scale * sum_i c_i exp(x_i(t)'beta) / sum_i c_i
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        a1 = state["scale"] * np.sum(Cg * np.exp(X1 @ B), axis=0) / N[good]
        a0 = state["scale"] * np.sum(Cg * np.exp(X0 @ B), axis=0) / N[good]
        vals = np.column_stack([a1 - a0, a1 / a0, a1, a0])
    labels = {RUNNING: "did not converge", RANK: "has a constant or collinear term",
              FAILED: "diverged"}
    for r, j in enumerate(good):
        if st[r] != CONVERGED:
            fam = "poisson" if pois[r] else family
            reasons[j] = f"the {fam} model {labels[int(st[r])]} in the resample"
        elif not np.all(np.isfinite(vals[r])):
            reasons[j] = "the effect is not finite"
        else:
            values[j] = vals[r]
    return values, reasons, (it_nb, it_p)


class _ColumnCounts:
    """A count outcome as a column, for the NB terms of many replicates at once:
    ``gamma_terms`` takes one theta per replicate and returns (rows, replicates) arrays.

    ``part`` picks the rows of one chunk of a segment (:func:`_zi_segments`); the chunks of
    a segment share ``memo``, so the gamma differences of the distinct counts are computed
    once per theta, not once per chunk."""

    def __init__(self, cnt, part=slice(None), memo=None):
        self.y, self.lfact = cnt.y[part, None], cnt.lfact[part, None]
        self.values, self.index = cnt.values, cnt.index[part]
        self._memo = {} if memo is None else memo

    def gamma_terms(self, th, order):
        key = (np.asarray(th).tobytes(), order)
        if self._memo.get("key") != key:
            self._memo.update(key=key, value=gamma_differences(self.values, th, order))
        return [g[self.index] for g in self._memo["value"]]


#: Largest (rows x distinct Hessian entries) for which a segment's row-wise design
#: products are kept (100 MB of floats); above it each chunk forms its own when the
#: Hessian is wanted (:func:`_pair_products`).
_PAIR_LIMIT = 12_500_000
#: Rows of a segment in one chunk (:func:`_zi_segments`).
_CHUNK_ROWS = 4096
#: The Hessian blocks of a zero-inflated model (count, zero part, log theta), each on or
#: above the diagonal.
_BLOCKS = (("e", "e"), ("z", "z"), ("e", "z"), ("t", "t"), ("e", "t"), ("z", "t"))


def _zi_segments(lik, C):
    """The likelihood's segments (zero and positive counts) cut into chunks of rows, each
    with what the batched derivatives reuse: log exposure as a column, ``theta``'s design
    (a column of ones), the chunk's row counts, the design columns and Hessian positions of
    each Hessian block (``index``: block -> (i, j, Hessian rows, Hessian columns)) and,
    where the segment is small enough, the row-wise products of the designs of each block
    (``pairs``: block -> (rows, q) array; else None, and :func:`_zi_derivatives` sums the
    blocks one replicate at a time).

    A chunk has :data:`_CHUNK_ROWS` rows, so that the twenty-odd (rows, replicates) arrays
    of per-row terms of a derivative stay in the processor's cache while they are computed
    and summed: at a million rows and two replicates, the derivatives of whole segments,
    streamed through memory, took 1.45 times as long (0.71 s against 0.49 s)."""
    kx, kz = lik.kx, lik.kz
    P = kx + kz + int(lik.has_theta)
    cols = {"e": np.arange(kx), "z": kx + np.arange(kz), "t": np.array([P - 1])}
    width = {"e": kx, "z": kz, "t": 1}
    index = {}                  # block -> (design columns i, j; Hessian rows, columns)
    for ki, kj in _BLOCKS:
        if (kj == "t" and not lik.has_theta) or width[ki] == 0 or width[kj] == 0:
            continue
        i, j = (np.triu_indices(width[ki]) if ki == kj
                else np.indices((width[ki], width[kj])).reshape(2, -1))
        index[(ki, kj)] = (i, j, cols[ki][i], cols[kj][j])
    segs = []
    for seg in lik.segments:
        n = len(seg["rows"])
        keep = n * P * (P + 1) // 2 <= _PAIR_LIMIT
        shared = None
        if lik.kind == "zi" and np.array_equal(seg["X"], seg["Z"]):
            # the zero part has the count part's terms: the products of both blocks and
            # across them are the same numbers, those of the count block (x_i x_j)
            i, j = np.indices((kx, kz)).reshape(2, -1)
            pos = {pair: r for r, pair in enumerate(zip(*np.triu_indices(kx)))}
            shared = np.array([pos[min(p, q), max(p, q)] for p, q in zip(i, j)])
        memo: dict = {}
        for part in row_spans(n, _CHUNK_ROWS):
            X = seg["X"][part]
            D = {"e": X, "z": seg["Z"][part] if seg["Z"] is not None else None,
                 "t": np.ones((X.shape[0], 1))}
            chunk = dict(name=seg["name"], X=X, Z=D["z"], off=seg["off"][part, None], D=D,
                         C=C[seg["rows"][part]], shared=shared, index=index,
                         cnt=_ColumnCounts(seg["cnt"], part, memo) if "cnt" in seg else None)
            chunk["pairs"] = _pair_products(chunk) if keep else None
            segs.append(chunk)
    return segs


def _pair_products(chunk) -> dict:
    """The row-wise products of the designs of each Hessian block of one chunk (block ->
    (rows, q) array; the columns ``i, j`` of :func:`_zi_segments`' ``index``: on and above
    the diagonal of a block on the Hessian's diagonal)."""
    D = chunk["D"]
    return {(ki, kj): D[ki][:, i] * D[kj][:, j]
            for (ki, kj), (i, j, _, _) in chunk["index"].items()}


def _zi_derivatives(lik, segs, Pm, active, order):
    """Log-likelihood (a,), and up to ``order`` the score (P, a) and Hessian (a, P, P), of
    the zero-inflated replicates ``active`` at their parameters ``Pm[:, active]``.

    The per-row derivatives are those of :class:`evalkit.models.count._Mixture`
    (``_segment_terms``) for every replicate's parameters at once, weighted by each
    replicate's row counts: score ``sum D_k' C d_k``, Hessian blocks
    ``D_k' diag(C d_kl) D_l``, each one matrix product of the row-wise design products
    (:func:`_zi_segments`) with the weights of all replicates, summed chunk by chunk."""
    kx, kz = lik.kx, lik.kz
    P = Pm.shape[0]
    a = len(active)
    B, G = Pm[:kx][:, active], Pm[kx:kx + kz][:, active]
    tau = Pm[-1, active] if lik.has_theta else None
    ll = np.zeros(a)
    g = np.zeros((P, a)) if order >= 1 else None
    H = np.zeros((a, P, P)) if order >= 2 else None
    sl = {"e": slice(0, kx), "z": slice(kx, kx + kz), "t": slice(P - 1, P)}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for seg in segs:
            L, d, dd = lik._segment_terms(seg, B, G, tau, order)
            Cs = seg["C"][:, active]
            ll += np.sum(Cs * L, axis=0)
            D = seg["D"]
            for key, v in d.items():
                g[sl[key]] += D[key].T @ (Cs * v)
            if not dd:
                continue
            if seg["pairs"] is None:
                # each replicate's blocks from the chunk's designs (in the cache): at a
                # million rows twice as fast as over whole segments, and faster than
                # forming the chunk's row-wise products first
                for (ki, kj), v in dd.items():
                    w = Cs * v
                    if kj == "t":                          # theta's design is a column of 1
                        H[:, sl[ki], P - 1] += (D[ki].T @ w).T
                        continue
                    for r in range(a):
                        H[r, sl[ki], sl[kj]] += D[ki].T @ (D[kj] * w[:, r:r + 1])
                continue
            if a > 1 and seg["shared"] is not None and ("e", "z") in dd:
                _shared_blocks(H, seg, Cs, dd)
            for key, v in dd.items():
                i, j = seg["index"][key][2:]
                H[:, i, j] += (seg["pairs"][key].T @ (Cs * v)).T
        if order >= 2:
            # blocks were filled on and above the diagonal: mirror them
            upper = np.triu(H)
            H = upper + np.transpose(np.triu(H, 1), (0, 2, 1))
    return ll, g, H


def _shared_blocks(H, seg, Cs, dd) -> None:
    """Add a segment's count, zero and count-by-zero Hessian blocks to ``H`` with one
    matrix product of the count block's design products (the zero part has the same terms,
    :func:`_zi_segments`), and take their weights out of ``dd``: a third of the products of
    three separate ones, the same sums (the product of one design row by one weight column
    does not depend on the other columns; needs two or more replicates, as one is a
    matrix-vector product that sums in another order)."""
    a = Cs.shape[1]
    keys = (("e", "e"), ("z", "z"), ("e", "z"))
    W = np.empty((Cs.shape[0], 3 * a))
    for r, key in enumerate(keys):
        np.multiply(Cs, dd.pop(key), out=W[:, r * a:(r + 1) * a])
    R = seg["pairs"][keys[0]].T @ W
    for r, key in enumerate(keys):
        i, j = seg["index"][key][2:]
        rows = seg["shared"] if key == ("e", "z") else slice(None)
        H[:, i, j] += R[rows, r * a:(r + 1) * a].T


def _trust_steps(A, gs, radius):
    """Maximisers of the quadratic models ``gs'd - d'A d / 2`` within ``||d|| <= radius``
    (one per replicate; ``A`` (a, P, P) symmetric, ``gs`` (a, P)).

    Where ``A`` is positive definite and its Newton step ``A^-1 gs`` is inside the radius
    that step is the answer; otherwise the step ``(A + lam I)^-1 gs`` on the boundary,
    ``lam`` found by bisection in the eigenbasis of ``A`` (Nocedal & Wright 2006, ch. 4).
    Returns the steps (a, P) and whether each is the Newton step."""
    ev, V = np.linalg.eigh(A)
    c = np.einsum("api,ap->ai", V, gs)                            # gradient in the eigenbasis
    with np.errstate(divide="ignore", invalid="ignore"):
        newton = (ev[:, 0] > 0) & (np.sqrt(np.sum((c / ev) ** 2, axis=1)) <= radius)
    lam = np.zeros(len(gs))
    bound = np.flatnonzero(~newton)                               # steps on the boundary
    if len(bound):
        cb, eb, rb = c[bound], ev[bound], radius[bound]
        lo = np.maximum(0.0, -eb[:, 0])
        hi = lo + np.sqrt(np.sum(cb * cb, axis=1)) / rb + 1e-300
        with np.errstate(divide="ignore", invalid="ignore"):  # unbounded at -(least eigenvalue)
            for _ in range(60):                                   # ||d(lam)|| falls in lam
                mid = 0.5 * (lo + hi)
                too_long = np.sum((cb / (eb + mid[:, None])) ** 2, axis=1) > rb ** 2
                lo, hi = np.where(too_long, mid, lo), np.where(too_long, hi, mid)
        lam[bound] = hi
    d = np.einsum("api,ai->ap", V, c / (ev + lam[:, None]))
    return d, newton


def _zi_newton(state, C):
    """Fit the zero-inflated replicates (columns of the row counts ``C``) at once by a
    trust-region Newton method from the full-sample estimates.

    The likelihood of a zero-inflated NB2 is often not concave at the full-sample
    estimates once the rows are resampled (the zero part and theta trade off along a
    flat ridge), so a plain Newton step there is no ascent direction. Each replicate
    instead takes the best step of the quadratic model within a trust region measured in
    the full fit's standard errors (:func:`_trust_steps`; first radius 4), kept only
    where the log-likelihood does not fall (a trial point with log theta outside
    ``count_model``'s bounds counts as -inf); the radius shrinks after poor steps and
    grows after good ones on its boundary (the rule on actual over predicted gain). A
    replicate is done, as in :func:`evalkit.models.count._maximize`, after a full Newton
    step taken from a Newton decrement below 1e-12 (where that step lands only the
    log-likelihood is computed, to keep or refuse the step: at a million members the
    derivatives there were a sixth of the bootstrap's time); one that is not within
    ``maxiter`` steps is left to :func:`_refit_one_by_one`. A replicate whose zero part
    separates the zeros at a point it has accepted (:func:`_zero_part_separates`) stops
    there: it is a failed replicate, and its coefficients would only run off further (at
    20,000 members such replicates took 40-90 more steps, and sometimes a refit, to stop
    the same way).

    Returns ``Pm`` (P, b), whether each replicate converged, whether its zero part
    separates, and the iterations.
    """
    lik = state["lik"]
    b = C.shape[1]
    s = state["p_scale"]
    Pm = np.repeat(state["p0"][:, None], b, axis=1)
    segs = _zi_segments(lik, C)
    converged = np.zeros(b, dtype=bool)
    separated = np.zeros(b, dtype=bool)
    radius = np.full(b, 4.0)                   # standard errors
    last_step = np.zeros((b, len(s)))          # each replicate's last accepted step
    last_decrement = np.zeros(b)               # its Newton decrement (0: not a Newton step)
    L, g, H = _zi_derivatives(lik, segs, Pm, np.arange(b), 2)
    alive = np.isfinite(L) & np.all(np.isfinite(g), axis=0) & np.all(np.isfinite(H), axis=(1, 2))
    it = 0
    for it in range(1, state["maxiter"] + 1):
        act = np.flatnonzero(alive & ~converged & ~separated)
        if not len(act):
            break
        # in the full fit's standard errors: q = p / se, so A = -H se se', gradient g se
        A = -H[act] / (s[:, None] * s[None, :])
        A = 0.5 * (A + np.transpose(A, (0, 2, 1)))
        gs = (g[:, act] / s[:, None]).T                               # (a, P)
        d, newton = _trust_steps(A, gs, radius[act])
        decrement = np.einsum("ap,ap->a", gs, d)
        d = _run_off(d, newton, decrement, last_step[act], last_decrement[act])
        pred = np.einsum("ap,ap->a", gs, d) - 0.5 * np.einsum("ap,apq,aq->a", d, A, d)
        trial = Pm[:, act] + (d / s[None, :]).T
        Pt = Pm.copy()
        Pt[:, act] = trial
        # a replicate's last step (a Newton step from a decrement below the threshold) needs
        # only the log-likelihood where it lands, to be kept; the others the derivatives too
        last = newton & (decrement < 1e-12)
        Lt = np.empty(len(act))
        gt = np.full((len(s), len(act)), np.nan)
        Ht = np.full((len(act), len(s), len(s)), np.nan)
        if last.any():
            Lt[last] = _zi_derivatives(lik, segs, Pt, act[last], 0)[0]
        if not last.all():
            Lt[~last], gt[:, ~last], Ht[~last] = _zi_derivatives(lik, segs, Pt, act[~last], 2)
        if lik.has_theta:
            Lt = np.where((trial[-1] > _TAU_MIN) & (trial[-1] < _TAU_MAX), Lt, -np.inf)
        La = L[act]
        accept = (np.isfinite(Lt) & (last | np.all(np.isfinite(gt), axis=0)
                                     & np.all(np.isfinite(Ht), axis=(1, 2)))
                  & (Lt >= La - 1e-12 * np.abs(La)))
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(pred > 1e-9, (Lt - La) / pred, 1.0)
        length = np.sqrt(np.sum(d * d, axis=1))
        for r, j in enumerate(act):
            if not accept[r]:
                radius[j] = 0.25 * length[r]
                alive[j] = radius[j] > 1e-10
                last_decrement[j] = 0.0        # the next step is not stretched (_run_off)
                continue
            Pm[:, j], L[j], g[:, j], H[j] = trial[:, r], Lt[r], gt[:, r], Ht[r]
            converged[j] = newton[r] and decrement[r] < 1e-12
            last_step[j], last_decrement[j] = d[r], decrement[r] if newton[r] else 0.0
            if rho[r] < 0.25:
                radius[j] = 0.25 * length[r]
            elif rho[r] > 0.75 and length[r] > 0.99 * radius[j]:
                radius[j] *= 2.0
        moved = act[accept]
        separated[moved] = _zero_part_separates(state, C, Pm[:, moved], moved)
    return Pm, converged, separated, it


#: Decrements of two successive Newton steps fall by about this factor where a
#: replicate's coefficients run off along a straight line (see :func:`_run_off`).
_RUN_OFF_RATIO = math.exp(-1.0)


def _run_off(d, newton, decrement, last_step, last_decrement):
    """The steps ``d`` (a, P), each stretched to the point where the replicate's Newton
    decrement would be below the convergence threshold (1e-12) where the replicate is
    running off along a straight line.

    Where a resample leaves a zero-inflation probability going to 0 for some group
    (no structural zeros there), the log-likelihood along the zero part's coefficients
    rises like ``L* - k exp(eta)`` as ``eta`` falls: every Newton step is the same step
    (one unit of ``eta``) and shrinks the Newton decrement by a factor ``e``, so such a
    replicate took some 20 more identical steps to reach the threshold (at 20,000 members a
    fifth of the ZINB replicates, about 45% of the bootstrap's time). A Newton step equal
    to the previous accepted one (to 1%) whose decrement fell by ``e`` (within 5%) is
    multiplied by the number of such steps still to take; the step is tried like any
    other (kept only if the log-likelihood does not fall; if refused, the replicate's next
    step is a plain one) and the replicate stops, as before, after a full Newton step from
    a decrement below 1e-12. Both ways end inside the convergence tolerance: on the demo's
    replicates the effects moved by at most 4e-11 relative, and the same replicates
    failed."""
    same = np.linalg.norm(d - last_step, axis=1) <= 0.01 * np.linalg.norm(d, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = decrement / last_decrement
    run = (newton & same & (decrement >= 1e-12) & (np.abs(ratio / _RUN_OFF_RATIO - 1) <= 0.05))
    if not run.any():
        return d
    steps = np.ceil(np.log(decrement[run] / 1e-12))
    d = d.copy()
    d[run] *= steps[:, None]
    return d


def _zero_inflated_effects(state, C, N):
    """Zero-inflated Poisson / NB2 replicates (columns of the row counts ``C``), fitted at
    once by :func:`_zi_newton` from the full-sample estimates; a replicate that does not
    converge there is refitted alone by ``count_model``'s maximiser
    (:func:`_refit_one_by_one`). Theta beyond 1e8 is refused as there ("theta grows
    without bound").

    Returns values (b, 4), a failure reason or None per replicate, and the iterations.
    """
    kx, kz = state["kx"], state["kz"]
    Pm, converged, separated, it = _zi_newton(state, C)
    reasons: list = [_SEPARATES if sep else None if c else
                     f"the {state['family']} model did not converge in the resample"
                     for c, sep in zip(converged, separated)]
    if state["lik"].has_theta:
        for j in np.flatnonzero(converged & (Pm[-1] <= _TAU_MIN + _TAU_MARGIN)):
            reasons[j] = f"the {state['family']} model did not converge in the resample"
    _refit_one_by_one(state, C, Pm, reasons)
    if state["lik"].has_theta:
        for j in np.flatnonzero(Pm[-1] > math.log(1e8)):
            if reasons[j] is None:
                reasons[j] = "theta grows without bound in the resample (no overdispersion)"
    for j in np.flatnonzero(_zero_part_separates(state, C, Pm)):
        if reasons[j] is None:
            reasons[j] = _SEPARATES
    # recycled predictions: A_t = scale * sum_i c_i (1 - pi_i(t)) exp(x_i(t)'beta) / sum c,
    # summed over stretches of rows (a few (rows, b) arrays of per-row terms at a time)
    A = []
    with np.errstate(over="ignore", invalid="ignore"):
        for Xt, Zt in ((state["X1"], state["Z1"]), (state["X0"], state["Z0"])):
            total = np.zeros(C.shape[1])
            for rows in row_spans(C.shape[0], _STRETCH_ROWS):
                m = np.exp(Xt[rows] @ Pm[:kx]) * special.expit(-(Zt[rows] @ Pm[kx:kx + kz]))
                total += np.sum(C[rows] * m, axis=0)
            A.append(state["scale"] * total / N)
        a1, a0 = A
        vals = np.column_stack([a1 - a0, a1 / a0, a1, a0])
    return vals, reasons, (it, 0)


_SEPARATES = ("the zero part separates the zeros in the resample (zero-inflation "
              "probabilities numerically 1): its coefficients and the effect are not identified")


def _zero_part_separates(state, C, Pm, cols=None) -> np.ndarray:
    """Whether each replicate's zero part gives some resampled row a zero-inflation
    probability numerically 1 (``1 - pi`` below R's ``glm.fit`` threshold of 10 machine
    epsilons), one boolean per column of ``C`` (or of ``C[:, cols]``, the replicates
    whose parameters ``Pm`` holds).

    There the zero part predicts those zeros perfectly (quasi-complete separation): its
    coefficients run off (to thousands, where an identified fit stays within tens), the
    likelihood is flat along them, and the counterfactual predictions ``(1 - pi) mu`` turn
    on where a maximiser happens to stop, down to the rounding of the linear algebra. Such a
    replicate is counted as failed rather than given an arbitrary effect. Probabilities
    numerically 0 are not a failure: ``(1 - pi)`` then tends to 1 and the predictions
    converge as the coefficients run off."""
    kx, kz = state["kx"], state["kz"]
    out = np.zeros(Pm.shape[1], dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for rows in row_spans(C.shape[0], _STRETCH_ROWS):
            kept = special.expit(-(state["Z"][rows] @ Pm[kx:kx + kz])) >= 10 * np.finfo(float).eps
            Cr = C[rows] if cols is None else C[rows, cols]
            out |= np.any(~kept & (Cr > 0), axis=0)          # some resampled row not kept
    return out


#: Rows per stretch of the separation check and the recycled predictions of a block, so
#: that their (rows, replicates) arrays stay small whatever the block (at 1M members and
#: blocks of 6, ~50 MB each in a thread otherwise).
_STRETCH_ROWS = 65_536


def _refit_one_by_one(state, C, Pm, reasons):
    """Refit, one at a time, the replicates the batched full Newton steps did not carry to
    convergence (their Hessian at the full-sample estimates is not negative definite, so
    a full step is no ascent direction), by ``count_model``'s safeguarded maximiser
    (:func:`evalkit.models.count._maximize`: line search, trust region, bounded theta) on
    the resampled rows. Fills ``Pm`` and clears the reason where that converges."""
    lik = state["lik"]
    y, X, Z = state["y"], state["X"], state["Z"]
    off = np.ravel(state["off"])
    for j, reason in enumerate(reasons):
        if reason is None or "did not converge" not in reason:
            continue
        rows = np.repeat(np.arange(C.shape[0]), C[:, j].astype(np.int64))
        sub = _Mixture("zi", lik.dist, y[rows], X[rows], off[rows], Z[rows])
        try:
            with np.errstate(all="ignore"):
                Pm[:, j], _ = _maximize(sub, state["p0"], f"{state['family']} (resample)")
        except EvalkitError as err:
            reasons[j] = (f"the {state['family']} model did not converge in the resample: "
                          f"{str(err).split(': ', 1)[-1].split('. ')[0]}")
        else:
            reasons[j] = None


@one_blas_thread
def bootstrap_count_effect(data: pd.DataFrame, formula: str, treatment: str,
                           family: str = "negbin", exposure: str | None = None,
                           n_boot: int = 1000, seed: int | None = None, strata=_DEFAULT,
                           ci: str | Sequence[str] = ("percentile", "bca"), alpha: float = 0.05,
                           n_jobs: int = 2, progress: bool = False, *, max_jackknife: int = 1000,
                           block_size: int | None = None, tol: float = 1e-10,
                           maxiter: int = 100, fit=None) -> BootstrapResult:
    r"""Bootstrap the recycled-prediction effect of a Poisson or NB2 count model, fast.

    The statistic is :meth:`evalkit.models.count.CountResult.effect` of
    :func:`evalkit.models.count.count_model` on each resample: with
    ``E_i(t) = exp(x_i(t)'beta)`` the predicted rate (per unit of ``exposure``, which
    enters as an offset) with the treatment set to ``t``,
    ``A_t = mean_i E_i(t)`` (times 1,000 with an exposure: per 1,000 member-months), the
    difference ``A_1 - A_0`` and the ratio ``A_1 / A_0``.

    As :func:`bootstrap_two_part` does for costs, every replicate is the full-sample model
    refitted with frequency weights (the row counts of its resample), and all replicates of
    a block are fitted together from the full-sample estimates: batched Newton steps for
    Poisson, and for the negative binomial batched Newton steps on the coefficients and
    ``log theta`` jointly (the maximum MASS::glm.nb reaches by alternating; see
    :func:`_batched_negbin`). A resample that shows no overdispersion (theta growing
    without bound) gets the Poisson fit, as :func:`count_model` advises. Zero-inflated
    models (``zip``, ``zinb``; the zero part with the same terms) take trust-region Newton
    steps (:func:`_zi_newton`) with the exact derivatives of
    :class:`evalkit.models.count._Mixture`, weighted by each replicate's row counts, with
    ``(1 - pi) mu`` as the predicted mean; a replicate they do not carry to convergence is
    refitted alone by ``count_model``'s maximiser. A resample whose zero part separates some
    zeros (zero-inflation probabilities numerically 1; :func:`_zero_part_separates`) is a
    failed replicate: its zero part is not identified and its effect would depend on where
    a maximiser stops. The other replicates equal refitting :func:`count_model` on the
    resampled rows (about 1e-8 relative) at a small part of the cost: a refit at 1M members
    takes 15-20 s.

    Parameters
    ----------
    data, formula, treatment
        As for :func:`bootstrap_two_part`; ``formula`` like ``"er_visits ~ treated + age"``.
    family : {"negbin", "poisson", "zinb", "zip"}
        Hurdle models have no batched path: bootstrap them with :func:`bootstrap` and a
        statistic that refits them.
    exposure : str, optional
        Person-time column (member-months), entered as ``log(exposure)`` offset; the
        statistics are then rates per 1,000 units of it.
    n_boot, seed, strata, ci, alpha, n_jobs, progress, max_jackknife, block_size, tol, maxiter
        As for :func:`bootstrap_two_part` (``n_jobs`` threads; strata default: the treatment,
        fixing arm sizes).
    fit : CountResult, optional
        The full-sample fit, when the caller has it: :func:`count_model` of ``formula``,
        ``family`` and ``exposure`` on the same rows (at a million members a zero-inflated
        fit takes 10-20 s). A fit of another family, exposure, formula or rows is an error.

    Returns
    -------
    BootstrapResult
        Statistics ``rate_difference_per_1000_mm``, ``rate_ratio``, ``rate_treated``,
        ``rate_control`` with an exposure (``difference``, ``ratio``, ``mean_treated``,
        ``mean_control`` without); ``extra["fit"]`` is the full-sample fit.
    """
    what = "bootstrap_count_effect"
    n_boot, seed, methods, alpha, n_jobs, max_jackknife, maxiter = _check_batched(
        what, n_boot, seed, ci, alpha, n_jobs, max_jackknife, maxiter, tol)
    if family not in BATCHED_COUNT_FAMILIES:
        raise ParamsError(f"{what}: family must be one of {', '.join(BATCHED_COUNT_FAMILIES)}, got "
                          f"{family!r}; bootstrap other count models with `bootstrap` and a "
                          "statistic that refits them.")
    if not isinstance(formula, str) or "~" not in formula or "|" in formula:
        raise ParamsError(f"{what}: formula must be a string like 'er_visits ~ treated + age' "
                          f"(no zero part: zip / zinb use the same terms in it), got {formula!r}.")
    strata_given = strata is not _DEFAULT
    frame, dropped = _complete_rows(data, formula, treatment, strata if strata_given else None,
                                    exposure, "exposure", what)
    if not strata_given:
        strata = treatment

    if fit is None:
        fit = count_model(frame, formula, family=family, exposure=exposure)
    else:
        _check_given_fit(what, fit, frame, formula, family, exposure)
    eff = fit.effect(treatment, alpha=alpha)
    names_out = COUNT_STATISTICS[exposure is not None]
    estimate = pd.Series(dict(zip(names_out, [eff.at(names_out[0]), eff.at(names_out[1]),
                                              *_count_means(fit, treatment)])), dtype=float)
    design = _design(frame, strata, None, what)
    model = fit.model
    y, X, names, _ = build_matrix(formula, frame, what)
    f1, f0 = counterfactual_frames(frame, treatment, what)
    X1, X0 = design_matrices(model.count_info, f1, f0)
    k = X.shape[1]
    iu = np.triu_indices(k)
    # the row-wise design products of the batched Poisson / NB information (the
    # zero-inflated fits sum theirs chunk by chunk: 360 MB at 1M rows and 9 terms)
    XX = (None if family in ("zip", "zinb") else
          np.ascontiguousarray((X[:, :, None] * X[:, None, :])[:, iu[0], iu[1]]))
    y = np.asarray(y, dtype=float)
    off = (np.log(frame[exposure].to_numpy(dtype=float)) if exposure is not None
           else np.zeros(len(frame)))[:, None]
    binary = binary_columns(X, names)
    Xb = X[:, binary]
    uy, ycode = np.unique(y, return_inverse=True)
    state = dict(X=X, X1=X1, X0=X0, XX=XX, y=y, off=off, iu=iu, names=names, binary=binary,
                 Mb=np.column_stack([Xb, Xb * y[:, None]]), family=family,
                 outcome=formula.split("~", 1)[0].strip(), tol=float(tol), maxiter=maxiter,
                 scale=1000.0 if exposure is not None else 1.0, uy=uy,
                 Y=_indicator(ycode, len(uy)))
    if family in ("zip", "zinb"):
        Z, Z1, Z0 = design_matrices(model.zero_info, frame, f1, f0)
        state.update(lik=_Mixture("zi", "negbin" if family == "zinb" else "poisson", y, X,
                                  off[:, 0], Z),
                     kx=k, kz=Z.shape[1], Z=Z, Z1=Z1, Z0=Z0,
                     p0=np.asarray(model.params, dtype=float))
        # the replicates' steps are measured in the full fit's (model-based) standard errors
        state["p_scale"] = 1.0 / np.sqrt(np.diag(model.vcov))
    elif family == "negbin":
        state.update(beta_nb=np.asarray(model.params[:k], dtype=float),
                     tau_nb=math.log(fit.theta),
                     beta_p=np.asarray(count_model(frame, formula, family="poisson",
                                                   exposure=exposure).model.params[:k], dtype=float))
    else:
        state["beta_p"] = np.asarray(model.params[:k], dtype=float)

    # a zero-inflated block keeps a few (rows, b) arrays (row counts, predictions); its
    # per-row terms are summed chunk by chunk (_zi_segments). At 1M members and 24
    # replicates in two threads: blocks of 2 took 27.2 s (+1.34 GB), of 6 20.6 s
    # (+1.56 GB), of 10 21.1 s (+1.96 GB): each evaluation walks the chunks in Python
    block_size = _block_size(block_size, len(frame), n_boot, what,
                             6_000_000 if family in ("zip", "zinb") else 10_000_000)
    reps, jack, labels, failures, max_iter, jack_text = _run_blocks(
        _count_block, state, design, n_boot, seed, block_size, methods, max_jackknife, n_jobs,
        progress, f"{family} bootstrap", len(names_out), what)
    se, bias, z0, acc, intervals = _summaries(estimate, reps, methods, alpha, jack, labels,
                                              stacklevel=4)
    extra = _design_extra(design, jack_text, n_jobs=n_jobs, block_size=block_size,
                          max_iterations={family: max_iter[0], "poisson": max_iter[1]})
    extra.update(formula=formula, treatment=treatment, family=family, exposure=exposure,
                 dropped=dropped, fit=fit)
    method = (f"bootstrap of the recycled-prediction effect of {treatment!r} ({family} "
              f"regression{', log(' + exposure + ') offset' if exposure else ''}; "
              f"{_design_text(design)}; all replicates fitted together from the full-sample "
              "fit by batched Newton steps)")
    return BootstrapResult(
        estimate=estimate, replicates=pd.DataFrame(reps, columns=list(names_out)), std_error=se,
        intervals=intervals, n_boot=n_boot, seed=seed, alpha=alpha, bias=bias, z0=z0,
        acceleration=acc, n_failed=int(sum(failures.values())), failures=dict(failures),
        strata=design.strata, cluster=None, n_units=design.n_units, method=method, extra=extra)


def _check_given_fit(what, fit, frame, formula, family, exposure) -> None:
    """Refuse a full-sample fit that is not ``count_model(frame, formula, family=family,
    exposure=exposure)``: its family, exposure, terms and rows must be these."""
    model = getattr(fit, "model", None)
    expected = formula + (f" + offset(log({exposure}))" if exposure else "")
    if family in ("zip", "zinb"):                  # the zero part has the same terms
        expected += " | " + formula.split("~", 1)[1].strip()
    found = (getattr(model, "family", None), getattr(model, "exposure", None),
             getattr(fit, "formula", None))
    if found != (family, exposure, expected):
        raise ParamsError(f"{what}: the fit given is not count_model({expected!r}, "
                          f"family={family!r}): it is {found[2]!r}, family {found[0]!r}.")
    cols = [c for c in frame.columns if c in model.frame.columns]
    if len(model.frame) != len(frame) or not model.frame[cols].reset_index(drop=True).equals(
            frame[cols].reset_index(drop=True)):
        raise ParamsError(f"{what}: the fit given was made on other rows ({len(model.frame):,}) "
                          f"than the {len(frame):,} complete rows of the data.")


def _count_means(fit, treatment) -> tuple[float, float]:
    """The two averaged predictions (treated, control) of a count model's effect."""
    m = fit.model
    s = 1000.0 / m.frame[m.exposure].to_numpy(dtype=float) if m.exposure is not None \
        else np.ones(len(m.frame))
    f1, f0 = counterfactual_frames(m.frame, treatment, "effect")
    return m.mean_and_gradient(f1, s)[0], m.mean_and_gradient(f0, s)[0]


def _indicator(codes: np.ndarray, levels: int):
    """Sparse (n, levels) 0/1 matrix of integer codes (the distinct counts of each row)."""
    return sparse.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)),
                             shape=(len(codes), levels))


