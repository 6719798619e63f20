"""Nonparametric bootstrap: any statistic, and fast paths for the cost and count effects.

The bootstrap estimates the sampling distribution of a statistic by recomputing it on
many data sets drawn *with replacement* from the data at hand (Efron & Tibshirani 1993).
Three entry points share one resampling scheme and one set of interval methods:

* :func:`bootstrap` -- any function ``statistic(df) -> float or dict of floats``,
  recomputed on explicitly resampled copies of the data (in parallel processes);
* :func:`evalkit.models.twopart_bootstrap.bootstrap_two_part` -- the two-part cost effect of
  :func:`evalkit.models.twopart.two_part` (recycled-prediction difference and ratio of
  mean cost). Resampling a data set is the same as giving each row a *count* (how often it
  was drawn), so every replicate is a weighted fit; all replicates are fitted together by
  batched Newton / Fisher scoring in numpy, warm-started from the full-sample fit, which
  is more than ten times faster than refitting one replicate at a time and gives the same
  numbers (the batched solvers are in :mod:`evalkit.models.batched`, the resampling
  engine shared by all three in :mod:`evalkit.models.resample`);
* :func:`evalkit.models.count_bootstrap.bootstrap_count_effect` -- the same for the
  recycled-prediction rate difference and ratio of a Poisson, NB2, ZIP or ZINB count model
  (:func:`evalkit.models.count.count_model`).

Resampling designs
------------------
* plain: draw ``n`` rows with replacement;
* stratified (``strata=``): draw within each stratum as many units as it has, so stratum
  sizes are fixed -- e.g. resample within each arm, keeping the arm sizes of the study;
* clustered (``cluster=``): draw whole clusters (programme, site, matched pair) with
  replacement, keeping every row of a drawn cluster; with ``strata`` too, clusters are
  drawn within strata (each cluster must lie in one stratum).

Reproducibility: all draws come, replicate after replicate, from one
``numpy.random.Generator`` seeded with ``seed``, in the main process; workers only
compute. The same seed therefore gives the same replicates whatever ``n_jobs``.
For a single unstratified sample the draws are those of ``scipy.stats.bootstrap`` with
the same seed (``rng.integers(0, n, (n_boot, n))``).

Intervals (``ci=``; level ``1 - alpha``)
----------------------------------------
With ``theta`` the estimate on the full data and ``theta*_b`` the ``B`` replicates:

* ``percentile``: the ``alpha/2`` and ``1 - alpha/2`` quantiles of ``theta*``
  (linear interpolation, numpy's and scipy's default);
* ``bca`` (bias-corrected and accelerated; Efron 1987): the quantiles at
  ``Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q)))`` for ``q = alpha/2, 1 - alpha/2``, with
  ``z0 = Phi^-1(share of theta* below theta)`` (ties count half) and the acceleration
  ``a = sum U^3 / (6 (sum U^2)^1.5)`` from jackknife influence values
  ``U_i = (m_h - 1)(mean_h theta_(.) - theta_(i)) / m_h``, leaving out one unit at a time
  (row, or cluster when clustered) with ``m_h`` the units of the stratum ``h`` of ``i``.
  These are the conventions of ``scipy.stats.bootstrap`` (its multi-sample form is the
  stratified case). With more than ``max_jackknife`` units, units are split at random
  into ``max_jackknife`` groups (within strata) and groups are left out (grouped
  jackknife; the acceleration is ``O(n^-1/2)`` and a few hundred groups estimate it well);
* ``basic``: ``2 theta - q(1 - alpha/2)``, ``2 theta - q(alpha/2)``;
* ``normal``: ``theta - bias -/+ z_(1-alpha/2) SE`` with ``bias = mean(theta*) - theta``
  (as R's ``boot.ci(type = "norm")``).

``std_error`` is the standard deviation of the replicates (``ddof = 1``).

Failed replicates
-----------------
A resample can make a statistic undefined (an arm with no positive costs, a level with
no events, a fit that does not converge). Such replicates are kept as ``NaN`` in
``replicates``, counted in ``n_failed`` with their reasons in ``failures``, and a
:class:`~evalkit.errors.StatisticalWarning` says how many there were; the summaries use
the others. Many failures mean the bootstrap distribution is not trustworthy (too small
an arm or cluster count for the design): above :data:`FAILED_SHARE_LIMIT` (5%) the
estimate records carry ``replicates_flag`` and the workbooks say so.

Every replicate whose fit converged and whose effect is finite is kept, as R keeps a
``glm`` fit that warns "fitted probabilities numerically 0 or 1 occurred": such
probabilities (quasi-separation in the any-cost logit, or an extreme covariate value in
the resample) leave the recycled predictions, and so the effect, well defined.

References
----------
Efron B (1987). Better bootstrap confidence intervals. *JASA* 82(397):171-185.
Efron B, Tibshirani RJ (1993). *An Introduction to the Bootstrap*. Chapman & Hall
(ch. 14 BCa, eq. 14.15 acceleration; ch. 11 jackknife).
Davison AC, Hinkley DV (1997). *Bootstrap Methods and their Application*. Cambridge
(sec. 3.2 stratified, 3.8 clustered resampling; 5.3 BCa).
Field CA, Welsh AH (2007). Bootstrapping clustered data. *JRSS B* 69(3):369-390.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evalkit.errors import DataValidationError, EvalkitError, ParamsError, StatisticalWarning
from evalkit.models.base import TermTable
from evalkit.models.effects import check_alpha
from evalkit.results import FAILED_SHARE_LIMIT
from evalkit.models.resample import (
    CI_METHODS, _check_ci, _check_n_boot, _check_n_jobs, _check_positive_int, _check_seed,
    _design, _design_extra, _design_text, _execute, _failure_warning, _jackknife_plan,
    _jackknife_size, _progress, _summaries, bootstrap_indices,
)

__all__ = ["BootstrapResult", "bootstrap", "bootstrap_indices", "CI_METHODS",
           "FAILED_SHARE_LIMIT", "replicate_fields", "replicates_sentence"]



def replicates_sentence(n_replicates: int, n_failed: int, what: str = "bootstrap") -> str:
    """How many replicates an estimate rests on, in words; a warning above
    :data:`FAILED_SHARE_LIMIT` failed (the interval then rests on the replicates that
    could be computed, which may narrow it)."""
    n_replicates, n_failed = int(n_replicates), int(n_failed)
    share = n_failed / n_replicates if n_replicates else 0.0
    text = (f"{what}: {n_replicates - n_failed:,} of {n_replicates:,} replicates computed, "
            f"{n_failed:,} failed ({share:.1%})")
    if share > FAILED_SHARE_LIMIT:
        return (f"WARNING: {text}, more than {FAILED_SHARE_LIMIT:.0%}: the interval rests on "
                "the replicates that could be fitted and may be too narrow; read it with care.")
    return text + "."


def replicate_fields(n_replicates: int, n_failed: int, what: str = "bootstrap") -> dict:
    """The resampling fields of an estimate record (see docs/results.md):
    ``n_replicates``, ``n_failed`` and, above :data:`FAILED_SHARE_LIMIT` failed,
    ``replicates_flag`` (the warning of :func:`replicates_sentence`)."""
    out = {"n_replicates": int(n_replicates), "n_failed": int(n_failed)}
    if n_replicates and n_failed / n_replicates > FAILED_SHARE_LIMIT:
        out["replicates_flag"] = replicates_sentence(n_replicates, n_failed, what)
    return out


# =========================================================================== result
@dataclass(frozen=True)
class BootstrapResult(TermTable):
    """A bootstrap distribution and its summaries, as a value.

    Attributes
    ----------
    estimate : Series
        The statistic(s) on the full data, indexed by name (``"statistic"`` for a scalar
        statistic, the dict keys otherwise).
    replicates : DataFrame
        ``n_boot`` rows (replicate ``b`` in row ``b``), one column per statistic; ``NaN``
        where a replicate failed.
    std_error : Series
        Standard deviation of the replicates (``ddof=1``, failed ones left out).
    intervals : DataFrame
        Columns ``term, method, ci_low, ci_high``: one row per statistic and interval method.
    n_boot, seed : int
        Number of replicates and the seed that reproduces them.
    alpha : float
        Intervals have level ``1 - alpha``.
    bias : Series
        ``mean(replicates) - estimate``.
    z0, acceleration : Series
        BCa bias correction and acceleration (``NaN`` if BCa was not asked for).
    n_failed : int
        Replicates in which the statistic (or one of a dict's statistics) could not be
        computed; those values are ``NaN`` in ``replicates``.
    failures : dict
        Reason -> number of failed replicates.
    strata, cluster : str or None
        Resampling design.
    n_units : int
        Units resampled (rows, or clusters).
    method : str
        One-line description of what was done.
    extra : dict
        Design details (stratum sizes, jackknife used, block size, ...).
    """

    estimate: pd.Series
    replicates: pd.DataFrame
    std_error: pd.Series
    intervals: pd.DataFrame
    n_boot: int
    seed: int
    alpha: float
    bias: pd.Series
    z0: pd.Series
    acceleration: pd.Series
    n_failed: int
    failures: dict
    strata: str | None
    cluster: str | None
    n_units: int
    method: str
    extra: dict = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        """``term, estimate, std_error, ci_low, ci_high, p_value, interval``: each statistic
        with its BCa interval (or, when BCa was not asked for, the first method asked for,
        named in ``interval``); ``p_value`` is NaN (a bootstrap interval has none)."""
        methods = list(dict.fromkeys(self.intervals["method"]))
        method = "bca" if "bca" in methods else methods[0]
        ci = self.intervals[self.intervals["method"] == method].set_index("term")
        terms = self.estimate.index
        return pd.DataFrame({
            "term": terms, "estimate": self.estimate.to_numpy(),
            "std_error": self.std_error.reindex(terms).to_numpy(),
            "ci_low": ci["ci_low"].reindex(terms).to_numpy(),
            "ci_high": ci["ci_high"].reindex(terms).to_numpy(),
            "p_value": np.nan, "interval": method})

    def ci(self, term: str | None = None, method: str = "bca") -> tuple[float, float]:
        """``(ci_low, ci_high)`` of one statistic by one method.

        ``term`` may be omitted when there is one statistic.
        """
        if term is None:
            if len(self.estimate) != 1:
                raise ParamsError(f"name the statistic: one of {list(self.estimate.index)}.")
            term = self.estimate.index[0]
        row = self.intervals[(self.intervals["term"] == term) & (self.intervals["method"] == method)]
        if row.empty:
            raise KeyError(f"no {method!r} interval for {term!r}; have "
                           f"{sorted(set(zip(self.intervals.term, self.intervals.method)))}")
        return float(row["ci_low"].iloc[0]), float(row["ci_high"].iloc[0])

    @property
    def failed_share(self) -> float:
        """Share of the replicates that could not be computed."""
        return self.n_failed / self.n_boot if self.n_boot else 0.0

    @property
    def flagged(self) -> bool:
        """More than :data:`FAILED_SHARE_LIMIT` of the replicates failed."""
        return self.failed_share > FAILED_SHARE_LIMIT

    def record_fields(self) -> dict:
        """``n_replicates``, ``n_failed`` (and ``replicates_flag``) for estimate records."""
        return replicate_fields(self.n_boot, self.n_failed)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: ``term, estimate, std_error, bias, method, ci_low, ci_high``."""
        base = pd.DataFrame({"term": self.estimate.index, "estimate": self.estimate.to_numpy(),
                             "std_error": self.std_error.to_numpy(), "bias": self.bias.to_numpy()})
        return base.merge(self.intervals, on="term", how="left")

    def summary(self) -> str:
        lines = [f"{self.method}", f"{self.n_boot} replicates, seed {self.seed}, "
                 f"{100 * (1 - self.alpha):g}% intervals"]
        if self.n_failed:
            lines.append(f"failed replicates: {self.n_failed} ({self.failures})")
        lines.append(self.to_frame().to_string(index=False, float_format=lambda v: f"{v:.6g}"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = (f"<p><b>{self.method}</b> &middot; {self.n_boot} replicates &middot; "
                f"seed {self.seed}</p>")
        return head + self.to_frame().to_html(index=False, float_format=lambda v: f"{v:.4g}")


# =========================================================================== generic
_CAUGHT = (EvalkitError, ArithmeticError, np.linalg.LinAlgError)


def _as_values(value, names=None, where="a resample"):
    """Normalise a statistic's return value to ``{name: float}``."""
    if isinstance(value, pd.Series):
        value = value.to_dict()
    if isinstance(value, Mapping):
        out = {str(k): float(v) for k, v in value.items()}
    else:
        try:
            out = {"statistic": float(value)}
        except (TypeError, ValueError):
            raise ParamsError(
                f"bootstrap: the statistic must return a number or a dict of numbers; on "
                f"{where} it returned {type(value).__name__}.") from None
    if names is not None and list(out) != names:
        raise ParamsError(
            f"bootstrap: the statistic returned {list(out)} on {where} but {names} on the full "
            "data; it must return the same names every time.")
    return out


def _call_statistic(statistic, frame, on_error):
    try:
        return True, statistic(frame)
    except _CAUGHT as exc:
        if on_error == "raise":
            raise
        text = str(exc).splitlines()[0] if str(exc) else ""
        return False, f"{type(exc).__name__}: {text[:300]}"


def _subset(state, idx, ids):
    sub = state["data"].iloc[idx].reset_index(drop=True)
    if state["idcluster"] is not None:
        sub[state["idcluster"]] = ids
    return sub


def _generic_boot(state, payload):
    return [_call_statistic(state["statistic"], _subset(state, idx, ids), state["on_error"])
            for idx, ids in payload]


def _generic_jack(state, payload):
    out = []
    n = len(state["data"])
    for drop in payload:
        keep = np.ones(n, dtype=bool)
        keep[drop] = False
        idx = np.flatnonzero(keep)
        ids = None if state["unit_of_row"] is None else state["unit_of_row"][idx]
        out.append(_call_statistic(state["statistic"], _subset(state, idx, ids), state["on_error"]))
    return out


def bootstrap(data: pd.DataFrame, statistic: Callable, n_boot: int = 1000, seed: int | None = None,
              strata: str | None = None, cluster: str | None = None,
              ci: str | Sequence[str] = ("percentile", "bca"), alpha: float = 0.05,
              n_jobs: int = 2, progress: bool = False, *, max_jackknife: int = 1000,
              idcluster: str | None = None, on_error: str = "warn") -> BootstrapResult:
    r"""Nonparametric bootstrap of any statistic of a data frame.

    ``statistic`` is computed on the data, then on ``n_boot`` resamples drawn with
    replacement (within strata, by whole clusters, as asked); the spread of the replicates
    gives the standard error and confidence intervals. See the module docstring for the
    resampling designs and the interval formulas.

    Parameters
    ----------
    data : DataFrame
        One row per observation (member); never modified.
    statistic : callable
        ``statistic(df) -> float`` or ``-> dict[str, float]`` (several statistics from the
        same resamples, e.g. a difference and a ratio). It receives a new DataFrame with a
        fresh ``RangeIndex`` and the columns of ``data``. With ``n_jobs > 1`` it runs in
        worker processes (forked on Linux, so closures and lambdas work; on platforms
        without fork it must be picklable).
    n_boot : int
        Number of replicates (>= 2; 1,000-2,000 for intervals, BCa especially).
    seed : int or None
        Seed of the ``numpy.random.Generator`` all draws come from. ``None`` draws fresh
        entropy; the seed used is recorded in the result either way.
    strata : str, optional
        Column whose groups are resampled separately, keeping their sizes (e.g. the arm).
    cluster : str, optional
        Column of cluster ids (programme, site, matched pair): whole clusters are drawn.
        Within strata when ``strata`` is given too (clusters must be nested in strata).
    ci : str or sequence of {"percentile", "bca", "basic", "normal"}
    alpha : float
        Intervals have level ``1 - alpha``.
    n_jobs : int
        Worker processes (``-1``: all cores). BLAS is limited to one thread in each.
        Does not change the result.
    progress : bool
        Show a tqdm progress bar.
    max_jackknife : int
        BCa's acceleration uses a leave-one-unit-out jackknife (``n_units`` extra
        statistic evaluations); with more units than this, a grouped jackknife with this
        many random groups (within strata) instead.
    idcluster : str, optional
        With ``cluster``: name of a new column added to each resample that numbers the
        drawn clusters ``0..G-1``, so that a cluster drawn twice counts as two clusters
        (needed when the statistic itself groups by cluster, e.g. pair differences).
    on_error : {"warn", "raise"}
        What to do when the statistic raises an evalkit error (:class:`DataValidationError`,
        :class:`ConvergenceError`, ...), an arithmetic error or a ``LinAlgError`` on a
        resample: ``"warn"`` keeps the replicate as ``NaN``, counts it and warns once;
        ``"raise"`` stops. Other exceptions always propagate. A non-finite value returned
        by the statistic also counts as a failed replicate.

    Returns
    -------
    BootstrapResult
        ``estimate``, ``replicates`` (``n_boot`` rows), ``std_error``, ``intervals``
        (``term, method, ci_low, ci_high``), ``n_boot``, ``seed``, ``n_failed``...

    Raises
    ------
    ParamsError
        ``n_boot < 2``, unknown interval method, bad ``alpha`` / ``n_jobs``, a statistic
        that does not return numbers.
    DataValidationError
        Missing strata / cluster column, missing values in it, clusters spanning strata.

    Examples
    --------
    >>> res = bootstrap(members, lambda d: d.total_cost.mean(), n_boot=2000, seed=1,
    ...                 strata="treated")
    >>> res.ci(method="bca")                                    # doctest: +SKIP
    >>> diff = lambda d: {"difference": d[d.treated == 1].total_cost.mean()
    ...                                - d[d.treated == 0].total_cost.mean()}
    >>> bootstrap(members, diff, seed=1, strata="treated").to_frame()   # doctest: +SKIP

    References
    ----------
    Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 6, 13-14;
    Davison & Hinkley (1997), *Bootstrap Methods and their Application*, ch. 3 and 5.
    """
    what = "bootstrap"
    if not isinstance(data, pd.DataFrame):
        raise DataValidationError(f"{what}: data must be a pandas DataFrame, got {type(data).__name__}.")
    if len(data) < 2:
        raise DataValidationError(f"{what}: need at least 2 rows to resample, got {len(data)}.")
    if not callable(statistic):
        raise ParamsError(f"{what}: statistic must be a function of a DataFrame, got {statistic!r}.")
    n_boot = _check_n_boot(n_boot, what)
    seed = _check_seed(seed, what)
    methods = _check_ci(ci, what)
    alpha = check_alpha(alpha, what)
    n_jobs = min(_check_n_jobs(n_jobs, what), n_boot)
    max_jackknife = _check_positive_int(max_jackknife, "max_jackknife", what, minimum=2)
    if on_error not in ("warn", "raise"):
        raise ParamsError(f"{what}: on_error must be 'warn' or 'raise', got {on_error!r}.")
    if idcluster is not None and cluster is None:
        raise ParamsError(f"{what}: idcluster needs cluster= (the clusters to number).")
    design = _design(data, strata, cluster, what)
    frame = data.copy(deep=False)           # copy-on-write: the statistic cannot alter `data`
    full = (frame.copy(deep=False) if idcluster is None
            else frame.assign(**{idcluster: design.unit_of_row}))
    estimate = _as_values(statistic(full), where="the full data")
    names = list(estimate)
    est = pd.Series(estimate, dtype=float)
    if not np.all(np.isfinite(est.to_numpy())):
        raise DataValidationError(f"{what}: the statistic is not finite on the full data ({estimate}).")

    rng = np.random.default_rng(seed)
    state = {"data": frame, "statistic": statistic, "on_error": on_error,
             "idcluster": idcluster, "unit_of_row": design.unit_of_row}
    sizes = None if cluster is None else design.starts[1:] - design.starts[:-1]
    itype = np.int32 if design.n_rows < 2**31 else np.int64

    def resample(units):
        idx = design.rows(units).astype(itype)
        ids = None if idcluster is None else np.repeat(np.arange(len(units)), sizes[units])
        return idx, ids

    chunk = max(1, min(50, math.ceil(n_boot / (8 * n_jobs))))
    want_jack = "bca" in methods
    n_jack = _jackknife_size(design, max_jackknife) if want_jack else 0
    plan = {}

    def boot_tasks():
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            yield ("boot", start), [resample(design.draw(rng)) for _ in range(m)], m
        if want_jack:   # drawn after every resample, from the same generator
            drops, labels, text = _jackknife_plan(design, max_jackknife, rng)
            plan.update(labels=labels, text=text)
            jchunk = max(1, min(50, math.ceil(len(drops) / (8 * n_jobs))))
            for start in range(0, len(drops), jchunk):
                part = [design.rows(d) for d in drops[start:start + jchunk]]
                yield ("jack", start), part, len(part)

    with _progress(progress, n_boot + n_jack, "bootstrap") as bar:
        results = _execute_mixed(state, boot_tasks(), n_jobs, bar)

    reps = np.full((n_boot, len(names)), np.nan)
    failures: Counter = Counter()
    jack_rows = []
    for (kind, start), out in sorted(results.items()):
        for i, (ok, value) in enumerate(out):
            if kind == "boot":
                b = start + i
                if not ok:
                    failures[value] += 1
                    continue
                vals = _as_values(value, names, where=f"replicate {b}")
                reps[b] = [vals[k] for k in names]
                if not np.all(np.isfinite(reps[b])):
                    failures["the statistic returned NaN or infinity"] += 1
            else:
                jack_rows.append([_as_values(value, names, "a jackknife sample")[k] for k in names]
                                 if ok else [np.nan] * len(names))
    _failure_warning(what, failures, n_boot)
    jack = labels = None
    if want_jack:
        jack, labels = np.asarray(jack_rows, dtype=float), plan["labels"]
        if not np.all(np.isfinite(jack)):
            bad = int((~np.all(np.isfinite(jack), axis=1)).sum())
            warnings.warn(f"{what}: the statistic failed on {bad} of {len(jack)} jackknife "
                          "samples; the BCa acceleration uses the others.", StatisticalWarning,
                          stacklevel=2)
    se, bias, z0, acc, intervals = _summaries(est, reps, methods, alpha, jack, labels)
    design_text = _design_text(design)
    return BootstrapResult(
        estimate=est, replicates=pd.DataFrame(reps, columns=names), std_error=se,
        intervals=intervals, n_boot=n_boot, seed=seed, alpha=alpha, bias=bias, z0=z0,
        acceleration=acc, n_failed=int(sum(failures.values())), failures=dict(failures),
        strata=strata, cluster=cluster, n_units=design.n_units,
        method=f"nonparametric bootstrap ({design_text})",
        extra=_design_extra(design, plan.get("text"), n_jobs=n_jobs))


def _execute_mixed(state, tasks, n_jobs, bar):
    """Bootstrap and jackknife tasks through one pool: kind is the first item of the id."""
    tagged = (((kind, start), (kind, payload), m) for (kind, start), payload, m in tasks)
    return _execute(_generic, state, tagged, n_jobs, bar)


def _generic(state, tagged_payload):
    kind, payload = tagged_payload
    return _generic_boot(state, payload) if kind == "boot" else _generic_jack(state, payload)


