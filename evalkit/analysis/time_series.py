"""Monthly series of use per arm, and the interrupted time series fitted to them.

A community-wide intervention (the Healthwise self-care handbook: one distribution date,
an intervention community and a comparison community) is best judged on its *series*:
month by month, how many ER visits per 1,000 member-months, before and after the
handbook arrived, in both communities. This module builds that series inside the
database engine from the prepared tables and hands it to
:func:`evalkit.models.its.its`.

Months
------
Months are counted **from each member's index date**: month ``k`` of a member is
``[index_date + k months, index_date + (k + 1) months)`` (calendar-month arithmetic:
an index date of 15 March gives months starting on the 15th), clipped to the member's
baseline and follow-up windows, so months ``< 0`` are the baseline and months ``>= 0``
the follow-up. Why not calendar months: the interruption is the index date, and a plan
whose members have different index dates (referrals spread over a year) would mix
pre- and post-intervention time within a calendar month. In the ``healthwise_er``
scenario every member has the same index date (the distribution date, 1 January), so
relative months *are* calendar months and month-of-year terms can model the winter ER
peak; with staggered index dates the calendar season is averaged out within each
relative month, and no seasonal terms are fitted (see :func:`seasonal_default`).

Counting rules (as in :mod:`evalkit.utilization`)
------------------------------------------------
* a visit is a distinct (member, category, date of service), counted in the month that
  holds its date of service (for inpatient: the admission date);
* member-months of a month are the member's enrolled days inside it divided by 365/12,
  so the months of a window add up exactly to the window's member-months in
  ``member_windows``;
* ``members`` is the number of members with at least one enrolled day in the month.
  The series is an aggregate over many members, but a month in which fewer than
  ``min_cell`` (11) members contribute is a small cell: :func:`small_months` finds them,
  and :func:`fit_its` leaves them out of the fitted and shown series, with a
  :class:`~evalkit.errors.DataDroppedWarning`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from ..cohort import DAYS_PER_MONTH
from ..data.contract import CATEGORIES
from ..errors import DataDroppedWarning, DataValidationError, ParamsError
from ..models.its import its, its_plot
from ..utilization import VISIT_COLUMNS
from .spec import outcome_title

__all__ = ["monthly_rates_sql", "monthly_rates", "small_months", "seasonal_default",
           "fit_its", "ITSAnalysis", "effects_table", "headline", "findings",
           "MIN_MONTHS", "ARMS"]

#: Fewer months than this on either side of the index date: a level change cannot be
#: told apart from the trend (Wagner et al. 2002 advise about 12 on each side).
MIN_MONTHS = 6
#: Series labels: the intervention arm first.
ARMS = ("self_help", "control")


def _months_span(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Months to generate before and after the index date: enough to cover the longest
    baseline and follow-up windows (a calendar month has at least 28 days); months that
    fall outside every member's windows produce no rows."""
    bl, fu = con.execute("""SELECT max(date_diff('day', bl_start, fu_start)),
                                   max(date_diff('day', fu_start, fu_end)) FROM cohort""").fetchall()[0]
    if bl is None:
        raise DataValidationError("monthly_rates: the cohort table is empty; there is no "
                                  "series to build.")
    return int(math.ceil(bl / 28)) + 1, int(math.ceil(fu / 28)) + 1


