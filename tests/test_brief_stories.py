"""Each kind of study gets a brief in its own words: read back from the PDF.

The runs are the project's own params files (params/*.yaml), run end to end once per
session and shared with the other tests that read them (tests/shared_runs.py): planning (er_power), survey proportions (parent_survey), a randomized trial with
a time-to-event outcome (support_group_survival), a comparison of three kinds of groups
(group_types) and a synthesis projected onto a plan (clearinghouse_brief). The numbers
the tests look for are taken from each run's results.json, never typed in; the words
they forbid are those that would be untrue of the study (ER visits, referral, a
confounding limitation where assignment was randomized).

``pdftotext`` (poppler-utils) must be installed (see tests/test_brief.py).
"""
import json
import re

import pandas as pd
import pytest
from test_brief import pdf_text
from test_workbook_html import PATHS, WARNING, _code_names, _params_run, known_defects

from evalkit.models.bootstrap import FAILED_SHARE_LIMIT
from evalkit.params import validate
from evalkit.report import build_context, findings, story, tables
from evalkit.report.story import DEFAULT_ARMS


def _run(shared_runs, name: str):
    result = shared_runs.params_file(name)
    res = json.loads(result.results_path.read_text())
    assert res["run"]["status"] == "ok"
    return res, pdf_text(result.output_dir / "brief.pdf")


def _findings_text(text: str) -> str:
    """The key findings of the PDF text (up to the note on intervals or the first table)."""
    start = text.index("Key findings")
    ends = [i for i in (text.find(w, start) for w in ("Intervals are", "Each figure is",
                                                     "Methods", "How we worked"))
            if i > 0]
    return text[start:min(ends)]


def _main_results(text: str) -> list[str]:
    """The labels that carry '(main result)' in the findings, in order."""
    return re.findall(r"• ([^•◦]+?) \(main result\):", _findings_text(text))


def _pick(res, **want):
    rows = [e for e in res["estimates"] if all(e.get(k) == v for k, v in want.items())]
    assert len(rows) == 1, (want, len(rows))
    return rows[0]


# ---------------------------------------------------------------------- planning
@pytest.fixture(scope="module")
def planning(shared_runs):
    return _run(shared_runs, "er_power")


@pytest.mark.xdist_group("run-er_power")
def test_planning_brief_reads_as_power_and_sample_size(planning):
    res, text = planning
    power = _pick(res, analysis="power", scale="proportion")
    size = {r["term"]: r["estimate"] for r in res["tables"]["planning.sample_size"]}
    mdr = _pick(res, analysis="power", scale="rate_ratio")
    assert f"{100 * power['estimate']:.0f}% power to detect an 18% drop in ER visits" in text
    assert (f"{size['n_control']:,.0f} members per arm ({size['n_total']:,.0f} in all) give 80% "
            "power") in text
    assert f"smallest drop the planned study detects with 80% power is " \
           f"{100 * (1 - mdr['estimate']):.1f}%" in text
    # not an effect estimate: no interval, no "fewer with referral", no observational caveat
    for untrue in ("n/a", "95% CI", "referral", "referred", "not randomized", "(main result)",
                   "proportion 8"):
        assert untrue not in _findings_text(text), untrue
    assert "not randomized" not in text and "Observational" not in text


# ---------------------------------------------------------------------- survey
@pytest.fixture(scope="module")
def survey(shared_runs):
    return _run(shared_runs, "parent_survey")


@pytest.mark.xdist_group("run-parent_survey")
def test_survey_brief_gives_points_and_no_referral(survey):
    res, text = survey
    rd = _pick(res, scale="risk_difference")
    f = _findings_text(text)
    assert f"{100 * rd['estimate']:.1f} percentage points higher" in f
    assert f"{100 * rd['estimate']:.1f}%" not in f            # a difference is not a share
    labels = [e["outcome"] for e in res["estimates"]]
    assert sorted(_main_results(text)) == sorted(labels)      # one main result each
    for untrue in ("ER ", "referred", "referral", "not randomized", "bootstrap",
                   "use of professional care"):
        assert untrue not in text, untrue


# ---------------------------------------------------------------------- time to event
@pytest.fixture(scope="module")
def trial(shared_runs):
    return _run(shared_runs, "support_group_survival")


