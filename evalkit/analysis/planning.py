"""Planning a study before it is run: could a plan of this size even see the drop?

The question a plan asks before committing to an evaluation -- "could we see an 18% drop
in ER use with 2,000 members?" -- has three answers, all from the negative binomial (NB)
sample-size formulas of Zhu & Lakkis (2014) in :mod:`evalkit.econ.power`:

* members per arm needed for the target power;
* the power with the members available;
* the smallest drop those members could detect (minimum detectable effect);

plus a power curve over plan sizes. The inputs are the comparison arm's rate (events per
member-year) and the NB dispersion. When a plan has claims and does not give them, they
are estimated from the comparison arm's **baseline window** (the year before the index
date, before any referral could act) by an intercept-only NB2 regression with the
member-months as exposure: the rate is the fitted rate per member-month times 12, the
dispersion ``k = 1 / theta`` (NB2's ``Var = mu + mu^2 / theta``). That k is the
dispersion of a member's count over their window; it carries over to a follow-up of
another length only if each member's propensity to use care is constant over time (the
assumption of the formulas, stated in :mod:`evalkit.econ.power`).

References
----------
Zhu H, Lakkis H (2014). Sample size calculation for comparing two negative binomial
rates. *Statistics in Medicine* 33(3):376-387.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..econ import nb_mde, nb_power, nb_sample_size
from ..errors import DataValidationError, ParamsError, StatisticalWarning
from ..models.count import count_model
from .spec import CLAIMS_OUTCOMES

__all__ = ["BaselineEstimate", "estimate_baseline", "PlanningResult", "plan_study"]


@dataclass(frozen=True)
class BaselineEstimate:
    """Comparison-arm rate and NB dispersion estimated from the baseline window.

    Attributes
    ----------
    rate : float
        Events per member-year.
    dispersion : float
        NB2 dispersion k = 1/theta (0 would be Poisson).
    members : int
        Comparison members used.
    member_years : float
    events : int
    method : str
    """

    rate: float
    dispersion: float
    members: int
    member_years: float
    events: int
    method: str


def estimate_baseline(frame: pd.DataFrame, outcome: str = "er_visits",
                      group: str = "group", control: str = "control") -> BaselineEstimate:
    """Rate and dispersion of ``outcome`` in the comparison arm's baseline window.

    ``frame`` is one row per member with ``baseline_<outcome>`` and
    ``baseline_member_months`` (:meth:`evalkit.Study.analysis_frame`). Fits
    ``baseline_<outcome> ~ 1`` as an NB2 regression with log(member-months) as offset
    (:func:`evalkit.models.count_model`, as ``MASS::glm.nb``).

    Raises
    ------
    DataValidationError
        When the columns are missing, the comparison arm is empty or has no events.
    """

    y, mm = f"baseline_{outcome}", "baseline_member_months"
    missing = [c for c in (y, mm, group) if c not in frame]
    if missing:
        raise DataValidationError(f"planning: the analysis frame lacks {missing}; estimating the "
                                  "baseline rate needs claims (a baseline window). Give "
                                  "planning.baseline_rate and planning.dispersion instead.")
    ctrl = frame.loc[(frame[group] == control) & (frame[mm] > 0), [y, mm]]
    if ctrl.empty:
        raise DataValidationError("planning: no comparison-arm member has baseline coverage; "
                                  "give planning.baseline_rate and planning.dispersion.")
    events = int(ctrl[y].sum())
    if events == 0:
        raise DataValidationError(f"planning: the comparison arm has no {outcome} in the baseline "
                                  "window, so no rate can be estimated; give "
                                  "planning.baseline_rate and planning.dispersion.")
    fit = count_model(ctrl, f"{y} ~ 1", family="negbin", exposure=mm)
    rate = float(np.exp(fit.table["estimate"].iloc[0])) * 12.0
    theta = fit.theta
    k = 0.0 if theta is None or not math.isfinite(theta) else 1.0 / float(theta)
    return BaselineEstimate(rate=rate, dispersion=k, members=len(ctrl),
                            member_years=float(ctrl[mm].sum()) / 12.0, events=events,
                            method="intercept-only NB2 regression of the comparison arm's "
                                   "baseline window, member-months as exposure")


@dataclass(frozen=True, eq=False)
class PlanningResult:
    """The three answers of study planning, and the power curve.

    Attributes
    ----------
    inputs : DataFrame
        ``quantity, value, source`` (given in the params, or estimated from claims).
    sample_size : NBSampleSize
        Members per arm for the target power.
    power : float
        Power with ``members_per_arm``.
    mde : NBMDE or None
        Smallest drop detectable with ``members_per_arm`` at the target power (None when
        no drop reaches it with so few members).
    curve : DataFrame
        ``n_control, n_treated, power`` over a range of plan sizes.
    summary : DataFrame
        One row per answer: ``question, answer, value``.
    """

    inputs: pd.DataFrame
    sample_size: object
    power: float
    mde: object
    curve: pd.DataFrame
    summary: pd.DataFrame
    outcome: str
    relative_reduction: float
    members_per_arm: int
    target_power: float
    baseline: BaselineEstimate | None = None

    def sentences(self) -> list[str]:
        """The answers in plain words."""
        return list(self.summary["answer"])

    def estimates(self) -> pd.DataFrame:
        """Records for results.json: the power at the planned size (scale ``proportion``)
        and the minimum detectable rate ratio (scale ``rate_ratio``)."""
        n, r = self.members_per_arm, self.sample_size.allocation
        drop = f"{self.relative_reduction:.0%}"
        recs = [{"outcome": self.outcome, "contrast": "planned: self_help referral vs none",
                 "estimand": f"power to detect a drop of {drop} with {n:,} comparison and "
                             f"{math.ceil(r * n):,} referred members",
                 "method": self.sample_size.method, "scale": "proportion",
                 "estimate": self.power, "n_treated": math.ceil(r * n), "n_control": n}]
        if self.mde is not None:
            recs.append({"outcome": self.outcome, "contrast": "planned: self_help referral vs none",
                         "estimand": f"minimum detectable rate ratio at {self.target_power:.0%} "
                                     "power", "method": self.mde.method, "scale": "rate_ratio",
                         "estimate": self.mde.rate_ratio, "n_treated": math.ceil(r * n),
                         "n_control": n})
        return pd.DataFrame(recs)


_LABELS = {n: d.label for n, d in CLAIMS_OUTCOMES.items() if d.kind == "count"}


def plan_study(planning, frame: pd.DataFrame | None = None) -> PlanningResult:
    """Answer the planning questions from the params' ``planning`` section.

    Parameters
    ----------
    planning : PlanningParams
        ``baseline_rate`` and ``dispersion`` (estimated from ``frame`` when None),
        ``relative_reduction``, ``members_per_arm``, ``followup_years``, ``allocation``,
        ``alpha``, ``power``, ``method``.
    frame : DataFrame, optional
        The analysis frame (claims mode), needed only when a rate or dispersion is missing.

    Returns
    -------
    PlanningResult

    Examples
    --------
    >>> from evalkit.params import PlanningParams
    >>> res = plan_study(PlanningParams(baseline_rate=0.35, dispersion=1.5))
    >>> res.sample_size.n_per_arm, round(res.power, 3)
    (1854, 0.829)
    """
    pl = planning
    base = None
    rate, k = pl.baseline_rate, pl.dispersion
    src_rate = src_k = "given in the params"
    if rate is None or k is None:
        if frame is None:
            raise DataValidationError("planning: baseline_rate and dispersion are not given and "
                                      "there are no claims to estimate them from.")
        base = estimate_baseline(frame, pl.outcome)
        if rate is None:
            rate = base.rate
            src_rate = (f"estimated: comparison arm's baseline window ({base.members:,} members, "
                        f"{base.events:,} events)")
        if k is None:
            k = base.dispersion
            src_k = "estimated: NB2 fit of the comparison arm's baseline window"
        if base.members < 100:
            warnings.warn(f"planning: the rate and dispersion come from only {base.members} "
                          "comparison members; treat the answers as rough.", StatisticalWarning,
                          stacklevel=2)
    rr = 1.0 - pl.relative_reduction
    common = dict(dispersion=k, followup_years=pl.followup_years, alpha=pl.alpha,
                  allocation=pl.allocation, method=pl.method)
    ss = nb_sample_size(rate, rr, power=pl.power, **common)
    pw = float(nb_power(pl.members_per_arm, rate, rr, **common).power)
    try:
        mde = nb_mde(pl.members_per_arm, rate, power=pl.power, **common)
    except ParamsError:          # no drop reaches the target power with so few members
        mde = None
    top = max(pl.members_per_arm, ss.n_per_arm) * 2
    n = np.unique(np.linspace(max(2, top / 40), top, 80).round().astype(int))
    curve = (nb_power(n, rate, rr, **common).table.drop(columns="term")
             .rename(columns={"estimate": "power"}))
    label = _LABELS.get(pl.outcome, pl.outcome)
    drop = f"{pl.relative_reduction:.0%}"
    n_t = math.ceil(pl.allocation * pl.members_per_arm)
    arms = (f"{pl.members_per_arm:,} members per arm" if pl.allocation == 1 else
            f"{pl.members_per_arm:,} comparison and {n_t:,} referred members")
    verdict = ("yes: the study would be large enough" if pw >= pl.power else
               "not reliably: the study is smaller than the target calls for" if pw >= 0.5 else
               "probably not: a real drop would more often be missed than seen")
    rows = [
        {"question": f"Could we see a {drop} drop in {label} with {arms}?",
         "answer": f"With {arms}, the chance that a study detects a drop of {drop} in "
                   f"{label} (two-sided test at {pl.alpha:g}) is {pw:.0%} against a target of "
                   f"{pl.power:.0%}: {verdict}.", "value": pw},
        {"question": f"How many members are needed for {pl.power:.0%} power?",
         "answer": f"{ss.n_control:,} comparison and {ss.n_treated:,} referred members "
                   f"({ss.n_total:,} in all) give {ss.power:.1%} power to detect a drop of {drop}.",
         "value": float(ss.n_control)},
    ]
    if mde is not None:
        rows.append({"question": f"What is the smallest drop {arms} could detect?",
                     "answer": f"A drop of {-mde.percent_change:.1f}% (rate ratio "
                               f"{mde.rate_ratio:.3f}) is detected with {pl.power:.0%} power.",
                     "value": mde.rate_ratio})
    else:
        rows.append({"question": f"What is the smallest drop {arms} could detect?",
                     "answer": f"No drop reaches {pl.power:.0%} power with so few members.",
                     "value": np.nan})
    inputs = pd.DataFrame([
        {"quantity": f"comparison-arm rate ({label} per member-year)", "value": rate,
         "source": src_rate},
        {"quantity": "dispersion k (Var = mu + k mu^2)", "value": k, "source": src_k},
        {"quantity": "drop to detect", "value": pl.relative_reduction, "source": "given in the params"},
        {"quantity": "rate ratio to detect", "value": rr, "source": "1 - drop"},
        {"quantity": "follow-up (years)", "value": pl.followup_years, "source": "given in the params"},
        {"quantity": "referred per comparison member", "value": pl.allocation,
         "source": "given in the params"},
        {"quantity": "significance level (two-sided)", "value": pl.alpha, "source": "given in the params"},
        {"quantity": "target power", "value": pl.power, "source": "given in the params"},
    ])
    return PlanningResult(inputs=inputs, sample_size=ss, power=pw, mde=mde, curve=curve,
                          summary=pd.DataFrame(rows), outcome=pl.outcome,
                          relative_reduction=pl.relative_reduction,
                          members_per_arm=pl.members_per_arm, target_power=pl.power,
                          baseline=base)
