"""The analysis spec: covariates enter as written, outcomes are what the params say, and
nothing downstream decides from a column name."""
import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evalkit import describe
from evalkit import params as P
from evalkit.analysis import outcomes, spec
from evalkit.errors import DataValidationError, EvalkitError, ParamsError, StatisticalWarning
from evalkit.models.twopart import two_part
from evalkit.results import Recorder, mark_primary

PACKAGE = Path(__file__).resolve().parents[1] / "evalkit"


def _cohort(n=600, seed=7):
    """A person-level cohort whose cost depends on the arm, age and (logged) baseline cost."""
    rng = np.random.default_rng(seed)
    treated = rng.integers(0, 2, n)
    age = rng.normal(45, 12, n).round()
    base = rng.gamma(0.8, 2500, n) * (rng.random(n) < 0.7)
    lb = np.log1p(base)
    any_cost = rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.2 * lb - 0.4 * treated)))
    cost = np.where(any_cost, rng.gamma(2.0, np.exp(6 + 0.1 * lb - 0.2 * treated) / 2.0), 0.0)
    return pd.DataFrame({"treated": treated, "baseline_age": age,
                         "log1p_baseline_cost": lb, "total_cost": cost})


def test_covariates_enter_exactly_as_written():
    """A column already logged (log1p_baseline_cost) and a baseline_age enter as they are:
    the workbook's adjusted cost difference equals evalkit's two_part on the same
    regressors (two_part matches R's two-part model: tests/test_two_part.py) to 1e-6."""
    frame = _cohort()
    got = outcomes.cost_effect(frame, ["baseline_age", "log1p_baseline_cost"])
    second = got.fit.extra.get("second", "gamma")
    ref = two_part(frame, "total_cost ~ treated + baseline_age + log1p_baseline_cost",
                   second=second).effect("treated").table.set_index("term")
    rec = got.effects.set_index("scale")
    for scale in ("cost_difference", "ratio"):
        assert rec.loc[scale, "estimate"] == pytest.approx(ref.loc[scale, "estimate"], abs=1e-6)
    assert list(rec.loc["cost_difference", "adjusted_for"]) == ["baseline_age",
                                                                 "log1p_baseline_cost"]
    assert rec.loc["cost_difference", "analysis"] == "adjusted"


def test_an_explicit_transform_is_applied_once():
    frame = _cohort().assign(baseline_cost=lambda d: np.expm1(d["log1p_baseline_cost"]))
    logged = outcomes.cost_effect(frame.drop(columns="log1p_baseline_cost"),
                                  ["baseline_age", "log1p(baseline_cost)"])
    asis = outcomes.cost_effect(frame.drop(columns="baseline_cost"),
                                ["baseline_age", "log1p_baseline_cost"])
    a = logged.effects.set_index("scale").loc["cost_difference", "estimate"]
    b = asis.effects.set_index("scale").loc["cost_difference", "estimate"]
    assert a == pytest.approx(b, rel=1e-9)
    with pytest.raises(DataValidationError, match="already have a column"):
        outcomes.cost_effect(frame, ["log1p(baseline_cost)"])


def test_terms_parse_and_bad_terms_are_params_errors():
    assert spec.parse_term("C(region)").name == "C(region)"
    assert spec.parse_term("log1p(baseline_total_cost)").name == "log1p_baseline_total_cost"
    assert spec.parse_term("baseline_age").transform is None
    for bad in ("sqrt(x)", "a + b", ""):
        with pytest.raises(ValueError):
            spec.parse_term(bad)
    with pytest.raises(ParamsError, match="study.covariates"):
        P.validate({"study": {"covariates": ["exp(age)"]}})


def test_text_and_constant_covariates_are_listed_not_dropped_silently():
    frame = _cohort().assign(region=lambda d: np.where(d.index % 3 == 0, "north", "south"),
                             plan="one")
    with pytest.raises(DataValidationError, match="write C\\(region\\)"):
        spec.model_frame(frame, ["region"])
    with pytest.warns(StatisticalWarning, match=r"left out .*: C\(plan\) \(constant in these"):
        mf = spec.model_frame(frame, ["C(region)", "C(plan)", "baseline_age"])
    assert mf.names == ["C(region)", "baseline_age"]
    assert mf.left_out == [{"term": "C(plan)", "reason": "constant in these rows"}]


