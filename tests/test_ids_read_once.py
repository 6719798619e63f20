"""Member ids are matched across tables with each CSV source parsed once."""
import duckdb
import pytest

from evalkit.data.ids import member_id_sql
from evalkit.errors import DataValidationError


class _Recording:
    """A DuckDB connection that remembers every statement it ran."""

    def __init__(self):
        self.con = duckdb.connect()
        self.sql = []

    def execute(self, sql, *args):
        self.sql.append(sql)
        return self.con.execute(sql, *args)


def _csv(tmp_path, name, rows):
    f = tmp_path / f"{name}.csv"
    f.write_text("member_id,x\n" + "".join(f"{r},1\n" for r in rows))
    return f"read_csv('{f}', all_varchar=true)"


def test_each_csv_source_is_read_once_and_ids_still_matched(tmp_path):
    rec = _Recording()
    rel = {"members": _csv(tmp_path, "members", ["A1", "A2", "B7"]),
           "encounters": _csv(tmp_path, "encounters", ["A1", "A1", "B7"]),
           "exposure": "(SELECT 'A2' AS member_id)"}
    sql = member_id_sql(rec, rel)
    for name in ("members", "encounters"):
        assert sum(f"{name}.csv" in s for s in rec.sql) == 1, name
    # text ids everywhere: compared as text, and the temporary copies are gone
    assert all("VARCHAR" in s for s in sql.values())
    assert not rec.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name "
                               "LIKE '_member_ids_%'").fetchall()[0][0]


def test_a_mismatch_in_a_csv_is_still_reported(tmp_path):
    rec = _Recording()
    # members are plain numbers; encounters write them with leading zeros (row 2)
    rel = {"members": _csv(tmp_path, "members", ["1", "2"]),
           "encounters": _csv(tmp_path, "encounters", ["1", "0002"])}
    with pytest.raises(DataValidationError, match="leading zeros"):
        member_id_sql(rec, rel)
    assert sum("encounters.csv" in s for s in rec.sql) == 1
