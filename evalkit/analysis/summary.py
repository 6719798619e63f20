"""Summary mode: what published figures say, pooled, and what they would mean for a plan.

A self-help clearinghouse often has no member data, only the figures studies publish:
per-arm sizes, means, SDs, event counts, percentages. This module turns the ``summary``
section of the params (:class:`evalkit.params.SummaryParams`) into

* **study effects** (:func:`study_effects`): one effect size per study with its 95%
  interval, computed as ``metafor::escalc`` does (:func:`evalkit.synthesis.effect_size`),
  or taken from an effect the study reports;
* **pooled effects** (:func:`synthesize`): for every outcome that more than one study
  measured, an inverse-variance meta-analysis (:func:`evalkit.synthesis.meta_analysis`):
  random effects by REML (default) with DerSimonian-Laird as a check and the fixed-effect
  model shown, with tau^2, I^2 and Cochran's Q. An outcome with one study is not pooled;
  its study's effect is carried forward and the tables say so;
* **sensitivity to assumed SDs** (:func:`sd_sensitivity`): many papers publish means but
  not SDs, so the SD is an assumption; the pooled result is recomputed with the assumed
  SDs scaled by each factor of ``summary.sd_sensitivity``;
* **a projection onto a target plan** (:func:`project`): the expected yearly change in
  visits, days or dollars if ``uptake`` of the plan's ``members`` took part, with a 95%
  interval from a seeded Monte Carlo over the pooled effect's sampling distribution and
  the uptake (:func:`evalkit.econ.psa`);
* **survey proportions** (:func:`survey_proportions`, :func:`survey_comparisons`):
  intervals for x of n, and two groups compared (Newcombe interval for the difference,
  chi-square and Fisher tests).

Every function returns values (tables and frozen dataclasses); nothing prints. Public
output: when ``report.public`` is true, :func:`public_table` hides cells describing fewer
than ``report.min_cell`` people (and what can be worked back from them) with
:func:`evalkit.privacy.suppress`, even though published figures hold no member ids.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter
from scipy import stats

from ..econ import Beta, Fixed, Normal, psa
from ..errors import DataValidationError
from ..params import RATIO_MEASURES, Params, ProjectionParams, SummaryParams
from ..privacy import suppress
from ..synthesis import (MetaAnalysisResult, compare_proportions, effect_size, forest_plot,
                         meta_analysis, proportion_ci)
from .spec import AnalysisSpec, published_label
from .valuation import budget_for_plan

__all__ = [
    "MEASURE_NAMES", "MEASURE_SCALES", "study_effects", "OutcomeSynthesis", "Synthesis",
    "synthesize", "sd_sensitivity", "Projection", "project", "survey_proportions",
    "survey_comparisons", "survey_estimates", "public_table",
]

#: Words for each measure, as a reader would say them.
MEASURE_NAMES = {"RR": "risk ratio", "OR": "odds ratio", "RD": "risk difference",
                 "MD": "mean difference", "SMD": "standardized mean difference (Hedges' g)",
                 "IRR": "rate ratio", "ROM": "ratio of means"}
#: The results.json ``scale`` of each measure (design.md's vocabulary).
MEASURE_SCALES = {"RR": "ratio", "OR": "odds_ratio", "RD": "risk_difference", "MD": "difference",
                  "SMD": "difference", "IRR": "rate_ratio", "ROM": "ratio"}
#: The pooling methods shown for an outcome with two or more studies, the chosen one first.
POOLING_METHODS = ("REML", "DL", "FE")


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


# ----------------------------------------------------------------------------- studies
def study_effects(summary: SummaryParams, sd_factor: float = 1.0) -> pd.DataFrame:
    """One effect size per study, with its interval, on the measure the params name.

    Per-arm figures go through :func:`evalkit.synthesis.effect_size` (``escalc``'s
    formulas; the treated arm is group 1). An effect the study reports (``reported``) is
    used as given: a ratio is analysed on the log scale, and an interval is turned into a
    standard error by ``(log(high) - log(low)) / (2 z)`` (``(high - low) / (2 z)`` for a
    difference), z the 97.5% normal quantile (the interval is taken to be 95%).

    Parameters
    ----------
    summary : SummaryParams
    sd_factor : float
        Multiplies the SDs of studies whose SDs are assumed (``sd_assumed``); 1 = as given.

    Returns
    -------
    DataFrame
        One row per study: ``study, citation, outcome, measure, scale, source, yi, vi``
        (analysis scale: log for ratios), ``estimate, std_error, ci_low, ci_high,
        p_value`` (estimate and limits on the natural scale, SE on the analysis scale),
        ``n_treated, n_control, events_treated, events_control`` (counts of people or
        events, when the measure uses them), ``treated_value, control_value`` (each arm's
        published mean, proportion or rate per person-year) and ``assumed`` (what was
        assumed, or empty).
    """
    if sd_factor <= 0:
        raise DataValidationError(f"sd_factor must be > 0, got {sd_factor!r}")
    z = _z(summary.alpha)
    rows = []
    for s in summary.studies:
        assumed = []
        row = {"study": s.name, "citation": s.citation, "outcome": s.outcome,
               "measure": s.measure, "scale": MEASURE_SCALES[s.measure],
               "n_treated": np.nan, "n_control": np.nan, "events_treated": np.nan,
               "events_control": np.nan, "treated_value": np.nan, "control_value": np.nan}
        if s.reported is not None:
            r = s.reported
            ratio = s.measure in RATIO_MEASURES
            f = math.log if ratio else (lambda v: v)
            yi = f(r.estimate)
            se = r.std_error if r.std_error is not None else \
                (f(r.ci_high) - f(r.ci_low)) / (2 * _z(0.05))
            vi = se ** 2
            row["source"] = "reported effect"
            if r.assumed:
                assumed.append(r.assumed)
        else:
            t, c = s.treated, s.control
            row["source"] = "per-arm figures"
            row["n_treated"], row["n_control"] = t.n, c.n
            if s.measure in ("RR", "OR", "RD"):
                es = effect_size(s.measure, ai=[t.count], n1i=[t.n], ci=[c.count], n2i=[c.n])
                row.update(events_treated=t.count, events_control=c.count,
                           treated_value=t.count / t.n, control_value=c.count / c.n)
                if t.events is None or c.events is None:
                    assumed.append("counts worked out from the published percentages")
            elif s.measure == "IRR":
                es = effect_size("IRR", x1i=[t.events], t1i=[t.person_time], x2i=[c.events],
                                 t2i=[c.person_time])
                row.update(events_treated=t.events, events_control=c.events,
                           treated_value=t.events / t.person_time,
                           control_value=c.events / c.person_time)
            else:
                k = sd_factor if s.sd_assumed else 1.0
                es = effect_size(s.measure, m1i=[t.mean], sd1i=[t.sd * k], n1i=[t.n],
                                 m2i=[c.mean], sd2i=[c.sd * k], n2i=[c.n])
                row.update(treated_value=t.mean, control_value=c.mean)
                if s.sd_assumed:
                    assumed.append(f"SDs not published; assumed {t.sd * k:g} and {c.sd * k:g}")
            yi, vi = float(es["yi"].iloc[0]), float(es["vi"].iloc[0])
            se = math.sqrt(vi)
        back = math.exp if s.measure in RATIO_MEASURES else (lambda v: v)
        row.update(yi=yi, vi=vi, estimate=back(yi), std_error=se, ci_low=back(yi - z * se),
                   ci_high=back(yi + z * se), p_value=float(2 * stats.norm.sf(abs(yi / se))),
                   assumed="; ".join(assumed))
        rows.append(row)
    cols = ["study", "citation", "outcome", "measure", "scale", "source", "yi", "vi",
            "estimate", "std_error", "ci_low", "ci_high", "p_value", "n_treated", "n_control",
            "events_treated", "events_control", "treated_value", "control_value", "assumed"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- pooling
@dataclass(frozen=True)
class OutcomeSynthesis:
    """What the studies of one outcome say together.

    Attributes
    ----------
    outcome, measure : str
    k : int
        Number of studies.
    studies : DataFrame
        Their rows of :func:`study_effects`.
    fits : dict
        ``{"REML": MetaAnalysisResult, "DL": ..., "FE": ...}`` when k >= 2; empty when
        one study only (nothing to pool).
    method : str
        The pooling method the params chose (the headline).
    alpha : float
    name : str
        The outcome's name for readers (the spec's label: :func:`published_label`).
    """

    outcome: str
    measure: str
    k: int
    studies: pd.DataFrame
    fits: dict
    method: str
    alpha: float = 0.05
    name: str = ""

    @property
    def pooled(self) -> bool:
        return self.k >= 2

    @property
    def ratio(self) -> bool:
        return self.measure in RATIO_MEASURES

    @property
    def headline(self) -> dict:
        """``yi, se`` (analysis scale) and ``estimate, ci_low, ci_high`` (natural scale) of
        the chosen pooled result, or of the single study."""
        if self.pooled:
            f: MetaAnalysisResult = self.fits[self.method]
            yi, se = f.estimate, f.std_error
        else:
            yi, se = float(self.studies["yi"].iloc[0]), float(self.studies["std_error"].iloc[0])
        back = np.exp if self.ratio else (lambda v: v)
        z = _z(self.alpha)
        return {"yi": yi, "se": se, "estimate": float(back(yi)),
                "ci_low": float(back(yi - z * se)), "ci_high": float(back(yi + z * se))}

    def forest(self, ax=None):
        """Forest plot of the studies and the chosen pooled estimate (ratio measures on a
        log axis). Needs k >= 2."""
        if not self.pooled:
            raise DataValidationError(f"outcome '{self.outcome}' has one study: nothing to pool "
                                      "or draw a forest plot of")
        fit = self.fits[self.method]
        ax = forest_plot(fit, ax=ax, transform=np.exp if self.ratio else None,
                         xlabel=f"{MEASURE_NAMES[self.measure]}, {self.name}")
        if self.ratio:                 # plain numbers (0.5, 1, 2) rather than powers of ten
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        return ax


@dataclass(frozen=True)
class Synthesis:
    """Study effects and, outcome by outcome, what they say together.

    Attributes
    ----------
    effects : DataFrame
        :func:`study_effects`.
    outcomes : dict
        ``outcome -> OutcomeSynthesis``, in the order the outcomes first appear.
    method : str
    alpha : float
    """

    effects: pd.DataFrame
    outcomes: dict
    method: str
    alpha: float = 0.05

    def pooled_table(self) -> pd.DataFrame:
        """One row per outcome and pooling method (the chosen method first); an outcome
        with one study has a single row, ``method = "single study (not pooled)"``.

        Columns: ``outcome, measure, method, k, estimate, ci_low, ci_high, std_error``
        (analysis scale), ``p_value, tau2, i2, q, q_df, q_p``.
        """
        rows = []
        for o in self.outcomes.values():
            back = np.exp if o.ratio else (lambda v: v)
            if not o.pooled:
                h = o.headline
                s = o.studies.iloc[0]
                rows.append({"outcome": o.outcome, "measure": o.measure,
                             "method": "single study (not pooled)", "k": 1,
                             "estimate": h["estimate"], "ci_low": h["ci_low"],
                             "ci_high": h["ci_high"], "std_error": h["se"],
                             "p_value": s["p_value"], "tau2": np.nan, "i2": np.nan,
                             "q": np.nan, "q_df": np.nan, "q_p": np.nan})
                continue
            order = [self.method] + [m for m in POOLING_METHODS if m != self.method]
            for m in order:
                f = o.fits[m]
                rows.append({"outcome": o.outcome, "measure": o.measure, "method": m, "k": f.k,
                             "estimate": float(back(f.estimate)), "ci_low": float(back(f.ci_low)),
                             "ci_high": float(back(f.ci_high)), "std_error": f.std_error,
                             "p_value": f.p_value, "tau2": f.tau2, "i2": f.i2, "q": f.q,
                             "q_df": f.q_df, "q_p": f.q_p})
        return pd.DataFrame(rows)

    def estimates(self, public: bool = False, min_cell: int = 11) -> pd.DataFrame:
        """Records for results.json: each study's effect (``level = "study"``) and each
        outcome's pooled effects (``level = "pooled"``; one record per method, the chosen
        one first). Ratio estimates carry the SE of their log. With ``public``, a study
        with a count below ``min_cell`` is recorded without its figures
        (see :func:`public_table`)."""
        recs = []
        eff = public_table(self.effects, public, min_cell, kind="effects")
        for r in eff.itertuples(index=False):
            hidden = isinstance(r.estimate, str)
            recs.append({
                "outcome": r.outcome, "contrast": "self_help vs control",
                "estimand": "as published", "level": "study", "study": r.study,
                "measure": r.measure, "scale": r.scale,
                "method": f"{MEASURE_NAMES[r.measure]} from the {r.source}"
                          + (" (figures suppressed: small cells)" if hidden else ""),
                "estimate": None if hidden else r.estimate,
                "std_error": None if hidden else r.std_error,
                "ci_low": None if hidden else r.ci_low, "ci_high": None if hidden else r.ci_high,
                "p_value": None if hidden else r.p_value,
                "n_treated": _count_or_none(r.n_treated), "n_control": _count_or_none(r.n_control),
                "assumed": r.assumed or None})
        table = self.pooled_table()
        for r in table.itertuples(index=False):
            if r.k < 2:                 # one study: its own record above, nothing pooled
                continue
            recs.append({
                "outcome": r.outcome, "contrast": "self_help vs control", "estimand": "pooled",
                "level": "pooled", "measure": r.measure, "scale": MEASURE_SCALES[r.measure],
                "method": {"REML": "random effects (REML)", "DL": "random effects "
                           "(DerSimonian-Laird)", "FE": "fixed effect"}[r.method]
                          + f", inverse variance, {r.k} studies",
                "estimate": r.estimate, "std_error": r.std_error, "ci_low": r.ci_low,
                "ci_high": r.ci_high, "p_value": r.p_value, "k": r.k, "tau2": r.tau2,
                "i2": r.i2, "q": r.q, "q_p": r.q_p, "chosen": r.method == self.method})
        return pd.DataFrame(recs)

    def findings(self) -> list[str]:
        """One plain sentence per outcome."""
        out = []
        for o in self.outcomes.values():
            h = o.headline
            name = o.name
            what = MEASURE_NAMES[o.measure]
            if o.ratio:
                change = (h["estimate"] - 1) * 100
                size = (f"{abs(change):.0f}% {'less' if change < 0 else 'more'} with self-help "
                        f"({what} {h['estimate']:.2f}, 95% CI {h['ci_low']:.2f} to "
                        f"{h['ci_high']:.2f})")
            else:
                size = (f"a {what} of {h['estimate']:,.3g} (95% CI {h['ci_low']:,.3g} to "
                        f"{h['ci_high']:,.3g})")
            if o.pooled:
                f = o.fits[o.method]
                src = (f"{o.k} studies pooled by {o.method} ({f.method}): between-study "
                       f"variance tau² {f.tau2:.3g}, I² {f.i2:.0f}%, Q {f.q:.2f} on {f.q_df} df "
                       f"(p = {f.q_p:.2g})")
            else:
                src = f"one study only ({o.studies['study'].iloc[0]}), so nothing is pooled"
            out.append(f"{_first_upper(name)}: {size}; {src}.")
        return out


def synthesize(summary: SummaryParams, spec: AnalysisSpec | None = None) -> Synthesis:
    """Effect sizes for every study and, for every outcome with two or more studies, the
    pooled effect by REML, DerSimonian-Laird and fixed effect (``summary.method`` is the
    headline). Outcomes are named by the run's ``spec`` (``study.outcomes.<name>.label``
    in the params), else in the words that suit published figures.

    Returns
    -------
    Synthesis

    Examples
    --------
    >>> syn = synthesize(params.summary)                    # doctest: +SKIP
    >>> syn.pooled_table()                                  # doctest: +SKIP
    """
    return _synthesize(summary, study_effects(summary), spec)


def _synthesize(summary: SummaryParams, effects: pd.DataFrame,
                spec: AnalysisSpec | None = None) -> Synthesis:
    outcomes = {}
    for outcome in dict.fromkeys(effects["outcome"]):
        sub = effects[effects["outcome"] == outcome].reset_index(drop=True)
        fits = {}
        if len(sub) >= 2:
            fits = {m: meta_analysis(sub["yi"], sub["vi"], method=m, alpha=summary.alpha,
                                     labels=sub["study"]) for m in POOLING_METHODS}
        outcomes[outcome] = OutcomeSynthesis(outcome, sub["measure"].iloc[0], len(sub), sub,
                                             fits, summary.method, summary.alpha,
                                             published_label(outcome, spec))
    return Synthesis(effects, outcomes, summary.method, summary.alpha)


def sd_sensitivity(summary: SummaryParams) -> pd.DataFrame:
    """How each outcome's result moves when the assumed SDs are scaled.

    For each factor in ``summary.sd_sensitivity`` the SDs of the studies marked
    ``sd_assumed`` are multiplied by it and the outcome is pooled again (or, with one
    study, its interval recomputed). Larger SDs widen intervals and, when studies are
    pooled, shift weight between studies.

    Returns
    -------
    DataFrame
        ``outcome, measure, sd_factor, k, estimate, ci_low, ci_high, tau2`` for every
        outcome with at least one assumed SD (empty when no SD is assumed).
    """
    assumed = {s.outcome for s in summary.studies if s.sd_assumed}
    rows = []
    for factor in summary.sd_sensitivity:
        syn = _synthesize(summary, study_effects(summary, sd_factor=factor))
        for o in syn.outcomes.values():
            if o.outcome not in assumed:
                continue
            h = o.headline
            rows.append({"outcome": o.outcome, "measure": o.measure, "sd_factor": factor,
                         "k": o.k, "estimate": h["estimate"], "ci_low": h["ci_low"],
                         "ci_high": h["ci_high"],
                         "tau2": o.fits[o.method].tau2 if o.pooled else np.nan})
    cols = ["outcome", "measure", "sd_factor", "k", "estimate", "ci_low", "ci_high", "tau2"]
    return pd.DataFrame(rows, columns=cols).sort_values(["outcome", "sd_factor"],
                                                         kind="stable", ignore_index=True)


# ----------------------------------------------------------------------------- projection
@dataclass(frozen=True)
class Projection:
    """Expected yearly change in a target plan, with Monte Carlo intervals.

    Attributes
    ----------
    plan : str
    members : int
    participants : float
        ``members * uptake`` (expected number taking part).
    table : DataFrame
        One row per projected outcome: ``outcome, label, unit, baseline_per_member_year,
        ratio, ratio_ci_low, ratio_ci_high, k`` (the effect applied), ``expected_change``
        (at the effect's estimate and the mean uptake), ``ci_low, ci_high`` (2.5% and
        97.5% of the simulated changes), ``per_participant`` and ``per_1000_members``.
    psa : PSAResult
        The simulation (:func:`evalkit.econ.psa`): its ``draws`` hold the uptake, the
        log ratios and the changes; ``probability_cost_saving`` is the share of draws in
        which the plan's cost falls (when a dollars outcome is projected).
    seed : int
    """

    plan: str
    members: int
    uptake: float
    uptake_sd: float
    participants: float
    table: pd.DataFrame
    psa: object = field(repr=False)
    seed: int = 0

    @property
    def has_cost(self) -> bool:
        return bool((self.table["unit"] == "dollars").any())

    def estimates(self) -> pd.DataFrame:
        """Records for results.json: the change per year across the plan (``scale =
        "difference"``, with ``unit``), and, when cost is projected, the probability that
        the plan's cost falls (``probability_cost_saving``)."""
        method = (f"effect applied to the plan's baseline; Monte Carlo, {self.psa.n} draws "
                  f"(seed {self.seed}) over the effect's sampling distribution and uptake")
        recs = []
        for r in self.table.itertuples(index=False):
            recs.append({"outcome": r.outcome, "contrast": "self_help referral vs none",
                         "estimand": f"change per year across {self.plan} ({self.members:,} "
                                     f"members, uptake {self.uptake:.1%})",
                         "method": method, "scale": "difference", "estimate": r.expected_change,
                         "ci_low": r.ci_low, "ci_high": r.ci_high, "unit": f"{r.unit} per year",
                         "level": "projection"})
        if self.has_cost:
            recs.append({"outcome": "total_cost", "contrast": "self_help referral vs none",
                         "estimand": f"probability that {self.plan}'s cost falls",
                         "method": method, "scale": "probability_cost_saving",
                         "estimate": self.psa.probability_cost_saving, "level": "projection"})
        return pd.DataFrame(recs)

    def findings(self) -> list[str]:
        """One plain sentence per projected outcome."""
        out = []
        for r in self.table.itertuples(index=False):
            lo, hi = sorted((r.ci_low, r.ci_high))
            if hi < 0 or lo > 0:         # the interval does not include "no change"
                word = ("less" if r.unit == "dollars" else "fewer") if hi < 0 else "more"
                a, b = sorted((abs(lo), abs(hi)))
                interval = (f"95% interval {_amount(a, 'dollars' if r.unit == 'dollars' else '')}"
                            f" to {_amount(b, r.unit)} {word}")
            else:
                word = "more" if r.expected_change >= 0 else \
                    ("less" if r.unit == "dollars" else "fewer")
                interval = (f"95% interval from {_amount(abs(lo), r.unit)} fewer to "
                            f"{_amount(hi, r.unit)} more: it may not change at all")
            out.append(f"{r.label}: about {_amount(abs(r.expected_change), r.unit)} {word} a "
                       f"year across {self.plan}'s {self.members:,} members ({interval}), "
                       f"applying a ratio of {r.ratio:.2f} to "
                       f"{_amount(r.baseline_per_member_year, r.unit, 4)} per participant "
                       "per year.")
        return out


