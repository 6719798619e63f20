"""Readmission after an inpatient stay: how soon, and how often within 30 and 90 days.

A member's *index stay* is their first inpatient stay admitted in the follow-up window;
the clock starts on its discharge day and stops at the next admission (a readmission),
or is censored when their coverage or the follow-up window ends (the durations are built
by :meth:`evalkit.Study.readmission_times`). The analysis is the same as for the time to
a first ER visit -- Kaplan-Meier by arm, log-rank, a Cox model adjusted for the baseline
covariates (:func:`evalkit.analysis.outcomes.time_to_event_effects`) -- read as the probability of
*being readmitted* by day 30 and day 90 (one minus the Kaplan-Meier survival).

Readmissions are rarer than ER visits: only members with a stay can be readmitted, so a
small plan may not have enough of either. :func:`readmission_effects` then says so in
words and returns no estimates instead of failing or fitting a model to a handful of
events (and showing small cells).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..errors import EvalkitError
from .outcomes import time_to_event_effects

__all__ = ["Readmission", "readmission_effects", "OUTCOME"]

#: Outcome name in results.json.
OUTCOME = "inpatient_readmission"
_ARMS = ("self_help", "control")


@dataclass(frozen=True)
class Readmission:
    """Time to readmission by arm.

    Attributes
    ----------
    available : bool
        False when there were too few index stays or readmissions to analyse; then
        ``reason`` says why and every other result is None or empty.
    reason : str
        Why nothing was estimated ("" when ``available``).
    members : DataFrame
        Per arm: members with an index stay and readmissions (counts below ``min_cell``
        shown as ``None``).
    tte : TimeToEvent or None
        Kaplan-Meier curves (``tte.km.plot()``), log-rank test, Cox model.
    risk : DataFrame
        ``group, days, probability, std_error, ci_low, ci_high``: the probability of a
        readmission within ``days`` of discharge (1 - Kaplan-Meier survival; log-scale
        interval of the survival turned round).
    effects : DataFrame
        Records for results.json: the adjusted hazard ratio (``scale="hazard_ratio"``)
        and the readmission probabilities (``scale="proportion"``).
    """

    available: bool
    reason: str
    members: pd.DataFrame
    tte: object = None
    risk: pd.DataFrame = field(default_factory=pd.DataFrame)
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> str:
        """One plain sentence per finding (or the reason nothing was estimated)."""
        if not self.available:
            return self.reason
        lines = []
        for r in self.risk.itertuples():
            lines.append(f"{r.group}: {100 * r.probability:.1f}% readmitted within {r.days} "
                         f"days (95% CI {100 * r.ci_low:.1f}% to {100 * r.ci_high:.1f}%)")
        hr = self.effects[self.effects["scale"] == "hazard_ratio"].iloc[0]
        lines.append(f"adjusted hazard ratio of readmission, self_help vs control: "
                     f"{hr['estimate']:.2f} (95% CI {hr['ci_low']:.2f} to {hr['ci_high']:.2f})")
        return "\n".join(lines)


def _counts(frame: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    rows = []
    for arm in _ARMS:
        sub = frame[frame["group"] == arm]
        n, ev = int(len(sub)), int(sub["event"].sum())
        rows.append({"group": arm, "members_with_index_stay": n if n >= min_cell else None,
                     "readmissions": ev if ev >= min_cell else None})
    return pd.DataFrame(rows)


def readmission_effects(frame: pd.DataFrame, covariates: list[str], times=(30, 90),
                        min_cell: int = 11, alpha: float = 0.05) -> Readmission:
    """Kaplan-Meier, readmission probabilities, log-rank and Cox for readmission times.

    Parameters
    ----------
    frame : DataFrame
        One row per member with an index stay: ``days`` (from discharge), ``event``
        (1 = readmitted), ``group``, ``treated`` and covariates, as returned by
        :meth:`evalkit.Study.readmission_times`.
    covariates : list of str
        Adjustment set for the Cox model (baseline use and cost enter as log(1 + x)).
    times : days after discharge at which the readmission probability is reported.
    min_cell : int
        Each arm needs at least this many members with an index stay *and* this many
        readmissions (default 11, the small-cell rule: fewer would also be a count of
        fewer than 11 people in the published curves and tests).
    alpha : 1 - confidence level.

    Returns
    -------
    Readmission
        With ``available=False`` and a ``reason`` in words when there is too little to
        analyse, or when the model cannot be fitted (e.g. the Cox model does not
        converge); nothing is estimated then.

    Notes
    -----
    Readmission probability by day ``t`` is ``1 - S(t)`` with ``S`` the Kaplan-Meier
    estimate; its interval is ``[1 - S_high, 1 - S_low]`` from the log-scale interval
    of ``S`` (Greenwood variance), so the standard error is that of ``S``. Death is not
    in claims data and is treated as censoring (at the end of coverage); where deaths
    after discharge are common, 1 - KM overstates the readmission risk (a competing
    risk).
    """

    need = {"days", "event", "group", "treated"}
    missing = sorted(need - set(frame.columns))
    if missing:
        raise EvalkitError(f"readmission_effects: frame lacks column(s) {missing}; build it "
                           "with Study.readmission_times().")
    members = _counts(frame, min_cell)
    short = []
    for arm in _ARMS:
        sub = frame[frame["group"] == arm]
        if len(sub) < min_cell:
            short.append(f"fewer than {min_cell} members in the {arm} arm had an inpatient "
                         "stay in the follow-up window")
        elif int(sub["event"].sum()) < min_cell:
            short.append(f"fewer than {min_cell} members of the {arm} arm were readmitted")
    if short:
        return Readmission(False, "Time to readmission was not analysed: " + "; ".join(short)
                           + ". A larger plan or a longer follow-up window would be needed.",
                           members)
    try:
        tte = time_to_event_effects(frame, covariates, OUTCOME, times=tuple(times), alpha=alpha)
    except EvalkitError as exc:
        return Readmission(False, "Time to readmission was not analysed: the models could not "
                           f"be fitted to these data ({exc}).", members)
    at = tte.at
    risk = pd.DataFrame({"group": at["group"].astype(str).to_numpy(),
                         "days": at["time"].astype(int).to_numpy(),
                         "probability": 1.0 - at["survival"].to_numpy(),
                         "std_error": at["std_error"].to_numpy(),
                         "ci_low": 1.0 - at["ci_high"].to_numpy(),
                         "ci_high": 1.0 - at["ci_low"].to_numpy()})
    hr = tte.effects[tte.effects["scale"] == "hazard_ratio"].copy()
    n_t, n_c = int(frame["treated"].sum()), int((1 - frame["treated"]).sum())
    prob = pd.DataFrame([{
        "outcome": f"{OUTCOME}_within_{r.days}_days", "scale": "proportion",
        "estimate": float(r.probability), "std_error": float(r.std_error),
        "ci_low": float(r.ci_low), "ci_high": float(r.ci_high), "p_value": None,
        "method": "1 - Kaplan-Meier (log CI, Greenwood SE), from discharge of the first stay",
        "estimand": r.group, "contrast": f"{r.group} arm", "n_treated": n_t, "n_control": n_c,
        "analysis": "descriptive", "model": "Kaplan-Meier", "family": None, "adjusted_for": []}
        for r in risk.itertuples()])
    hr["method"] = hr["method"] + ", time from discharge of the first follow-up stay"
    effects = pd.concat([hr, prob], ignore_index=True)
    effects["p_value"] = effects["p_value"].astype(object).where(effects["p_value"].notna(), None)
    return Readmission(True, "", members, tte, risk, effects)
