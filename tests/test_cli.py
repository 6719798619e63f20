"""The command line: --version, --set values, synth's help, validate --data, params-schema,
and a brief for another audience beside the run's own."""
import json
from pathlib import Path

import pytest
import yaml

import evalkit
from evalkit import params as P
from evalkit.cli import main
from evalkit.errors import ParamsError
from shared_runs import copy_run_folder

ROOT = Path(__file__).parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny"
TINY_DATA = {"source": "files",
             "tables": {t: str(TINY / f"{t}.csv") for t in ("members", "enrollment",
                                                             "encounters", "exposure")},
             "category_map": {"ED": "er", "IP": "inpatient"},
             "group_map": {"T": "self_help", "C": "control"}}


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"evalkit {evalkit.__version__}"


@pytest.mark.parametrize("text, value", [
    ("100000", 100000), ("0.5", 0.5), ("true", True), ("null", None),
    ("[a, b]", ["a", "b"]), ("{ED: er}", {"ED": "er"}), ("'quoted: text'", "quoted: text"),
    ("%d/%m/%Y", "%d/%m/%Y"),           # YAML cannot read it (a directive): plain text
    ("Plan: 2023", "Plan: 2023"),       # YAML would read a mapping: plain text
    ("- x", "- x"),                     # YAML would read a list: plain text
    ("plain words", "plain words"),
])
def test_set_values_are_yaml_with_plain_text_fallback(text, value):
    assert P.override_value("k", text) == value


def test_set_broken_bracketed_value_names_the_key():
    with pytest.raises(ParamsError, match=r"--set data\.category_map: '\{ED: er' is not a valid"):
        P.apply_overrides({}, ["data.category_map={ED: er"])


def test_set_title_and_date_format_validate(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"data": TINY_DATA}))
    p = P.load(f, ["title=Plan: 2023", "data.date_format=%d/%m/%Y"])
    assert p.title == "Plan: 2023" and p.data.date_format == "%d/%m/%Y"
    assert main(["validate", str(f), "--set", "data.columns={encounters: [x"]) == 2
    assert "--set data.columns" in capsys.readouterr().err


def test_synth_help_lists_scenarios_and_options(capsys):
    from evalkit.data.synthetic import SCENARIOS
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in SCENARIOS:
        assert name in out
    assert "A health plan: about 30% of members referred" in out   # the scenario's description
    for option in ("--members", "--seed", "--scenario"):
        assert option in out
    assert "number of members" in out and "random seed" in out


def test_validate_data_checks_columns_and_types(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"data": TINY_DATA}))
    assert main(["validate", str(good), "--data"]) == 0
    out = capsys.readouterr().out
    assert "data ok" in out and "encounters" in out and "members" in out

    # a mapped column that does not exist: named with its table
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({"data": {**TINY_DATA, "columns": {
        "encounters": {"allowed_amount": "ALLOWED_AMT"}}}}))
    assert main(["validate", str(missing)]) == 0           # the params alone are fine
    capsys.readouterr()
    assert main(["validate", str(missing), "--data"]) == 2
    err = capsys.readouterr().err
    assert "encounters.ALLOWED_AMT: missing_column" in err and "Traceback" not in err

    # a number column holding text
    bad = tmp_path / "enc.csv"
    bad.write_text((TINY / "encounters.csv").read_text().replace("100.50", "n/a", 1))
    typed = tmp_path / "typed.yaml"
    typed.write_text(yaml.safe_dump({"data": {**TINY_DATA, "tables": {
        **TINY_DATA["tables"], "encounters": str(bad)}}}))
    assert main(["validate", str(typed), "--data"]) == 2
    assert "encounters.allowed_amount: wrong_type" in capsys.readouterr().err


def test_validate_data_has_nothing_to_open_for_synthetic_and_summary(capsys):
    assert main(["validate", str(ROOT / "params" / "demo.yaml"), "--data"]) == 0
    assert "nothing to open (synthetic" in capsys.readouterr().out
    assert main(["validate", str(ROOT / "params" / "er_power.yaml"), "--data"]) == 0
    assert "nothing to open (published figures)" in capsys.readouterr().out


def test_params_schema_printed_and_committed(capsys):
    """docs/params.schema.json is the output of `evalkit params-schema` (`make docs`
    regenerates it), and a params file is checked by it as by evalkit."""
    import jsonschema
    assert main(["params-schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == P.schema_json()
    committed = (ROOT / "docs" / "params.schema.json").read_text()
    assert committed == printed, "docs/params.schema.json is stale: run `make docs`"
    schema = json.loads(committed)
    for f in sorted((ROOT / "params").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(f.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"data": {"membres": 10}}, schema)   # a misspelled key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"seed": "abc"}, schema)


@pytest.mark.slow
def test_brief_for_another_audience_leaves_the_runs_own(shared_runs, tmp_path, capsys):
    """params/er_power.yaml's run (a copy of the session's, tests/shared_runs.py)."""
    out = copy_run_folder(shared_runs.params_file("er_power"), tmp_path / "run")
    own_html, own_pdf = (out / "brief.html").read_bytes(), (out / "brief.pdf").read_bytes()
    record = json.loads((out / "results.json").read_text())["run"]["brief"]
    assert main(["brief", str(out), "--audience", "research"]) == 0
    assert "brief (research)" in capsys.readouterr().out
    assert (out / "brief-research.html").is_file() and (out / "brief-research.pdf").is_file()
    assert (out / "brief-research.pdf").read_bytes()[:4] == b"%PDF"
    assert (out / "brief.html").read_bytes() == own_html
    assert (out / "brief.pdf").read_bytes() == own_pdf
    assert json.loads((out / "results.json").read_text())["run"]["brief"] == record
    assert (out / "brief-research.html").read_text() != own_html.decode()
