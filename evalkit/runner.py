"""Run an analysis end to end: validate params, prepare data, execute the workbooks.

``evalkit run PARAMS.yaml [--out DIR] [--set KEY=VALUE ...]`` and :func:`run` do the same:

1. validate the params (overrides included) before any work;
2. prepare the analysis database (:func:`evalkit.study.prepare`);
3. execute each workbook in order with papermill in a real Jupyter kernel, injecting
   the path of the validated params; save each executed notebook and its HTML;
4. write the brief, ``brief.html`` and ``brief.pdf`` (:mod:`evalkit.report`);
5. merge the workbooks' records into ``results.json`` (atomically).

A failing workbook stops the run: its partial notebook is kept (papermill marks the
failing cell), ``results.json`` records ``status: failed`` with the notebook and cell,
and a :class:`~evalkit.errors.WorkbookError` is raised (the CLI exits non-zero).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from . import params as _params
from .errors import EvalkitError, WorkbookError
from .results import assemble, write_json_atomic
from .study import prepare

from .catalog import BY_NAME, CATALOG, WORKBOOK_DIR, in_run_order


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


def _html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = notebook.with_suffix(".html")
    tmp = out.with_suffix(".html.partial")
    tmp.write_text(body)
    tmp.replace(out)
    return out


def _failed_cell(notebook: Path) -> str:
    """Describe the failing cell of an executed notebook: its number and first line."""
    import nbformat
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
        params: _params.Params | None = None, kernel_name: str = "python3") -> RunResult:
    """Run the workbooks named in the params; see the module docstring.

    Parameters
    ----------
    params_path : YAML params file (or None to use ``params`` / the defaults).
    out : output folder; default ``runs/<params file stem>``.
    overrides : ``["data.members=100000", ...]`` or a mapping of dotted keys to values.
    quiet : no progress messages.

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
    _check_output_dir(out_dir)
    results_path = out_dir / "results.json"
    results_path.unlink(missing_ok=True)          # never leave an old success behind
    shutil.rmtree(out_dir / "parts", ignore_errors=True)
    for name in (w.file for w in CATALOG):        # nor notebooks of an earlier run
        for stale in (out_dir / name, (out_dir / name).with_suffix(".html")):
            stale.unlink(missing_ok=True)
    for stale in [*out_dir.glob("brief*.html"), *out_dir.glob("brief*.pdf")]:  # nor earlier briefs
        stale.unlink(missing_ok=True)
    # Secrets (an encryption key, a password in a URL) are needed only to read the
    # source, which happens in this process: no output, not even params.json, holds them.
    from .privacy import redact_params
    safe_params, secrets = redact_params(params.to_dict())
    params_file = out_dir / "params.json"
    write_json_atomic(params_file, safe_params)

    run_info = {"evalkit_version": __version__, "params": safe_params,
                "params_hash": params.digest(), "seed": params.seed,
                "data_fingerprint": None, "started": started, "finished": None,
                "status": "running", "workbooks": [], "pid": os.getpid(),
                "host": socket.gethostname()}
    write_json_atomic(results_path, {"run": run_info, "estimates": [], "tables": {}})
    try:
        return _run_steps(params, out_dir, params_file, results_path, run_info, secrets,
                          quiet, kernel_name)
    except BaseException as err:   # Ctrl-C or an unexpected error: never leave "running"
        if run_info["status"] == "running":
            for w in run_info["workbooks"]:
                if w["status"] == "running":
                    w["status"] = "failed"
            _finish(run_info, results_path, out_dir, params, "failed",
                    error=_scrub(f"{type(err).__name__}: {err}", secrets))
        raise


def _finish(run_info: dict, results_path: Path, out_dir: Path, params, status: str,
            **extra) -> None:
    """Write the run's final status (the process id is only kept while running)."""
    run_info.update(status=status, finished=_now(), **extra)
    run_info.pop("pid", None), run_info.pop("host", None)
    write_json_atomic(results_path, assemble(out_dir, run_info, params.workbooks))


