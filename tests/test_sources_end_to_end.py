"""Every kind of data source, run end to end through the brief.

One synthetic plan of 300 members is read five ways (generated in the run, contract CSV
files, a DuckDB database, an OMOP CDM database and a Synthea CSV export; the last
two written by tests/plan_forms.py from the CDM and Synthea layouts), plus a person-level
file and published figures (summary mode: params/parent_survey.yaml, the session's run of
it, tests/shared_runs.py). The plan's files and each run are made once per session as
the shared runs are, in two pytest-xdist groups that run side by side. Each run executes
the one workbook its mode needs and writes the brief; each must end with status ok and
name its source in the brief, in results.json and in the data-quality workbook. The OMOP
and Synthea runs must give the contract run's member x window table value for value.
"""
import json
import warnings
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from evalkit import runner
from evalkit.data import synthetic
from evalkit.params import validate
from plan_forms import OMOP_EXTRA, SYNTHEA_EXTRA, omop_member_id, to_omop, to_synthea

MEMBERS, SEED = 300, 7
TABLES = ("members", "enrollment", "encounters", "exposure")
REFERENCE_CSV = Path(__file__).parent / "reference" / "data" / "synthetic_costs.csv"


def _write_plan(root: Path) -> dict:
    """The plan in every form the runs read, written in ``root``."""
    folder = root / "contract"
    synthetic.generate(folder, scenario="demo", members=MEMBERS, seed=SEED)
    db, csv = root / "plan.duckdb", root / "csv"
    csv.mkdir()
    with duckdb.connect(str(db)) as con:
        for t in TABLES:
            con.execute(f"CREATE TABLE {t} AS SELECT * FROM read_parquet('{folder / t}.parquet')")
            con.execute(f"COPY {t} TO '{csv / t}.csv' (HEADER, DELIMITER ',')")
    persons = root / "persons.csv"
    pd.read_csv(REFERENCE_CSV).head(MEMBERS).to_csv(persons, index=False)
    return {"contract": folder, "csv": csv, "duckdb": db,
            "omop": to_omop(folder, root / "cdm.duckdb"),
            "synthea": to_synthea(folder, root / "synthea"), "persons": persons}


def _params(kind: str, plan: dict) -> dict:
    claims = {"seed": SEED, "workbooks": ["data_quality"]}
    tables = {t: str(plan["csv"] / f"{t}.csv") for t in TABLES}
    if kind == "synthetic":
        return {**claims, "data": {"source": "synthetic", "members": MEMBERS}}
    if kind == "files":
        return {**claims, "data": {"source": "files", "tables": tables}}
    if kind == "duckdb":
        return {**claims, "data": {"source": "duckdb", "database": str(plan["duckdb"])}}
    if kind == "omop":
        return {**claims, "data": {"source": "omop", "database": str(plan["omop"]), "omop": {
            "exposure_cohorts": {"self_help": 11, "control": 12},
            "visit_concepts": {str(k): v for k, v in OMOP_EXTRA.items()}}}}
    if kind == "synthea":
        folder = plan["synthea"]
        return {**claims, "data": {"source": "synthea", "synthea": {
            "folder": str(folder), "exposure_file": str(folder / "exposure.csv"),
            "enrollment": "payer_transitions", "class_map": SYNTHEA_EXTRA}}}
    if kind == "person file":
        return {"mode": "person", "seed": SEED, "workbooks": ["data_quality"], "data": {
            "person": {"path": str(plan["persons"]), "id": "member_id", "treatment": "treated",
                       "outcomes": ["er_visits", "total_cost"], "exposure": "member_months",
                       "covariates": ["age", "female"]}}}
    raise ValueError(kind)


KINDS = {  # kind -> what the brief's "Data" line must say
    "synthetic": "synthetic health plan, scenario 'demo'",
    "files": "the plan's claims files (encounters: encounters.csv",
    "duckdb": "DuckDB database plan.duckdb",
    "omop": "OMOP CDM v5.4, DuckDB database cdm.duckdb (coverage from observation_period",
    "synthea": "Synthea CSV export, folder synthea (coverage from payer_transitions; "
               "exposure from exposure.csv)",
    "person file": "person-level file persons.csv",
    "summary": "published per-group figures",
}


def _run(shared_runs, kind: str) -> runner.RunResult:
    """The session's run of the plan read as ``kind`` (tests/shared_runs.py: made once,
    by whichever pytest-xdist worker asks first; the plan is written once the same way)."""
    if kind == "summary":
        return shared_runs.params_file("parent_survey")
    plan = shared_runs.get("sources-plan", _write_plan)

    def make(folder: Path) -> runner.RunResult:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return runner.run(params=validate(_params(kind, plan)), out=folder / "out",
                              quiet=True)
    return shared_runs.get("source-" + kind.replace(" ", "_"), make)


#: The kinds whose runs each pytest-xdist group makes: the two groups run side by side.
GROUPS = {"sources-1": ("files", "synthetic", "duckdb"),
          "sources-2": ("omop", "synthea", "person file", "summary")}


