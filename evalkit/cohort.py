"""The analysed cohort: index dates, baseline and follow-up windows, eligibility, attrition.

Windows (all dates inclusive unless said otherwise):

* baseline  = ``[index_date - baseline_days, index_date - 1]``
* follow-up = ``[index_date, index_date + followup_days - 1]``

A member is analysed when they have an accepted exposure row, (by default) an
enrollment spell covering the index date, and at least ``min_followup_months`` of
enrolled time in the follow-up window. Each exclusion is counted in the attrition table.
"""
from __future__ import annotations

import duckdb
import pandas as pd

#: Days in one member-month: a 365-day window is exactly 12 member-months.
DAYS_PER_MONTH = 365.0 / 12.0


def build_cohort(con: duckdb.DuckDBPyConnection, baseline_days: int = 365,
                 followup_days: int = 365, require_enrolled_at_index: bool = True,
                 min_followup_months: float = 0.0) -> pd.DataFrame:
    """Create the ``cohort`` table in ``con`` and return the attrition table.

    ``cohort`` has one row per analysed member: member_id, group, index_date,
    bl_start, fu_start (= index_date), fu_end (exclusive: index + followup_days),
    age_at_index, sex, the members table's other columns, and
    baseline / follow-up member-months.
    """
    b, f = int(baseline_days), int(followup_days)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _candidates AS
        SELECT x.member_id, x."group", x.index_date, x.dose,
               x.index_date - {b} AS bl_start, x.index_date AS fu_start,
               x.index_date + {f} AS fu_end
        FROM exposure x""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _coverage AS
        SELECT c.member_id,
          bool_or(c.index_date BETWEEN s.start_date AND s.end_date) AS enrolled_at_index,
          sum(greatest(0, date_diff('day', greatest(s.start_date, c.bl_start),
                                    least(s.end_date + 1, c.fu_start)))) AS bl_days,
          sum(greatest(0, date_diff('day', greatest(s.start_date, c.fu_start),
                                    least(s.end_date + 1, c.fu_end)))) AS fu_days
        FROM _candidates c JOIN enrollment s USING (member_id)
        GROUP BY c.member_id""")
    member_cols = [r[0] for r in con.execute("DESCRIBE members").fetchall()]
    extra = [c for c in member_cols if c not in ("member_id", "birth_year", "sex")]
    extra_sql = "".join(f', m."{c}"' for c in extra)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cohort_all AS
        SELECT c.*, year(c.index_date) - m.birth_year AS age_at_index, m.sex{extra_sql},
               coalesce(v.enrolled_at_index, false) AS enrolled_at_index,
               coalesce(v.bl_days, 0) / {DAYS_PER_MONTH!r} AS bl_member_months,
               coalesce(v.fu_days, 0) / {DAYS_PER_MONTH!r} AS fu_member_months
        FROM _candidates c JOIN members m USING (member_id)
        LEFT JOIN _coverage v USING (member_id)""")
    steps = [("members with an exposure record", "true")]
    if require_enrolled_at_index:
        steps.append(("enrolled on the index date", "enrolled_at_index"))
    steps.append(("some follow-up enrollment" if not min_followup_months else
                  f"at least {min_followup_months:g} follow-up member-months",
                  f"fu_member_months > 0 AND fu_member_months >= {float(min_followup_months)!r}"))
    rows, cond = [], "true"
    for label, expr in steps:
        cond = f"{cond} AND ({expr})"
        counts = dict(con.execute(
            f'SELECT "group", count(*) FROM _cohort_all WHERE {cond} GROUP BY 1').fetchall())
        rows.append({"step": label, "self_help_members": int(counts.get("self_help", 0)),
                     "control_members": int(counts.get("control", 0))})
    con.execute(f"CREATE OR REPLACE TABLE cohort AS SELECT * EXCLUDE (enrolled_at_index) "
                f"FROM _cohort_all WHERE {cond} ORDER BY member_id")
    for t in ("_candidates", "_coverage", "_cohort_all"):
        con.execute(f"DROP TABLE {t}")
    attrition = pd.DataFrame(rows)
    attrition["total_members"] = attrition["self_help_members"] + attrition["control_members"]
    attrition["excluded_members"] = (-attrition["total_members"].diff()).fillna(0).astype(int)
    return attrition
