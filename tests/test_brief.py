"""The brief (brief.html, brief.pdf): made by a real run, read back with poppler.

The run is the session's shared ``claims_run`` (tests/conftest.py, tests/shared_runs.py):
the default claims workbooks on a small synthetic plan; these tests only read it.

``pdftoppm`` and ``pdftotext`` (Debian package poppler-utils) must be installed: ``make
test`` installs them when missing (``.ci/system-packages``), so these tests fail, not
skip, without them.
"""
import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image

import evalkit
from evalkit import cli, report, runner
from evalkit.params import validate
from evalkit.privacy import DisclosureError, scan_outputs
from evalkit.report import BriefError, write_brief
from evalkit.report.findings import total
from shared_runs import CLAIMS_RUN_PARAMS as PARAMS


@pytest.fixture(scope="module")
def run(claims_run):
    return claims_run


def _results(run) -> dict:
    return json.loads(run.results_path.read_text())


def _copy_run(run, dest: Path, results=None, params_update=None, work: bool = False) -> Path:
    """A run folder with results.json and params.json only (no working database), or
    with a copy of the run's ``work`` folder too (``work``)."""
    dest.mkdir(parents=True, exist_ok=True)
    if work:
        shutil.copytree(run.output_dir / "work", dest / "work")
    res = results if results is not None else _results(run)
    (dest / "results.json").write_text(json.dumps(res))
    p = json.loads((run.output_dir / "params.json").read_text())
    for section, values in (params_update or {}).items():
        p[section] = {**p.get(section, {}), **values}
    (dest / "params.json").write_text(json.dumps(p))
    return dest


def pdf_text(pdf: Path) -> str:
    """The PDF's text with every run of whitespace made one space."""
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], check=True,
                         capture_output=True).stdout.decode("utf-8")
    return " ".join(out.split())


def page_images(pdf: Path, tmp: Path) -> list[np.ndarray]:
    """Each page as a grey-level image (pdftoppm at 30 dpi)."""
    prefix = tmp / "page"
    subprocess.run(["pdftoppm", "-r", "30", "-gray", str(pdf), str(prefix)], check=True)
    return [np.asarray(Image.open(f), dtype=float) for f in sorted(tmp.glob("page*.pgm"))]


def assert_pages_drawn(pdf: Path, tmp: Path) -> int:
    pages = page_images(pdf, tmp)
    assert pages, "pdftoppm produced no page"
    for i, img in enumerate(pages, start=1):
        # the page body, above the footer that every page has: a blank body is one grey
        # level (variance 0); text and charts make dark pixels
        body = img[: int(0.92 * img.shape[0])]
        assert body.var() > 2, f"page {i} looks blank (pixel variance {body.var():.1f})"
        assert (body < 128).mean() > 0.0005, f"page {i} has almost no ink"
    return len(pages)


def _pick(results, **want) -> dict:
    rows = [e for e in results["estimates"] if all(e.get(k) == v for k, v in want.items())]
    assert len(rows) == 1, (want, len(rows))
    return rows[0]


