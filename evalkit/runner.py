"""Run an analysis end to end: validate params, prepare data, execute the workbooks.

``evalkit run PARAMS.yaml [--out DIR] [--set KEY=VALUE ...]`` and :func:`run` do the same:

1. validate the params (overrides included) before any work;
2. prepare the analysis database (:func:`evalkit.prepare.prepare`);
3. execute each workbook with papermill in a real Jupyter kernel, injecting the path of
   the validated params; save each executed notebook and its HTML. The kernels start
   (and import evalkit) while step 2 runs and are reused from workbook to workbook,
   reset in between to a new kernel's state (:mod:`evalkit.kernels`); two workbooks
   execute at once when the machine has the cores and the memory
   (:func:`default_workers`; a kernel started for nothing is stopped), each after the
   workbooks whose output it reads (``after`` in :mod:`evalkit.catalog`), the most
   work first (:func:`evalkit.catalog.most_work_first`). The numbers are those
   of one workbook at a time, each in a kernel of its own (``workers=1,
   shared_kernels=False``);
4. write the brief, ``brief.html`` and ``brief.pdf`` (:mod:`evalkit.report`);
5. write the tables as ``tables/<name>.csv`` and ``tables.xlsx`` (:mod:`evalkit.export`);
6. in a public run, scan every output (:func:`_privacy_scan`);
7. merge the workbooks' records into ``results.json`` (atomically), with the software the
   run was made with (:mod:`evalkit.provenance`).

``--only WORKBOOK`` (``only=``) re-runs some workbooks into a finished run instead,
keeping the others (:func:`rerun_checks` says when it is refused); steps 1 and 2 are the
run's own, steps 4 to 7 are done again. A run into a folder holding an earlier run
replaces it, warning first about notebooks of workbooks its params do not list.

One run at a time per output folder: the run locks the folder
(:class:`~evalkit.runlock.RunLock`) and a second run into it is refused, naming the run
that holds it. Every output carries the run's id (``run_id`` in ``results.json`` and
``params.json``, ``metadata.evalkit.run_id`` in each notebook and a
``<meta name="evalkit-run-id">`` tag in its HTML, the brief's provenance table);
:func:`read_status` checks that they agree.

Notebooks are executed into a hidden temporary file, saved atomically as they go (at most
every second, :class:`~evalkit.kernels.ThrottledSaves`) and when they end, and renamed
into place only when the workbook succeeded. A failing workbook stops the
run (a workbook executing beside it is let finish and recorded): its partial notebook is kept as ``<name>.failed.ipynb`` (valid JSON, the failing
cell marked), ``results.json`` records ``status: failed`` with the step, notebook and
cell, and a :class:`~evalkit.errors.WorkbookError` is raised (the CLI exits non-zero).
The step being worked on (``prepare``, a workbook, ``brief``, ``privacy scan``) is
saved in ``results.json`` as the run goes, so a run killed at any point is reported as
failed in the right step.
"""
from __future__ import annotations

import datetime as _dt
import functools
import html
import itertools
import json
import operator
import os
import queue
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import duckdb

# before the packages that load nbformat (see evalkit/_nbformat.py)
from ._nbformat import nbformat  # noqa: I001

import papermill as pm
import psutil
from nbconvert import HTMLExporter
from papermill.iorw import papermill_io

from . import params as _params
from ._version import __version__
from .data.source import describe_source
from .errors import EvalkitError, EvalkitWarning, WorkbookError
from .kernel_server import server_pid
from .kernels import ENGINE, OWN_ENGINE, WorkbookKernel
from .export import TABLES_DIR, XLSX_NAME, export_tables
from .limits import check_disk
from .provenance import provenance
from .results import assemble, write_json_atomic, write_text_atomic
from .privacy import (Finding, ScanReport, redact_notebook, redact_params, scan_outputs,
                      scan_text, scrub)
from .runlock import LOCK_NAME, RunIdentity, RunLock, new_run_id
from .status import RUN_ID_META, read_status
from .prepare import DB_NAME, prepare, scan_targets

from .catalog import BY_NAME, CATALOG, WORKBOOK_DIR, most_work_first, in_run_order


@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    results_path: Path
    status: str
    notebooks: list[Path]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=2)
def _exporter(show_code: bool) -> HTMLExporter:
    """One HTML exporter per setting, kept: making one (loading and compiling its
    templates) costs more than exporting a workbook with it."""
    return HTMLExporter(exclude_input=not show_code, exclude_input_prompt=not show_code,
                        exclude_output_prompt=not show_code)


#: The kept exporters export one notebook at a time.
_EXPORT_LOCK = threading.Lock()


def _html(notebook: Path, show_code: bool = True) -> Path:
    """Export a notebook to HTML next to it; the run id of its metadata goes into a
    ``<meta name="evalkit-run-id">`` tag. Without ``show_code`` (``report.show_code``)
    the code cells and their prompts are left out: readers see the prose, tables and
    figures. A failed workbook is exported with its code, to show where it failed. The
    parameters papermill injected (the path of the run's params on this machine) are
    never exported; the executed notebook keeps them."""
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells
                if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    with _EXPORT_LOCK:
        body, _ = _exporter(show_code).from_notebook_node(nb)
    run_id = (nb.metadata.get("evalkit") or {}).get("run_id")
    if run_id:
        body = body.replace("<head>", f'<head>\n<meta name="{RUN_ID_META}" '
                            f'content="{html.escape(run_id)}">', 1)
    out = notebook.with_suffix(".html")
    write_text_atomic(out, body)
    return out


#: Scheme papermill is given for notebook paths so that every save of an executing
#: notebook goes through :func:`_write_atomic` (a crash mid-save keeps the last good one).
_ATOMIC = "evalkit-atomic://"


