"""Run an analysis end to end: validate params, prepare data, execute the workbooks.

``evalkit run PARAMS.yaml [--out DIR] [--set KEY=VALUE ...]`` and :func:`run` do the same:

1. validate the params (overrides included) before any work;
2. prepare the analysis database (:func:`evalkit.study.prepare`);
3. execute each workbook in order with papermill in a real Jupyter kernel, injecting
   the path of the validated params; save each executed notebook and its HTML;
4. merge the workbooks' records into ``results.json`` (atomically).

A failing workbook stops the run: its partial notebook is kept (papermill marks the
failing cell), ``results.json`` records ``status: failed`` with the notebook and cell,
and a :class:`~evalkit.errors.WorkbookError` is raised (the CLI exits non-zero).
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
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
    params_file = out_dir / "params.json"
    write_json_atomic(params_file, params.to_dict())

    run_info = {"evalkit_version": __version__, "params": params.to_dict(),
                "params_hash": params.digest(), "seed": params.seed,
                "data_fingerprint": None, "started": started, "finished": None,
                "status": "running", "workbooks": []}
    _say(f"evalkit {__version__}: preparing data ({params.mode} mode, "
         f"source {params.data.source})", quiet)
    t0 = time.perf_counter()
    try:
        prepared = prepare(params, out_dir, progress=not quiet)
    except EvalkitError as err:
        run_info.update(status="failed", finished=_now(), error=str(err), failed_step="prepare")
        write_json_atomic(results_path, {"run": run_info, "estimates": [], "tables": {}})
        raise
    run_info["data_fingerprint"] = prepared.fingerprint
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
        try:
            pm.execute_notebook(
                str(src), str(dest), kernel_name=kernel_name, progress_bar=not quiet,
                parameters={"params_path": str(params_file.resolve())},
                cwd=str(out_dir), log_output=False,
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
        except Exception as err:  # papermill re-raises the kernel's error
            cell = _failed_cell(dest)
            status.update(status="failed", cell=cell,
                          error=f"{type(err).__name__}: {getattr(err, 'evalue', err)}")
            run_info.update(status="failed", finished=_now())
            if dest.exists():
                _html(dest)
            write_json_atomic(results_path, assemble(out_dir, run_info, params.workbooks))
            raise WorkbookError(
                f"workbook '{wb}' ({dest}) failed in {cell}: "
                f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}. "
                "The partial notebook is kept with the failing cell marked; results.json "
                "records the failure.") from None
        notebooks.append(dest)
        _html(dest)
        status["status"] = "ok"
        _say(f"      done in {time.perf_counter() - t1:.1f}s", quiet)
    if params.report.public:
        _say("checking the outputs are safe to publish", quiet)
        report, ids_checked = _privacy_scan(params, out_dir)
        run_info["privacy"] = {"ok": report.ok, "files_scanned": len(report.scanned),
                               "findings": [f"{f.file}: {f.kind} ({f.where})" for f in report.findings],
                               "member_ids_checked": ids_checked}
        if not report.ok:
            run_info.update(status="failed", finished=_now(), failed_step="privacy scan")
            write_json_atomic(results_path, assemble(out_dir, run_info, params.workbooks))
            report.raise_if_found()
    run_info.update(status="ok", finished=_now())
    write_json_atomic(results_path, assemble(out_dir, run_info, params.workbooks))
    _say(f"done: {results_path}", quiet)
    return RunResult(out_dir, results_path, "ok", notebooks)


#: Member ids shorter than this cannot be told apart from ordinary numbers in a scan.
MIN_SCANNABLE_ID = 6


def _member_ids(out_dir: Path) -> list[str]:
    import duckdb
    from .study import DB_NAME
    con = duckdb.connect(str(out_dir / "work" / DB_NAME), read_only=True)
    try:
        table = "cohort" if con.execute("SELECT count(*) FROM information_schema.tables "
                                        "WHERE table_name = 'cohort'").fetchall()[0][0] else "persons"
        ids = [str(r[0]) for r in con.execute(f"SELECT DISTINCT member_id FROM {table}").fetchall()]
    finally:
        con.close()
    return ids


def _privacy_scan(params, out_dir: Path):
    """Scan every public output (not ``work/``) for member ids and small cells.

    Returns the report and whether member ids were looked for: ids shorter than
    ``MIN_SCANNABLE_ID`` characters cannot be told apart from ordinary numbers.
    """
    from .privacy import scan_outputs
    ids = _member_ids(out_dir)
    checked = bool(ids) and min(len(i) for i in ids) >= MIN_SCANNABLE_ID
    report = scan_outputs(out_dir, member_ids=ids if checked else None,
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
    """The ``run`` block of a run's results.json."""
    return json.loads((Path(out_dir) / "results.json").read_text())["run"]