@pytest.mark.xdist_group("run-support_group_survival")
def test_randomized_survival_brief_tells_the_trial(trial):
    res, text = trial
    study = res["spec"]["study"]
    assert study["randomized"] is True
    hr = _pick(res, analysis="survival", scale="hazard_ratio", primary=True)
    assert _main_results(text) == ["Death"]                   # one main result
    assert (f"the rate of death was {100 * (1 - hr['estimate']):.0f}% lower among women "
            "randomized to weekly support groups than among women randomized to the control "
            "arm") in text
    assert f"hazard ratio {hr['estimate']:.2f}" in text
    assert "Also, time-to-event model, adjusted for age, visceral mets" in text
    for untrue in ("ER visit", "referred", "referral", "not randomized", "Observational",
                   "count models", "two-part"):
        assert untrue not in text, untrue
    assert "Assignment was randomized" in text


# ---------------------------------------------------------------------- k groups
@pytest.fixture(scope="module")
def groups(shared_runs):
    return _run(shared_runs, "group_types")


@pytest.mark.xdist_group("run-group_types")
def test_group_comparison_brief_names_every_group(groups):
    res, text = groups
    f = _findings_text(text)
    assert _main_results(text) == ["Group size (members)", "Kinds of activity", "Lifetime"]
    kinds = {e["contrast"] for e in res["estimates"] if e["scale"] == "mean"}
    assert kinds == {"professional", "independent", "shared"}
    for outcome in ("members", "activity_kinds"):
        for k in kinds:
            m = _pick(res, outcome=outcome, contrast=k, scale="mean")
            assert f"{k} {findings.num(m['estimate'])} (95% CI" in f
    assert "17 groups" in f and "members referred" not in text
    for untrue in ("no difference likely", "referred", "similar members", "ER "):
        assert untrue not in text, untrue


# ---------------------------------------------------------------------- synthesis
@pytest.fixture(scope="module")
def synthesis(shared_runs):
    return _run(shared_runs, "clearinghouse_brief")


@pytest.mark.xdist_group("run-clearinghouse_brief")
def test_synthesis_brief_names_assumptions_and_totals(synthesis):
    res, text = synthesis
    cost = _pick(res, analysis="projection", outcome="total_cost", scale="difference")
    assert f"${abs(cost['estimate']) / 1e6:.2f} million lower a year" in text
    assert f"${abs(cost['ci_low']) / 1e6:.2f} million lower" in text
    assert "$1,561,429" not in text                          # totals are not to the dollar
    # the chance that costs fall is before program costs, which the params never set
    assert "before paying for the program" in text
    assert "program saves money" not in text
    assert "Assumed program costs: the params do not give them" in text
    assert "$120 coordination per referred member" in text
    assert {a["input"] for a in res["spec"]["assumed"]} == {
        "econ.coordination", "econ.facilitation", "econ.materials", "econ.fixed_startup"}
    assert "SDs are not published" in text
    assert "not randomized" not in text


def test_spec_lists_program_costs_left_to_defaults():
    """Only the program costs the params leave out are assumptions."""
    from evalkit.analysis import spec
    s = spec.resolve(validate({"econ": {"coordination": 150, "materials": 20}}))
    assert [a["input"] for a in s.assumed] == ["econ.facilitation", "econ.fixed_startup"]
    assert spec.AnalysisSpec.from_dict(s.to_dict()).assumed == s.assumed


# ---------------------------------------------------------------------- every params file
#: a figure that could not be computed, printed as it came out of Python
RAW_VALUE = re.compile(r"(?<![\w-])(nan|NaN|-?inf|-?Infinity|<NA>)(?![\w-])")


@pytest.mark.parametrize("name", known_defects({}))
def test_every_params_files_brief_reads_as_published(shared_runs, name):
    """The brief of every params file's run (demo.yaml: the shared claims run, the same
    workbooks on a smaller plan): its title, no raw missing value, Python warning,
    traceback, install path or code name; a study whose arms are not referral vs none
    is told in its own words, and not as referral."""
    run = _params_run(shared_runs, name)
    params = json.loads((run.output_dir / "params.json").read_text())
    res = json.loads(run.results_path.read_text())
    text = pdf_text(run.output_dir / "brief.pdf")
    assert params["title"] in text
    for what, pattern in (("raw value", RAW_VALUE), ("python warning", WARNING),
                          ("install path", PATHS)):
        found = [text[max(0, m.start() - 60):m.end() + 60] for m in pattern.finditer(text)]
        assert found == [], what
    assert "Traceback" not in text
    for code in _code_names(run):
        assert not re.search(rf"\b{re.escape(code)}\b", text), code
    study = res["spec"]["study"]
    arms = (study["intervention"], study["comparison"])
    if params["mode"] != "summary" and arms != DEFAULT_ARMS:
        assert f"{study['unit']} {study['intervention']}" in text
        own = " ".join(arms).lower()
        for word in ("referral", "referred"):
            assert word in own or word not in text.lower(), word