def _grouped(kinds) -> list:
    """``kinds`` as test parameters, each in the group that makes its run."""
    return [pytest.param(k, marks=pytest.mark.xdist_group(g))
            for g, members in GROUPS.items() for k in members if k in kinds]


@pytest.mark.parametrize("kind", _grouped(KINDS))
def test_every_source_reaches_the_brief(shared_runs, kind):
    r = _run(shared_runs, kind)
    assert r.status == "ok"
    run = json.loads(r.results_path.read_text())["run"]
    assert run["status"] == "ok" and run["brief"]["html"] == "brief.html"
    assert run["data_source"].startswith(KINDS[kind]), run["data_source"]
    html = (r.output_dir / "brief.html").read_text()
    assert KINDS[kind].replace("'", "&#39;") in html
    assert (r.output_dir / "brief.pdf").stat().st_size > 0
    if kind != "summary":                        # the data-quality workbook names it too
        nb = (r.output_dir / "01_data_quality.ipynb").read_text()
        assert KINDS[kind][:20] in nb            # the run table's text/plain output


def _windows(run) -> pd.DataFrame:
    with duckdb.connect(str(run.output_dir / "work" / "analysis.duckdb"), read_only=True) as con:
        return con.execute("SELECT * FROM member_windows ORDER BY member_id, period").df()


@pytest.mark.parametrize("kind", _grouped(["omop", "synthea", "duckdb", "synthetic"]))
def test_other_forms_give_the_contract_tables_member_x_window_table(shared_runs, kind):
    """The contract CSV files, the same plan as a DuckDB database, an OMOP CDM and a
    Synthea export, and the plan generated inside the run: one member x window table."""
    want = _windows(_run(shared_runs, "files"))
    got = _windows(_run(shared_runs, kind))
    if kind == "omop":                           # OMOP's person ids are the ids' numbers
        got["member_id"] = got["member_id"].map(omop_member_id)
    assert len(want) == 2 * want["member_id"].nunique() and len(want) > 300
    # every column, every value: visits, nights, cents-exact costs, member-months
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@pytest.mark.parametrize("run, step", [
    ({"status": "failed", "failed_step": "brief", "error": "TypeError: no database",
      "workbooks": [{"workbook": "data_quality", "status": "ok"}]}, "brief"),
    ({"status": "failed", "workbooks": [{"workbook": "data_quality", "status": "ok"},
                                        {"workbook": "utilization", "status": "failed",
                                         "cell": "cell 4", "error": "ValueError: x"}]},
     "workbook utilization"),
    ({"status": "failed", "failed_step": "prepare", "error": "bad data", "workbooks": []},
     "prepare"),
])
def test_status_names_the_failed_step(run, step, tmp_path, capsys):
    from evalkit.cli import main
    (tmp_path / "results.json").write_text(json.dumps({"run": run, "estimates": [],
                                                       "tables": {}}))
    assert main(["status", str(tmp_path)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{tmp_path}: failed in step '{step}'")
    if run.get("error"):
        assert first.endswith(f"({run['error']})")


def test_every_variant_of_a_source_is_described(tmp_path):
    """The variants the runs above do not reach, described without running them."""
    from evalkit.data.source import describe_source
    db = tmp_path / "plan.duckdb"
    db.touch()
    cases = [
        ({"mode": "person", "workbooks": ["survival"], "data": {
            "source": "synthetic", "scenario": "support_group_survival", "person": {
                "treatment": "arm", "treated_value": "support_group",
                "duration": "survival_months", "event": "died"}}},
         "synthetic person-level", "synthetic person-level data, scenario "
                                   "'support_group_survival' (generated; no real people)"),
        ({"mode": "person", "workbooks": ["data_quality"], "data": {"person": {
            "path": str(db), "table": "persons", "treatment": "t", "outcomes": ["y"]}}},
         "person table", "person-level table persons of DuckDB database plan.duckdb (one row "
                         "per member)"),
        ({"data": {"source": "omop", "database": str(db), "omop": {
            "cdm_schema": "cdm", "enrollment": "payer_plan_period",
            "exposure_file": str(tmp_path / "referrals.csv")}}},
         "omop", "OMOP CDM v5.4, schema cdm of DuckDB database plan.duckdb (coverage from "
                 "payer_plan_period; exposure from referrals.csv)"),
        ({"data": {"source": "duckdb", "database": str(db), "tables": {"encounters": "claims"}}},
         "duckdb", "DuckDB database plan.duckdb (tables encounters: claims)"),
        ({"data": {"source": "synthea", "synthea": {
            "folder": str(tmp_path / "out" / "csv"), "exposure_file": str(tmp_path / "x.csv"),
            "enrollment": "encounters"}}},
         "synthea", "Synthea CSV export, folder csv (coverage from encounters; exposure "
                    "from x.csv)"),
    ]
    for raw, kind, text in cases:
        d = describe_source(validate(raw))
        assert (d.kind, d.text) == (kind, text)
        assert str(tmp_path) not in d.text                 # file names only, never folders
