"""The ``summary`` section: published figures (summary mode): studies, their arms or
reported effects, proportions, comparisons and the projection onto a plan."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import _Strict, _WithUptake, each



#: Effect measures of summary mode (as metafor::escalc names them); ROM = ratio of means.
Measure = Literal["RR", "OR", "RD", "MD", "SMD", "IRR", "ROM"]
#: Measures analysed on the log scale (their published value is a ratio).
RATIO_MEASURES = ("RR", "OR", "IRR", "ROM")
#: What each measure needs from both arms (``events`` may be given as ``percent``).
MEASURE_NEEDS = {"RR": ("n", "events"), "OR": ("n", "events"), "RD": ("n", "events"),
                 "MD": ("n", "mean", "sd"), "SMD": ("n", "mean", "sd"),
                 "ROM": ("n", "mean", "sd"), "IRR": ("events", "person_time")}
#: Measures computed from each arm's mean and SD (the only ones an assumed SD can enter).
SD_MEASURES = tuple(m for m, needs in MEASURE_NEEDS.items() if "sd" in needs)


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


class ArmFigures(_Strict):
    """One arm's published figures; give the ones the study's measure needs."""

    n: int | None = Field(None, gt=0, description="people in the arm")
    mean: float | None = Field(None, description="mean per person (MD, SMD, ROM): visits "
                               "per patient, dollars per patient...")
    sd: float | None = Field(None, ge=0, description="standard deviation per person (MD, "
                             "SMD, ROM); when the source does not publish it, give an assumed "
                             "value and set the study's sd_assumed")
    events: float | None = Field(None, ge=0, description="people with the outcome (RR, OR, "
                                 "RD) or events counted (IRR)")
    percent: float | None = Field(None, ge=0, le=100, description="RR, OR, RD: the published "
                                  "percentage with the outcome when the count is not "
                                  "published; events = percent x n / 100, rounded")
    person_time: float | None = Field(None, gt=0, description="person-years at risk (IRR)")

    @model_validator(mode="after")
    def _one_count(self):
        if self.events is not None and self.percent is not None:
            raise ValueError("give events or percent, not both")
        if self.events is not None and self.n is not None and self.events > self.n and \
                self.person_time is None:
            raise ValueError(f"events ({self.events:g}) exceed n ({self.n}): for counts of "
                             "visits use person_time and measure IRR")
        return self

    @property
    def count(self) -> float | None:
        """Events, or the published percentage turned into a whole count."""
        if self.events is not None:
            return self.events
        if self.percent is not None and self.n is not None:
            return float(_round_half_up(self.percent * self.n / 100))
        return None


class ReportedEffect(_Strict):
    """An effect the source publishes already computed (no per-arm figures)."""

    estimate: float = Field(description="the published effect on its natural scale: a ratio "
                            "for RR, OR, IRR, ROM (e.g. 0.82 for an 18% drop), a difference "
                            "for RD, MD, SMD")
    ci_low: float | None = Field(None, description="lower limit of its 95% interval")
    ci_high: float | None = Field(None, description="upper limit of its 95% interval")
    std_error: float | None = Field(None, gt=0, description="instead of an interval: its "
                                    "standard error (of the log for ratio measures)")
    assumed: str | None = Field(None, description="what had to be assumed because the source "
                                "does not publish it (e.g. the interval); shown with the result")

    @model_validator(mode="after")
    def _spread(self):
        has_ci = self.ci_low is not None or self.ci_high is not None
        if has_ci == (self.std_error is not None):
            raise ValueError("give either ci_low and ci_high or std_error (the effect's "
                             "uncertainty; if the source gives none, assume one and say so "
                             "in `assumed`)")
        if has_ci:
            if self.ci_low is None or self.ci_high is None:
                raise ValueError("give both ci_low and ci_high")
            if not self.ci_low < self.estimate < self.ci_high:
                raise ValueError(f"need ci_low < estimate < ci_high, got {self.ci_low:g}, "
                                 f"{self.estimate:g}, {self.ci_high:g}")
        return self


class StudyFigures(_Strict):
    """One study's published figures for one outcome (self-help arm vs comparison)."""

    name: str = Field(min_length=1, description="short name shown in tables and plots")
    citation: str = Field("", description="where the figures come from")
    outcome: str = Field(min_length=1, description="what was measured: er_visits, "
                         "outpatient_mh_visits, inpatient_days, total_cost or your own name; "
                         "studies with the same outcome are pooled")
    measure: Measure = Field(description="effect to compute: RR, OR, RD (people with the "
                             "outcome), MD, SMD, ROM (ratio of means) from means and SDs, IRR "
                             "from events and person-time")
    treated: ArmFigures | None = Field(None, description="the self-help arm's figures")
    control: ArmFigures | None = Field(None, description="the comparison arm's figures")
    reported: ReportedEffect | None = Field(None, description="the effect as published, when "
                                            "per-arm figures are not available")
    sd_assumed: bool = Field(False, description="the SDs are not published and the values "
                             "given are assumptions (MD, SMD, ROM from per-arm figures only: "
                             "no other effect uses an SD); the synthesis workbook shows how the "
                             "result moves when they are scaled (summary.sd_sensitivity)")

    @model_validator(mode="after")
    def _figures(self):
        who = f"study '{self.name}' ({self.measure})"
        if self.reported is not None:
            if self.treated is not None or self.control is not None:
                raise ValueError(f"{who}: give per-arm figures (treated, control) or the "
                                 "reported effect, not both")
            r = self.reported
            if self.measure in RATIO_MEASURES and (r.estimate <= 0 or (r.ci_low or 1) <= 0):
                raise ValueError(f"{who}: a {self.measure} and its interval must be > 0")
            return self._no_sd_assumed_unless_used(who, "a reported effect")
        missing = [a for a in ("treated", "control") if getattr(self, a) is None]
        if missing:
            raise ValueError(f"{who}: the {' and '.join(missing)} arm is missing; give both "
                             "arms' figures or a reported effect")
        needs = MEASURE_NEEDS[self.measure]
        for arm in ("treated", "control"):
            fig = getattr(self, arm)
            lacking = [k for k in needs
                       if (fig.count if k == "events" else getattr(fig, k)) is None]
            if lacking:
                alt = " (or percent)" if "events" in lacking and self.measure != "IRR" else ""
                raise ValueError(f"{who}: {arm} lacks {', '.join(lacking)}{alt}; "
                                 f"{self.measure} needs {', '.join(needs)} for both arms")
            if self.measure in ("MD", "SMD", "ROM") and fig.n < 2:
                raise ValueError(f"{who}: {arm}.n must be at least 2 for a mean and SD")
            if self.measure == "ROM" and fig.mean <= 0:
                raise ValueError(f"{who}: a ratio of means needs positive means "
                                 f"({arm}.mean = {fig.mean:g})")
        return self._no_sd_assumed_unless_used(who, f"{self.measure} ({', '.join(needs)})")

    def _no_sd_assumed_unless_used(self, who: str, uses: str):
        """An assumed SD only enters MD, SMD and ROM from per-arm figures: elsewhere
        ``sd_assumed`` would claim an assumption the result does not rest on."""
        if self.sd_assumed and (self.measure not in SD_MEASURES or self.reported is not None):
            raise ValueError(f"{who}: sd_assumed applies only to {', '.join(SD_MEASURES)} "
                             f"computed from each arm's mean and SD, and {uses} uses no SD; "
                             "remove sd_assumed (for a reported effect, say what was assumed "
                             "in reported.assumed)")
        return self


