"""The member x window aggregation: hand-worked cases, SQL vs an independent pandas
implementation, and properties (row order, windows adding up, member-month bounds)."""
import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.cohort import DAYS_PER_MONTH, build_cohort
from evalkit.utilization import build_member_windows, member_windows_pandas
from test_load import load_tiny

D = dt.date


def _con_from_frames(members, enrollment, encounters, exposure):
    con = duckdb.connect()
    for name, df in (("members", members), ("enrollment", enrollment),
                     ("encounters", encounters), ("exposure", exposure)):
        con.register("_df", df)
        dates = [c for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c])]
        cast = f" REPLACE ({', '.join(f'CAST({c} AS DATE) AS {c}' for c in dates)})" if dates else ""
        con.execute(f"CREATE TABLE {name} AS SELECT *{cast} FROM _df")
        con.unregister("_df")
    return con


def _windows(con, **kw):
    build_cohort(con, **kw)
    build_member_windows(con)
    return con.execute("SELECT * FROM member_windows ORDER BY member_id, period").df()


def test_tiny_by_hand():
    con, _ = load_tiny()
    mw = _windows(con).set_index(["member_id", "period"])
    b = mw.loc[(1, "baseline")]
    # two ER lines on 2023-03-01 are one visit; stay 04-01 -> 04-05 is 4 nights
    assert (b.er_visits, b.inpatient_admissions, b.inpatient_days) == (1, 1, 4)
    assert (b.cost_er, b.cost_inpatient, b.total_cost) == (201.0, 5000.0, 5201.0)
    assert b.member_months == pytest.approx(12.0)
    f2 = mw.loc[(2, "followup")]
    # member 2's second spell overlaps the first and is quarantined: covered 06-01..06-30
    assert f2.member_months == pytest.approx(30 / DAYS_PER_MONTH)
    assert mw.loc[(1, "followup")].total_cost == 0


def test_boundaries_by_hand():
    members = pd.DataFrame({"member_id": [1, 2], "birth_year": [1960, 1970], "sex": ["F", "M"]})
    enrollment = pd.DataFrame({"member_id": [1, 2, 2],
                               "start_date": [D(2022, 1, 1), D(2022, 1, 1), D(2023, 9, 1)],
                               "end_date": [D(2024, 12, 31), D(2023, 6, 30), D(2024, 12, 31)]})
    encounters = pd.DataFrame({
        "claim_id": [1, 2, 3, 4, 5, 6],
        "member_id": [1, 1, 1, 1, 2, 2],
        "service_date": [D(2023, 5, 30), D(2023, 7, 1), D(2023, 5, 31), D(2024, 5, 31),
                         D(2022, 6, 1), D(2022, 5, 31)],
        "end_date": [D(2023, 6, 3), D(2023, 7, 1), None, None, None, None],
        "category": ["inpatient", "inpatient", "er", "er", "outpatient_mh", "outpatient_mh"],
        "allowed_amount": [1000.10, 200.0, 50.0, 60.0, 30.0, 30.0],
        "paid_amount": [None] * 6,
    })
    exposure = pd.DataFrame({"member_id": [1, 2], "group": ["self_help", "control"],
                             "index_date": [D(2023, 6, 1), D(2023, 6, 1)], "dose": [3.0, 0.0]})
    con = _con_from_frames(members, enrollment, encounters, exposure)
    mw = _windows(con).set_index(["member_id", "period"])
    b1, f1 = mw.loc[(1, "baseline")], mw.loc[(1, "followup")]
    # stay crossing the index date: nights 05-30, 05-31 before; 06-01, 06-02 after;
    # its whole cost goes to the window of admission
    assert (b1.inpatient_days, f1.inpatient_days) == (2, 2 + 1)  # + a same-day stay = 1
    assert (b1.inpatient_admissions, f1.inpatient_admissions) == (1, 1)
    assert b1.cost_inpatient == pytest.approx(1000.10) and f1.cost_inpatient == 200.0
    # last day of baseline is index - 1; last day of follow-up is index + 364
    assert b1.er_visits == 1 and f1.er_visits == 0          # 2024-05-31 is day 365: outside
    assert str(f1.window_end)[:10] == "2024-05-30" and str(b1.window_start)[:10] == "2022-06-01"
    # member 2: coverage gap 2023-07-01..2023-08-31 in follow-up
    f2 = mw.loc[(2, "followup")]
    assert f2.member_months == pytest.approx((30 + (365 - 30 - 62)) / DAYS_PER_MONTH)
    assert mw.loc[(2, "baseline")].outpatient_mh_visits == 1   # 2022-05-31 is before baseline


