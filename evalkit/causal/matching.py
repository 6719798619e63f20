"""Greedy nearest-neighbour matching on the propensity score, as MatchIt >= 4.5.4 does it.

Why by hand: no maintained Python library reproduces MatchIt's greedy algorithm (its
sort order, matching order and tie rule), and matched pairs must agree with R exactly
for the estimates to agree.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from evalkit.causal.balance import balance as _balance
from evalkit.causal.propensity import (
    PropensityScore,
    check_treatment,
    propensity,
    split_formula,
)
from evalkit.errors import DataValidationError, ParamsError, StatisticalWarning

_ORDERS = ("largest", "smallest", "random", "data")


@dataclass(frozen=True, eq=False)
class MatchResult:
    """A matched sample as a value.

    Attributes
    ----------
    data : DataFrame
        Copy of the input rows that were matched (weight > 0), in input order, with
        three added columns: ``distance`` (the score matched on), ``weights`` (matching
        weights) and ``subclass`` (matched-set id; missing when matching with
        replacement, where sets overlap).
    pairs : DataFrame
        One row per match: ``subclass``, ``treated`` and ``control`` (input index labels),
        ``match_number`` (1..ratio), ``distance_treated``, ``distance_control`` and
        ``abs_difference``. For ``estimand="ATC"`` the focal units are the controls, but
        the columns keep their treated/control meaning.
    weights : Series
        Matching weights aligned to the input index (0 = not matched or left out).
    subclass : Series
        Matched-set id aligned to the input index (<NA> when unmatched).
    n : DataFrame
        Sample sizes: rows ``all``, ``matched``, ``unmatched``, ``dropped``;
        columns ``control``, ``treated``.
    propensity : PropensityScore
        The fitted score (``propensity.fit`` holds the logistic regression).
    caliper : float or None
        Caliper in the units of ``distance`` (after multiplying by the SD).
    unmatched_focal : Index
        Focal units (treated for ATT) left without a match.
    """

    data: pd.DataFrame
    pairs: pd.DataFrame
    weights: pd.Series
    subclass: pd.Series
    n: pd.DataFrame
    propensity: PropensityScore
    treatment: str
    formula: str
    estimand: str
    ratio: int
    replace: bool
    order: str
    caliper: float | None
    caliper_sd_units: float | None
    exact: tuple = ()
    distance: str = "ps"
    unmatched_focal: pd.Index = field(default_factory=lambda: pd.Index([]))
    dropped: dict = field(default_factory=dict)
    # the rows used and the score matched on, kept so balance() needs no arguments
    _source: pd.DataFrame | None = field(default=None, repr=False)
    _distance_series: pd.Series | None = field(default=None, repr=False)
    # balance() on the propensity formula, computed once: an estimate that reuses the
    # design (each outcome, each negative control) reports the same table
    _default_balance: list = field(default_factory=list, repr=False)

    @property
    def n_matched_treated(self) -> int:
        return int(self.n.loc["matched", "treated"])

    @property
    def n_matched_control(self) -> int:
        return int(self.n.loc["matched", "control"])

    def balance(self, covariates=None, **kwargs):
        """Balance before and after matching (see :func:`evalkit.causal.balance`).

        ``covariates`` defaults to the propensity-score formula; the ``distance`` row is
        the score matched on.
        """

        covs = self.formula if covariates is None else covariates
        src = self.propensity.used
        if self._source is None:  # pragma: no cover - _source is always set by match()
            raise ParamsError("this MatchResult has no source data; call balance() directly.")
        return balance_once(self._default_balance, covariates is None and not kwargs, lambda: _balance(
            self._source, self.treatment, covs, weights=self.weights.loc[src],
            estimand=self.estimand, distance=self._distance_series,
            subclass=None if self.replace else self.subclass.loc[src], **kwargs))

    def to_frame(self) -> pd.DataFrame:
        return self.data.copy()

    def summary(self) -> str:
        cal = "" if self.caliper is None else (
            f", caliper {self.caliper_sd_units:g} SD = {self.caliper:.6g}")
        lines = [
            f"nearest-neighbour matching on {self.distance} ({self.treatment} ~ {self.formula})",
            f"estimand {self.estimand}, {self.ratio}:1, "
            f"{'with' if self.replace else 'without'} replacement, order '{self.order}'{cal}"
            + (f", exact on {list(self.exact)}" if self.exact else ""),
            self.n.to_string(),
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{self.summary()}</pre>"


def balance_once(memo: list, default: bool, compute):
    """A design's balance on its own formula (``default``), computed once into ``memo`` and
    handed out as copies whose tables the caller may change; any other balance computed."""
    if not default:
        return compute()
    if not memo:
        memo.append(compute())
    bal = memo[0]
    return replace(bal, before=bal.before.copy(),
                   after=None if bal.after is None else bal.after.copy(),
                   sd_denominator=bal.sd_denominator.copy(), n=bal.n.copy())


# --------------------------------------------------------------------------------------
# the greedy algorithm on one exact-matching stratum
# --------------------------------------------------------------------------------------
def _find(ptr: list, p: int, n: int) -> int:
    """Follow ``ptr`` from ``p`` to the nearest available position (path compression).

    ``ptr[p] == p`` marks an available control; -1 / n mean "none on this side".
    """
    root = p
    while 0 <= root < n and ptr[root] != root:
        root = ptr[root]
    while 0 <= p < n and ptr[p] != p:  # compress
        nxt = ptr[p]
        ptr[p] = root
        p = nxt
    return root


def _greedy_stratum(dist: np.ndarray, focal: np.ndarray, ratio: int, replace: bool,
                    caliper: float | None, order: str, rng: np.random.Generator | None):
    """Match within one stratum; returns list of (focal_pos, other_pos, round) in input order.

    Algorithm (MatchIt >= 4.5.4, ``nn_matchC_vec``):

    * sort all units by distance ascending, ties in data order (stable);
    * visit focal units in the requested order (``largest``: decreasing distance, ties in
      data order), and for ratio k repeat the whole pass k times (round r gives every
      focal unit its r-th match before any gets its (r+1)-th);
    * for a focal unit take the nearest still-available non-focal unit on its left
      (lower sorted position) and on its right; drop a candidate farther than the
      caliper; keep the closer, the LEFT one on an exact tie;
    * without replacement a used unit is no longer available; with replacement every
      unit stays available but a focal unit never takes the same unit twice.
    """
    n = len(dist)
    srt = np.argsort(dist, kind="stable")               # sorted position -> unit
    pos = np.empty(n, dtype=np.int64)
    pos[srt] = np.arange(n)                              # unit -> sorted position
    d_sorted = dist[srt]
    ctrl_sorted = ~focal[srt]
    focal_units = np.flatnonzero(focal)
    if order == "largest":
        visit = focal_units[np.argsort(-dist[focal_units], kind="stable")]
    elif order == "smallest":
        visit = focal_units[np.argsort(dist[focal_units], kind="stable")]
    elif order == "random":
        visit = focal_units[rng.permutation(len(focal_units))]
    else:
        visit = focal_units
    out = []
    if replace:
        # each focal unit independently walks outwards from its position
        prev_c = np.where(ctrl_sorted, np.arange(n), -1)
        prev_c = np.maximum.accumulate(prev_c)           # nearest control at or left of p
        nxt = np.where(ctrl_sorted, np.arange(n), n)
        next_c = np.minimum.accumulate(nxt[::-1])[::-1]  # nearest control at or right of p
        for u in focal_units:                            # order is irrelevant here
            p = pos[u]
            lft = prev_c[p - 1] if p > 0 else -1
            rgt = next_c[p + 1] if p + 1 < n else n
            du = dist[u]
            for r in range(ratio):
                dl = abs(du - d_sorted[lft]) if lft >= 0 else np.inf
                dr = abs(du - d_sorted[rgt]) if rgt < n else np.inf
                if caliper is not None:
                    if dl > caliper:
                        dl = np.inf
                    if dr > caliper:
                        dr = np.inf
                if dl == np.inf and dr == np.inf:
                    break
                if dl <= dr:
                    out.append((u, srt[lft], r))
                    lft = prev_c[lft - 1] if lft > 0 else -1
                else:
                    out.append((u, srt[rgt], r))
                    rgt = next_c[rgt + 1] if rgt + 1 < n else n
        return out
    # plain lists: the loop below touches one element at a time
    left = np.where(ctrl_sorted, np.arange(n), np.arange(n) - 1).tolist()
    right = np.where(ctrl_sorted, np.arange(n), np.arange(n) + 1).tolist()
    d_list = d_sorted.tolist()
    srt_list = srt.tolist()
    pos_list = pos.tolist()
    dist_list = dist.tolist()
    inf = float("inf")
    n_avail = int(ctrl_sorted.sum())
    for r in range(ratio):
        for u in visit.tolist():
            if n_avail == 0:
                break
            p = pos_list[u]
            du = dist_list[u]
            lft = _find(left, p - 1, n) if p > 0 else -1
            rgt = _find(right, p + 1, n) if p + 1 < n else n
            dl = abs(du - d_list[lft]) if lft >= 0 else inf
            dr = abs(du - d_list[rgt]) if rgt < n else inf
            if caliper is not None:
                if dl > caliper:
                    dl = inf
                if dr > caliper:
                    dr = inf
            if dl == inf and dr == inf:
                continue
            k = lft if dl <= dr else rgt
            out.append((u, srt_list[k], r))
            left[k] = k - 1                               # k is used up
            right[k] = k + 1
            n_avail -= 1
    return out


def _matching_weights(n: int, focal: np.ndarray, fa: np.ndarray, fb: np.ndarray):
    """MatchIt's matching weights from (focal, matched) position pairs.

    A matched focal unit gets 1; a non-focal unit gets the sum, over the focal units it
    was matched to, of 1 / (number of matches of that focal unit); non-focal weights are
    then scaled to sum to the number of matched non-focal units. Returns (weights,
    matches per unit).
    """
    k_of = np.bincount(fa, minlength=n)
    w = np.zeros(n)
    w[k_of > 0] = 1.0
    np.add.at(w, fb, 1.0 / k_of[fa])
    other = ~focal
    sw = w[other].sum()
    n_pos = int(np.sum(w[other] > 0))
    if sw > 0 and sw != n_pos:
        w[other] *= n_pos / sw
    return w, k_of


def _exact_strata(data: pd.DataFrame, exact) -> tuple[tuple, np.ndarray]:
    if exact is None:
        return (), np.zeros(len(data), dtype=np.int64)
    if isinstance(exact, str):
        cols = [c.strip() for c in split_formula(exact).split("+")]
    else:
        cols = list(exact)
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise DataValidationError(
            f"match: exact-matching column(s) {missing} are not in the data.",
            [{"table": "data", "column": c, "reason": "missing_column", "count": 1,
              "examples": []} for c in missing])
    n_na = int(data[cols].isna().any(axis=1).sum())
    if n_na:
        raise DataValidationError(
            f"match: {n_na} rows have missing values in the exact-matching column(s) {cols}; "
            "fill or drop them first (there is no exact match for a missing value).")
    strata = data.groupby(cols, sort=True, dropna=False).ngroup().to_numpy()
    return tuple(cols), strata


def match(data: pd.DataFrame, treatment: str, formula: str, method: str = "nearest",
          ratio: int = 1, replace: bool = False, caliper: float | None = None,
          exact=None, order: str | None = None, estimand: str = "ATT",
          distance: str = "ps", seed: int | None = None) -> MatchResult:
    """Greedy nearest-neighbour matching on the propensity score (MatchIt's ``nearest``).

    Each focal unit (treated, for the ATT) is paired, one at a time, with the closest
    available comparison unit on the propensity score; unmatched comparison units are
    discarded. The matched sample estimates the average treatment effect in the treated
    (ATT) when covariate balance is achieved.

    This reproduces ``MatchIt::matchit(formula, data, method = "nearest",
    distance = "glm")`` of MatchIt >= 4.5.4 pair for pair (4.5.1 - 4.5.3 had a bug that
    ignored calipers):

    1. the score is a logistic regression of treatment on ``formula``
       (:func:`~evalkit.causal.propensity`);
    2. all units are sorted by score (ties kept in data order); focal units are visited
       in ``order``: ``"largest"`` score first (MatchIt's default for the ATT),
       ``"smallest"``, ``"random"`` (``seed``) or ``"data"``;
    3. each focal unit takes the nearest unused comparison unit just below or just above
       it; the one below wins an exact tie; a candidate farther than the caliper is not
       eligible; if neither is eligible the unit stays unmatched;
    4. with ``ratio = k`` the pass is repeated k times, so every focal unit gets its first
       match before any gets its second.

    Weights follow MatchIt: a matched focal unit has weight 1; a comparison unit gets
    the sum over the focal units it serves of 1/(number of matches of that focal unit),
    then the comparison weights are scaled to sum to the number of matched comparison
    units. 1:1 matching without replacement gives all weights 1.

    Parameters
    ----------
    data : DataFrame
        One row per unit; not modified. Rows with missing values in the treatment or a
        covariate are left out (DataDroppedWarning).
    treatment : str
        0/1 treatment column.
    formula : str
        Propensity-score covariates: a right-hand side (``"age + educ + C(race)"``) or
        ``"treat ~ ..."``.
    method : {"nearest"}
        Only greedy nearest-neighbour matching is implemented.
    ratio : int
        Number of comparison units per focal unit (k:1 matching).
    replace : bool
        Match with replacement (a comparison unit may serve several focal units). As in
        MatchIt, ``order`` is then irrelevant and set to ``"data"``; no ``subclass``.
    caliper : float, optional
        Maximum allowed distance in standard deviations of the score, where the SD is
        the sample SD (n - 1) of the score over all units used (both arms), as MatchIt's
        ``std.caliper = TRUE``. E.g. 0.2 (Austin 2011, with ``distance="logit"``).
    exact : str or list of str, optional
        Columns on which matches must agree exactly (e.g. ``["female", "region"]``);
        matching is done separately within each combination of values.
    order : {"largest", "smallest", "random", "data"}, optional
        Order in which focal units are matched; default ``"largest"`` for the ATT and
        ``"smallest"`` for the ATC (MatchIt's defaults).
    estimand : {"ATT", "ATC"}
        ``"ATC"`` swaps roles: each control is matched to treated units.
    distance : {"ps", "logit"}
        Match on the score itself (MatchIt's default) or on its logit (linear predictor).
    seed : int, optional
        Seed for ``order="random"`` (numpy Generator; R's stream is not reproduced).

    Returns
    -------
    MatchResult

    Examples
    --------
    >>> m = match(lalonde, "treat", "age + educ + race + married + nodegree + re74 + re75")
    >>> m.n_matched_treated, m.data["weights"].sum()                  # doctest: +SKIP
    (185, 370.0)
    >>> m.balance().after["smd"]                                      # doctest: +SKIP

    References
    ----------
    Ho DE, Imai K, King G, Stuart EA (2011). MatchIt: nonparametric preprocessing for
    parametric causal inference. J Stat Softw 42(8).
    Austin PC (2011). Optimal caliper widths for propensity-score matching when
    estimating differences in means and differences in proportions in observational
    studies. Pharm Stat 10:150-161.
    """
    if method != "nearest":
        raise ParamsError(f"match: method '{method}' is not implemented; use method='nearest'.")
    estimand = str(estimand).upper()
    if estimand not in ("ATT", "ATC"):
        raise ParamsError(f"match: estimand must be 'ATT' or 'ATC' for matching, not '{estimand}'. "
                          "For the ATE use weights(..., estimand='ATE').")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)) or ratio < 1:
        raise ParamsError(f"match: ratio must be a whole number >= 1, not {ratio!r}.")
    ratio = int(ratio)
    if order is None:
        order = "largest" if estimand == "ATT" else "smallest"
    if order not in _ORDERS:
        raise ParamsError(f"match: order must be one of {_ORDERS}, not '{order}'.")
    if distance not in ("ps", "logit"):
        raise ParamsError(f"match: distance must be 'ps' or 'logit', not '{distance}'.")
    if caliper is not None:
        caliper = float(caliper)
        if not np.isfinite(caliper) or caliper <= 0:
            raise ParamsError(f"match: caliper must be a positive number of SDs, not {caliper}.")
    check_treatment(data, treatment)
    for col in ("weights", "subclass", "distance"):
        if col in data.columns:
            raise DataValidationError(
                f"match: the data already has a column '{col}', which the matched data adds. "
                "Rename it first.")

    ps = propensity(data, treatment, formula)
    used = ps.used
    sub = data.loc[used]
    exact_cols, strata = _exact_strata(sub, exact)
    dist_all = ps.scores if distance == "ps" else ps.linear_predictor
    dist = dist_all.loc[used].to_numpy(dtype=float)
    t = sub[treatment].astype(float).to_numpy().astype(int)
    focal_val = 1 if estimand == "ATT" else 0
    focal = t == focal_val
    if replace:
        order = "data"                                    # as MatchIt when reuse.max >= n1
    cal = None
    if caliper is not None:
        cal = caliper * float(np.std(dist, ddof=1))
    rng = np.random.default_rng(seed) if order == "random" else None

    n_focal, n_other = int(focal.sum()), int((~focal).sum())
    arm = ("treated", "control") if estimand == "ATT" else ("control", "treated")
    triples = []
    levels = np.unique(strata)
    common = [s for s in levels if focal[strata == s].any() and (~focal[strata == s]).any()]
    if exact_cols and not common:
        raise DataValidationError(
            f"match: no stratum of {list(exact_cols)} contains both treated and control units; "
            "no matches are possible. Use fewer exact-matching columns.")
    if not replace:
        short = [s for s in common if (~focal[strata == s]).sum() < focal[strata == s].sum() * ratio]
        if (exact_cols and short) or (not exact_cols and n_other < n_focal * ratio):
            where = " in some exact strata" if exact_cols else ""
            warnings.warn(
                f"match: fewer {arm[1]} than {arm[0]} units (x ratio {ratio}){where}; not all "
                f"{arm[0]} units will get {ratio} match(es). Consider replace=True or ATC.",
                StatisticalWarning, stacklevel=2)
    for s in common:
        idx = np.flatnonzero(strata == s)
        res = _greedy_stratum(dist[idx], focal[idx], ratio, replace, cal, order, rng)
        triples.extend((idx[a], idx[b], r) for a, b, r in res)

    # ---- bookkeeping: weights and subclasses, as MatchIt's weights.matrix / mm2subclass
    n = len(sub)
    if not triples:
        raise DataValidationError(
            "match: no units were matched (the caliper may be too narrow, or the arms do not "
            "overlap). Widen the caliper or check overlap with overlap_plot().")
    fa_all = np.fromiter((x[0] for x in triples), dtype=np.int64, count=len(triples))
    fb_all = np.fromiter((x[1] for x in triples), dtype=np.int64, count=len(triples))
    w, k_of = _matching_weights(n, focal, fa_all, fb_all)

    matched_focal = np.flatnonzero(k_of > 0)               # in data order
    sub_id = np.full(n, -1, dtype=np.int64)
    if not replace:
        sub_id[matched_focal] = np.arange(1, len(matched_focal) + 1)
        sub_id[fb_all] = sub_id[fa_all]

    labels = sub.index
    # pairs table, ordered by focal data order then match number
    rounds = np.fromiter((x[2] for x in triples), dtype=np.int64, count=len(triples))
    o = np.lexsort((rounds, fa_all))
    fa, fb, rounds = fa_all[o], fb_all[o], rounds[o]
    tr_pos = fa if estimand == "ATT" else fb
    co_pos = fb if estimand == "ATT" else fa
    pairs = pd.DataFrame({
        "subclass": (pd.array(sub_id[fa], dtype="Int64") if not replace
                     else pd.Series(pd.NA, index=range(len(fa)), dtype="Int64").array),
        "treated": labels[tr_pos],
        "control": labels[co_pos],
        "match_number": rounds + 1,
        "distance_treated": dist[tr_pos],
        "distance_control": dist[co_pos],
        "abs_difference": np.abs(dist[tr_pos] - dist[co_pos]),
    })

    weights = pd.Series(0.0, index=data.index, name="weights")
    weights.loc[used] = w
    sc = pd.array(np.where(sub_id > 0, sub_id, 0), dtype="Int64")
    sc[sub_id <= 0] = pd.NA
    subclass = pd.Series(sc, index=used, name="subclass").reindex(data.index)
    keep = w > 0
    mdata = sub.loc[keep].copy()
    mdata["distance"] = dist[keep]
    mdata["weights"] = w[keep]
    mdata["subclass"] = sc[keep]

    t_all = data[treatment]
    t_dropped = t_all.loc[t_all.index.difference(used)]
    n_tab = pd.DataFrame(
        {arm: [int((t == g).sum()), int(((t == g) & keep).sum()), int(((t == g) & ~keep).sum()),
               int((t_dropped == g).sum())] for arm, g in (("control", 0), ("treated", 1))},
        index=["all", "matched", "unmatched", "dropped"])
    unmatched_focal = labels[np.flatnonzero(focal & (k_of == 0))]
    return MatchResult(
        data=mdata, pairs=pairs, weights=weights, subclass=subclass, n=n_tab, propensity=ps,
        treatment=treatment, formula=ps.formula, estimand=estimand, ratio=ratio,
        replace=bool(replace), order=order, caliper=cal, caliper_sd_units=caliper,
        exact=exact_cols, distance=distance, unmatched_focal=unmatched_focal,
        dropped=dict(ps.dropped), _source=sub, _distance_series=dist_all.loc[used])