class ProportionItem(_Strict):
    """A survey proportion: x of n people said or did something."""

    label: str = Field(min_length=1, description="what the proportion is, in words")
    x: int | None = Field(None, ge=0, description="people with the characteristic")
    percent: float | None = Field(None, ge=0, le=100, description="the published percentage "
                                  "when x is not published: x = percent x n / 100, rounded")
    n: int = Field(gt=0, description="people asked")
    group: str | None = Field(None, description="group the item belongs to (shown in tables)")
    assumed: str | None = Field(None, description="what was assumed to get x or n (shown "
                                "next to the figure)")

    @model_validator(mode="after")
    def _count(self):
        if (self.x is None) == (self.percent is None):
            raise ValueError(f"proportion '{self.label}': give x (a count) or percent, one of them")
        if self.x is not None and self.x > self.n:
            raise ValueError(f"proportion '{self.label}': x ({self.x}) is larger than n ({self.n})")
        return self

    @property
    def count(self) -> int:
        return self.x if self.x is not None else _round_half_up(self.percent * self.n / 100)


class ComparisonItem(_Strict):
    """Two proportions compared: first minus second."""

    label: str = Field(min_length=1, description="what is compared, in words")
    first: str = Field(description="label of an item of summary.proportions")
    second: str = Field(description="label of another item of summary.proportions")