def _amount(v: float, unit: str, digits: int | None = None) -> str:
    if unit == "dollars":
        return f"${v:,.0f}"
    text = f"{v:,.{digits}g}" if digits else f"{v:,.0f}"
    return f"{text} {unit}" if unit else text


def project(synthesis: Synthesis, projection: ProjectionParams, seed: int) -> Projection:
    """Project the (pooled) effects onto a target plan.

    For outcome j with baseline ``b_j`` (per participating member per year) and ratio
    ``R_j`` (pooled, or the single study's), the yearly change across the plan is::

        change_j = members * uptake * b_j * (R_j - 1)

    Uncertainty: ``log R_j ~ Normal(estimate, SE)`` (the pooled estimate's sampling
    distribution; the random-effects SE includes tau^2) and ``uptake ~ Beta`` with the
    params' mean and SD (fixed when ``uptake_sd`` is 0), drawn independently with a
    ``numpy.random.Generator`` seeded by ``seed`` (:func:`evalkit.econ.psa`); the
    interval is the 2.5% and 97.5% quantiles of the simulated changes. The baselines are
    taken as known. Effects from different studies are drawn independently; effects from
    the same study are in truth correlated, which this ignores.

    Parameters
    ----------
    synthesis : Synthesis
    projection : ProjectionParams
    seed : int
        Same seed, same draws, same numbers.

    Returns
    -------
    Projection
    """
    specs = []
    for i, o in enumerate(projection.outcomes):
        os_ = synthesis.outcomes.get(o.outcome)
        if os_ is None:
            raise DataValidationError(f"projection outcome '{o.outcome}' has no study effect")
        if os_.measure not in ("RR", "IRR", "ROM"):
            raise DataValidationError(f"projection outcome '{o.outcome}': needs a ratio (RR, IRR, "
                                      f"ROM), its studies give {os_.measure}")
        specs.append((i, o, os_, os_.headline))
    inputs = {"uptake": Beta(mean=projection.uptake, sd=projection.uptake_sd)
              if projection.uptake_sd > 0 else Fixed(projection.uptake)}
    for i, _, _, h in specs:
        inputs[f"log_ratio_{i}"] = Normal(h["yi"], h["se"])

    def model(p):
        out = {}
        cost = np.zeros_like(p["uptake"])
        for i, o, _, _ in specs:
            change = projection.members * p["uptake"] * o.baseline_per_member_year * \
                (np.exp(p[f"log_ratio_{i}"]) - 1)
            out[f"change_{i}"] = change
            if o.unit == "dollars":
                cost = cost + change
        out["delta_cost"] = cost
        out["delta_effect"] = np.zeros_like(cost)
        return out

    sim = psa(inputs, model, n=projection.draws, seed=seed, wtp=[0.0])
    participants = projection.members * projection.uptake
    rows = []
    for i, o, os_, h in specs:
        draws = sim.draws[f"change_{i}"].to_numpy()
        lo, hi = np.quantile(draws, [0.025, 0.975])
        change = participants * o.baseline_per_member_year * (h["estimate"] - 1)
        label = o.label or _first_upper(os_.name)
        rows.append({"outcome": o.outcome, "label": label,
                     "unit": o.unit, "baseline_per_member_year": o.baseline_per_member_year,
                     "ratio": h["estimate"], "ratio_ci_low": h["ci_low"],
                     "ratio_ci_high": h["ci_high"], "k": os_.k, "expected_change": change,
                     "ci_low": float(lo), "ci_high": float(hi),
                     "per_participant": o.baseline_per_member_year * (h["estimate"] - 1),
                     "per_1000_members": change / projection.members * 1000})
    return Projection(projection.plan, projection.members, projection.uptake,
                      projection.uptake_sd, participants, pd.DataFrame(rows), sim, int(seed))


