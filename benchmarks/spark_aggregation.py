"""Claims -> member x window aggregation: DuckDB vs Spark local mode, same SQL.

Both engines run the one definition (:func:`evalkit.utilization.member_windows_sql`;
Spark through :func:`evalkit.engines.spark.to_spark`) on the same synthetic plan, in this
one process, interleaved, and the script reports medians and ratios:

* ``duckdb``: :func:`evalkit.utilization.build_member_windows` (what a run uses);
* ``spark``: the translated SQL in a local SparkSession reading the cohort and
  encounter columns from Parquet and writing the table as Parquet (the cluster case:
  data already where Spark reads it);
* ``spark_engine``: :func:`evalkit.engines.spark.build_member_windows_spark`, the whole
  ``engine.name: spark`` step of a run (export from DuckDB, Spark, import back);
* Spark's session start-up, once (it is paid once per run);
* DuckDB summing the needed columns (``scan``, the lower bound of
  benchmarks/aggregation.py), for throughput in claim lines per second.

Peak memory: DuckDB's is measured by benchmarks/aggregation.py (a fresh process per
contender); Spark's is the peak resident memory of its JVM (driver and, in local mode,
the executors), read from /proc once the runs are over. It also checks that the two
engines' tables are identical.

Usage: python benchmarks/spark_aggregation.py [--members 20000] [--lines MILLIONS]
       [--repeats 3] [--master local[2]] [--driver-memory 4g]
``--lines`` uses the (cached) plans of benchmarks/aggregation.py, e.g. ``--members
1000000 --lines 10``; without it a ``demo`` plan of ``--members`` members is generated.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aggregation import DATA, connect, plan, run_scan  # noqa: E402

from evalkit.data import synthetic  # noqa: E402
from evalkit.engines import spark as sp  # noqa: E402
from evalkit.utilization import build_member_windows  # noqa: E402


def small_plan(members: int) -> Path:
    out = DATA / f"plan_{members}_demo"
    if not (out / "encounters.parquet").exists():
        synthetic.generate(out, scenario="demo", members=members, progress=True)
    return out


def jvm_peak_mb(spark) -> float:
    """Peak resident memory (MB) of the Spark JVM this session runs in (Linux /proc)."""
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=20_000)
    ap.add_argument("--lines", type=int, default=None, help="millions of lines (big plans)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="4g",
                    help="spark.driver.memory (in local mode the executors live in the driver)")
    args = ap.parse_args()
    folder = plan(args.lines, args.members) if args.lines else small_plan(args.members)
    lines = pq.ParquetFile(folder / "encounters.parquet").metadata.num_rows
    con = connect(folder)
    stage = Path(tempfile.mkdtemp(prefix="evalkit_spark_bench_"))
    try:
        for name, cols in sp.INPUT_COLUMNS.items():
            sel = ", ".join(f'"{c}"' for c in cols)
            con.execute(f"COPY (SELECT {sel} FROM {name}) TO '{stage / name}.parquet' (FORMAT parquet)")
        t = time.perf_counter()
        spark = sp.spark_session(args.master, {"spark.driver.memory": args.driver_memory})
        startup = time.perf_counter() - t

        def run_spark():
            out = stage / "mw_spark"
            sp.member_windows_spark(spark, stage / "cohort.parquet",
                                    stage / "encounters.parquet").write.mode("overwrite").parquet(str(out))

        contenders = {"duckdb": lambda: build_member_windows(con, "mw_duckdb"),
                      "spark": run_spark,
                      "spark_engine": lambda: sp.build_member_windows_spark(con, spark, stage / "w",
                                                                            "mw_spark"),
                      "scan": lambda: run_scan(con)}
        times = {k: [] for k in contenders}
        for _ in range(args.repeats):            # interleaved, same process
            for k, fn in contenders.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        a = con.execute("SELECT * FROM mw_duckdb ORDER BY member_id, period").df()
        b = con.execute("SELECT * FROM mw_spark ORDER BY member_id, period").df()
        same = a.shape == b.shape and all(
            np.array_equal(a[c].to_numpy(), b[c].to_numpy()) for c in a.columns)
        row = {"members": f"{args.members:,}", "lines": f"{lines / 1e6:.2f}M",
               "duckdb_s": med["duckdb"], "spark_s": med["spark"],
               "spark_engine_s": med["spark_engine"], "spark_startup_s": startup,
               "scan_s": med["scan"],
               "spark/duckdb": med["spark"] / med["duckdb"],
               "spark_engine/duckdb": med["spark_engine"] / med["duckdb"],
               "duckdb/scan": med["duckdb"] / med["scan"], "spark/scan": med["spark"] / med["scan"],
               "duckdb_Mlines/s": lines / 1e6 / med["duckdb"],
               "spark_Mlines/s": lines / 1e6 / med["spark"],
               "spark_jvm_peak_mb": jvm_peak_mb(spark)}
        print(f"\nClaims -> member x window aggregation, DuckDB vs Spark {args.master} "
              f"(median of {args.repeats}, same process, interleaved)")
        print(pd.DataFrame([row]).round(2).to_string(index=False))
        print(f"   tables identical (every column, every row): {same}")
        spark.stop()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


if __name__ == "__main__":
    main()
