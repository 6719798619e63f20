"""The member x window aggregation on Spark (local mode) gives DuckDB's table exactly.

One SparkSession serves the whole module (start-up takes 7-10 s). The reference for every
comparison is DuckDB running :func:`evalkit.utilization.member_windows_sql` itself, whose
rules are checked by hand in tests/test_utilization.py; the tiny fixture's hand-worked
values are checked again here on the Spark result.
"""
import os
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

# Spark must be tested, never skipped: `make test` installs pyspark (requirements-dev.lock)
# and Java (.ci/system-packages); say so plainly if either is missing.
assert shutil.which("java") or os.environ.get("JAVA_HOME"), \
    "Spark needs Java 17+: run `make test`, which installs it (.ci/system-packages)"

from evalkit import utilization  # noqa: E402
from evalkit.cohort import DAYS_PER_MONTH, build_cohort  # noqa: E402
from evalkit.data import synthetic  # noqa: E402
from evalkit.data.load import load_claims, scan_sql  # noqa: E402
from evalkit.data.problems import plant_problems  # noqa: E402
from evalkit.engines import spark as sp  # noqa: E402
from test_load import load_tiny  # noqa: E402

COUNTS = [*utilization.VISIT_COLUMNS.values(), "inpatient_days"]
COSTS = [*utilization.COST_COLUMNS.values(), "total_cost"]


