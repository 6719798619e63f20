"""Planted problems (evalkit.data.problems): the rewritten claim lines are exactly the
plan's lines plus the planted ones, in the plan's order (member, date of service, claim
id), whatever the size of the row groups they are read in."""
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evalkit.data import problems
from evalkit.data.problems import PLANTED, plant_problems
from evalkit.data.synthetic import generate


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("plan"), members=3000, seed=5)


def _copy(plan, folder):
    folder.mkdir()
    for t in ("members", "enrollment", "encounters", "exposure", "truth"):
        path = plan.paths[t]
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.mark.parametrize("group_rows", [problems.ROW_GROUP_ROWS, 977])
def test_planted_lines_are_merged_in_order(plan, tmp_path, monkeypatch, group_rows):
    # 977 rows a group: planted lines fall at the edges of many batches
    monkeypatch.setattr(problems, "ROW_GROUP_ROWS", group_rows)
    folder = _copy(plan, tmp_path / "p")
    counts = plant_problems(folder, seed=9)
    con = duckdb.connect()
    enc, before = folder / "encounters.parquet", plan.paths["encounters"]
    n = con.execute(f"SELECT count(*) FROM '{before}'").fetchall()[0][0]
    assert counts["encounters"] == {r: max(1, round(share * n)) for r, (_, share) in PLANTED.items()}
    # the reference order is DuckDB's sort of the same rows (how the lines were planted
    # before the merge); rows equal on every key are copies, so any order of them is one
    got = con.execute(f"SELECT * FROM '{enc}'").fetchall()
    assert got == con.execute(f"SELECT * FROM '{enc}' ORDER BY member_id, service_date, "
                              "claim_id").fetchall()
    assert len(got) == n + sum(counts["encounters"].values())
    # every line of the plan is still there, unchanged
    assert con.execute(f"SELECT count(*) FROM (SELECT * FROM '{before}' EXCEPT ALL "
                       f"SELECT * FROM '{enc}')").fetchall()[0][0] == 0


def test_lines_out_of_order_are_refused(plan, tmp_path):
    folder = _copy(plan, tmp_path / "p")
    enc = folder / "encounters.parquet"
    t = pq.read_table(enc)
    pq.write_table(pa.concat_tables([t.slice(1000), t.slice(0, 1000)]), enc)
    with pytest.raises(ValueError, match="not in order"):
        plant_problems(folder, seed=9)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in plan.paths.values())               # nothing half-written is left
