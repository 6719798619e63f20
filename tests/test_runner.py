"""End to end: real papermill runs of the real workbooks in a Jupyter kernel.

The default run of the small plan is the session's shared ``claims_run``
(tests/conftest.py, tests/shared_runs.py); tests that need a run of their own make it."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pandas as pd
import psutil
import pytest

from evalkit import catalog, runner
from evalkit.catalog import BY_NAME, most_work_first
from evalkit.errors import EvalkitError, EvalkitWarning, ParamsError, WorkbookError
from conftest import assert_structured_records
from shared_runs import copy_run_folder
from shared_runs import write_params as _write_params


@pytest.fixture(scope="module")
def tiny_run(claims_run):
    return claims_run


def _strip_times(results):
    run = dict(results["run"])
    for key in ("started", "finished", "prepare_seconds", "prepare_peak_memory_mb", "run_id",
                "workbooks_at_once"):
        run.pop(key)
    run["workbooks"] = [{k: v for k, v in w.items() if k not in ("seconds", "peak_memory_mb")}
                        for w in run["workbooks"]]
    return {**results, "run": run}


def test_runner_loads_without_compiling_the_iri_grammars():
    """jsonschema's optional checker of the "iri" formats (the rfc3987-syntax package,
    which JupyterLab brings) compiles 38 grammars when imported, 1.4 s of each run's
    start; the runner loads nbformat with it hidden (evalkit/_nbformat.py). nbformat
    still validates notebooks, and the package stays importable for others."""
    if importlib.util.find_spec("rfc3987_syntax") is None:
        pytest.skip("rfc3987-syntax is not installed here: there is nothing to keep out")
    code = ("import sys, evalkit.runner, nbformat\n"
            "print('rfc3987_syntax' not in sys.modules)\n"
            "nbformat.validate(nbformat.v4.new_notebook())\n"
            "bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])\n"
            "del bad.cells[0]['outputs']\n"
            "try:\n    nbformat.validate(bad)\nexcept nbformat.ValidationError:\n"
            "    print('refused')\n"
            "import rfc3987_syntax\nprint('importable')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "refused", "importable"]


@pytest.mark.xdist_group("runner-same-params")
def test_same_params_same_results(request, tmp_path):
    """A second run of the shared run's params gives the same results.json. It is made
    before the shared run is asked for, so that with pytest-xdist the two can be made at
    once by two workers."""
    again = runner.run(_write_params(tmp_path), out=tmp_path / "again", quiet=True)
    tiny_run = request.getfixturevalue("claims_run")
    a = _strip_times(json.loads(tiny_run.results_path.read_text()))
    b = _strip_times(json.loads(again.results_path.read_text()))
    assert a == b


def test_run_writes_contract_outputs(tiny_run):
    out = tiny_run.output_dir
    expected = [catalog.BY_NAME[w].file for w in catalog.default_workbooks("claims")]
    assert len(expected) >= 5
    for name in [*expected, *(Path(f).with_suffix(".html").name for f in expected),
                 "results.json", "params.json"]:
        assert (out / name).is_file(), name
    res = json.loads(tiny_run.results_path.read_text())
    assert res["run"]["status"] == "ok"
    assert [w["notebook"] for w in res["run"]["workbooks"]] == expected
    assert [w["status"] for w in res["run"]["workbooks"]] == ["ok"] * len(expected)
    # each kernel holds Python, the scientific stack and evalkit: well over 50 MB
    total_mb = psutil.virtual_memory().total / 1e6
    assert all(50 < w["peak_memory_mb"] < total_mb for w in res["run"]["workbooks"])
    assert 50 < res["run"]["prepare_peak_memory_mb"] < total_mb
    assert res["run"]["workbooks_at_once"] in (1, 2)       # the memory check decides
    assert any(e["scale"] == "hazard_ratio" for e in res["estimates"])
    assert all(e["contrast"] for e in res["estimates"])
    assert len(res["run"]["params_hash"]) == 64 and len(res["run"]["data_fingerprint"]) == 64
    fu = [e for e in res["estimates"] if e.get("period") == "followup"]
    assert {e["outcome"] for e in fu} == {"er_visits", "outpatient_mh_visits", "inpatient_days"}
    for e in res["estimates"]:
        assert set(("workbook", "outcome", "contrast", "estimand", "method", "scale", "estimate",
                    "std_error", "ci_low", "ci_high", "p_value", "n_treated", "n_control",
                    "analysis", "model", "family", "adjusted_for", "primary")) <= set(e)
    assert_structured_records(res)
    assert json.loads((out / "spec.json").read_text()) == res["spec"]
    assert "data_quality.table1" in res["tables"] and "utilization.rates" in res["tables"]
    util = [e for e in res["estimates"] if e["workbook"] == "utilization"]
    assert {"crude", "adjusted", "prepost"} == {e["analysis"] for e in util}
    assert {e["family"] for e in util if e["analysis"] == "adjusted"} <= {
        "poisson", "negbin", "zinb", "hurdle_negbin"}
    adjusted = [e for e in util if e["analysis"] == "adjusted"]
    spec_terms = [c["term"] for c in res["spec"]["covariates"]]
    assert adjusted and all(e["adjusted_for"] == spec_terms for e in adjusted)
    primary = {(e["outcome"], e["scale"]): e for e in res["estimates"] if e["primary"]}
    assert primary[("er_visits", "rate_ratio")]["analysis"] == "adjusted"
    scales = {e["scale"] for e in res["estimates"] if e["workbook"] == "costs"}
    assert {"cost_difference", "pmpm_difference", "ratio"} <= scales
    assert any(e.get("interval") == "bootstrap" for e in res["estimates"]
               if e["workbook"] == "costs")
    econ = {e["scale"]: e for e in res["estimates"] if e["workbook"] == "cost_benefit"}
    assert {"net_savings_per_member", "roi", "probability_cost_saving"} <= set(econ)
    assert 0 <= econ["probability_cost_saving"]["estimate"] <= 1
    counts = {r["table"]: r for r in res["tables"]["data_quality.load_counts"]}
    assert all(r["rows_in"] == r["accepted"] + r["quarantined"] for r in counts.values())
    # source workbooks stay clean; executed copies have outputs
    src = nbformat.read(runner.WORKBOOK_DIR / "01_data_quality.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in src.cells if c.cell_type == "code")
    done = nbformat.read(out / "01_data_quality.ipynb", as_version=4)
    assert any(c.get("outputs") for c in done.cells if c.cell_type == "code")


def test_rerun_into_same_folder_is_safe(tiny_run, tmp_path):
    folder = copy_run_folder(tiny_run, tmp_path / "out")      # the shared run stays as made
    assert (folder / "03_utilization.ipynb").exists()
    with pytest.warns(EvalkitWarning, match="03_utilization.ipynb.*are removed"):
        res = runner.run(_write_params(tmp_path), out=folder, quiet=True,
                         overrides=["workbooks=[data_quality]"])
    data = json.loads(res.results_path.read_text())
    assert data["run"]["status"] == "ok" and [w["workbook"] for w in data["run"]["workbooks"]] == ["data_quality"]
    assert not any(e["workbook"] == "utilization" for e in data["estimates"])
    assert not (folder / "03_utilization.ipynb").exists()   # no stale notebooks


def test_failing_workbook_is_reported_and_kept(tmp_path, monkeypatch):
    wb_dir = tmp_path / "workbooks"
    shutil.copytree(runner.WORKBOOK_DIR, wb_dir)
    nb = nbformat.read(wb_dir / "03_utilization.ipynb", as_version=4)
    nb.cells.insert(4, nbformat.v4.new_code_cell("raise RuntimeError('planted failure.')"))
    nbformat.write(nb, wb_dir / "03_utilization.ipynb")
    monkeypatch.setattr(runner, "WORKBOOK_DIR", wb_dir)
    with pytest.raises(WorkbookError) as e:     # one at a time: what ran before it is known
        runner.run(_write_params(tmp_path), out=tmp_path / "out", quiet=True, workers=1)
    msg = str(e.value)
    assert "utilization" in msg and "planted failure" in msg and "code cell" in msg
    assert "planted failure. The partial notebook" in msg       # one full stop, not two
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["run"]["status"] == "failed"
    before = catalog.default_workbooks("claims").index("utilization")   # costs never ran
    assert [w["status"] for w in res["run"]["workbooks"]] == ["ok"] * before + ["failed"]
    assert all(w["peak_memory_mb"] > 50 for w in res["run"]["workbooks"][:before])
    assert res["run"]["failed_step"] == "utilization"
    # the partial notebook is kept under a name that says so, never as the finished one
    assert not (tmp_path / "out" / "03_utilization.ipynb").exists()
    assert res["run"]["workbooks"][-1]["notebook"] == "03_utilization.failed.ipynb"
    partial = nbformat.read(tmp_path / "out" / "03_utilization.failed.ipynb", as_version=4)
    assert any(o.get("output_type") == "error" for c in partial.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
    assert partial.metadata["evalkit"] == {"run_id": res["run"]["run_id"], "status": "failed"}
    assert (tmp_path / "out" / "03_utilization.failed.html").is_file()
    assert not list((tmp_path / "out").glob(".*.ipynb"))            # no temporary left
    assert runner.read_status(tmp_path / "out")["failed_step"] == "utilization"


def test_bad_params_fail_before_any_work(tmp_path):
    with pytest.raises(ParamsError, match="data.scenaro"):
        runner.run(_write_params(tmp_path), out=tmp_path / "out", overrides=["data.scenaro=demo"])
    assert not (tmp_path / "out").exists()


def test_output_folder_checks(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(EvalkitError, match="is a file"):
        runner.run(_write_params(tmp_path), out=tmp_path / "f", quiet=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.docx").write_text("x")
    with pytest.raises(EvalkitError, match="not an evalkit run"):
        runner.run(_write_params(tmp_path), out=other, quiet=True)


def test_cli_reports_errors_and_exit_code(tmp_path, capsys):
    from evalkit.cli import main
    assert main(["validate", str(_write_params(tmp_path))]) == 0
    assert main(["validate", str(_write_params(tmp_path)), "--set", "windows.baseline_days=0"]) == 2
    assert "windows.baseline_days" in capsys.readouterr().err


@pytest.mark.xdist_group("runner-small-cells")
def test_public_run_refuses_small_cells(tmp_path, monkeypatch):
    """With report.public the outputs are scanned. The hand-made tiny plan has one member
    per arm: the data-quality workbook suppresses its counts of people, so the public run
    publishes none of them; a table of the same counts left unsuppressed among the outputs
    (planted just before the scan) makes the run refuse to call itself done."""
    from evalkit.privacy import DisclosureError
    tiny = Path(__file__).parent / "fixtures" / "tiny"
    tables = {t: str(tiny / f"{t}.csv") for t in ("members", "enrollment", "encounters", "exposure")}
    tiny_public = {"report.public": True, "workbooks": ["data_quality"], "data.source": "files",
                   "data.tables": tables, "data.category_map": {"ED": "er", "IP": "inpatient"},
                   "data.group_map": {"T": "self_help", "C": "control"}, "data.members": None,
                   "data.plant_problems": False}
    fine = runner.run(_write_params(tmp_path), out=tmp_path / "fine", quiet=True,
                      overrides=tiny_public)
    res = json.loads(fine.results_path.read_text())
    assert res["run"]["status"] == "ok" and res["run"]["privacy"]["ok"]
    attrition = res["tables"]["data_quality.attrition"]
    counts = [v for row in attrition for k, v in row.items() if k.endswith("_members")]
    assert counts and all(v is None or v == 0 for v in counts)    # 1 or 2 people: hidden
    # the internal run's attrition of the same plan, copied among the public run's outputs
    internal = runner.run(_write_params(tmp_path), out=tmp_path / "internal", quiet=True,
                          overrides={**tiny_public, "report.public": False})
    internal_res = json.loads(internal.results_path.read_text())
    assert "privacy" not in internal_res["run"]            # an internal run is not scanned
    raw = internal_res["tables"]["data_quality.attrition"]
    assert any(0 < v < 11 for row in raw for k, v in row.items() if k.endswith("_members"))
    exported = runner.export_tables

    def export_and_plant(out_dir, tables_):
        got = exported(out_dir, tables_)
        pd.DataFrame(raw).to_csv(Path(out_dir) / "tables" / "attrition_copy.csv", index=False)
        return got
    monkeypatch.setattr(runner, "export_tables", export_and_plant)
    with pytest.raises(DisclosureError):
        runner.run(_write_params(tmp_path), out=tmp_path / "out", quiet=True,
                   overrides=tiny_public)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["run"]["status"] == "failed" and res["run"]["failed_step"] == "privacy scan"
    assert any("attrition_copy.csv" in f for f in res["run"]["privacy"]["findings"])
    assert res["run"]["privacy"]["member_ids_checked"] == "context"   # ids 1, 2 are short


def test_reused_kernel_starts_each_workbook_fresh(tmp_path):
    """Two notebooks executed one after the other in one WorkbookKernel: the second sees
    no name of the first, counts cells from 1, sees again a warning the first was shown
    (Python shows a warning once per place), and finds matplotlib's settings and warning
    filters as a new kernel has them, whatever the first changed. The kernel never
    imported the runner's side of the kernels (nbclient, nbformat, papermill)."""
    import threading

    import papermill as pm

    from evalkit.kernels import ENGINE, WorkbookKernel
    (tmp_path / "warner.py").write_text(
        "import warnings\n\ndef go():\n    warnings.warn('said from a module', UserWarning)\n")
    first = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (
        "import matplotlib, warnings, warner\nleft_behind = 1\nwarner.go()",
        "matplotlib.rcParams['axes.titlesize'] = 31\nwarnings.simplefilter('error')",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2]);")])
    second = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (
        ("import matplotlib, sys, warnings, warner\nwarner.go()\n"
         "RUNNER_SIDE = ('nbformat', 'nbclient', 'papermill', 'evalkit.kernels')"),
        ("print('left_behind' in dir(), matplotlib.rcParams['axes.titlesize'],"
         " warnings.filters[0][0], any(m in sys.modules for m in RUNNER_SIDE))"),
        "import matplotlib.pyplot as plt\nplt.plot([1, 2]);")])
    for name, nb in (("first", first), ("second", second)):
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    done, errors = {}, []

    def work():         # the kernel's messages go through the thread that started it
        kernel = WorkbookKernel("python3", tmp_path, ["--IPKernelApp.log_level=CRITICAL"])
        try:
            for name in ("first", "second"):
                kernel.prepare_workbook()
                done[name] = pm.execute_notebook(
                    str(tmp_path / f"{name}.ipynb"), str(tmp_path / f"{name}.out.ipynb"),
                    engine_name=ENGINE, kernel=kernel, kernel_name="python3",
                    progress_bar=False)
        except Exception as err:  # noqa: BLE001 - re-raised by the test below
            errors.append(err)
        finally:
            kernel.shutdown()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors, errors
    fresh_rc = nbformat.read(tmp_path / "first.out.ipynb", as_version=4)
    assert [c.execution_count for c in fresh_rc.cells] == [1, 2, 3]
    cells = done["second"]["cells"]
    assert [c["execution_count"] for c in cells] == [1, 2, 3]
    for nb in (fresh_rc, done["second"]):      # figures show in both (the inline backend)
        assert any("image/png" in o.get("data", {}) for o in nb["cells"][2]["outputs"])
    warned = "".join(o.get("text", "") for o in cells[0]["outputs"])
    assert "said from a module" in warned
    printed = "".join(o.get("text", "") for o in cells[1]["outputs"]).split()
    # matplotlib's default title size, as a new kernel has it (the inline backend keeps it)
    assert printed[:2] == ["False", "large"]
    assert printed[2] != "error"
    assert printed[3] == "False"        # the kernel never loaded the runner's side


