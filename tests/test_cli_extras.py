"""What users expect beside the brief: the run's tables as CSV files and one Excel
workbook, `evalkit diff RUN_A RUN_B`, `evalkit run PARAMS --out RUN --only WORKBOOK`, and
the software the run was made with in results.json.

The runs are of the clearinghouse brief's published figures (summary mode: two quick
workbooks, synthesis and proportions), made internal (`report.public: false`) so that
they do not need poppler's pdftotext for the privacy scan of the PDF.
"""
import copy
import hashlib
import json
import math
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from evalkit.cli import main
from evalkit.diff import diff_runs
from evalkit.errors import EvalkitWarning
from evalkit.export import (CONTENTS_SHEET, XLSX_NAME, csv_name, read_xlsx, sheet_names,
                            write_xlsx)
from evalkit.privacy import scan_outputs
from evalkit.provenance import PACKAGES, provenance
from evalkit.runner import read_status

ROOT = Path(__file__).parents[1]
CLEARINGHOUSE = ROOT / "params" / "clearinghouse_brief.yaml"
#: Abstinence at 2 years in the 12-step cohort: 49.5% of 887 in the params file; run B
#: says 55%. The workbook counts x = round(percent * n / 100) people: 439 and 488.
ITEM = "Abstinent at 2 years, 12-step-oriented"


def _params(tmp: Path, name: str, change=None) -> Path:
    p = yaml.safe_load(CLEARINGHOUSE.read_text())
    p["report"]["public"] = False
    if change:
        change(p)
    f = tmp / f"{name}.yaml"
    f.write_text(yaml.safe_dump(p))
    return f


