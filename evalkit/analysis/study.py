"""Read a prepared run (:func:`evalkit.prepare.prepare`) from the workbooks.

:class:`Study` opens the run's ``analysis.duckdb`` read-only; each workbook calls its
methods and shows the result.
"""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import pandas as pd

from .. import describe
from .._version import __version__
from ..data.contract import CATEGORIES
from ..data.load import LoadReport, _q, load_report
from ..data.notes import public_notes
from ..data.source import describe_source
from ..errors import DataDroppedWarning, DataValidationError
from ..examples import run_params
from ..params import Params, validate
from ..prepare import (
    DB_NAME,
    _analysis_frame,
    _connect,
    prepare_run_folder,
    resolve_spec,
)
from ..privacy import suppress, suppress_shares
from ..results import Recorder
from ..utilization import VISIT_COLUMNS
from . import design as _design
from . import spec as _spec
from . import time_series
from .comparisons import compare_groups, survival_by_arm
from .design import (
    condition_counts,
    effects_from_table,
    load_design,
    nc_column,
    save_design,
)
from .outcomes import (
    adjusted_count_effects,
    cost_effect,
    prepost_effects,
    time_to_event_effects,
    true_ratios,
)
from .planning import plan_study
from .readmission import readmission_effects
from .spec import AnalysisSpec, with_treatment
from .valuation import EffectWords, er_effect, joint_bootstrap, value_program


def _spell_end_sql(relation: str, anchor: str) -> str:
    """SQL: for each member of ``relation``, the day after the end of the coverage spell
    that holds the date ``relation.anchor`` (``covered_until``; no row if none does)."""
    return f"""SELECT a.member_id, max(s.end_date) + 1 AS covered_until
              FROM {relation} a JOIN enrollment s ON s.member_id = a.member_id
               AND a.{anchor} BETWEEN s.start_date AND s.end_date
              GROUP BY 1"""


def prepare_study(params: Params, out_dir: str | Path, progress: bool = False) -> Study:
    """Prepare the analysis database in ``out_dir`` and open it, without running any
    workbook: :func:`prepare`, then ``params.json`` written as the runner writes it
    (secrets redacted), then :class:`Study` on it. For exploring a plan in a notebook,
    tests and benchmarks."""
    return Study(prepare_run_folder(params, out_dir, progress=progress))