def test_workbooks_start_most_work_first():
    """With two kernels the runner starts the most work first, counting with a workbook
    the workbooks of the run that wait for it: the demo's cohort-balance design (the
    utilization and costs workbooks wait for it), then its cost-benefit workbook (the
    longest alone); without the workbooks that wait for it the design goes after."""
    demo = ["data_quality", "cohort_balance", "utilization", "costs", "cost_benefit",
            "time_to_event"]
    assert most_work_first(demo) == ["cohort_balance", "cost_benefit", "costs", "utilization",
                                    "time_to_event", "data_quality"]
    design = sum(BY_NAME[w].effort for w in ("cohort_balance", "costs", "utilization"))
    assert BY_NAME["cohort_balance"].effort < BY_NAME["cost_benefit"].effort < design
    assert most_work_first(["cohort_balance", "cost_benefit", "time_to_event"]) == [
        "cost_benefit", "cohort_balance", "time_to_event"]
    assert most_work_first(list(reversed(demo))) == most_work_first(demo)


def test_executing_notebook_is_saved_at_most_every_second_and_when_it_ends(tmp_path,
                                                                             monkeypatch):
    """papermill asks for a save at the start and the end of every cell; the runner's
    engines write at most one a second (:data:`evalkit.kernels.SAVE_EVERY`) and always
    the last, whatever ended the notebook."""
    import papermill.engines

    from evalkit import kernels
    written = []
    monkeypatch.setattr(papermill.engines, "write_ipynb",
                        lambda nb, path: written.append(nb.cells[0].source))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")],
                                  metadata={"papermill": {}})     # as papermill loads it
    man = kernels._SavingManager(nb, output_path=str(tmp_path / "x.ipynb"), progress_bar=False)
    man.notebook_start()
    for _ in range(50):
        man.cell_start(nb.cells[0], 0)
        man.cell_complete(nb.cells[0], 0)
    assert written == ["1"]                     # the first save only: all within a second
    nb.cells[0].source = "2"
    man.notebook_complete()
    assert written == ["1", "2"]                # the end is always saved
    man = kernels._SavingManager(nb, output_path=str(tmp_path / "x.ipynb"), progress_bar=False)
    man.notebook_start()
    monkeypatch.setattr(kernels, "SAVE_EVERY", 0.0)
    man.cell_complete(nb.cells[0], 0)
    assert len(written) == 4                    # once the interval has passed