def test_claims_defaults_are_written_out_and_person_covariates_as_given():
    claims = spec.resolve(P.validate({}), None)
    assert claims.terms == list(spec.CLAIMS_COVARIATES)       # no data: no extra columns
    assert claims.kind("total_cost") == "cost" and claims.kind("er_visits") == "count"
    assert claims.study.intervention == "referred to self-help groups"
    raw = {"mode": "person", "data": {"person": {
        "path": "x.csv", "treatment": "arm", "outcomes": ["baseline_visits", "spend"],
        "covariates": ["baseline_age", "extra_cost"]}},
        "study": {"intervention": "12-step-oriented programs",
                  "comparison": "cognitive-behavioral programs", "randomized": True,
                  "outcomes": {"spend": {"kind": "cost", "unit": "dollars"}}}}
    s = spec.resolve(P.validate(raw), None)
    assert s.terms == ["baseline_age", "extra_cost"]              # no log1p by name
    assert s.kind("spend") == "cost" and s.outcome("spend").source == "params"
    assert s.study.randomized and s.study.comparison == "cognitive-behavioral programs"
    assert spec.AnalysisSpec.from_dict(s.to_dict()) == s
    assert s.propensity == "baseline_age + extra_cost"            # one adjustment set


def test_recorder_requires_the_structured_fields(tmp_path):
    rec = Recorder(tmp_path, "wb")
    with pytest.raises(EvalkitError, match="analysis"):
        rec.add_estimate(outcome="x", scale="difference", estimate=1.0)
    with pytest.raises(EvalkitError, match="adjusted_for"):
        rec.add_estimate(outcome="x", scale="difference", estimate=1.0, analysis="adjusted")


def test_exactly_one_primary_per_outcome_and_scale():
    e = [{"outcome": "y", "scale": "rate_ratio", "analysis": a} for a in
         ("crude", "adjusted", "prepost", "design")]
    e += [{"outcome": "y", "scale": "cost_difference", "analysis": "adjusted"},
          {"outcome": "y", "scale": "cost_difference", "analysis": "adjusted",
           "interval": "bootstrap"},
          {"outcome": "z", "scale": "proportion", "analysis": "descriptive"},
          {"outcome": "z", "scale": "proportion", "analysis": "descriptive"}]
    out = mark_primary(e)
    assert [r["primary"] for r in out] == [False, True, False, False, False, True, True, False]
    chosen = mark_primary(e, {"outcomes": {"y": {"primary": "design"}}})
    assert [r["analysis"] for r in chosen if r["primary"]][0] == "design"


# --------------------------------------------------------------------------- the scan
#: Modules allowed to name outcome or covariate columns: the spec (its documented
#: defaults) and the data layer, which builds those columns from the data contract.
ALLOWED = {"analysis/spec.py", "utilization.py", "cohort.py", "data"}
NAME_WORDS = ("outcome", "cov", "col", "term", "name")
BUILT_IN = set(spec.CLAIMS_OUTCOMES) | {"baseline_", "_cost", "cost", "date"}


def _name_tests(path: Path) -> list[str]:
    """Places where code tests an outcome or covariate string by its name."""
    tree = ast.parse(path.read_text())
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and \
                isinstance(node.left.value, str) and \
                any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            other = ast.unparse(node.comparators[0]).lower()
            if node.left.value in BUILT_IN or (any(w in other for w in NAME_WORDS)
                                               and not other.endswith(".columns")):
                hits.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("startswith", "endswith") and node.args and \
                isinstance(node.args[0], ast.Constant) and \
                any(w in ast.unparse(node.func.value).lower() for w in ("outcome", "cov")):
            hits.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq) for op in node.ops) \
                and any(isinstance(c, ast.Constant) and c.value in spec.CLAIMS_OUTCOMES
                        for c in [node.left, *node.comparators]):
            hits.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_no_module_decides_from_an_outcome_or_covariate_name():
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ALLOWED or rel.as_posix() in ALLOWED:
            continue
        hits += _name_tests(path)
    assert hits == [], "name tests outside the spec:\n" + "\n".join(hits)


