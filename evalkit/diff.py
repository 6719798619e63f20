"""Two runs side by side (``evalkit diff RUN_A RUN_B``), for sensitivity analyses.

Estimates are matched on what they estimate, never on their values or their ``method``
sentence: workbook, outcome, contrast, estimand, analysis, model, family, scale, the
terms adjusted for, and the qualifiers a workbook adds where one outcome and scale hold
several records (:data:`QUALIFIERS`: period, level, study, wtp ...). Records alike in all
of these are matched in the order they were recorded. Each row of the comparison gives
both estimates with their intervals and the difference B - A; a record found in one run
only says so. The params that differ are listed as dotted keys with both values.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import EvalkitError

#: Fields that say what an estimate is (its key in both runs).
KEY_FIELDS = ("workbook", "outcome", "contrast", "estimand", "analysis", "model", "family",
              "scale", "adjusted_for")
#: Extra fields that tell apart records of one outcome and scale, where a workbook has them.
QUALIFIERS = ("period", "level", "study", "measure", "unit", "design", "quantity", "wtp",
              "interval", "group")
#: The values compared.
VALUE_FIELDS = ("estimate", "ci_low", "ci_high")
#: Run facts listed beside the params when they differ.
RUN_FACTS = ("seed", "data_fingerprint", "evalkit_version", "status")


@dataclass(frozen=True)
class RunDiff:
    """The comparison of two runs.

    Attributes
    ----------
    estimates : one row per estimate: the key fields, ``detail`` (the qualifiers),
        ``in`` (``both``, ``A only``, ``B only``), ``estimate_a``, ``ci_low_a``,
        ``ci_high_a``, the same for B, ``difference`` (B - A) and ``changed``.
    params : one row per params key (dotted) or run fact that differs: ``key``, ``a``, ``b``.
    """

    a: Path
    b: Path
    estimates: pd.DataFrame
    params: pd.DataFrame

    def summary(self) -> str:
        """The comparison as text: the differing params, then the estimates."""
        e = self.estimates
        lines = [f"A: {self.a}", f"B: {self.b}"]
        if self.params.empty:
            lines.append("params: the same")
        else:
            lines.append(f"params: {len(self.params)} differ")
            lines += [f"  {r.key}: {r.a} -> {r.b}" for r in self.params.itertuples()]
        both = e["in"] == "both"
        lines.append(f"estimates: {int(both.sum())} in both runs "
                     f"({int((e['changed'] & both).sum())} changed), "
                     f"{int((e['in'] == 'A only').sum())} in A only, "
                     f"{int((e['in'] == 'B only').sum())} in B only")
        return "\n".join(lines)

    def table(self, changed_only: bool = False) -> pd.DataFrame:
        """The estimates as a readable table (``changed_only``: rows that differ)."""
        e = self.estimates[self.estimates["changed"]] if changed_only else self.estimates
        out = pd.DataFrame({
            "workbook": e["workbook"], "outcome": e["outcome"], "analysis": e["analysis"],
            "scale": e["scale"], "detail": e["detail"], "in": e["in"],
            "A": [_with_ci(*v) for v in zip(e["estimate_a"], e["ci_low_a"], e["ci_high_a"])],
            "B": [_with_ci(*v) for v in zip(e["estimate_b"], e["ci_low_b"], e["ci_high_b"])],
            "B - A": [_num(v) for v in e["difference"]]})
        return out.reset_index(drop=True)


def _num(v) -> str:
    return "" if v is None or pd.isna(v) else f"{v:.4g}"


def _with_ci(est, lo, hi) -> str:
    if est is None or pd.isna(est):
        return "-" if (lo is None or pd.isna(lo)) else f"- ({_num(lo)}, {_num(hi)})"
    return _num(est) + ("" if lo is None or pd.isna(lo) else f" ({_num(lo)}, {_num(hi)})")


def read_run(folder: str | Path) -> dict:
    """A run folder's results.json, or :class:`EvalkitError` when it is not a run folder."""
    path = Path(folder) / "results.json"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("run"), dict) or not isinstance(data.get("estimates"), list):
            raise ValueError
    except (OSError, ValueError, AttributeError):
        raise EvalkitError(f"{folder} is not an evalkit run folder (no readable results.json "
                           "with a run block and estimates)") from None
    return data


def _key(rec: dict) -> tuple:
    return tuple(json.dumps(rec.get(f), sort_keys=True) for f in (*KEY_FIELDS, *QUALIFIERS))


def _keyed(estimates: list[dict]) -> dict[tuple, dict]:
    """Records by key, with the record's rank among those of the same key."""
    seen: dict[tuple, int] = {}
    out = {}
    for rec in estimates:
        k = _key(rec)
        seen[k] = seen.get(k, 0) + 1
        out[(*k, seen[k])] = rec
    return out


def _flat(node, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict) and node:
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(node, sort_keys=True)}


def params_diff(run_a: dict, run_b: dict) -> pd.DataFrame:
    """Params (dotted keys) and run facts (:data:`RUN_FACTS`) that differ between two
    ``run`` blocks, with both values (``absent`` where one run has no such key)."""
    fa, fb = _flat(run_a.get("params") or {}), _flat(run_b.get("params") or {})
    rows = [(k, fa.get(k, "absent"), fb.get(k, "absent")) for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k)]
    rows += [(k, json.dumps(run_a.get(k)), json.dumps(run_b.get(k))) for k in RUN_FACTS
             if run_a.get(k) != run_b.get(k)]
    return pd.DataFrame(rows, columns=["key", "a", "b"])


def diff_runs(a: str | Path, b: str | Path) -> RunDiff:
    """Compare the estimates and params of two run folders (see the module docstring).

    Examples
    --------
    >>> d = diff_runs("runs/demo", "runs/demo-longer-followup")     # doctest: +SKIP
    >>> print(d.summary()); d.table(changed_only=True)               # doctest: +SKIP
    """
    ra, rb = read_run(a), read_run(b)
    ka, kb = _keyed(ra["estimates"]), _keyed(rb["estimates"])
    keys = list(ka) + [k for k in kb if k not in ka]
    rows = []
    for k in keys:
        ea, eb = ka.get(k), kb.get(k)
        rec = ea or eb
        row = {f: rec.get(f) for f in KEY_FIELDS}
        row["adjusted_for"] = ", ".join(row["adjusted_for"] or [])
        row["detail"] = ", ".join(f"{q}={rec[q]}" for q in QUALIFIERS if rec.get(q) is not None)
        row["in"] = "both" if ea and eb else ("A only" if ea else "B only")
        for f in VALUE_FIELDS:
            row[f"{f}_a"] = (ea or {}).get(f)
            row[f"{f}_b"] = (eb or {}).get(f)
        est_a, est_b = row["estimate_a"], row["estimate_b"]
        row["difference"] = est_b - est_a if ea and eb and None not in (est_a, est_b) else None
        row["changed"] = not (ea and eb) or any(row[f"{f}_a"] != row[f"{f}_b"]
                                                for f in VALUE_FIELDS)
        rows.append(row)
    columns = [*KEY_FIELDS, "detail", "in", *(f"{f}_{s}" for s in "ab" for f in VALUE_FIELDS),
               "difference", "changed"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["changed"] = frame["changed"].astype(bool)
    return RunDiff(Path(a), Path(b), frame, params_diff(ra["run"], rb["run"]))