def test_status_list_keeps_run_order():
    """Workbooks executing at once finish in any order; the run's list keeps run order."""
    order = ["data_quality", "cohort_balance", "utilization", "cost_benefit"]
    statuses = []
    for wb in ("cohort_balance", "cost_benefit", "data_quality", "utilization"):
        runner._put_status(statuses, {"workbook": wb, "status": "running"}, order)
    assert [s["workbook"] for s in statuses] == order
    runner._put_status(statuses, {"workbook": "utilization", "status": "ok"}, order)
    assert len(statuses) == 4 and statuses[2]["status"] == "ok"


@pytest.mark.parametrize("db_mb, available_gb, cores, expected", [
    (16, 2.0, 2, 2),        # the demo plan: two kernels of ~0.66 GB
    (16, 1.0, 2, 1),
    (640, 22.0, 2, 2),      # a million members on a 24 GB machine: two of ~6.9 GB
    (640, 12.0, 2, 1),
    (640, 22.0, 1, 1),      # one core: one at a time
    (3_000, 22.0, 2, 1),    # five million members
])
def test_two_workbooks_at_once_where_two_kernels_fit(tmp_path, monkeypatch, db_mb,
                                                     available_gb, cores, expected):
    """The memory check after preparation: a kernel is estimated at 0.5 GB plus 10 bytes
    per byte of the run's database (measured: 0.55 GB on the 16 MB demo database, up to
    5.6 GB on the 0.64 GB database of a million members)."""
    work = tmp_path / "work"
    work.mkdir()
    with open(work / runner.DB_NAME, "wb") as f:
        f.truncate(db_mb * 2**20)                    # a sparse file of that size
    monkeypatch.setattr(runner.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(runner.psutil, "virtual_memory", lambda: SimpleNamespace(
        available=int(available_gb * 2**30)))
    assert runner.default_workers(tmp_path) == expected
    assert runner.kernel_memory(0) == pytest.approx(0.5 * 2**30)


def test_peak_memory_follows_a_process_or_the_children_it_started():
    """The sampler behind each workbook's ``peak_memory_mb``: a child that holds 320 MB for
    a moment is seen among this process's children, and not in this process alone."""
    peaks = runner.PeakMemory(interval=0.05)
    try:
        code = "import time, numpy as np; a = np.ones(40_000_000); time.sleep(1.5)"
        peaks.watch("children", None)
        peaks.watch("me", os.getpid(), children=False)
        subprocess.run([sys.executable, "-c", code], check=True)
        children, me = peaks.done("children"), peaks.done("me")
        assert peaks.done("never watched") is None
    finally:
        peaks.close()
    assert children >= 320e6
    assert me < psutil.Process().memory_info().rss + 200e6


def test_kernels_started_during_preparation_but_not_needed_are_stopped(tmp_path):
    """Two kernels start while the data are prepared; when the memory check then allows one
    workbook at a time, the other stops and every workbook goes to the one left."""
    pool = runner._KernelPool(runner._Execution(), tmp_path, 2)
    pids = []
    try:
        assert pool.size == 2
        pool.resize(1)
        assert pool.size == 1
        for name in ("first", "second", "third"):
            pool.submit(name, lambda kernel: pids.append(kernel.pid))
        done = {pool.next_done() for _ in range(3)}
    finally:
        pool.close()
    assert pool.size == 0
    assert done == {("first", None), ("second", None), ("third", None)}
    assert len(set(pids)) == 1 and pids[0] is not None



def test_kernels_listen_on_socket_files_not_tcp_ports(tmp_path):
    """Both ways the runner starts a kernel (a WorkbookKernel kept for several workbooks, and
    a kernel of a workbook's own) connect through Unix sockets in a private folder, so that
    no other process can take a kernel's port between its choice and the kernel's start
    ("Address already in use" killed kernels of two runs started at once); the folder goes
    when the kernel stops."""
    import threading

    import papermill as pm

    from evalkit.kernels import OWN_ENGINE, WorkbookKernel
    seen = {}

    def work():         # the kernel's messages go through the thread that started it
        kernel = WorkbookKernel("python3", tmp_path, ["--IPKernelApp.log_level=CRITICAL"])
        try:
            seen["transport"], seen["ip"] = kernel.manager.transport, kernel.manager.ip
            seen["mode"] = os.stat(os.path.dirname(kernel.manager.ip)).st_mode & 0o777
        finally:
            kernel.shutdown()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["transport"] == "ipc" and seen["mode"] == 0o700
    assert not os.path.exists(os.path.dirname(seen["ip"]))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from ipykernel.connect import get_connection_info\n"
        "print(get_connection_info(unpack=True)['transport'])")])
    nbformat.write(nb, tmp_path / "own.ipynb")
    out = pm.execute_notebook(str(tmp_path / "own.ipynb"), str(tmp_path / "own.out.ipynb"),
                              engine_name=OWN_ENGINE, kernel_name="python3",
                              progress_bar=False, cwd=str(tmp_path))
    assert out["cells"][0]["outputs"][0]["text"].strip() == "ipc"


