"""Nonparametric bootstrap: any statistic, and fast paths for the cost and count effects.

The bootstrap estimates the sampling distribution of a statistic by recomputing it on
many data sets drawn *with replacement* from the data at hand (Efron & Tibshirani 1993).
Three entry points share one resampling scheme and one set of interval methods:

* :func:`bootstrap` -- any function ``statistic(df) -> float or dict of floats``,
  recomputed on explicitly resampled copies of the data (in parallel processes);
* :func:`bootstrap_two_part` -- the two-part cost effect of
  :func:`evalkit.models.twopart.two_part` (recycled-prediction difference and ratio of
  mean cost). Resampling a data set is the same as giving each row a *count* (how often it
  was drawn), so every replicate is a weighted fit; all replicates are fitted together by
  batched Newton / Fisher scoring in numpy, warm-started from the full-sample fit, which
  is more than ten times faster than refitting with statsmodels and gives the same
  numbers;
* :func:`bootstrap_count_effect` -- the same for the recycled-prediction rate difference
  and ratio of a Poisson, NB2, ZIP or ZINB count model
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
import multiprocessing as mp
import os
import pickle
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse, special, stats
from threadpoolctl import threadpool_limits
from tqdm import tqdm  # the plain bar: tqdm.auto warns in Jupyter without ipywidgets

from evalkit.errors import DataValidationError, EvalkitError, ParamsError, StatisticalWarning
from evalkit.models.base import TermTable
from evalkit.models.count import gamma_differences
from evalkit.models.effects import (
    binary_columns, build_matrix, check_alpha, counterfactual_frames, one_blas_thread,
    prepare_frame,
)
from evalkit.models.twopart import two_part

__all__ = ["BootstrapResult", "bootstrap", "bootstrap_two_part", "bootstrap_count_effect",
           "bootstrap_indices", "CI_METHODS", "FAILED_SHARE_LIMIT", "replicate_fields",
           "replicates_sentence"]

CI_METHODS = ("percentile", "bca", "basic", "normal")
TWO_PART_STATISTICS = ("cost_difference", "ratio", "mean_treated", "mean_control")
#: Above this share of failed replicates an estimate is flagged: in the workbook (see
#: :func:`replicates_sentence`) and in results.json (``replicates_flag``).
FAILED_SHARE_LIMIT = 0.05


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


# =========================================================================== validation
def _check_n_boot(n_boot, what):
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ParamsError(f"{what}: n_boot must be an integer >= 2 (1,000 or more for "
                          f"intervals), got {n_boot!r}.")
    return int(n_boot)


def _check_seed(seed, what) -> int:
    if seed is None:
        # Fresh entropy, recorded in the result so the run can be repeated.
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParamsError(f"{what}: seed must be a non-negative integer (or None), got {seed!r}.")
    return int(seed)


def _check_ci(ci, what) -> tuple[str, ...]:
    methods = (ci,) if isinstance(ci, str) else tuple(ci) if ci is not None else ()
    if not methods:
        raise ParamsError(f"{what}: ci must name at least one of {list(CI_METHODS)}.")
    unknown = [m for m in methods if m not in CI_METHODS]
    if unknown:
        raise ParamsError(f"{what}: unknown interval method(s) {unknown}; choose from "
                          f"{list(CI_METHODS)}.")
    return tuple(dict.fromkeys(methods))


def _check_n_jobs(n_jobs, what) -> int:
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ParamsError(f"{what}: n_jobs must be a positive integer or -1 (all cores), "
                          f"got {n_jobs!r}.")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


def _check_positive_int(value, name, what, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParamsError(f"{what}: {name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


# =========================================================================== design
@dataclass(frozen=True)
class _Design:
    """Who is resampled: units (rows or clusters), grouped in strata.

    ``draw`` returns, for one replicate, the drawn unit ids: for each stratum in sorted
    order, as many draws as it has units (``rng.integers(0, G_h, G_h)``).
    """

    n_rows: int
    n_units: int
    unit_of_row: np.ndarray | None       # None: units are rows
    order: np.ndarray | None             # rows sorted by unit (stable)
    starts: np.ndarray | None            # unit u's rows: order[starts[u]:starts[u+1]]
    strata_units: tuple                  # unit ids of each stratum
    strata_levels: tuple
    strata: str | None
    cluster: str | None

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        parts = [units[rng.integers(0, len(units), len(units))] for units in self.strata_units]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def rows(self, units: np.ndarray) -> np.ndarray:
        """Row positions of the given units, unit after unit (rows of a unit in data order)."""
        if self.unit_of_row is None:
            return np.asarray(units)
        sizes = self.starts[1:] - self.starts[:-1]
        lengths = sizes[units]
        total = int(lengths.sum())
        first = np.repeat(self.starts[units], lengths)
        offset = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return self.order[first + offset]

    def row_counts(self, units: np.ndarray) -> np.ndarray:
        """How often each row appears in the resample made of ``units``."""
        counts = np.bincount(units, minlength=self.n_units)
        return counts if self.unit_of_row is None else counts[self.unit_of_row]


def _design(data: pd.DataFrame, strata, cluster, what) -> _Design:
    n = len(data)
    for role, col in (("strata", strata), ("cluster", cluster)):
        if col is None:
            continue
        if not isinstance(col, str):
            raise ParamsError(f"{what}: {role} must be a column name (str) or None, got {col!r}.")
        if col not in data.columns:
            raise DataValidationError(
                f"{what}: {role} column {col!r} not found in the data (available: "
                f"{sorted(map(str, data.columns))}).",
                failures=[{"table": "data", "column": col, "reason": "missing_column",
                           "count": 0, "examples": []}])
        n_na = int(data[col].isna().sum())
        if n_na:
            raise DataValidationError(
                f"{what}: {role} column {col!r} has {n_na} missing values; every row must "
                "belong to a stratum / cluster. Fill them or drop those rows first.")
    if cluster is not None:
        unit_of_row, _ = pd.factorize(data[cluster], sort=True)
        n_units = int(unit_of_row.max()) + 1
        order = np.argsort(unit_of_row, kind="stable")
        starts = np.searchsorted(unit_of_row[order], np.arange(n_units + 1))
    else:
        unit_of_row, order, starts, n_units = None, None, None, n
    if strata is None:
        return _Design(n, n_units, unit_of_row, order, starts, (np.arange(n_units),), ("all",),
                       None, cluster)
    s_codes, s_levels = pd.factorize(data[strata], sort=True)
    if cluster is None:
        unit_stratum = s_codes
    else:
        per_unit = pd.DataFrame({"u": unit_of_row, "s": s_codes}).groupby("u")["s"].nunique()
        spanning = per_unit[per_unit > 1]
        if len(spanning):
            raise DataValidationError(
                f"{what}: {len(spanning)} cluster(s) of {cluster!r} span more than one stratum of "
                f"{strata!r}; clusters must be nested in strata. For clusters that hold both "
                "arms (sites, matched pairs) resample whole clusters without strata (strata=None).")
        unit_stratum = np.empty(n_units, dtype=np.int64)
        unit_stratum[unit_of_row] = s_codes
    units = tuple(np.flatnonzero(unit_stratum == h) for h in range(len(s_levels)))
    return _Design(n, n_units, unit_of_row, order, starts, units, tuple(s_levels.tolist()),
                   strata, cluster)


def _jackknife_plan(design: _Design, max_jackknife: int, rng: np.random.Generator):
    """Units to leave out, one jackknife value each, and the stratum of each value.

    Every unit alone when there are at most ``max_jackknife`` units; otherwise each
    stratum's units are split at random into about ``max_jackknife * G_h / G`` groups
    (at least 2) and groups are left out.
    """
    drops, labels = [], []
    grouped = design.n_units > max_jackknife
    for h, units in enumerate(design.strata_units):
        if not grouped:
            drops.extend(units[i:i + 1] for i in range(len(units)))
            labels.extend([h] * len(units))
            continue
        m = min(len(units), max(2, round(max_jackknife * len(units) / design.n_units)))
        perm = units[rng.permutation(len(units))]
        for g in np.array_split(perm, m):
            drops.append(np.sort(g))
            labels.append(h)
    kind = "clusters" if design.cluster else "rows"
    text = (f"grouped jackknife: {len(drops)} random groups of {kind} (within strata)" if grouped
            else f"leave-one-out jackknife over {len(drops)} {kind}")
    return drops, np.asarray(labels), text


def bootstrap_indices(data: pd.DataFrame, n_boot: int, seed: int, strata: str | None = None,
                      cluster: str | None = None) -> Iterator[np.ndarray]:
    """The row positions of each bootstrap resample that :func:`bootstrap` would draw.

    Yields ``n_boot`` integer arrays; ``data.iloc[idx]`` is the resample of replicate
    ``b``. :func:`bootstrap` and :func:`bootstrap_two_part` with the same ``data``
    (complete rows), ``seed``, ``strata`` and ``cluster`` use exactly these resamples, so
    any replicate can be recomputed by hand.

    Examples
    --------
    >>> first = next(bootstrap_indices(df, n_boot=1000, seed=1, strata="treated"))
    >>> statistic(df.iloc[first])             # doctest: +SKIP
    """
    what = "bootstrap_indices"
    n_boot = _check_n_boot(n_boot, what)
    seed = _check_seed(seed, what)
    design = _design(data, strata, cluster, what)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield design.rows(design.draw(rng))


# =========================================================================== intervals
def _acceleration(jack: np.ndarray, labels: np.ndarray) -> float:
    """BCa acceleration from jackknife values grouped in strata (scipy's convention)."""
    num = den = 0.0
    for h in np.unique(labels):
        t = jack[labels == h]
        t = t[np.isfinite(t)]
        m = len(t)
        if m < 2:
            continue
        u = (m - 1) * (t.mean() - t) / m
        num += np.sum(u ** 3)
        den += np.sum(u ** 2)
    if den <= 0:
        return np.nan
    return float(num / (6.0 * den ** 1.5))


def _summaries(estimate: pd.Series, reps: np.ndarray, methods, alpha, jack=None, labels=None,
               stacklevel=3):
    """Standard errors, bias, z0, acceleration and intervals for each statistic."""
    names = list(estimate.index)
    z = stats.norm.ppf(1 - alpha / 2)
    rows, se, bias, z0s, accs = [], [], [], [], []
    problems = []
    for j, name in enumerate(names):
        theta = float(estimate.iloc[j])
        r = reps[:, j]
        r = r[np.isfinite(r)]
        B = len(r)
        sd = float(np.std(r, ddof=1)) if B >= 2 else np.nan
        b = float(np.mean(r) - theta) if B else np.nan
        se.append(sd)
        bias.append(b)
        z0 = a = np.nan
        for m in methods:
            lo = hi = np.nan
            if B >= 2:
                if m == "percentile":
                    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
                elif m == "basic":
                    qlo, qhi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
                    lo, hi = 2 * theta - qhi, 2 * theta - qlo
                elif m == "normal":
                    lo, hi = theta - b - z * sd, theta - b + z * sd
                elif m == "bca":
                    share = (np.count_nonzero(r < theta) + np.count_nonzero(r <= theta)) / (2 * B)
                    z0 = float(special.ndtri(share))
                    a = _acceleration(jack[:, j], labels) if jack is not None else np.nan
                    zq = np.array([-z, z])
                    with np.errstate(invalid="ignore", divide="ignore"):
                        q = special.ndtr(z0 + (z0 + zq) / (1 - a * (z0 + zq)))
                    if np.all(np.isfinite(q)):
                        lo, hi = np.quantile(r, q)
                    else:
                        problems.append(
                            f"BCa interval of {name!r} is undefined (every replicate lies on one "
                            "side of the estimate, or the acceleration could not be computed); "
                            "use the percentile interval or more replicates.")
            rows.append((name, m, float(lo), float(hi)))
        z0s.append(z0)
        accs.append(a)
    for msg in problems:
        warnings.warn(msg, StatisticalWarning, stacklevel=stacklevel)
    idx = pd.Index(names)
    return (pd.Series(se, index=idx, name="std_error"), pd.Series(bias, index=idx, name="bias"),
            pd.Series(z0s, index=idx, name="z0"), pd.Series(accs, index=idx, name="acceleration"),
            pd.DataFrame(rows, columns=["term", "method", "ci_low", "ci_high"]))


def _failure_warning(what, failures: Counter, n_boot, stacklevel=3):
    n_failed = sum(failures.values())
    if not n_failed:
        return
    top = "; ".join(f"{c} x {reason.rstrip('. ')}" for reason, c in failures.most_common(3))
    more = f" (and {len(failures) - 3} other reasons)" if len(failures) > 3 else ""
    warnings.warn(
        f"{what}: {n_failed} of {n_boot} bootstrap replicates could not be computed: {top}{more}. "
        "They are kept as NaN in `replicates` and counted in `n_failed`; the standard error "
        "and intervals use the others. Many failures mean the design is too thin for the "
        "bootstrap (e.g. an arm with few members with costs): stratify by arm, use fewer "
        "covariates or more data.", StatisticalWarning, stacklevel=stacklevel)


# =========================================================================== execution
_STATE: dict = {}


def _init_worker(state):
    global _STATE
    _STATE = state
    threadpool_limits(limits=1, user_api="blas")   # tall-skinny algebra: one thread each


def _worker_call(kind, payload):
    return _KINDS[kind](_STATE, payload)


def _mp_context(state):
    # fork lets workers inherit the data and the statistic (lambdas, closures) without
    # pickling; elsewhere spawn, which needs a picklable statistic.
    if "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    try:
        pickle.dumps(state)
    except Exception as exc:
        raise ParamsError(
            f"bootstrap: with n_jobs > 1 on this platform the statistic and data are sent to "
            f"worker processes by pickling, which failed ({exc}). Define the statistic as a "
            "module-level function, or use n_jobs=1.") from None
    return mp.get_context("spawn")


def _execute(kind, state, tasks, n_jobs, bar) -> dict:
    """Run ``tasks`` (iterator of ``(task_id, payload, n_items)``); results by task id.

    Tasks are produced lazily (draws happen here, in order, as tasks are submitted) with
    at most ``2 * n_jobs`` in flight, so memory stays bounded.
    """
    results = {}
    if n_jobs == 1:
        with threadpool_limits(limits=1, user_api="blas"):
            for tid, payload, m in tasks:
                results[tid] = _KINDS[kind](state, payload)
                bar.update(m)
        return results
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=_mp_context(state),
                               initializer=_init_worker, initargs=(state,))
    try:
        pending: dict = {}
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * n_jobs:
                try:
                    tid, payload, m = next(tasks)
                except StopIteration:
                    exhausted = True
                    break
                pending[pool.submit(_worker_call, kind, payload)] = (tid, m)
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                tid, m = pending.pop(fut)
                results[tid] = fut.result()
                bar.update(m)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _progress(progress, total, desc):
    return tqdm(total=total, disable=not progress, desc=desc, unit="rep", leave=False)


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
    return _execute("generic", state, tagged, n_jobs, bar)


