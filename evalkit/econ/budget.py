"""Budget impact of a referral programme on a health plan, year by year.

A budget impact analysis (BIA) answers the plan's affordability question -- what happens
to *this* plan's spending in each of the next few years if it runs the programme -- as
opposed to a cost-effectiveness analysis, which asks whether the programme is good value.
The calculation follows the ISPOR good-practice reports (Mauskopf et al. 2007; Sullivan
et al. 2014):

* the plan's own population: members, the share eligible (prevalence), the share of
  eligible members referred and the share of referred members who take part, each year;
* a short horizon (1 to 5 years), results for **each year** rather than a single
  present value, and **undiscounted** by default (budget holders pay nominal dollars in
  the year they fall due);
* results also per member per month (PMPM) over *all* plan members, the unit plans budget
  in;
* uncertainty by named scenarios (e.g. low and high uptake), reported as a range, rather
  than by probabilistic analysis.

Each year is a cross-section: the members referred that year incur the referral cost and
that year's participants produce that year's savings (no carry-over between years).

References
----------
Mauskopf JA, Sullivan SD, Annemans L, et al. (2007). Principles of good practice for
budget impact analysis: report of the ISPOR Task Force on Good Research Practices --
Budget Impact Analysis. *Value Health* 10(5):336-347.
Sullivan SD, Mauskopf JA, Augustovski F, et al. (2014). Budget impact analysis --
principles of good practice: report of the ISPOR 2012 Budget Impact Analysis Good
Practice II Task Force. *Value Health* 17(1):5-14.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evalkit.econ.costbenefit import _real
from evalkit.errors import ParamsError
from evalkit.models.base import RecordsEffect

__all__ = ["BudgetImpactResult", "budget_impact"]

_INPUTS = ("plan_members", "prevalence", "referral_rate_by_year", "uptake_by_year",
           "savings_per_participant", "cost_per_referred", "fixed_cost")


def _per_year(name: str, value, years: int, *, low=None, high=None, low_open=False) -> np.ndarray:
    """A scalar broadcast to every year, or one value per year, each checked."""
    if isinstance(value, (str, bytes)) or isinstance(value, Mapping):
        raise ParamsError(f"{name} must be a number or one number per year, got {value!r}.")
    if np.ndim(value) == 0:
        v = _real(name, value, low=low, high=high, low_open=low_open)
        return np.full(years, v)
    vals = list(value)
    if len(vals) != years:
        raise ParamsError(f"{name} has {len(vals)} values but years={years}; give one value "
                          "per year or a single number for all years.")
    return np.array([_real(f"{name}[year {i + 1}]", v, low=low, high=high, low_open=low_open)
                     for i, v in enumerate(vals)])


def _one_scenario(years: int, discount_rate: float, plan_members, prevalence,
                  referral_rate_by_year, uptake_by_year, savings_per_participant,
                  cost_per_referred, fixed_cost) -> pd.DataFrame:
    members = _per_year("plan_members", plan_members, years, low=0, low_open=True)
    prev = _real("prevalence", prevalence, low=0, high=1,
                 hint="Prevalence is the share of plan members eligible for referral.")
    referral = _per_year("referral_rate_by_year", referral_rate_by_year, years, low=0, high=1)
    uptake = _per_year("uptake_by_year", uptake_by_year, years, low=0, high=1)
    savings = _per_year("savings_per_participant", savings_per_participant, years)
    cost = _per_year("cost_per_referred", cost_per_referred, years, low=0)
    fixed = _real("fixed_cost", fixed_cost, low=0)

    year = np.arange(1, years + 1)
    factor = (1.0 + discount_rate) ** -year.astype(float)
    eligible = members * prev
    referred = eligible * referral
    participating = referred * uptake
    program_cost = (referred * cost + np.where(year == 1, fixed, 0.0)) * factor
    saved = participating * savings * factor
    net = program_cost - saved
    out = pd.DataFrame({
        "year": year, "plan_members": members, "eligible": eligible, "referred": referred,
        "participating": participating, "discount_factor": factor,
        "program_cost": program_cost, "savings": saved, "net_budget_impact": net,
        "pmpm_impact": net / (members * 12.0),
    })
    out["cumulative_net_budget_impact"] = out["net_budget_impact"].cumsum()
    return out


@dataclass(frozen=True, eq=False)
class BudgetImpactResult(RecordsEffect):
    """A budget impact analysis, as a value.

    Attributes
    ----------
    table : DataFrame
        Base case, keyed by ``term`` (a column of ``by_year``) with ``year`` as the
        qualifier: ``term, year, estimate``, e.g. ``res.at("net_budget_impact",
        year=2)``.
    by_year : DataFrame
        The same base case, one row per year: ``year, plan_members, eligible, referred,
        participating, discount_factor, program_cost, savings, net_budget_impact,
        pmpm_impact, cumulative_net_budget_impact``. ``net_budget_impact`` = programme
        cost - savings (positive: the plan spends more; negative: it saves);
        ``pmpm_impact`` divides it by all plan member-months of the year.
    scenarios : DataFrame
        The same columns for every scenario (``base`` first), with a ``scenario`` column.
    summary : DataFrame
        Per scenario: ``total_program_cost, total_savings, total_net_budget_impact,
        mean_pmpm_impact, min_pmpm_impact, max_pmpm_impact``.
    ranges : DataFrame
        Per year, the lowest and highest net budget impact and PMPM impact across all
        scenarios (base included): ``year, net_low, net_high, pmpm_low, pmpm_high``.
    inputs : dict
        Base-case inputs and scenario overrides, for the record.
    """

    table: pd.DataFrame
    by_year: pd.DataFrame
    scenarios: pd.DataFrame
    summary: pd.DataFrame
    ranges: pd.DataFrame
    inputs: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def estimates(self, outcome: str = "total_cost",
                  contrast: str = "with vs without the referral programme") -> pd.DataFrame:
        """Records per year: ``cost_difference`` (net budget impact, $) and
        ``pmpm_difference`` (PMPM impact), with the scenario range in ``scenario_low`` /
        ``scenario_high`` and the year in ``period`` (not confidence intervals)."""
        rows = []
        rng = self.ranges.set_index("year")
        for _, r in self.by_year.iterrows():
            y = int(r["year"])
            for col, scale, lo, hi, what in (
                    ("net_budget_impact", "cost_difference", "net_low", "net_high",
                     "net budget impact, $ (programme cost - savings)"),
                    ("pmpm_impact", "pmpm_difference", "pmpm_low", "pmpm_high",
                     "net budget impact per plan member per month, $")):
                rows.append({"outcome": outcome, "contrast": contrast, "estimand": what,
                             "method": "budget impact (ISPOR; Sullivan et al. 2014)",
                             "analysis": "budget", "adjusted_for": [],
                             "scale": scale, "estimate": float(r[col]), "period": f"year {y}",
                             "scenario_low": float(rng.loc[y, lo]),
                             "scenario_high": float(rng.loc[y, hi])})
        return pd.DataFrame(rows)


def budget_impact(plan_members, prevalence: float, referral_rate_by_year, uptake_by_year,
                  savings_per_participant, cost_per_referred, *, years: int = 5,
                  discount_rate: float = 0.0, fixed_cost: float = 0.0,
                  scenarios: Mapping[str, Mapping[str, object]] | None = None
                  ) -> BudgetImpactResult:
    """Year-by-year budget impact of the programme on the plan, with scenario ranges.

    Parameters
    ----------
    plan_members : int or sequence
        Members enrolled in the plan (each year, or one number for all years).
    prevalence : float
        Share of plan members eligible for referral (e.g. with a substance-use diagnosis).
    referral_rate_by_year : float or sequence
        Share of eligible members referred in each year (ramps up as the programme grows).
    uptake_by_year : float or sequence
        Share of referred members who take part, each year.
    savings_per_participant : float or sequence
        Professional-care cost averted per participant per year ($).
    cost_per_referred : float or sequence
        Programme cost per referred member per year ($; e.g.
        ``ProgramCosts.cost_per_referred``).
    years : int, default 5
        Horizon: years 1..``years`` (ISPOR: typically 1 to 5).
    discount_rate : float, default 0
        Undiscounted by default, as both ISPOR reports advise; when > 0, year t's flows
        are discounted by ``(1 + r) ** -t`` (end-of-year, as in
        :func:`~evalkit.econ.cost_benefit`) and ``discount_factor`` shows it.
    fixed_cost : float, default 0
        One-off start-up cost, counted in year 1.
    scenarios : mapping name -> overrides, optional
        E.g. ``{"low": {"uptake_by_year": 0.2}, "high": {"uptake_by_year": 0.6,
        "savings_per_participant": 2500}}``. Keys are the inputs above
        (``plan_members, prevalence, referral_rate_by_year, uptake_by_year,
        savings_per_participant, cost_per_referred, fixed_cost``).

    Returns
    -------
    BudgetImpactResult

    Notes
    -----
    For year t: eligible = members × prevalence; referred = eligible × referral_t;
    participating = referred × uptake_t; programme cost = referred × cost_t (+ start-up in
    year 1); savings = participating × saving_t; net budget impact = programme cost -
    savings; PMPM impact = net / (12 × members_t).

    Examples
    --------
    >>> r = budget_impact(100_000, 0.02, [0.1, 0.2], 0.5, 1846, 150, years=2)
    >>> r.by_year["net_budget_impact"].round(2).tolist()
    [-154600.0, -309200.0]
    """
    if isinstance(years, (bool, np.bool_)) or not isinstance(years, (int, np.integer)) or years < 1:
        raise ParamsError(f"years must be a whole number >= 1 (the horizon, usually 1 to 5), "
                          f"got {years!r}.")
    years = int(years)
    d = _real("discount_rate", discount_rate, low=0, high=1, high_open=True,
              hint="Give it as a fraction (0.03 for 3%); ISPOR advises 0 for budget impact.")
    base = dict(plan_members=plan_members, prevalence=prevalence,
                referral_rate_by_year=referral_rate_by_year, uptake_by_year=uptake_by_year,
                savings_per_participant=savings_per_participant,
                cost_per_referred=cost_per_referred, fixed_cost=fixed_cost)
    scenarios = dict(scenarios or {})
    if "base" in scenarios:
        raise ParamsError("'base' is the name of the base case; give scenarios other names.")
    frames = {"base": _one_scenario(years, d, **base)}
    for name, over in scenarios.items():
        if not isinstance(over, Mapping):
            raise ParamsError(f"scenario {name!r} must be a mapping of input -> value.")
        unknown = sorted(set(over) - set(_INPUTS))
        if unknown:
            raise ParamsError(f"scenario {name!r} overrides unknown inputs {unknown}; allowed: "
                              f"{', '.join(_INPUTS)}.")
        try:
            frames[str(name)] = _one_scenario(years, d, **{**base, **over})
        except ParamsError as exc:
            raise ParamsError(f"scenario {name!r}: {exc}") from exc

    all_ = pd.concat([f.assign(scenario=k) for k, f in frames.items()], ignore_index=True)
    all_ = all_[["scenario"] + [c for c in all_.columns if c != "scenario"]]
    summary = pd.DataFrame([{
        "scenario": k, "total_program_cost": f["program_cost"].sum(),
        "total_savings": f["savings"].sum(), "total_net_budget_impact": f["net_budget_impact"].sum(),
        "mean_pmpm_impact": f["pmpm_impact"].mean(), "min_pmpm_impact": f["pmpm_impact"].min(),
        "max_pmpm_impact": f["pmpm_impact"].max()} for k, f in frames.items()])
    g = all_.groupby("year", sort=True)
    ranges = pd.DataFrame({"year": np.arange(1, years + 1),
                           "net_low": g["net_budget_impact"].min().to_numpy(),
                           "net_high": g["net_budget_impact"].max().to_numpy(),
                           "pmpm_low": g["pmpm_impact"].min().to_numpy(),
                           "pmpm_high": g["pmpm_impact"].max().to_numpy()})
    base_case = frames["base"]
    table = base_case.melt(id_vars="year", var_name="term", value_name="estimate")
    return BudgetImpactResult(table=table[["term", "year", "estimate"]], by_year=base_case,
                              scenarios=all_, summary=summary,
                              ranges=ranges, inputs={"base": base, "scenarios": scenarios,
                                                     "years": years, "discount_rate": d})