def test_run_writes_the_brief(run, tmp_path):
    """The runner renders brief.html and brief.pdf (hmo audience by default), records
    them in results.json, and the PDF's pages are drawn and hold the run's numbers."""
    out = run.output_dir
    res = _results(run)
    assert res["run"]["status"] == "ok"
    assert res["run"]["brief"]["html"] == "brief.html"
    assert res["run"]["brief"]["pdf"] == "brief.pdf"
    assert res["run"]["brief"]["audience"] == "hmo"
    html = (out / "brief.html").read_text()
    # self-contained: nothing to fetch (namespaces such as xmlns="http://..." are not fetched)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|@import|url\(\s*["']?https?:""",
                         html)
    assert html.count("<svg") >= 2                      # the ratio chart and the savings chart
    assert_pages_drawn(out / "brief.pdf", tmp_path)
    text = pdf_text(out / "brief.pdf")
    assert PARAMS["title"] in text
    # a key finding with its numbers taken from results.json: the adjusted ER effect
    rr = _pick(res, workbook="utilization", outcome="er_visits", estimand="ATE",
               scale="rate_ratio")
    rd = _pick(res, workbook="utilization", outcome="er_visits", estimand="ATE",
               scale="rate_difference_per_1000_mm")
    per_year = 12 * rd["estimate"]        # per 1,000 member-months -> per 1,000 member-years
    words = f"{abs(per_year):,.0f} {'fewer' if per_year < 0 else 'more'}"
    assert f"{words} ER visits per 1,000 members per year" in text
    assert (f"rate ratio of {rr['estimate']:.2f} (95% CI {rr['ci_low']:.2f} to "
            f"{rr['ci_high']:.2f})") in text
    # the hmo wording: PMPM and return on investment
    pmpm = _pick(res, workbook="costs", scale="pmpm_difference")
    assert f"${abs(pmpm['estimate']):,.2f} {'lower' if pmpm['estimate'] < 0 else 'higher'} PMPM" in text
    roi = _pick(res, workbook="cost_benefit", scale="roi")
    assert f"return on investment of {100 * roi['estimate']:.0f}%" in text
    # provenance (a hash may be broken across lines in the PDF)
    squeezed = "".join(text.split())
    assert res["run"]["params_hash"] in squeezed
    assert res["run"]["data_fingerprint"] in squeezed
    assert f"evalkit version {evalkit.__version__}" in text
    assert res["run"]["started"][:10] in text
    assert "synthetic" in text and "Limitations" in text and "Methods" in text
    # limitations say what an observational, pre/post design can and cannot show
    assert "not randomized" in text and "parallel trends" in text


def test_clearinghouse_brief_from_the_command_line(run, tmp_path):
    """`evalkit brief RUN --audience clearinghouse`: plain words, no jargon, written as
    brief-clearinghouse.pdf beside the run's own brief (which keeps its record)."""
    folder = _copy_run(run, tmp_path / "run")
    own = json.loads((folder / "results.json").read_text())["run"]["brief"]
    assert cli.main(["brief", str(folder), "--audience", "clearinghouse"]) == 0
    res = json.loads((folder / "results.json").read_text())
    assert res["run"]["brief"] == own and own["audience"] != "clearinghouse"
    assert_pages_drawn(folder / "brief-clearinghouse.pdf", tmp_path)
    text = pdf_text(folder / "brief-clearinghouse.pdf")
    lower = text.lower()
    assert "range of plausible values" in lower
    for jargon in ("hazard", "confidence interval", "95% ci", "p =", "regression", "pmpm",
                   "rate ratio"):
        assert jargon not in lower, jargon
    assert "What this means for referral" in text
    rd = _pick(_results(run), workbook="utilization", outcome="er_visits", estimand="ATE",
               scale="rate_difference_per_1000_mm")
    per_year = 12 * rd["estimate"]
    assert (f"about {abs(per_year):,.0f} {'fewer' if per_year < 0 else 'more'} visits per "
            "1,000 members a year") in text


def _plant_small_cells(results: dict) -> dict:
    res = copy.deepcopy(results)
    for e in res["estimates"]:                       # an arm of 7 members for the ER effect
        if e["workbook"] == "utilization" and e["outcome"] == "er_visits":
            e["n_treated"] = 7
    rates = res["tables"]["utilization.rates"]
    row = next(r for r in rates if r["period"] == "followup" and r["outcome"] == "inpatient_days"
               and r["arm"] == "self_help")
    row["events"] = 4.0                               # 4 inpatient stays' worth of days
    res["tables"]["data_quality.table1"].append(
        {"covariate": "rare_condition", "kind": "binary", "mean_treated": 3 / 431,
         "sd_treated": None, "mean_control": 40 / 1069, "sd_control": None, "smd": -0.2,
         "n_missing": 0})
    res["tables"]["time_to_event.survival_at"][0]["n_event"] = 5
    return res