@pytest.fixture(scope="module")
def spark():
    # small data: skipping whole-stage code generation and the JVM's optimising JIT
    # tier halves start-up and first-query time here; neither changes a result
    session = sp.spark_session("local[2]", {
        "spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false",
        "spark.sql.codegen.wholeStage": "false",
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"})
    yield session
    session.stop()


def _both(con, spark, work) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The member x window table from DuckDB and from Spark, same connection and cohort."""
    utilization.build_member_windows(con, table="mw_duckdb")
    sp.build_member_windows_spark(con, spark, work, table="mw_spark")
    types = [con.execute(f"DESCRIBE mw_{e}").fetchall() for e in ("duckdb", "spark")]
    assert types[0] == types[1]                      # same columns, order and types
    assert not (Path(work) / "spark").exists()       # the staging folder is removed
    return tuple(con.execute(f"SELECT * FROM mw_{e} ORDER BY member_id, period").df()
                 for e in ("duckdb", "spark"))


def _assert_same(duck: pd.DataFrame, spark: pd.DataFrame) -> None:
    assert len(duck) == len(spark) > 0
    key = ["member_id", "period", "group", "window_start", "window_end"]
    pd.testing.assert_frame_equal(duck[key], spark[key])      # same rows, same order
    for c in COUNTS:                                           # counts: equal
        np.testing.assert_array_equal(duck[c].to_numpy(), spark[c].to_numpy(), err_msg=c)
    for c in COSTS:                                            # costs: to the cent
        np.testing.assert_array_equal(np.round(duck[c].to_numpy() * 100),
                                      np.round(spark[c].to_numpy() * 100), err_msg=c)
        assert np.abs(duck[c].to_numpy() - spark[c].to_numpy()).max() < 0.005
    np.testing.assert_allclose(spark["member_months"], duck["member_months"], rtol=0, atol=1e-9)


def test_tiny_fixture_matches_duckdb_and_the_hand_values(spark, tmp_path):
    con, _ = load_tiny()
    build_cohort(con)
    duck, spk = _both(con, spark, tmp_path)
    _assert_same(duck, spk)
    mw = spk.set_index(["member_id", "period"])
    b = mw.loc[(1, "baseline")]
    # by hand (tests/fixtures/tiny): two ER lines on 2023-03-01 are one visit; the stay
    # 04-01 -> 04-05 is 4 nights; ER 2 x 100.50, inpatient 5,000
    assert (b.er_visits, b.inpatient_admissions, b.inpatient_days) == (1, 1, 4)
    assert (b.cost_er, b.cost_inpatient, b.total_cost) == (201.0, 5000.0, 5201.0)
    assert mw.loc[(2, "followup")].member_months == pytest.approx(30 / DAYS_PER_MONTH)


def test_text_member_ids(spark, tmp_path):
    con, _ = load_tiny()
    build_cohort(con)
    for t in ("cohort", "encounters"):
        con.execute(f"CREATE OR REPLACE TABLE {t} AS SELECT * REPLACE "
                    f"('M-' || member_id AS member_id) FROM {t}")
    duck, spk = _both(con, spark, tmp_path)
    assert spk["member_id"].tolist()[:2] == ["M-1", "M-1"]
    _assert_same(duck, spk)


# Edge cases planted on top of a synthetic plan, relative to each chosen member's index
# date i (baseline [i-365, i), follow-up [i, i+365)): (offset of service, stay length in
# days or None, category, allowed amount). Each probes a rule where engines could differ.
EDGES = [
    (-1, None, "er", 0.125),            # last baseline day; a half cent rounds away from 0
    (0, None, "er", 10.005),            # first follow-up day; x*100 just below .5 in binary
    (0, None, "er", 10.005),            # a second line the same day: one visit
    (364, None, "outpatient_mh", 33.33),   # last follow-up day
    (365, None, "outpatient_mh", 99.99),   # the day after follow-up: not counted
    (-365, None, "primary_care", 0.01),    # first baseline day
    (-366, None, "primary_care", 7.77),    # the day before baseline: not counted
    (-3, 7, "inpatient", 12345.675),    # a stay crossing the index date: days in both windows
    (-3, 2, "inpatient", 1.0),          # a second line of the same stay, earlier discharge
    (100, 0, "inpatient", 250.5),       # a same-day stay counts one day
    (-368, 5, "inpatient", 800.0),      # admitted before baseline: days inside baseline only
    (362, 10, "inpatient", 4000.0),     # runs past follow-up: clipped at the window end
    (50, None, "pharmacy", 1e-3),       # a tenth of a cent
]


def _plant_edges(con, n_members: int = 40) -> int:
    """Insert :data:`EDGES` for the first ``n_members`` of the cohort (directly into the
    loaded ``encounters``: the point is the engines' agreement, not the loader)."""
    rows = []
    ids = [r[0] for r in con.execute(
        f"SELECT member_id FROM cohort ORDER BY member_id LIMIT {n_members}").fetchall()]
    for k, m in enumerate(ids):
        for j, (off, stay, cat, amount) in enumerate(EDGES):
            rows.append((10_000_000 + 100 * k + j, m, off, stay, cat, amount * (1 + k % 3)))
    con.execute("CREATE TEMP TABLE _edges (claim_id BIGINT, member_id VARCHAR, off INTEGER, "
                "stay INTEGER, category VARCHAR, amount DOUBLE)")
    con.executemany("INSERT INTO _edges VALUES (?, ?, ?, ?, ?, ?)", rows)
    cols = [r[0] for r in con.execute("DESCRIBE encounters").fetchall()]
    values = {"claim_id": "x.claim_id", "member_id": "x.member_id",
              "service_date": "c.index_date + x.off",
              "end_date": "CASE WHEN x.stay IS NULL THEN NULL ELSE c.index_date + x.off + x.stay END",
              "category": "x.category", "allowed_amount": "x.amount", "paid_amount": "x.amount"}
    sel = ", ".join(f"{values.get(c, 'NULL')} AS \"{c}\"" for c in cols)
    con.execute(f"INSERT INTO encounters SELECT {sel} FROM _edges x JOIN cohort c USING (member_id)")
    return len(rows)


def test_synthetic_plan_with_gaps_and_edge_cases(spark, tmp_path):
    folder = tmp_path / "plan"
    synthetic.generate(folder, members=2000, seed=11)
    planted = plant_problems(folder, seed=11)
    con = duckdb.connect()
    report = load_claims(con, {t: scan_sql(str(folder / f"{t}.parquet"), t) for t in
                               ("members", "enrollment", "encounters", "exposure")})
    assert report.balanced() and sum(planted["encounters"].values()) > 0
    build_cohort(con)
    n_edges = _plant_edges(con)
    # the plan has what the comparison should cover: coverage gaps inside a window,
    # and stays crossing the index date
    gaps = con.execute("""SELECT count(*) FROM (SELECT member_id FROM enrollment
                          JOIN cohort USING (member_id) GROUP BY 1 HAVING count(*) > 1)""").fetchall()[0][0]
    assert gaps > 20 and n_edges == 40 * len(EDGES)
    duck, spk = _both(con, spark, tmp_path / "work")
    _assert_same(duck, spk)
    assert len(spk) == 2 * con.execute("SELECT count(*) FROM cohort").fetchall()[0][0]
    assert (spk["member_months"] < 12 - 1e-9).sum() > 20          # partial coverage
    # the planted stays of a member, on top of the plan's own: the stay crossing the
    # index date gives 3 nights before it and 4 from it, the same-day stay 1, the stay
    # from day 362 3 clipped nights, the stay admitted before baseline 2 inside it
    first = con.execute("SELECT min(member_id) FROM cohort").fetchall()[0][0]
    mw = spk.set_index(["member_id", "period"])
    assert mw.loc[(first, "baseline"), "inpatient_days"] >= 3 + 2
    assert mw.loc[(first, "followup"), "inpatient_days"] >= 4 + 1 + 3


def test_prepare_with_spark_engine_matches_duckdb(spark, tmp_path):
    from evalkit import params as P
    from evalkit.prepare import prepare
    tables = {}
    for engine in ("duckdb", "spark"):
        p = P.validate({"data": {"members": 600}, "engine": {"name": engine,
                                                              "spark_conf": {"spark.sql.shuffle.partitions": "2"}}})
        prep = prepare(p, tmp_path / engine)
        with duckdb.connect(str(prep.database), read_only=True) as con:
            tables[engine] = con.execute("SELECT * FROM member_windows ORDER BY member_id, period").df()
            assert not (tmp_path / engine / "work" / "spark").exists()
    _assert_same(tables["duckdb"], tables["spark"])


def test_members_are_numbered_in_one_partition_only_without_a_member_key(spark, tmp_path):
    """The aggregation numbers the members (a join key). Given a cohort without
    MEMBER_KEY (data already on a cluster), Spark numbers them with a window over the
    whole cohort, which it computes in one partition; with the key (the cohort a run
    stages has one), the plan has no window at all. The tables are the same."""
    con, _ = load_tiny()
    build_cohort(con)
    paths = {}
    for name, extra in (("cohort", ""), ("keyed", f", 100 + 7 * row_number() OVER "
                                                  f"(ORDER BY member_id DESC) AS {sp.MEMBER_KEY}"),
                        ("encounters", "")):
        table = "cohort" if name == "keyed" else name
        paths[name] = (tmp_path / f"{name}.parquet").as_uri()
        cols = ", ".join(f'"{c}"' for c in sp.INPUT_COLUMNS[table])
        con.execute(f"COPY (SELECT {cols}{extra} FROM {table}) TO '{tmp_path / name}.parquet' "
                    "(FORMAT parquet)")
    tables, plans = {}, {}
    for name in ("cohort", "keyed"):
        df = sp.member_windows_spark(spark, paths[name], paths["encounters"])
        plans[name] = df._jdf.queryExecution().executedPlan().toString()
        df.write.parquet((tmp_path / f"out_{name}").as_uri())
        tables[name] = con.execute(f"SELECT * FROM read_parquet('{tmp_path}/out_{name}/*.parquet') "
                                   "ORDER BY member_id, period").df()
    assert "Window" in plans["cohort"] and "Window" not in plans["keyed"]
    assert len(tables["cohort"]) == 2 * con.execute("SELECT count(*) FROM cohort").fetchone()[0]
    pd.testing.assert_frame_equal(tables["cohort"], tables["keyed"])
    # a key that would merge members or overflow is refused before anything is counted
    cols = ", ".join(f'"{c}"' for c in sp.INPUT_COLUMNS["cohort"])
    n = con.execute("SELECT count(*) FROM cohort").fetchone()[0]
    first = "member_id = (SELECT min(member_id) FROM cohort)"
    for key, why in (("1", f"name each member once: {n - 1} of {n}"),
                     (f"CASE WHEN {first} THEN 5 END", f"once: {n - 1} of {n}"),
                     ("member_id + 0.5", "whole numbers .* not decimal"),
                     (f"CASE WHEN {first} THEN 4611686018427387904 ELSE member_id END",
                      "within \\+-2\\*\\*62")):
        bad = tmp_path / "bad.parquet"
        con.execute(f"COPY (SELECT {cols}, {key} AS {sp.MEMBER_KEY} FROM cohort) TO '{bad}' "
                    "(FORMAT parquet)")
        with pytest.raises(sp.SparkEngineError, match=why):
            sp.member_windows_spark(spark, bad.as_uri(), paths["encounters"])


def test_spark_sql_comes_from_the_one_definition(monkeypatch):
    sql = sp.spark_sql()
    assert sql == sp.to_spark(utilization.member_windows_sql())
    # the members' numbering is the only part a member key replaces
    keyed = sp.spark_sql(member_key=True)
    assert sql.count("ROW_NUMBER() OVER (ORDER BY") == 1 and "ROW_NUMBER" not in keyed
    assert keyed == sql.replace("ROW_NUMBER() OVER (ORDER BY `cohort`.`member_id` NULLS LAST)",
                                f"CAST({sp.MEMBER_KEY} AS BIGINT)")
    # the key stands for one numbering: a second (say, to order rows) is refused
    twice = "SELECT row_number() OVER (ORDER BY member_id) AS a, row_number() OVER " \
            "(ORDER BY member_id) AS b FROM main.cohort"
    assert sp.to_spark(twice).count("ROW_NUMBER") == 2
    with pytest.raises(sp.SparkEngineError, match="numbers the members 2 times"):
        sp.to_spark(twice, member_key=True)
    # the DuckDB-only constructs are rewritten
    assert "main." not in sql and "DATE_ADD(" in sql and "DATEDIFF(CAST(" in sql
    assert not re.search(r"/ 100\.0(?!\s+AS DOUBLE)", sql)        # no decimal division
    # a change to the definition reaches Spark: nothing else holds the rules
    monkeypatch.setattr(utilization, "member_windows_sql",
                        lambda members=None: "SELECT member_id, fu_end - 7 AS d FROM main.cohort")
    assert sp.spark_sql() == "SELECT `cohort`.`member_id` AS `member_id`, " \
                             "DATE_ADD(`cohort`.`fu_end`, -7) AS `d` FROM evalkit_cohort AS `cohort`"
    # and no module other than utilization.py spells out the aggregation's SQL
    src = Path(sp.__file__).parent.parent
    for f in src.rglob("*.py"):
        if f.name != "utilization.py":
            text = f.read_text()
            assert not any(w in text for w in ("stay_end", "baseline__", "__inpatient_days")), f


def test_clear_errors_for_unusable_tables(spark, tmp_path):
    con, _ = load_tiny()
    build_cohort(con)
    con.execute(f"COPY (SELECT * EXCLUDE (fu_end) FROM cohort) TO '{tmp_path / 'c.parquet'}'")
    con.execute(f"COPY encounters TO '{tmp_path / 'e.parquet'}'")
    with pytest.raises(sp.SparkEngineError, match=r"cohort: missing column\(s\) \['fu_end'\]"):
        sp.member_windows_spark(spark, tmp_path / "c.parquet", tmp_path / "e.parquet")
    with pytest.raises(sp.SparkEngineError, match="neither a Parquet path nor a table"):
        sp.member_windows_spark(spark, "no_such_table", tmp_path / "e.parquet")
    # tables of the session (DataFrames, catalog names) are accepted as they are
    spark.read.parquet(str(tmp_path / "e.parquet")).createOrReplaceTempView("enc_in_session")
    con.execute(f"COPY cohort TO '{tmp_path / 'c2.parquet'}'")
    cohort_df = spark.read.parquet(str(tmp_path / "c2.parquet"))
    got = sp.member_windows_spark(spark, cohort_df, "enc_in_session").count()
    assert got == 2 * con.execute("SELECT count(*) FROM cohort").fetchall()[0][0]