# ---------------------------------------------------------------------- units
def test_numbers_for_readers():
    """Formatting rules, worked by hand."""
    assert findings.num(3.44126) == "3.44" and findings.num(0.0861883) == "0.0862"
    assert findings.num(1234.4) == "1,234" and findings.num(17.44) == "17.4"
    assert findings.money(1561429.48) == "$1.56 million"
    assert findings.money(1696.02) == "$1,696" and findings.money(8.723, True) == "$8.72"
    assert findings.total(496374) == "$496 thousand" and findings.total(-2e6) == "-$2.00 million"
    assert findings.points(0.4502) == "45.0 percentage points"
    assert story.article("18%") == "an" and story.article("20%") == "a"
    assert story.article("8%") == "an" and story.article("180%") == "a"


def _claims_params():
    return validate({"title": "t", "data": {"members": 1500}})


def test_lost_replicates_reach_the_brief():
    """Records whose resampling lost replicates: the brief says how many, and above 5%
    marks the interval unreliable (in the finding and in a note)."""
    base = {"workbook": "costs", "contrast": "self_help vs control", "estimand": "ATE",
            "method": "two-part model", "std_error": 1.0, "p_value": 0.1, "n_treated": 400,
            "n_control": 600, "analysis": "adjusted", "model": "two-part", "family": "gamma",
            "adjusted_for": ["age_at_index"], "primary": True, "outcome": "total_cost",
            "interval": "bootstrap"}
    est = [{**base, "scale": "cost_difference", "estimate": -120.0, "ci_low": -300.0,
            "ci_high": 60.0, "n_replicates": 1000, "n_failed": 80,
            "replicates_flag": "WARNING: ..."},
           {**base, "outcome": "er_visits", "scale": "rate_ratio", "estimate": 0.9,
            "ci_low": 0.8, "ci_high": 1.01, "n_replicates": 200, "n_failed": 2,
            "interval": None}]
    ctx = build_context({"estimates": est, "tables": {}, "run": {}}, _claims_params())
    notes = " ".join(ctx["notes"])
    assert "80 of 1,000 resampling replicates (8.0%)" in notes
    assert f"more than {FAILED_SHARE_LIMIT:.0%}: these intervals are unreliable" in notes
    assert "2 of 200 resampling replicates (1.0%)" in notes and "changes them little" in notes
    cost = next(f for f in ctx["findings"] if f.outcome == "total_cost")
    assert "Interval unreliable: 80 of 1,000 resampling replicates (8%) failed." in cost.text
    er = next(f for f in ctx["findings"] if f.outcome == "er_visits")
    assert "unreliable" not in er.text


def test_one_main_result_per_outcome_and_others_labelled():
    """The record marked primary leads; the other analyses follow under their labels."""
    base = {"workbook": "utilization", "contrast": "self_help vs control", "method": "m",
            "std_error": 0.1, "p_value": 0.01, "n_treated": 400, "n_control": 600,
            "outcome": "er_visits", "scale": "rate_ratio", "adjusted_for": []}
    est = pd.DataFrame([
        {**base, "analysis": "crude", "estimand": "crude", "estimate": 0.8, "ci_low": 0.7,
         "ci_high": 0.9, "primary": False},
        {**base, "analysis": "adjusted", "estimand": "ATE", "estimate": 0.85, "ci_low": 0.75,
         "ci_high": 0.95, "primary": True, "adjusted_for": ["age_at_index"]},
        {**base, "analysis": "prepost", "estimand": "ATT", "estimate": 0.9, "ci_low": 0.8,
         "ci_high": 1.0, "primary": False}])
    fs = findings.key_findings(est, "hmo")
    main = [f for f in fs if f.role == "main"]
    assert len(main) == 1 and "rate ratio of 0.85" in main[0].text
    assert [f.label for f in fs if f.role == "other"] == [
        "pre/post comparison (difference-in-differences)", "unadjusted comparison"]


