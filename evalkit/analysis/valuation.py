"""What the measured cost effect is worth to the plan: savings, program cost, ROI, and
the chance the program saves money, from the costs workbook's estimate and the program
cost inputs in the params (``econ``).

With an effect on ER use too (ER visits averted per referred member per year, from the
adjusted count model), the same inputs give the cost-effectiveness figures: the ICER
(cost per ER visit averted, or dominance), net monetary benefit over willingness-to-pay
values, the CE plane, the acceptability curve and the value of perfect information; a
one-way sensitivity analysis (tornado) and a budget impact analysis for a named plan
(``econ.budget``).
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..econ import (Beta, Empirical, Fixed, Gamma, Normal, ProgramCosts, budget_impact,
                   cost_benefit, icer, nmb, one_way, psa)
from ..errors import ConvergenceError, DataValidationError, StatisticalWarning
from ..models.bootstrap import bootstrap, replicate_fields, replicates_sentence
from ..models.count_bootstrap import BATCHED_COUNT_FAMILIES, bootstrap_count_effect
from ..models.twopart_bootstrap import bootstrap_two_part
from ..models.count import count_model
from .spec import CLAIMS_EFFECT_OUTCOME, CLAIMS_OUTCOMES, CLAIMS_PER, model_frame


@dataclass(frozen=True)
class EffectWords:
    """How the economics name their effect: the effect outcome's label, unit and good
    direction, from the spec (:class:`evalkit.analysis.spec.OutcomeSpec`), and whom the
    figures are per (``who``: one and all, :meth:`evalkit.analysis.spec.StudySpec.per_treated`).
    The effect is the change in that outcome per treated unit ('per referred member'),
    counted positive when it goes the good way: fewer visits when lower is good ("visits
    avoided"), more when higher is.
    """

    label: str
    unit: str
    good: str = "lower"
    who: tuple[str, str] = CLAIMS_PER

    @classmethod
    def of(cls, outcome, who: tuple[str, str] = CLAIMS_PER) -> EffectWords:
        """From a spec outcome (anything with ``label``, ``unit`` and ``good``) and whom
        the figures are per."""
        return cls(outcome.label, outcome.unit, outcome.good, tuple(who))

    @property
    def per_member(self) -> str:
        """'per referred member', or 'per patient treated in ...' (the spec's words)."""
        return f"per {self.who[0]}"

    @property
    def one(self) -> str:
        """One unit of the outcome: 'visit', or 'unit of <label>' when it has none."""
        u = self.unit.strip()
        if not u:
            return f"unit of {self.label}"
        return u[:-1] if u.endswith("s") and not u.endswith("ss") else u

    @property
    def gained(self) -> str:
        """The good way, as a participle: 'avoided' (lower is good) or 'gained'."""
        return "avoided" if self.good == "lower" else "gained"

    @property
    def per(self) -> str:
        """'per visit avoided'."""
        return f"per {self.one} {self.gained}"

    @property
    def measure(self) -> str:
        """The effect's name: 'ER visits avoided'."""
        return f"{self.label} {self.gained}"

    def moved(self, better: bool) -> str:
        """'fell' or 'rose' for the outcome, when it moved the good way or not."""
        return "fell" if better == (self.good == "lower") else "rose"

    def quadrant(self, quadrant: str, status: str = "") -> str:
        """Where a (cost, effect) pair lies on the cost-effectiveness plane, in words."""
        up, down = self.moved(True), self.moved(False)
        return {
            "NE": f"the program costs more and {self.label} {up}: the ratio is the cost "
                  f"{self.per}",
            "SE": f"the program saves money and {self.label} {up}: it dominates, and no cost "
                  f"{self.per} has to be justified",
            "NW": f"the program costs more and {self.label} {down}: no cost {self.per} "
                  "applies",
            "SW": f"the program saves money and {self.label} {down}: the ratio is money saved "
                  f"per {self.one} given up",
        }.get(quadrant, "no cost or no effect difference: "
                        + ("the program (weakly) dominates" if status == "dominant" else
                           "the program is (weakly) dominated" if status == "dominated" else
                           "the program and no program are equivalent"))


#: The claims default: ER visits, fewer is better.
ER_WORDS = EffectWords.of(CLAIMS_OUTCOMES[CLAIMS_EFFECT_OUTCOME])


@dataclass(frozen=True)
class Valuation:
    """Savings and program economics per referred member.

    Attributes
    ----------
    savings : dict
        Gross saving in professional care per referred member per year (estimate, ci_low,
        ci_high, std_error), from the adjusted cost difference (sign flipped, annualised).
    cost_benefit : CostBenefitResult
        Net savings, ROI, benefit-cost ratio, payback, break-even (at the estimate and at
        the savings' CI limits).
    psa : PSAResult
        Monte Carlo over the saving (normal, from its standard error, or drawn jointly with
        the ER effect from bootstrap replicates), uptake (beta) and program cost (gamma):
        net savings draws, the probability of saving money, and with an ER effect the CE
        plane, CEAC and EVPI (``psa.ce_plane``, ``psa.ceac``).
    headline : DataFrame
        The figures a finance committee asks for, with 95% intervals; ``quantity`` names
        each figure and ``unit`` says whether it is dollars or a share.
    inputs : DataFrame
        The PSA's input distributions.
    effect : dict or None
        ER visits averted per referred member per year (:func:`er_effect`).
    effectiveness : DataFrame or None
        ER visits averted per referred member, per year and over the horizon, with 95%
        intervals (kept apart from ``headline``, whose figures are all dollars or shares).
    icer, nmb : ICERResult, NMBResult or None
        At the point estimates: incremental cost -NS and effect V per referred member over
        the horizon (see :func:`value_program`).
    one_way : OneWayResult
        One-way sensitivity of net savings per referred member (:func:`sensitivity`).
    budget : BudgetImpactResult or None
        Budget impact for the plan in ``econ.budget`` (:func:`budget_for_plan`).
    joint : bool
        Whether the PSA drew saving and effect jointly.
    replicates : JointReplicates or None
        The joint bootstrap the PSA drew from (``n_boot``, ``n_failed``), when it did.
    wtp_values : tuple
        Willingness-to-pay values at which NMB is recorded.
    words : EffectWords
        How the effect is named (the spec's effect outcome).
    """

    savings: dict
    cost_benefit: object
    psa: object
    headline: pd.DataFrame
    inputs: pd.DataFrame
    effect: dict | None = None
    effectiveness: pd.DataFrame | None = None
    icer: object = None
    nmb: object = None
    one_way: object = None
    budget: object = None
    joint: bool = False
    wtp_values: tuple = ()
    replicates: object = None
    words: EffectWords = ER_WORDS

    def replicates_sentence(self) -> str:
        """Whether saving and effect were drawn jointly, and from how many bootstrap
        replicates (a warning when more than 5% could not be fitted)."""
        if not self.joint:
            return "saving and effect drawn independently (their correlation is ignored)"
        return ("saving and effect drawn jointly from the bootstrap; " +
                replicates_sentence(self.replicates.n_boot, self.replicates.n_failed,
                                    "joint bootstrap"))

    def _resampling(self, rec: pd.DataFrame, rows=None) -> pd.DataFrame:
        """``rec`` with the joint bootstrap's n_replicates / n_failed (and flag) on
        ``rows`` (default all), when the PSA drew from it."""
        if not self.joint or self.replicates is None:
            return rec
        rec = rec.copy()
        rows = slice(None) if rows is None else rows
        for key, value in replicate_fields(self.replicates.n_boot, self.replicates.n_failed,
                                           "joint bootstrap").items():
            rec.loc[rows, key] = value
        return rec

    def estimates(self) -> pd.DataFrame:
        """Records for results.json: the cost-benefit figures (net savings with the PSA's
        95% interval, which carries the uncertainty of both saving and program cost) and
        the probability that the program saves money."""
        outcome = self.savings.get("outcome", "cost")
        rec = self.cost_benefit.estimates(outcome=outcome)
        net = self.headline.set_index("quantity").loc["net_savings"]
        i = rec.index[rec["scale"] == "net_savings_per_member"]
        rec.loc[i, ["ci_low", "ci_high"]] = [net["ci_low"], net["ci_high"]]
        rec.loc[i, "method"] = rec.loc[i, "method"] + "; interval from the probabilistic sensitivity analysis"
        p = self.psa.probability_cost_saving
        prob = {"outcome": outcome, "contrast": rec["contrast"].iloc[0],
                "estimand": "probability that net savings > 0",
                "method": f"probabilistic sensitivity analysis, {len(self.psa.draws)} draws",
                "scale": "probability_cost_saving", "estimate": p}
        parts = [self._resampling(rec, rec["scale"] == "net_savings_per_member"),
                 self._resampling(pd.DataFrame([prob]))]
        if self.icer is not None:
            parts.append(self._resampling(self._ce_records(rec["contrast"].iloc[0])))
        if self.budget is not None:
            parts.append(self.budget.estimates(
                contrast=f"{self.budget.inputs['plan_name']}: with vs without the programme"))
        return pd.concat(parts, ignore_index=True)

    def _ce_records(self, contrast: str) -> pd.DataFrame:
        """ICER (with dominance stated in the estimand) and expected NMB at each WTP."""
        t = self.icer.table.iloc[0]
        draws = f"{self.psa.n} draws" + (" (saving and effect drawn jointly)" if self.joint
                                         else " (saving and effect drawn independently)")
        words = self.words
        where = words.quadrant(t["quadrant"], t["status"])
        if t["status"] == "icer":
            lo, hi = self.icer_interval()
            what = f"$ {words.per} ({where})"
        else:
            lo = hi = np.nan
            what = f"no ICER: {where}"
        effect_outcome = self.effect.get("outcome", "effect")
        rows = [{"outcome": effect_outcome, "contrast": contrast, "estimand": what,
                 "method": f"ICER = incremental cost / {words.measure} {words.per_member}",
                 "scale": "icer", "estimate": t["estimate"], "ci_low": lo, "ci_high": hi,
                 "quadrant": t["quadrant"], "status": t["status"]}]
        for w in self.wtp_values:
            r = self.nmb_at(w)
            rows.append({"outcome": effect_outcome, "contrast": contrast,
                         "estimand": f"net monetary benefit {words.per_member} at ${w:,.0f} "
                                     f"{words.per}",
                         "method": f"NMB = WTP x {words.measure} + net savings; probabilistic "
                                   f"sensitivity analysis, {draws}",
                         "scale": "nmb", "estimate": r["nmb_at_estimate"],
                         "ci_low": r["nmb_ci_low"], "ci_high": r["nmb_ci_high"], "wtp": w,
                         "probability_cost_effective": r["probability_cost_effective"]})
        return pd.DataFrame(rows)

    def nmb_at(self, wtp: float) -> dict:
        """NMB per referred member at one willingness to pay: at the estimates, and over the
        PSA draws (2.5th and 97.5th percentiles, probability NMB > 0)."""
        t = self.icer.table.iloc[0]
        d = self.psa.draws
        inb = wtp * d["delta_effect"].to_numpy() - d["delta_cost"].to_numpy()
        return {"wtp": wtp, "nmb_at_estimate": wtp * t["delta_effect"] - t["delta_cost"],
                "expected_nmb": float(inb.mean()), "nmb_ci_low": float(np.quantile(inb, 0.025)),
                "nmb_ci_high": float(np.quantile(inb, 0.975)),
                "probability_cost_effective": float((inb > 0).mean())}

    def icer_interval(self) -> tuple[float, float]:
        """95% percentile interval of the ratio over PSA draws in the ICER's own quadrant
        (NaN when fewer than 95% of the draws lie there: the ratio is then not summarised
        by an interval, read the CE plane instead)."""
        q = self.icer.quadrant
        plane = self.psa.ce_plane
        inq = plane[plane["quadrant"] == q]
        if len(inq) < 0.95 * len(plane):
            return math.nan, math.nan
        ratio = inq["delta_cost"] / inq["delta_effect"]
        return float(np.quantile(ratio, 0.025)), float(np.quantile(ratio, 0.975))

    def nmb_curve(self) -> pd.DataFrame:
        """NMB per referred member over the WTP grid: at the estimates (``nmb``) and from the
        PSA (``expected_nmb``, ``nmb_ci_low``, ``nmb_ci_high``)."""
        c = self.psa.ceac[["wtp", "expected_nmb", "nmb_ci_low", "nmb_ci_high",
                           "probability_cost_effective"]]
        curve = self.nmb.table[["wtp", "estimate"]].rename(columns={"estimate": "nmb"})
        return curve.merge(c, on="wtp", how="left")

    def icer_sentence(self) -> str:
        """The ICER in words a finance committee follows."""
        w = self.words
        if self.icer is None:
            return f"No effect on {w.label} was estimated, so there is no cost {w.per}."
        t = self.icer.table.iloc[0]
        net, v = -t["delta_cost"], t["delta_effect"]
        per = f"{w.per_member} over {_years(self.cost_benefit.program_costs.horizon_years)}"
        amount = f"{abs(v):.3f} {w.unit or 'units'} {per}"
        up, down = w.moved(True), w.moved(False)
        share = self.psa.quadrants.set_index("quadrant")["share"]
        if t["quadrant"] == "SE":
            return (f"The program dominates: it saves money (net ${net:,.0f} {per}) and "
                    f"{w.label} {up} by {amount}. No price {w.per} has to be justified. "
                    f"Allowing for uncertainty, the program both saves money and {w.label} {up} "
                    f"in {share['SE']:.0%} of the simulations.")
        if t["quadrant"] == "NW":
            return (f"The program is dominated: it costs ${-net:,.0f} more {per} and "
                    f"{w.label} {down} by {amount}: no cost {w.per} applies.")
        if t["quadrant"] == "NE":
            return (f"The program costs ${-net:,.0f} more {per} and {w.label} {up} by {amount}: "
                    f"${t['estimate']:,.0f} {w.per}. It is worth it if the plan values one {w.one} "
                    f"{w.gained} at more than that.")
        if t["quadrant"] == "SW":
            return (f"The program saves ${net:,.0f} {per} but {w.label} {down} by {amount}: "
                    f"${t['estimate']:,.0f} saved per {w.one} given up.")
        q = w.quadrant(t["quadrant"], t["status"])
        return f"{q[:1].upper()}{q[1:]}."


#: Fewest usable joint bootstrap replicates for the PSA to draw saving and effect jointly.
MIN_JOINT_REPLICATES = 20


def _years(n) -> str:
    """``1 year``, ``3 years``, ``2.5 years``: a horizon in words."""
    return f"{n:g} year" + ("" if n == 1 else "s")


def er_effect(count_records: pd.DataFrame, outcome: str) -> dict:
    """ER visits averted per referred member per year, from a count model's effect records.

    The adjusted count model reports the rate difference (referred minus comparison) in
    visits per 1,000 member-months; visits averted per member-year are
    ``-difference * 12 / 1000`` (a difference of -25 per 1,000 member-months is 0.3 visits
    averted per member a year). Returns ``estimate, ci_low, ci_high, std_error`` and the
    method that produced them.

    >>> rec = pd.DataFrame([{"outcome": "er_visits", "scale": "rate_difference_per_1000_mm",
    ...                      "estimate": -25.0, "std_error": 5.0, "ci_low": -34.8,
    ...                      "ci_high": -15.2, "method": "negbin"}])
    >>> e = er_effect(rec, "er_visits")
    >>> round(float(e["estimate"]), 6), round(float(e["ci_low"]), 6)
    (0.3, 0.1824)
    """
    row = count_records[(count_records["outcome"] == outcome)
                        & (count_records["scale"] == "rate_difference_per_1000_mm")]
    if row.empty:
        raise DataValidationError(f"no rate_difference_per_1000_mm estimate for {outcome!r} to "
                                  "turn into visits averted; run the adjusted count models first")
    r = row.iloc[0]
    f = 12.0 / 1000.0
    return {"estimate": float(-r["estimate"] * f), "ci_low": float(-r["ci_high"] * f),
            "ci_high": float(-r["ci_low"] * f), "std_error": float(r["std_error"] * f),
            "method": str(r.get("method", "")), "outcome": outcome}


def _er_statistic(df: pd.DataFrame, er_formula: str, family: str) -> float:
    """ER visits averted per member-year on one (resampled) data set.

    When the NB dispersion search diverges on a resample (theta -> infinity: that resample
    shows no overdispersion), the NB estimate is its Poisson limit, so the Poisson fit is
    used for that replicate.
    """
    try:
        fit = count_model(df, er_formula, family=family, exposure="member_months")
    except ConvergenceError as err:
        if family != "negbin" or "theta" not in str(err):
            raise
        fit = count_model(df, er_formula, family="poisson", exposure="member_months")
    return -fit.effect("treated").at("rate_difference_per_1000_mm") * 0.012


@dataclass(frozen=True)
class JointReplicates:
    """Saving and ER effect per member-year on the same bootstrap resamples.

    Attributes
    ----------
    replicates : DataFrame
        ``saving``, ``er_visits_averted``: one row per replicate (NaN where a model could
        not be fitted on that resample).
    n_boot, seed : int
    n_failed : int
        Replicates with either value missing (left out of the PSA).
    correlation : float
        Pearson correlation of the two over the complete replicates.
    method : str
    """

    replicates: pd.DataFrame
    n_boot: int
    seed: int
    n_failed: int
    correlation: float
    method: str


def joint_bootstrap(frame: pd.DataFrame, covariates: list[str], er_family: str,
                    cost_second: str, followup_days: int, n_boot: int, seed: int,
                    n_jobs: int = 2, progress: bool = False, *, count_outcome: str,
                    cost_outcome: str, count_fit=None) -> JointReplicates:
    """Saving and ER effect on the same bootstrap resamples of members.

    Each replicate resamples members within arms (keeping the arm sizes) and refits both
    the two-part cost model (``cost_second`` family for the positive part; all replicates
    at once by :func:`evalkit.models.twopart_bootstrap.bootstrap_two_part`) and the ER count
    model (``er_family``, member-months as exposure; Poisson, NB, ZIP and ZINB all at
    once by :func:`evalkit.models.count_bootstrap.bootstrap_count_effect`, hurdle models one
    refit per replicate by :func:`evalkit.models.bootstrap.bootstrap`).
    Both functions draw exactly the same resamples from the same seed and strata
    (:func:`evalkit.models.bootstrap.bootstrap_indices`), so replicate ``b`` of the saving
    and replicate ``b`` of the effect come from the same members, and the pairs carry the
    correlation between cost and ER use (members who avoid the ER also cost less) that
    independent draws would lose. The model families are those chosen on the full data.
    ``count_outcome`` and ``cost_outcome`` name the visits and the cost columns (the
    spec's effect and cost outcomes); ``covariates`` are the spec's terms. ``count_fit``:
    the count model of ``er_family`` already fitted on these members and terms (for
    example the chosen fit of :func:`evalkit.analysis.outcomes.adjusted_count_effects`),
    which the batched count bootstrap then does not fit again.

    Returns
    -------
    JointReplicates
        ``saving`` (per member-year, ``-cost_difference * 365 / followup_days``) and
        ``er_visits_averted`` (per member-year, ``-rate difference per 1,000
        member-months * 12 / 1000``).
    """
    mf = model_frame(frame, covariates)
    rhs = " + ".join(["treated", *mf.names])
    data = mf.frame[["treated", count_outcome, cost_outcome, "member_months",
                     *dict.fromkeys(mf.columns)]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)   # failures are counted below
        cost = bootstrap_two_part(data, f"{cost_outcome} ~ {rhs}", "treated", n_boot=n_boot,
                                  seed=seed, strata="treated", second=cost_second,
                                  ci=("percentile",), n_jobs=n_jobs, progress=progress)
        if er_family in BATCHED_COUNT_FAMILIES:
            er = bootstrap_count_effect(data, f"{count_outcome} ~ {rhs}", "treated", family=er_family,
                                        exposure="member_months", n_boot=n_boot, seed=seed,
                                        strata="treated", ci=("percentile",), n_jobs=n_jobs,
                                        progress=progress, fit=count_fit)
            averted = -er.replicates["rate_difference_per_1000_mm"].to_numpy() * 0.012
        else:
            er = bootstrap(data, functools.partial(_er_statistic, er_formula=f"{count_outcome} ~ {rhs}",
                                                   family=er_family),
                           n_boot=n_boot, seed=seed, strata="treated", ci=("percentile",),
                           n_jobs=n_jobs, progress=progress)
            averted = er.replicates.iloc[:, 0].to_numpy()
    reps = pd.DataFrame({
        "saving": -cost.replicates["cost_difference"].to_numpy() * 365.0 / followup_days,
        "er_visits_averted": averted})
    ok = reps.dropna()
    n_failed = len(reps) - len(ok)
    if n_failed:
        warnings.warn(f"joint bootstrap: {n_failed} of {n_boot} replicates could not be fitted "
                      "(left out of the PSA)", StatisticalWarning, stacklevel=2)
    corr = float(np.corrcoef(ok["saving"], ok["er_visits_averted"])[0, 1]) if len(ok) > 2 else math.nan
    return JointReplicates(reps, n_boot, seed, n_failed, corr,
                           f"{n_boot} bootstrap resamples of members within arms; two-part "
                           f"({cost_second}) and {er_family} models refitted on each")


def _program_costs(econ, **over) -> ProgramCosts:
    kw = dict(uptake=econ.uptake, coordination=econ.coordination,
              facilitation=econ.facilitation, materials=econ.materials,
              fixed_startup=econ.fixed_startup, horizon_years=econ.horizon_years,
              discount_rate=econ.discount_rate, perspective=econ.perspective)
    kw.update(over)
    kw["horizon_years"] = int(round(kw["horizon_years"]))
    return ProgramCosts(**kw)


def sensitivity(econ, savings: dict, referred_members: int,
                who: tuple[str, str] = CLAIMS_PER):
    """One-way sensitivity of net savings per treated unit (over the horizon); ``who``
    names the unit, one and all (:meth:`evalkit.analysis.spec.StudySpec.per_treated`).

    Each input moves over its range with the others at their base values:

    * uptake: its beta 95% interval when ``econ.uptake_sd`` > 0, else half to 1.5 times
      the base value (capped at 1);
    * each cost component the plan pays (coordination, facilitation, materials, start-up):
      the gamma 95% interval with ``econ.cost_uncertainty`` as coefficient of variation
      (as in the PSA), or half to 1.5 times when that is 0; components at $0 are left out;
    * the saving: the limits of its 95% confidence interval;
    * the discount rate: 0% to 5%;
    * the horizon: 1 year to the base horizon plus two (at least 3 years).

    Returns
    -------
    OneWayResult
        Draw it with :func:`evalkit.econ.tornado_plot`.
    """
    def model(p):
        pc = _program_costs(econ, **{k: v for k, v in p.items() if k != "saving"})
        return cost_benefit(p["saving"], pc, members=referred_members).net_savings_per_member

    base = {"uptake": econ.uptake, "coordination": econ.coordination,
            "facilitation": econ.facilitation, "materials": econ.materials,
            "fixed_startup": econ.fixed_startup, "saving": savings["estimate"],
            "discount_rate": econ.discount_rate, "horizon_years": float(econ.horizon_years)}
    u = econ.uptake
    ranges: dict = {"uptake": Beta(mean=u, sd=econ.uptake_sd).interval()
                    if econ.uptake_sd > 0 and u < 1 else (u / 2, min(1.0, 1.5 * u))}
    for k in ("coordination", "facilitation", "materials", "fixed_startup"):
        v = getattr(econ, k)
        if v > 0:
            ranges[k] = (Gamma(v, v * econ.cost_uncertainty).interval()
                         if econ.cost_uncertainty > 0 else (v / 2, 1.5 * v))
    ranges["saving"] = (savings["ci_low"], savings["ci_high"])
    ranges["discount_rate"] = (0.0, 0.05)
    ranges["horizon_years"] = (1.0, float(max(3, econ.horizon_years + 2)))
    res = one_way(model, base, ranges, output=f"net savings per {who[0]} ($)")
    table = res.table.copy()
    table.insert(1, "parameter", table["term"].map(_sensitivity_labels(who[0])))
    return type(res)(table=table, base_output=res.base_output, output=res.output)


def _sensitivity_labels(one: str) -> dict[str, str]:
    """The one-way sensitivity's inputs in words, per ``one`` ('referred member')."""
    return {
        "uptake": "uptake (share taking part)", "coordination": f"coordination ($ per {one})",
        "facilitation": f"facilitation ($ per {one})", "materials": f"materials ($ per {one})",
        "fixed_startup": "start-up cost ($)", "saving": f"saving ($ per {one} a year)",
        "discount_rate": "discount rate", "horizon_years": "horizon (years)"}


def budget_for_plan(budget, econ, savings: dict):
    """Budget impact of the programme for the plan named in ``econ.budget``.

    Base case: the saving per participant is the estimate; each scenario (``low``,
    ``high``) takes the saving at the end of its interval it names and any prevalence,
    referral or uptake it overrides. Programme cost per referred member is
    coordination + facilitation + materials each year, the start-up cost falls in year 1;
    undiscounted unless ``budget.discount_rate`` is set (Mauskopf et al. 2007; Sullivan
    et al. 2014). See :func:`evalkit.econ.budget_impact`.
    """
    years = budget.horizon

    def per_year(v):
        return v[0] if v is not None and len(v) == 1 else v

    uptake = per_year(budget.uptake_by_year) if budget.uptake_by_year is not None else econ.uptake
    scen = {}
    for name in ("low", "high"):
        sc = getattr(budget, name)
        over = {"savings_per_participant": savings[sc.savings or f"ci_{name}"]}
        if sc.prevalence is not None:
            over["prevalence"] = sc.prevalence
        if sc.referral_rate_by_year is not None:
            over["referral_rate_by_year"] = per_year(sc.referral_rate_by_year)
        if sc.uptake_by_year is not None:
            over["uptake_by_year"] = per_year(sc.uptake_by_year)
        scen[name] = over
    res = budget_impact(budget.plan_members, budget.prevalence,
                        per_year(budget.referral_rate_by_year), uptake, savings["estimate"],
                        econ.coordination + econ.facilitation + econ.materials, years=years,
                        discount_rate=budget.discount_rate, fixed_cost=econ.fixed_startup,
                        scenarios=scen)
    res.inputs["plan_name"] = budget.plan_name
    return res


def value_program(cost_records: pd.DataFrame, econ, referred_members: int, followup_days: int,
                  seed: int, effect: dict | None = None, joint=None,
                  words: EffectWords = ER_WORDS) -> Valuation:
    """Turn the adjusted cost difference (and ER effect) into program economics.

    ``cost_records`` are the costs workbook's effect records (a ``cost_difference`` row
    over the follow-up window); ``econ`` the params' economics section. The saving per
    referred member per year is ``-cost_difference * 365 / followup_days``; the measured
    effect already reflects how many referred members took part, so ``econ.uptake``
    (default 1) should stay 1 unless the saving was measured among participants.

    Parameters
    ----------
    effect : dict, optional
        ER visits averted per referred member per year (:func:`er_effect`). With it the
        PSA also draws the effect, and the result has the ICER, NMB over
        willingness-to-pay values, the CEAC and EVPI.
    joint : JointReplicates, optional
        Replicates of ``saving`` and ``er_visits_averted`` on the same resamples
        (:func:`joint_bootstrap`). The PSA then draws the pair from them (jointly);
        without it, saving and effect are drawn independently from normal
        distributions with their standard errors, which ignores their correlation.
    words : EffectWords
        How the effect is named in records, tables and sentences (the spec's effect
        outcome; default ER visits, fewer is better), and whom the figures are per.

    Notes
    -----
    Per referred member over the horizon, with uptake u, saving S and effect E per
    member-year, cost C per referred member a year, start-up F shared by N referred
    members and discount factors d_t (end of year): net savings
    ``NS = (u S - C) sum(d_t) - F/N``; ER visits averted ``V = u E sum(d_t)``; incremental
    cost ``-NS``; ICER ``-NS / V`` (dominant when NS > 0 and V > 0); NMB(λ) = ``λ V + NS``.
    """
    row = cost_records[cost_records["scale"] == "cost_difference"]
    if row.empty:
        raise DataValidationError("no cost_difference estimate to value; run the costs workbook's "
                                  "model first")
    r = row.iloc[0]
    year = 365.0 / followup_days
    savings = {"estimate": -r["estimate"] * year, "ci_low": -r["ci_high"] * year,
               "ci_high": -r["ci_low"] * year, "std_error": r["std_error"] * year,
               "outcome": str(r["outcome"])}
    costs = _program_costs(econ)
    cb = cost_benefit(savings["estimate"], costs, members=referred_members,
                      savings_ci=(savings["ci_low"], savings["ci_high"]),
                      effect_per_member=None if effect is None else effect["estimate"],
                      effect_ci=None if effect is None else (effect["ci_low"], effect["ci_high"]),
                      who=words.who)
    per_ref = costs.cost_per_referred
    pairs = None
    if effect is not None and joint is not None:
        rep = joint.replicates[["saving", "er_visits_averted"]].dropna()
        if len(rep) >= MIN_JOINT_REPLICATES:
            pairs = rep.to_numpy()
        else:
            warnings.warn(f"only {len(rep)} of {len(joint.replicates)} joint bootstrap replicates "
                          f"could be fitted (at least {MIN_JOINT_REPLICATES} are needed): the "
                          "PSA draws the saving and the effect independently instead; raise "
                          "econ.joint_replicates", StatisticalWarning, stacklevel=2)
    if pairs is not None:
        outcome_inputs = {"joint_replicate": Empirical(
            np.arange(len(pairs), dtype=float),
            label=f"bootstrap replicate of (saving, {words.measure}), {len(pairs)} replicates")}
    else:
        outcome_inputs = {"saving": Normal(savings["estimate"], savings["std_error"])}
        if effect is not None:
            outcome_inputs["er_visits_averted"] = Normal(effect["estimate"], effect["std_error"])
    inputs = {
        **outcome_inputs,
        "uptake": Beta(mean=econ.uptake, sd=econ.uptake_sd) if econ.uptake_sd > 0 else Fixed(econ.uptake),
        "cost_per_referred": Gamma(per_ref, per_ref * econ.cost_uncertainty)
        if per_ref > 0 and econ.cost_uncertainty > 0 else Fixed(per_ref),
    }
    startup = econ.fixed_startup / referred_members
    factors = costs.discount_factors
    annuity = float(np.sum(factors))

    def model(p):
        if pairs is not None:
            pick = pairs[p["joint_replicate"].astype(int)]
            s, e = pick[:, 0], pick[:, 1]
        else:
            s = p["saving"]
            e = p.get("er_visits_averted", np.zeros_like(s))
        net = (p["uptake"] * s - p["cost_per_referred"]) * annuity - startup
        out = {"delta_cost": -net, "delta_effect": p["uptake"] * e * annuity, "net_savings": net}
        if pairs is not None:
            out.update(saving_drawn=s, er_visits_averted_drawn=e)
        return out

    budget = None
    population = None
    if getattr(econ, "budget", None) is not None:
        budget = budget_for_plan(econ.budget, econ, savings)
        population = float(budget.by_year["referred"].sum())
    wtp = np.linspace(0.0, float(getattr(econ, "wtp_max", 5000.0)), 101) if effect is not None else None
    sim = psa(inputs, model, n=econ.psa_draws, seed=seed, wtp=wtp, population=population)
    net = sim.draws["net_savings"].to_numpy()
    lo, hi = np.percentile(net, [2.5, 97.5])
    headline = pd.DataFrame([
        {"figure": f"gross savings {words.per_member} per year", "estimate": savings["estimate"],
         "ci_low": savings["ci_low"], "ci_high": savings["ci_high"],
         "quantity": "gross_savings", "unit": "dollars"},
        {"figure": f"program cost {words.per_member} (incl. start-up share)",
         "estimate": per_ref * annuity + startup, "ci_low": np.nan, "ci_high": np.nan,
         "quantity": "program_cost", "unit": "dollars"},
        {"figure": f"net savings {words.per_member} over {_years(econ.horizon_years)}",
         "estimate": cb.net_savings_per_member, "ci_low": lo, "ci_high": hi,
         "quantity": "net_savings", "unit": "dollars"},
        {"figure": "return on investment", "estimate": cb.roi, "ci_low": np.nan, "ci_high": np.nan,
         "quantity": "roi", "unit": "share"},
        {"figure": "probability the program saves money", "estimate": sim.probability_cost_saving,
         "ci_low": np.nan, "ci_high": np.nan, "quantity": "probability_cost_saving",
         "unit": "share"},
    ])
    ic = nm = ow = effectiveness = None
    if effect is not None:
        v = econ.uptake * effect["estimate"] * annuity
        ic = icer(-cb.net_savings_per_member, v)
        nm = nmb(-cb.net_savings_per_member, v, wtp)
        ev = sim.draws["delta_effect"].to_numpy()
        effectiveness = pd.DataFrame([
            {"figure": f"{words.measure} {words.per_member} per year",
             "estimate": effect["estimate"], "ci_low": effect["ci_low"], "ci_high": effect["ci_high"],
             "source": effect.get("method", "")},
            {"figure": f"{words.measure} {words.per_member} over {_years(econ.horizon_years)}"
                       + (" (discounted)" if econ.discount_rate > 0 else ""),
             "estimate": v, "ci_low": float(np.quantile(ev, 0.025)),
             "ci_high": float(np.quantile(ev, 0.975)),
             "source": f"uptake x {words.measure} per year x discounted years; interval from "
                       "the PSA"},
        ])
        if pairs is None:
            warnings.warn("the saving and the ER effect are drawn independently in the PSA "
                          "(econ.joint_replicates is 0, or too few replicates could be fitted): their "
                          "correlation is ignored, which "
                          "usually overstates the spread of the cost-effectiveness results",
                          StatisticalWarning, stacklevel=2)
    ow = sensitivity(econ, savings, referred_members, words.who)
    described = pd.DataFrame([{"input": k, "distribution": v.describe() if hasattr(v, "describe")
                               else repr(v)} for k, v in inputs.items()])
    return Valuation(savings, cb, sim, headline, described, effect=effect,
                     effectiveness=effectiveness, icer=ic, nmb=nm,
                     one_way=ow, budget=budget, joint=pairs is not None,
                     replicates=joint if pairs is not None else None,
                     wtp_values=tuple(getattr(econ, "wtp_values", ())), words=words)