class ProjectionOutcome(_Strict):
    outcome: str = Field(description="an outcome of summary.studies whose (pooled) ratio is "
                         "applied")
    label: str | None = Field(None, description="name shown (default: the outcome's)")
    baseline_per_member_year: float = Field(gt=0, description="visits, days or dollars per "
                                            "participating member per year in the target plan "
                                            "without the program")
    unit: Literal["visits", "days", "dollars"] = Field("visits", description="unit of the baseline")


class ProjectionParams(_WithUptake):
    """What the published effects would mean for a target plan."""

    plan: str = Field("target plan", description="name of the plan, shown in titles")
    members: int = Field(gt=0, description="members of the target plan")
    uptake: float = Field(gt=0, le=1, description="share of the plan's members expected to "
                          "take part in self-help groups after referral")
    uptake_sd: float = Field(0.0, ge=0, description="uncertainty of uptake (beta SD; 0: fixed)")
    outcomes: list[ProjectionOutcome] = Field(min_length=1, description="outcomes to project "
                                              "with the plan's baseline rates")
    draws: int = Field(10_000, ge=100, le=1_000_000, description="Monte Carlo draws")


class SummaryParams(_Strict):
    """Summary mode: published figures only (no member data)."""

    studies: list[StudyFigures] = Field(default_factory=list, description="published per-arm "
                                        "figures by study (synthesis workbook)")
    proportions: list[ProportionItem] = Field(default_factory=list, description="survey "
                                              "proportions (proportions workbook)")
    comparisons: list[ComparisonItem] = Field(default_factory=list, description="pairs of "
                                              "proportions to compare")
    projection: ProjectionParams | None = Field(None, description="project the effects onto "
                                                "a target plan")
    method: Literal["REML", "DL", "FE"] = Field("REML", description="pooling: random effects "
                                                "by REML or DerSimonian-Laird, or fixed effect")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="1 - confidence level")
    ci_method: Literal["wilson", "wilson_cc", "clopper_pearson", "jeffreys", "agresti_coull",
                       "wald"] = Field("wilson", description="interval for survey proportions")
    yates: bool = Field(False, description="Yates continuity correction in the chi-square test")
    sd_sensitivity: Annotated[list[float], each(lambda f: f > 0, "SD factors must be > 0")] \
        = Field([0.5, 1.0, 1.5, 2.0], min_length=1, description=(
        "factors applied to assumed SDs to show how the result depends on them"))

    @model_validator(mode="after")
    def _links(self):
        keys = [(s.name, s.outcome) for s in self.studies]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"studies: one entry per study and outcome, repeated: {dup}")
        by_outcome: dict[str, set] = {}
        for s in self.studies:
            by_outcome.setdefault(s.outcome, set()).add(s.measure)
        mixed = {o: sorted(m) for o, m in by_outcome.items() if len(m) > 1}
        if mixed:
            raise ValueError(f"studies of one outcome must use one measure to be pooled: {mixed}")
        labels = [p.label for p in self.proportions]
        dup = sorted({n for n in labels if labels.count(n) > 1})
        if dup:
            raise ValueError(f"proportions: labels must be unique, repeated: {dup}")
        for c in self.comparisons:
            bad = [g for g in (c.first, c.second) if g not in labels]
            if bad:
                raise ValueError(f"comparison '{c.label}': {bad} not among the proportions' "
                                 f"labels ({', '.join(labels) or 'none given'})")
            if c.first == c.second:
                raise ValueError(f"comparison '{c.label}': first and second are the same item")
        if self.projection is not None:
            for o in self.projection.outcomes:
                if o.outcome not in by_outcome:
                    raise ValueError(f"projection outcome '{o.outcome}' has no study; outcomes "
                                     f"of summary.studies: {', '.join(by_outcome) or 'none'}")
                measure = next(iter(by_outcome[o.outcome]))
                if measure not in ("RR", "IRR", "ROM"):
                    raise ValueError(f"projection outcome '{o.outcome}': its studies use "
                                     f"{measure}; projecting onto a plan's baseline needs a "
                                     "ratio of rates or means (RR, IRR or ROM)")
        return self
