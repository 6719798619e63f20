"""Claims -> member x window aggregation: DuckDB (evalkit) vs pandas vs two bounds.

Builds synthetic plans with about 10M and 50M encounter lines (1M members; cached in
benchmarks/_data/, or ``--data``), then, for each size:

* times, in this one process and interleaved, the DuckDB aggregation evalkit uses, an
  in-memory pandas implementation of the same rules (the baseline), and two DuckDB
  bounds: a scan summing the needed columns (no grouping, so not reachable) and one
  GROUP BY of the claim lines into visits (member, category, date of service), which no
  correct implementation of the counting rules avoids; evalkit's time is reported as a
  ratio to each (the bounds are single queries over every line with all of DuckDB's
  threads; evalkit runs batches of members side by side, one thread each);
* measures each contender's peak memory in a fresh child process (peak RSS, which counts
  DuckDB's and Arrow's native memory, unlike tracemalloc);
* checks that DuckDB and pandas give the same member x window table.

Usage: python benchmarks/aggregation.py [--sizes 10 50] [--repeats 3] [--members 1000000]
                                        [--data FOLDER] [--no-pandas]
Prints a table of wall seconds, CPU seconds of the process (all threads; steadier than
wall time when other work shares the machine), ratios and peak memory. ``--no-pandas``
leaves the pandas baseline out (the slowest contender and the one that needs the most
memory).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from evalkit.cohort import build_cohort
from evalkit.data import synthetic
from evalkit.utilization import build_member_windows, member_windows_pandas

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
ENC_COLS = ["member_id", "category", "service_date", "end_date", "allowed_amount"]


def plan(lines_millions: int, members: int, data: Path = DATA) -> Path:
    out = data / f"plan_{members}_{lines_millions}M"
    if not (out / "encounters.parquet").exists():
        t = time.perf_counter()
        scale = synthetic.lines_scale_for(lines_millions * 1_000_000, members)
        synthetic.generate(out, scenario="demo", members=members, lines_scale=scale, progress=True)
        print(f"generated {out.name} in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return out


def connect(folder: Path, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {threads}")
    for t in ("members", "enrollment", "encounters", "exposure"):
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{folder / (t + '.parquet')}')")
    build_cohort(con)
    return con


def run_duckdb(con) -> None:
    build_member_windows(con, "mw")


def run_scan(con) -> pd.DataFrame:
    return con.execute("SELECT count(*), max(member_id), count(category), max(service_date), "
                       "max(end_date), sum(allowed_amount) FROM encounters").df()


def run_groupby(con) -> pd.DataFrame:
    """The bound: the claim lines grouped into visits, each with its summed cents."""
    return con.execute("SELECT count(*), sum(cents) FROM (SELECT member_id, category, "
                       "service_date, sum(round(allowed_amount * 100)) AS cents "
                       "FROM encounters GROUP BY member_id, category, service_date)").df()


def run_pandas(folder: Path, cohort: pd.DataFrame) -> pd.DataFrame:
    enc = pq.read_table(folder / "encounters.parquet", columns=ENC_COLS).to_pandas(
        date_as_object=False, types_mapper={}.get)
    enc["category"] = enc["category"].astype("category")
    return member_windows_pandas(cohort, enc)


def run_once(kind: str, con, folder: Path, cohort: pd.DataFrame | None) -> tuple[float, float]:
    """Run one contender once; return its wall seconds and the CPU seconds of this process
    (all threads), which depend less on what else the machine is running."""
    t, c = time.perf_counter(), time.process_time()
    if kind == "duckdb":
        run_duckdb(con)
    elif kind == "scan":
        run_scan(con)
    elif kind == "groupby":
        run_groupby(con)
    else:
        run_pandas(folder, cohort)
    return time.perf_counter() - t, time.process_time() - c


def cohort_frame(con) -> pd.DataFrame:
    return con.execute("SELECT * FROM cohort").df()


def child(kind: str, folder: str) -> None:
    """Run one contender once and print its peak RSS (MB) and seconds as JSON."""
    folder = Path(folder)
    con = connect(folder)
    cohort = cohort_frame(con) if kind == "pandas" else None
    sec = run_once(kind, con, folder, cohort)[0]
    # VmHWM: this process's peak resident memory (ru_maxrss would carry the parent's
    # peak across fork + exec)
    status = Path("/proc/self/status").read_text()
    peak = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024
    print(json.dumps({"kind": kind, "seconds": sec, "peak_mb": peak}))


def peak_memory(kind: str, folder: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(folder)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def agree(con, folder: Path) -> str:
    run_duckdb(con)
    a = con.execute("SELECT * FROM mw ORDER BY member_id, period").df()
    b = run_pandas(folder, cohort_frame(con))
    cols = [c for c in a.columns if c not in ("group", "period", "window_start", "window_end")]
    a, b = a[cols].reset_index(drop=True), b[cols].reset_index(drop=True)
    same_ints = all((a[c].astype(np.int64) == b[c].astype(np.int64)).all()
                    for c in cols if c.endswith(("visits", "fills", "admissions", "days")))
    cost_diff = max(float(np.max(np.abs(a[c].to_numpy() - b[c].to_numpy()))) for c in cols
                    if c.startswith(("cost_", "total_cost", "member_months")))
    return f"rows {len(a):,} = {len(b):,}, counts equal: {same_ints}, max |cost diff| {cost_diff:.1e}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50], help="millions of lines")
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the cached plans")
    ap.add_argument("--no-pandas", action="store_true", help="leave the pandas baseline out")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    kinds = ["duckdb", "groupby", "scan"] + ([] if args.no_pandas else ["pandas"])
    rows = []
    for size in args.sizes:
        folder = plan(size, args.members, args.data)
        lines = pq.ParquetFile(folder / "encounters.parquet").metadata.num_rows
        con = connect(folder)
        cohort = None if args.no_pandas else cohort_frame(con)
        times = {k: [] for k in kinds}
        for _ in range(args.repeats):            # interleaved, same process
            for kind in kinds:
                times[kind].append(run_once(kind, con, folder, cohort))
        med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
        mem = {k: peak_memory(k, folder) for k in kinds}
        row = {"lines": f"{lines / 1e6:.1f}M", **{f"{k}_s": med[k] for k in kinds},
               "duckdb/groupby": med["duckdb"] / med["groupby"],
               "duckdb/scan": med["duckdb"] / med["scan"],
               "duckdb_cpu_s": cpu["duckdb"], "groupby_cpu_s": cpu["groupby"],
               "cpu duckdb/groupby": cpu["duckdb"] / cpu["groupby"]}
        if not args.no_pandas:
            row["pandas/duckdb"] = med["pandas"] / med["duckdb"]
        row |= {f"{k}_peak_mb": mem[k] for k in kinds}
        row["agree"] = "pandas left out: not checked" if args.no_pandas else agree(con, folder)
        rows.append(row)
        print(pd.DataFrame(rows[-1:]).drop(columns="agree").round(2).to_string(index=False), flush=True)
        print("  ", row["agree"], flush=True)
    print("\nClaims -> member x window aggregation (median of "
          f"{args.repeats}; peak RSS of a fresh process running the step once)")
    print(pd.DataFrame(rows).drop(columns="agree").round(2).to_string(index=False))


if __name__ == "__main__":
    main()
