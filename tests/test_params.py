import pytest

from evalkit import params as P
from evalkit.errors import ParamsError


def test_defaults_validate():
    p = P.validate({})
    assert p.data.source == "synthetic" and p.windows.followup_days == 365


def test_unknown_key_names_key_and_suggests():
    with pytest.raises(ParamsError) as e:
        P.validate({"data": {"membrs": 10}})
    msg = str(e.value)
    assert "data.membrs" in msg and "did you mean 'members'" in msg and "scenario" in msg


def test_wrong_type_and_bad_value_all_reported():
    with pytest.raises(ParamsError) as e:
        P.validate({"data": {"members": -5}, "windows": {"baseline_days": "a year"}})
    msg = str(e.value)
    assert "data.members" in msg and "greater than 0" in msg
    assert "windows.baseline_days" in msg


def test_override_applies_and_is_validated():
    p = P.load(None, ["data.members=1234", "windows.followup_days=180"])
    assert p.data.members == 1234 and p.windows.followup_days == 180
    with pytest.raises(ParamsError, match="data.memberz"):
        P.load(None, ["data.memberz=5"])
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        P.load(None, ["data.members"])
    with pytest.raises(ParamsError, match="not a section"):
        P.load(None, ["seed=3", "seed.x=1"])
    with pytest.raises(ParamsError, match="seed"):
        P.load(None, ["seed.x=1"])


@pytest.mark.parametrize("raw, key, message", [
    ({"data": {"category_map": {"ED": "emergency"}}}, "data.category_map",
     "category_map maps onto unknown categories {'ED': 'emergency'}"),
    ({"data": {"source": "omop", "omop": {"visit_concepts": {9204: "urgent"}}}},
     "data.omop.visit_concepts", "visit_concepts maps onto unknown categories"),
    ({"data": {"source": "synthea", "synthea": {"folder": "x", "exposure_file": "y",
                                                "class_map": {"wellness": "gym"}}}},
     "data.synthea.class_map", "class_map maps onto unknown categories"),
    ({"econ": {"budget": {"referral_rate_by_year": [0.1, 1.2]}}},
     "econ.budget.referral_rate_by_year", "every value must be a share between 0 and 1, got"),
    ({"econ": {"budget": {"low": {"uptake_by_year": [-0.1]}}}},
     "econ.budget.low.uptake_by_year", "every value must be a share between 0 and 1"),
    ({"econ": {"wtp_values": [0, -5]}}, "econ.wtp_values",
     "willingness to pay cannot be negative, got [0.0, -5.0]"),
    ({"mode": "summary", "summary": {"studies": [], "sd_sensitivity": [1.0, 0.0]}},
     "summary.sd_sensitivity", "SD factors must be > 0, got [1.0, 0.0]"),
    # uptake drawn from a beta: sd^2 must stay below 0.3 x 0.7 = 0.21
    ({"econ": {"uptake": 0.3, "uptake_sd": 0.5}}, "econ",
     "uptake_sd 0.5 is too large for uptake 0.3"),
    ({"mode": "summary", "summary": {"studies": [], "projection": {
        "plan": "P", "members": 1000, "uptake": 0.3, "uptake_sd": 0.5,
        "outcomes": [{"outcome": "er_visits", "baseline_per_member_year": 0.3}]}}},
     "summary.projection", "uptake_sd 0.5 is too large for uptake 0.3"),
])
def test_list_and_mapping_checks_name_the_key(raw, key, message):
    """The checks several sections share (values onto the contract's categories, shares,
    non-negative or positive values) name the key and what was wrong."""
    with pytest.raises(ParamsError) as e:
        P.validate(raw)
    assert key in str(e.value) and message in str(e.value)


def test_contradictory_settings():
    with pytest.raises(ParamsError, match="data.tables"):
        P.validate({"data": {"source": "files"}})
    with pytest.raises(ParamsError, match="data.person"):
        P.validate({"mode": "person"})
    with pytest.raises(ParamsError, match="unknown workbook"):
        P.validate({"workbooks": ["utilisation"]})
    with pytest.raises(ParamsError, match="cannot run in person mode"):
        P.validate({"mode": "person", "workbooks": ["time_to_event"],
                    "data": {"person": {"path": "x.csv", "treatment": "t", "outcomes": ["y"]}}})
    with pytest.raises(ParamsError, match="unknown categories"):
        P.validate({"data": {"category_map": {"ED": "emergency"}}})


def test_params_file_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        P.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        P.load(bad)


def test_relative_paths_resolve_against_params_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("data:\n  source: files\n  tables: {members: m.csv, enrollment: e.csv, "
                 "encounters: c.csv, exposure: x.csv}\n")
    p = P.load(f)
    assert p.data.tables["members"] == str(tmp_path / "m.csv")


def test_digest_is_stable_and_sensitive():
    a, b = P.validate({"seed": 1}), P.validate({"seed": 1})
    assert a.digest() == b.digest() != P.validate({"seed": 2}).digest()


def test_shipped_params_files_validate():
    from pathlib import Path
    for f in sorted((Path(__file__).parents[1] / "params").glob("*.yaml")):
        P.load(f)


def test_params_reference_doc_is_current():
    """docs/params.md is generated from the schema; `make docs` regenerates it."""
    from pathlib import Path
    doc = (Path(__file__).parents[1] / "docs" / "params.md").read_text()
    assert P.reference_markdown() in doc
    for key in ("data.members", "windows.followup_days", "econ.coordination"):
        assert f"`{key}`" in doc