# ----------------------------------------------------------------------------- surveys
def survey_proportions(summary: SummaryParams) -> pd.DataFrame:
    """Each survey proportion with its interval (``summary.ci_method``, default Wilson).

    Returns
    -------
    DataFrame
        ``label, group, x, n, proportion, ci_low, ci_high, method, assumed``; ``x`` is
        worked out from ``percent`` (rounded half up) when only a percentage is published.
    """
    items = summary.proportions
    if not items:
        return pd.DataFrame(columns=["label", "group", "x", "n", "proportion", "ci_low",
                                     "ci_high", "method", "assumed"])
    ci = proportion_ci([p.count for p in items], [p.n for p in items], method=summary.ci_method,
                       alpha=summary.alpha)
    return pd.DataFrame({
        "label": [p.label for p in items], "group": [p.group or "" for p in items],
        "x": ci["x"], "n": ci["n"], "proportion": ci["proportion"], "ci_low": ci["ci_low"],
        "ci_high": ci["ci_high"], "method": summary.ci_method,
        "assumed": [_assumed(p) for p in items]})


def _assumed(p) -> str:
    parts = []
    if p.x is None:
        parts.append(f"x = {p.percent:g}% of {p.n}, rounded")
    if p.assumed:
        parts.append(p.assumed)
    return "; ".join(parts)


