"""The member x window aggregation on a real Spark cluster gives DuckDB's table exactly.

A standalone Spark master and one worker are started on 127.0.0.1 with the launchers that
ship with pyspark (``bin/spark-class org.apache.spark.deploy.master.Master`` and
``...deploy.worker.Worker``), once for the test session, and stopped at its end whatever
happens. The driver (this process) connects to ``spark://127.0.0.1:PORT``; the work is
done by an executor the worker launches in its own JVM, reading and writing the run's
``work/`` folder on the local file system that the driver and the executor both see (on a
real cluster that folder is on shared storage; see the README, "Engines").

The reference is DuckDB running :func:`evalkit.utilization.member_windows_sql` itself,
whose rules are checked by hand in tests/test_utilization.py; the tables must be equal in
every column, type, row and value.
"""
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import duckdb
import pandas as pd
import pytest

# Spark must be tested, never skipped: `make test` installs pyspark (requirements.lock)
# and Java (.ci/system-packages); say so plainly if either is missing.
assert shutil.which("java") or os.environ.get("JAVA_HOME"), \
    "Spark needs Java 17+: run `make test`, which installs it (.ci/system-packages)"

import pyspark  # noqa: E402

from evalkit import params as P  # noqa: E402
from evalkit import utilization  # noqa: E402
from evalkit.cohort import build_cohort  # noqa: E402
from evalkit.engines import spark as sp  # noqa: E402
from evalkit.errors import EvalkitWarning  # noqa: E402
from evalkit.prepare import prepare  # noqa: E402
from test_load import load_tiny  # noqa: E402

SPARK_HOME = Path(pyspark.__file__).parent
#: Settings of the test's driver: executors of the worker's size, small shuffles, and the
#: start-up savings of tests/test_spark.py (none changes a result). The default file
#: system is an HDFS that does not exist, as on a YARN cluster whose HDFS the run's
#: folder is not on: the run's files must be named by file:// URIs to be found.
CLUSTER_CONF = {
    "spark.hadoop.fs.defaultFS": "hdfs://127.0.0.1:9",
    "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
    "spark.executor.memory": "512m", "spark.executor.cores": "1", "spark.cores.max": "1",
    "spark.sql.shuffle.partitions": "2", "spark.sql.codegen.wholeStage": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1",
}
START_TIMEOUT = 180          # seconds for the master to see the worker (a busy machine)


#: What the master's log says once it listens (port 0: the master picks free ports itself,
#: so no other process can take a port chosen here before the JVM binds it).
_MASTER_URL = re.compile(r"Starting Spark master at (spark://\S+)")
_MASTER_UI = re.compile(r"MasterWebUI: .* started at http://[^:/\s]+:(\d+)")


def _die_with_parent() -> None:
    """Child side of Popen: the kernel sends SIGTERM to the JVM if pytest itself dies
    (killed, not just failed), so no daemon outlives the test session."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def _launch(cls: str, args: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), cls, *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent)


def _master_state(ui_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as r:
            return json.load(r)
    except OSError:
        return None


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:                   # the worker first: it stops its executors
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="session")
def standalone(tmp_path_factory):
    """A standalone master and one worker (1 core, 1 GB) on 127.0.0.1: yields the
    master URL and the worker's folder; both JVMs are stopped when the session ends."""
    root = tmp_path_factory.mktemp("spark-standalone")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_DAEMON_MEMORY": "256m",
           "SPARK_DAEMON_JAVA_OPTS": "-XX:TieredStopAtLevel=1 -Dspark.master.rest.enabled=false",
           "SPARK_LOCAL_DIRS": str(root / "local"),
           "SPARK_LOG_DIR": str(root), "SPARK_CONF_DIR": str(root / "conf")}
    (root / "conf").mkdir()
    procs: list[subprocess.Popen] = []
    deadline = time.monotonic() + START_TIMEOUT

    def wait(what: str, ready) -> object:
        while True:
            found = ready()
            if found:
                return found
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}"
                                 for f in (root / "master.log", root / "worker.log") if f.exists())
                pytest.fail(f"the standalone Spark {what} did not come up "
                            f"({'exited' if dead else 'timed out'}):\n{logs}")
            time.sleep(0.5)

    def master_ports():
        log = (root / "master.log").read_text(errors="replace")
        url, ui = _MASTER_URL.search(log), _MASTER_UI.search(log)
        return (url[1], int(ui[1])) if url and ui else None

    try:
        procs.append(_launch("org.apache.spark.deploy.master.Master",
                             ["--host", "127.0.0.1", "--port", "0", "--webui-port", "0"],
                             root / "master.log", env))
        url, ui = wait("master", master_ports)
        procs.insert(0, _launch("org.apache.spark.deploy.worker.Worker",
                                ["--host", "127.0.0.1", "--port", "0", "--webui-port", "0",
                                 "--cores", "1", "--memory", "1g",
                                 "--work-dir", str(root / "worker"), url],
                                root / "worker.log", env))
        wait("worker", lambda: (_master_state(ui) or {}).get("aliveworkers", 0) >= 1)
        yield {"url": url, "ui_port": ui, "worker_dir": root / "worker"}
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def cluster(standalone):
    """A driver session on the standalone master (one per module; stopped at its end)."""
    from pyspark.sql import SparkSession
    left = SparkSession.getActiveSession()
    if left is not None:      # a local session of another module: a process has one driver
        left.stop()
    session = sp.spark_session(standalone["url"], CLUSTER_CONF, app_name="evalkit-cluster-test")
    assert session.sparkContext.master == standalone["url"]
    yield session
    session.stop()