def test_referral_advice_only_for_a_study_of_self_help_referral():
    """The clearinghouse brief's advice on referral to self-help groups is written only
    when the study is one (here: claims data with the default arms); a handbook study
    with the same records gets none, and no sentence is built on a hidden arm size."""
    rec = {"workbook": "utilization", "contrast": "self_help vs control", "estimand": "ATE",
           "method": "negative binomial", "std_error": 0.05, "p_value": 0.01, "n_treated": 400,
           "n_control": 600, "analysis": "adjusted", "model": "count", "family": "negbin",
           "adjusted_for": ["age_at_index"], "primary": True, "outcome": "er_visits",
           "scale": "rate_ratio", "estimate": 0.82, "ci_low": 0.74, "ci_high": 0.91}
    results = {"estimates": [rec], "tables": {}, "run": {}}
    referral = build_context(results, _claims_params(), audience="clearinghouse")
    assert any("self-help or mutual-aid group" in g for g in referral["guidance"])
    handbook = {**results, "spec": {"study": {"intervention": "members sent a self-care "
                                              "handbook", "comparison": "members not sent one"}}}
    other = build_context(handbook, _claims_params(), audience="clearinghouse")
    assert other["guidance"] == []
    assert "referral" not in " ".join(f.text for f in other["findings"])



def _advice(estimate: float, good: str | None = None) -> str:
    """The clearinghouse guidance for one clear ER rate ratio (95% CI estimate -/+ 0.08),
    with the spec's good direction of ER visits when ``good`` is given."""
    rec = {"workbook": "utilization", "contrast": "self_help vs control", "estimand": "ATE",
           "method": "negative binomial", "std_error": 0.04, "p_value": 0.001,
           "n_treated": 400, "n_control": 600, "analysis": "adjusted", "model": "count",
           "family": "negbin", "adjusted_for": ["age_at_index"], "primary": True,
           "outcome": "er_visits", "scale": "rate_ratio", "estimate": estimate,
           "ci_low": estimate - 0.08, "ci_high": estimate + 0.08}
    results = {"estimates": [rec], "tables": {}, "run": {}}
    if good:
        results["spec"] = {"study": {"intervention": story.DEFAULT_ARMS[0],
                                     "comparison": story.DEFAULT_ARMS[1]},
                           "outcomes": {"er_visits": {"label": "ER visits", "good": good}}}
    return " ".join(build_context(results, _claims_params(), "clearinghouse")["guidance"])


def test_referral_advice_reads_the_direction_from_the_record_and_the_spec():
    """Fewer ER visits is better by default: a clear drop is advice for referral, a clear
    rise is not, and where the spec says more is good the same drop counts as worse. The
    words of the finding play no part (the records decide)."""
    down, up = _advice(0.82), _advice(1.25)
    assert ("emergency-room visits came out lower with self-help referral, the way the "
            "study counts as better") in down
    assert ("emergency-room visits came out higher with self-help referral, the way the "
            "study counts as worse; referral should not be justified by savings") in up
    assert "do not show a clear change" not in down + up
    flipped = _advice(0.82, good="higher")
    assert "came out lower with self-help referral, the way the study counts as worse" in flipped
    assert "do not show a clear change" in _advice(0.95)      # interval 0.87 to 1.03


def _research_tables(res) -> dict:
    """The research brief's tables of a run, by key (built again from its results)."""
    ctx = build_context(res, res["run"]["params"], "research")
    return {t.key: t for t in ctx["tables"]}


@pytest.mark.xdist_group("run-support_group_survival")
def test_research_tables_name_the_trials_arms_unit_and_outcome(trial):
    res, _ = trial
    tabs = _research_tables(res)
    study, spec = res["spec"]["study"], res["spec"]["outcomes"]["survival_months"]
    arms = tuple(a[:1].upper() + a[1:] for a in (study["intervention"], study["comparison"]))
    assert tabs["cohort"].title == "Women compared"
    assert list(tabs["cohort"].frame["group"]) == [*arms, "Total"]
    assert tabs["table1"].title == "Before randomization: how the groups differed"
    assert list(tabs["table1"].frame.columns) == ["characteristic", *arms, "SMD"]
    est = tabs["estimates.survival"].frame
    assert set(est["outcome"]) == {spec["label"]}
    assert f"difference ({spec['unit']})" in set(est["scale"])
    assert {"n randomized to weekly support groups", "n randomized to the control arm"} \
        <= set(est.columns)
    shown = " ".join(" ".join(map(str, [t.title, *t.frame.columns, *t.frame.to_numpy().ravel()]))
                     for t in tabs.values())
    for untrue in ("self-help", "referral", "referred", "ER visit", "member"):
        assert untrue not in shown, untrue