def test_socket_folders_go_when_a_kernel_dies_or_its_runner_was_killed(tmp_path, monkeypatch):
    """A kernel killed in mid-run: its folder goes when the kernel is shut down (nbclient
    then cleans up without a shutdown request). Folders a killed runner left (old, nothing
    listening) go when the next kernel manager is made; a folder a kernel still listens
    in, or a new one, stays."""
    import socket
    import tempfile
    import threading
    import time

    from evalkit import kernels
    seen = {}

    def work():
        kernel = kernels.WorkbookKernel("python3", tmp_path, ["--IPKernelApp.log_level=CRITICAL"])
        seen["folder"] = os.path.dirname(kernel.manager.ip)
        psutil.Process(kernel.pid).kill()
        psutil.Process(kernel.pid).wait(timeout=30)
        kernel.shutdown()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not os.path.exists(seen["folder"])

    # a temporary folder of the test's own, with a short path (socket paths are short)
    short = tempfile.mkdtemp(prefix="ek")
    monkeypatch.setattr(tempfile, "tempdir", short)
    old = time.time() - 2 * kernels._STALE_AFTER
    sockets = []

    def folder(name: str, listen: bool | None, age: float) -> Path:
        f = Path(short) / f"{kernels._FOLDER_PREFIX}{name}"
        f.mkdir()
        if listen is not None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind(str(f / "k-1"))
            s.listen() if listen else s.close()
        os.utime(f, (age, age))
        return f

    try:
        left = folder("left", False, old)            # sockets of a kernel that is gone
        empty = folder("empty", None, old)
        live = folder("live", True, old)             # a kernel still listening
        new = folder("new", False, time.time())      # too recent to judge
        km = kernels.LocalSocketKernelManager()
        assert km.transport == "ipc" and km.ip.startswith(short)
        assert not left.exists() and not empty.exists() and live.exists() and new.exists()
        # a socket path too long in bytes (not characters) for a Unix socket: TCP instead
        tail = len(kernels._FOLDER_PREFIX) + 8 + 1 + 8 + len("-5")   # mkdtemp, name, -N
        n = kernels._SOCKET_PATH_MAX - len(short) - 2 - tail          # two separators
        accents = os.path.join(short, "é" * n)
        os.mkdir(accents)
        assert len(os.path.join(accents, "x" * tail)) <= kernels._SOCKET_PATH_MAX \
            < len(os.fsencode(os.path.join(accents, "x" * tail)))
        monkeypatch.setattr(tempfile, "tempdir", accents)
        km = kernels.LocalSocketKernelManager()
        assert km.transport == "tcp" and os.listdir(accents) == []
    finally:
        for s in sockets:
            s.close()
        shutil.rmtree(short)
