"""The one result contract of every estimator: a frozen value holding a tidy table.

Every result of :mod:`evalkit.models`, :mod:`evalkit.causal`, :mod:`evalkit.survival`,
:mod:`evalkit.synthesis` and :mod:`evalkit.econ` that estimates something offers

* ``.table`` -- a DataFrame keyed by ``term`` with ``estimate, std_error, ci_low,
  ci_high, p_value`` (NaN where a quantity has none);
* ``.at(term, column="estimate")`` -- one value of that table;
* ``.effect(...)`` -- a method returning an :class:`EffectResult`, whose table is keyed
  by ``term`` too, the terms being the results vocabulary's scales (``rate_ratio``,
  ``cost_difference``, ``hazard_ratio``, ...).

Where a term repeats, a further key column tells the rows apart (``part`` of a two-part
model, ``wtp`` of net monetary benefit, ``year`` of a budget impact, ``n_control`` of a
power curve) and ``.at`` takes it as a keyword. A Kaplan-Meier curve is not a term-keyed
estimate: it is read at chosen times with ``survival_at``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

TABLE_COLUMNS = ["term", "estimate", "std_error", "ci_low", "ci_high", "p_value"]


def wald_table(terms, estimate, std_error, alpha: float = 0.05, part: str | None = None,
               df: float | None = None) -> pd.DataFrame:
    """Tidy coefficient table with Wald (normal, or t when ``df`` is given) intervals."""
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(std_error, dtype=float)
    dist = stats.norm if df is None else stats.t(df)
    q = dist.ppf(1 - alpha / 2)
    z = est / se
    p = 2 * dist.sf(np.abs(z))
    table = pd.DataFrame({
        "term": list(terms), "estimate": est, "std_error": se,
        "ci_low": est - q * se, "ci_high": est + q * se, "p_value": p,
    })
    if part is not None:
        table.insert(1, "part", part)
    return table


class TermTable:
    """What every result shares: one accessor for one value of its ``.table``."""

    table: pd.DataFrame

    def at(self, term: str, column: str = "estimate", **where):
        """One value of ``.table``: the ``column`` of the row whose ``term`` is ``term``.

        ``where`` narrows the match by other key columns of tables that repeat a term,
        e.g. ``fit.at("treated", part="positive")`` for a two-part model.

        Examples
        --------
        >>> fit.effect("treated").at("rate_ratio")            # doctest: +SKIP
        >>> fit.effect("treated").at("rate_ratio", "ci_low")  # doctest: +SKIP
        """
        table = self.table
        mask = table["term"] == term
        for key, value in where.items():
            mask &= table[key] == value
        rows = table.loc[mask]
        if rows.empty:
            raise KeyError(f"no term {term!r}{f' with {where}' if where else ''}; terms here: "
                           f"{list(dict.fromkeys(table['term']))}")
        if len(rows) > 1:
            keys = [c for c in table.columns if c not in TABLE_COLUMNS and c != "term"][:3]
            raise KeyError(f"term {term!r} names {len(rows)} rows; narrow it by one of "
                           f"{keys}, e.g. .at({term!r}, {keys[0] if keys else 'part'}=...).")
        if column not in table.columns:
            raise KeyError(f"no column {column!r}; columns here: {list(table.columns)}")
        value = rows[column].iloc[0]
        return float(value) if isinstance(value, (int, float, np.number)) else value


def _fmt_table(table: pd.DataFrame, digits: int) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.{digits}g}")


@dataclass(frozen=True)
class EffectResult(TermTable):
    """An effect of a treatment or intervention, as a value: the one effect type.

    Attributes
    ----------
    table : DataFrame
        Rows keyed by ``term`` with ``estimate, std_error, ci_low, ci_high, p_value``;
        ``term`` is the results vocabulary's scale of the row (``difference``,
        ``rate_difference_per_1000_mm``, ``rate_ratio``, ``cost_difference``, ``ratio``,
        ``hazard_ratio``, ...) or, where one effect has several quantities on one scale,
        the quantity's name (with its ``scale`` in a further column). Ratio rows carry
        the SE of the ratio itself (``ratio * se(log ratio)``).
    treatment : str
        What was contrasted: the 0/1 column set to 1 and then 0, the treated x post term,
        the intervention.
    method : str
    nobs : int or None
        Rows (members, units, studies) behind the effect; None where there are none
        (economic figures computed from other estimates).
    vcov : str
        The variance the standard errors use.
    alpha : float
    estimand : str
        ``ATE``, ``ATT``, ...
    mean_treated, mean_control : float
        Average predicted outcome with everyone treated / untreated, on the scale of the
        difference row (NaN where the estimator does not predict them).
    extra : dict
        Method-specific facts.
    """

    table: pd.DataFrame
    treatment: str
    method: str
    nobs: int | None = None
    vcov: str = ""
    alpha: float = 0.05
    estimand: str = "ATE"
    mean_treated: float = math.nan
    mean_control: float = math.nan
    extra: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def summary(self) -> str:
        lines = [f"{self.estimand} of {self.treatment} ({self.method})"
                 + (f"; {self.nobs} rows" if self.nobs is not None else "")
                 + (f"; vcov {self.vcov}" if self.vcov else "")]
        if math.isfinite(self.mean_treated) and math.isfinite(self.mean_control):
            lines.append(f"mean if all treated: {self.mean_treated:.6g}; if none treated: "
                         f"{self.mean_control:.6g}")
        lines.append(_fmt_table(self.table, 6))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = (f"<p><b>{self.estimand} of {self.treatment}</b> ({self.method})"
                + (f" &middot; {self.nobs} rows" if self.nobs is not None else "") + "</p>")
        return head + self.table.to_html(index=False, float_format=lambda v: f"{v:.4g}")


_RECORD_FIELDS = ("outcome", "contrast", "estimand", "method", "analysis", "model", "family",
                  "adjusted_for", "primary")


class RecordsEffect(TermTable):
    """``effect()`` for results whose estimates are economic figures: the records of
    their ``estimates()`` method (results vocabulary) as an :class:`EffectResult` whose
    terms are the records' scales (``net_savings_per_member``, ``roi``, ``nmb``, ...);
    further columns such as ``wtp`` or ``period`` tell repeated terms apart."""

    def effect(self) -> EffectResult:
        """The figures as an :class:`EffectResult` keyed by ``term`` (the record's scale)."""
        rec = self.estimates().reset_index(drop=True)
        table = rec.rename(columns={"scale": "term"})
        for c in TABLE_COLUMNS:
            if c not in table.columns:
                table[c] = np.nan
        extra = [c for c in table.columns if c not in TABLE_COLUMNS and c not in _RECORD_FIELDS]
        first = rec.iloc[0] if len(rec) else {}
        return EffectResult(
            table=table[TABLE_COLUMNS + extra], treatment=str(first.get("contrast", "")),
            method="; ".join(dict.fromkeys(rec["method"])) if "method" in rec else "",
            estimand=str(first.get("estimand", "")), extra={"outcome": first.get("outcome")})


def effect_table(rows, extra_columns=()) -> pd.DataFrame:
    """An :class:`EffectResult` table from ``(term, estimate, std_error, ci_low, ci_high,
    p_value, *extra)`` tuples (or dicts with those keys)."""
    columns = TABLE_COLUMNS + list(extra_columns)
    return pd.DataFrame(list(rows), columns=columns)


@dataclass(frozen=True)
class ModelResult(TermTable):
    """A fitted model as a value.

    Attributes
    ----------
    table : DataFrame
        ``term, estimate, std_error, ci_low, ci_high, p_value`` (and ``part`` for
        two-part models), terms named as R names them.
    method : str
        What was fitted, e.g. ``"negbin (NB2, theta by ML)"``.
    formula : str
    nobs : int
        Rows used in the fit.
    dropped : dict
        Rows left out and why (reason -> count).
    loglik : float or None
    extra : dict
        Method-specific facts (theta, concordance, dispersion, ...).
    """

    table: pd.DataFrame
    method: str
    formula: str
    nobs: int
    dropped: dict = field(default_factory=dict)
    loglik: float | None = None
    alpha: float = 0.05
    extra: dict = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def summary(self) -> str:
        lines = [f"{self.method}: {self.formula}", f"rows used: {self.nobs}"]
        if self.dropped:
            lines.append("rows dropped: " + ", ".join(f"{k}={v}" for k, v in self.dropped.items()))
        if self.loglik is not None:
            lines.append(f"log-likelihood: {self.loglik:.6g}")
        for key, value in self.extra.items():
            if isinstance(value, (int, float, np.floating)):
                lines.append(f"{key}: {value:.6g}")
        lines.append(_fmt_table(self.table, 6))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = f"<p><b>{self.method}</b>: <code>{self.formula}</code> &middot; {self.nobs} rows</p>"
        return head + self.table.to_html(index=False, float_format=lambda v: f"{v:.4g}")