def _table(con, name: str) -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {name} ORDER BY member_id, period").df()


def _assert_identical(con, a: str, b: str) -> None:
    assert con.execute(f"DESCRIBE {a}").fetchall() == con.execute(f"DESCRIBE {b}").fetchall()
    da, db = _table(con, a), _table(con, b)
    assert len(da) > 0
    pd.testing.assert_frame_equal(da, db, check_exact=True)
    # and as sets of rows, nothing in one that is not in the other
    assert con.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})"
                       f" UNION ALL SELECT count(*) FROM (SELECT * FROM {b} EXCEPT ALL "
                       f"SELECT * FROM {a})").fetchall() == [(0,), (0,)]


def test_executors_of_the_worker_do_the_work(cluster, standalone, tmp_path):
    con, _ = load_tiny()
    build_cohort(con)
    utilization.build_member_windows(con, table="mw_duckdb")
    sp.build_member_windows_spark(con, cluster, tmp_path, table="mw_spark")
    _assert_identical(con, "mw_duckdb", "mw_spark")
    # the master ran this application on the worker: an executor of it started there
    apps = _master_state(standalone["ui_port"])["activeapps"]
    app_id = cluster.sparkContext.applicationId
    assert [a["id"] for a in apps] == [app_id]
    executors = list((standalone["worker_dir"] / app_id).iterdir())
    assert executors and all((e / "stderr").exists() for e in executors)


def test_prepare_on_the_cluster_matches_duckdb(cluster, standalone, tmp_path):
    """A whole data preparation with ``engine.spark_master: spark://...``: the run's
    member_windows table equals the one DuckDB builds for the same params."""
    con = duckdb.connect()
    for engine in ("duckdb", "spark"):
        p = P.validate({"data": {"members": 600}, "seed": 7, "engine": {
            "name": engine, "spark_master": standalone["url"], "spark_conf": CLUSTER_CONF}})
        prep = prepare(p, tmp_path / engine)
        assert not (tmp_path / engine / "work" / "spark").exists()   # staging removed
        con.execute(f"ATTACH '{prep.database}' AS run_{engine} (READ_ONLY)")
    _assert_identical(con, "run_duckdb.member_windows", "run_spark.member_windows")
    assert cluster.sparkContext.master == standalone["url"]


def test_a_running_session_on_another_master_is_named(cluster, standalone):
    """A process has one Spark driver: asking for local mode while the cluster session
    runs returns that session, and says so."""
    with pytest.warns(EvalkitWarning, match=r"session on master 'spark://127\.0\.0\.1:\d+' is "
                      r"already running .* instead of 'local\[1\]'"):
        again = sp.spark_session("local[1]")
    assert again is cluster and again.sparkContext.master == standalone["url"]
