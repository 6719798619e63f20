"""Faults: a kernel that dies, a run killed midway, a run interrupted in the process.

Each must leave a folder that says it failed: no results.json claiming success, the
partial notebook kept, and a clear message (and a non-zero exit from the CLI).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nbformat
import pytest
import yaml

from evalkit import runner
from evalkit.cli import main
from evalkit.errors import WorkbookError

PARAMS = {"title": "faults", "data": {"members": 1200},
          "workbooks": ["data_quality", "utilization"]}


def _params(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(PARAMS))
    return f


def _with_planted_cell(tmp_path, monkeypatch, code: str):
    wb_dir = tmp_path / "workbooks"
    shutil.copytree(runner.WORKBOOK_DIR, wb_dir)
    nb = nbformat.read(wb_dir / "03_utilization.ipynb", as_version=4)
    nb.cells.insert(4, nbformat.v4.new_code_cell(code))
    nbformat.write(nb, wb_dir / "03_utilization.ipynb")
    monkeypatch.setattr(runner, "WORKBOOK_DIR", wb_dir)


def test_killed_kernel_fails_the_run_clearly(tmp_path, monkeypatch, capsys):
    _with_planted_cell(tmp_path, monkeypatch,
                       "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(WorkbookError, match="kernel died") as err:
        runner.run(_params(tmp_path), out=tmp_path / "out", quiet=True)
    assert "utilization" in str(err.value)
    status = runner.read_status(tmp_path / "out")
    assert status["status"] == "failed"
    assert [w["status"] for w in status["workbooks"]] == ["ok", "failed"]
    assert "pid" not in status and status["failed_step"] == "utilization"
    kept = tmp_path / "out" / "03_utilization.failed.ipynb"          # partial notebook kept
    partial = nbformat.read(kept, as_version=4)
    assert partial.metadata["evalkit"]["status"] == "failed"
    # saved when the kernel died: the cells before the fatal one with their outputs
    fatal = next(i for i, c in enumerate(partial.cells) if "SIGKILL" in c.source)
    before = [c for c in partial.cells[:fatal] if c.cell_type == "code"]
    assert len(before) >= 3 and all(c.execution_count for c in before)
    assert (tmp_path / "out" / "03_utilization.failed.html").is_file()
    assert not (tmp_path / "out" / "03_utilization.ipynb").exists()
    assert main(["status", str(tmp_path / "out")]) == 1
    assert "kernel died" in capsys.readouterr().out


def test_interrupt_in_the_process_is_recorded(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) while a workbook runs: the run is marked failed."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    import papermill
    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run(_params(tmp_path), out=tmp_path / "out", quiet=True)
    status = runner.read_status(tmp_path / "out")
    assert status["status"] == "failed" and "KeyboardInterrupt" in status["error"]
    # the workbooks executing at the time (one, or two at once) are the ones that failed
    statuses = [w["status"] for w in status["workbooks"]]
    assert statuses and set(statuses) == {"failed"}


@pytest.mark.xdist_group("faults-killed")
def test_run_killed_midway_says_it_failed_and_can_be_rerun(tmp_path):
    """SIGKILL the whole `evalkit run` process group while a workbook executes."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "evalkit.cli", "run", str(_params(tmp_path)),
                             "--out", str(out), "--quiet"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:      # wait until a workbook is executing
            if results.is_file():
                run = json.loads(results.read_text())["run"]
                if any(w["status"] == "running" for w in run["workbooks"]):
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the run never reached a workbook")
        assert run["status"] == "running" and run["pid"] == proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    status = runner.read_status(out)
    assert status["status"] == "failed" and status["interrupted"] is True
    assert "interrupted" in status["error"]
    assert all(w["status"] in ("ok", "failed") for w in status["workbooks"])
    assert status["workbooks"][-1]["status"] == "failed"
    # the same folder takes a new run, which replaces the failed record
    res = runner.run(_params(tmp_path), out=out, quiet=True)
    assert runner.read_status(out)["status"] == "ok" and res.status == "ok"


def test_status_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_run_killed_while_the_brief_is_written_blames_the_brief(tmp_path):
    """kill -9 during the brief: the workbooks that finished stay ok; the step is 'brief'."""
    out = tmp_path / "out"
    code = ("import os, signal, sys, evalkit.report as r\n"
            "r.write_brief = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
            "from evalkit.cli import main\n"
            f"sys.exit(main(['run', {str(_params(tmp_path))!r}, '--out', {str(out)!r}, "
            "'--quiet', '--set', 'workbooks=[data_quality]']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    status = runner.read_status(out)
    assert status["status"] == "failed" and status["interrupted"] is True
    assert status["failed_step"] == "brief" and "during the step 'brief'" in status["error"]
    assert [w["status"] for w in status["workbooks"]] == ["ok"]
    assert (out / "01_data_quality.ipynb").is_file()
    assert main(["status", str(out)]) == 1