class _AtomicHandler:
    """papermill I/O handler for ``evalkit-atomic://PATH``: local files, written atomically."""

    def read(self, path):
        return Path(path[len(_ATOMIC):]).read_text(encoding="utf-8")

    def listdir(self, path):
        return [str(p) for p in Path(path[len(_ATOMIC):]).iterdir()]

    def write(self, buf, path):
        write_text_atomic(Path(path[len(_ATOMIC):]), buf)

    def pretty_path(self, path):
        return path[len(_ATOMIC):]


def _register_atomic() -> None:
    if not any(scheme == _ATOMIC for scheme, _ in papermill_io._handlers):
        papermill_io.register(_ATOMIC, _AtomicHandler())


def _running_name(dest: Path) -> Path:
    """Where a workbook's notebook is saved while it executes (hidden, not an output)."""
    return dest.with_name(f".{dest.stem}.running.ipynb")


def failed_name(dest: Path) -> Path:
    """Name of a failed workbook's partial notebook: ``03_utilization.failed.ipynb``."""
    return dest.with_name(f"{dest.stem}.failed.ipynb")


def _seal_notebook(tmp: Path, dest: Path, run_id: str, status: str, secrets) -> Path:
    """Move an executed notebook from ``tmp`` to ``dest``: secrets removed, the run id and
    status in ``metadata.evalkit``, written atomically. A notebook that was never saved
    (the kernel did not start) becomes an empty notebook saying so."""
    try:
        if secrets:
            redact_notebook(tmp, secrets)
        nb = nbformat.read(tmp, as_version=4)
    except Exception:  # noqa: BLE001 - missing or unreadable: record that instead
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
            "The workbook stopped before its notebook could be saved.")])
    nb.metadata["evalkit"] = {"run_id": run_id, "status": status}
    write_text_atomic(dest, nbformat.writes(nb))
    tmp.unlink(missing_ok=True)
    return dest


def _failed_cell(notebook: Path) -> str:
    """Describe the failing cell of an executed notebook: its number and first line."""
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:  # noqa: BLE001 - the notebook may itself be damaged
        return "unknown cell"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code_cells, start=1):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            return f"code cell {i} ({first[:60]!r})"
    return "unknown cell"


def run(params_path: str | Path | None = None, out: str | Path | None = None,
        overrides: list[str] | dict | None = None, quiet: bool = False,
        params: _params.Params | None = None, kernel_name: str = "python3",
        only: list[str] | str | None = None, workers: int | None = None,
        shared_kernels: bool = True, fork_kernels: bool = True) -> RunResult:
    """Run the workbooks named in the params; see the module docstring.

    Parameters
    ----------
    params_path : YAML params file (or None to use ``params`` / the defaults).
    out : output folder; default ``runs/<params file stem>``.
    overrides : ``["data.members=100000", ...]`` or a mapping of dotted keys to values.
    quiet : no progress messages.
    only : re-run just these workbooks (``03_utilization`` or ``utilization``; a list or
        a comma-separated string) into the finished run in ``out``, keeping its other
        notebooks and estimates (:func:`rerun_checks` says what must match).
    workers : how many workbooks may execute at once (each in its own kernel); default
        :func:`default_workers`. A workbook that reads another's output (``after`` in
        :mod:`evalkit.catalog`) waits for it.
    shared_kernels : execute several workbooks one after another in the same kernel
        (reset between them, :mod:`evalkit.kernels`), started while the data are
        prepared; False starts a new kernel for each workbook. ``workers=1,
        shared_kernels=False`` is the plain sequential run (same numbers, slower).
    fork_kernels : start each kernel as a fork of the process's kernel fork server, which
        imported the scientific stack once (:mod:`evalkit.kernel_server`); False starts
        each as a Python process of its own, importing it anew (same numbers, slower).

    Returns
    -------
    RunResult with the output folder, the results.json path and the status.
    """
    started = _now()
    if params is None:
        params = _params.load(params_path, overrides)
    elif overrides:
        params = _params.validate(_params.apply_overrides(params.to_dict(), overrides))
    stem = Path(params_path).stem if params_path else "default"
    out_dir = Path(out) if out else Path("runs") / stem
    if workers is not None:
        try:
            if isinstance(workers, bool) or operator.index(workers) < 1:
                raise TypeError
        except TypeError:
            raise EvalkitError(f"workers must be a whole number of at least 1 (or None for "
                               f"the default), not {workers!r}") from None
        workers = operator.index(workers)
    how = _Execution(kernel_name, workers, shared_kernels, fork_kernels)
    if only:
        return _rerun(params, out_dir, workbook_names(only), quiet, how)
    _check_output_dir(out_dir)
    check_disk(params, out_dir)                   # an absurd size is refused before any work
    run_id = new_run_id()
    lock = RunLock(out_dir, run_id).acquire()     # a second run into the folder stops here
    try:
        return _run_locked(params, out_dir, run_id, lock.identity, started, quiet, how)
    finally:
        lock.release()


def workbook_names(only: list[str] | str) -> list[str]:
    """Workbook names from ``--only`` values: ``03_utilization``, ``utilization`` or
    ``03_utilization.ipynb``, each value possibly a comma-separated list."""
    values = [only] if isinstance(only, str) else list(only)
    by_stem = {Path(w.file).stem: w.name for w in CATALOG}
    names = []
    for v in (x.strip() for value in values for x in str(value).split(",")):
        if not v:
            continue
        name = v if v in BY_NAME else by_stem.get(v.removesuffix(".ipynb"))
        if name is None:
            raise EvalkitError(f"--only {v}: no such workbook; give one of "
                               + ", ".join(f"{Path(w.file).stem} ({w.name})" for w in CATALOG))
        names.append(name)
    if not names:
        raise EvalkitError("--only names no workbook")
    return in_run_order(names)