def test_the_scan_finds_a_name_test(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('def kind(outcome):\n    return "cost" if "cost" in outcome else "count"\n'
                 'def log(c):\n    return c.startswith("baseline_")\n'
                 'def f(covariate):\n    return covariate.endswith("_cost")\n')
    assert len(_name_tests(f)) == 2


def test_models_exports_and_one_alpha_check():
    import evalkit.models as m
    from evalkit import survival, synthesis
    from evalkit.causal import calibration
    from evalkit.errors import ParamsError as PE
    for name in ("count_model", "two_part", "did", "its", "bootstrap", "bootstrap_two_part",
                 "bootstrap_count_effect"):
        assert callable(getattr(m, name))
    assert survival._check_alpha is synthesis._check_alpha is calibration.checks._check_alpha \
        is m.check_alpha
    for bad in (0, 1, "0.05", True, float("nan"), None):
        with pytest.raises(PE, match="alpha"):
            m.check_alpha(bad, "x")
    assert m.check_alpha(np.float64(0.1)) == 0.1


def test_person_run_cost_effect_uses_the_columns_as_written(tmp_path):
    """Through the run's preparation and the spec, as the costs workbook calls it: a
    person file whose covariates are an already-logged baseline cost and a baseline age.
    The spec says cost (not continuous, as the values alone would suggest) because the
    params say so, and the adjusted cost difference equals two_part on the same
    regressors to 1e-6."""
    from evalkit.analysis.study import prepare_study
    frame = _cohort(n=500, seed=11)
    frame.assign(arm=np.where(frame["treated"] == 1, "group", "usual"),
                 pid=np.arange(len(frame))).drop(columns="treated").to_csv(
        tmp_path / "people.csv", index=False)
    p = P.validate({"mode": "person", "seed": 3, "models": {"bootstrap_replicates": 0},
                    "data": {"person": {"path": str(tmp_path / "people.csv"), "id": "pid",
                                        "treatment": "arm", "treated_value": "group",
                                        "outcomes": ["total_cost"],
                                        "covariates": ["baseline_age", "log1p_baseline_cost"]}},
                    "study": {"outcomes": {"total_cost": {"kind": "cost", "unit": "dollars"}},
                              "alpha": 0.1},
                    "workbooks": ["costs"]})
    study = prepare_study(p, tmp_path / "run")
    try:
        s = study.spec
        assert (tmp_path / "run" / "spec.json").is_file()
        assert s.terms == ["baseline_age", "log1p_baseline_cost"]
        assert s.kind("total_cost") == "cost" and s.study.intervention == "group"
        got = study.cost_effect()
        data = study.treated_frame()
    finally:
        study.close()
    ref = two_part(data, "total_cost ~ treated + baseline_age + log1p_baseline_cost",
                   second=got.fit.extra.get("second", "gamma")).effect("treated", alpha=0.1)
    ref = ref.table.set_index("term").loc["cost_difference"]
    diff = got.effects.set_index("scale").loc["cost_difference"]
    for c in ("estimate", "ci_low", "ci_high"):     # the 90% interval of study.alpha: 0.1
        assert diff[c] == pytest.approx(ref[c], abs=1e-6), c


def _claims_members(n=40, seed=2):
    """A claims analysis frame (20 members per arm) with two extra members-table columns:
    ``program`` (one program per arm) and ``region`` (both regions in both arms)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"treated": np.r_[np.zeros(20), np.ones(20)].astype(int),
                         "age_at_index": rng.integers(20, 70, n), "female": rng.integers(0, 2, n),
                         "comorbidity": rng.integers(0, 5, n),
                         "program": np.r_[["a"] * 20, ["b"] * 20],
                         "region": np.tile(["north", "south"], n // 2),
                         "baseline_er_visits": rng.integers(0, 3, n),
                         "baseline_outpatient_mh_visits": rng.integers(0, 9, n),
                         "baseline_inpatient_days": rng.integers(0, 2, n),
                         "baseline_total_cost": rng.gamma(1, 900, n)})


def test_claims_extra_member_columns_are_written_out_or_listed():
    """Extra members-table columns: numeric ones join the defaults as written (they did
    before the spec existed, so old numbers stay), text ones are listed as not adjusted."""
    data = _claims_members()
    s = spec.resolve(P.validate({}), data, ["comorbidity", "region", "program"])
    assert s.terms == ["age_at_index", "female", "comorbidity", *spec.CLAIMS_BASELINE]
    assert [c.source for c in s.covariates][2] == "default: members table column"
    assert s.not_adjusted[0]["term"] == "region" and "C(region)" in s.not_adjusted[0]["reason"]
    assert s.not_adjusted[1] == {"term": "program",          # adding C(program) would not help
                                 "reason": "nested in the arms (every level in one arm only)"}
    assert s.described == ("age_at_index", "female", "comorbidity", "region",   # Table 1
                           *spec.term_columns(spec.CLAIMS_BASELINE))
    nested = spec.resolve(P.validate({"study": {"covariates": ["age_at_index", "C(program)"]}}),
                          data, ["program"])
    assert nested.terms == ["age_at_index"]                 # program is nested in the arms
    assert "nested" in nested.not_adjusted[0]["reason"]
    with pytest.raises(DataValidationError, match="district"):
        spec.resolve(P.validate({"study": {"covariates": ["C(district)"]}}), data, [])


def test_table1_never_describes_the_column_that_tells_the_arm():
    """A members-table column that is the arm under another name (the community of a
    communities comparison, a program nested in an arm, the treatment coded 0/1) is
    what is compared, not a characteristic: Table 1 leaves it out, whatever its name,
    so it never shows a share of 100% vs 0% with an infinite SMD. A column that merely
    differs between the arms stays."""
    data = _claims_members().assign(
        site=lambda d: np.where(d["treated"] == 1, "intervention", "comparison"),
        arm_code=lambda d: 1 - d["treated"],                       # 0/1, the arm reversed
        # both values in both arms, but far apart: an imbalance Table 1 must show
        urban=np.r_[np.ones(18), np.zeros(2), np.ones(2), np.zeros(18)].astype(int))
    extra = ["comorbidity", "region", "program", "site", "arm_code", "urban"]
    s = spec.resolve(P.validate({}), data, extra)
    assert s.described == ("age_at_index", "female", "comorbidity", "region", "urban",
                           *spec.term_columns(spec.CLAIMS_BASELINE))
    assert {d["term"]: d["reason"] for d in s.not_adjusted} == {
        "region": "text column of the members table; add C(region) to study.covariates "
                  "to adjust for it",
        "program": "nested in the arms (every level in one arm only)",
        "site": "nested in the arms (every level in one arm only)",
        "arm_code": "identical to the treatment"}
    # the same when the params name the covariates: C(site) and a numeric code read by levels
    given = spec.resolve(P.validate({"study": {"covariates": [
        "age_at_index", "C(site)", "C(comorbidity)", "arm_code", "urban"]}}), data, [])
    assert given.described == ("age_at_index", "comorbidity", "urban")
    assert given.terms == ["age_at_index", "C(comorbidity)", "urban"]
    t1 = describe.table1(data.assign(group=np.where(data["treated"] == 1, "self_help",
                                                    "control")), "group", list(s.described))
    assert np.isfinite(t1["smd"].dropna()).all()
    # the imbalance is still shown: shares 0.1 vs 0.9, SMD -0.8 / sqrt((0.09 + 0.09) / 2)
    assert t1.set_index("covariate").loc["urban", "smd"] == pytest.approx(-0.8 / 0.3)


def test_figures_are_per_the_treated_unit_in_the_specs_words():
    """'referred member' for the claims default arms and published summaries only."""
    default = spec.resolve(P.validate({}), None).study
    assert default.per_treated("claims") == ("referred member", "referred members")
    named = spec.resolve(P.validate({"study": {
        "intervention": "treated in 12-step programs",
        "comparison": "treated in cognitive-behavioral programs", "unit": "patients"}}), None).study
    assert named.per_treated("claims") == ("patient treated in 12-step programs",
                                           "patients treated in 12-step programs")
    assert spec.per_treated("summary", "a", "b", "studies")[0] == "referred member"
