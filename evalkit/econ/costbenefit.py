"""What a referral programme is worth to a plan: savings, ROI, payback, ICER and NMB.

The figures a finance committee asks for, computed from an estimated saving per member
(e.g. the cost difference from an outcome model) and what the programme costs.

* :class:`ProgramCosts` -- the programme's inputs, validated when built.
* :func:`cost_benefit` -- per member and per member-month (PMPM): gross savings, programme
  cost, net savings, return on investment, benefit-cost ratio, payback period, break-even
  uptake and break-even cost, cost per ER visit averted; at the estimate and at the limits
  of its confidence interval.
* :func:`icer` -- incremental cost-effectiveness ratio with the four quadrants of the
  cost-effectiveness plane named and dominance handled.
* :func:`nmb` -- incremental net monetary benefit over a range of willingness-to-pay values.

Everything here is arithmetic on a handful of numbers; no library offers these figures
with the conventions below (end-of-year discounting, costs per referred member and
savings per participant), so they are written out here, each with its formula.

Conventions
-----------
Money is in dollars; a "referred member" is a plan member referred to (oriented towards)
self-help groups; a "participant" is a referred member who attends. Savings accrue per
participant, programme costs per referred member. ``delta_cost`` is always programme minus
comparator (negative = the programme saves money), ``delta_effect`` is a health *gain*
(positive = better, e.g. ER visits averted).

References
----------
Drummond MF, Sculpher MJ, Claxton K, Stoddart GL, Torrance GW (2015). *Methods for the
Economic Evaluation of Health Care Programmes*, 4th ed. Oxford University Press.
Black WC (1990). The CE plane: a graphic representation of cost-effectiveness. *Med Decis
Making* 10(3):212-214.
Stinnett AA, Mullahy J (1998). Net health benefits: a new framework for the analysis of
uncertainty in cost-effectiveness analysis. *Med Decis Making* 18(2 Suppl):S68-S80.
Sanders GD et al. (2016). Recommendations for conduct, methodological practices, and
reporting of cost-effectiveness analyses: Second Panel on Cost-Effectiveness in Health
and Medicine. *JAMA* 316(10):1093-1103 (3% annual discount rate).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evalkit.errors import ParamsError, StatisticalWarning
from evalkit.models.base import RecordsEffect

__all__ = [
    "ProgramCosts",
    "CostBenefitResult",
    "cost_benefit",
    "ICERResult",
    "icer",
    "NMBResult",
    "nmb",
]

PERSPECTIVES = ("plan", "society")
DISCOUNT_TIMINGS = ("end", "start")


# --------------------------------------------------------------------------------------
# validation helpers (shared by the econ modules)
# --------------------------------------------------------------------------------------
def _real(name: str, value, *, low: float | None = None, high: float | None = None,
          low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite float within the given bounds, or a ParamsError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise ParamsError(f"{name} must be a number, got {value!r}.{(' ' + hint) if hint else ''}")
    v = float(value)
    if not math.isfinite(v):
        raise ParamsError(f"{name} must be a finite number, got {value!r}.")
    too_low = low is not None and (v < low or (low_open and v == low))
    too_high = high is not None and (v > high or (high_open and v == high))
    if too_low or too_high:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise ParamsError(f"{name} must be {bounds}, got {value!r}.{(' ' + hint) if hint else ''}")
    return v


def _interval(name: str, ci) -> tuple[float, float] | None:
    """A (low, high) pair of finite numbers with low <= high, or None."""
    if ci is None:
        return None
    try:
        lo, hi = ci
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{name} must be a pair (low, high), got {ci!r}.") from exc
    lo = _real(f"{name}[0]", lo)
    hi = _real(f"{name}[1]", hi)
    if lo > hi:
        raise ParamsError(f"{name} must be (low, high) with low <= high, got ({lo:g}, {hi:g}).")
    return lo, hi


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ProgramCosts:
    """What the referral programme costs, and over what horizon it is judged.

    All money in dollars. Every field is checked when the object is built; a bad value is
    a :class:`~evalkit.errors.ParamsError` that names the field and what is allowed.

    Parameters
    ----------
    uptake : float
        Share of referred members who attend at least one group (0 to 1). Savings accrue
        to attendees only; referral costs to everyone referred.
    coordination, facilitation, materials : float, default 0
        Cost per *referred* member: staff time to refer and orient, group facilitation
        (if the plan pays for any) and printed or digital materials. Their sum is
        :attr:`cost_per_referred`.
    fixed_startup : float, default 0
        One-off start-up cost (training, set-up), paid at the start (time 0, never
        discounted) and shared by all referred members.
    horizon_years : int, default 1
        Whole years over which savings and recurring costs are counted (>= 1).
    discount_rate : float, default 0.03
        Annual discount rate (0 <= r < 1); 3% is the US Second Panel's reference case.
        Use 0 for undiscounted figures.
    perspective : {"plan", "society"}, default "plan"
        "society" adds members' own time costs (``member_time_cost``) to the programme
        cost; "plan" ignores them.
    member_time_cost : float, optional
        Members' time (and travel) per participant per year, valued in dollars; used only
        with ``perspective="society"``.
    recurring : bool, default True
        True: the per-referred cost is paid every year of the horizon (discounted like
        the savings). False: it is paid once, at the start, like ``fixed_startup``.
    discount_timing : {"end", "start"}, default "end"
        When each year's flows are counted. "end" (end-of-year convention): year t is
        discounted by ``(1 + r) ** -t``, so even a one-year horizon is discounted once.
        "start": year t by ``(1 + r) ** -(t - 1)``, i.e. the first year is not discounted
        (the convention of guidelines that "discount from year two").

    Examples
    --------
    >>> costs = ProgramCosts(coordination=120, materials=30, uptake=0.4,
    ...                      fixed_startup=25_000, horizon_years=2)
    >>> costs.cost_per_referred
    150.0
    """

    uptake: float
    coordination: float = 0.0
    facilitation: float = 0.0
    materials: float = 0.0
    fixed_startup: float = 0.0
    horizon_years: int = 1
    discount_rate: float = 0.03
    perspective: str = "plan"
    member_time_cost: float | None = None
    recurring: bool = True
    discount_timing: str = "end"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        for name in ("coordination", "facilitation", "materials", "fixed_startup"):
            set_(name, _real(f"ProgramCosts.{name}", getattr(self, name), low=0.0,
                             hint="Costs are amounts paid, in dollars, so never negative."))
        set_("uptake", _real("ProgramCosts.uptake", self.uptake, low=0.0, high=1.0,
                             hint="Uptake is the share of referred members who attend."))
        h = self.horizon_years
        if isinstance(h, (bool, np.bool_)) or not isinstance(h, (int, np.integer, float,
                                                                  np.floating)) \
                or not float(h).is_integer() or h < 1:
            raise ParamsError(
                f"ProgramCosts.horizon_years must be a whole number of years >= 1, got {h!r}. "
                "For a shorter horizon, scale the annual savings and costs instead.")
        set_("horizon_years", int(h))
        set_("discount_rate", _real("ProgramCosts.discount_rate", self.discount_rate, low=0.0,
                                    high=1.0, high_open=True,
                                    hint="Give it as a fraction: 0.03 for 3% a year."))
        if self.perspective not in PERSPECTIVES:
            raise ParamsError(f"ProgramCosts.perspective must be one of {PERSPECTIVES}, "
                              f"got {self.perspective!r}.")
        if self.member_time_cost is not None:
            set_("member_time_cost", _real("ProgramCosts.member_time_cost",
                                           self.member_time_cost, low=0.0))
        if not isinstance(self.recurring, (bool, np.bool_)):
            raise ParamsError(f"ProgramCosts.recurring must be True or False, got {self.recurring!r}.")
        if self.discount_timing not in DISCOUNT_TIMINGS:
            raise ParamsError(f"ProgramCosts.discount_timing must be one of {DISCOUNT_TIMINGS}, "
                              f"got {self.discount_timing!r}.")

    @property
    def cost_per_referred(self) -> float:
        """Coordination + facilitation + materials, per referred member (per year if recurring)."""
        return self.coordination + self.facilitation + self.materials

    @property
    def time_cost(self) -> float:
        """Members' time cost per participant per year counted under this perspective."""
        if self.perspective == "society" and self.member_time_cost is not None:
            return self.member_time_cost
        return 0.0

    @property
    def discount_factors(self) -> np.ndarray:
        """Discount factor of each year 1..horizon under ``discount_timing``."""
        t = np.arange(1, self.horizon_years + 1, dtype=float)
        if self.discount_timing == "start":
            t = t - 1.0
        return (1.0 + self.discount_rate) ** -t

    def to_dict(self) -> dict:
        """The inputs as a plain dict (for recording a run's assumptions)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# --------------------------------------------------------------------------------------
# cost-benefit
# --------------------------------------------------------------------------------------
def _payback_months(upfront: float, flows: np.ndarray) -> float:
    """Months until the cumulative discounted net benefit first reaches zero.

    ``upfront`` is paid at time 0; ``flows[t-1]`` is year t's discounted net flow, taken
    to accrue evenly through that year (linear interpolation within the year). Returns 0
    when nothing is paid up front and the yearly flow is not negative, and ``inf`` when
    the programme does not pay back within the horizon.
    """
    cum = -upfront
    if cum >= 0 and flows[0] >= 0:
        return 0.0
    for year, f in enumerate(flows, start=1):
        if f <= 0:  # yearly net flows share one sign: never pays back
            return math.inf
        if cum + f >= 0:
            return 12.0 * (year - 1) + 12.0 * (-cum) / f
        cum += f
    return math.inf


def _figures(savings: float, effect: float | None, pc: ProgramCosts, members: int) -> dict:
    """Every figure per referred member at one value of the saving (and of the effect)."""
    df = pc.discount_factors
    sum_df = float(df.sum())
    u, c, tcost = pc.uptake, pc.cost_per_referred, pc.time_cost
    fixed = pc.fixed_startup / members
    gross = u * savings * sum_df
    referral = c * sum_df if pc.recurring else c
    member_time = u * tcost * sum_df
    cost = fixed + referral + member_time
    net = gross - cost
    months = 12.0 * pc.horizon_years
    # break-even uptake u*: u* (S - T) sum_df = fixed + referral
    margin = (savings - tcost) * sum_df
    be_uptake = (fixed + referral) / margin if margin > 0 else math.nan
    # break-even per-referred cost C*: u (S - T) sum_df - fixed = C* w
    weight = sum_df if pc.recurring else 1.0
    be_cost = (u * margin - fixed) / weight
    upfront = fixed + (0.0 if pc.recurring else c)
    yearly = u * savings - u * tcost - (c if pc.recurring else 0.0)
    out = {
        "gross_savings_per_member": gross,
        "program_cost_per_member": cost,
        "net_savings_per_member": net,
        "gross_savings_pmpm": gross / months,
        "program_cost_pmpm": cost / months,
        "net_savings_pmpm": net / months,
        "total_gross_savings": gross * members,
        "total_program_cost": cost * members,
        "total_net_savings": net * members,
        "roi": net / cost if cost > 0 else math.nan,
        "benefit_cost_ratio": gross / cost if cost > 0 else math.nan,
        "payback_months": _payback_months(upfront, yearly * df),
        "break_even_uptake": be_uptake,
        "break_even_cost_per_referred": be_cost,
    }
    if effect is not None:
        averted = u * effect * sum_df
        out["er_visits_averted_per_member"] = averted
        out["cost_per_er_visit_averted"] = cost / averted if averted > 0 else math.nan
    return out


_UNITS = {
    "gross_savings_per_member": "$ per {who} over the horizon",
    "program_cost_per_member": "$ per {who} over the horizon",
    "net_savings_per_member": "$ per {who} over the horizon",
    "gross_savings_pmpm": "$ per {who} per month",
    "program_cost_pmpm": "$ per {who} per month",
    "net_savings_pmpm": "$ per {who} per month",
    "total_gross_savings": "$, all {whom}",
    "total_program_cost": "$, all {whom}",
    "total_net_savings": "$, all {whom}",
    "roi": "(savings - cost) / cost",
    "benefit_cost_ratio": "savings / cost",
    "payback_months": "months (inf: not within the horizon)",
    "break_even_uptake": "share of {whom} who attend",
    "break_even_cost_per_referred": "$ per {who}",
    "er_visits_averted_per_member": "ER visits per {who} over the horizon",
    "cost_per_er_visit_averted": "$ of programme cost per ER visit averted",
}
#: Whom the per-person figures are per unless told otherwise (one, all).
PER_REFERRED = ("referred member", "referred members")


def figure_units(who: tuple[str, str] = PER_REFERRED, recurring: bool = False) -> dict[str, str]:
    """The unit of each cost-benefit figure (by ``term``), per ``who`` (one, all):
    ('referred member', 'referred members') by default, or e.g. ('patient treated in
    12-step-oriented programs', 'patients treated in ...'). With a recurring cost the
    break-even cost is per year."""
    who, whom = who
    out = {k: v.format(who=who, whom=whom) for k, v in _UNITS.items()}
    if recurring:
        out["break_even_cost_per_referred"] += " per year"
    return out


@dataclass(frozen=True, eq=False)
class CostBenefitResult(RecordsEffect):
    """The cost-benefit figures of a referral programme, as a value.

    Attributes
    ----------
    table : DataFrame
        One row per figure, keyed by ``term`` (the figure's name, e.g. ``roi``):
        ``term, unit, estimate, at_ci_low, at_ci_high``; ``res.at("roi", "at_ci_low")``
        reads one value.
        ``estimate`` is the figure at the point estimate of the saving; ``at_ci_low`` /
        ``at_ci_high`` the figure with the saving at the lower / upper limit of its CI
        (for ER rows: with the effect at its limits). These are *not* re-ordered: ROI is
        lowest at the lower saving, break-even uptake highest there. NaN when no CI was
        given or the figure is undefined (e.g. ROI with zero cost).
    by_year : DataFrame
        Year 0 (start-up) .. horizon, per referred member, at the estimate:
        ``year, discount_factor, savings, program_cost, net, cumulative_net`` (discounted).
    program_costs : ProgramCosts
    members : int
        Referred members (start-up cost is shared by them; totals multiply by them).
    savings_per_participant, savings_ci, effect_per_participant, effect_ci
        The inputs.
    """

    table: pd.DataFrame
    by_year: pd.DataFrame
    program_costs: ProgramCosts
    members: int
    savings_per_participant: float
    savings_ci: tuple[float, float] | None = None
    effect_per_participant: float | None = None
    effect_ci: tuple[float, float] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    who: tuple[str, str] = PER_REFERRED

    def _get(self, figure: str) -> float:
        row = self.table.loc[self.table["term"] == figure, "estimate"]
        return float(row.iloc[0]) if len(row) else math.nan

    @property
    def net_savings_per_member(self) -> float:
        return self._get("net_savings_per_member")

    @property
    def net_savings_pmpm(self) -> float:
        return self._get("net_savings_pmpm")

    @property
    def roi(self) -> float:
        return self._get("roi")

    @property
    def benefit_cost_ratio(self) -> float:
        return self._get("benefit_cost_ratio")

    @property
    def payback_months(self) -> float:
        return self._get("payback_months")

    @property
    def break_even_uptake(self) -> float:
        return self._get("break_even_uptake")

    @property
    def break_even_cost_per_referred(self) -> float:
        return self._get("break_even_cost_per_referred")

    @property
    def cost_per_er_visit_averted(self) -> float:
        return self._get("cost_per_er_visit_averted")

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def estimates(self, outcome: str = "total_cost",
                  contrast: str = "self_help referral vs none") -> pd.DataFrame:
        """Records for ``results.json`` (see :class:`evalkit.results.Recorder`).

        Scales: ``net_savings_per_member``, ``pmpm_difference`` (net saving per referred
        member-month; positive = the plan saves), ``roi``, ``benefit_cost_ratio``. The
        interval is the figure at the two limits of the saving's CI, in increasing order
        (not a CI of the figure itself: programme costs are taken as known).
        """
        rows = []
        for figure, scale in (("net_savings_per_member", "net_savings_per_member"),
                              ("net_savings_pmpm", "pmpm_difference"),
                              ("roi", "roi"), ("benefit_cost_ratio", "benefit_cost_ratio")):
            r = self.table.loc[self.table["term"] == figure].iloc[0]
            a, b = float(r["at_ci_low"]), float(r["at_ci_high"])
            lo, hi = (min(a, b), max(a, b)) if math.isfinite(a) and math.isfinite(b) \
                else (math.nan, math.nan)
            rows.append({"outcome": outcome, "contrast": contrast,
                         "estimand": f"{figure} ({r['unit']})",
                         "method": "cost-benefit, " + _describe(self.program_costs),
                         "scale": scale, "estimate": float(r["estimate"]),
                         "ci_low": lo, "ci_high": hi})
        return pd.DataFrame(rows)


def _describe(pc: ProgramCosts) -> str:
    return (f"{pc.perspective} perspective, {pc.horizon_years}-year horizon, "
            f"{pc.discount_rate:.1%} discount ({pc.discount_timing}-of-year)")


def cost_benefit(savings_per_member: float, program_costs: ProgramCosts, *, members: int,
                 effect_per_member: float | None = None,
                 savings_ci: tuple[float, float] | None = None,
                 effect_ci: tuple[float, float] | None = None,
                 who: tuple[str, str] = PER_REFERRED) -> CostBenefitResult:
    """Savings, costs, ROI, payback and break-even of a referral programme.

    Parameters
    ----------
    savings_per_member : float
        Gross saving in professional care per *participating* member per year, in
        dollars (comparator cost minus participant cost; negative if participants cost
        more). E.g. Humphreys & Moos (2001): $4,729 - $2,883 = $1,846 a year.
    program_costs : ProgramCosts
        Costs, uptake, horizon, discounting and perspective.
    members : int
        Number of referred members; the start-up cost is shared among them and totals
        are per-member figures times ``members``.
    effect_per_member : float, optional
        ER visits averted per participating member per year (positive = fewer visits),
        e.g. 18% of a baseline 0.35 visits a year = 0.063. Enables the cost per ER
        visit averted.
    savings_ci, effect_ci : (low, high), optional
        Confidence limits of the saving (and of the effect); every figure is also
        reported with the input at each limit.
    who : (str, str)
        Whom the per-person figures are per, one and all, in the table's units:
        ('referred member', 'referred members') by default, or the study's own words
        ('patient treated in ...', 'patients treated in ...').

    Returns
    -------
    CostBenefitResult

    Notes
    -----
    Per referred member, with uptake u, saving S and member time cost T per participant
    per year, cost C per referred member, start-up F shared by N members, horizon H and
    discount factors d_t (end-of-year convention: ``d_t = (1 + r) ** -t``, t = 1..H;
    with ``discount_timing="start"``, ``(1 + r) ** -(t - 1)``):

    * gross savings  G = u S sum(d_t)
    * programme cost K = F/N + C sum(d_t) [or + C once, at time 0, if not recurring]
      + u T sum(d_t) [society perspective only]
    * net savings G - K; ROI = (G - K)/K; benefit-cost ratio G/K
    * PMPM = figure / (12 H), per referred member-month
    * break-even uptake: the u at which G = K, i.e. (F/N + C sum(d_t)) / ((S - T) sum(d_t));
      above 1 means the programme cannot break even at any uptake; NaN when the saving
      does not exceed the members' time cost (no uptake breaks even)
    * break-even cost: the C at which G = K (per year if recurring, else one-off); a
      negative value means start-up cost alone exceeds the savings
    * payback: months until the cumulative discounted net benefit (start-up at time 0,
      each year's discounted net flow spread evenly over that year) reaches zero;
      0 without start-up cost and with non-negative yearly net; ``inf`` if not within H
    * ER visits averted V = u E sum(d_t) (effects are discounted at the same rate as
      costs); cost per visit averted K / V (gross programme cost; the net version is
      ``icer(-net_savings, V)``).

    Examples
    --------
    >>> pc = ProgramCosts(coordination=200, uptake=0.5, fixed_startup=100_000,
    ...                   discount_rate=0.0)
    >>> res = cost_benefit(1000, pc, members=1000)
    >>> round(res.roi, 3), round(res.payback_months, 2)
    (0.667, 4.0)
    """
    if not isinstance(program_costs, ProgramCosts):
        raise ParamsError("program_costs must be a ProgramCosts (e.g. ProgramCosts(uptake=0.4, "
                          f"coordination=150)), got {type(program_costs).__name__}.")
    if isinstance(members, (bool, np.bool_)) or not isinstance(
            members, (int, np.integer, float, np.floating)) \
            or not float(members).is_integer() or members < 1:
        raise ParamsError(f"members must be a whole number of referred members >= 1, got {members!r}.")
    members = int(members)
    s = _real("savings_per_member", savings_per_member)
    s_ci = _interval("savings_ci", savings_ci)
    e = None if effect_per_member is None else _real("effect_per_member", effect_per_member)
    e_ci = _interval("effect_ci", effect_ci)
    if e_ci is not None and e is None:
        raise ParamsError("effect_ci was given without effect_per_member.")
    notes = []
    if program_costs.perspective == "society" and program_costs.member_time_cost is None:
        msg = ("perspective='society' but member_time_cost was not given: the figures equal "
               "the plan perspective. Give members' time per participant per year in dollars.")
        warnings.warn(msg, StatisticalWarning, stacklevel=2)
        notes.append(msg)

    at_est = _figures(s, e, program_costs, members)
    nan_row = dict.fromkeys(at_est, math.nan)
    lo = _figures(s_ci[0], e, program_costs, members) if s_ci else dict(nan_row)
    hi = _figures(s_ci[1], e, program_costs, members) if s_ci else dict(nan_row)
    er_keys = ("er_visits_averted_per_member", "cost_per_er_visit_averted")
    if e is not None:
        # The ER rows vary the effect, not the saving.
        e_lo = _figures(s, e_ci[0], program_costs, members) if e_ci else nan_row
        e_hi = _figures(s, e_ci[1], program_costs, members) if e_ci else nan_row
        for k in er_keys:
            lo[k], hi[k] = e_lo[k], e_hi[k]
    units = figure_units(who, program_costs.recurring)
    table = pd.DataFrame({
        "term": list(at_est), "unit": [units[k] for k in at_est],
        "estimate": [at_est[k] for k in at_est], "at_ci_low": [lo[k] for k in at_est],
        "at_ci_high": [hi[k] for k in at_est]})

    pc = program_costs
    d = pc.discount_factors
    fixed = pc.fixed_startup / members
    yearly_cost = (pc.cost_per_referred if pc.recurring else 0.0) + pc.uptake * pc.time_cost
    sav = np.concatenate([[0.0], pc.uptake * s * d])
    cost = np.concatenate([[fixed + (0.0 if pc.recurring else pc.cost_per_referred)],
                           yearly_cost * d])
    by_year = pd.DataFrame({"year": np.arange(pc.horizon_years + 1),
                            "discount_factor": np.concatenate([[1.0], d]),
                            "savings": sav, "program_cost": cost, "net": sav - cost})
    by_year["cumulative_net"] = by_year["net"].cumsum()
    return CostBenefitResult(table=table, by_year=by_year, program_costs=pc, members=members,
                             savings_per_participant=s, savings_ci=s_ci,
                             effect_per_participant=e, effect_ci=e_ci, notes=tuple(notes),
                             who=who)


# --------------------------------------------------------------------------------------
# ICER and net monetary benefit
# --------------------------------------------------------------------------------------
_QUADRANT_TEXT = {
    "NE": "more effective, more costly: a trade-off; cost-effective if ICER <= willingness to pay",
    "SE": "more effective, less costly: the programme dominates",
    "NW": "less effective, more costly: the programme is dominated",
    "SW": "less effective, less costly: the ICER is money saved per unit of effect given up; "
          "cost-effective if ICER >= willingness to pay",
}


def _classify(dc: float, de: float) -> tuple[str, str, float, str]:
    """(quadrant, status, icer, interpretation) of one (delta_cost, delta_effect) pair."""
    ratio = dc / de if de != 0 else math.nan
    if de > 0 and dc > 0:
        return "NE", "icer", ratio, _QUADRANT_TEXT["NE"]
    if de < 0 and dc < 0:
        return "SW", "icer", ratio, _QUADRANT_TEXT["SW"]
    if de > 0 and dc < 0:
        return "SE", "dominant", math.nan, _QUADRANT_TEXT["SE"]
    if de < 0 and dc > 0:
        return "NW", "dominated", math.nan, _QUADRANT_TEXT["NW"]
    if dc == 0 and de == 0:
        return "origin", "equivalent", math.nan, "same cost and same effect"
    # on an axis: one difference is exactly zero
    if (de == 0 and dc < 0) or (dc == 0 and de > 0):
        return "axis", "dominant", math.nan, ("no worse and cheaper, or better at the same "
                                              "cost: the programme (weakly) dominates")
    return "axis", "dominated", math.nan, ("no better and dearer, or worse at the same cost: "
                                           "the programme is (weakly) dominated")


@dataclass(frozen=True, eq=False)
class ICERResult(RecordsEffect):
    """Incremental cost-effectiveness ratio(s) with the quadrant of the CE plane.

    Attributes
    ----------
    table : DataFrame
        One row per (delta_cost, delta_effect) pair, keyed by ``term`` (always ``icer``;
        several pairs are told apart by ``delta_cost`` / ``delta_effect``):
        ``term, delta_cost, delta_effect, ratio, estimate, quadrant, status,
        interpretation``. ``ratio`` is delta_cost / delta_effect whatever the quadrant;
        ``estimate`` is the ICER: the same ratio where it is meaningful (NE and SW
        quadrants) and NaN under dominance.
        ``quadrant``: NE, SE, SW, NW (x = effect gain, y = extra cost), or ``axis`` /
        ``origin``; ``status``: ``icer``, ``dominant``, ``dominated`` or ``equivalent``.
    """

    table: pd.DataFrame

    def _one(self, col):
        if len(self.table) != 1:
            raise AttributeError(f"{col}: several pairs were given; read .table instead.")
        return self.table[col].iloc[0]

    @property
    def icer(self) -> float:
        return float(self._one("estimate"))

    @property
    def quadrant(self) -> str:
        return str(self._one("quadrant"))

    @property
    def status(self) -> str:
        return str(self._one("status"))

    @property
    def interpretation(self) -> str:
        return str(self._one("interpretation"))

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def estimates(self, outcome: str = "er_visits",
                  contrast: str = "self_help referral vs none") -> pd.DataFrame:
        """Records (scale ``icer``) for the pairs with a meaningful ICER (NE, SW)."""
        t = self.table[self.table["status"] == "icer"]
        return pd.DataFrame({"outcome": outcome, "contrast": contrast,
                             "estimand": "incremental cost per unit of effect gained (" +
                             t["interpretation"] + ")",
                             "method": "ICER", "scale": "icer", "estimate": t["estimate"]})


def icer(delta_cost, delta_effect) -> ICERResult:
    """Incremental cost-effectiveness ratio, with dominance handled.

    ICER = delta_cost / delta_effect, where ``delta_cost`` is programme minus comparator
    cost and ``delta_effect`` the health gain (positive = better; e.g. ER visits
    averted). The ratio is only a decision quantity in two quadrants of the
    cost-effectiveness plane (Black 1990), so each pair is classified:

    ========  ===================================  ===========================
    quadrant  meaning                              result
    ========  ===================================  ===========================
    NE        more effective, more costly          ICER; adopt if ICER <= WTP
    SE        more effective, less costly          dominant (no ICER)
    NW        less effective, more costly          dominated (no ICER)
    SW        less effective, less costly          ICER; adopt if ICER >= WTP
    ========  ===================================  ===========================

    A zero difference puts the pair on an axis: cheaper at equal effect (or better at
    equal cost) is weakly dominant, the reverse weakly dominated; both zero is
    ``equivalent``. A negative ratio is never reported as an ICER.

    Parameters
    ----------
    delta_cost, delta_effect : float or array-like of equal length

    Returns
    -------
    ICERResult
        ``.icer``, ``.quadrant``, ``.status`` for a single pair; ``.table`` always.

    Examples
    --------
    >>> icer(500.0, 0.25).icer
    2000.0
    >>> icer(-300.0, 0.1).status
    'dominant'
    """
    dc = np.atleast_1d(np.asarray(delta_cost, dtype=float))
    de = np.atleast_1d(np.asarray(delta_effect, dtype=float))
    if dc.shape != de.shape or dc.ndim != 1:
        raise ParamsError(f"delta_cost and delta_effect must have the same length, got "
                          f"{dc.size} and {de.size}.")
    if not (np.isfinite(dc).all() and np.isfinite(de).all()):
        raise ParamsError("delta_cost and delta_effect must be finite numbers (no NaN or inf).")
    rows = [_classify(float(c), float(e)) for c, e in zip(dc, de)]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(de != 0, dc / np.where(de != 0, de, 1.0), np.nan)
    table = pd.DataFrame({"term": "icer", "delta_cost": dc, "delta_effect": de, "ratio": ratio,
                          "estimate": [r[2] for r in rows], "quadrant": [r[0] for r in rows],
                          "status": [r[1] for r in rows],
                          "interpretation": [r[3] for r in rows]})
    return ICERResult(table=table)


@dataclass(frozen=True, eq=False)
class NMBResult(RecordsEffect):
    """Incremental net monetary benefit over willingness-to-pay values.

    Attributes
    ----------
    table : DataFrame
        One row per willingness to pay, keyed by ``term`` (always ``nmb``) with ``wtp``
        as the qualifier: ``term, wtp, estimate, cost_effective`` (``estimate`` is the
        NMB, ``cost_effective`` is NMB > 0); ``res.at("nmb", wtp=2000)`` reads one.
    delta_cost, delta_effect : float
    threshold_wtp : float
        The WTP at which NMB = 0 (the ICER), NaN when there is none (dominance, or a
        zero effect) -- then the sign of NMB does not change with WTP.
    """

    table: pd.DataFrame
    delta_cost: float
    delta_effect: float
    threshold_wtp: float

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def estimates(self, outcome: str = "er_visits",
                  contrast: str = "self_help referral vs none") -> pd.DataFrame:
        """Records (scale ``nmb``), one per WTP value (column ``wtp`` kept as an extra)."""
        return pd.DataFrame({"outcome": outcome, "contrast": contrast,
                             "estimand": "incremental net monetary benefit at WTP",
                             "method": "NMB = WTP x delta_effect - delta_cost", "scale": "nmb",
                             "estimate": self.table["estimate"], "wtp": self.table["wtp"]})


def nmb(delta_cost: float, delta_effect: float, wtp) -> NMBResult:
    """Incremental net monetary benefit: ``NMB(λ) = λ · delta_effect - delta_cost``.

    The programme is cost-effective at willingness to pay λ (dollars per unit of effect,
    e.g. per ER visit averted) when NMB(λ) > 0 -- the same decision as comparing the
    ICER with λ, but linear, defined in every quadrant and averageable over
    uncertainty (Stinnett & Mullahy 1998). With no health effect (delta_effect = 0)
    NMB is simply the net saving, ``-delta_cost``.

    Parameters
    ----------
    delta_cost : float
        Programme minus comparator cost per member.
    delta_effect : float
        Health gain per member (positive = better).
    wtp : float or array-like
        Willingness-to-pay values, each >= 0.

    Returns
    -------
    NMBResult

    Examples
    --------
    >>> nmb(500.0, 0.25, [0, 2000, 4000]).table["estimate"].tolist()
    [-500.0, 0.0, 500.0]
    """
    dc = _real("delta_cost", delta_cost)
    de = _real("delta_effect", delta_effect)
    lam = np.atleast_1d(np.asarray(wtp, dtype=float))
    if lam.ndim != 1 or lam.size == 0 or not np.isfinite(lam).all() or (lam < 0).any():
        raise ParamsError("wtp must be one or more finite willingness-to-pay values >= 0, "
                          f"got {wtp!r}.")
    values = lam * de - dc
    threshold = dc / de if de != 0 and dc / de >= 0 else math.nan
    table = pd.DataFrame({"term": "nmb", "wtp": lam, "estimate": values,
                          "cost_effective": values > 0})
    return NMBResult(table=table, delta_cost=dc, delta_effect=de, threshold_wtp=threshold)