def _warn_unlisted(out_dir: Path, workbooks: list[str]) -> None:
    """Warn before a run removes notebooks of an earlier run in its folder that its own
    params do not list (a folder holds one run)."""
    gone = sorted(p.name for w in CATALOG if w.name not in workbooks
                  for p in (out_dir / w.file, failed_name(out_dir / w.file)) if p.exists())
    if gone:
        warnings.warn(
            f"{out_dir} held notebooks of an earlier run that this run's params do not list: "
            f"{', '.join(gone)}. They are removed, since a folder holds one run; to re-run "
            "some workbooks of a finished run and keep the others, use "
            "`evalkit run PARAMS --out RUN --only WORKBOOK`.", EvalkitWarning, stacklevel=4)


def rerun_checks(params: _params.Params, out_dir: Path, names: list[str]) -> tuple[dict, _params.Params]:
    """Check that ``names`` can be re-run into the run in ``out_dir``; return its results
    and the params with the run's own workbooks list.

    The folder must hold a finished run (``status: ok``) whose params hash equals that of
    ``params`` once their ``workbooks`` list is the run's (so a params file listing only
    the workbook to re-run is accepted), ``names`` must be among the run's workbooks, and
    the run's prepared database (``work/``) must be there with the run's data fingerprint:
    the workbooks read it, not the data source, so they see the data the others saw.
    """
    path = out_dir / "results.json"
    try:
        prior = json.loads(path.read_text())
        run_block = prior["run"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EvalkitError(f"--only needs a finished run in {out_dir}, and {path} is missing "
                           "or not a results file of evalkit; run all the workbooks first") from None
    status = read_status(out_dir)["status"]
    if status != "ok":
        raise EvalkitError(f"--only needs a finished run in {out_dir}, and that run's status is "
                           f"{status} (`evalkit status {out_dir}`); run all the workbooks again")
    recorded = (run_block.get("params") or {}).get("workbooks") or []
    full = _params.validate({**params.to_dict(), "workbooks": recorded})
    if full.digest() != run_block.get("params_hash"):
        raise EvalkitError(
            f"--only: these params are not the params of the run in {out_dir} (params hash "
            f"{full.digest()[:12]} against the run's {str(run_block.get('params_hash'))[:12]}; "
            "the workbooks list may differ, nothing else); run all the workbooks into a new "
            "folder instead")
    missing = [n for n in names if n not in recorded]
    if missing:
        raise EvalkitError(f"--only: {', '.join(missing)} is not among the run's workbooks "
                           f"({', '.join(recorded)}); run the params listing it into a new folder")
    db = out_dir / "work" / DB_NAME
    try:
        con = duckdb.connect(str(db), read_only=True)
        try:
            fp = con.execute("SELECT fingerprint FROM run_info").fetchall()[0][0]
        finally:
            con.close()
    except (duckdb.Error, IndexError):
        fp = None
    if not db.is_file() or fp != run_block.get("data_fingerprint"):
        raise EvalkitError(f"--only: the run's prepared data ({db}) is missing or is not the "
                           "data the run analysed (its fingerprint differs); run all the "
                           "workbooks again")
    return prior, full


def _rerun(params, out_dir: Path, names: list[str], quiet: bool, how: _Execution) -> RunResult:
    """Re-run ``names`` into the finished run in ``out_dir`` (see :func:`run`'s ``only``)."""
    started = _now()
    if not (out_dir / "results.json").is_file():
        raise EvalkitError(f"--only needs a finished run in {out_dir}, and it holds none (no "
                           "results.json); run all the workbooks first")
    try:
        run_id = json.loads((out_dir / "results.json").read_text())["run"]["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        run_id = new_run_id()           # rerun_checks says what is wrong, under the lock
    lock = RunLock(out_dir, run_id).acquire()
    try:
        prior, params = rerun_checks(params, out_dir, names)
        secrets = redact_params(params.to_dict())[1]
        run_info = {**prior["run"], "status": "running", "step": names[0], "finished": None,
                    **{k: v for k, v in lock.identity.to_dict().items() if k != "run_id"}}
        for key in ("brief", "privacy", "tables", "failed_step", "error"):
            run_info.pop(key, None)
        run_info["reruns"] = [*prior["run"].get("reruns", []),
                              {"workbooks": names, "started": started, **provenance()}]
        for wb in names:
            dest = out_dir / BY_NAME[wb].file
            (out_dir / "parts" / f"{wb}.json").unlink(missing_ok=True)
            for nb in (dest, failed_name(dest), _running_name(dest)):
                nb.unlink(missing_ok=True)
                nb.with_suffix(".html").unlink(missing_ok=True)
        results_path = out_dir / "results.json"
        write_json_atomic(results_path, assemble(out_dir, run_info, params.workbooks))
        _say(f"evalkit {__version__}: re-running {', '.join(names)} into the run {run_id} "
             "(its other workbooks are kept)", quiet)
        return _run_guarded(params, out_dir, out_dir / "params.json", results_path, run_info,
                            secrets, quiet, how, only=names)
    finally:
        lock.release()


def _run_locked(params, out_dir: Path, run_id: str, identity: RunIdentity, started: str,
                quiet: bool, how: _Execution) -> RunResult:
    """The run itself, with the output folder locked."""
    results_path = out_dir / "results.json"
    _warn_unlisted(out_dir, params.workbooks)
    results_path.unlink(missing_ok=True)          # never leave an old success behind
    shutil.rmtree(out_dir / "parts", ignore_errors=True)
    shutil.rmtree(out_dir / TABLES_DIR, ignore_errors=True)
    (out_dir / XLSX_NAME).unlink(missing_ok=True)
    for name in (w.file for w in CATALOG):        # nor notebooks of an earlier run
        dest = out_dir / name
        for nb in (dest, failed_name(dest), _running_name(dest)):
            nb.unlink(missing_ok=True)
            nb.with_suffix(".html").unlink(missing_ok=True)
    for stale in [*out_dir.glob("brief*.html"), *out_dir.glob("brief*.pdf")]:  # nor earlier briefs
        stale.unlink(missing_ok=True)
    # Secrets (an encryption key, a password in a URL) are needed only to read the
    # source, which happens in this process: no output, not even params.json, holds them.
    safe_params, secrets = redact_params(params.to_dict())
    params_file = out_dir / "params.json"
    write_json_atomic(params_file, {_params.RUN_ID_KEY: run_id, **safe_params})

    run_info = {"run_id": run_id, "evalkit_version": __version__, "params": safe_params,
                "params_hash": params.digest(), "seed": params.seed,
                "data_source": describe_source(params).text,
                "data_fingerprint": None, "started": started, "finished": None,
                "status": "running", "step": "prepare", "workbooks": [],
                **provenance(),
                **{k: v for k, v in identity.to_dict().items() if k != "run_id"}}
    write_json_atomic(results_path, {"run": run_info, "estimates": [], "tables": {}})
    return _run_guarded(params, out_dir, params_file, results_path, run_info, secrets, quiet,
                        how)


def _run_guarded(params, out_dir, params_file, results_path, run_info, secrets, quiet,
                 how, only=()) -> RunResult:
    """The run's steps; on any error or interruption the run is recorded as failed."""
    run_id = run_info["run_id"]
    try:
        return _run_steps(params, out_dir, params_file, results_path, run_info, secrets,
                          quiet, how, only)
    except BaseException as err:   # Ctrl-C or an unexpected error: never leave "running"
        if run_info["status"] == "running":
            for w in run_info["workbooks"]:
                if w["status"] == "running":
                    w["status"] = "failed"
                    _keep_partial(out_dir, w, run_id, secrets)
            _finish(run_info, results_path, out_dir, params, "failed",
                    failed_step=run_info.get("step"),
                    error=scrub(f"{type(err).__name__}: {err}", secrets))
        raise


def _keep_partial(out_dir: Path, status: dict, run_id: str, secrets) -> None:
    """Keep the last save of an interrupted workbook as its ``.failed.ipynb`` (and HTML)."""
    dest = out_dir / status["notebook"]
    tmp = _running_name(dest)
    if not tmp.exists():
        return
    try:
        kept = _seal_notebook(tmp, failed_name(dest), run_id, "failed", secrets)
        status["notebook"] = kept.name
        _html(kept)
    except Exception:  # noqa: BLE001 - the run is already failing; keep its own error
        pass


#: Keys of the run block kept only while the run is running (who is running it).
_LIVE_KEYS = ("pid", "host", "process_started", "step")


def _finish(run_info: dict, results_path: Path, out_dir: Path, params, status: str,
            **extra) -> None:
    """Write the run's final status (the process identity is only kept while running)."""
    run_info.update(status=status, finished=_now(), **extra)
    for k in _LIVE_KEYS:
        run_info.pop(k, None)
    write_json_atomic(results_path, assemble(out_dir, run_info, params.workbooks))


def _step(run_info: dict, results_path: Path, step: str) -> None:
    """Record (on disk) the step the run is starting, so a kill is blamed on it."""
    run_info["step"] = step
    write_json_atomic(results_path, {"run": run_info, "estimates": [], "tables": {}})


@dataclass(frozen=True)
class _Execution:
    """How the workbooks are executed (see :func:`run`)."""
    kernel_name: str = "python3"
    workers: int | None = None
    shared_kernels: bool = True
    fork_kernels: bool = True


#: Options of every kernel: its own log only for errors that stop it.
_KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]

#: A kernel's peak memory, estimated from the size of the run's database: what a kernel
#: holds before any data (evalkit and its libraries, ~0.4 GB) plus so many bytes per byte
#: of database. Measured: the demo plan (20,000 members, 16 MB of database), largest
#: kernel 0.55 GB; a million members (0.64 GB of database), largest kernel 5.2-5.6 GB
#: (one kernel executing every workbook in turn, before kernels gave back what a workbook
#: freed; the costs workbook alone peaks at 2.4 GB): about 8 bytes a byte, taken here
#: with a margin.
#: (A flat 40 bytes a byte, fitted to the demo alone, asked 51 GB for two kernels at a
#: million members, so such a run executed one workbook at a time on a 24 GB machine
#: where two fit.)
KERNEL_BASE_BYTES = 0.5 * 2**30
KERNEL_BYTES_PER_DB_BYTE = 10


def kernel_memory(db_bytes: int) -> float:
    """Bytes a kernel may peak at on a run whose database has ``db_bytes`` bytes."""
    return KERNEL_BASE_BYTES + KERNEL_BYTES_PER_DB_BYTE * db_bytes


def default_workers(out_dir: Path) -> int:
    """Workbooks executed at once by default: 2 on a machine of 2 cores or more when two
    kernels of the size this run's database asks (:func:`kernel_memory`) fit in the
    memory available now, else 1. More than 2 does not pay: the workbooks wait on
    one another (``after`` in :mod:`evalkit.catalog`) and their statistics use more than
    one core at times."""
    db = out_dir / "work" / DB_NAME
    need = 2 * kernel_memory(db.stat().st_size if db.is_file() else 0)
    return 2 if (os.cpu_count() or 1) >= 2 and need < psutil.virtual_memory().available else 1


class _KernelPool:
    """Worker threads, each owning one :class:`~evalkit.kernels.WorkbookKernel` (started in
    the thread, which alone talks to it), executing the workbooks handed to
    :meth:`submit`; :meth:`next_done` returns them as they finish. The ``size`` kernels
    start when the pool is made, so they start and import evalkit while the data are
    prepared, one after another: the data preparation keeps a core busy, and two kernels
    importing at once beside it slowed it down, so that every kernel was ready later (on
    the demo the first now starts its workbook as the data are ready, 2.4 s sooner, the
    second 0.3 s sooner); :meth:`resize` then sets how many execute workbooks."""

    def __init__(self, how: _Execution, out_dir: Path, size: int = 1):
        self._how, self._cwd = how, out_dir.resolve()
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []      # every one started, ended or not
        self._size = 0
        self._starting = threading.Lock()
        self.resize(size)

    @property
    def size(self) -> int:
        return self._size

    def resize(self, size: int) -> None:
        """Have ``size`` kernels: start more, or stop idle ones (call it before any
        workbook is submitted: a kernel stops when it takes the next task off the queue)."""
        while self._size < size:
            t = threading.Thread(target=self._work, daemon=True,
                                 name=f"evalkit-kernel-{len(self._threads) + 1}")
            t.start()
            self._threads.append(t)
            self._size += 1
        while self._size > max(size, 1):
            self._tasks.put(None)
            self._size -= 1

    def _start(self) -> tuple[WorkbookKernel | None, BaseException | None]:
        """A new kernel (after any other that is starting), or the error that stopped it."""
        try:
            with self._starting:
                return WorkbookKernel(self._how.kernel_name, self._cwd, _KERNEL_ARGS,
                                      fork=self._how.fork_kernels), None
        except BaseException as err:  # noqa: BLE001 - each workbook given to it fails with it
            return None, err

    def _work(self) -> None:
        kernel, start_error = self._start()
        try:
            for name, task in iter(self._tasks.get, None):
                if kernel is not None and not kernel.alive:
                    # it died in its last workbook (which failed with it): a workbook
                    # handed over before that failure gets a new kernel
                    kernel.shutdown()
                    kernel, start_error = self._start()
                if kernel is None:
                    self._done.put((name, start_error))
                    continue
                try:
                    task(kernel)
                    self._done.put((name, None))
                except BaseException as err:  # noqa: BLE001 - the runner handles it
                    self._done.put((name, err))
        finally:
            if kernel is not None:
                kernel.shutdown()

    def submit(self, name: str, task) -> None:
        """Execute ``task(kernel)`` on the next free kernel."""
        self._tasks.put((name, task))

    def next_done(self) -> tuple[str, BaseException | None]:
        """The next task to finish, and its error (None if it succeeded)."""
        return self._done.get()

    def close(self, wait: bool = True) -> None:
        """Stop each kernel once its workbook is done, waiting for that with ``wait``;
        without, a kernel still executing stops when its workbook ends or, at the latest,
        when the runner's process does (a kernel ends when its parent process has gone).
        Calling it again (with ``wait``) waits for the kernels a first call stopped."""
        for _ in range(self._size):
            self._tasks.put(None)
        self._size = 0
        for t in self._threads if wait else ():
            t.join()


class PeakMemory:
    """Peak resident memory of the processes doing each step of a run, sampled every
    ``interval`` seconds in a background thread: a workbook's kernel and the processes it
    started (the generic bootstrap's workers), or the runner alone while it prepares the
    data. The way ``benchmarks/end_to_end.py`` measures a whole run; a peak shorter than
    the interval can be missed. Use :meth:`watch` when a step starts and :meth:`done`
    when it ends; :meth:`close` stops the thread.

    A step's processes are listed anew every ``relist`` samples, their memory read at
    every sample: listing a process's descendants reads every process of the machine
    (about 1 ms), reading one process's memory a hundredth of that, and the kernels
    seldom start processes of their own."""

    def __init__(self, interval: float = 0.25, relist: int = 4):
        self._interval, self._relist = interval, relist
        self._watched: dict[str, tuple[int | None, bool]] = {}
        self._peaks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True,
                                        name="evalkit-memory")
        self._thread.start()

    @staticmethod
    def processes(pid: int | None, children: bool = True) -> list[psutil.Process]:
        """Process ``pid`` (None: none, only this process's children, the kernel fork
        server aside but not the kernels it forked) and, with ``children``, the processes
        it started; none if it has gone."""
        try:
            root = psutil.Process(pid) if pid is not None else psutil.Process()
            return ([root] if pid is not None else []) + (
                [p for p in root.children(recursive=True) if p.pid != server_pid()]
                if children else [])
        except psutil.Error:
            return []

    @staticmethod
    def rss(procs: list[psutil.Process]) -> int:
        """Bytes resident now in ``procs``; processes gone count 0."""
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    @classmethod
    def resident(cls, pid: int | None, children: bool = True) -> int:
        """Bytes resident now in process ``pid`` (None: this process's children only) and,
        with ``children``, in the processes it started; processes gone count 0."""
        return cls.rss(cls.processes(pid, children))

    def _sample(self) -> None:
        listed: dict[tuple[int | None, bool], list[psutil.Process]] = {}
        for n in itertools.count(1):
            if self._stop.wait(self._interval):
                return
            with self._lock:
                watched = dict(self._watched)
            if n % self._relist == 0:
                listed.clear()
            for key, how in watched.items():
                if how not in listed:
                    listed[how] = self.processes(*how)
                rss = self.rss(listed[how])
                with self._lock:
                    if key in self._peaks:
                        self._peaks[key] = max(self._peaks[key], rss)

    def watch(self, key: str, pid: int | None, children: bool = True) -> None:
        """Start following step ``key``: process ``pid`` (None: this process's children)
        and, with ``children``, its descendants."""
        with self._lock:
            self._watched[key] = (pid, children)
            self._peaks[key] = self.resident(pid, children)

    def done(self, key: str) -> int | None:
        """Stop following ``key``; its peak in bytes (None if it was never watched)."""
        with self._lock:
            pid_children = self._watched.pop(key, None)
            peak = self._peaks.pop(key, None)
        if pid_children is None:
            return None
        return max(peak or 0, self.resident(*pid_children))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _megabytes(peak: int | None, key: str = "peak_memory_mb") -> dict:
    """``{key: ...}`` (10^6 bytes) for a status record; nothing if unknown."""
    return {} if not peak else {key: round(peak / 1e6)}