def test_public_brief_suppresses_small_cells(run, tmp_path):
    """Public research brief from results with planted small cells: every table passes
    suppression, the ER effect resting on 7 members is withheld, nothing small is left."""
    res = _plant_small_cells(_results(run))
    folder = _copy_run(run, tmp_path / "run", res,
                       {"report": {"public": True, "audience": "research", "min_cell": 11}},
                       work=True)
    brief = write_brief(folder)
    assert brief.public and brief.audience == "research"
    planted = sum(e["n_treated"] == 7 for e in res["estimates"])
    assert brief.cells_suppressed >= 6 and brief.estimates_withheld == planted
    # the brief files on their own pass the privacy scan (results.json, planted, would not)
    alone = tmp_path / "alone"
    alone.mkdir()
    for f in ("brief.html", "brief.pdf"):
        shutil.copy(folder / f, alone / f)
    report = scan_outputs(alone, min_cell=11)
    assert report.ok, report.summary()
    assert not scan_outputs(folder, min_cell=11).ok       # the planted cells are real
    soup = BeautifulSoup((folder / "brief.html").read_text(), "html.parser")

    def rows(section):
        tab = soup.select_one(f"section.table-{section} table")
        head = [th.get_text(strip=True) for th in tab.select("thead th")]
        return [dict(zip(head, [td.get_text(strip=True) for td in tr.select("td")]))
                for tr in tab.select("tbody tr")]
    util = rows("estimates-utilization")
    er = [r for r in util if r["outcome"] == "ER visits"]
    assert er and all(r["n self-help referral"] == "*" and r["estimate"] == "*" for r in er)
    assert all(r["n comparison"] == "*" for r in er)             # complementary
    rate = next(r for r in rows("rates") if r["outcome"] == "inpatient days"
                and r["period"] == "follow-up")
    assert rate["Self-help referral"] == "*"
    rare = next(r for r in rows("table1") if r["characteristic"] == "rare condition")
    assert rare["Self-help referral"] == "*" and rare["SMD"] == "*"
    surv = rows("survival")[0]
    assert surv["n events"] == "*" and surv["n at risk"] == "*"
    text = pdf_text(folder / "brief.pdf")
    assert "suppressed: a count of fewer than 11 people" in text
    assert f"{planted} estimate(s) resting on fewer than 11 members" in text
    # the withheld ER effect is in no sentence, chart or table
    for e in res["estimates"]:
        if e["n_treated"] == 7 and e["scale"] == "rate_ratio" and e["estimand"] == "ATE":
            shown = f"{e['estimate']:.2f} (95% CI {e['ci_low']:.2f} to {e['ci_high']:.2f}"
            assert shown not in text and shown not in " ".join(brief.findings)


def test_public_brief_of_a_run_copied_without_its_database_is_refused(run, tmp_path, capsys):
    """Without work/ the brief's scan cannot look for the members' ids and dates of
    service: a public brief is refused, saying why and what to do; an internal brief of
    the same folder is made."""
    public = _copy_run(run, tmp_path / "public", params_update={"report": {"public": True}})
    with pytest.raises(BriefError, match=r"needs the run's working database .*work.*cannot "
                                         r"be read.*copy work/ with it"):
        write_brief(public)
    assert sorted(p.name for p in public.iterdir()) == ["params.json", "results.json"]
    assert cli.main(["brief", str(public)]) == 2
    assert "not written" in capsys.readouterr().err
    internal = _copy_run(run, tmp_path / "internal",
                         params_update={"report": {"public": False}})
    brief = write_brief(internal)
    assert not brief.public and brief.pdf.is_file()


def test_public_brief_refuses_member_level_rows(run, tmp_path):
    """A results table with member ids and dates of service: the public brief refuses."""
    res = _results(run)
    res["tables"]["utilization.member_listing"] = [
        {"member_id": "M0009912", "service_date": "2023-05-07", "er_visits": 3}]
    folder = _copy_run(run, tmp_path / "run", res, {"report": {"public": True}})
    with pytest.raises(DisclosureError, match="member_listing.*member_id"):
        write_brief(folder)
    assert not (folder / "brief.html").exists() and not (folder / "brief.pdf").exists()


def test_public_brief_refuses_a_member_id_in_its_text(run, tmp_path):
    """A member id that reached a label is found by the scan of the rendered brief, and
    the brief is not written."""
    res = _results(run)
    for e in res["estimates"]:
        if e["workbook"] == "costs":
            e["outcome"] = "cost_of_member_884213"
    folder = _copy_run(run, tmp_path / "run", res, {"report": {"public": True}})
    with pytest.raises(DisclosureError, match="member_id"):
        write_brief(folder, member_ids=["884213", "771002"])
    assert sorted(p.name for p in folder.iterdir()) == ["params.json", "results.json"]


