"""Plant known data problems into a synthetic plan, so the checks can be seen at work.

Real extracts always carry some bad rows. :func:`plant_problems` adds a known number of
each kind to a plan written by :func:`evalkit.data.synthetic.generate` (duplicate claim
lines, claims dated after the member's coverage ended, negative amounts, claims and
coverage spells of members who are not in the members table) and records the counts in
``truth.json`` under ``planted_problems``. The data-quality workbook must then quarantine
exactly those rows: a test checks it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb

from .synthetic import MEMBER_ID_DIGITS, MEMBER_ID_PREFIX

#: quarantine reason -> (table, share of encounter lines planted)
PLANTED = {
    "duplicate_line": ("encounters", 0.002),
    "service_outside_enrollment": ("encounters", 0.001),
    "negative_amount": ("encounters", 0.0005),
    "unknown_member": ("encounters", 0.0005),
}


def plant_problems(folder: str | Path, seed: int = 1, memory_limit: str | None = None,
                   threads: int | None = None) -> dict:
    """Append planted bad rows to ``encounters.parquet`` and ``enrollment.parquet``.

    Rows are chosen by a seeded hash of the claim id, so the same plan and seed always
    get the same problems. Returns ``{table: {reason: count}}`` (also in truth.json).
    ``memory_limit`` and ``threads`` are DuckDB's settings for the rewrite (the run's
    ``engine`` settings; DuckDB's own defaults when None): the encounters are sorted
    again, and beyond the limit the sort spills to a folder beside them, removed after.
    The files written are the same whatever the settings.
    """
    folder = Path(folder)
    enc, enr = folder / "encounters.parquet", folder / "enrollment.parquet"
    spill = folder / ".spill"
    config = {"temp_directory": str(spill)}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = int(threads)
    con = duckdb.connect(config=config)
    con.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet('{enc}')")
    n, max_claim = con.execute("SELECT count(*), max(claim_id) FROM e").fetchall()[0]
    # the number of each distinct id (far fewer than the lines) is read
    max_member = con.execute(
        f"SELECT max(CAST(m[{len(MEMBER_ID_PREFIX) + 1}:] AS BIGINT)) "
        "FROM (SELECT DISTINCT member_id AS m FROM e)").fetchall()[0][0]
    new_id = (f"'{MEMBER_ID_PREFIX}' || lpad(CAST({{}} AS VARCHAR), {MEMBER_ID_DIGITS}, '0')"
              .format)    # a synthetic id (evalkit.data.synthetic.member_id) from SQL
    k = {reason: max(1, int(round(share * n))) for reason, (_, share) in PLANTED.items()}
    pick = lambda salt, m: (f"SELECT * FROM e ORDER BY hash(claim_id, {int(seed)}, {salt}), "  # noqa: E731
                            f"claim_id LIMIT {m}")
    last_end = "SELECT member_id, max(end_date) AS last_end FROM read_parquet('{}') GROUP BY 1".format(enr)
    planted = f"""
        SELECT * FROM ({pick(1, k['duplicate_line'])})
        UNION ALL
        SELECT p.* REPLACE ({max_claim} + 1 + row_number() OVER (ORDER BY p.claim_id) AS claim_id,
                            l.last_end + 15 AS service_date, NULL::DATE AS end_date, 'er' AS category)
        FROM ({pick(2, k['service_outside_enrollment'])}) p JOIN ({last_end}) l USING (member_id)
        UNION ALL
        SELECT * REPLACE ({max_claim} + 1000001 + row_number() OVER (ORDER BY claim_id) AS claim_id,
                          -allowed_amount AS allowed_amount, 0.0 AS paid_amount)
        FROM ({pick(3, k['negative_amount'])})
        UNION ALL
        SELECT * REPLACE ({max_claim} + 2000001 + row_number() OVER (ORDER BY claim_id) AS claim_id,
                          {new_id(f"{max_member} + 1 + row_number() OVER (ORDER BY claim_id)")} AS member_id)
        FROM ({pick(4, k['unknown_member'])})
    """
    tmp = folder / ".encounters.parquet.partial"
    con.execute(f"COPY (SELECT * FROM (SELECT * FROM e UNION ALL {planted}) "
                f"ORDER BY member_id, service_date, claim_id) TO '{tmp}' "
                f"(FORMAT parquet, COMPRESSION zstd)")
    # one coverage spell for a member who does not exist
    tmp_enr = folder / ".enrollment.parquet.partial"
    con.execute(f"COPY (SELECT * FROM read_parquet('{enr}') UNION ALL "
                f"SELECT {new_id(max_member + 999999)}, DATE '2020-01-01', DATE '2020-12-31') "
                f"TO '{tmp_enr}' (FORMAT parquet, COMPRESSION zstd)")
    con.close()
    shutil.rmtree(spill, ignore_errors=True)
    os.replace(tmp, enc)
    os.replace(tmp_enr, enr)
    counts = {"encounters": dict(k), "enrollment": {"unknown_member": 1}}
    truth_path = folder / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    truth["planted_problems"] = counts
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    return counts