def _peak_text(status: dict, key: str = "peak_memory_mb") -> str:
    return f", peak memory {status[key] / 1e3:.2f} GB" if status.get(key) else ""


def _execute(wb: str, out_dir: Path, params_file: Path, how: _Execution, progress: bool,
             peaks: PeakMemory, kernel: WorkbookKernel | None = None) -> None:
    """Execute workbook ``wb`` into its hidden running notebook, in ``kernel`` (reset
    first) or, without one, in a kernel of its own started in ``out_dir``; ``peaks``
    follows the kernel's memory (the runner's children when the kernel is its own: one
    workbook executes at a time then)."""
    if kernel is None or kernel.pid is not None:
        peaks.watch(wb, kernel.pid if kernel is not None else None)
    src = WORKBOOK_DIR / BY_NAME[wb].file
    tmp = _running_name(out_dir / BY_NAME[wb].file)
    common = {"kernel_name": how.kernel_name, "progress_bar": progress, "log_output": False,
              "parameters": {"params_path": str(params_file.resolve())}}
    if kernel is None:
        pm.execute_notebook(str(src), _ATOMIC + str(tmp.resolve()), cwd=str(out_dir),
                            engine_name=OWN_ENGINE, extra_arguments=_KERNEL_ARGS,
                            fork_kernels=how.fork_kernels, **common)
    else:
        kernel.prepare_workbook()
        pm.execute_notebook(str(src), _ATOMIC + str(tmp.resolve()), engine_name=ENGINE,
                            kernel=kernel, **common)