def survey_comparisons(summary: SummaryParams) -> pd.DataFrame:
    """Each comparison of two survey proportions (first minus second).

    The difference has Newcombe's hybrid score interval; the tests are Pearson's
    chi-square (Yates-corrected when ``summary.yates``) and Fisher's exact test
    (:func:`evalkit.synthesis.compare_proportions`). ``p_value`` is Fisher's when an
    expected count is below 5 (``test`` says which), else the chi-square's.

    Returns
    -------
    DataFrame
        ``label, first, second, x1, n1, p1, x2, n2, p2, difference, ci_low, ci_high, chi2,
        chi2_p_value, fisher_p_value, min_expected, test, p_value``.
    """
    by_label = {p.label: p for p in summary.proportions}
    rows = []
    for c in summary.comparisons:
        a, b = by_label[c.first], by_label[c.second]
        res = compare_proportions(a.count, a.n, b.count, b.n, alpha=summary.alpha,
                                  correct=summary.yates)
        fisher = res.min_expected < 5
        rows.append({"label": c.label, "first": a.label, "second": b.label, "x1": a.count,
                     "n1": a.n, "p1": res.p1, "x2": b.count, "n2": b.n, "p2": res.p2,
                     "difference": res.risk_difference, "ci_low": res.ci_low,
                     "ci_high": res.ci_high, "chi2": res.chi2, "chi2_p_value": res.chi2_p_value,
                     "fisher_p_value": res.fisher_p_value, "min_expected": res.min_expected,
                     "test": "Fisher exact" if fisher else
                     ("chi-square (Yates)" if summary.yates else "chi-square"),
                     "p_value": res.fisher_p_value if fisher else res.chi2_p_value})
    cols = ["label", "first", "second", "x1", "n1", "p1", "x2", "n2", "p2", "difference",
            "ci_low", "ci_high", "chi2", "chi2_p_value", "fisher_p_value", "min_expected",
            "test", "p_value"]
    return pd.DataFrame(rows, columns=cols)


