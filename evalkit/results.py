"""The results contract: every estimate as a record, written to ``results.json``.

Each workbook records its estimates and tables with a :class:`Recorder`; the runner
merges the parts, in workbook order, into ``results.json`` (see docs/results.md)::

    run:       evalkit version, params, params hash, seed, data fingerprint,
               start/end times, status, per-workbook status
    spec:      the run's analysis spec (spec.json; :mod:`evalkit.analysis.spec`)
    estimates: workbook, outcome, contrast, estimand, method, scale, estimate,
               std_error, ci_low, ci_high, p_value, n_treated, n_control, the
               structured fields analysis, model, family, adjusted_for, primary;
               with resampling also n_replicates, n_failed (and replicates_flag)
    tables:    named tables as lists of records

``method`` is a sentence for readers; code reads the structured fields. ``primary`` is
true for exactly one estimate per outcome and scale (:func:`mark_primary`).

For ratio scales (``rate_ratio``, ``hazard_ratio``, ``odds_ratio``, ``ratio``) the
``std_error`` is that of the log of the estimate, which is what the interval is built on.
Every file is written to a temporary name and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import EvalkitError

#: The analysis spec's file in a run folder (:mod:`evalkit.analysis.spec`).
SPEC_FILE = "spec.json"
#: Files of the stored design in a run's ``work`` folder (:mod:`evalkit.analysis.design`).
DESIGN_FILE = "design.parquet"
DESIGN_META = "design.json"
#: Above this share of failed replicates an estimate is flagged: in the workbook
#: (:func:`evalkit.models.bootstrap.replicates_sentence`), in results.json
#: (``replicates_flag``) and in the brief.
FAILED_SHARE_LIMIT = 0.05
#: What an estimate record's ``analysis`` says it is (docs/results.md).
ANALYSES = ("adjusted", "design", "crude", "prepost", "its", "survival", "descriptive",
            "valuation", "budget", "power", "synthesis", "projection", "survey")
#: The order in which a record is chosen as an outcome's primary estimate on a scale
#: when the spec's primary analysis has none on that scale.
PRIMARY_ORDER = ("adjusted", "design", "survival", "its", "prepost", "valuation", "synthesis",
                 "projection", "survey", "budget", "power", "crude", "descriptive")


SCALES = (
    "difference", "ratio", "rate_ratio", "rate_difference_per_1000_mm", "hazard_ratio",
    "odds_ratio", "risk_difference", "cost_difference", "pmpm_difference",
    "net_savings_per_member", "roi", "benefit_cost_ratio", "icer", "nmb",
    "probability_cost_saving", "proportion", "mean",
)
ESTIMATE_FIELDS = ("workbook", "outcome", "contrast", "estimand", "method", "scale", "estimate",
                   "std_error", "ci_low", "ci_high", "p_value", "n_treated", "n_control",
                   "analysis", "model", "family", "adjusted_for", "primary")
#: Analyses that adjust for something: their records must say what (``adjusted_for``).
ADJUSTING = ("adjusted", "design")
#: Optional fields of estimates that rest on resampling: replicates drawn, replicates that
#: could not be computed, and a warning when more than 5% failed. Present only on such
#: records (a null value is left out rather than written).
RESAMPLING_FIELDS = ("n_replicates", "n_failed", "replicates_flag")


def _clean(value):
    """JSON-safe, deterministic values: NaN/inf -> None, numpy -> Python, dates -> ISO."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (pd.Timestamp, _dt.date, _dt.datetime)):
        return value.isoformat()[:10] if isinstance(value, (_dt.date, pd.Timestamp)) and \
            not isinstance(value, _dt.datetime) else value.isoformat()
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def records(df: pd.DataFrame) -> list[dict]:
    """A DataFrame as JSON-safe records (column order kept)."""
    return [_clean(dict(zip(df.columns, row))) for row in df.itertuples(index=False, name=None)]


@functools.cache
def _umask() -> int:
    """The process's umask (read once, when first needed), so files written through a
    temporary file get an ordinary new file's permissions rather than mkstemp's 0600."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, flushed to disk and
    renamed into place: a reader (or a crash, or a full disk) never leaves half a file.
    ``mode``: the file's permissions (default: an ordinary new file's, from the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to ``path`` via a temporary file and an atomic rename."""
    write_text_atomic(path, json.dumps(_clean(obj), indent=1, allow_nan=False) + "\n")


