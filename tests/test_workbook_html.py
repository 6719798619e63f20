"""The workbooks' HTML as a plan could publish it: no stderr, Python warning, traceback,
NaN or inf cell, install path or raw code name; code hidden unless report.show_code.

Runs checked: the shared claims run (``claims_run``) and the session's run of every
params file (params/*.yaml; tests/shared_runs.py says how each is run: demo.yaml's
workbooks are the claims run's, on a smaller plan), among them a person-level run that
shows its code (the support group survival plan, 86 people) and a public summary run
(the clearinghouse brief).
The code names looked for are the results vocabulary's scales with an underscore
(:data:`evalkit.results.SCALES`) and the quantity names of the cost-benefit tables the run
itself recorded in results.json, so a new quantity is checked without editing this file.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from conftest import assert_structured_records

import evalkit
from evalkit.analysis import show
from evalkit.results import SCALES
from evalkit.runner import _html

ROOT = Path(__file__).resolve().parents[1]
#: a Python warning as Python prints it (``RuntimeWarning: divide by zero``)
WARNING = re.compile(r"\b[A-Z][A-Za-z]*Warning:")
#: absolute paths a reader should never see: an install folder, and this machine's
#: checkout, Python environment and temporary folder (wherever they are)
PATHS = re.compile("|".join(["site-packages", "dist-packages",
                             *(re.escape(f"{p}{os.sep}") for p in
                               (ROOT, Path(sys.prefix), Path(tempfile.gettempdir())))]))
#: cells that show a figure that could not be computed as it came out of pandas
#: a code cell's input in nbconvert's HTML (markdown cells have an input area too)
CODE = ".jp-CodeCell .jp-InputArea"
NOT_A_NUMBER = {"nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "None", "<NA>"}


def _pages(run) -> dict[str, BeautifulSoup]:
    pages = {p.name: BeautifulSoup(p.read_text(), "html.parser")
             for p in sorted(run.output_dir.glob("[0-9]*.html"))}
    assert pages, "the run exported no workbook HTML"
    return pages


def _code_names(run) -> set[str]:
    """Scales with an underscore, and the quantities of the run's cost-benefit tables."""
    names = {s for s in SCALES if "_" in s}
    tables = json.loads((run.output_dir / "results.json").read_text())["tables"]
    for key, col in (("cost_benefit.cost_benefit", "term"), ("cost_benefit.headline", "quantity"),
                     ("cost_benefit.psa_summary", "term")):
        names |= {r[col] for r in tables.get(key, []) if "_" in str(r.get(col, ""))}
    return names


def _problems(run) -> list[str]:
    names = _code_names(run)
    found = []
    for name, soup in _pages(run).items():
        if soup.select('[data-mime-type="application/vnd.jupyter.stderr"], .jp-OutputArea-error'):
            found.append(f"{name}: stderr output")
        if soup.select(f"{CODE}, .jp-InputPrompt, .jp-OutputPrompt"):
            found.append(f"{name}: code shown")
        text = soup.get_text(" ")
        for what, pattern in (("python warning", WARNING), ("install path", PATHS)):
            for m in pattern.finditer(text):
                found.append(f"{name}: {what} {text[max(0, m.start() - 60):m.end() + 60]!r}")
        if "Traceback (most recent call last)" in text:
            found.append(f"{name}: traceback")
        for cell in soup.find_all(["td", "th"]):
            value = cell.get_text(" ", strip=True)
            if value in NOT_A_NUMBER:
                found.append(f"{name}: cell {value!r}")
        for code in names:
            if re.search(rf"\b{re.escape(code)}\b", text):
                found.append(f"{name}: code name {code!r}")
    return found


@pytest.mark.xdist_group("run-demo")
def test_claims_workbooks_read_as_published(claims_run):
    """Every workbook of the shared claims run: readable tables, no stray output."""
    assert _problems(claims_run) == []
    pages = _pages(claims_run)
    for name, soup in pages.items():
        text = soup.get_text(" ")
        assert "Notes on this run" in text, name                # the notes close each workbook
        assert "evalkit.Study(" not in soup.get_text(""), name  # code hidden by default
    # the cost-benefit workbook's payback months at a CI end cannot be computed: it says so
    cb = pages["05_cost_benefit.html"].get_text(" ")
    assert show.NOT_ESTIMABLE in cb and "Not estimable:" in cb
    # Table 1 in publication form: n (%) for yes/no, mean (SD) for continuous, the SMD
    t1 = next(t for t in pages["01_data_quality.html"].find_all("table")
              if "characteristic" in t.get_text())
    head = [th.get_text(strip=True) for th in t1.find_all("th")]
    assert "SMD" in head and any(re.search(r"\(n=[\d,]+\)$", h) for h in head)
    body = [td.get_text(strip=True) for td in t1.find_all("td")]
    assert any(re.fullmatch(r"[\d,]+ \(\d+\.\d%\)", v) for v in body)          # n (%)
    assert any(re.fullmatch(r"[\d.,]+ \([\d.,]+\)", v) for v in body)          # mean (SD)


