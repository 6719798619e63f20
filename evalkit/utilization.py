"""Claims -> one row per member x window: visits, inpatient days, costs, member-months.

The aggregation is written once, as SQL, and runs inside the database engine (DuckDB by
default); claim lines are never pulled into Python. :func:`member_windows_pandas` is an
independent in-memory implementation of the same rules, used to cross-check the SQL in
tests and as the baseline in ``benchmarks/``.

Rules (also in docs/data-contract.md):

* windows: baseline ``[index - baseline_days, index)``, follow-up
  ``[index, index + followup_days)``;
* a *visit* is a distinct (member, category, date of service): several claim lines for
  the same ER visit count once; ``pharmacy`` counts fills the same way;
* visits and costs are assigned to the window that holds the date of service (for
  inpatient stays, the admission date), so a stay's whole cost goes to the window it
  started in;
* *inpatient days* are the nights of a stay inside the window: the days d with
  ``admission <= d < discharge`` (a same-day stay counts as one day); a stay crossing the
  index date contributes days to both windows; lines of one stay (same admission date)
  are merged, keeping the latest discharge;
* costs are allowed amounts summed in whole cents (exact, so results do not depend on
  the order of summation or the number of threads);
* *member-months* are enrolled days inside the window divided by 365/12;
* claims outside enrollment never get here: they are quarantined when loaded.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pandas as pd
from tqdm import tqdm  # the plain bar: tqdm.auto warns in Jupyter without ipywidgets

from .cohort import DAYS_PER_MONTH
from .data.contract import CATEGORIES
from .data.load import _lit


def _id_literal(value) -> str:
    """A member id as SQL: integers as numbers, anything else as a quoted string."""
    return repr(int(value)) if isinstance(value, (int, np.integer)) else _lit(value)


#: Count columns per category (visits, or fills for pharmacy) in the member x window table.
VISIT_COLUMNS = {
    "er": "er_visits",
    "outpatient_mh": "outpatient_mh_visits",
    "outpatient_other": "outpatient_other_visits",
    "primary_care": "primary_care_visits",
    "pharmacy": "pharmacy_fills",
    "other": "other_visits",
    "inpatient": "inpatient_admissions",
}
COST_COLUMNS = {c: f"cost_{c}" for c in CATEGORIES}
_CODE = {c: i for i, c in enumerate(CATEGORIES)}
OUTCOMES = ["er_visits", "outpatient_mh_visits", "inpatient_days"]
WINDOWS = ("baseline", "followup")


def member_windows_sql(members: tuple | None = None) -> str:
    """SQL for the member x window table (column ``period``: baseline or followup).

    Reads tables ``cohort`` and ``encounters``; with ``members=(lo, hi)`` only the members
    whose id is in ``[lo, hi]`` (the filter reaches the encounters scan, so sorted Parquet
    files skip the row groups outside the range). Steps:

    1. ``cohort``: each member numbered ``k`` (1, 2, ... in member id order), so that one
       integer ``kw = 2 k + w`` names a member's window (w = 0 baseline, 1 follow-up);
       ``k`` is a join key only (any distinct integers would do: Spark reads them from
       the staged cohort, :mod:`evalkit.engines.spark`);
    2. ``visits``: the claim lines dated inside a window, merged into one row per
       member-window ``kw``, category and date of service (the visit) with its summed
       cents; categories are coded as small integers;
    3. ``agg``: one filtered aggregate per category over the visits of each ``kw``;
    4. ``stays`` and ``nights``: inpatient lines only (a small share), merged into stays
       by admission date before they meet the cohort, then cut into nights per window; a
       stay admitted before the baseline window still counts its nights inside it;
    5. every member x window of the cohort, joined to ``agg`` and ``nights``.

    Cents are summed as integer-valued doubles: every partial sum below 2**53 cents
    (about 90 trillion dollars) is exact, so the totals do not depend on the order of
    summation, and double additions are cheaper than the 128-bit integers DuckDB uses
    to sum BIGINT. Grouping by member-window rather than by member halves the filtered
    aggregates and keeps the window tests out of them; one integer key (rather than the
    member id, often text, and the window) makes the two groupings and the final join
    cheaper; reading the few inpatient lines apart keeps the stay dates out of the visit
    grouping.

    A stay's lines are kept when ``coalesce(end_date, service_date)`` reaches the
    baseline start; merging them first and testing the stay's latest such date is the
    same test, and keeps the same discharge date: a line that fails it ends before the
    baseline start, so before the admission date plus one day whenever the stay itself
    passes, and the discharge is never taken earlier than that.
    """
    code = "CASE e.category " + " ".join(f"WHEN '{c}' THEN {i}" for c, i in _CODE.items()) + " END"
    visits = ", ".join(f"count(*) FILTER (WHERE cat = {_CODE[c]}) AS {col}"
                       for c, col in VISIT_COLUMNS.items())
    costs = ", ".join(f"sum(cents) FILTER (WHERE cat = {_CODE[c]}) AS {col}"
                      for c, col in COST_COLUMNS.items())
    visit_sel = ", ".join(f"CAST(coalesce(a.{c}, 0) AS BIGINT) AS {c}" for c in VISIT_COLUMNS.values())
    cost_sel = ", ".join(f"coalesce(a.{c}, 0) / 100.0 AS {c}" for c in COST_COLUMNS.values())
    total = " + ".join(f"coalesce(a.{c}, 0)" for c in COST_COLUMNS.values())
    nights = ("greatest(0, date_diff('day', greatest(s.service_date, c.{lo}), "
              "least(greatest(s.end_date, s.service_date + 1), c.{hi})))")
    where = "true" if members is None else \
        f"member_id BETWEEN {_id_literal(members[0])} AND {_id_literal(members[1])}"
    return f"""
    WITH cohort AS (
      SELECT row_number() OVER (ORDER BY member_id) AS k, *
      FROM main.cohort WHERE {where}
    ),
    visits AS (
      SELECT c.k * 2 + CASE WHEN e.service_date >= c.fu_start THEN 1 ELSE 0 END AS kw,
             {code} AS cat, e.service_date, sum(round(e.allowed_amount * 100)) AS cents
      FROM (SELECT * FROM main.encounters WHERE {where}) e JOIN cohort c USING (member_id)
      WHERE e.service_date >= c.bl_start AND e.service_date < c.fu_end
      GROUP BY 1, 2, 3
    ),
    agg AS (SELECT kw, {visits}, {costs} FROM visits GROUP BY 1),
    stays AS (
      SELECT member_id, service_date, max(end_date) AS end_date,
             max(coalesce(end_date, service_date)) AS reach
      FROM main.encounters WHERE category = 'inpatient' AND {where}
      GROUP BY 1, 2
    ),
    nights AS (
      SELECT c.k, sum({nights.format(lo="bl_start", hi="fu_start")}) AS bl_nights,
             sum({nights.format(lo="fu_start", hi="fu_end")}) AS fu_nights
      FROM stays s JOIN cohort c USING (member_id)
      WHERE s.service_date < c.fu_end AND s.reach >= c.bl_start
      GROUP BY 1
    )
    SELECT c.member_id, c."group", p.period,
           CASE p.w WHEN 0 THEN c.bl_start ELSE c.fu_start END AS window_start,
           CASE p.w WHEN 0 THEN c.fu_start ELSE c.fu_end END - 1 AS window_end,
           CASE p.w WHEN 0 THEN c.bl_member_months ELSE c.fu_member_months END AS member_months,
           {visit_sel},
           CAST(coalesce(CASE p.w WHEN 0 THEN s.bl_nights ELSE s.fu_nights END, 0) AS BIGINT)
             AS inpatient_days,
           {cost_sel}, ({total}) / 100.0 AS total_cost
    FROM cohort c CROSS JOIN (VALUES (0, 'baseline'), (1, 'followup')) p(w, period)
    LEFT JOIN agg a ON a.kw = c.k * 2 + p.w
    LEFT JOIN nights s ON s.k = c.k
    """


#: Encounter lines per batch of members: keeps the visit-level hash tables in memory
#: (at 50M lines, with two batches at a time: 0.95 GB peak for the whole process, against
#: 1.03 GB for batches of 4M lines and 2.7 GB for one pass; the CPU time was the same
#: within noise for batches of 3M, 3.5M and 4M lines).
LINES_PER_BATCH = 3_000_000


def member_batches(con: duckdb.DuckDBPyConnection, lines_per_batch: int = LINES_PER_BATCH,
                   multiple_of: int = 1):
    """Split the cohort's member ids into contiguous ranges of about ``lines_per_batch``
    encounter lines each (by member count, assuming lines spread evenly over members).

    With ``multiple_of=n`` (and more than one range), the number of ranges is rounded up
    to a multiple of ``n``, so that ``n`` workers finish together."""
    lines = con.execute("SELECT count(*) FROM encounters").fetchall()[0][0]
    k = max(1, -(-int(lines) // int(lines_per_batch)))
    if k > 1:
        k = -(-k // int(multiple_of)) * int(multiple_of)
    if k == 1:
        return [None]
    return [tuple(r) for r in con.execute(f"""
        SELECT min(member_id), max(member_id) FROM (
          SELECT member_id, ntile({k}) OVER (ORDER BY member_id) AS b FROM cohort)
        GROUP BY b ORDER BY b""").fetchall()]


def _shared(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether another cursor of ``con`` sees ``cohort`` and ``encounters`` (not when they
    are temporary tables or registered data frames, which belong to ``con`` alone)."""
    cur = con.cursor()
    try:
        for t in ("cohort", "encounters"):
            cur.execute(f"SELECT * FROM {t} LIMIT 0")
        return True
    except duckdb.Error:
        return False
    finally:
        cur.close()


