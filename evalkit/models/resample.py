"""The resampling engine shared by every bootstrap in :mod:`evalkit.models`.

Who is drawn (rows or whole clusters, within strata), the jackknife that BCa's
acceleration needs, the interval methods, and the execution of blocks of replicates in
worker processes. Every draw comes from one ``numpy.random.Generator`` in the main
process, replicate after replicate, so the same seed gives the same resamples whatever
the number of workers. The formulas are in the docstring of :mod:`evalkit.models.bootstrap`.
"""
from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import pickle
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats
from threadpoolctl import threadpool_limits
from tqdm import tqdm  # the plain bar: tqdm.auto warns in Jupyter without ipywidgets

from evalkit.errors import DataValidationError, ParamsError, StatisticalWarning

__all__ = ["CI_METHODS", "bootstrap_indices"]

CI_METHODS = ("percentile", "bca", "basic", "normal")


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

    def draw_counts(self, rng: np.random.Generator) -> np.ndarray:
        """How often each row appears in the resample ``draw(rng)`` would make, from the
        same random numbers but without gathering the drawn unit ids: each stratum's draws
        are counted by position and the counts put at its units (at 1M members about half
        the time of drawing the ids and counting them)."""
        counts = np.zeros(self.n_units, dtype=np.int64)
        for units in self.strata_units:
            g = len(units)
            counts[units] = np.bincount(rng.integers(0, g, g), minlength=g)
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


def _worker_call(fit, payload):
    return fit(_STATE, payload)


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


def _execute(fit, state, tasks, n_jobs, bar, threads: bool = False) -> dict:
    """Run ``fit(state, payload)`` on ``tasks`` (iterator of ``(task_id, payload, n_items)``);
    results by task id. ``fit`` is a module-level function (workers receive it by name).

    Tasks are produced lazily (draws happen here, in order, as tasks are submitted) with
    at most ``2 * n_jobs`` in flight, so memory stays bounded.

    ``threads=True`` runs the tasks in ``n_jobs`` threads of this process instead of worker
    processes: for fits that spend their time in NumPy's array operations and BLAS (which
    release the GIL), such as the batched bootstraps. The data are then not copied into,
    or counted again in the resident memory of, forked workers (at 1M members each worker
    showed the kernel's 1.7-2.7 GB), and no process starts. Each task's result is the same
    either way.
    """
    results = {}
    if n_jobs == 1:
        with threadpool_limits(limits=1, user_api="blas"):
            for tid, payload, m in tasks:
                results[tid] = fit(state, payload)
                bar.update(m)
        return results
    if threads:
        pool = ThreadPoolExecutor(max_workers=n_jobs)
        submit = functools.partial(pool.submit, fit, state)
        limits = threadpool_limits(limits=1, user_api="blas")
    else:
        pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=_mp_context(state),
                                   initializer=_init_worker, initargs=(state,))
        submit = functools.partial(pool.submit, _worker_call, fit)
        limits = contextlib.nullcontext()
    try:
        pending: dict = {}
        exhausted = False
        with limits:
            while True:
                while not exhausted and len(pending) < 2 * n_jobs:
                    try:
                        tid, payload, m = next(tasks)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[submit(payload)] = (tid, m)
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