def _generic(state, tagged_payload):
    kind, payload = tagged_payload
    return _generic_boot(state, payload) if kind == "boot" else _generic_jack(state, payload)


def _jackknife_size(design: _Design, max_jackknife: int) -> int:
    if design.n_units <= max_jackknife:
        return design.n_units
    return sum(min(len(u), max(2, round(max_jackknife * len(u) / design.n_units)))
               for u in design.strata_units)


def _design_text(design: _Design) -> str:
    unit = f"whole clusters of {design.cluster!r}" if design.cluster else "rows"
    strata = f" within strata of {design.strata!r}" if design.strata else ""
    return f"resampling {unit}{strata}"


def _design_extra(design: _Design, jack_text, **more) -> dict:
    extra = {"design": _design_text(design), "n_rows": design.n_rows, "n_units": design.n_units}
    if design.strata:
        extra["stratum_units"] = {lev: len(u) for lev, u in zip(design.strata_levels,
                                                                design.strata_units)}
    if jack_text:
        extra["jackknife"] = jack_text
    extra.update(more)
    return extra


# =========================================================================== two-part
# --------------------------------------------------------------------------- batched fits
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
            mu = special.ndtr(eta)
            dens = np.exp(-0.5 * eta * eta) / math.sqrt(2 * math.pi)
            var = mu * (1.0 - mu)
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