def survey_estimates(proportions: pd.DataFrame, comparisons: pd.DataFrame,
                     ci_method: str = "wilson") -> pd.DataFrame:
    """Records for results.json: ``proportion`` per item and ``risk_difference`` per
    comparison. Pass the tables as published (:func:`public_table`): a suppressed row is
    recorded without its figures."""
    recs = []
    for r in proportions.itertuples(index=False):
        hidden = isinstance(r.proportion, str)
        recs.append({"outcome": r.label, "contrast": r.group or "all respondents",
                     "estimand": "proportion", "scale": "proportion",
                     "method": f"{ci_method} interval"
                     + (" (suppressed: small cell)" if hidden else ""),
                     "estimate": None if hidden else r.proportion,
                     "ci_low": None if hidden else r.ci_low,
                     "ci_high": None if hidden else r.ci_high,
                     "n": None if hidden else r.n, "level": "survey"})
    for r in comparisons.itertuples(index=False):
        hidden = isinstance(r.difference, str)
        recs.append({"outcome": r.label, "contrast": f"{r.first} vs {r.second}",
                     "estimand": "difference in proportions", "scale": "risk_difference",
                     "method": ("Newcombe hybrid score interval; p from " + r.test)
                     + (" (suppressed: small cell)" if hidden else ""),
                     "estimate": None if hidden else r.difference,
                     "ci_low": None if hidden else r.ci_low,
                     "ci_high": None if hidden else r.ci_high,
                     "p_value": None if hidden else r.p_value, "level": "survey"})
    return pd.DataFrame(recs)