class Recorder:
    """Collects one workbook's estimates and tables; :meth:`save` writes them.

    Parameters
    ----------
    output_dir : the run's output folder.
    workbook : the workbook's name (``data_quality``, ``utilization``, ...).
    """

    def __init__(self, output_dir: str | Path, workbook: str):
        self.path = Path(output_dir) / "parts" / f"{workbook}.json"
        self.workbook = workbook
        self.estimates: list[dict] = []
        self.tables: dict[str, list[dict]] = {}

    def add_estimate(self, *, outcome: str, scale: str, estimate: float, analysis: str | None
                     = None, contrast: str = "self_help vs control", estimand: str = "ATE",
                     method: str = "", std_error=None, ci_low=None, ci_high=None,
                     p_value=None, n_treated=None, n_control=None, model: str | None = None,
                     family: str | None = None, adjusted_for=None, **extra) -> None:
        """Add one estimate record.

        ``analysis`` (one of :data:`ANALYSES`) is required: it says what kind
        of estimate this is, so the report and the primary choice never read ``method``.
        ``adjusted_for`` lists the terms adjusted for (empty for an unadjusted estimate;
        required for an adjusted or design estimate).
        """
        if scale not in SCALES:
            raise EvalkitError(f"scale {scale!r} is not in the results vocabulary: {', '.join(SCALES)}")
        if analysis not in ANALYSES:
            raise EvalkitError(f"{self.workbook}: estimate of {outcome!r} ({scale}) has analysis "
                               f"{analysis!r}; give one of {', '.join(ANALYSES)}")
        adjusted_for = [] if adjusted_for is None else [str(t) for t in adjusted_for]
        if analysis in ADJUSTING and not adjusted_for:
            raise EvalkitError(f"{self.workbook}: the {analysis} estimate of {outcome!r} "
                               f"({scale}) does not say what it adjusted for (adjusted_for)")
        rec = {"workbook": self.workbook, "outcome": outcome, "contrast": contrast,
               "estimand": estimand, "method": method, "scale": scale, "estimate": estimate,
               "std_error": std_error, "ci_low": ci_low, "ci_high": ci_high,
               "p_value": p_value, "n_treated": n_treated, "n_control": n_control,
               "analysis": analysis, "model": model, "family": family,
               "adjusted_for": adjusted_for, "primary": False}
        rec.update(extra)
        for key in RESAMPLING_FIELDS:             # counts stay whole numbers in a table
            if key in rec and _clean(rec[key]) is None:
                del rec[key]
            elif key in rec and key != "replicates_flag":
                rec[key] = int(rec[key])
        self.estimates.append(_clean(rec))

    def add_estimates(self, df: pd.DataFrame, **defaults) -> None:
        """Add every row of ``df`` (columns named as the estimate fields) as an estimate."""
        labelled = ("contrast", "estimand", "method", "analysis", "model", "family",
                    "adjusted_for")                       # an empty value keeps the default
        for rec in records(df):
            self.add_estimate(**{**defaults, **{k: v for k, v in rec.items()
                                                if not (v is None and k in labelled)}})

    def add_table(self, name: str, df: pd.DataFrame) -> None:
        self.tables[name] = records(df)

    def save(self) -> Path:
        write_json_atomic(self.path, {"workbook": self.workbook, "estimates": self.estimates,
                                      "tables": self.tables})
        return self.path


def assemble(output_dir: Path, run_info: dict, workbooks: list[str]) -> dict:
    """Merge the workbooks' parts into one results mapping, in workbook order."""
    estimates, tables = [], {}
    for wb in workbooks:
        part = Path(output_dir) / "parts" / f"{wb}.json"
        if not part.exists():
            continue
        data = json.loads(part.read_text())
        estimates += data["estimates"]
        for name, rows in data["tables"].items():
            tables[f"{wb}.{name}"] = rows
    spec_path = Path(output_dir) / SPEC_FILE
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else None
    return {"run": run_info, "spec": spec, "estimates": mark_primary(estimates, spec),
            "tables": tables}


def mark_primary(estimates: list[dict], spec: dict | None = None) -> list[dict]:
    """Set ``primary`` on exactly one record per outcome and scale.

    Within each (outcome, scale) the record chosen is the one of the outcome's primary
    analysis in the spec (``study.outcomes.<name>.primary``; default ``adjusted``, or
    ``survival`` for time to event), else the first analysis present in
    :data:`PRIMARY_ORDER`; among records of that analysis a bootstrap
    interval (``interval: bootstrap``) before a delta-method one, then the first recorded
    (workbook order). Where a scale holds per-arm figures only, the first arm's is marked.
    """
    first = {n: o.get("primary") for n, o in ((spec or {}).get("outcomes") or {}).items()}
    order = {a: i for i, a in enumerate(PRIMARY_ORDER)}
    best: dict = {}
    for i, r in enumerate(estimates):
        rank = (0 if r.get("analysis") == first.get(r.get("outcome")) else 1,
                order.get(r.get("analysis"), len(order)),
                0 if r.get("interval") == "bootstrap" else 1, i)
        key = (r.get("outcome"), r.get("scale"))
        if key not in best or rank < best[key]:
            best[key] = rank
    chosen = {v[-1] for v in best.values()}
    return [{**r, "primary": i in chosen} for i, r in enumerate(estimates)]


def load(path: str | Path) -> dict:
    """Read a results.json; estimates come back as a DataFrame under ``estimates_frame``."""
    data = json.loads(Path(path).read_text())
    data["estimates_frame"] = pd.DataFrame(data["estimates"])
    return data