def _execute_workbooks(order, params, out_dir, params_file, results_path, run_info, secrets,
                       quiet, how, pool, peaks: PeakMemory) -> list[Path]:
    """Execute the workbooks of ``order``: one by one in kernels of their own without a
    ``pool``; else on the pool's kernels, as many at once as it has, each workbook after
    those it reads (``after`` in the catalogue), the most work first when
    there are several kernels (:func:`~evalkit.catalog.most_work_first`). A failure stops
    the run once the workbooks already executing have finished; see the module
    docstring."""
    running: dict[str, tuple[dict, float]] = {}
    began: dict[str, float] = {}            # when a kernel took the workbook
    # a re-run (--only) records its own figure with it; the run's is the first run's
    at_once = pool.size if pool is not None else 1
    record = run_info["reruns"][-1] if run_info.get("reruns") else run_info
    record["workbooks_at_once"] = at_once
    progress = not quiet and (pool is None or pool.size == 1)

    def start(i: int, wb: str) -> None:
        status = {"workbook": wb, "notebook": BY_NAME[wb].file, "status": "running"}
        _put_status(run_info["workbooks"], status, order)
        running[wb] = (status, time.perf_counter())
        _step(run_info, results_path, ", ".join(w for w in order if w in running))
        _say(f"[{i}/{len(order)}] {wb}: executing {BY_NAME[wb].file}", quiet)

    def stop(wb: str, err: BaseException | None) -> tuple[dict, dict]:
        """The workbook's kernel is done with it: its status and figures (its seconds from
        when its kernel took it, which may be after it was handed over)."""
        status, t1 = running.pop(wb)
        t1 = began.pop(wb, t1)
        figures = {"seconds": round(time.perf_counter() - t1, 2), **_megabytes(peaks.done(wb))}
        if err is not None and not isinstance(err, Exception):
            raise err                   # Ctrl-C, or an exit: not the workbook's failure
        return status, figures

    def end(wb: str, err: BaseException | None, status: dict,
            figures: dict) -> WorkbookError | None:
        """Seal the workbook's notebook and export its HTML (:func:`_workbook_ended`)."""
        failure = _workbook_ended(wb, err, status, out_dir, run_info["run_id"], secrets,
                                  params.report.show_code)
        if failure is None:
            status.update(figures)
            _say(f"      {wb} done in {status['seconds']:.1f}s{_peak_text(status)}", quiet)
        return failure

    if pool is None:
        for i, wb in enumerate(order, start=1):
            start(i, wb)
            try:
                _execute(wb, out_dir, params_file, how, progress, peaks)
                err = None
            except Exception as e:  # noqa: BLE001 - papermill re-raises the kernel's error
                err = e
            failure = end(wb, err, *stop(wb, err))
            if failure is not None:
                _finish(run_info, results_path, out_dir, params, "failed", failed_step=wb)
                raise failure
        return [out_dir / BY_NAME[wb].file for wb in order]

    # one kernel: the catalogue's order; several: the most work first
    waiting = most_work_first(order) if pool.size > 1 else list(order)
    finished, failures = set(), []

    def submit_ready() -> None:
        ready = [w for w in waiting
                 if all(d in finished for d in BY_NAME[w].after if d in order)]
        while ready and not failures and len(running) < pool.size:
            wb = ready.pop(0)
            waiting.remove(wb)
            start(len(order) - len(waiting), wb)
            pool.submit(wb, functools.partial(begin, wb))

    def begin(wb: str, kernel: WorkbookKernel) -> None:       # in the kernel's thread
        began[wb] = time.perf_counter()
        _execute(wb, out_dir, params_file, how, progress, peaks, kernel)

    submit_ready()
    preload_report()            # while the kernels execute, off the run's last, serial steps
    while running:
        wb, err = pool.next_done()
        status, figures = stop(wb, err)
        if err is None:
            # its kernel takes the next workbook while this one's notebook is sealed
            # and exported; those that read its output may start
            finished.add(wb)
            submit_ready()
        failure = end(wb, err, status, figures)
        if failure is not None:
            failures.append((wb, failure))
    if failures:
        wb, failure = failures[0]
        _finish(run_info, results_path, out_dir, params, "failed", failed_step=wb)
        raise failure
    return [out_dir / BY_NAME[wb].file for wb in order]