class Study:
    """Read access to a prepared run, for the workbooks.

    Parameters
    ----------
    params_path : the validated ``params.json`` the runner wrote into the output folder;
        or a params YAML file, or None for the built-in example of ``workbook``, either
        prepared first into a cache folder (:func:`evalkit.examples.run_params`), so that
        a workbook opened on its own runs as it is.
    workbook : the workbook opening the study (chooses the built-in example).
    """

    def __init__(self, params_path: str | Path | None = None, workbook: str = "data_quality"):
        self.params_path = run_params(params_path, workbook)
        self.output_dir = self.params_path.parent
        self.params = validate(json.loads(self.params_path.read_text()))
        db = self.output_dir / "work" / DB_NAME
        if not db.exists():
            raise FileNotFoundError(f"{db} is missing: run the analysis with `evalkit run`, "
                                    "which prepares it before the workbooks start")
        self.con = _connect(db, self.params, read_only=True)

    def recorder(self, workbook: str):
        """A :class:`~evalkit.results.Recorder` for this run's ``workbook``."""
        return Recorder(self.output_dir, workbook)

    def describe_run(self) -> pd.DataFrame:
        """The run's provenance, as a small two-column table."""
        p = self.params
        fp = self.con.execute("SELECT fingerprint FROM run_info").fetchall()[0][0]
        rows = [("title", p.title), ("mode", p.mode),
                ("data source", describe_source(p).text),
                ("scenario", p.data.scenario if p.data.source == "synthetic" and not
                 (p.mode == "person" and p.data.person.path) and p.mode != "summary" else "-"),
                ("seed", p.seed), ("params hash", p.digest()[:16]),
                ("data fingerprint", fp[:16]), ("evalkit version", __version__)]
        if p.mode == "claims":
            rows += [("baseline window", f"{p.windows.baseline_days} days before the index date"),
                     ("follow-up window", f"{p.windows.followup_days} days from the index date")]
        return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})

    def sql(self, query: str) -> pd.DataFrame:
        return self.con.execute(query).df()

    @property
    def mode(self) -> str:
        return self.params.mode

    def _member_level(self, what: str) -> None:
        """Raise a clear error when member-level data are asked of a summary-mode run."""
        if self.mode == "summary":
            raise DataValidationError(
                f"Study.{what} needs member-level data, but this run is in summary mode "
                "(published figures only: there are no members). Summary-mode workbooks "
                "read the params' summary section through evalkit.analysis.summary (synthesize, "
                "project, survey_proportions); use mode claims or person for member data.")

    @property
    def truth(self) -> dict | None:
        raw = self.con.execute("SELECT truth FROM run_info").fetchall()[0][0]
        return json.loads(raw) if raw else None

    def load_report(self) -> LoadReport:
        return load_report(self.con)

    def set_aside(self) -> pd.DataFrame:
        """What the claim-line checks set aside or noted (:mod:`evalkit.data.notes`):
        persons with claims and no accepted coverage spell, visits and dollars per unmapped
        category code, inpatient stays without or before their discharge date, kept
        visits with an unused bad end date. In a public run (``report.public``) a row of
        fewer than ``report.min_cell`` persons has its persons, lines, visits, nights and
        dollars hidden, and small unmapped codes are merged into one row
        (:func:`evalkit.data.notes.public_notes`). Empty in person and summary mode."""
        notes = self.load_report().notes
        if not self.params.report.public or notes.empty:
            return notes
        return public_notes(notes, self.params.report.min_cell)

    def mental_health_concepts(self) -> pd.DataFrame | None:
        """OMOP sources: the condition (and provider-specialty) concepts that make an
        outpatient visit a mental-health visit, as found in the CDM (the SNOMED roots
        and their descendants), with the visits each marks; None for other sources."""
        if not self.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                                "'omop_mh_concepts'").fetchall()[0][0]:
            return None
        return self.sql("SELECT * FROM omop_mh_concepts")

    def attrition(self) -> pd.DataFrame:
        """Members kept at each cohort step, by arm, and excluded at it. In a public run
        (``report.public``) the counts that would show, or give back by subtraction,
        fewer than ``report.min_cell`` members are hidden (NaN): see
        :func:`public_attrition`."""
        self._member_level("attrition")
        if self.mode == "person":
            counts = self.sql('SELECT "group", count(*) AS n FROM persons GROUP BY 1')
            n = dict(zip(counts["group"], counts["n"]))
            t = pd.DataFrame([{"step": "accepted person-level rows",
                               "self_help_members": int(n.get("self_help", 0)),
                               "control_members": int(n.get("control", 0)),
                               "total_members": int(sum(n.values())),
                               "excluded_members": 0}])
        else:
            t = self.sql("SELECT * FROM attrition")
        if not self.params.report.public:
            return t
        return public_attrition(t, self.params.report.min_cell)

    @functools.cached_property
    def spec(self) -> AnalysisSpec:
        """The run's analysis spec (``spec.json``, resolved when the run was prepared; read
        once)."""
        got = _spec.load(self.output_dir)
        if got is None:
            got = resolve_spec(self.params, self.con)
        return got

    def outcomes(self) -> list[str]:
        """The outcome columns of the data: person mode, ``data.person.outcomes``; claims
        mode, the member x window outcomes other than costs (see :meth:`cost_outcome`)."""
        self._member_level("outcomes")
        if self.mode == "person":
            return list(self.params.data.person.outcomes)
        return [o for o in _spec.CLAIMS_OUTCOMES if self.spec.kind(o) != "cost"]

    def member_windows(self, columns: list[str] | None = None) -> pd.DataFrame:
        """One row per member x period (claims mode) or per member (person mode); with
        ``columns``, only those (in claims mode; the rows and their order are the same)."""
        self._member_level("member_windows")
        if self.mode == "person":
            return self.sql("SELECT *, 'followup' AS period FROM persons")
        picked = "*" if columns is None else ", ".join(_q(c) for c in dict.fromkeys(columns))
        return self.sql(f"SELECT {picked} FROM member_windows ORDER BY member_id, period")

    def analysis_frame(self) -> pd.DataFrame:
        """One row per member: follow-up outcomes plus baseline covariates.

        Claims mode: cohort covariates (age at index, female, comorbidity and the
        members table's other columns), baseline utilization and cost (``baseline_*``),
        follow-up outcomes and member-months.
        """
        self._member_level("analysis_frame")
        return _analysis_frame(self.con, self.mode)

    def covariates(self) -> list[str]:
        """The adjustment set as terms (``age_at_index``, ``log1p(baseline_total_cost)``),
        from the spec."""
        self._member_level("covariates")
        return self.spec.terms

    def treated_frame(self) -> pd.DataFrame:
        """:meth:`analysis_frame` with a 0/1 ``treated`` column (1 = self-help arm)."""
        return with_treatment(self.analysis_frame())

    def adjusted_counts(self, **kwargs):
        """Covariate-adjusted count models per outcome (see
        :func:`evalkit.analysis.outcomes.adjusted_count_effects`)."""
        exposure = "member_months" if self.has_exposure() else None
        kwargs.setdefault("alpha", self.spec.alpha)
        return adjusted_count_effects(self.treated_frame(), self.count_outcomes(),
                                      self.covariates(), exposure=exposure, **kwargs)

    def count_outcomes(self) -> list[str]:
        """Outcomes whose kind (in the spec) is a count."""
        return [o for o in self.outcomes() if self.spec.kind(o) == "count"]

    def prepost(self, outcomes: list[str] | None = None) -> pd.DataFrame | None:
        """Difference-in-differences against each member's own baseline (claims mode only;
        person-level data have no baseline window, and this returns None)."""
        if self.mode != "claims":
            return None
        outs = outcomes or self.outcomes()
        # only the columns the models use (at 1M members the whole table is 2M rows of
        # some twenty columns, copied again by the fits' frames)
        mw = self.member_windows(["member_id", "group", "period", "member_months", *outs])
        return prepost_effects(mw, outs,
                               kinds={o: self.spec.kind(o) for o in outs}, alpha=self.spec.alpha)

    def cost_effect(self, **kwargs):
        """Two-part model of follow-up cost (see :func:`evalkit.analysis.outcomes.cost_effect`)."""
        months = self.params.windows.followup_days * 12 / 365
        kwargs.setdefault("n_boot", self.params.models.bootstrap_replicates)
        kwargs.setdefault("seed", self.params.seed)
        kwargs.setdefault("alpha", self.spec.alpha)
        kwargs.setdefault("outcome", self.cost_outcome())
        return cost_effect(self.treated_frame(), self.covariates(), months=months, **kwargs)

    def cost_outcome(self) -> str:
        """The outcome whose kind (in the spec) is a cost (the first, when several)."""
        costs = self.spec.outcomes_of("cost")
        if not costs:
            raise DataValidationError(
                "this analysis needs a cost outcome: give one outcome kind: cost in "
                "study.outcomes (claims mode: total_cost)")
        return costs[0]

    def value_program(self, cost=None, effect: bool = True, progress: bool = False):
        """Program economics from the adjusted cost difference and the params' ``econ``
        section (see :func:`evalkit.analysis.valuation.value_program`).

        With ``effect`` (default) and ER visits among the outcomes, the effectiveness
        measure is ER visits avoided per referred member per year from the adjusted count
        model (the estimate on the same design as the two-part cost model the saving comes
        from); with ``econ.joint_replicates`` > 0 both models are refitted on the same
        bootstrap resamples so the PSA draws saving and effect jointly.
        """
        cost = cost or self.cost_effect(n_boot=0)
        frame = self.treated_frame()
        referred = int((frame["treated"] == 1).sum())
        econ = self.params.econ
        eff = joint = None
        er = _spec.CLAIMS_EFFECT_OUTCOME
        if effect and er in self.count_outcomes() and self.spec.outcomes_of("cost") \
                and "member_months" in frame:      # visits per member-year need the exposure
            adj = adjusted_count_effects(frame, [er], self.covariates(),
                                         exposure="member_months")
            eff = er_effect(adj.effects, er)
            if econ.joint_replicates:
                joint = joint_bootstrap(frame, self.covariates(), adj.choices[er].chosen,
                                        cost.fit.extra.get("second", "gamma"),
                                        self.params.windows.followup_days, econ.joint_replicates,
                                        self.params.seed, progress=progress, count_outcome=er,
                                        cost_outcome=self.cost_outcome(),
                                        count_fit=adj.choices[er].fit)
        named = self.spec.outcomes[er] if eff else _spec.CLAIMS_OUTCOMES[er]
        words = EffectWords.of(named, self.spec.study.per_treated(self.params.mode))
        return value_program(cost.effects, econ, referred, self.params.windows.followup_days,
                             self.params.seed, effect=eff, joint=joint, words=words)

    def plan_study(self):
        """Study planning from the params' ``planning`` section (see
        :func:`evalkit.analysis.planning.plan_study`); in claims mode a missing baseline rate or
        dispersion is estimated from the comparison arm's baseline window."""
        pl = self.params.planning
        frame = None
        if self.mode == "claims" and (pl.baseline_rate is None or pl.dispersion is None):
            frame = self.analysis_frame()
        return plan_study(pl, frame)

    def time_to_first(self, category: str = "er") -> pd.DataFrame:
        """Days from the index date to the first visit of ``category`` in the follow-up
        window, one row per member (claims mode).

        ``event`` is 1 when such a visit happened; otherwise the member is censored at
        the end of the coverage spell that holds the index date or at the end of the
        follow-up window, whichever is first (``days``). Covariates as in
        :meth:`analysis_frame`, with the 0/1 ``treated`` column.
        """
        if self.mode != "claims":
            raise DataValidationError("time to first visit needs claims (encounter dates)")
        if category not in CATEGORIES:
            raise DataValidationError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
        times = self.sql(f"""
            WITH first AS (
              SELECT e.member_id, min(e.service_date) AS first_date
              FROM encounters e JOIN cohort c USING (member_id)
              WHERE e.category = '{category}' AND e.service_date >= c.fu_start
                AND e.service_date < c.fu_end
              GROUP BY 1),
            spell AS ({_spell_end_sql("cohort", "index_date")})
            SELECT c.member_id, c.index_date AS origin,
                   least(c.fu_end, coalesce(sp.covered_until, c.fu_end)) AS censor_date,
                   f.first_date
            FROM cohort c LEFT JOIN first f USING (member_id) LEFT JOIN spell sp USING (member_id)
            ORDER BY c.member_id""")
        return self._durations(times)

    def _durations(self, times: pd.DataFrame) -> pd.DataFrame:
        """Days from ``origin`` to ``first_date`` (the event) or, without an event before
        it, to ``censor_date`` (exclusive end of the time at risk), joined to
        :meth:`treated_frame` (members of ``times`` only, in member order).

        ``event`` is 1 when ``first_date`` falls before ``censor_date``.
        """
        event = times["first_date"].notna() & (times["first_date"] < times["censor_date"])
        end = times["first_date"].where(event, times["censor_date"])
        days = (pd.to_datetime(end.to_numpy()) - pd.to_datetime(times["origin"].to_numpy())).days
        t = pd.DataFrame({"member_id": times["member_id"].to_numpy(), "days": days.to_numpy(),
                          "event": event.astype(int).to_numpy()})
        return self.treated_frame().merge(t, on="member_id", how="inner", validate="1:1")

    def readmission_times(self) -> pd.DataFrame:
        """Days from discharge of the first inpatient stay of the follow-up window to the
        next admission (a readmission), one row per member with such a stay (claims mode).

        Rules:

        * a *stay* is the lines of one inpatient admission date, discharge = the latest
          ``end_date`` (the admission date when missing), as in
          :mod:`evalkit.utilization`; stays that overlap or touch (admission on or before
          the previous discharge day, e.g. a transfer) form one *episode*;
        * the *index stay* is the first episode admitted in the follow-up window; time 0
          is its discharge date;
        * the event is the admission of the next episode (so ``days >= 1``);
        * members are censored at the end of the coverage spell that holds the discharge
          date (or, if none does, the admission date) or at the end of the follow-up
          window, whichever comes first.

        Members whose index stay leaves no time at risk (discharged on or after the end
        of their coverage or of the window) are left out with a
        :class:`~evalkit.errors.DataDroppedWarning`; their number is in
        ``frame.attrs["no_time_at_risk"]``. Columns as :meth:`time_to_first`
        (``days``, ``event``, covariates, ``treated``).
        """

        if self.mode != "claims":
            raise DataValidationError("time to readmission needs claims (admission and "
                                      "discharge dates)")
        times = self.sql(f"""
            WITH stays AS (
              SELECT e.member_id, e.service_date AS admit,
                     max(coalesce(e.end_date, e.service_date)) AS discharge
              FROM encounters e JOIN cohort c USING (member_id)
              WHERE e.category = 'inpatient' AND e.service_date >= c.fu_start
                AND e.service_date < c.fu_end
              GROUP BY 1, 2),
            ordered AS (
              SELECT *, max(discharge) OVER (PARTITION BY member_id ORDER BY admit
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
              FROM stays),
            numbered AS (
              SELECT *, sum(CASE WHEN prev_end IS NULL OR admit > prev_end THEN 1 ELSE 0 END)
                        OVER (PARTITION BY member_id ORDER BY admit ROWS UNBOUNDED PRECEDING)
                        AS episode
              FROM ordered),
            episodes AS (
              SELECT member_id, episode, min(admit) AS admit, max(discharge) AS discharge
              FROM numbered GROUP BY 1, 2),
            idx AS (SELECT member_id, admit, discharge FROM episodes WHERE episode = 1),
            nxt AS (SELECT member_id, admit AS first_date FROM episodes WHERE episode = 2),
            at_discharge AS ({_spell_end_sql("idx", "discharge")}),
            at_admit AS ({_spell_end_sql("idx", "admit")})
            SELECT i.member_id, i.discharge AS origin, n.first_date,
                   least(c.fu_end, coalesce(d.covered_until, a.covered_until, c.fu_end))
                     AS censor_date
            FROM idx i JOIN cohort c USING (member_id)
            LEFT JOIN nxt n USING (member_id) LEFT JOIN at_discharge d USING (member_id)
            LEFT JOIN at_admit a USING (member_id)
            ORDER BY i.member_id""")
        at_risk = times["censor_date"] > times["origin"]
        dropped = int((~at_risk).sum())
        if dropped:
            warnings.warn(f"time to readmission: {dropped} member(s) left out: their first "
                          "stay in the follow-up window ended on or after the end of their "
                          "coverage or of the window, leaving no time at risk.",
                          DataDroppedWarning, stacklevel=2)
        out = self._durations(times[at_risk].reset_index(drop=True))
        out.attrs["no_time_at_risk"] = dropped
        return out

    def time_to_readmission(self, times=(30, 90), **kwargs):
        """Time from discharge of the first follow-up stay to readmission, by arm:
        Kaplan-Meier, 30- and 90-day readmission probabilities, log-rank and an adjusted
        Cox model (see :meth:`readmission_times` and
        :func:`evalkit.analysis.readmission.readmission_effects`). When too few members have an
        index stay or a readmission, the result says so and holds no estimates."""
        kwargs.setdefault("min_cell", self.params.report.min_cell)
        kwargs.setdefault("alpha", self.spec.alpha)
        return readmission_effects(self.readmission_times(), self.covariates(), times=times,
                                   **kwargs)

    def time_to_event(self, category: str = "er", **kwargs):
        """Time to the first ``category`` visit after the index date, by arm (see
        :func:`evalkit.analysis.outcomes.time_to_event_effects`)."""
        frame = self.time_to_first(category)
        kwargs.setdefault("alpha", self.spec.alpha)
        return time_to_event_effects(frame, self.covariates(), f"time_to_first_{category}", **kwargs)

    def monthly_rates(self, category: str = "er") -> pd.DataFrame:
        """Visits of ``category`` per 1,000 member-months by arm and month from the index
        date, over the baseline and follow-up windows (claims mode; see
        :func:`evalkit.analysis.time_series.monthly_rates`).

        Months are counted from each member's index date rather than by calendar month,
        because the interruption is the index date: with staggered index dates a calendar
        month would mix time before and after it. In the ``healthwise_er`` scenario every
        member's index date is the handbook's distribution date (1 January), so these
        months are also calendar months and the winter ER peak can be modelled.
        """
        if self.mode != "claims":
            raise DataValidationError("a monthly series needs claims (encounter dates); "
                                      f"this run's mode is {self.mode!r}")
        return time_series.monthly_rates(self.con, category)

    def interrupted_time_series(self, category: str = "er", horizon: int | None = None,
                                family: str = "poisson", seasonal: bool | None = None, **kwargs):
        """Interrupted time series of the monthly ``category`` rate, with the comparison arm
        as control and without (see :func:`evalkit.analysis.time_series.fit_its`).

        ``seasonal=None`` fits month-of-year terms only when every member shares one
        index date (:func:`evalkit.analysis.time_series.seasonal_default`); months with fewer than
        ``report.min_cell`` members are left out.
        """
        monthly = self.monthly_rates(category)
        index_dates = self.sql("SELECT DISTINCT index_date FROM cohort")["index_date"]
        if seasonal is None:
            seasonal = time_series.seasonal_default(index_dates)
        n = dict(self.con.execute('SELECT "group", count(*) FROM cohort GROUP BY 1').fetchall())
        kwargs.setdefault("alpha", self.spec.alpha)
        kwargs.setdefault("min_cell", self.params.report.min_cell)
        return time_series.fit_its(monthly, VISIT_COLUMNS[category], horizon=horizon,
                                   seasonal=seasonal, family=family, n_members=n, **kwargs)

    def survival_by_arm(self, tau: float | None = None, alpha: float | None = None):
        """Survival by arm from person-level ``duration`` and ``event`` (person mode):
        Kaplan-Meier, median and restricted mean survival, log-rank, Cox (see
        :func:`evalkit.analysis.comparisons.survival_by_arm`)."""
        p = self._person_roles("duration", "treatment")
        labels = {"self_help": str(p.treated_value).replace("_", " ")}
        return survival_by_arm(self.treated_frame(), p.duration, p.event, self.covariates(),
                               unit=p.duration_unit, labels=labels, tau=tau,
                               alpha=self.spec.alpha if alpha is None else alpha)

    def group_comparison(self, alpha: float | None = None):
        """The k groups of ``data.person.groups`` compared on the outcomes and, with
        ``duration``/``event``, on a lifetime (see :func:`evalkit.analysis.comparisons.compare_groups`);
        small-cell suppression counts the people of ``data.person.people``."""
        p = self._person_roles("groups")
        return compare_groups(self.analysis_frame(), p.groups, list(p.outcomes), p.duration,
                              p.event, people=p.people, min_cell=self.params.report.min_cell,
                              unit=p.duration_unit,
                              alpha=self.spec.alpha if alpha is None else alpha)

    def _person_roles(self, *roles: str):
        p = self.params.data.person
        if self.mode != "person" or p is None:
            raise DataValidationError("this analysis reads person-level data (mode: person)")
        lacking = [r for r in roles if getattr(p, r) is None]
        if lacking:
            raise DataValidationError(f"this analysis needs data.person.{', data.person.'.join(lacking)}")
        return p

    def true_effects(self, outcomes: list[str] | None = None) -> dict:
        """The true ratios of a synthetic plan (empty for real data)."""
        return true_ratios(self.truth, outcomes or self.outcomes())

    def table1(self) -> pd.DataFrame:
        """Table 1 (:func:`evalkit.describe.table1`). In a public run a share of a yes/no
        characteristic that stands for fewer than ``report.min_cell`` people (with or
        without it) is hidden (NaN), with its standardized difference."""
        t = describe.table1(self.analysis_frame(), "group", list(self.spec.described))
        if not self.params.report.public:
            return t
        size = t[t["kind"] == "count"]
        return suppress_shares(t, {c: size[c].iloc[0] for c in ("mean_treated", "mean_control")},
                               self.params.report.min_cell, share_rows=t["kind"] == "binary",
                               derived=["smd"])

    def rates(self, per_period: bool = True):
        frame = self.member_windows()
        if self.mode == "person" and self.params.data.person.exposure is None:
            frame = frame.assign(member_months=1.0)
        return describe.rates(frame, self.outcomes(), "group", "member_months",
                              by="period" if per_period else None)

    # ---------------------------------------------------------------- cohort design
    @property
    def work_dir(self) -> Path:
        """The run's private ``work`` folder (member-level files; never published)."""
        return self.output_dir / "work"

    def has_exposure(self) -> bool:
        """Whether the data have member-months (claims, or a person-level exposure column)."""
        self._member_level("has_exposure")
        return self.mode == "claims" or bool(self.params.data.person.exposure)

    def design_outcomes(self) -> dict[str, str]:
        """Outcomes the cohort design is applied to, with their kinds from the spec: in
        claims mode the counts and the cost."""
        outs = self.outcomes() + (self.spec.outcomes_of("cost") if self.mode == "claims" else [])
        return {o: self.spec.kind(o) for o in outs}

    def cohort_design(self):
        """Fit the design of the params' ``design`` section on the analysis frame (see
        :func:`evalkit.analysis.design.fit_design`)."""
        frame, spec = _design.design_frame(self.treated_frame(), self.params.design,
                                           self.covariates())
        return _design.fit_design(frame, spec)

    def negative_control_outcomes(self) -> pd.DataFrame:
        """Negative-control outcome columns, one row per member (member_id first).

        Claims: follow-up visits for each condition code of
        ``design.negative_controls.codes`` (default: the conditions of a synthetic plan),
        plus the ready-made member x window columns of ``...outcomes``; person mode: the
        ``...outcomes`` columns of the person file. Only member_id when none are
        configured.
        """
        self._member_level("negative_control_outcomes")
        nc = self.params.design.negative_controls
        if self.mode == "person":
            sel = ", ".join(["member_id", *[f'"{c}"' for c in nc.outcomes]])
            return self.sql(f"SELECT {sel} FROM persons ORDER BY member_id")
        codes = nc.codes
        if codes is None:
            codes = list((self.truth or {}).get("negative_controls", {}))
        out = self.sql("SELECT member_id FROM cohort ORDER BY member_id")
        if codes:
            out = out.merge(condition_counts(self.con, list(codes), nc.column), on="member_id")
        if nc.outcomes:
            have = set(self.sql("SELECT * FROM member_windows LIMIT 0").columns)
            bad = [c for c in nc.outcomes if c not in have]
            if bad:
                raise DataValidationError(
                    f"design.negative_controls.outcomes {bad} are not member x window columns "
                    f"(available: {', '.join(sorted(have))}).")
            sel = ", ".join(f'"{c}"' for c in nc.outcomes)
            out = out.merge(self.sql(f"SELECT member_id, {sel} FROM member_windows "
                                     "WHERE period = 'followup'"), on="member_id")
        return out

    def negative_controls(self, design):
        """Run the negative controls on a fitted design (see
        :func:`evalkit.analysis.design.run_negative_controls`); None when none are configured."""
        nc = self.negative_control_outcomes()
        cols = [c for c in nc.columns if c != "member_id"]
        if not cols:
            return None
        data = design.frame.join(nc.set_index("member_id"), on="member_id")
        return _design.run_negative_controls(
            design, data, cols, count=self.params.design.negative_controls.count,
            exposure="member_months" if self.has_exposure() else None)

    def negative_control_truth(self) -> dict:
        """True effects of the negative controls by outcome column (synthetic plans: 1)."""
        nc = (self.truth or {}).get("negative_controls", {})
        return {nc_column(code): spec["effect"] for code, spec in nc.items()}

    def save_design(self, design, passed: bool | None = None) -> Path:
        """Store the design in the work folder for the later workbooks."""
        return save_design(design, self.work_dir, passed)

    def design(self) -> pd.DataFrame | None:
        """The stored cohort design (member_id, treated, propensity_score, weight,
        subclass), or None when the cohort_balance workbook has not run."""
        got = load_design(self.work_dir)
        return None if got is None else got[0]

    def design_effects(self, outcomes: list[str] | None = None) -> pd.DataFrame | None:
        """Design-adjusted estimates from the stored design (records), or None when
        there is none (see :func:`evalkit.analysis.design.effects_from_table`)."""
        got = load_design(self.work_dir)
        if got is None:
            return None
        table, meta = got
        kinds = self.design_outcomes()
        if outcomes is not None:      # the ones the design covers
            kinds = {o: kinds[o] for o in outcomes if o in kinds}
            if not kinds:
                return None
        out = effects_from_table(self.treated_frame(), table, meta, list(kinds), kinds,
                                 exposure="member_months" if self.has_exposure() else None)
        out["diagnostics_passed"] = meta.get("passed")
        return out

    def close(self) -> None:
        self.con.close()


