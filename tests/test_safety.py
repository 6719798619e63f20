"""Safe to run side by side and safe to publish: the run-folder lock, run ids, atomic
notebooks, the step a killed run stopped in, limits on params and sizes, secrets in
nested settings, and the privacy scan of short ids, dates of service and shares."""
import errno
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from evalkit import limits, params, runner, runlock, status
from evalkit.cli import main
from evalkit.errors import ParamsError
from evalkit.privacy import DisclosureError, redact_params, scan_outputs, suppress_shares

ROOT = Path(__file__).resolve().parent.parent
TINY = Path(__file__).parent / "fixtures" / "tiny"
SMALL = {"title": "small plan", "data": {"members": 1200}, "workbooks": ["data_quality"]}

# A dozen shapes of secret, each with a value found nowhere else.
SECRETS = {
    "fs.azure.account.key.plandata.blob.core.windows.net": "AzAcctKey0001+/==",
    "spark.hadoop.fs.s3a.secret.key": "S3SecretKey0002",
    "spark.hadoop.fs.s3a.access.key": "AKIAACCESS0003",
    "spark.hadoop.fs.gs.auth.service.account.private.key": "GcsPrivKey0004",
    "spark.ssl.keyStorePassword": "KeyStorePw0005",
    "spark.authenticate.secret": "SparkAuthSecret0006",
    "spark.datasource.jdbc.url": "jdbc:postgresql://db.example.org/claims?user=svc&password=JdbcPw0007&ssl=true",
    "spark.sql.catalog.lake.uri": "https://lake.example.org/c?sv=2019-12-12&sig=SasSig0008%3D&se=2030",
    "spark.sql.catalog.lake.token": "LakeToken0009",
    "spark.azure.connection": ("DefaultEndpointsProtocol=https;AccountName=plandata;"
                               "AccountKey=ConnStrKey0010==;EndpointSuffix=core.windows.net"),
    "spark.driver.extraJavaOptions": "-Dsource=postgresql://ana:UrlPassword0011@db.example.org/x",
    "spark.jars.repositories": "https://ghp_RepoToken0012abcdefghij@maven.example.org/repo",
}
PLANTED = ["AzAcctKey0001", "S3SecretKey0002", "AKIAACCESS0003", "GcsPrivKey0004",
           "KeyStorePw0005", "SparkAuthSecret0006", "JdbcPw0007", "SasSig0008",
           "LakeToken0009", "ConnStrKey0010", "UrlPassword0011", "RepoToken0012"]
NOT_SECRET = {"spark.io.encryption.keySizeBits": 256, "spark.ssl.keyStore": "/etc/plan/ks.jks"}