def test_stays_merge_their_lines_before_the_windows_by_hand():
    """Lines of one stay (same admission date) are merged whatever window each line's
    discharge date falls in; stays outside both windows count no nights."""
    members = pd.DataFrame({"member_id": [1, 2], "birth_year": [1960, 1970], "sex": ["F", "M"]})
    enrollment = pd.DataFrame({"member_id": [1, 2], "start_date": [D(2022, 1, 1)] * 2,
                               "end_date": [D(2024, 12, 31)] * 2})
    encounters = pd.DataFrame({
        "claim_id": [1, 2, 3, 4, 5, 6, 7],
        "member_id": [1, 1, 1, 1, 1, 1, 2],
        # A: admitted before the baseline window, one line discharged before it and one
        # inside it; B: wholly before the baseline window; D: crossing the index date, two
        # lines; C: admitted on the first day after follow-up; member 2: outside the cohort
        "service_date": [D(2022, 5, 20), D(2022, 5, 20), D(2022, 5, 1), D(2023, 5, 30),
                         D(2023, 5, 30), D(2024, 5, 31), D(2023, 1, 1)],
        "end_date": [D(2022, 5, 25), D(2022, 6, 3), D(2022, 5, 10), D(2023, 6, 2),
                     D(2023, 6, 4), D(2024, 6, 9), D(2023, 1, 5)],
        "category": ["inpatient"] * 7,
        "allowed_amount": [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0],
        "paid_amount": [None] * 7,
    })
    exposure = pd.DataFrame({"member_id": [1], "group": ["self_help"],
                             "index_date": [D(2023, 6, 1)], "dose": [3.0]})
    con = _con_from_frames(members, enrollment, encounters, exposure)
    mw = _windows(con).set_index(["member_id", "period"])
    b, f = mw.loc[(1, "baseline")], mw.loc[(1, "followup")]
    # A: nights 2022-06-01, 06-02; D: 2023-05-30, 05-31 before the index, 06-01..06-03 after
    assert (b.inpatient_days, f.inpatient_days) == (2 + 2, 3)
    # only D is admitted inside a window (the baseline); its two lines are one admission
    assert (b.inpatient_admissions, f.inpatient_admissions) == (1, 0)
    assert (b.cost_inpatient, f.cost_inpatient) == (900.0, 0.0)
    assert list(mw.index.get_level_values("member_id").unique()) == [1]
    cohort = con.execute("SELECT * FROM cohort").df()
    ref = member_windows_pandas(cohort, encounters.astype(
        {"service_date": "datetime64[ns]", "end_date": "datetime64[ns]"}))
    pd.testing.assert_frame_equal(mw.reset_index()[NUMERIC], ref[NUMERIC], check_dtype=False)


# -- property tests on generated clean claims --------------------------------------------

@st.composite
def claims(draw):
    n = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    members = pd.DataFrame({"member_id": np.arange(1, n + 1), "birth_year": 1950 + rng.integers(0, 50, n),
                            "sex": rng.choice(["F", "M"], n)})
    spells, lines = [], []
    base = D(2022, 1, 1)
    for m in range(1, n + 1):
        start = base + dt.timedelta(days=int(rng.integers(0, 200)))
        end = start + dt.timedelta(days=int(rng.integers(300, 1000)))
        spells.append((m, start, end))
        for _ in range(int(rng.poisson(6))):
            day = start + dt.timedelta(days=int(rng.integers(0, (end - start).days + 1)))
            cat = rng.choice(["er", "inpatient", "outpatient_mh", "pharmacy", "other"])
            stay = day + dt.timedelta(days=int(rng.integers(0, 9))) if cat == "inpatient" else None
            lines.append((m, day, stay, cat, float(rng.integers(1, 100000)) / 100))
    enc = pd.DataFrame(lines, columns=["member_id", "service_date", "end_date", "category",
                                       "allowed_amount"])
    enc.insert(0, "claim_id", np.arange(len(enc)))
    enc["paid_amount"] = enc["allowed_amount"]
    enr = pd.DataFrame(spells, columns=["member_id", "start_date", "end_date"])
    idx = [s + dt.timedelta(days=int(rng.integers(0, (e - s).days + 1))) for _, s, e in spells]
    exp = pd.DataFrame({"member_id": members.member_id, "group": rng.choice(["self_help", "control"], n),
                        "index_date": idx, "dose": 0.0})
    for df, cols in ((enc, ["service_date", "end_date"]), (enr, ["start_date", "end_date"]),
                     (exp, ["index_date"])):
        for c in cols:
            df[c] = pd.to_datetime(df[c])
    b = draw(st.integers(30, 400))
    f = draw(st.integers(30, 400))
    return members, enr, enc, exp, b, f


NUMERIC = ["member_months", "er_visits", "outpatient_mh_visits", "inpatient_admissions",
           "inpatient_days", "pharmacy_fills", "total_cost", "cost_inpatient"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims())