def _run_steps(params, out_dir, params_file, results_path, run_info, secrets, quiet,
               kernel_name) -> RunResult:
    from .privacy import redact_notebook

    def finish(status: str, **extra) -> None:
        _finish(run_info, results_path, out_dir, params, status, **extra)

    source = "published figures" if params.mode == "summary" else f"source {params.data.source}"
    _say(f"evalkit {__version__}: preparing data ({params.mode} mode, {source})", quiet)
    t0 = time.perf_counter()
    try:
        prepared = prepare(params, out_dir, progress=not quiet)
    except EvalkitError as err:
        message = _scrub(str(err), secrets)
        finish("failed", error=message, failed_step="prepare")
        if message != str(err):
            raise type(err)(message) from None
        raise
    run_info["data_fingerprint"] = prepared.fingerprint
    run_info["prepare_seconds"] = round(time.perf_counter() - t0, 2)
    counts = prepared.report.counts
    _say(f"  data ready in {time.perf_counter() - t0:.1f}s: "
         + ", ".join(f"{r.table} {r.accepted:,} accepted / {r.quarantined:,} quarantined"
                     for r in counts.itertuples()), quiet)

    import papermill as pm
    notebooks = []
    order = in_run_order(params.workbooks)
    for i, wb in enumerate(order, start=1):
        src = WORKBOOK_DIR / BY_NAME[wb].file
        dest = out_dir / BY_NAME[wb].file
        _say(f"[{i}/{len(order)}] {wb}: executing {src.name}", quiet)
        t1 = time.perf_counter()
        status = {"workbook": wb, "notebook": dest.name, "status": "running"}
        run_info["workbooks"].append(status)
        write_json_atomic(results_path, {"run": run_info, "estimates": [], "tables": {}})
        try:
            pm.execute_notebook(
                str(src), str(dest), kernel_name=kernel_name, progress_bar=not quiet,
                parameters={"params_path": str(params_file.resolve())},
                cwd=str(out_dir), log_output=False,
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
        except Exception as err:  # papermill re-raises the kernel's error
            if dest.exists() and secrets:
                redact_notebook(dest, secrets)
            cell = _failed_cell(dest)
            detail = _scrub(f"{getattr(err, 'ename', type(err).__name__)}: "
                            f"{getattr(err, 'evalue', err)}", secrets)
            if _kernel_died(err):
                detail = ("the Jupyter kernel died (killed, or out of memory) while running "
                          f"the workbook: {detail}")
            status.update(status="failed", cell=cell, error=detail)
            if dest.exists():
                _html(dest)
            finish("failed")
            raise WorkbookError(
                f"workbook '{wb}' ({dest}) failed in {cell}: {detail}. "
                "The partial notebook is kept with the failing cell marked; results.json "
                "records the failure.") from None
        if secrets:
            redact_notebook(dest, secrets)
        notebooks.append(dest)
        _html(dest)
        status.update(status="ok", seconds=round(time.perf_counter() - t1, 2))
        _say(f"      done in {status['seconds']:.1f}s", quiet)
    _write_brief(params, out_dir, run_info, results_path, quiet)
    if params.report.public:
        _say("checking the outputs are safe to publish", quiet)
        report, ids_checked = _privacy_scan(params, out_dir)
        run_info["privacy"] = {"ok": report.ok, "files_scanned": len(report.scanned),
                               "findings": [f"{f.file}: {f.kind} ({f.where})" for f in report.findings],
                               "member_ids_checked": ids_checked}
        if not report.ok:
            finish("failed", failed_step="privacy scan")
            report.raise_if_found()
    finish("ok")
    _say(f"done: {results_path}", quiet)
    return RunResult(out_dir, results_path, "ok", notebooks)


def _scrub(text: str, secrets) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _kernel_died(err: Exception) -> bool:
    return type(err).__name__ == "DeadKernelError" or "Kernel died" in str(err)


def _write_brief(params, out_dir: Path, run_info: dict, results_path: Path, quiet: bool) -> None:
    """Render brief.html and brief.pdf (:mod:`evalkit.report`); a failure fails the run."""
    from .report import write_brief
    _say(f"writing the brief ({params.report.audience} audience): brief.html, brief.pdf", quiet)
    t0 = time.perf_counter()
    try:
        brief = write_brief(out_dir, results=assemble(out_dir, run_info, params.workbooks),
                            params=params)
    except Exception as err:  # any failure to render marks the run failed
        _finish(run_info, results_path, out_dir, params, "failed", failed_step="brief",
                error=f"{type(err).__name__}: {err}")
        if isinstance(err, EvalkitError):
            raise
        from .report import BriefError
        raise BriefError(f"the brief could not be rendered: {type(err).__name__}: {err}. "
                         "results.json records the failure.") from err
    run_info["brief"] = brief.to_dict(out_dir)
    _say(f"      done in {time.perf_counter() - t0:.1f}s", quiet)


#: Member ids shorter than this cannot be told apart from ordinary numbers in a scan.
MIN_SCANNABLE_ID = 6


def _member_ids(out_dir: Path) -> list[str]:
    """Every member id of the run (none in summary mode: it holds no cohort or persons)."""
    import duckdb
    from .study import DB_NAME
    con = duckdb.connect(str(out_dir / "work" / DB_NAME), read_only=True)
    try:
        if con.execute("SELECT mode FROM run_info").fetchall()[0][0] == "summary":
            return []
        table = "cohort" if con.execute("SELECT count(*) FROM information_schema.tables "
                                        "WHERE table_name = 'cohort'").fetchall()[0][0] else "persons"
        ids = [str(r[0]) for r in con.execute(f"SELECT DISTINCT member_id FROM {table}").fetchall()]
    finally:
        con.close()
    return ids


def _privacy_scan(params, out_dir: Path):
    """Scan every public output (not ``work/``) for member ids and small cells.

    Returns the report and whether member ids were looked for: ids shorter than
    ``MIN_SCANNABLE_ID`` characters cannot be told apart from ordinary numbers; None in
    summary mode, which has no member ids.
    """
    from .privacy import redact_params, scan_outputs
    ids = _member_ids(out_dir)
    checked = bool(ids) and min(len(i) for i in ids) >= MIN_SCANNABLE_ID
    if params.mode == "summary":
        checked = None           # published figures only: there are no member ids to look for
    _, secrets = redact_params(params.to_dict())
    report = scan_outputs(out_dir, member_ids=ids if checked else None, secrets=secrets,
                          min_cell=params.report.min_cell)
    return report, checked


def _check_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise EvalkitError(f"output folder {out_dir} exists and is a file; choose another --out")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "params.json").exists():
        raise EvalkitError(f"output folder {out_dir} holds files that are not an evalkit run; "
                           "choose an empty or new folder with --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise EvalkitError(f"cannot write to output folder {out_dir}: {err.strerror}") from None


def read_status(out_dir: str | Path) -> dict:
    """The ``run`` block of a run's results.json.

    A run whose process ended without finishing (killed, machine restarted) still says
    ``running`` in its file; it is reported here as ``failed`` with ``interrupted: True``.
    """
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise EvalkitError(f"{out_dir} has no results.json: not an evalkit run folder, or the "
                           "run stopped before it started")
    run = json.loads(path.read_text())["run"]
    if run.get("status") == "running" and not _alive(run.get("pid"), run.get("host")):
        run = {**run, "status": "failed", "interrupted": True,
               "error": f"the run was interrupted: its process ({run.get('pid')}) ended "
                        "before it finished; re-run it into the same folder",
               "workbooks": [{**w, "status": "failed" if w["status"] == "running" else w["status"]}
                             for w in run.get("workbooks", [])]}
    return run


def _alive(pid, host) -> bool:
    """Whether the process that wrote a ``running`` status is still there (a run started
    on another machine cannot be checked, and is taken as running)."""
    if not pid:
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
