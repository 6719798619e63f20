"""The shared shape of every fitted model: a frozen value holding a tidy table."""
from __future__ import annotations

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
        table.insert(0, "part", part)
    return table


@dataclass(frozen=True)
class ModelResult:
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
        lines.append(self.table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = f"<p><b>{self.method}</b>: <code>{self.formula}</code> &middot; {self.nobs} rows</p>"
        return head + self.table.to_html(index=False, float_format=lambda v: f"{v:.4g}")