def test_sql_matches_pandas_and_is_order_free(data):
    members, enr, enc, exp, b, f = data
    con = _con_from_frames(members, enr, enc, exp)
    sql = _windows(con, baseline_days=b, followup_days=f)
    cohort = con.execute("SELECT * FROM cohort").df()
    ref = member_windows_pandas(cohort, enc)
    pd.testing.assert_frame_equal(sql[NUMERIC].reset_index(drop=True), ref[NUMERIC].reset_index(drop=True),
                                  check_dtype=False)
    shuffled = _con_from_frames(members.sample(frac=1, random_state=1), enr.sample(frac=1, random_state=2),
                                enc.sample(frac=1, random_state=3), exp.sample(frac=1, random_state=4))
    pd.testing.assert_frame_equal(_windows(shuffled, baseline_days=b, followup_days=f), sql)
    # member-months never exceed the window
    limit = np.where(sql.period == "baseline", b, f) / DAYS_PER_MONTH
    assert (sql.member_months <= limit + 1e-9).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims())
def test_windows_add_up(data):
    """Baseline + follow-up visits and costs equal the same count over the whole span."""
    members, enr, enc, exp, b, f = data
    con = _con_from_frames(members, enr, enc, exp)
    mw = _windows(con, baseline_days=b, followup_days=f)
    cohort = con.execute("SELECT member_id, bl_start, fu_end FROM cohort").df()
    e = enc.merge(cohort, on="member_id")
    e = e[(e.service_date >= e.bl_start) & (e.service_date < e.fu_end)]
    whole_er = e[e.category == "er"].groupby("member_id").service_date.nunique()
    whole_cost = e.groupby("member_id").allowed_amount.sum()
    both = mw.groupby("member_id")[["er_visits", "total_cost"]].sum()
    assert (both.er_visits.to_numpy() == whole_er.reindex(both.index, fill_value=0).to_numpy()).all()
    np.testing.assert_allclose(both.total_cost.astype(float),
                               whole_cost.reindex(both.index, fill_value=0).astype(float), atol=1e-6)


def test_member_without_claims_gets_zero_rows():
    """A member with no encounters still has both windows, with zeros (found by hypothesis)."""
    members = pd.DataFrame({"member_id": [1], "birth_year": [1969], "sex": ["M"]})
    enrollment = pd.DataFrame({"member_id": [1], "start_date": [D(2022, 6, 1)], "end_date": [D(2025, 2, 23)]})
    encounters = pd.DataFrame({"claim_id": pd.Series([], dtype="int64"), "member_id": pd.Series([], dtype="int64"),
                               "service_date": pd.Series([], dtype="datetime64[ns]"),
                               "end_date": pd.Series([], dtype="datetime64[ns]"),
                               "category": pd.Series([], dtype="str"), "allowed_amount": pd.Series([], dtype="float64"),
                               "paid_amount": pd.Series([], dtype="float64")})
    exposure = pd.DataFrame({"member_id": [1], "group": ["self_help"], "index_date": [D(2024, 1, 11)], "dose": [0.0]})
    mw = _windows(_con_from_frames(members, enrollment, encounters, exposure), baseline_days=30, followup_days=30)
    assert list(mw.period) == ["baseline", "followup"]
    assert (mw.total_cost == 0).all() and (mw.er_visits == 0).all()
    assert mw.member_months.tolist() == pytest.approx([30 / DAYS_PER_MONTH] * 2)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims())
def test_batches_side_by_side_one_after_the_other_and_one_pass_agree(data):
    """Batches run side by side on cursors (tables every cursor sees), one after the
    other (temporary tables, which only their connection sees) and one pass give the same
    table; DuckDB's thread setting is restored."""
    members, enr, enc, exp, b, f = data
    con = _con_from_frames(members, enr, enc, exp)
    con.execute("SET threads = 2")
    one = _windows(con, baseline_days=b, followup_days=f)
    build_member_windows(con, "mw_side_by_side", lines_per_batch=3)
    assert con.execute("SELECT current_setting('threads')").fetchall()[0][0] == 2
    side = con.execute("SELECT * FROM mw_side_by_side ORDER BY member_id, period").df()
    pd.testing.assert_frame_equal(side, one)
    for t in ("cohort", "encounters"):
        con.execute(f"CREATE TEMP TABLE tmp_{t} AS SELECT * FROM main.{t}")
        con.execute(f"DROP TABLE main.{t}")
        con.execute(f"ALTER TABLE tmp_{t} RENAME TO {t}")
    build_member_windows(con, "mw_in_turn", lines_per_batch=3)
    in_turn = con.execute("SELECT * FROM mw_in_turn ORDER BY member_id, period").df()
    pd.testing.assert_frame_equal(in_turn, one)
