"""A run folder's status, read back: :func:`read_status` (``evalkit status``) checks the
``run`` block of its results.json against the folder (the run's process, the run id of
every output). Apart from the runner, so that ``evalkit status`` does not load the
notebook and PDF tooling the runner needs."""
from __future__ import annotations

import json
from pathlib import Path

from . import params as _params
from .errors import EvalkitError
from .runlock import RunIdentity

#: Name of the HTML ``<meta>`` tag holding the run id of an exported notebook.
RUN_ID_META = "evalkit-run-id"


def notebook_run_id(path: Path) -> str | None:
    """The run id recorded in a notebook's metadata (None if absent or unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))["metadata"]["evalkit"]["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_status(out_dir: str | Path) -> dict:
    """The ``run`` block of a run's results.json, checked against the folder.

    A run whose process ended without finishing (killed, machine restarted) still says
    ``running`` in its file; it is reported here as ``failed`` with ``interrupted: True``
    and ``failed_step`` (the step it was in), also when its process id has since been
    taken by another program (told apart by the process start time).

    The run ids of ``params.json``, of every notebook the run lists and of the brief must
    be the run id of ``results.json``; outputs of another run are reported as
    ``failed`` with ``inconsistent`` listing them.
    """
    out_dir = Path(out_dir)
    path = out_dir / "results.json"
    if not path.is_file():
        raise EvalkitError(f"{out_dir} has no results.json: not an evalkit run folder, or the "
                           "run stopped before it started")
    try:
        run = json.loads(path.read_text())["run"]
    except (ValueError, KeyError, TypeError):
        raise EvalkitError(f"{path} is not a results file of evalkit (no 'run' block); "
                           "re-run into this folder") from None
    if run.get("status") == "running" and not _alive(run):
        step = run.get("step")
        run = {**run, "status": "failed", "interrupted": True, "failed_step": step,
               "error": f"the run was interrupted: its process ({run.get('pid')}) ended "
                        + (f"during the step '{step}' " if step else "")
                        + "before it finished; re-run it into the same folder",
               "workbooks": [{**w, "status": "failed" if w["status"] == "running" else w["status"]}
                             for w in run.get("workbooks", [])]}
    mixed = _foreign_outputs(out_dir, run)
    if mixed:
        note = (f"outputs missing or of another run in this folder ({', '.join(mixed)}): "
                f"they do not carry this run's id {run.get('run_id')}; re-run into an empty "
                "folder")
        run = {**run, "status": "failed", "inconsistent": mixed,
               "error": f"{run['error']}; {note}" if run.get("error") else note}
    return run


def _foreign_outputs(out_dir: Path, run: dict) -> list[str]:
    """Outputs the run lists whose run id is not the run's own."""
    run_id = run.get("run_id")
    if not run_id:                      # written before runs had ids: nothing to compare
        return []
    wrong = []
    try:
        if json.loads((out_dir / "params.json").read_text()).get(_params.RUN_ID_KEY) != run_id:
            wrong.append("params.json")
    except (OSError, ValueError, AttributeError):
        wrong.append("params.json")
    for w in run.get("workbooks", []):
        nb = out_dir / w.get("notebook", "")
        if nb.suffix != ".ipynb" or not (w.get("status") == "ok" or
                                         (w.get("status") == "failed" and nb.exists())):
            continue            # a workbook stopped before its notebook was saved has none
        if notebook_run_id(nb) != run_id:
            wrong.append(nb.name)
        page = nb.with_suffix(".html")
        if not page.is_file() or f'name="{RUN_ID_META}" content="{run_id}"' not in \
                page.read_text(errors="replace"):
            wrong.append(page.name)
    brief = out_dir / "brief.html"
    if run.get("brief") and (not brief.is_file() or run_id not in brief.read_text(errors="replace")):
        wrong.append(brief.name)
    return wrong


def _alive(run: dict) -> bool:
    """Whether the process that wrote a ``running`` status is still that run's process
    (a run started on another machine cannot be checked, and is taken as running)."""
    if not run.get("pid"):
        return False
    identity = RunIdentity(str(run.get("run_id")), int(run["pid"]), run.get("process_started"),
                           str(run.get("host")))
    alive = identity.alive()
    return True if alive is None else alive