def _unpack(h: np.ndarray, k: int, iu) -> np.ndarray:
    """(k(k+1)/2, b) upper-triangle sums -> (b, k, k) symmetric matrices."""
    H = np.empty((h.shape[1], k, k))
    H[:, iu[0], iu[1]] = h.T
    H[:, iu[1], iu[0]] = h.T
    return H


def _rank_ok(H: np.ndarray) -> np.ndarray:
    """Which (b, k, k) information matrices are numerically of full rank."""
    d = np.sqrt(np.clip(np.einsum("bii->bi", H), 0, None))
    ok = np.all(d > 0, axis=1) & np.all(np.isfinite(H), axis=(1, 2))
    dd = np.where(d > 0, d, 1.0)
    R = np.where(ok[:, None, None], H / (dd[:, :, None] * dd[:, None, :]), np.eye(H.shape[1]))
    ev = np.linalg.eigvalsh(R)
    return ok & (ev[:, 0] > 1e-12 * ev[:, -1])


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
        if Hinv is not None:
            step = np.einsum("aij,ja->ia", Hinv, g)
            small = np.all(np.abs(step) <= tol * np.sqrt(np.einsum("aii->ia", Hinv)), axis=0)
        else:
            step = np.zeros_like(g)
            small = np.zeros(len(active), dtype=bool)
        if not small.all():
            H = _unpack(_info(kind, XX, ctx, u, v), k, iu)
            if Hinv is None:                          # first iteration: rank of the design
                # judged on the resampled design X'CX where the row counts are known: the
                # information of a logit with fitted probabilities near 0 or 1 is badly
                # conditioned without any term being constant or collinear
                ok = _rank_ok(_unpack(XX.T @ ctx["C"], k, iu) if "C" in ctx else H)
                status[active[~ok]] = RANK
                Hinv = np.zeros_like(H)
                if ok.any():
                    Hinv[ok] = _inv(H[ok])
            else:
                ok = np.ones(len(active), dtype=bool)
                Hinv[~small] = _inv(H[~small])
            redo = ~small & ok
            step[:, redo] = np.einsum("aij,ja->ia", Hinv[redo], g[:, redo])
            small = np.all(np.abs(step) <= tol * np.sqrt(np.einsum("aii->ia", Hinv)), axis=0)
        small |= flat
        finite = np.all(np.isfinite(step), axis=0)
        B[:, active] += np.where(finite, step, 0.0)
        live = status[active] == RUNNING
        status[active[live & ~finite]] = FAILED
        status[active[live & finite & small]] = CONVERGED
        keep = status[active] == RUNNING
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
    ``state["_buffers"]`` (fresh large arrays page-fault).
    """
    kind, data = payload
    n = state["X"].shape[0]
    b = data.shape[0] if kind == "boot" else len(data)
    cache = state.setdefault("_buffers", {})
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


def _block_size(block_size, n, n_boot, what) -> int:
    """Replicates fitted together: about 10**7 / n (a few (n, b) float buffers), at most
    n_boot / 8 (so blocks spread over workers) and 2,000."""
    if block_size is None:
        block_size = max(1, min(10_000_000 // max(n, 1), math.ceil(n_boot / 8), 2000))
    return _check_positive_int(block_size, "block_size", what)


def _run_blocks(kind, state, design, n_boot, seed, block_size, methods, max_jackknife, n_jobs,
                progress, desc, n_stats, what):
    """Draw the resamples (and jackknife leave-outs for BCa) as row-count blocks, fit
    each block with ``_KINDS[kind]`` in ``n_jobs`` processes, and gather the values.

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
                c = design.row_counts(design.draw(rng))
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
        results = _execute(kind, state, tasks(), min(n_jobs, math.ceil(n_boot / block_size)), bar)

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