def _workbook_ended(wb: str, err: Exception | None, status: dict, out_dir: Path, run_id: str,
                    secrets, show_code: bool) -> WorkbookError | None:
    """Seal an executed workbook's notebook and export its HTML; on ``err``, keep it as
    ``.failed.ipynb``, record where and why in ``status`` and return the error to raise."""
    dest = out_dir / BY_NAME[wb].file
    tmp = _running_name(dest)
    if err is None:
        _seal_notebook(tmp, dest, run_id, "ok", secrets)
        _html(dest, show_code)
        status.update(status="ok")
        return None
    kept = _seal_notebook(tmp, failed_name(dest), run_id, "failed", secrets)
    cell = _failed_cell(kept)
    detail = scrub(f"{getattr(err, 'ename', type(err).__name__)}: "
                   f"{getattr(err, 'evalue', err)}", secrets)
    if _kernel_died(err):
        detail = ("the Jupyter kernel died (killed, or out of memory) while running "
                  f"the workbook: {detail}")
    status.update(status="failed", notebook=kept.name, cell=cell, error=detail)
    _html(kept)
    return WorkbookError(
        f"workbook '{wb}' failed in {cell}: {detail.rstrip('.')}. The partial notebook is kept "
        f"as {kept} with the failing cell marked; results.json records the failure.")


