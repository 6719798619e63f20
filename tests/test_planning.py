"""Study planning: the planning section, its workbook and params/er_power.yaml.

Reference values are the Zhu & Lakkis (2014, Stat Med 33:376-387) closed form evaluated by
hand below (the same arithmetic as tests/test_econ_power.py::test_er_example_by_hand):
an 18% drop from 0.35 ER visits per member-year, dispersion 1.5, one year, 1:1, method 3:
V1 = 1/0.35 + 1/0.287 + 3, V0 = 4/0.637 + 3, 1,854 per arm for 80% power and 82.9% power
with 2,000 per arm.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evalkit import catalog
from evalkit import params as P
from evalkit.errors import DataValidationError, ParamsError
from evalkit.params import PlanningParams
from evalkit.analysis.planning import estimate_baseline, plan_study
from conftest import assert_structured_records

Z975 = 1.959963984540054
Z80 = 0.8416212335729143
V1 = 1 / 0.35 + 1 / 0.287 + 3.0
V0 = 4 / 0.637 + 3.0
THETA = math.log(0.82)
N_EXACT = (Z975 * math.sqrt(V0) + Z80 * math.sqrt(V1)) ** 2 / THETA ** 2   # 1853.08


def _power_by_hand(n):
    a = abs(THETA) * math.sqrt(n)
    return (stats.norm.cdf((a - Z975 * math.sqrt(V0)) / math.sqrt(V1))
            + stats.norm.cdf((-a - Z975 * math.sqrt(V0)) / math.sqrt(V1)))


def test_answers_match_the_closed_form():
    res = plan_study(PlanningParams(baseline_rate=0.35, dispersion=1.5))
    assert math.ceil(N_EXACT) == 1854
    assert res.sample_size.n_per_arm == 1854 and res.sample_size.n_treated == 1854
    assert res.power == pytest.approx(_power_by_hand(2000), rel=1e-10)
    assert round(res.power, 3) == 0.829
    # the minimum detectable drop is where the power is exactly the target
    rr = res.mde.rate_ratio
    lam1 = 0.35 * rr
    v1 = 1 / 0.35 + 1 / lam1 + 3.0
    v0 = 4 / (0.35 + lam1) + 3.0
    a = abs(math.log(rr)) * math.sqrt(2000)
    p = stats.norm.cdf((a - Z975 * math.sqrt(v0)) / math.sqrt(v1)) + \
        stats.norm.cdf((-a - Z975 * math.sqrt(v0)) / math.sqrt(v1))
    assert p == pytest.approx(0.8, abs=1e-8)
    assert 0.82 < rr < 0.83      # 2,000 per arm can see a little less than an 18% drop
    # the curve is the power function over sizes, and crosses the target at the answer
    c = res.curve
    assert c["power"].is_monotonic_increasing
    assert c["power"].to_numpy() == pytest.approx([_power_by_hand(n) for n in c["n_control"]],
                                                  rel=1e-10)
    assert "82.9%" not in res.sentences()[0] and "83%" in res.sentences()[0]
    assert "1,854" in res.sentences()[1]
    rec = res.estimates()
    assert set(rec["scale"]) == {"proportion", "rate_ratio"}


def test_too_small_a_study_says_so():
    res = plan_study(PlanningParams(baseline_rate=0.35, dispersion=1.5, members_per_arm=20))
    assert res.power < 0.1 and "probably not" in res.sentences()[0]
    assert res.mde.rate_ratio < 0.1      # only a near-total drop could be seen


def test_unequal_allocation_changes_the_referred_arm():
    res = plan_study(PlanningParams(baseline_rate=0.35, dispersion=1.5, allocation=2))
    assert res.sample_size.n_treated == math.ceil(2 * res.sample_size.n_control_exact - 1e-9)
    assert res.sample_size.n_per_arm < 1854


def _nb_members(n, rate, k, seed, group="control"):
    """Poisson-gamma members with 12 baseline member-months: Var = mu + k mu^2."""
    rng = np.random.default_rng(seed)
    frailty = rng.gamma(1 / k, k, size=n)
    return pd.DataFrame({"group": group, "baseline_member_months": 12.0,
                         "baseline_er_visits": rng.poisson(rate * frailty)})


def test_baseline_estimated_from_the_comparison_arm():
    # simulated truth: rate 0.35 per member-year, k = 1.5; the referred arm is very
    # different and must be ignored
    frame = pd.concat([_nb_members(20000, 0.35, 1.5, 1),
                       _nb_members(5000, 3.0, 0.1, 2, group="self_help")], ignore_index=True)
    est = estimate_baseline(frame)
    assert est.members == 20000
    assert est.rate == pytest.approx(0.35, rel=0.05)
    assert est.dispersion == pytest.approx(1.5, rel=0.15)
    res = plan_study(PlanningParams(), frame)
    assert res.inputs.loc[0, "source"].startswith("estimated")
    assert res.inputs.loc[1, "source"].startswith("estimated")
    # a given value is kept and said to be given
    res = plan_study(PlanningParams(dispersion=1.5), frame)
    assert res.inputs.loc[1, "value"] == 1.5 and res.inputs.loc[1, "source"] == "given in the params"


def test_baseline_estimation_errors_are_clear():
    with pytest.raises(DataValidationError, match="baseline_rate"):
        plan_study(PlanningParams())
    with pytest.raises(DataValidationError, match="lacks"):
        estimate_baseline(pd.DataFrame({"group": ["control"], "er_visits": [1]}))
    none = _nb_members(50, 0.35, 1.5, 3).assign(baseline_er_visits=0)
    with pytest.raises(DataValidationError, match="no er_visits"):
        estimate_baseline(none)


@pytest.mark.parametrize("bad, key", [
    ({"relative_reduction": 1.2}, "planning.relative_reduction"),
    ({"relative_reduction": 0}, "planning.relative_reduction"),
    ({"baseline_rate": -0.3}, "planning.baseline_rate"),
    ({"dispersion": -1}, "planning.dispersion"),
    ({"power": 1.0}, "planning.power"),
    ({"members_per_arm": 0}, "planning.members_per_arm"),
    ({"method": 4}, "planning.method"),
    ({"outcome": "total_cost"}, "planning.outcome"),
    ({"members": 2000}, "did you mean 'members_per_arm'"),
])
def test_bad_planning_values_name_the_key(bad, key):
    with pytest.raises(ParamsError, match=key.replace("(", r"\(")):
        P.validate({"planning": bad})


def test_planning_in_summary_mode_needs_the_rate_and_dispersion():
    with pytest.raises(ParamsError, match="baseline_rate and planning.dispersion are needed"):
        P.validate({"mode": "summary", "workbooks": ["planning"],
                    "planning": {"baseline_rate": 0.35}})
    p = P.validate({"mode": "summary", "workbooks": ["planning"],
                    "planning": {"baseline_rate": 0.35, "dispersion": 1.5}})
    assert p.workbooks == ["planning"]
    # claims mode may leave both out: they are estimated
    assert P.validate({"workbooks": ["planning"]}).planning.baseline_rate is None


def test_planning_is_catalogued_but_not_run_by_default():
    w = catalog.BY_NAME["planning"]
    assert w.file == "08_planning.ipynb" and not w.default
    assert set(w.modes) == {"claims", "person", "summary"}
    assert "planning" not in catalog.default_workbooks("claims")
    assert (catalog.WORKBOOK_DIR / w.file).is_file()


def test_er_power_params_end_to_end(shared_runs):
    """params/er_power.yaml through the runner (the session's run of it, as shipped:
    tests/shared_runs.py): summary mode, no member data."""
    run = shared_runs.params_file("er_power")
    res = json.loads(run.results_path.read_text())
    assert res["run"]["status"] == "ok"
    assert res["run"]["params"]["mode"] == "summary"
    assert_structured_records(res)
    est = {e["scale"]: e for e in res["estimates"] if e["workbook"] == "planning"}
    assert est["proportion"]["estimate"] == pytest.approx(_power_by_hand(2000), rel=1e-10)
    assert est["proportion"]["n_control"] == est["proportion"]["n_treated"] == 2000
    assert 0.82 < est["rate_ratio"]["estimate"] < 0.83
    size = {r["term"]: r["estimate"] for r in res["tables"]["planning.sample_size"]}
    assert size["n_control"] == size["n_treated"] == 1854
    assert size["n_control_exact"] == pytest.approx(N_EXACT, rel=1e-10)
    curve = res["tables"]["planning.power_curve"]
    assert len(curve) > 20 and all(0 <= r["power"] <= 1 for r in curve)
    answers = [r["answer"] for r in res["tables"]["planning.answers"]]
    assert "83%" in answers[0] and "1,854" in answers[1]
    # the executed notebook shows the power curve
    import nbformat
    nb = nbformat.read(run.output_dir / "08_planning.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))


def test_claims_mode_estimates_the_missing_inputs_from_the_baseline_year(tmp_path):
    """Study.plan_study on a prepared synthetic plan: rate and dispersion are estimated from
    the comparison arm's baseline window, and match a direct NB2 fit of those members."""
    from evalkit.models.count import count_model
    from evalkit.analysis.study import prepare_study
    study = prepare_study(P.validate({"data": {"members": 800}, "workbooks": ["planning"],
                                      "planning": {"members_per_arm": 1500}}), tmp_path)
    try:
        res = study.plan_study()
        frame = study.analysis_frame()
    finally:
        study.close()
    ctrl = frame[frame["group"] == "control"]
    fit = count_model(ctrl, "baseline_er_visits ~ 1", family="negbin",
                      exposure="baseline_member_months")
    assert res.inputs.loc[0, "value"] == pytest.approx(
        12 * math.exp(fit.table["estimate"].iloc[0]), rel=1e-10)
    assert res.inputs.loc[1, "value"] == pytest.approx(1 / fit.theta, rel=1e-10)
    assert "estimated" in res.inputs.loc[0, "source"] and res.baseline.members == len(ctrl)
    assert res.members_per_arm == 1500