def _two_part_block(state, payload):
    """Fit one block of replicates; returns (values (b, 4), reasons, iterations)."""
    return _fit_two_part_counts(state, *_row_count_matrix(state, payload))


def _fit_two_part_counts(state, C, cache):
    """Two-part effects for each column of the row-count matrix ``C`` (buffers in ``cache``)."""
    X, X1, X0, XX = state["X"], state["X1"], state["X0"], state["XX"]
    pos, iu, first, second = state["pos"], state["iu"], state["first"], state["second"]
    names, outcome = state["names"], state["outcome"]
    n, b = C.shape
    reasons: list = [None] * b
    # Cheap checks that two_part makes too, for all replicates in one product:
    # zeros and positives present; each level of a 0/1 term has both.
    tally = state["M"].T @ C                        # rows: N, N_pos, n1 (per 0/1 term), e1
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
    Cg = C if good.all() else np.ascontiguousarray(C[:, good])
    del C
    g_cols = np.flatnonzero(good)
    work = cache["work"]
    bg = Cg.shape[1]
    tol, maxiter = state["tol"], state["maxiter"]

    ctx1 = {"C": Cg, "g0": state["Xz"].T @ Cg, "z": state["z"][:, None]}
    B1, st1, it1 = _batched_fit(first, X, XX, ctx1, state["beta1"], tol, maxiter, work, iu)
    C2 = np.take(Cg, pos, axis=0, out=cache["C2"][:len(pos) * bg].reshape(len(pos), bg))
    ctx2 = {"C": C2, "g0": state["Xz"].T @ Cg}      # X2'C2
    if second == "gamma":
        C2 *= state["y2"]
        ctx2 = {"Cy": C2, "g0": ctx2["g0"]}
    elif second == "poisson":
        ctx2["g0"] = state["X2"].T @ (C2 * state["y2"])
    else:
        ctx2["Cy"] = C2 * state["y2"]
    B2, st2, it2 = _batched_fit(second, state["X2"], state["XX2"], ctx2, state["beta2"], tol,
                                maxiter, work, iu)
    del C2, ctx2, ctx1
    u, v = work.views(n, Cg.shape[1])
    # Fitted probabilities numerically 0 or 1 (quasi-separation, or an extreme covariate
    # value in the resample) are not a failure: the logit converged and its predictions,
    # hence the recycled effect, are well defined; R's glm warns and keeps such a fit.
    # recycled predictions: A_t = sum_i c_i p_i(t) m_i(t) / sum_i c_i
    A = []
    with np.errstate(over="ignore", divide="ignore"):
        for Xt in (X1, X0):
            if first == "logit":
                np.matmul(Xt, -B1, out=u)
                np.exp(u, out=u)
                u += 1.0                            # 1 / p
            else:
                np.reciprocal(special.ndtr(Xt @ B1), out=u)
            np.matmul(Xt, -B2, out=v)
            np.exp(v, out=v)                        # 1 / m
            u *= v
            np.divide(Cg, u, out=u)                 # c p m
            A.append(u.sum(axis=0) / N[good])
    a1, a0 = A
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