def build_member_windows(con: duckdb.DuckDBPyConnection, table: str = "member_windows",
                         lines_per_batch: int = LINES_PER_BATCH, progress: bool = False) -> None:
    """Create ``table`` (default ``member_windows``) in ``con`` from ``cohort`` and ``encounters``.

    The members are processed in batches of contiguous ids, each with about
    ``lines_per_batch`` claim lines, so the visit-level hash table of a batch fits in
    memory: on 50M lines this is several times faster than one pass that has to spill,
    and it bounds memory whatever the size of the plan. Each member's rows depend only on
    that member's claims, so batching cannot change the result.

    With several batches and several DuckDB threads, the batches run side by side, one
    DuckDB thread each, as many at a time as DuckDB had threads (each on its own cursor
    of ``con``; ``threads`` is set to 1 meanwhile and restored after, so other work on
    the same database during the step also gets one thread). One batch is many small
    hash tables and joins, which DuckDB's threads share at 15-30% more CPU than one
    thread needs (measured on 2 cores). The number of batches is rounded up to a
    multiple of the number of workers. Temporary or registered ``cohort`` and
    ``encounters`` tables, which other cursors cannot see, are processed one batch after
    the other with all threads, as are plans small enough for one batch.

    The table's rows are in no particular order (read it with ``ORDER BY member_id,
    period``, as :meth:`evalkit.analysis.study.Study.member_windows` does): neither insertion
    order nor a sort is kept while aggregating, which makes the step about 1.5x faster on
    two cores. The values do not depend on it.
    """
    keep, threads = con.execute("SELECT current_setting('preserve_insertion_order'), "
                                "current_setting('threads')").fetchall()[0]
    workers = int(threads) if int(threads) > 1 and _shared(con) else 1
    batches = member_batches(con, lines_per_batch, multiple_of=workers)
    workers = min(workers, len(batches))
    con.execute("SET preserve_insertion_order = false")
    bar = None
    if progress and len(batches) > 1:
        bar = tqdm(total=len(batches), unit="batch", desc="member x window")

    def run(members, cur=con):
        cur.execute(f"INSERT INTO {table} {member_windows_sql(members)}")
        if bar is not None:
            bar.update(1)

    def run_on_cursor(members):
        cur = con.cursor()
        try:
            run(members, cur)
        finally:
            cur.close()

    try:
        if workers == 1:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS {member_windows_sql(batches[0])}")
            if bar is not None:
                bar.update(1)
            for members in batches[1:]:
                run(members)
        else:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS "
                        f"{member_windows_sql(batches[0])} WITH NO DATA")
            con.execute("SET threads = 1")
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run_on_cursor, batches))
    finally:
        con.execute(f"SET threads = {int(threads)}")
        con.execute(f"SET preserve_insertion_order = {str(bool(keep)).lower()}")
        if bar is not None:
            bar.close()