def _write(tmp_path, raw, name="p.yaml") -> Path:
    f = tmp_path / name
    f.write_text(yaml.safe_dump(raw))
    return f


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# ----------------------------------------------------------------------------- params limits
def test_alias_bomb_is_refused_in_under_a_second(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\ndata:\n  category_map: *i\n")
    t0 = time.perf_counter()
    with pytest.raises(ParamsError, match="anchor &a is not allowed"):
        params.load(bomb)
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(ParamsError, match="alias"):
        params.apply_overrides({}, ["data.category_map=*x"])


def test_params_file_size_is_limited(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("title: x\n" + "# padding\n" * (params.MAX_PARAMS_BYTES // 10 + 1))
    with pytest.raises(ParamsError, match="more than a params file may hold"):
        params.load(big)


@pytest.mark.parametrize("value", ["-1GB", "0MB", "3", "lots", "1.5XB"])
def test_memory_limit_needs_a_positive_size_with_a_unit(value):
    with pytest.raises(ParamsError, match="engine.memory_limit"):
        params.validate({"engine": {"memory_limit": value}})


def test_memory_limit_accepts_duckdb_sizes_and_defaults_to_half_the_memory_at_most_2gib(tmp_path):
    import psutil
    assert params.validate({"engine": {"memory_limit": "3gib"}}).engine.memory_limit == "3GiB"
    assert params.validate({"engine": {"memory_limit": " 512 MB"}}).engine.memory_limit == "512MB"
    from evalkit.prepare import _connect
    con = _connect(tmp_path / "x.duckdb", params.validate({}))
    got = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    want = min(psutil.virtual_memory().total / 2 / 2**30, 2.0)
    value, unit = got.split()
    assert unit == "GiB" and abs(float(value) - want) < 0.1, got
    con = _connect(tmp_path / "y.duckdb", params.validate({"engine": {"memory_limit": "1GB"}}))
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("953.6 MiB",
                                                                                   "1.0 GB")


def test_run_connections_hand_freed_memory_back(tmp_path):
    """The run's connections (preparation, every workbook's Study) let DuckDB's allocator
    return freed memory from a background thread; without it a kernel kept some 300 MB
    per query result it had already converted (measured at 1M members)."""
    from evalkit.prepare import _connect
    con = _connect(tmp_path / "x.duckdb", params.validate({}))
    assert con.execute("SELECT current_setting('allocator_background_threads')").fetchone()[0] \
        is True


def test_public_runs_keep_min_cell_at_11_or_more():
    with pytest.raises(ParamsError, match="min_cell 1 is below 11"):
        params.validate({"report": {"public": True, "min_cell": 1}})
    assert params.validate({"report": {"public": True, "min_cell": 20}}).report.min_cell == 20
    assert params.validate({"report": {"min_cell": 5}}).report.min_cell == 5     # internal


def test_absurd_sizes_are_refused_before_any_work(tmp_path, capsys):
    p = _write(tmp_path, {**SMALL, "data": {"members": 1_000_000_000_000}})
    t0 = time.perf_counter()
    assert main(["run", str(p), "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "data.members=1,000,000,000,000" in err and "1.4 PB" in err and "free" in err
    assert not (tmp_path / "out" / "work").exists()
    assert not (tmp_path / "out" / "results.json").exists()
    assert limits.estimate_synthetic_bytes(20_000) == 28_000_000
    # `evalkit synth` writes the Parquet tables only, and checks the disk the same way
    assert main(["synth", str(tmp_path / "plan"), "--members", "1000000000000"]) == 2
    err = capsys.readouterr().err
    assert "--members 1,000,000,000,000" in err and "550.0 TB" in err and "free" in err
    assert not (tmp_path / "plan").exists()
    assert limits.check_synth_disk(1000, 1.0, tmp_path) == 550_000


# ----------------------------------------------------------------------------- secrets
def test_secrets_at_any_depth_and_in_urls_are_redacted():
    raw = {"title": "x", "engine": {"spark_conf": {**SECRETS, **NOT_SECRET}},
           "data": {"group_map": {"key_group": "self_help"}}}
    red, found = redact_params(raw)
    text = json.dumps(red)
    for s in PLANTED:
        assert s not in text, s
        assert any(s in f for f in found), s
    conf = red["engine"]["spark_conf"]
    assert conf["spark.io.encryption.keySizeBits"] == 256             # about a key, not one
    assert conf["spark.ssl.keyStore"] == "/etc/plan/ks.jks"
    assert conf["spark.datasource.jdbc.url"].endswith("?user=svc&password=***&ssl=true")
    assert "AccountName=plandata;AccountKey=***;" in conf["spark.azure.connection"]
    assert red["data"]["group_map"] == {"key_group": "self_help"}      # not dotted: last word


# ----------------------------------------------------------------------------- lock
def test_lock_refuses_a_second_holder_and_names_it(tmp_path):
    with runlock.RunLock(tmp_path, "first-run") as first:
        with pytest.raises(runlock.RunFolderBusy, match="in use by run first-run") as err:
            runlock.RunLock(tmp_path, "second-run").acquire()
        assert str(os.getpid()) in str(err.value)
        assert runlock.holder(tmp_path) == first.identity
    assert runlock.holder(tmp_path) is None and not (tmp_path / runlock.LOCK_NAME).exists()
    with runlock.RunLock(tmp_path, "third-run"):                       # free again
        pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_dead_or_reused_process_is_taken_over(tmp_path):
    """The lock is held (by a descriptor a dead run left to a child), but the identity in
    it is a process that ended, or a live process id with another start time."""
    for pid, started in ((_dead_pid(), 1.0), (os.getpid(), 1.0)):
        path = tmp_path / runlock.LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"run_id": "old", "pid": pid, "process_started": started,
                                 "host": os.uname().nodename}).encode())
        try:
            lock = runlock.RunLock(tmp_path, "new").acquire()
            assert lock.replaced.run_id == "old"
            assert runlock.holder(tmp_path).run_id == "new"
            lock.release()
        finally:
            os.close(fd)


def test_status_of_a_killed_run_whose_pid_was_reused_is_failed(tmp_path, capsys):
    """results.json says running, with this (live) process id but another start time."""
    run = {"run_id": "r1", "status": "running", "step": "brief", "pid": os.getpid(),
           "process_started": 1.0, "host": os.uname().nodename,
           "workbooks": [{"workbook": "data_quality", "notebook": "01_data_quality.ipynb",
                          "status": "ok"}]}
    (tmp_path / "results.json").write_text(json.dumps({"run": run}))
    (tmp_path / "params.json").write_text(json.dumps({"run_id": "r1"}))
    nb = nbformat.v4.new_notebook(metadata={"evalkit": {"run_id": "r1", "status": "ok"}})
    nbformat.write(nb, tmp_path / "01_data_quality.ipynb")
    (tmp_path / "01_data_quality.html").write_text(
        '<html><head><meta name="evalkit-run-id" content="r1"></head></html>')
    st = runner.read_status(tmp_path)
    assert st["status"] == "failed" and st["interrupted"] and st["failed_step"] == "brief"
    assert st["workbooks"][0]["status"] == "ok"             # the brief failed, not the workbook
    assert main(["status", str(tmp_path)]) == 1
    assert "failed in step 'brief'" in capsys.readouterr().out
    run["process_started"] = runlock.process_start_time(os.getpid())   # really this process
    (tmp_path / "results.json").write_text(json.dumps({"run": run}))
    assert runner.read_status(tmp_path)["status"] == "running"


def test_atomic_save_keeps_the_last_good_notebook_when_the_disk_is_full(tmp_path, monkeypatch):
    target = tmp_path / "03_utilization.ipynb"
    good = nbformat.writes(nbformat.v4.new_notebook())
    runner._AtomicHandler().write(good, runner._ATOMIC + str(target))
    assert target.read_text() == good

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        runner._AtomicHandler().write(good.replace("cells", "cellz") * 50,
                                      runner._ATOMIC + str(target))
    assert target.read_text() == good and nbformat.reads(good, as_version=4)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]      # no temporary left


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def public_run(tmp_path_factory):
    """A public run with a dozen secrets in nested Spark settings and small numbers in its
    title, started from the command line; a second run into the same folder while it runs."""
    tmp = tmp_path_factory.mktemp("public")
    p = _write(tmp, {**SMALL, "title": "Plan review after 2 years, 3 arms "
                                       "(source postgresql://ana:UrlPassword0011@db)",
                     "report": {"public": True},
                     "engine": {"spark_conf": {**SECRETS, **NOT_SECRET}}})
    out = tmp / "out"
    first = subprocess.Popen([sys.executable, "-m", "evalkit.cli", "run", str(p), "--out",
                              str(out)], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    results = out / "results.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if results.is_file() and json.loads(results.read_text())["run"].get("status") == "running":
            break
        time.sleep(0.2)
    # the first run is held still (it keeps its lock) while the second one tries the folder,
    # so the second always meets a run in progress however fast the first would finish
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run([sys.executable, "-m", "evalkit.cli", "run", str(p), "--out",
                                 str(out), "--set", "seed=8"], env=_env(), capture_output=True,
                                text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=900)
    return {"out": out, "first": (first.returncode, stdout, stderr), "second": second}


@pytest.mark.xdist_group("public-run")
def test_second_run_into_a_folder_in_use_is_refused(public_run):
    code, _, stderr = public_run["first"]
    assert code == 0, stderr
    second = public_run["second"]
    assert second.returncode == 2
    res = json.loads((public_run["out"] / "results.json").read_text())
    run_id = res["run"]["run_id"]
    assert f"is in use by run {run_id}" in second.stderr and "Traceback" not in second.stderr
    # the first run's outputs are all its own, with its seed
    assert res["run"]["seed"] == 20240611 and res["run"]["status"] == "ok"
    assert json.loads((public_run["out"] / "params.json").read_text())["run_id"] == run_id
    assert json.loads((public_run["out"] / "params.json").read_text())["seed"] == 20240611
    assert status.notebook_run_id(public_run["out"] / "01_data_quality.ipynb") == run_id
    assert run_id in (public_run["out"] / "brief.html").read_text()
    assert runner.read_status(public_run["out"])["status"] == "ok"
    assert not (public_run["out"] / runlock.LOCK_NAME).exists()


@pytest.mark.xdist_group("public-run")
def test_planted_secrets_reach_no_output_file(public_run):
    out = public_run["out"]
    files = [f for f in out.rglob("*") if f.is_file() and "work" not in f.relative_to(out).parts]
    assert len(files) >= 6                  # notebook, its HTML, params, results, brief x2
    texts = {f: f.read_bytes().decode("utf-8", "replace") for f in files}
    pdf = subprocess.run(["pdftotext", str(out / "brief.pdf"), "-"], capture_output=True,
                         text=True, check=True).stdout
    _, stdout, stderr = public_run["first"]
    texts.update({"brief.pdf (text)": pdf, "stdout": stdout, "stderr": stderr})
    for secret in PLANTED:
        assert not [f for f, t in texts.items() if secret in t], secret
    res = json.loads((out / "results.json").read_text())
    assert res["run"]["params"]["engine"]["spark_conf"]["spark.io.encryption.keySizeBits"] == 256
    # synthetic ids are pseudonyms of ten characters: every one is looked for everywhere
    assert res["run"]["privacy"]["ok"] and res["run"]["privacy"]["member_ids_checked"] is True


@pytest.mark.xdist_group("public-run")
def test_status_finds_outputs_of_another_run(public_run, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(public_run["out"], copy, ignore=shutil.ignore_patterns("work"))
    assert runner.read_status(copy)["status"] == "ok"
    nb = nbformat.read(copy / "01_data_quality.ipynb", as_version=4)
    nb.metadata["evalkit"]["run_id"] = "20261202T000000Z-otherrun"
    nbformat.write(nb, copy / "01_data_quality.ipynb")
    runner._html(copy / "01_data_quality.ipynb")
    (copy / "params.json").write_text(json.dumps(
        {**json.loads((copy / "params.json").read_text()), "run_id": "x"}))
    st = runner.read_status(copy)
    assert st["status"] == "failed"
    assert st["inconsistent"] == ["params.json", "01_data_quality.ipynb", "01_data_quality.html"]
    assert main(["status", str(copy)]) == 1


def test_public_run_with_short_ids_and_a_date_of_service_in_the_title_is_refused(tmp_path):
    """The tiny plan's ids are 1 to 4: too short to look for as every number, so they are
    looked for where they identify someone (the title; after a word naming an id)."""
    tables = {t: str(TINY / f"{t}.csv") for t in ("members", "enrollment", "encounters",
                                                   "exposure")}
    p = _write(tmp_path, {"title": "Review of member 2 after the ER visit of 2023-03-01",
                          "workbooks": ["data_quality"], "report": {"public": True},
                          "data": {"source": "files", "tables": tables,
                                   "category_map": {"ED": "er", "IP": "inpatient"},
                                   "group_map": {"T": "self_help", "C": "control"}}})
    with pytest.raises(DisclosureError) as err:
        runner.run(p, out=tmp_path / "out", quiet=True)
    # the public brief checks itself before it is written: it is never written
    kinds = {(f.file, f.kind) for f in err.value.findings}
    assert {("brief.html", "member_id"), ("brief.html", "date_of_service")} <= kinds
    out = tmp_path / "out"
    assert not (out / "brief.html").exists() and not (out / "brief.pdf").exists()
    res = json.loads((out / "results.json").read_text())
    assert res["run"]["status"] == "failed" and res["run"]["failed_step"] == "brief"
    # and the run's own scan finds the title in every other output that repeats it
    report, checked = runner._privacy_scan(params.load(p), out)
    kinds = {(f.file, f.kind) for f in report.findings}
    assert checked == "context"
    for f in ("results.json", "params.json"):
        assert {(f, "member_id"), (f, "date_of_service")} <= kinds, f


@pytest.mark.xdist_group("public-run")
def test_public_synthetic_run_refuses_a_member_id_in_the_title_not_a_small_number(
        public_run, tmp_path):
    """Synthetic members are named M and nine digits, so a small number in the title
    ("2 years") is no member id, while a member's id in it is found in every output."""
    ids = runner.scan_targets(public_run["out"])
    assert ids["context_ids"] == [] and len(ids["member_ids"]) > 500
    assert all(re.fullmatch(r"M\d{9}", i) for i in ids["member_ids"])
    ok = json.loads((public_run["out"] / "results.json").read_text())["run"]
    assert ok["params"]["title"].startswith("Plan review after 2 years, 3 arms")
    assert ok["privacy"]["ok"]
    who = ids["member_ids"][7]
    p = _write(tmp_path, {**SMALL, "title": f"Plan review: the claims of {who}",
                          "report": {"public": True}}, "id.yaml")
    with pytest.raises(DisclosureError) as err:
        runner.run(p, out=tmp_path / "refused", quiet=True)
    assert ("brief.html", "member_id") in {(f.file, f.kind) for f in err.value.findings}
    assert not (tmp_path / "refused" / "brief.html").exists()
    report, checked = runner._privacy_scan(params.load(p), tmp_path / "refused")
    assert checked is True
    found = {f.file for f in report.findings if f.kind == "member_id"}
    assert {"params.json", "results.json", "01_data_quality.ipynb"} <= found


# ----------------------------------------------------------------------------- shares
def test_a_14_person_arm_shown_as_shares_is_a_small_cell(tmp_path):
    """Table 1 of an arm of 14 people: female 0.429 is 6 women and 8 men."""
    t1 = pd.DataFrame({"covariate": ["members", "female", "age"],
                       "kind": ["count", "binary", "continuous"],
                       "mean_treated": [14.0, 0.429, 0.45], "mean_control": [300.0, 0.5, 0.44]})
    (tmp_path / "table1.html").write_text(t1.to_html())
    brief = pd.DataFrame({"characteristic": ["female", "age"],
                          "self-help (n=14)": ["42.9%", "45.1"],
                          "comparison (n=300)": ["50.0%", "44.0"]})
    (tmp_path / "brief.html").write_text(brief.to_html(index=False))
    (tmp_path / "results.json").write_text(json.dumps({"tables": {"t1": t1.to_dict("records")}}))
    rep = scan_outputs(tmp_path, min_cell=11)
    found = {(f.file, f.kind, f.excerpt) for f in rep.findings}
    assert found == {("table1.html", "small_cell", "share 0.429 of 14 people implies 6"),
                     ("brief.html", "small_cell", "share 42.9% of 14 people implies 6"),
                     ("results.json", "small_cell", "share 0.429 of 14 people implies 6")}
    # shares of 300 people that imply 150 are fine; 2.0% of 300 is 6 people
    ok = pd.DataFrame({"characteristic": ["female", "rare"], "comparison (n=300)": ["50.0%", "2.0%"]})
    (tmp_path / "brief.html").write_text(ok.to_html(index=False))
    (tmp_path / "table1.html").unlink(), (tmp_path / "results.json").unlink()
    assert [f.where.split(", ")[1] for f in scan_outputs(tmp_path).findings] == ["row 'rare'"]


def test_suppress_shares_hides_shares_standing_for_few_people():
    t = pd.DataFrame({"kind": ["count", "binary", "binary", "continuous"],
                      "mean_treated": [14.0, 0.429, 0.0, 0.3],
                      "mean_control": [300.0, 0.5, 0.98, 0.2], "smd": [None, -0.1, -0.2, 0.3]})
    out = suppress_shares(t, {"mean_treated": 14, "mean_control": 300}, 11,
                          share_rows=t["kind"] == "binary", derived=["smd"])
    # 42.9% of 14 is 6 people (and 8 without); 0% of 14 is nobody (and 14 without)
    assert out["mean_treated"].isna().tolist() == [False, True, False, False]
    assert out["mean_control"].isna().tolist() == [False, False, True, False]  # 98% of 300: 6 without
    assert out["smd"].isna().tolist() == [True, True, True, False]        # row 0 had none
    assert t["mean_treated"].iloc[1] == 0.429                                  # not modified


def test_public_table1_hides_shares_of_small_arms(tmp_path):
    """Table 1 of the tiny plan (one member per arm): every share stands for one person,
    so a public run hides them (and the SMDs); an internal run shows them."""
    from evalkit.analysis.study import prepare_study
    tables = {t: str(TINY / f"{t}.csv") for t in ("members", "enrollment", "encounters",
                                                   "exposure")}
    raw = {"data": {"source": "files", "tables": tables,
                    "category_map": {"ED": "er", "IP": "inpatient"},
                    "group_map": {"T": "self_help", "C": "control"}}}
    shown = {}
    for public in (False, True):
        study = prepare_study(params.validate({**raw, "report": {"public": public}}),
                              tmp_path / str(public))
        try:
            t = study.table1()
        finally:
            study.close()
        binary = t[t["kind"] == "binary"]
        assert len(binary) and t.loc[t["kind"] == "count", "mean_treated"].iloc[0] == 1
        shown[public] = binary[["mean_treated", "mean_control", "smd"]].notna().any().any()
    assert shown == {False: True, True: False}