_DEFAULT = object()


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
    ``c_i``. The counts of a block of replicates form an ``(n, b)`` matrix, so one
    matrix product gives every replicate's linear predictor, and the information
    matrices ``sum_i c_i w_i x_i x_i'`` of all replicates come from one product of the
    ``(n, k(k+1)/2)`` matrix of ``x_i x_i'`` with the weights. Each replicate starts from
    the full-sample estimates, a few steps from its own: Newton's method for the logit
    and for the gamma (log link) part, whose log-likelihood is convex in the
    coefficients, so Newton converges quadratically where Fisher scoring (information
    ``X'CX``) would converge only linearly; Fisher scoring for the probit and the inverse
    Gaussian; Newton (= Fisher scoring) for quasi-Poisson. Four or five iterations
    suffice. Blocks of ``b`` replicates bound memory (a few ``(n, b)`` float arrays) and
    go to ``n_jobs`` processes with one BLAS thread each. No library fits many weighted
    GLMs at once, so this loop is written here; the estimates equal refitting
    :func:`two_part` with statsmodels on the resampled rows (to about 1e-10 relative;
    both stop when every step is below ``tol`` standard errors). On 100,000 members,
    1,000 replicates take well under a minute on two cores where refitting takes several
    (``benchmarks/bootstrap_twopart.py``).

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
        As for :func:`bootstrap`; the same seed, strata and cluster give the same
        resamples as :func:`bootstrap` and :func:`bootstrap_indices` on the complete rows.
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
        Replicates fitted together (default: about ``10**7 / n``, at most ``n_boot / 8``).
        It changes memory and speed only (the last bits of the replicates may move).
    tol, maxiter : float, int
        A replicate has converged when every step is below ``tol`` standard errors.

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

    model = fit.model
    outcome = formula.split("~", 1)[0].strip()
    y, X, names, spec = build_matrix(formula, frame, what)
    f1, f0 = counterfactual_frames(frame, treatment, what)
    _, X1, _, _ = build_matrix(model.info, f1)
    _, X0, _, _ = build_matrix(model.info, f0)
    k = X.shape[1]
    iu = np.triu_indices(k)
    XX = np.ascontiguousarray((X[:, :, None] * X[:, None, :])[:, iu[0], iu[1]])
    pos = y > 0
    z = pos.astype(float)
    binary = binary_columns(X, names)
    Xb = X[:, binary]
    state = dict(
        X=X, X1=X1, X0=X0, XX=XX, z=z, pos=np.flatnonzero(pos), Xz=X * z[:, None],
        M=np.column_stack([np.ones(len(z)), z, Xb, Xb * z[:, None]]),
        X2=np.ascontiguousarray(X[pos]), XX2=np.ascontiguousarray(XX[pos]), y2=y[pos][:, None],
        beta1=np.asarray(model.params1, dtype=float), beta2=np.asarray(model.params2, dtype=float),
        first=first, second=second, binary=binary, names=names,
        outcome=outcome, iu=iu, tol=float(tol), maxiter=maxiter)

    block_size = _block_size(block_size, len(frame), n_boot, what)
    reps, jack, labels, failures, max_iter, jack_text = _run_blocks(
        "two_part", state, design, n_boot, seed, block_size, methods, max_jackknife, n_jobs,
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


# =========================================================================== count models
COUNT_STATISTICS = {True: ("rate_difference_per_1000_mm", "rate_ratio", "rate_treated",
                           "rate_control"),
                    False: ("difference", "ratio", "mean_treated", "mean_control")}
BATCHED_COUNT_FAMILIES = ("poisson", "negbin", "zip", "zinb")
_TAU_MAX = 30.0          # theta = exp(30) ~ 1e13: no overdispersion left (as count_model)
_TAU_FLAT = 15.0         # beyond theta ~ 3e6 a likelihood that is not concave in theta is flat


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
    Cg = np.ascontiguousarray(C[:, good])
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
    ``gamma_terms`` takes one theta per replicate and returns (n, replicates) arrays."""

    def __init__(self, cnt):
        self.y, self.lfact = cnt.y[:, None], cnt.lfact[:, None]
        self.values, self.index = cnt.values, cnt.index

    def gamma_terms(self, th, order):
        return [g[self.index] for g in gamma_differences(self.values, th, order)]


def _zero_inflated_effects(state, C, N):
    """Zero-inflated Poisson / NB2 replicates (columns of the row counts ``C``), fitted at
    once by Newton's method from the full-sample estimates.

    The per-row derivatives are those of the full-sample fit
    (:class:`evalkit.models.count._Mixture`), evaluated for every replicate's parameters
    at once; the score and Hessian of replicate j weight them by its row counts. Stops
    when the Newton decrement is below 1e-12, the rule of ``count_model``; theta beyond
    1e8 is refused as there ("theta grows without bound").

    Returns values (b, 4), a failure reason or None per replicate, and the iterations.
    """
    lik, kx, kz = state["lik"], state["kx"], state["kz"]
    nb = lik.has_theta
    P = kx + kz + int(nb)
    b = C.shape[1]
    Pm = np.repeat(state["p0"][:, None], b, axis=1)
    reasons: list = [None] * b
    done = np.zeros(b, dtype=bool)
    segs = [dict(seg, off=seg["off"][:, None],
                 cnt=_ColumnCounts(seg["cnt"]) if "cnt" in seg else None, C=C[seg["rows"]])
            for seg in lik.segments]
    active = np.arange(b)
    it = 0
    for it in range(1, state["maxiter"] + 1):
        a = len(active)
        Bk, G = Pm[:kx][:, active], Pm[kx:kx + kz][:, active]
        tau = Pm[-1, active] if nb else None
        g = np.zeros((P, a))
        H = np.zeros((a, P, P))
        sl = {"e": slice(0, kx), "z": slice(kx, kx + kz), "t": slice(P - 1, P)}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for seg in segs:
                _, d, dd = lik._segment_terms(seg, Bk, G, tau, 2)
                Cs = seg["C"][:, active]
                D = {"e": seg["X"], "z": seg["Z"], "t": None}
                for key, v in d.items():
                    w = Cs * v
                    g[sl[key]] += w.sum(axis=0)[None, :] if D[key] is None else D[key].T @ w
                for (ki, kj), v in dd.items():
                    w = Cs * v
                    Di, Dj = D[ki], D[kj]
                    for r in range(a):
                        if Di is None and Dj is None:
                            blk = w[:, r].sum()
                        elif Dj is None:
                            blk = (Di.T @ w[:, r])[:, None]
                        elif Di is None:
                            blk = (w[:, r] @ Dj)[None, :]
                        else:
                            blk = Di.T @ (Dj * w[:, r:r + 1])
                        H[r, sl[ki], sl[kj]] += blk
                        if ki != kj:
                            H[r, sl[kj], sl[ki]] += np.transpose(blk) if np.ndim(blk) else blk
        step = np.full((P, a), np.nan)
        for r in range(a):
            try:
                chol = np.linalg.cholesky(-H[r])
                step[:, r] = np.linalg.solve(chol.T, np.linalg.solve(chol, g[:, r]))
            except np.linalg.LinAlgError:
                pass
        finite = np.all(np.isfinite(step), axis=0)
        decrement = np.where(finite, np.einsum("pa,pa->a", g, np.where(finite, step, 0.0)), np.inf)
        Pm[:, active[finite]] += step[:, finite]
        for r in np.flatnonzero(~finite):
            reasons[active[r]] = f"the {state['family']} model did not converge in the resample"
            done[active[r]] = True
        conv = finite & (decrement < 1e-12)
        done[active[conv]] = True
        active = active[~done[active]]
        if not len(active):
            break
    for j in active:
        reasons[j] = f"the {state['family']} model did not converge in the resample"
    _refit_one_by_one(state, C, Pm, reasons)
    if nb:
        for j in np.flatnonzero(Pm[-1] > math.log(1e8)):
            if reasons[j] is None:
                reasons[j] = "theta grows without bound in the resample (no overdispersion)"
    # recycled predictions: A_t = scale * sum_i c_i (1 - pi_i(t)) exp(x_i(t)'beta) / sum c
    A = []
    with np.errstate(over="ignore", invalid="ignore"):
        for Xt, Zt in ((state["X1"], state["Z1"]), (state["X0"], state["Z0"])):
            m = np.exp(Xt @ Pm[:kx]) * special.expit(-(Zt @ Pm[kx:kx + kz]))
            A.append(state["scale"] * np.sum(C * m, axis=0) / N)
        a1, a0 = A
        vals = np.column_stack([a1 - a0, a1 / a0, a1, a0])
    return vals, reasons, (it, 0)


def _refit_one_by_one(state, C, Pm, reasons):
    """Refit, one at a time, the replicates the batched full Newton steps did not carry to
    convergence (their Hessian at the full-sample estimates is not negative definite, so
    a full step is no ascent direction), by ``count_model``'s safeguarded maximiser
    (:func:`evalkit.models.count._maximize`: line search, trust region, bounded theta) on
    the resampled rows. Fills ``Pm`` and clears the reason where that converges."""
    from evalkit.models.count import _maximize, _Mixture
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
                           maxiter: int = 100) -> BootstrapResult:
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
    models (``zip``, ``zinb``; the zero part with the same terms) take Newton steps with
    the exact derivatives of :class:`evalkit.models.count._Mixture`, weighted by each
    replicate's row counts (:func:`_zero_inflated_effects`), with ``(1 - pi) mu`` as the
    predicted mean. The replicates equal refitting :func:`count_model` on the resampled
    rows (about 1e-8 relative) at a small part of the cost: a refit at 1M members takes
    15-20 s.

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
        As for :func:`bootstrap_two_part` (strata default: the treatment, fixing arm sizes).

    Returns
    -------
    BootstrapResult
        Statistics ``rate_difference_per_1000_mm``, ``rate_ratio``, ``rate_treated``,
        ``rate_control`` with an exposure (``difference``, ``ratio``, ``mean_treated``,
        ``mean_control`` without); ``extra["fit"]`` is the full-sample fit.
    """
    from evalkit.models.count import count_model
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

    fit = count_model(frame, formula, family=family, exposure=exposure)
    eff = fit.effect(treatment, alpha=alpha)
    names_out = COUNT_STATISTICS[exposure is not None]
    estimate = pd.Series(dict(zip(names_out, [eff.at(names_out[0]), eff.at(names_out[1]),
                                              *_count_means(fit, treatment)])), dtype=float)
    design = _design(frame, strata, None, what)
    model = fit.model
    y, X, names, _ = build_matrix(formula, frame, what)
    f1, f0 = counterfactual_frames(frame, treatment, what)
    _, X1, _, _ = build_matrix(model.count_info, f1)
    _, X0, _, _ = build_matrix(model.count_info, f0)
    k = X.shape[1]
    iu = np.triu_indices(k)
    XX = np.ascontiguousarray((X[:, :, None] * X[:, None, :])[:, iu[0], iu[1]])
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
        from evalkit.models.count import _Mixture
        _, Z, _, _ = build_matrix(model.zero_info, frame)
        _, Z1, _, _ = build_matrix(model.zero_info, f1)
        _, Z0, _, _ = build_matrix(model.zero_info, f0)
        state.update(lik=_Mixture("zi", "negbin" if family == "zinb" else "poisson", y, X,
                                  off[:, 0], Z),
                     kx=k, kz=Z.shape[1], Z=Z, Z1=Z1, Z0=Z0,
                     p0=np.asarray(model.params, dtype=float))
    elif family == "negbin":
        state.update(beta_nb=np.asarray(model.params[:k], dtype=float),
                     tau_nb=math.log(fit.theta),
                     beta_p=np.asarray(count_model(frame, formula, family="poisson",
                                                   exposure=exposure).model.params[:k], dtype=float))
    else:
        state["beta_p"] = np.asarray(model.params[:k], dtype=float)

    block_size = _block_size(block_size, len(frame), n_boot, what)
    reps, jack, labels, failures, max_iter, jack_text = _run_blocks(
        "count", state, design, n_boot, seed, block_size, methods, max_jackknife, n_jobs,
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


_KINDS = {"generic": _generic, "two_part": _two_part_block, "count": _count_block}
