"""The member x window aggregation on Apache Spark, from the one DuckDB definition.

:func:`evalkit.utilization.member_windows_sql` is the only definition of the counting
rules. This module translates that SQL text to Spark SQL with SQLGlot and runs it in a
SparkSession, so Spark and DuckDB cannot drift apart: change the rules there and both
engines follow. :func:`to_spark` does the translation; :func:`member_windows_spark`
runs it on tables a Spark session can see (Parquet paths, catalog tables or
DataFrames); :func:`build_member_windows_spark` is the step a run uses when
``engine.name: spark``: it hands the run's cohort and claim lines to Spark as Parquet and
stores Spark's result as the ``member_windows`` table of the run's DuckDB database, so
everything after it is unchanged.

Why a few rewrites are needed, and what they are (:func:`to_spark`):

* ``date + integer`` (a day later) is DuckDB's date arithmetic; Spark spells it
  ``date_add``. Which ``+`` is date arithmetic is decided from the column types
  (SQLGlot's type annotation over the known input columns), not from the text.
* ``date_diff('day', a, b)`` becomes Spark's two-argument ``datediff(b, a)``, which
  works on dates in every Spark version and never goes through timestamps (the
  three-argument form needs Spark 3.3+ and converts to timestamps in the session time
  zone).
* Decimal literals such as ``100.0`` are DECIMAL in both engines, but DuckDB divides an
  integer by a decimal in floating point while Spark uses decimal arithmetic (costs
  would come back as DECIMAL(27,6), and divisions with a non-terminating quotient
  differ in the last digits); they are written as doubles.
* ``main.cohort`` / ``main.encounters`` name the DuckDB schema; in Spark they become
  temporary views.
* The members' numbering ``row_number() OVER (ORDER BY member_id)``, a join key only,
  needs every cohort row in one partition in Spark (one task, however large the
  cluster). When the cohort has a :data:`MEMBER_KEY` column (distinct integers, as the
  staged cohort of :func:`build_member_windows_spark` has), that column is read instead.

Filtered aggregates (``count(*) FILTER (WHERE ...)``) need no rewrite: Spark has had
them since 3.0. Requires pyspark (``pip install 'evalkit[spark]'``) and Java 17+.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from .. import utilization
from ..data.load import _lit, _q
from ..errors import EvalkitError, EvalkitWarning


class SparkEngineError(EvalkitError):
    """Spark could not be started, or the tables given to it do not fit the aggregation."""


#: The columns the aggregation reads, with their types after loading (DuckDB names).
#: ``member_id`` is BIGINT or VARCHAR, whichever the loader chose for the plan.
INPUT_COLUMNS = {
    "cohort": {"member_id": "BIGINT", "group": "VARCHAR", "bl_start": "DATE",
               "fu_start": "DATE", "fu_end": "DATE", "bl_member_months": "DOUBLE",
               "fu_member_months": "DOUBLE"},
    "encounters": {"member_id": "BIGINT", "service_date": "DATE", "end_date": "DATE",
                   "category": "VARCHAR", "allowed_amount": "DOUBLE"},
}

#: An optional cohort column of distinct integers (within +-2**62; the staged cohort's are
#: 1, 2, ...) naming each member, read in place of numbering the members in Spark (see the
#: module docstring).
MEMBER_KEY = "_member_key"

#: Names of the temporary views the translated SQL reads in the Spark session.
VIEWS = {"cohort": "evalkit_cohort", "encounters": "evalkit_encounters"}

_INT_TYPES = {exp.DataType.Type.INT, exp.DataType.Type.BIGINT, exp.DataType.Type.SMALLINT,
              exp.DataType.Type.TINYINT}


def _schema(id_type: str = "BIGINT") -> dict:
    return {"main": {t: {**cols, "member_id": id_type} for t, cols in INPUT_COLUMNS.items()}}


def _numbers_members(node: exp.Expression) -> bool:
    """Whether ``node`` is ``row_number() OVER (ORDER BY member_id)``: no partition, one
    ascending key, the member id."""
    if not isinstance(node, exp.Window) or not isinstance(node.this, exp.RowNumber) \
            or node.args.get("partition_by"):
        return False
    order = node.args.get("order")
    keys = order.expressions if order is not None else []
    return len(keys) == 1 and isinstance(keys[0].this, exp.Column) \
        and keys[0].this.name == "member_id" and not keys[0].args.get("desc")


def _portable(node: exp.Expression, views: dict[str, str],
              member_key: bool = False) -> exp.Expression:
    """Rewrite one DuckDB construct into its Spark form (see the module docstring)."""
    if member_key and _numbers_members(node):
        return exp.cast(exp.column(MEMBER_KEY), "BIGINT")
    if isinstance(node, exp.Table) and node.name in views and node.args.get("db") is not None:
        return exp.Table(this=exp.to_identifier(views[node.name]), alias=node.args.get("alias"))
    if isinstance(node, (exp.Add, exp.Sub)) and node.left.is_type(exp.DataType.Type.DATE) \
            and node.right.type is not None and node.right.type.this in _INT_TYPES:
        cls = exp.DateAdd if isinstance(node, exp.Add) else exp.DateSub
        return cls(this=node.left, expression=node.right, unit=exp.var("DAY"))
    if isinstance(node, exp.DateDiff) and node.text("unit").upper() in ("DAY", ""):
        return exp.Anonymous(this="DATEDIFF", expressions=[
            exp.cast(node.this, "DATE"), exp.cast(node.expression, "DATE")])
    if isinstance(node, exp.Literal) and node.is_number and not node.is_int:
        return exp.cast(node, "DOUBLE")
    return node


def to_spark(sql: str, id_type: str = "BIGINT", views: dict[str, str] | None = None,
             member_key: bool = False) -> str:
    """Translate the DuckDB SQL of the aggregation into Spark SQL.

    Parameters
    ----------
    sql : str
        DuckDB SQL reading ``main.cohort`` and ``main.encounters``, normally
        :func:`evalkit.utilization.member_windows_sql`.
    id_type : str
        DuckDB type of ``member_id`` (``BIGINT`` or ``VARCHAR``).
    views : dict, optional
        Table name -> the Spark view to read instead (default :data:`VIEWS`).
    member_key : bool
        The cohort has a :data:`MEMBER_KEY` column: it replaces the numbering of the
        members by ``row_number() OVER (ORDER BY member_id)``.

    Returns
    -------
    str
        Spark SQL computing the same table.

    Notes
    -----
    The SQL is parsed once, its columns qualified and typed from :data:`INPUT_COLUMNS`
    (so ``SELECT *`` reads only the columns used), then the constructs listed in the
    module docstring are rewritten node by node. Everything else is SQLGlot's standard
    DuckDB -> Spark translation.
    """
    views = VIEWS if views is None else views
    schema = _schema(id_type)
    tree = sqlglot.parse_one(sql, read="duckdb")
    tree = qualify(tree, schema=schema, dialect="duckdb", validate_qualify_columns=False)
    tree = annotate_types(tree, schema=schema, dialect="duckdb")
    numberings = sum(1 for n in tree.walk() if _numbers_members(n))
    if member_key and numberings != 1:
        raise SparkEngineError(f"the aggregation's SQL numbers the members {numberings} times; "
                               f"{MEMBER_KEY} can stand for exactly one such numbering")
    tree = tree.transform(lambda n: _portable(n, views, member_key), copy=False)
    return tree.sql(dialect="spark")


def spark_sql(members: tuple | None = None, id_type: str = "BIGINT",
              member_key: bool = False) -> str:
    """Spark SQL for the member x window table: :func:`~evalkit.utilization.member_windows_sql`
    translated by :func:`to_spark` (no second copy of the rules exists)."""
    return to_spark(utilization.member_windows_sql(members), id_type, member_key=member_key)


def spark_session(master: str = "local[2]", conf: dict[str, str] | None = None,
                  app_name: str = "evalkit"):
    """Start (or reuse) a SparkSession suited to the aggregation.

    Parameters
    ----------
    master : str
        ``local[N]`` to run on this machine with N cores, or a cluster URL
        (``spark://host:7077``, ``yarn``, ``k8s://...``).
    conf : dict, optional
        Spark settings that override the defaults below.
    app_name : str

    Notes
    -----
    Defaults: the session time zone is UTC, the console progress bar and (in local
    mode) the web UI are off, logging is at ERROR, and local mode uses 8 shuffle
    partitions instead of 200 (the aggregation's shuffles are small; adaptive query
    execution coalesces them further). Starting a session takes 7-10 s: keep one per
    process; ``getOrCreate`` returns the running one, with a warning if it runs on another
    master than ``master`` (a process has one Spark driver).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkEngineError("engine.name 'spark' needs pyspark: install it with "
                               "`pip install 'evalkit[spark]'` (and Java 17 or later)") from None
    settings = {"spark.sql.session.timeZone": "UTC", "spark.ui.showConsoleProgress": "false",
                "spark.log.level": "ERROR"}
    if master.startswith("local"):
        settings |= {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8"}
    settings |= {k: str(v).lower() if isinstance(v, bool) else str(v)
                 for k, v in (conf or {}).items()}
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in settings.items():
        builder = builder.config(k, v)
    try:
        with warnings.catch_warnings():
            # pyspark checks the pandas version on start-up; evalkit never converts
            # Spark frames to pandas (results travel as Parquet)
            warnings.filterwarnings("ignore", message=".*does not yet fully support pandas",
                                    category=FutureWarning)
            spark = builder.getOrCreate()
    except Exception as err:  # the JVM failed to start: say what to check
        raise SparkEngineError(
            f"could not start Spark (master {master!r}): {err}. Spark needs Java 17 or "
            "later on PATH or in JAVA_HOME; check engine.spark_master and engine.spark_conf"
        ) from err
    spark.sparkContext.setLogLevel("ERROR")
    if spark.sparkContext.master != master:
        warnings.warn(f"a Spark session on master {spark.sparkContext.master!r} is already "
                      f"running in this process and is used instead of {master!r} (a process "
                      "has one Spark driver; stop that session first to use another master)",
                      EvalkitWarning, stacklevel=2)
    return spark


def _is_path(source: str) -> bool:
    return "/" in source or "://" in source or source.endswith(".parquet") or Path(source).exists()


def _frame(spark, source, table: str):
    """A Spark DataFrame for ``source``: a DataFrame, a Parquet path, or a table name."""
    if isinstance(source, Path):
        source = str(source)
    if isinstance(source, str):
        if _is_path(source):
            if "://" not in source and not Path(source).exists():
                raise SparkEngineError(f"{table}: Parquet not found: {source}")
            df = spark.read.parquet(source)
        elif spark.catalog.tableExists(source):
            df = spark.table(source)
        else:
            raise SparkEngineError(f"{table}: {source!r} is neither a Parquet path nor a "
                                   "table of the Spark session")
    else:
        df = source
    missing = [c for c in INPUT_COLUMNS[table] if c not in df.columns]
    if missing:
        raise SparkEngineError(f"{table}: missing column(s) {missing}; the aggregation needs "
                               f"{', '.join(INPUT_COLUMNS[table])} (see docs/data-contract.md)")
    extra = [MEMBER_KEY] if table == "cohort" and MEMBER_KEY in df.columns else []
    return df.select(*[f"`{c}`" for c in [*INPUT_COLUMNS[table], *extra]])


def member_windows_spark(spark, cohort, encounters):
    """The member x window table computed in Spark.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    cohort, encounters : DataFrame, str or Path
        The analysed cohort (as built by :func:`evalkit.cohort.build_cohort`) and the
        accepted claim lines (as loaded by :func:`evalkit.data.load.load_claims`): a
        Spark DataFrame, a Parquet path (file, folder or URI) or the name of a table in
        the session's catalog. Only the columns in :data:`INPUT_COLUMNS` are read, and the
        cohort's :data:`MEMBER_KEY` when it has one (then Spark does not number the
        members in a single partition; the key is checked first: integers, one per member,
        none missing, within +-2**62, else :class:`SparkEngineError`).

    Returns
    -------
    pyspark.sql.DataFrame
        The columns of :func:`evalkit.utilization.member_windows_sql`, unsorted (sort by
        member_id and period when order matters).
    """
    frames = {"cohort": _frame(spark, cohort, "cohort"),
              "encounters": _frame(spark, encounters, "encounters")}
    if MEMBER_KEY in frames["cohort"].columns:
        _check_member_key(frames["cohort"])
    return _member_windows(spark, frames)


#: Spark's integer types, which a member key may have.
_SPARK_INTEGERS = ("tinyint", "smallint", "int", "bigint")


def _check_member_key(cohort) -> None:
    """Refuse a cohort whose :data:`MEMBER_KEY` would merge members or overflow: it must
    be an integer column, one value per row, none missing, each within +-2**62 (the
    aggregation's window key is twice it plus one)."""
    from pyspark.sql import functions as F
    dtype = dict(cohort.dtypes)[MEMBER_KEY]
    if dtype not in _SPARK_INTEGERS:
        raise SparkEngineError(f"cohort: {MEMBER_KEY} must hold whole numbers (an integer "
                               f"column), not {dtype}")
    n, distinct, lo, hi = cohort.agg(F.count(F.lit(1)), F.count_distinct(MEMBER_KEY),
                                     F.min(MEMBER_KEY), F.max(MEMBER_KEY)).first()
    if distinct != n:
        raise SparkEngineError(f"cohort: {MEMBER_KEY} must name each member once: "
                               f"{n - distinct:,} of {n:,} rows repeat another's value or "
                               "have none")
    if n and (lo <= -2**62 or hi >= 2**62):
        raise SparkEngineError(f"cohort: {MEMBER_KEY} must lie within +-2**62 "
                               f"(found {lo} to {hi}); number the members 1, 2, ...")


def _member_windows(spark, frames: dict):
    """The aggregation on ``frames`` (:func:`_frame`'s cohort and encounters)."""
    types = dict(frames["cohort"].dtypes)
    id_type = "VARCHAR" if types["member_id"] == "string" else "BIGINT"
    for name, df in frames.items():
        df.createOrReplaceTempView(VIEWS[name])
    return spark.sql(spark_sql(None, id_type, member_key=MEMBER_KEY in types))


def build_member_windows_spark(con: duckdb.DuckDBPyConnection, spark, work_dir: str | Path,
                               table: str = "member_windows") -> None:
    """Create ``table`` in ``con`` with Spark doing the aggregation.

    The cohort and encounter columns the aggregation needs are written as Parquet to
    ``work_dir/spark``, Spark computes the table and writes it back as Parquet, and it
    is stored in ``con`` with exactly the column names, order and types DuckDB's own
    :func:`~evalkit.utilization.build_member_windows` gives (stored in member and
    period order, though readers should not rely on it). The staging folder is removed
    afterwards. With a cluster master, ``work_dir`` must be a folder the executors can
    read and write at the same path (a shared file system: NFS, a Kubernetes volume
    mounted in every pod, Databricks' ``/Volumes`` or ``/dbfs``); the staging files are
    named by ``file://`` URIs, so Spark reads them from that mount and not from the
    cluster's default file system (HDFS on YARN). For data already on the cluster call
    :func:`member_windows_spark`.
    """
    stage = Path(work_dir).resolve() / "spark"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        for name, cols in INPUT_COLUMNS.items():
            sel = ", ".join(_q(c) for c in cols)
            if name == "cohort":        # numbered here, so Spark need not (one partition)
                sel += f", row_number() OVER (ORDER BY member_id) AS {MEMBER_KEY}"
            con.execute(f"COPY (SELECT {sel} FROM {name}) TO {_lit(stage / f'{name}.parquet')} "
                        "(FORMAT parquet)")
        out = stage / "member_windows"
        # the staged key is right by construction: not checked again
        frames = {name: _frame(spark, (stage / f"{name}.parquet").as_uri(), name)
                  for name in INPUT_COLUMNS}
        _member_windows(spark, frames).write.mode("overwrite").parquet(out.as_uri())
        # DuckDB's own types for the same query (planned, not run), so both engines
        # leave an identical table behind
        types = con.execute(f"DESCRIBE {utilization.member_windows_sql()}").fetchall()
        sel = ", ".join(f"CAST({_q(c)} AS {t}) AS {_q(c)}" for c, t, *_ in types)
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT {sel} "
                    f"FROM read_parquet({_lit(out / '*.parquet')}) ORDER BY member_id, period")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


__all__ = ["to_spark", "spark_sql", "spark_session", "member_windows_spark",
           "build_member_windows_spark", "SparkEngineError", "INPUT_COLUMNS", "MEMBER_KEY",
           "VIEWS"]