def member_windows_pandas(cohort: pd.DataFrame, encounters: pd.DataFrame) -> pd.DataFrame:
    """The same rules as :func:`member_windows_sql`, in pandas (reference and baseline).

    ``cohort`` needs member_id, group, bl_start, fu_start, fu_end, bl_member_months,
    fu_member_months; ``encounters`` the contract columns. Returns the same columns as the
    SQL version, sorted by member_id and window.
    """
    c = cohort[["member_id", "group", "bl_start", "fu_start", "fu_end",
                "bl_member_months", "fu_member_months"]]
    e = encounters[["member_id", "category", "service_date", "end_date", "allowed_amount"]]
    e = e.merge(c[["member_id", "bl_start", "fu_end"]], on="member_id")
    last = e["end_date"].fillna(e["service_date"])
    e = e[(e["service_date"] < e["fu_end"]) & (last >= e["bl_start"])]
    e = e.assign(cents=np.round(e["allowed_amount"].to_numpy() * 100).astype(np.int64))
    days = (e.groupby(["member_id", "category", "service_date"], sort=False, observed=True)
             .agg(end_date=("end_date", "max"), cents=("cents", "sum")).reset_index())
    days = days.merge(c, on="member_id")
    one_day = pd.Timedelta(days=1)
    stay_end = days["end_date"].where(days["end_date"] > days["service_date"],
                                      days["service_date"] + one_day)
    frames = []
    for w, lo, hi, mm in (("baseline", "bl_start", "fu_start", "bl_member_months"),
                          ("followup", "fu_start", "fu_end", "fu_member_months")):
        inside = (days["service_date"] >= days[lo]) & (days["service_date"] < days[hi])
        d = days[inside]
        visits = d.groupby(["member_id", "category"], observed=True).size().unstack(fill_value=0)
        cents = d.groupby(["member_id", "category"], observed=True)["cents"].sum().unstack(fill_value=0)
        ip = days["category"] == "inpatient"
        start = np.maximum(days.loc[ip, "service_date"], days.loc[ip, lo])
        end = np.minimum(stay_end[ip], days.loc[ip, hi])
        nights = ((end - start).dt.days).clip(lower=0)
        ip_days = nights.groupby(days.loc[ip, "member_id"]).sum()
        out = c[["member_id", "group", lo, hi, mm]].rename(
            columns={lo: "window_start", hi: "window_end", mm: "member_months"})
        out = out.assign(period=w, window_end=out["window_end"] - one_day)
        out = out.set_index("member_id")
        for cat, col in VISIT_COLUMNS.items():
            out[col] = visits[cat].reindex(out.index, fill_value=0) if cat in visits else 0
        out["inpatient_days"] = ip_days.reindex(out.index, fill_value=0)
        total = 0
        for cat, col in COST_COLUMNS.items():
            v = cents[cat].reindex(out.index, fill_value=0) if cat in cents else 0
            out[col] = v / 100.0
            total = total + v
        out["total_cost"] = total / 100.0
        frames.append(out.reset_index())
    res = pd.concat(frames, ignore_index=True)
    cols = ["member_id", "group", "period", "window_start", "window_end", "member_months",
            *VISIT_COLUMNS.values(), "inpatient_days", *COST_COLUMNS.values(), "total_cost"]
    return res[cols].sort_values(["member_id", "period"]).reset_index(drop=True)


__all__ = ["member_windows_sql", "build_member_windows", "member_windows_pandas",
           "VISIT_COLUMNS", "COST_COLUMNS", "OUTCOMES", "WINDOWS", "DAYS_PER_MONTH"]