def _run_b(p: dict) -> None:
    p["summary"]["proportions"][0]["percent"] = 55.0
    p["workbooks"] = ["proportions"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A (both workbooks, as shipped) and run B (proportions only, one percentage
    changed), B made into a copy of A's folder, as a user re-using a folder would."""
    tmp = tmp_path_factory.mktemp("extras")
    a_params, b_params = _params(tmp, "a"), _params(tmp, "b", _run_b)
    a, b = tmp / "A", tmp / "B"
    assert main(["run", str(a_params), "--out", str(a), "--quiet", "--workers", "1"]) == 0
    shutil.copytree(a, b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", str(b_params), "--out", str(b), "--quiet"]) == 0
    return {"a": a, "b": b, "a_params": a_params, "tmp": tmp,
            "b_warnings": [w for w in caught if issubclass(w.category, EvalkitWarning)]}


def _same(value, expected, rel: float = 0.0) -> bool:
    if expected is None:
        return value is None or (isinstance(value, float) and math.isnan(value))
    if isinstance(expected, (list, dict)):
        return value == json.dumps(expected)
    if isinstance(expected, bool) or isinstance(value, bool):
        return str(value).lower() == str(expected).lower()
    if isinstance(expected, (int, float)):
        return math.isclose(float(value), float(expected), rel_tol=rel, abs_tol=0.0) \
            if rel else float(value) == float(expected)
    return str(value) == str(expected)


def test_tables_exported_as_csv_and_one_xlsx_matching_results(runs):
    out = runs["a"]
    results = json.loads((out / "results.json").read_text())
    tables = results["tables"]
    assert {"synthesis.effects", "synthesis.pooled", "proportions.proportions"} <= set(tables)
    assert results["run"]["tables"] == {"count": len(tables), "csv": "tables/",
                                        "xlsx": XLSX_NAME}
    assert sorted(p.name for p in (out / "tables").iterdir()) == \
        sorted(csv_name(t) for t in tables)
    sheets = read_xlsx(out / XLSX_NAME)
    contents = sheets.pop(CONTENTS_SHEET)
    assert contents[0] == ["sheet", "table", "rows", "csv"]
    by_table = {row[1]: row for row in contents[1:]}
    assert set(by_table) == set(tables) and len(sheets) == len(tables)
    for name, rows in tables.items():
        sheet, _, n_rows, csv_file = by_table[name]
        assert n_rows == len(rows) and csv_file == f"tables/{csv_name(name)}"
        cols = list(dict.fromkeys(k for r in rows for k in r))
        frame = pd.read_csv(out / csv_file, keep_default_na=False, na_values=[""])
        assert list(frame.columns) == cols and len(frame) == len(rows)
        header, *body = sheets[sheet]
        assert header == cols and len(body) == len(rows)
        for rec, csv_row, xlsx_row in zip(rows, frame.to_dict("records"), body):
            for i, c in enumerate(cols):
                assert _same(csv_row[c], rec.get(c)), (name, c, csv_row[c], rec.get(c))
                # Excel keeps 15 significant digits; openpyxl writes 16 (the CSV: all)
                assert _same(xlsx_row[i], rec.get(c), rel=1e-15), (name, c, xlsx_row[i])


def test_sheet_names_follow_excels_rules_and_text_stays_text(tmp_path):
    names = ["cohort_balance.design_diagnostics", "cohort_balance.design_diagnostics_x",
             "a/b:c", "contents", "CONTENTS"]
    sheets = sheet_names(names)
    assert all(len(s) <= 31 and not set(s) & set("[]:*?/\\") for s in sheets.values())
    assert len({s.lower() for s in sheets.values()} | {CONTENTS_SHEET}) == len(names) + 1
    path = tmp_path / "t.xlsx"
    write_xlsx(path, {"x.notes": [{"label": "=1+1", "n": 12, "share": 0.25, "none": None}]})
    from openpyxl import load_workbook
    ws = load_workbook(path)["x.notes"]
    assert ws["A2"].value == "=1+1" and ws["A2"].data_type == "s"      # not a formula
    assert ws["B2"].value == 12 and ws["C2"].value == 0.25 and ws["D2"].value is None


def test_privacy_scan_reads_the_exported_workbook(tmp_path):
    """The scan reads each sheet of tables.xlsx as a table: a member id column and a count
    of fewer than 11 people are findings, as they are in a CSV."""
    clean = tmp_path / "clean"
    clean.mkdir()
    write_xlsx(clean / XLSX_NAME, {"t.rates": [{"arm": "self_help", "members": 250,
                                                "rate": 1.5}]})
    report = scan_outputs(clean, min_cell=11)
    assert report.ok and XLSX_NAME in report.scanned
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    write_xlsx(leaky / XLSX_NAME, {"t.rows": [{"member_id": "M000123", "cost": 10.0}],
                                   "t.small": [{"arm": "control", "members": 4}]})
    kinds = {(f.file, f.kind) for f in scan_outputs(leaky, min_cell=11).findings}
    assert (f"{XLSX_NAME} [t.rows]", "id_column") in kinds, kinds
    assert (f"{XLSX_NAME} [t.small]", "small_cell") in kinds, kinds


def test_diff_of_two_runs_shows_the_changed_estimates(runs, tmp_path, capsys):
    a, b = runs["a"], runs["b"]
    csv_file = tmp_path / "diff.csv"
    assert main(["diff", str(a), str(b), "--csv", str(csv_file)]) == 0
    out = capsys.readouterr().out
    assert "summary.proportions" in out and "workbooks" in out      # the params that differ
    assert "in A only" in out and ITEM in out

    d = diff_runs(a, b)
    e = d.estimates
    # in summary mode the data fingerprint is a hash of the params, so it differs too
    assert set(d.params["key"]) == {"summary.proportions", "workbooks", "data_fingerprint"}
    assert (e.loc[e["workbook"] == "synthesis", "in"] == "A only").all()
    props = e[(e["workbook"] == "proportions") & (e["scale"] == "proportion")]
    assert (props["in"] == "both").all()
    changed = props[props["outcome"] == ITEM].iloc[0]
    # by hand: 488/887 - 439/887 (x = round(percent * n / 100) of 887 people)
    assert changed["estimate_a"] == pytest.approx(439 / 887, abs=1e-12)
    assert changed["difference"] == pytest.approx(49 / 887, abs=1e-12) and changed["changed"]
    same = props[props["outcome"] != ITEM]
    assert len(same) == 1 and same["difference"].iloc[0] == 0 and not same["changed"].iloc[0]
    assert e.loc[e["scale"] == "risk_difference", "changed"].all()   # the comparison moved
    assert len(pd.read_csv(csv_file)) == len(e)

    assert main(["diff", str(a), str(tmp_path)]) == 2                 # not a run folder
    assert "not an evalkit run folder" in capsys.readouterr().err


def test_shorter_workbooks_list_warns_before_removing_notebooks(runs):
    messages = [str(w.message) for w in runs["b_warnings"]]
    assert any("09_synthesis.ipynb" in m and "--only" in m for m in messages), messages
    assert not (runs["b"] / "09_synthesis.ipynb").exists()


def test_only_reruns_one_workbook_and_keeps_the_others(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["a"], run)
    before = json.loads((run / "results.json").read_text())
    before["run"]["workbooks_at_once"] = 2      # as if the first run had executed two at once
    (run / "results.json").write_text(json.dumps(before))
    synthesis_nb = (run / "09_synthesis.ipynb").read_bytes()
    # mark both workbooks' records: the re-run one must be replaced, the other kept
    parts = run / "parts"
    prop = json.loads((parts / "proportions.json").read_text())
    prop["estimates"][0]["estimate"] = 999.0
    (parts / "proportions.json").write_text(json.dumps(prop))
    syn = json.loads((parts / "synthesis.json").read_text())
    syn["estimates"][0]["kept_marker"] = True
    (parts / "synthesis.json").write_text(json.dumps(syn))

    # a params file listing only the workbook to re-run is the run's params
    only_params = _params(tmp_path, "only", lambda p: p.update(workbooks=["proportions"]))
    assert main(["run", str(only_params), "--out", str(run), "--only", "10_proportions",
                 "--quiet"]) == 0
    after = json.loads((run / "results.json").read_text())
    assert read_status(run)["status"] == "ok"
    assert (run / "09_synthesis.ipynb").read_bytes() == synthesis_nb
    assert after["run"]["run_id"] == before["run"]["run_id"]
    assert [w["workbook"] for w in after["run"]["workbooks"]] == ["synthesis", "proportions"]
    assert after["run"]["reruns"][0]["workbooks"] == ["proportions"]
    # the first run's figure stays; the re-run's (one workbook) is recorded with it
    assert after["run"]["workbooks_at_once"] == 2
    assert after["run"]["reruns"][0]["workbooks_at_once"] == 1
    assert after["run"]["params"] == before["run"]["params"]
    syn_after = [e for e in after["estimates"] if e["workbook"] == "synthesis"]
    assert syn_after[0].get("kept_marker") is True
    assert [{k: v for k, v in e.items() if k != "kept_marker"} for e in syn_after] == \
        [e for e in before["estimates"] if e["workbook"] == "synthesis"]
    prop_after = [e for e in after["estimates"] if e["workbook"] == "proportions"]
    assert prop_after == [e for e in before["estimates"] if e["workbook"] == "proportions"]
    assert after["tables"] == before["tables"]
    assert (run / XLSX_NAME).is_file() and (run / "brief.html").is_file()

    # refused: other params, a workbook the run does not have, a folder without a run
    changed = _params(tmp_path, "changed", lambda p: p.update(seed=1))
    assert main(["run", str(changed), "--out", str(run), "--only", "proportions"]) == 2
    assert "not the params of the run" in capsys.readouterr().err
    assert main(["run", str(runs["a_params"]), "--out", str(run), "--only", "costs"]) == 2
    assert "not among the run's workbooks" in capsys.readouterr().err
    assert main(["run", str(runs["a_params"]), "--out", str(tmp_path / "none"),
                 "--only", "proportions"]) == 2
    assert "holds none" in capsys.readouterr().err


def test_provenance_in_results(runs):
    run = json.loads((runs["a"] / "results.json").read_text())["run"]
    assert set(run["packages"]) == {"python", "evalkit", *PACKAGES}
    assert all(run["packages"][k] for k in run["packages"])
    assert run["lock"] == {"source": "checkout", "file": "requirements.lock", "sha256":
                           hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()}
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert run["git"]["commit"] == head.stdout.strip()
        assert isinstance(run["git"]["dirty"], bool)
    else:
        assert "git" not in run


def test_workers_sets_how_many_workbooks_execute_at_once(runs, capsys):
    """Run A was made with ``--workers 1`` (the least memory); B, re-run into a copy of it
    without, got the default. A number of workbooks below 1, or not a number, is refused
    before anything runs."""
    a = json.loads((runs["a"] / "results.json").read_text())["run"]
    assert a["workbooks_at_once"] == 1 and a["status"] == "ok"
    b = json.loads((runs["b"] / "results.json").read_text())["run"]
    assert b["workbooks_at_once"] == 1      # B executes one workbook: no second kernel
    for bad in ("0", "-1", "two", "1.5", "1_0", "+2"):
        with pytest.raises(SystemExit) as stop:
            main(["run", str(runs["a_params"]), "--out", str(runs["tmp"] / "never"),
                  "--workers", bad])
        assert stop.value.code == 2
        assert f"--workers: must be a whole number of at least 1, not '{bad}'" in \
            capsys.readouterr().err
    assert not (runs["tmp"] / "never").exists()
    from evalkit.errors import EvalkitError
    from evalkit.runner import run
    for bad in (0, np.int64(0), 2.0, True, "2"):
        with pytest.raises(EvalkitError, match="workers must be a whole number of at least 1"):
            run(runs["a_params"], out=runs["tmp"] / "never", workers=bad)
    assert not (runs["tmp"] / "never").exists()


def test_provenance_outside_a_checkout(tmp_path):
    p = provenance(tmp_path)
    assert p["lock"]["source"] == "distribution" and "git" not in p
    assert copy.deepcopy(p["packages"]) == provenance()["packages"]


def test_only_accepts_notebook_or_workbook_names():
    from evalkit.errors import EvalkitError
    from evalkit.runner import workbook_names
    assert workbook_names(["04_costs", "utilization"]) == ["utilization", "costs"]
    assert workbook_names("03_utilization.ipynb, costs") == ["utilization", "costs"]
    with pytest.raises(EvalkitError, match="no such workbook; give one of 01_data_quality"):
        workbook_names(["utilisation"])


def test_status_of_a_finished_run_lists_each_workbooks_time_and_memory(runs, capsys):
    assert main(["status", str(runs["a"])]) == 0
    out = capsys.readouterr().out.splitlines()
    run = json.loads((runs["a"] / "results.json").read_text())["run"]
    assert out[0] == f"{runs['a']}: ok" and out[1] == f"  run id {run['run_id']}"
    for line, w in zip(out[2:], run["workbooks"], strict=True):
        assert line.split()[:2] == [w["workbook"], "ok"]
        assert f"{w['seconds']:.1f} s, peak memory {w['peak_memory_mb'] / 1e3:.2f} GB" in line