def _run_steps(params, out_dir, params_file, results_path, run_info, secrets, quiet,
               how, only=()) -> RunResult:
    """Prepare the data, execute the workbooks, write the brief and the tables, scan a
    public run; with ``only`` (a re-run into a finished run) just those workbooks run, on
    the run's prepared data."""

    def finish(status: str, **extra) -> None:
        _finish(run_info, results_path, out_dir, params, status, **extra)

    order = in_run_order(only or params.workbooks)
    # kernels start while the data are prepared: as many as may execute at once, unless
    # the memory check after preparation (default_workers) says fewer
    early = min(how.workers or (2 if (os.cpu_count() or 1) >= 2 else 1), len(order))
    pool = _KernelPool(how, out_dir, early) if how.shared_kernels else None
    peaks = PeakMemory()
    try:
        if not only:
            _prepare(params, out_dir, run_info, secrets, quiet, finish, peaks)
        _register_atomic()
        if pool is not None:
            pool.resize(min(how.workers or default_workers(out_dir), len(order)))
        notebooks = _execute_workbooks(order, params, out_dir, params_file, results_path,
                                       run_info, secrets, quiet, how, pool, peaks)
    except BaseException:
        if pool is not None:
            pool.close(wait=False)
        raise
    finally:
        peaks.close()
    if pool is not None:
        pool.close(wait=False)      # the kernels stop while the brief is written
    _step(run_info, results_path, "brief")
    # the brief sees the params as published (secrets redacted), like the workbooks
    _write_brief(_params.validate(run_info["params"]), out_dir, run_info, results_path, quiet,
                 secrets)
    _step(run_info, results_path, "tables")
    run_info["tables"] = export_tables(out_dir, assemble(out_dir, run_info, params.workbooks)
                                       ["tables"])
    _say(f"tables: {TABLES_DIR}/ ({run_info['tables']['count']} CSV files) and {XLSX_NAME}",
         quiet)
    if params.report.public:
        _step(run_info, results_path, "privacy scan")
        _say("checking the outputs are safe to publish", quiet)
        report, ids_checked = _privacy_scan(params, out_dir)
        run_info["privacy"] = {"ok": report.ok, "files_scanned": len(report.scanned),
                               "findings": [f"{f.file}: {f.kind} ({f.where})" for f in report.findings],
                               "member_ids_checked": ids_checked}
        if not report.ok:
            finish("failed", failed_step="privacy scan")
            report.raise_if_found()
    finish("ok")
    if pool is not None:
        pool.close()                # they have stopped when the run returns
    _say(f"done: {results_path}", quiet)
    return RunResult(out_dir, results_path, "ok", notebooks)


def _prepare(params, out_dir: Path, run_info: dict, secrets, quiet: bool, finish,
             peaks: PeakMemory) -> None:
    """Build the run's database (:func:`evalkit.prepare.prepare`), recording its
    fingerprint, its seconds and the runner's peak memory meanwhile."""
    _say(f"evalkit {__version__}: preparing data ({params.mode} mode, source "
         f"{describe_source(params).kind})", quiet)
    t0 = time.perf_counter()
    peaks.watch("prepare", os.getpid(), children=False)
    try:
        prepared = prepare(params, out_dir, progress=not quiet)
    except EvalkitError as err:
        peaks.done("prepare")
        message = scrub(str(err), secrets)
        finish("failed", error=message, failed_step="prepare")
        if message != str(err):
            raise type(err)(message) from None
        raise
    run_info["data_fingerprint"] = prepared.fingerprint
    run_info["prepare_seconds"] = round(time.perf_counter() - t0, 2)
    run_info.update(_megabytes(peaks.done("prepare"), "prepare_peak_memory_mb"))
    counts = prepared.report.counts
    _say(f"  data ready in {time.perf_counter() - t0:.1f}s"
         f"{_peak_text(run_info, 'prepare_peak_memory_mb')}: "
         + ", ".join(f"{r.table} {r.accepted:,} accepted / {r.quarantined:,} quarantined"
                     for r in counts.itertuples()), quiet)
    # counts and dollars, no member ids; small cells hidden in public runs
    for sentence in prepared.report.note_sentences(params.report.public, params.report.min_cell):
        _say(f"  {sentence}", quiet)