def test_summary_mode_brief_from_published_figures(tmp_path):
    """Summary mode: only published figures; sections without estimates are left out."""
    params = evalkit.params.load(Path(__file__).parent.parent / "params" /
                                 "clearinghouse_brief.yaml")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(params.to_dict()))
    # Humphreys & Moos (2001): 13.1 vs 22.5 outpatient visits per patient, 887 per arm;
    # the ratio of means 13.1 / 22.5 = 0.582 (interval made up for the test).
    results = {"run": {"status": "ok", "evalkit_version": evalkit.__version__,
                       "params_hash": params.digest(), "seed": params.seed,
                       "data_fingerprint": "f" * 64, "started": "2026-01-02T03:04:05+00:00",
                       "finished": "2026-01-02T03:05:00+00:00",
                       "workbooks": [{"workbook": "synthesis", "status": "ok"}]},
               "estimates": [{"workbook": "synthesis", "outcome": "outpatient_mh_visits",
                              "contrast": "self_help vs control", "estimand": "ratio of means",
                              "method": "published means", "scale": "ratio",
                              "estimate": 13.1 / 22.5, "std_error": 0.05, "ci_low": 0.53,
                              "ci_high": 0.64, "p_value": None, "n_treated": 887,
                              "n_control": 887}],
               "tables": {}}
    (folder / "results.json").write_text(json.dumps(results))
    brief = write_brief(folder)
    assert brief.audience == "clearinghouse" and brief.public
    assert_pages_drawn(brief.pdf, tmp_path)
    text = pdf_text(brief.pdf)
    # 1 - 13.1/22.5 = 0.418; published arms are told as arms, not as referral
    assert "about 42% lower in the intervention arm than in the comparison arm" in text
    assert "range of plausible values: 36% to 47% lower" in text
    assert "referral" not in text.split("Key findings")[1].split("Each figure")[0]
    assert "published" in text and "Use of care by group" not in text


def test_a_brief_that_cannot_be_rendered_fails_the_run(run, tmp_path, monkeypatch):
    """The runner's brief step: a rendering error marks the run failed in results.json."""
    folder = _copy_run(run, tmp_path / "run")
    params = validate(PARAMS)
    info = {**_results(run)["run"], "status": "running"}

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")
    monkeypatch.setattr(report, "write_brief", broken)     # the runner imports it when called
    with pytest.raises(BriefError, match="no fonts"):
        runner._write_brief(params, folder, info, folder / "results.json", True)
    res = json.loads((folder / "results.json").read_text())
    assert res["run"]["status"] == "failed" and res["run"]["failed_step"] == "brief"


def test_unknown_audience_is_a_clear_error(run, tmp_path):
    folder = _copy_run(run, tmp_path / "run")
    with pytest.raises(BriefError, match="audience 'board'.*hmo, research, clearinghouse"):
        write_brief(folder, audience="board")


def test_hmo_brief_shows_budget_impact_when_recorded():
    """Budget-impact records (evalkit.econ.budget_impact(...).estimates()) become a
    table of the hmo brief; they are not mistaken for a cost effect."""
    from evalkit.econ import budget_impact
    from evalkit.report import build_context, render_html
    bi = budget_impact(50_000, 0.05, [0.2, 0.3], [0.5, 0.5], 300.0, 150.0, years=2)
    est = bi.estimates().assign(workbook="budget", std_error=None, ci_low=None, ci_high=None,
                                p_value=None, n_treated=None, n_control=None)
    results = {"run": {"status": "ok", "workbooks": [{"workbook": "budget", "status": "ok"}]},
               "estimates": json.loads(est.to_json(orient="records")), "tables": {}}
    ctx = build_context(results, validate({"title": "Budget plan"}), "hmo")
    budget = next(t for t in ctx["tables"] if t.key == "budget")
    first = bi.by_year.iloc[0]
    assert list(budget.frame["year"]) == ["year 1", "year 2"]
    # savings are positive in the brief: net savings = minus the net budget impact
    assert budget.frame["net savings"].iloc[0] == total(-first["net_budget_impact"])
    assert not any(f.topic == "cost" for f in ctx["findings"])
    sentence = next(f.text for f in ctx["findings"] if f.topic == "budget")
    assert sentence.startswith(f"In year 1 the program "
                               f"{'adds' if first['net_budget_impact'] >= 0 else 'saves'} "
                               f"{total(abs(first['net_budget_impact']))}")
    html = render_html(ctx)
    assert "Budget impact: net savings to the plan" in html and "Budget plan" in html
    assert "Savings are shown as positive" in html