#: every params file the project ships
PARAMS_FILES = sorted(p.stem for p in (ROOT / "params").glob("*.yaml"))


def known_defects(defects: dict[str, str]) -> list:
    """:data:`PARAMS_FILES` as test parameters, those named in ``defects`` (name ->
    what is wrong) marked as failing until evalkit is fixed (strict: a fix makes them
    fail until the mark is removed). Each is in the pytest-xdist group ``run-NAME``, with
    the other tests of that run, so the worker that makes the run reads it too."""
    return [pytest.param(n, marks=[pytest.mark.xdist_group(f"run-{n}"),
                                   *([pytest.mark.xfail(strict=True, reason=defects[n])]
                                     if n in defects else [])])
            for n in PARAMS_FILES]


def _params_run(shared_runs, name: str) -> evalkit.runner.RunResult:
    """The session's run of params/NAME.yaml; for demo.yaml the shared claims run (the
    same workbooks, scenario and seed on a smaller plan)."""
    return shared_runs.claims() if name == "demo" else shared_runs.params_file(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", known_defects({}))
def test_every_params_file_reads_as_published(shared_runs, name):
    """Every params file's workbooks: nothing a reader should not see (the code only
    where the run asks for it with report.show_code)."""
    run = _params_run(shared_runs, name)
    shown = json.loads((run.output_dir / "params.json").read_text())["report"]["show_code"]
    problems = _problems(run)
    assert [p for p in problems if not (shown and p.endswith("code shown"))] == []
    # the report reads the structured records: each one complete, one main result per
    # outcome and scale
    assert_structured_records(json.loads(run.results_path.read_text()))


@pytest.mark.xdist_group("run-support_group_survival")
@pytest.mark.slow
def test_person_run_can_show_its_code(shared_runs):
    """A person-level run (two workbooks, 86 people) with report.show_code: its HTML keeps
    the code (what else it must not show: the test above)."""
    run = shared_runs.params_file("support_group_survival")
    assert json.loads((run.output_dir / "params.json").read_text())["report"]["show_code"]
    for name, soup in _pages(run).items():
        assert soup.select(CODE), name
        assert "evalkit.Study(" in soup.get_text(""), name      # (highlighted: no separator)


def test_html_export_hides_code_unless_asked(claims_run, tmp_path):
    """runner._html: no input cells by default; all of them with show_code."""
    nb_file = tmp_path / "01_data_quality.ipynb"
    shutil.copy(claims_run.output_dir / "01_data_quality.ipynb", nb_file)
    cells = nbformat.read(nb_file, as_version=4).cells
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1                     # papermill's, with this machine's path
    n_code = sum(c.cell_type == "code" for c in cells) - 1
    hidden = BeautifulSoup(_html(nb_file, show_code=False).read_text(), "html.parser")
    assert not hidden.select(CODE)
    shown = BeautifulSoup(_html(nb_file, show_code=True).read_text(), "html.parser")
    assert len(shown.select(CODE)) == n_code      # every code cell but the injected one
    assert injected[0].source.strip() not in shown.get_text("")


def test_run_notes_list_each_warning_once_in_words():
    """Warnings are recorded, not printed, and listed once with a count and no path."""
    import warnings

    import numpy as np
    dropped = "12 rows without a follow-up window were left out"
    with show.RunNotes() as notes:
        warnings.warn(dropped, evalkit.errors.DataDroppedWarning, stacklevel=1)
        warnings.warn(dropped, evalkit.errors.DataDroppedWarning, stacklevel=1)
        with np.errstate(divide="warn"):
            np.log(np.zeros(1))
    lines = notes.sentences()
    assert lines == [f"Rows left out (from 2 places): {dropped}",
                     "Numerical: divide by zero encountered in log"]
    assert warnings.showwarning is not notes._record          # recording stopped


def test_readable_tables_have_no_code_names_nan_or_cents_on_large_totals():
    import numpy as np
    import pandas as pd
    t = pd.DataFrame({"outcome": ["er_visits", "total_cost"],
                      "scale": ["rate_difference_per_1000_mm", "cost_difference"],
                      "estimate": [-2.139, 123456.789], "ci_low": [np.nan, -np.inf],
                      "members": [1158.0, 431.0]})
    out = show.readable(t)
    assert list(out.columns) == ["outcome", "scale", "estimate", "95% CI, low", "members"]
    assert out.to_dict("list") == {
        "outcome": ["ER visits", "Total cost of care"],
        "scale": ["difference per 1,000 member-months", "cost difference per member ($, follow-up)"],
        "estimate": ["-2.14", "$123,457"], "95% CI, low": ["not estimable"] * 2,
        "members": ["1,158", "431"]}