def _put_status(statuses: list[dict], status: dict, order=()) -> None:
    """Put a workbook's status in the run's list: in place of its earlier one (a re-run),
    else before the first of the workbooks after it in ``order`` (the run order), else
    at the end."""
    for i, w in enumerate(statuses):
        if w["workbook"] == status["workbook"]:
            statuses[i] = status
            return
    later = set(order[order.index(status["workbook"]) + 1:]) if status["workbook"] in order \
        else set()
    at = next((i for i, w in enumerate(statuses) if w["workbook"] in later), len(statuses))
    statuses.insert(at, status)


def _kernel_died(err: Exception) -> bool:
    return type(err).__name__ == "DeadKernelError" or "Kernel died" in str(err)


def preload_report() -> threading.Thread:
    """Import :mod:`evalkit.report` (WeasyPrint and the brief's charts: about 1.4 s) in a
    background thread, and return the thread. The runner imports it only for the brief, so
    that it starts its kernels and prepares the data that much sooner; it calls this when
    the workbooks start executing in the kernels, so that the import is not among the
    run's last steps, which run one after another on one core (the demo 0.5 s sooner,
    three runs of each way interleaved); :func:`_write_brief`'s own import waits for this
    one."""
    def load():
        try:
            from . import report  # noqa: F401
        except Exception:  # noqa: BLE001 - the brief's own import raises it again, in place
            pass
    t = threading.Thread(target=load, daemon=True, name="evalkit-report-import")
    t.start()
    return t


def _write_brief(params, out_dir: Path, run_info: dict, results_path: Path, quiet: bool,
                 secrets=()) -> None:
    """Render brief.html and brief.pdf (:mod:`evalkit.report`); a failure fails the run."""
    _say(f"writing the brief ({params.report.audience} audience): brief.html, brief.pdf", quiet)
    t0 = time.perf_counter()
    from .report import BriefError, write_brief     # see preload_report
    try:
        brief = write_brief(out_dir, results=assemble(out_dir, run_info, params.workbooks),
                            params=params, secrets=secrets)
    except Exception as err:  # any failure to render marks the run failed
        _finish(run_info, results_path, out_dir, params, "failed", failed_step="brief",
                error=scrub(f"{type(err).__name__}: {err}", secrets))
        if isinstance(err, EvalkitError):
            raise
        raise BriefError(scrub(f"the brief could not be rendered: {type(err).__name__}: "
                                f"{err}. results.json records the failure.", secrets)) from err
    run_info["brief"] = brief.to_dict(out_dir)
    _say(f"      done in {time.perf_counter() - t0:.1f}s", quiet)


#: Params whose text the user writes and every output repeats (checked for any member id).
FREE_TEXT_KEYS = ("title", "plan_name", "name", "label", "citation", "assumed")


def _free_text(node, path: str = "") -> dict[str, str]:
    """The free-text params (``FREE_TEXT_KEYS``) at any depth, by dotted key."""
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{path}.{k}" if path else str(k)
            if isinstance(v, str) and k in FREE_TEXT_KEYS:
                out[key] = v
            else:
                out.update(_free_text(v, key))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.update(_free_text(v, f"{path}[{i}]"))
    return out


def _privacy_scan(params, out_dir: Path):
    """Scan every public output (not ``work/``) for member ids, dates of service, secrets
    and small cells.

    Ids of ``MIN_SCANNABLE_ID`` characters or more are looked for as whole tokens
    everywhere; shorter ones where they would identify someone: after a word naming an
    id (``member 123``, ``id: 123``, ``#123``) and in the free text of the params (the
    title ...), which every output repeats. Returns the report and how member ids were
    looked for: ``True`` (all everywhere), ``"context"`` (some ids are short) or None in
    summary mode, which has no member ids.
    """
    targets = scan_targets(out_dir)
    short_ids = targets["context_ids"]
    checked = None if params.mode == "summary" else ("context" if short_ids else True)
    safe, secrets = redact_params(params.to_dict())
    # the brief scanned its own files for all of this before it wrote them
    brief = tuple(f for f in ("brief.html", "brief.pdf") if (out_dir / f).is_file())
    report = scan_outputs(out_dir, secrets=secrets, min_cell=params.report.min_cell,
                          scanned_before=brief, **targets)
    if short_ids:
        found = scan_text(_free_text(safe), member_ids=short_ids, file="params.json")
        if found:
            report = ScanReport(report.folder, report.findings + tuple(
                Finding(f.file, f.kind, f.where, "free text holding a member id, " + f.excerpt)
                for f in found), report.scanned, report.not_scanned)
    return report, checked


def _check_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise EvalkitError(f"output folder {out_dir} exists and is a file; choose another --out")
    if (out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "params.json").exists()
            and not (out_dir / LOCK_NAME).exists()):
        raise EvalkitError(f"output folder {out_dir} holds files that are not an evalkit run; "
                           "choose an empty or new folder with --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise EvalkitError(f"cannot write to output folder {out_dir}: {err.strerror}") from None