def monthly_rates_sql(category: str, before: int, after: int) -> str:
    """SQL for the series: one row per arm x month relative to the index date.

    Reads ``cohort`` (member_id, group, index_date, bl_start, fu_start, fu_end),
    ``enrollment`` and ``encounters``; ``before``/``after`` bound the months generated
    (``-before .. after - 1``). Columns: ``group, month, members, member_months,
    visits``.
    """
    if category not in CATEGORIES:
        raise ParamsError(f"monthly_rates: category must be one of {', '.join(CATEGORIES)}, "
                          f"got {category!r}.")
    return f"""
    WITH months AS (
      SELECT c.member_id, c."group", r.k AS month,
             greatest(CAST(c.index_date + to_months(r.k) AS DATE), c.bl_start) AS m_start,
             least(CAST(c.index_date + to_months(r.k + 1) AS DATE), c.fu_end) AS m_end
      FROM cohort c CROSS JOIN range({-int(before)}, {int(after)}) AS r(k)
    ),
    covered AS (
      SELECT m.member_id, m."group", m.month, m.m_start, m.m_end,
             sum(greatest(0, date_diff('day', greatest(s.start_date, m.m_start),
                                       least(s.end_date + 1, m.m_end)))) AS days
      FROM months m JOIN enrollment s
        ON s.member_id = m.member_id AND s.start_date < m.m_end AND s.end_date >= m.m_start
      WHERE m.m_start < m.m_end
      GROUP BY ALL
    ),
    visits AS (
      SELECT DISTINCT e.member_id, e.service_date
      FROM encounters e JOIN cohort c USING (member_id)
      WHERE e.category = '{category}' AND e.service_date >= c.bl_start
        AND e.service_date < c.fu_end
    ),
    per_month AS (
      SELECT m."group", m.month, count(*) AS visits
      FROM visits v JOIN months m ON m.member_id = v.member_id
       AND v.service_date >= m.m_start AND v.service_date < m.m_end
      GROUP BY ALL
    ),
    exposure AS (
      SELECT "group", month, count(*) FILTER (WHERE days > 0) AS members,
             sum(days) AS days
      FROM covered GROUP BY ALL
    )
    SELECT coalesce(x."group", p."group") AS "group", coalesce(x.month, p.month) AS month,
           CAST(coalesce(x.members, 0) AS BIGINT) AS members,
           coalesce(x.days, 0) / {DAYS_PER_MONTH!r} AS member_months,
           CAST(coalesce(p.visits, 0) AS BIGINT) AS visits
    FROM exposure x FULL JOIN per_month p ON p."group" = x."group" AND p.month = x.month
    ORDER BY 1 DESC, 2
    """


def monthly_rates(con: duckdb.DuckDBPyConnection, category: str = "er") -> pd.DataFrame:
    """Visits of ``category`` per 1,000 member-months, by arm and month from the index date.

    Parameters
    ----------
    con : a connection holding the prepared ``cohort``, ``enrollment`` and ``encounters``
        tables (see :func:`evalkit.prepare.prepare`).
    category : contract category (``er`` by default; ``inpatient`` counts admissions).

    Returns
    -------
    DataFrame
        One row per arm (``group``: self_help, control) and ``month`` (integer, < 0 =
        baseline, >= 0 = follow-up): ``members`` (members with enrolled days in the
        month), ``member_months``, ``<visits column>`` (e.g. ``er_visits``) and
        ``rate_per_1000_mm``. Only aggregates leave the database.

    Examples
    --------
    >>> study.monthly_rates()            # doctest: +SKIP
          group  month  members  member_months  er_visits  rate_per_1000_mm
    0  self_help    -12     9876        10012.3        301             30.06
    """
    before, after = _months_span(con)
    out = con.execute(monthly_rates_sql(category, before, after)).df()
    col = VISIT_COLUMNS[category]
    out = out.rename(columns={"visits": col})
    out["group"] = out["group"].astype(str)
    out["month"] = out["month"].astype(int)
    out["members"] = out["members"].astype(int)
    out[col] = out[col].astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rate_per_1000_mm"] = np.where(out["member_months"] > 0,
                                           1000.0 * out[col] / out["member_months"], np.nan)
    order = {a: i for i, a in enumerate(ARMS)}
    out = out.sort_values(["group", "month"], key=lambda s: s.map(order) if s.name == "group"
                          else s).reset_index(drop=True)
    return out


def small_months(monthly: pd.DataFrame, min_cell: int = 11) -> pd.DataFrame:
    """Rows (arm x month) of a monthly series with fewer than ``min_cell`` contributing
    members (a small cell under the usual health-plan rule; 0 members counts too, since
    such a month has no rate)."""
    return monthly.loc[monthly["members"] < int(min_cell), ["group", "month", "members"]]