#: The attrition table's counts: members kept per arm, in all, and excluded at a step.
ATTRITION_COUNTS = ("self_help_members", "control_members", "total_members",
                    "excluded_members")


def public_attrition(attrition: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """The attrition table safe to publish: small counts hidden (NaN), with the cells that
    would give them back.

    The counts are tied together: at each step the arms add up to the total, and the
    total before a step is the total after it plus those excluded; each arm's count
    before a step is its count after it plus the arm's members excluded, which the table
    does not show but a reader gets by subtraction. So the arms' exclusions are counted
    too, as hidden cells, and everything goes through :func:`evalkit.privacy.suppress`
    with these relations: an exclusion of 1 to ``min_cell`` - 1 members (in all or in
    one arm) is hidden together with a count that would give it back.
    """
    t = attrition.reset_index(drop=True)
    if t.empty:
        return t
    work = t[list(ATTRITION_COUNTS)].astype(float)
    for arm in ("self_help", "control"):
        kept = work[f"{arm}_members"]
        work[f"{arm}_excluded"] = (kept.shift(1) - kept).fillna(0.0)
    relations = []
    for i in work.index:
        relations.append(([(i, "self_help_members"), (i, "control_members")],
                          (i, "total_members")))
        if i == 0:
            continue
        relations.append(([(i, "total_members"), (i, "excluded_members")],
                          (i - 1, "total_members")))
        relations.append(([(i, "self_help_excluded"), (i, "control_excluded")],
                          (i, "excluded_members")))
        for arm in ("self_help", "control"):
            relations.append(([(i, f"{arm}_members"), (i, f"{arm}_excluded")],
                              (i - 1, f"{arm}_members")))
    res = suppress(work, list(work.columns), min_cell=min_cell, protect_rows=False,
                   relations=relations)
    out = t.copy()
    for c in ATTRITION_COUNTS:
        out[c] = work[c].where(~res.mask[c])
    return out