# ----------------------------------------------------------------------------- publishing
#: kind -> (pairs of (people with the outcome, people in the group) columns, derived columns)
_PUBLIC = {
    "effects": ([("events_treated", "n_treated"), ("events_control", "n_control")],
                ["yi", "vi", "estimate", "std_error", "ci_low", "ci_high", "p_value",
                 "treated_value", "control_value"]),
    "proportions": ([("x", "n")], ["proportion", "ci_low", "ci_high"]),
    "comparisons": ([("x1", "n1"), ("x2", "n2")],
                    ["p1", "p2", "difference", "ci_low", "ci_high", "chi2", "chi2_p_value",
                     "fisher_p_value", "min_expected", "p_value"]),
}


def _hide_group(x: np.ndarray, n: np.ndarray, min_cell: int):
    """Masks (x, n, any) for one group per row: with x given, x + (n - x) = n is the
    relation suppress protects; with only n, n alone (primary rule)."""
    mx = np.zeros(len(n), bool)
    mn = np.zeros(len(n), bool)
    anyh = np.zeros(len(n), bool)
    has_x = ~np.isnan(x) & ~np.isnan(n)
    if has_x.any():
        f = pd.DataFrame({"x": x[has_x], "without": n[has_x] - x[has_x], "n": n[has_x]})
        r = suppress(f, ["x", "without"], min_cell=min_cell, row_total="n")
        mx[has_x], mn[has_x] = r.mask["x"].to_numpy(), r.mask["n"].to_numpy()
        anyh[has_x] = r.mask.any(axis=1).to_numpy()
    alone = [(~has_x & ~np.isnan(n), n, mn), (np.isnan(n) & ~np.isnan(x), x, mx)]
    for rows, values, mask in alone:
        if rows.any():
            r = suppress(pd.DataFrame({"c": values[rows]}), ["c"], min_cell=min_cell,
                         protect_rows=False)
            mask[rows] = r.mask["c"].to_numpy()
            anyh[rows] |= mask[rows]
    return mx, mn, anyh


def public_table(table: pd.DataFrame, public: bool, min_cell: int = 11,
                 kind: str = "effects") -> pd.DataFrame:
    """The table as it may be published.

    Not public: the table unchanged. Public: for each group of each row, the people with
    the outcome (x), those without (n - x) and the group size n form a relation
    ``x + (n - x) = n`` that :func:`evalkit.privacy.suppress` protects: a count below
    ``min_cell`` is hidden, and so is a second count from which it could be worked out
    (so 57 of 63 is hidden: the 6 without would follow). Every figure computed from a
    row with a hidden count (proportions, effects, intervals, tests) is hidden with it.
    A group given by its size alone (means and SDs) has only its size checked; event
    counts of a rate (IRR: visits over person-time) are checked alone. Published studies
    hold no member ids, but a small cell in a brief is still a small cell.

    Parameters
    ----------
    table : DataFrame from :func:`study_effects`, :func:`survey_proportions` or
        :func:`survey_comparisons`.
    public : bool
        ``report.public``.
    min_cell : int
    kind : ``"effects"``, ``"proportions"`` or ``"comparisons"``.
    """
    if not public or table.empty:
        return table
    pairs, derived = _PUBLIC[kind]
    out = table.copy()
    row_hidden = np.zeros(len(table), bool)
    masks = {}
    for xc, nc in pairs:
        x = pd.to_numeric(table[xc], errors="coerce").to_numpy(float)
        n = pd.to_numeric(table[nc], errors="coerce").to_numpy(float)
        if kind == "effects":        # rate studies: events are not a subset of n
            n = np.where(table["measure"].to_numpy() == "IRR", np.nan, n)
        mx, mn, anyh = _hide_group(x, n, min_cell)
        masks[xc], masks[nc] = mx, mn
        row_hidden |= anyh
    for c in [*masks, *derived]:
        if c not in out.columns:
            continue
        hide = masks.get(c, row_hidden)
        if hide.any():
            col = out[c].astype(object)
            col[hide] = "*"
            out[c] = col
    return out


def _count_or_none(v):
    if isinstance(v, str) or v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return int(v)


