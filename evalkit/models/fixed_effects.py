"""Linear and Poisson regressions with unit fixed effects absorbed, for
difference-in-differences on large panels.

The unit effects are never columns: the linear fit demeans within units
(:func:`fit_gaussian_fe`), the Poisson fit concentrates them out (:func:`fit_poisson_fe`);
both return the bread and the cluster sums of the scores of the dummy-variable model, so
:func:`evalkit.models.effects.sandwich` gives its cluster-robust variance exactly.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import linalg, sparse, special

from evalkit.errors import ConvergenceError, DataValidationError

__all__ = ["IndicatorDesign", "PanelData", "fe_fit", "fit_gaussian_fe", "fit_poisson_fe"]

_NEWTON_MAXITER = 100


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



class IndicatorDesign:
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


class PanelData:
    """Outcome, offset, unit and cluster codes of a panel, as the fixed-effects fits use
    them; the unit effects are never columns (see :func:`fit_gaussian_fe`)."""

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

    def cluster_scores(self, X: IndicatorDesign, e, xbar):
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


def fit_gaussian_fe(d: PanelData, X: IndicatorDesign, names, what):
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


def fit_poisson_fe(d: PanelData, X: IndicatorDesign, names, what):
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


def fe_fit(d, X, names, family, what):
    """:func:`fit_gaussian_fe` or :func:`fit_poisson_fe`, by ``family``."""
    if family == "gaussian":
        return fit_gaussian_fe(d, X, names, what)
    return fit_poisson_fe(d, X, names, what)