@pytest.mark.xdist_group("run-group_types")
def test_research_tables_of_groups_name_the_contrast_not_two_arms(groups):
    res, _ = groups
    est = _research_tables(res)["estimates.group_comparison"].frame
    labels = {o["label"] for o in res["spec"]["outcomes"].values()}
    assert set(est["outcome"]) <= labels
    contrasts = [e["contrast"] for e in res["estimates"] if e["workbook"] == "group_comparison"]
    assert list(est["compared"]) == contrasts
    assert not any("self-help" in c or "comparison" in c.lower() for c in est.columns)


def test_headline_figures_are_per_the_studys_own_unit():
    """The value table names each figure by its quantity, per whom the study treated:
    'referred member' only for the claims default arms."""
    head = [{"figure": "gross savings per referred member per year", "estimate": 210.0,
             "quantity": "gross_savings", "unit": "dollars"},
            {"figure": "net savings per referred member over 1 year", "estimate": 54.0,
             "quantity": "net_savings", "unit": "dollars"}]
    results = {"tables": {"cost_benefit.headline": head}}
    person = story.Study(shape="two_arm", mode="person", intervention="who joined a group",
                         comparison="who did not", unit="patients", randomized=False)
    got = list(tables.headline_table(results, "hmo", person, 2).frame["figure"])
    assert got == ["gross savings per patient who joined a group per year",
                   "net savings per patient who joined a group over 2 years"]
    claims = list(tables.headline_table(results, "hmo", story.CLAIMS_STUDY, 1).frame["figure"])
    assert claims == [h["figure"] for h in head]


def test_cost_notes_and_tables_are_per_the_studys_own_unit():
    """A claims study of two treatment programs (humphreys_moos.yaml's spec): the
    assumed-costs note and the sensitivity table say per whom in the spec's words;
    'referred member' is kept for the default arms only."""
    p = validate({"title": "t", "data": {"members": 1500},
                  "study": {"intervention": "treated in 12-step programs",
                            "comparison": "treated in cognitive-behavioral programs",
                            "unit": "patients"},
                  "econ": {"coordination": 150, "materials": 20, "fixed_startup": 20000}})
    e = pd.DataFrame([{"analysis": "valuation", "outcome": "total_cost"}])
    results = {"spec": {"study": {"intervention": "treated in 12-step programs",
                                  "comparison": "treated in cognitive-behavioral programs",
                                  "unit": "patients"},
                        "assumed": [{"input": "econ.facilitation", "value": 0.0}]},
               "estimates": [{"analysis": "valuation"}],
               "tables": {"cost_benefit.cost_benefit": [
                   {"term": "net_savings_per_member", "unit": "$ per referred member over "
                    "the horizon", "estimate": 850.0, "at_ci_low": 800.0, "at_ci_high": 900.0},
                   {"term": "total_net_savings", "unit": "$, all referred members",
                    "estimate": 850000.0, "at_ci_low": 8e5, "at_ci_high": 9e5},
                   {"term": "break_even_cost_per_referred", "unit": "$ per referred member",
                    "estimate": 1000.0, "at_ci_low": 950.0, "at_ci_high": 1050.0}]}}
    st = story.study_of(results, p)
    assert st.per_treated == "patient treated in 12-step programs"
    note = " ".join(story.assumptions(p, results, e, st))
    assert "$0 facilitation per patient treated in 12-step programs" in note
    table = tables.sensitivity_table(results, st).frame
    assert list(table["figure"]) == ["net savings", "total net savings", "break even cost"]
    units = list(table["unit"])
    assert units == ["$ per patient treated in 12-step programs over the horizon",
                     "$, all patients treated in 12-step programs",
                     "$ per patient treated in 12-step programs per year"]
    # the claims default arms keep the words evalkit always used
    assert "$0 facilitation per referred member" in " ".join(
        story.assumptions(p, results, e))
    assert list(tables.sensitivity_table(results).frame["unit"]) == [
        "$ per referred member over the horizon", "$, all referred members",
        "$ per referred member per year"]