def check_summary_mode(params: Params) -> SummaryParams:
    """The summary section of a summary-mode run (a clear error otherwise)."""
    if params.mode != "summary" or params.summary is None:
        raise DataValidationError(f"this workbook reads published figures (mode: summary with a "
                                  f"summary section); this run is in {params.mode} mode")
    return params.summary


# ----------------------------------------------------------------------------- showing
def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:,.{digits}g}"


def _p(v) -> str:
    if isinstance(v, str):
        return v
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def readable_effects(effects: pd.DataFrame, spec: AnalysisSpec | None = None) -> pd.DataFrame:
    """Study effects as a reader sees them: each arm's figure, the effect with its
    interval, what was assumed. Pass the table as published (:func:`public_table`);
    outcomes are named by ``spec`` (:func:`published_label`)."""
    rows = []
    for r in effects.itertuples(index=False):
        def arm(value, n, events):
            if r.source != "per-arm figures":
                return "not published"
            if isinstance(value, str) or isinstance(n, str):
                return "*"
            if r.measure in ("RR", "OR", "RD"):
                return f"{_fmt(events, 6)} of {_fmt(n, 6)} ({100 * value:.1f}%)"
            if r.measure == "IRR":
                return f"{_fmt(value)} per person-year"
            return f"mean {_fmt(value)} (n = {_fmt(n, 6)})"
        hidden = isinstance(r.estimate, str)
        rows.append({
            "study": r.study, "outcome": published_label(r.outcome, spec),
            "measure": MEASURE_NAMES[r.measure],
            "self-help arm": arm(r.treated_value, r.n_treated, r.events_treated),
            "comparison arm": arm(r.control_value, r.n_control, r.events_control),
            "effect (95% CI)": "*" if hidden else
            f"{_fmt(r.estimate)} ({_fmt(r.ci_low)} to {_fmt(r.ci_high)})",
            "p": _p(r.p_value), "assumed": r.assumed})
    return pd.DataFrame(rows)


def readable_pooled(table: pd.DataFrame, spec: AnalysisSpec | None = None) -> pd.DataFrame:
    """:meth:`Synthesis.pooled_table` with readable numbers (outcomes named by ``spec``)."""
    t = table.copy()
    t["outcome"] = [published_label(o, spec) for o in t["outcome"]]
    t["measure"] = t["measure"].map(MEASURE_NAMES)
    t["effect (95% CI)"] = [f"{_fmt(e)} ({_fmt(lo)} to {_fmt(hi)})"
                            for e, lo, hi in zip(t["estimate"], t["ci_low"], t["ci_high"])]
    t["p"] = [_p(v) for v in t["p_value"]]
    t["tau²"] = [_fmt(v) for v in t["tau2"]]
    t["I² (%)"] = ["" if pd.isna(v) else f"{v:.0f}" for v in t["i2"]]
    t["Q (df, p)"] = ["" if pd.isna(q) else f"{q:.2f} ({int(df)}, {_p(qp)})"
                      for q, df, qp in zip(t["q"], t["q_df"], t["q_p"])]
    return t[["outcome", "measure", "method", "k", "effect (95% CI)", "p", "tau²", "I² (%)",
              "Q (df, p)"]]


def readable_projection(proj: Projection) -> pd.DataFrame:
    """:attr:`Projection.table` with readable numbers."""
    def amount(v, unit):
        sign = "-" if v < 0 else ""
        return f"{sign}${abs(v):,.0f}" if unit == "dollars" else f"{v:,.0f}"
    t = proj.table
    return pd.DataFrame({
        "outcome": t["label"],
        "baseline per participant per year": [
            amount(b, u) if u == "dollars" else f"{b:,.4g} {u}"
            for b, u in zip(t["baseline_per_member_year"], t["unit"])],
        "ratio applied (95% CI)": [f"{r:.2f} ({lo:.2f} to {hi:.2f})" for r, lo, hi in
                                   zip(t["ratio"], t["ratio_ci_low"], t["ratio_ci_high"])],
        "studies": t["k"],
        "change per year, whole plan (95% interval)": [
            f"{amount(e, u)} ({amount(lo, u)} to {amount(hi, u)})" for e, lo, hi, u in
            zip(t["expected_change"], t["ci_low"], t["ci_high"], t["unit"])],
        "per 1,000 members": [amount(v, u) if u == "dollars" else f"{v:,.1f}"
                              for v, u in zip(t["per_1000_members"], t["unit"])]})


def readable_proportions(table: pd.DataFrame) -> pd.DataFrame:
    """Survey proportions as 'x of n, percent (interval)'. Pass the published table."""
    rows = []
    for r in table.itertuples(index=False):
        hidden = isinstance(r.proportion, str)
        rows.append({"item": r.label, "group": r.group,
                     "count": "*" if isinstance(r.x, str) else f"{r.x} of {r.n}",
                     "percent (95% CI)": "*" if hidden else
                     f"{100 * r.proportion:.0f}% ({100 * r.ci_low:.0f}% to {100 * r.ci_high:.0f}%)",
                     "assumed": r.assumed})
    return pd.DataFrame(rows)


def readable_comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """Comparisons as 'difference in percentage points (interval), test, p'."""
    rows = []
    for r in table.itertuples(index=False):
        hidden = isinstance(r.difference, str)
        rows.append({"comparison": r.label,
                     "first": r.first + ("" if hidden else f": {100 * r.p1:.0f}%"),
                     "second": r.second + ("" if hidden else f": {100 * r.p2:.0f}%"),
                     "difference, points (95% CI)": "*" if hidden else
                     f"{100 * r.difference:.0f} ({100 * r.ci_low:.0f} to {100 * r.ci_high:.0f})",
                     "test": r.test, "p": _p(r.p_value)})
    return pd.DataFrame(rows)