def seasonal_default(index_dates: pd.Series) -> bool:
    """Month-of-year terms make sense only when the relative months share one calendar
    phase, i.e. every member has the same index date (a community-wide distribution date);
    with staggered index dates the season is averaged out within each relative month."""
    return pd.Series(index_dates).nunique(dropna=True) == 1


@dataclass(frozen=True)
class ITSAnalysis:
    """Interrupted time series of a monthly rate, with and without the comparison series.

    Attributes
    ----------
    series : DataFrame
        The monthly series that was fitted (arm x month, small cells left out).
    controlled : ITSResult or None
        Comparative ITS: intervention and comparison series together; effects are the
        *differences* in level and slope change between them (None without a
        comparison arm).
    single : ITSResult
        The intervention series alone (counterfactual = its own pre-intervention trend).
    horizon : int
        Months after the index date at which the ratio is read (month 0 is the first
        month of follow-up, so ``horizon = 11`` is the 12th month).
    effects : DataFrame
        Records in the results vocabulary (``outcome, contrast, estimand, method,
        scale, estimate, std_error, ci_low, ci_high, p_value, n_treated, n_control``,
        plus ``quantity``): level change, slope change, the ratio at ``horizon`` and
        the average ratio over the follow-up, for each fit.
    left_out : DataFrame
        Arm x month cells left out for having fewer than ``min_cell`` members.
    """

    series: pd.DataFrame
    controlled: object
    single: object
    horizon: int
    seasonal: bool
    family: str
    effects: pd.DataFrame
    left_out: pd.DataFrame

    def plot(self, which: str = "controlled", ax=None, spec=None):
        """:func:`evalkit.models.its.its_plot` of one fit (``controlled`` or ``single``),
        its axis naming the outcome with ``spec``'s label (the run's analysis spec)."""
        res = self.controlled if which == "controlled" and self.controlled is not None \
            else self.single
        ax = its_plot(res, ax=ax)
        ax.set_xlabel("months from the index date (0 = first month after)")
        outcome = res.formula.split(" ~ ")[0]
        ax.set_ylabel(f"{outcome_title(outcome, spec)} per 1,000 member-months")
        return ax


_QUANTITY_SCALE = {"gaussian": "rate_difference_per_1000_mm", "poisson": "rate_ratio"}


def _records(res, outcome: str, design: str, n_t: int, n_c: int) -> pd.DataFrame:
    """An ITS fit's ``effect()`` as results records.

    Level and slope changes are ``rate_ratio`` (Poisson) or
    ``rate_difference_per_1000_mm`` (linear model of the rate); ratios with/without the
    intervention are ``ratio``. Ratio SEs are given on the log scale, as elsewhere in
    results.json.
    """
    e = res.effect().table
    rows = []
    for r in e.itertuples():
        is_ratio_row = r.term in ("ratio_at_horizon", "average_ratio")
        scale = "ratio" if is_ratio_row else _QUANTITY_SCALE[res.family]
        se = r.std_error
        if scale in ("ratio", "rate_ratio") and r.estimate > 0:
            se = r.std_error / r.estimate            # delta-method SE of the log ratio
        rows.append({
            "outcome": outcome, "contrast": "self_help vs control" if design == "controlled"
            else "self_help after vs before", "estimand": "ATT",
            "method": f"interrupted time series ({'controlled, comparison community' if design == 'controlled' else 'single series'}); "
                      f"{res.method.split(': ', 1)[-1]}",
            "scale": scale, "estimate": float(r.estimate), "std_error": float(se),
            "ci_low": float(r.ci_low), "ci_high": float(r.ci_high),
            "p_value": None if pd.isna(r.p_value) else float(r.p_value),
            "n_treated": n_t, "n_control": n_c, "quantity": r.quantity, "design": design,
            "analysis": "its", "model": "interrupted time series", "family": res.family,
            "adjusted_for": ["comparison series"] if design == "controlled" else []})
    return pd.DataFrame(rows)


