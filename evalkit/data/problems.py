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
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .synthetic import MEMBER_ID_DIGITS, MEMBER_ID_PREFIX

#: quarantine reason -> (table, share of encounter lines planted)
PLANTED = {
    "duplicate_line": ("encounters", 0.002),
    "service_outside_enrollment": ("encounters", 0.001),
    "negative_amount": ("encounters", 0.0005),
    "unknown_member": ("encounters", 0.0005),
}


#: the order of the claim lines in a plan (generate writes them so)
ORDER = ("member_id", "service_date", "claim_id")
#: rows per row group of the rewritten claim lines (DuckDB's default row group size)
ROW_GROUP_ROWS = 122_880


def _keys(t: pa.Table) -> np.ndarray:
    """The :data:`ORDER` columns of ``t`` as a structured array, which numpy compares
    field by field as DuckDB sorts them (text byte by byte, shorter first on a tie)."""
    if any(t.column(c).null_count for c in ORDER):
        raise ValueError("plant_problems: a claim line has no member, date of service or "
                         "claim id; the plan was not written by evalkit.data.synthetic")
    ids = t.column("member_id").combine_chunks()
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset:ids.offset + len(ids) + 1]
    widths = np.diff(offsets)
    if len(ids) and widths.min() == widths.max() > 0:   # ids of one width (synthetic ids)
        member = np.frombuffer(ids.buffers()[2], f"S{widths[0]}", len(ids), offsets[0])
    else:
        member = np.array([v.encode() for v in ids.to_pylist()], dtype=bytes)
    keys = np.empty(len(ids), [("m", member.dtype), ("d", np.int32), ("c", np.int64)])
    keys["m"] = member
    keys["d"] = t.column("service_date").combine_chunks().cast(pa.int32()).to_numpy()
    keys["c"] = t.column("claim_id").combine_chunks().to_numpy()
    return keys


def _ascending(keys: np.ndarray) -> bool:
    """Whether ``keys`` (:func:`_keys`) never decrease."""
    a, b = keys[:-1], keys[1:]
    return bool(np.all((a["m"] < b["m"]) | ((a["m"] == b["m"]) & (
        (a["d"] < b["d"]) | ((a["d"] == b["d"]) & (a["c"] <= b["c"]))))))


def _merge(path: Path, rows: pa.Table):
    """Record batches of the claim lines in ``path`` with ``rows`` (sorted by
    :data:`ORDER`) merged in by :data:`ORDER`: the order a sort of both would give (a
    planted line equal to a claim line on every key is a copy of it)."""
    new = _keys(rows)
    done, last = 0, None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP_ROWS):
        t = pa.Table.from_batches([batch])
        keys = _keys(t)
        if keys.dtype != new.dtype:              # ids of another width: compare as the wider
            common = max(keys.dtype, new.dtype, key=lambda d: d["m"].itemsize)
            keys, new = keys.astype(common), new.astype(common)
        if len(keys) and not (_ascending(keys) and (last is None or _ascending(
                np.concatenate([last, keys[:1]])))):
            raise ValueError(f"plant_problems: the claim lines of {path} are not in order of "
                             f"{', '.join(ORDER)} (as evalkit.data.synthetic writes them)")
        upto = int(np.searchsorted(new, keys[-1:], side="right")[0]) if len(keys) else done
        at = np.searchsorted(keys, new[done:upto])          # planted line -> line before it
        k = upto - done
        slots = at + np.arange(k)                            # their places in the output
        take = np.empty(len(keys) + k, np.int64)
        take[slots] = len(keys) + np.arange(k)
        rest = np.ones(len(take), bool)
        rest[slots] = False
        take[rest] = np.arange(len(keys))
        yield from pa.concat_tables([t, rows.slice(done, k)]).take(take).to_batches()
        done, last = upto, keys[-1:] if len(keys) else last
    yield from rows.slice(done).to_batches()


def _row_groups(batches, schema: pa.Schema):
    """``batches`` regrouped into batches of :data:`ROW_GROUP_ROWS` rows (the last
    shorter), so that the file's row groups do not depend on how the rows arrived."""
    pending, n = [], 0
    for b in batches:
        pending.append(b)
        n += b.num_rows
        if n >= ROW_GROUP_ROWS:
            t = pa.Table.from_batches(pending, schema).combine_chunks()
            full = n // ROW_GROUP_ROWS * ROW_GROUP_ROWS
            yield from t.slice(0, full).to_batches(max_chunksize=ROW_GROUP_ROWS)
            pending, n = t.slice(full).to_batches(), n - full
    if n:
        yield from pa.Table.from_batches(pending, schema).combine_chunks().to_batches()


def plant_problems(folder: str | Path, seed: int = 1, memory_limit: str | None = None,
                   threads: int | None = None) -> dict:
    """Append planted bad rows to ``encounters.parquet`` and ``enrollment.parquet``.

    Rows are chosen by a seeded hash of the claim id, so the same plan and seed always
    get the same problems. Returns ``{table: {reason: count}}`` (also in truth.json).
    ``memory_limit`` and ``threads`` are DuckDB's settings for the rewrite (the run's
    ``engine`` settings; DuckDB's own defaults when None): beyond the limit DuckDB spills
    to a folder beside the files, removed after.
    The files written are the same whatever the settings.

    The planted lines are merged into the claim lines, which ``generate`` writes in order
    of member, date of service and claim id: the file stays in that order, and only the
    few planted lines are sorted (a ``ValueError`` says so when the lines are not in
    that order).
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
    rows = con.sql(f"SELECT * FROM ({planted}) ORDER BY {', '.join(ORDER)}").to_arrow_table()
    schema = pq.read_schema(enc)
    refused: list[ValueError] = []

    def merged():
        try:
            yield from _row_groups(_merge(enc, rows.cast(schema)), schema)
        except ValueError as err:        # DuckDB reports it as its own error: kept
            refused.append(err)
            raise

    con.register("_merged", pa.RecordBatchReader.from_batches(schema, merged()))
    try:
        con.execute(f"COPY (SELECT * FROM _merged) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)")
    except duckdb.Error:
        con.close()
        tmp.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)
        if refused:
            raise refused[0] from None
        raise
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