def survey_findings(proportions: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    """Plain sentences for the published survey tables (suppressed rows say so)."""
    out = []
    for r in proportions.itertuples(index=False):
        if isinstance(r.proportion, str):
            out.append(f"{r.label}: not shown (a count below the small-cell limit).")
            continue
        out.append(f"{r.label}: {r.x} of {r.n}, {100 * r.proportion:.0f}% (95% interval "
                   f"{100 * r.ci_low:.0f}% to {100 * r.ci_high:.0f}%).")
    for r in comparisons.itertuples(index=False):
        if isinstance(r.difference, str):
            out.append(f"{r.label}: not shown (a count below the small-cell limit).")
            continue
        clear = r.ci_low > 0 or r.ci_high < 0
        out.append(f"{r.label}: {100 * r.p1:.0f}% vs {100 * r.p2:.0f}%, a difference of "
                   f"{100 * r.difference:.0f} percentage points (95% interval "
                   f"{100 * r.ci_low:.0f} to {100 * r.ci_high:.0f}; {r.test} "
                   f"p {_p(r.p_value) if r.p_value < 0.001 else '= ' + _p(r.p_value)}); "
                   + ("chance alone is an unlikely explanation." if clear else
                      "the groups may not differ at all."))
    return out


def assumptions(summary: SummaryParams, spec: AnalysisSpec | None = None) -> list[str]:
    """Everything the params had to assume because a source does not publish it
    (outcomes named by ``spec``)."""
    out = []
    for s in summary.studies:
        name = published_label(s.outcome, spec)
        if s.sd_assumed:
            out.append(f"{s.name}, {name}: SDs are not published; the "
                       f"values used ({s.treated.sd:g} and {s.control.sd:g}) are assumptions. "
                       "The sensitivity table shows how much this matters.")
        if s.reported is not None and s.reported.assumed:
            out.append(f"{s.name}, {name}: {s.reported.assumed}.")
        arms = [a for a in (s.treated, s.control) if a is not None]
        if any(a.events is None and a.percent is not None for a in arms):
            out.append(f"{s.name}, {name}: counts worked out from the "
                       "published percentages and group sizes (rounded).")
    for p in summary.proportions:
        if p.x is None:
            out.append(f"{p.label}: count worked out as {p.percent:g}% of {p.n} "
                       f"= {p.count} (rounded).")
        if p.assumed:
            out.append(f"{p.label}: {p.assumed}.")
    return out


def as_markdown(lines: list[str], empty: str = "") -> str:
    """A bulleted Markdown list (or ``empty`` when there is nothing to list)."""
    return "\n".join(f"- {line}" for line in lines) if lines else empty


def pooling_note(synthesis: Synthesis) -> str:
    """Which outcomes were pooled and which rest on one study, in words (Markdown)."""
    pooled = [o.name for o in synthesis.outcomes.values() if o.pooled]
    single = [o.name for o in synthesis.outcomes.values() if not o.pooled]
    parts = []
    if pooled:
        parts.append(f"**Pooled** ({synthesis.method} random effects as the headline, "
                     "DerSimonian-Laird as a check, fixed effect shown): "
                     + ", ".join(pooled) + ".")
    if single:
        parts.append("**One study only, so not pooled** (its own result is carried forward, "
                     "and no between-study variation can be estimated): " + ", ".join(single) + ".")
    return "\n\n".join(parts)


def forest_figure(synthesis: Synthesis):
    """Forest plots of every pooled outcome in one figure, or None when nothing is pooled."""
    pooled = [o for o in synthesis.outcomes.values() if o.pooled]
    if not pooled:
        return None
    heights = [0.35 * o.k + 1.6 for o in pooled]
    fig, axes = plt.subplots(len(pooled), 1, figsize=(7, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, o in zip(axes[:, 0], pooled):
        o.forest(ax=ax)
    fig.tight_layout()
    return fig


def project_plan(params: Params, synthesis: Synthesis) -> Projection | None:
    """:func:`project` with the params' projection and seed, or None without a projection."""
    summary = check_summary_mode(params)
    if summary.projection is None:
        return None
    return project(synthesis, summary.projection, params.seed)


def projected_budget(projection: Projection | None, econ):
    """Budget impact, year by year, of a program that brings the projected effect on cost
    to the target plan (:func:`evalkit.analysis.valuation.budget_for_plan`), or None when no cost
    outcome is projected.

    The plan is the projection's (members, and the share expected to take part as the
    share referred each year, all of whom take part); the saving per participant is
    minus the projected change in cost per participant, its low and high scenarios the
    change at the ends of the ratio's interval; the program's costs (coordination,
    facilitation, materials per referred member, start-up in year 1) come from ``econ``.
    Years and discounting follow ``econ.budget`` (undiscounted by default).
    """
    if projection is None or not projection.has_cost:
        return None
    row = projection.table[projection.table["unit"] == "dollars"].iloc[0]
    b = row["baseline_per_member_year"]
    savings = {"estimate": -b * (row["ratio"] - 1), "ci_low": -b * (row["ratio_ci_high"] - 1),
               "ci_high": -b * (row["ratio_ci_low"] - 1)}
    budget = econ.budget.model_copy(update={
        "plan_name": projection.plan, "plan_members": projection.members, "prevalence": 1.0,
        "referral_rate_by_year": [projection.uptake], "uptake_by_year": [1.0],
        "low": econ.budget.low.model_copy(update={"prevalence": None,
                                                   "referral_rate_by_year": None,
                                                   "uptake_by_year": None}),
        "high": econ.budget.high.model_copy(update={"prevalence": None,
                                                     "referral_rate_by_year": None,
                                                     "uptake_by_year": None})})
    return budget_for_plan(budget, econ, savings)


def assumptions_table(summary: SummaryParams, spec: AnalysisSpec | None = None) -> pd.DataFrame:
    """:func:`assumptions` as a one-column table (for results.json)."""
    return pd.DataFrame({"assumption": assumptions(summary, spec)}, dtype=object)