def fit_its(monthly: pd.DataFrame, outcome: str = "er_visits", horizon: int | None = None,
            seasonal: bool = False, harmonics: int = 1, family: str = "poisson",
            min_cell: int = 11,
            min_months: int = MIN_MONTHS, n_members: dict | None = None,
            alpha: float = 0.05) -> ITSAnalysis:
    """Fit the interrupted time series to a monthly series from :func:`monthly_rates`.

    Two fits of :func:`evalkit.models.its.its` (segmented regression with
    Newey-West / Driscoll-Kraay errors, intervention at month 0):

    * **controlled** -- the intervention series with the comparison arm's series as
      control: the intervention community's counterfactual follows its own
      pre-intervention trend *plus* whatever changed in the comparison community at the
      same time (a secular change in ER use, a new urgent-care centre);
    * **single** -- the intervention series alone: the counterfactual is its
      pre-intervention trend extended.

    With ``family="poisson"`` (default) visits are modelled with a log link and a
    log(member-months) offset, so the level change is a rate ratio and month-of-year
    terms act multiplicatively, as a winter ER peak does; ``"gaussian"`` is the classic
    segmented linear regression of the rate per 1,000 member-months (changes in visits
    per 1,000 member-months).

    Parameters
    ----------
    monthly : DataFrame from :func:`monthly_rates`.
    outcome : the visits column (``er_visits``).
    horizon : months after the index date for the ratio (default: the last follow-up
        month, e.g. 11 = the 12th month of a one-year follow-up).
    seasonal : month-of-year terms (see :func:`seasonal_default`).
    harmonics : sine/cosine pairs that model the season (default 1: the winter peak).
        One dummy per calendar month cannot be used with 12 months on each side of an
        intervention at a year boundary: the trend is then a combination of the month
        dummies and the level change (see :func:`evalkit.models.its.its`).
    family : ``"poisson"`` or ``"gaussian"``.
    min_cell : months in which an arm has fewer members are left out (and warned about).
    min_months : fewest months needed on each side of the index date.
    n_members : ``{"self_help": n, "control": n}`` members analysed, for the records.
    alpha : 1 - confidence level.

    Raises
    ------
    DataValidationError
        No intervention (self_help) series, or fewer than ``min_months`` usable months
        before or after the index date.

    Notes
    -----
    Newey-West intervals are known to be too narrow in short series (a few dozen
    points): the lag is chosen by a large-sample rule and the autocorrelation it
    estimates is biased towards zero, so 95% intervals cover less than 95% (Turner,
    Forbes, Karahalios, Taljaard & McKenzie 2021, "Evaluation of statistical methods used
    in the analysis of interrupted time series studies: a simulation study", *BMC Med.
    Res. Methodol.* 21:181; Bottomley, Ooko, Gasparrini & Keogh 2023, "In praise of
    Prais-Winsten", *Stat. Med.* 42:1277-1288). Read the intervals as a lower bound on
    the uncertainty.
    """

    need = {"group", "month", "members", "member_months", outcome}
    missing = sorted(need - set(monthly.columns))
    if missing:
        raise DataValidationError(f"fit_its: the monthly series lacks column(s) {missing}; "
                                  "build it with monthly_rates().")
    if not isinstance(min_months, (int, np.integer)) or min_months < 2:
        raise ParamsError(f"fit_its: min_months must be an integer >= 2, got {min_months!r}.")
    small = small_months(monthly, min_cell)
    if len(small):
        warnings.warn(
            f"fit_its: {len(small)} arm x month cell(s) have fewer than {min_cell} members "
            f"(months {sorted(set(small['month'].tolist()))}); they are left out of the fitted "
            "and shown series (small cells).", DataDroppedWarning, stacklevel=2)
    keep = monthly["members"] >= int(min_cell)
    series = monthly.loc[keep].reset_index(drop=True)
    arms = set(series["group"])
    if "self_help" not in arms:
        raise DataValidationError("fit_its: there is no intervention (self_help) series with "
                                  f"{min_cell} or more members in any month.")
    for arm in ARMS:
        s = series[series["group"] == arm]
        if arm not in arms:
            continue
        pre, post = int((s["month"] < 0).sum()), int((s["month"] >= 0).sum())
        if pre < min_months or post < min_months:
            raise DataValidationError(
                f"fit_its: the {arm} series has {pre} month(s) before the index date and "
                f"{post} from it on; an interrupted time series needs at least {min_months} "
                "on each side to separate a change in level from the trend (about 12 each is "
                "the usual advice). Lengthen windows.baseline_days / windows.followup_days.")
    last = int(series.loc[(series["group"] == "self_help"), "month"].max())
    if horizon is None:
        horizon = last
    if not isinstance(horizon, (int, np.integer)) or horizon < 0:
        raise ParamsError(f"fit_its: horizon must be a whole number of months >= 0, got {horizon!r}.")
    n_members = n_members or {}
    n_t, n_c = n_members.get("self_help"), n_members.get("control")
    frame = series.assign(comparison=(series["group"] == "control").astype(int))
    kw = dict(outcome=outcome, time="month", intervention_time=0, exposure="member_months",
              family=family, seasonal=seasonal, horizon=horizon, alpha=alpha,
              harmonics=harmonics if seasonal else 0)
    single = its(frame[frame["comparison"] == 0], **kw)
    controlled = None
    if "control" in arms:
        controlled = its(frame, control="comparison", **kw)
    recs = [_records(single, outcome, "single", n_t, n_c)]
    if controlled is not None:
        recs.insert(0, _records(controlled, outcome, "controlled", n_t, n_c))
    left_out = small.assign(reason=f"fewer than {min_cell} members")[["group", "month", "reason"]]
    return ITSAnalysis(series=series, controlled=controlled, single=single, horizon=int(horizon),
                       seasonal=bool(seasonal), family=family,
                       effects=pd.concat(recs, ignore_index=True), left_out=left_out)


def effects_table(analysis: ITSAnalysis) -> pd.DataFrame:
    """The ITS estimates as a readable table: design, quantity, estimate, 95% CI, p."""
    e = analysis.effects
    return pd.DataFrame({
        "series": e["design"].map({"controlled": "with comparison community",
                                   "single": "intervention community alone"}),
        "quantity": [q.replace(f"at {analysis.horizon} periods after",
                               f"in month {analysis.horizon + 1} ({analysis.horizon} months "
                               "after the start)").replace(" per period", " per month")
                     for q in e["quantity"]],
        "scale": e["scale"], "estimate": e["estimate"].round(3),
        "95% CI": [f"{lo:.3f} to {hi:.3f}" for lo, hi in zip(e["ci_low"], e["ci_high"])],
        "p": [("<0.001" if p < 0.001 else f"{p:.3f}") if pd.notna(p) else "" for p in e["p_value"]],
    })


def headline(analysis: ITSAnalysis, design: str = "controlled") -> dict:
    """The ratio with/without the intervention at the horizon, as a dict
    (``estimate, ci_low, ci_high, p_value, horizon, design``)."""
    e = analysis.effects
    if design not in set(e["design"]):
        design = "single"
    row = e[(e["design"] == design) & e["quantity"].str.startswith("ratio")].iloc[0]
    return {"design": design, "horizon": analysis.horizon, "estimate": float(row["estimate"]),
            "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"]),
            "p_value": row["p_value"]}


def findings(analysis: ITSAnalysis, label: str = "ER visits") -> list[str]:
    """Plain-language sentences about the ratio at the horizon, for each fit."""
    out = []
    for design, words in (("controlled", "Against the comparison community"),
                          ("single", "Against its own earlier trend alone")):
        if design not in set(analysis.effects["design"]):
            continue
        h = headline(analysis, design)
        pct = 100 * (1 - h["estimate"])
        direction = "lower" if pct >= 0 else "higher"
        sure = ("the interval leaves out 1 (no change)" if h["ci_high"] < 1 or h["ci_low"] > 1
                else "the interval includes no change, so chance alone could explain it")
        out.append(
            f"{words}, {label} in the intervention community in month {h['horizon'] + 1} "
            f"after the index date were {abs(pct):.0f}% {direction} than expected without "
            f"the intervention (ratio {h['estimate']:.2f}, 95% CI {h['ci_low']:.2f} to "
            f"{h['ci_high']:.2f}); {sure}.")
    return out
