"""The economics of the cost-benefit workbook: effectiveness, ICER and NMB, PSA with joint
draws, one-way sensitivity, budget impact for a named plan, their params, and an
end-to-end run on the humphreys_moos scenario.

Every reference value is worked out by hand in the comments (the formulas are in
evalkit.analysis.valuation.value_program's Notes and evalkit.econ.budget_impact's Notes).
"""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from evalkit import params as P
from evalkit.errors import ParamsError, StatisticalWarning
from evalkit.params import BudgetParams, EconParams
from evalkit.analysis.spec import per_treated
from evalkit.analysis.valuation import (EffectWords, JointReplicates, budget_for_plan,
                                       er_effect, sensitivity, value_program)


def _cost_records(saving, se=20.0):
    """A costs-workbook record: cost difference over a 365-day follow-up (negative = saving)."""
    return pd.DataFrame([{"outcome": "total_cost", "scale": "cost_difference",
                          "estimate": -saving, "std_error": se,
                          "ci_low": -saving - 1.96 * se, "ci_high": -saving + 1.96 * se}])


def _econ(**kw):
    base = dict(uptake=1.0, coordination=150.0, facilitation=0.0, materials=0.0,
                fixed_startup=0.0, discount_rate=0.0, horizon_years=1, psa_draws=2000,
                cost_uncertainty=0.0, joint_replicates=0, wtp_values=[0.0, 1000.0])
    base.update(kw)
    return EconParams(**base)


def _effect(e, se=0.02):
    return {"estimate": e, "ci_low": e - 1.96 * se, "ci_high": e + 1.96 * se, "std_error": se,
            "method": "test"}


def _value(saving, effect, **econ):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        return value_program(_cost_records(saving), _econ(**econ), 1000, 365, seed=7,
                             effect=effect)


# ------------------------------------------------------------------ effectiveness
def test_er_effect_turns_the_rate_difference_into_visits_per_member_year():
    # -23.2 visits per 1,000 member-months = 23.2 * 12 / 1000 = 0.2784 visits averted a year
    rec = pd.DataFrame([{"outcome": "er_visits", "scale": "rate_difference_per_1000_mm",
                         "estimate": -23.2, "std_error": 3.5, "ci_low": -30.1, "ci_high": -16.3},
                        {"outcome": "er_visits", "scale": "rate_ratio", "estimate": 0.64,
                         "std_error": 0.07, "ci_low": 0.56, "ci_high": 0.73}])
    e = er_effect(rec, "er_visits")
    assert e["estimate"] == pytest.approx(0.2784)
    assert (e["ci_low"], e["ci_high"]) == pytest.approx((0.1956, 0.3612))
    assert e["std_error"] == pytest.approx(0.042)
    with pytest.raises(Exception, match="rate_difference_per_1000_mm"):
        er_effect(rec[rec["scale"] == "rate_ratio"], "er_visits")


# ------------------------------------------------------------------ ICER and dominance
def test_dominant_when_it_saves_money_and_averts_visits():
    # NS = 1000 - 150 = 850 per member (no discounting, no start-up); V = 0.25
    v = _value(1000.0, _effect(0.25))
    t = v.icer.table.iloc[0]
    assert t["delta_cost"] == pytest.approx(-850.0) and t["delta_effect"] == pytest.approx(0.25)
    assert v.icer.status == "dominant" and v.icer.quadrant == "SE" and np.isnan(v.icer.icer)
    assert "dominates" in v.icer_sentence() and "$850" in v.icer_sentence()
    rec = v.estimates()
    icer_rec = rec[rec["scale"] == "icer"].iloc[0]
    assert np.isnan(icer_rec["estimate"]) and icer_rec["status"] == "dominant"
    assert "it dominates" in icer_rec["estimand"]
    # NMB(λ) = λ V + NS: 850 at 0, 1,100 at 1,000
    nmb = rec[rec["scale"] == "nmb"].set_index("wtp")["estimate"]
    assert nmb.loc[0.0] == pytest.approx(850.0) and nmb.loc[1000.0] == pytest.approx(1100.0)


def test_icer_when_it_costs_money_and_averts_visits():
    # NS = 100 - 150 = -50; V = 0.2; ICER = 50 / 0.2 = $250 per visit averted
    v = _value(100.0, _effect(0.2, se=0.01))
    assert v.icer.quadrant == "NE" and v.icer.icer == pytest.approx(250.0)
    assert "ER visits fell by 0.200 visits" in v.icer_sentence()
    assert "$250 per visit avoided" in v.icer_sentence()
    rec = v.estimates()
    r = rec[rec["scale"] == "icer"].iloc[0]
    assert r["estimate"] == pytest.approx(250.0) and r["ci_low"] < 250 < r["ci_high"]
    # NMB crosses zero at the ICER: 1000 * 0.2 - 50 = 150 > 0, at 0 it is -50
    nmb = rec[rec["scale"] == "nmb"].set_index("wtp")["estimate"]
    assert nmb.loc[0.0] == pytest.approx(-50.0) and nmb.loc[1000.0] == pytest.approx(150.0)
    assert v.nmb.threshold_wtp == pytest.approx(250.0)
    # the CEAC is the share of draws with positive NMB, rising with willingness to pay
    c = v.psa.ceac
    assert c["probability_cost_effective"].iloc[0] < 0.5 < c["probability_cost_effective"].iloc[-1]


def test_dominated_when_it_costs_money_and_adds_visits():
    # the referred cost more ($50 more care) and used the ER more: NS = -50 - 150 = -200
    v = _value(-50.0, _effect(-0.1))
    assert v.icer.status == "dominated" and v.icer.quadrant == "NW"
    assert "dominated" in v.icer_sentence()
    icer_rec = v.estimates().query("scale == 'icer'").iloc[0]
    assert icer_rec["estimand"] == ("no ICER: the program costs more and ER visits rose: no "
                                    "cost per visit avoided applies")


def test_the_effect_is_named_from_the_spec_outcome_and_its_good_direction():
    """Words from the effect outcome's label, unit and good direction, never 'ER visit
    averted' or a quadrant's code; the numbers do not depend on the words."""
    words = EffectWords("days at work", "days", good="higher")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        v = value_program(_cost_records(-100.0), _econ(), 1000, 365, seed=7,
                          effect=_effect(-0.1), words=words)
    # NS = -100 - 150 = -250, V = -0.1: costs more and the outcome went the bad way
    assert v.icer.quadrant == "NW"
    assert v.icer_sentence() == ("The program is dominated: it costs $250 more per referred "
                                 "member over 1 year and days at work fell by 0.100 days per "
                                 "referred member over 1 year: no cost per day gained applies.")
    rec = v.estimates()
    text = " ".join(str(x) for x in rec[["estimand", "method"]].to_numpy().ravel())
    text += " ".join(v.effectiveness["figure"]) + " ".join(v.effectiveness["source"])
    for untrue in ("ER visit", "averted", "quadrant", "(NW"):
        assert untrue not in text, untrue
    assert "net monetary benefit per referred member at $1,000 per day gained" in text
    assert "days at work gained per referred member per year" in text
    same = _value(-100.0, _effect(-0.1))
    pd.testing.assert_frame_equal(rec[["estimate", "ci_low", "ci_high"]],
                                  same.estimates()[["estimate", "ci_low", "ci_high"]])
    # the four quadrants in words, for an outcome whose lower values are good
    er = EffectWords("ER visits", "visits")
    assert er.quadrant("SW") == ("the program saves money and ER visits rose: the ratio is "
                                 "money saved per visit given up")
    assert er.quadrant("NE").startswith("the program costs more and ER visits fell")
    assert "dominates" in er.quadrant("SE") and er.per == "per visit avoided"



def test_figures_are_per_the_studys_own_treated_unit():
    """A study of two treatment programs (the spec's words, as in humphreys_moos.yaml):
    every figure name, unit, estimand and sentence is per its own treated unit, never 'per
    referred member'; the numbers are those of the default wording."""
    who = ("patient treated in 12-step programs", "patients treated in 12-step programs")
    words = EffectWords("ER visits", "visits", who=who)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        v = value_program(_cost_records(1000.0), _econ(), 1000, 365, seed=7,
                          effect=_effect(0.25), words=words)
    rec = v.estimates()
    text = " | ".join([*map(str, rec[["estimand", "method"]].to_numpy().ravel()),
                       *v.headline["figure"], *v.effectiveness["figure"],
                       *v.cost_benefit.table["unit"], v.icer_sentence()])
    assert "referred" not in text
    assert "net savings per patient treated in 12-step programs over 1 year" in text
    assert "$, all patients treated in 12-step programs" in text
    assert "ER visits avoided per patient treated in 12-step programs per year" in text
    assert "net monetary benefit per patient treated in 12-step programs at $1,000" in text
    # NS = 1000 - 150 = 850 and V = 0.25 visits: it dominates
    assert "saves money (net $850 per patient treated in 12-step programs over 1 year)" \
        in v.icer_sentence()
    default = _value(1000.0, _effect(0.25))
    assert "net savings per referred member over 1 year" in list(default.headline["figure"])
    pd.testing.assert_frame_equal(rec[["estimate", "ci_low", "ci_high"]],
                                  default.estimates()[["estimate", "ci_low", "ci_high"]])

def test_uptake_and_discounting_enter_cost_and_effect_alike():
    # u = 0.5, 2 years at 10%: sum d = 1/1.1 + 1/1.21 = 1.735537; start-up 20,000 / 1,000
    # NS = (0.5 * 1000 - 150) * 1.735537 - 20 = 587.438; V = 0.5 * 0.3 * 1.735537 = 0.260331
    v = _value(1000.0, _effect(0.3), uptake=0.5, horizon_years=2, discount_rate=0.1,
               fixed_startup=20000.0)
    t = v.icer.table.iloc[0]
    d = 1 / 1.1 + 1 / 1.21
    assert -t["delta_cost"] == pytest.approx((0.5 * 1000 - 150) * d - 20, rel=1e-12)
    assert t["delta_effect"] == pytest.approx(0.5 * 0.3 * d, rel=1e-12)
    assert v.cost_benefit.net_savings_per_member == pytest.approx(-t["delta_cost"], rel=1e-12)


def test_independent_draws_carry_a_caveat():
    with pytest.warns(StatisticalWarning, match="independently"):
        value_program(_cost_records(1000.0), _econ(), 1000, 365, seed=7, effect=_effect(0.25))
    # without an ER effect the figures are those of a cost-benefit analysis only
    v = value_program(_cost_records(1000.0), _econ(), 1000, 365, seed=7)
    assert v.icer is None and "icer" not in set(v.estimates()["scale"])
    assert v.budget is not None and v.one_way is not None


def test_joint_replicates_are_drawn_as_pairs():
    # 20 replicates on the line effect = 0.1 + (saving - 900) / 1000, plus one failed
    # replicate (NaN): every draw must be one of the 20 pairs
    saving = 900.0 + 10.0 * np.arange(20)
    reps = pd.DataFrame({"saving": [*saving, np.nan],
                         "er_visits_averted": [*(0.1 + (saving - 900) / 1000), 0.2]})
    joint = JointReplicates(reps, 21, 1, 1, 1.0, "test")
    v = value_program(_cost_records(1000.0), _econ(), 1000, 365, seed=7,
                      effect=_effect(0.2), joint=joint)
    d = v.psa.draws
    assert set(d["saving_drawn"]) <= set(saving) and len(set(d["saving_drawn"])) > 15
    assert np.allclose(d["er_visits_averted_drawn"], 0.1 + (d["saving_drawn"] - 900) / 1000)
    assert v.joint and "jointly" in v.estimates().query("scale == 'nmb'")["method"].iloc[0]
    # records resting on the joint replicates say how many, and how many failed (1 of 21,
    # 4.8%: below the 5% that flags); the others do not
    est = v.estimates()
    psa_based = est["scale"].isin(["net_savings_per_member", "probability_cost_saving", "icer", "nmb"])
    assert (est.loc[psa_based, "n_replicates"] == 21).all()
    assert (est.loc[psa_based, "n_failed"] == 1).all()
    assert est.loc[~psa_based, "n_replicates"].isna().all() and "replicates_flag" not in est
    assert "20 of 21 replicates computed, 1 failed" in v.replicates_sentence()
    # net savings follow the drawn saving: saving - 150; visits averted the drawn effect
    assert np.allclose(d["net_savings"], d["saving_drawn"] - 150.0)
    assert np.allclose(d["delta_effect"], d["er_visits_averted_drawn"])
    # the same seed gives the same draws
    again = value_program(_cost_records(1000.0), _econ(), 1000, 365, seed=7,
                          effect=_effect(0.2), joint=joint)
    pd.testing.assert_frame_equal(d, again.psa.draws)
    # too few usable replicates: independent draws, with a warning that says what to do
    few = JointReplicates(reps.iloc[:5], 5, 1, 0, 1.0, "test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = value_program(_cost_records(1000.0), _econ(), 1000, 365, seed=7,
                          effect=_effect(0.2), joint=few)
    said = " ".join(str(w.message) for w in caught if w.category is StatisticalWarning)
    assert "raise econ.joint_replicates" in said and "drawn independently" in said
    assert not v.joint and "er_visits_averted" in v.psa.draws


# ------------------------------------------------------------------ one-way sensitivity
def test_one_way_sensitivity_by_hand():
    # base: NS = S - C - F/N = 1000 - 150 - 20 = 830 (no discounting, one year)
    econ = _econ(fixed_startup=20000.0, materials=0.0)
    savings = {"estimate": 1000.0, "ci_low": 800.0, "ci_high": 1200.0}
    ow = sensitivity(econ, savings, 1000)
    t = ow.table.set_index("term")
    assert ow.base_output == pytest.approx(830.0)
    assert t.loc["saving", ["output_at_low", "output_at_high"]].tolist() == pytest.approx([630.0, 1030.0])
    # uptake 0.5 to 1 (no uptake SD): 0.5 * 1000 - 150 - 20 = 330
    assert t.loc["uptake", "output_at_low"] == pytest.approx(330.0)
    # cost_uncertainty 0: components vary by half to 1.5 times; coordination 75..225
    assert t.loc["coordination", ["output_at_low", "output_at_high"]].tolist() == pytest.approx([905.0, 755.0])
    # the start-up share: 10 or 30 per member
    assert t.loc["fixed_startup", ["output_at_low", "output_at_high"]].tolist() == pytest.approx([840.0, 820.0])
    # horizon 3 years undiscounted: 3 * 850 - 20 = 2,530
    assert t.loc["horizon_years", "output_at_high"] == pytest.approx(2530.0)
    # discount rate 5% for one year: 850 / 1.05 - 20
    assert t.loc["discount_rate", "output_at_high"] == pytest.approx(850 / 1.05 - 20)
    assert "materials" not in t.index and "facilitation" not in t.index   # $0 components
    assert ow.table["swing"].is_monotonic_decreasing


# ------------------------------------------------------------------ budget impact
def test_budget_impact_year_table_by_hand():
    budget = BudgetParams(plan_name="Test Plan", plan_members=10000, prevalence=0.05,
                          referral_rate_by_year=[0.1, 0.2], uptake_by_year=[0.5],
                          low={"savings": "ci_low", "uptake_by_year": [0.3]},
                          high={"savings": "ci_high"})
    econ = _econ(coordination=100.0, materials=20.0, fixed_startup=5000.0)
    res = budget_for_plan(budget, econ, {"estimate": 1000.0, "ci_low": 800.0, "ci_high": 1200.0})
    t = res.by_year
    # year 1: eligible 500, referred 50, participating 25; cost 50 * 120 + 5,000 = 11,000;
    # savings 25 * 1,000 = 25,000; net -14,000; PMPM -14,000 / 120,000
    # year 2: referred 100, participating 50; cost 12,000; savings 50,000; net -38,000
    assert t["referred"].tolist() == pytest.approx([50.0, 100.0])
    assert t["participating"].tolist() == pytest.approx([25.0, 50.0])
    assert t["program_cost"].tolist() == pytest.approx([11000.0, 12000.0])
    assert t["savings"].tolist() == pytest.approx([25000.0, 50000.0])
    assert t["net_budget_impact"].tolist() == pytest.approx([-14000.0, -38000.0])
    assert t["pmpm_impact"].tolist() == pytest.approx([-14000 / 120000, -38000 / 120000])
    assert (t["discount_factor"] == 1.0).all()                   # undiscounted by default
    # low: saving 800, uptake 0.3: participating 15 and 30; savings 12,000 and 24,000
    low = res.scenarios[res.scenarios["scenario"] == "low"]
    assert low["net_budget_impact"].tolist() == pytest.approx([-1000.0, -12000.0])
    # high: saving 1,200: savings 30,000 and 60,000
    high = res.scenarios[res.scenarios["scenario"] == "high"]
    assert high["net_budget_impact"].tolist() == pytest.approx([-19000.0, -48000.0])
    assert res.ranges["net_low"].tolist() == pytest.approx([-19000.0, -48000.0])
    assert res.ranges["net_high"].tolist() == pytest.approx([-1000.0, -12000.0])
    assert res.inputs["plan_name"] == "Test Plan"


def test_budget_uptake_defaults_to_econ_uptake_and_one_value_serves_every_year():
    budget = BudgetParams(plan_members=1000, prevalence=0.1, referral_rate_by_year=[0.5],
                          years=3)
    res = budget_for_plan(budget, _econ(uptake=0.4), {"estimate": 100.0, "ci_low": 50.0,
                                                      "ci_high": 150.0})
    # referred 50 a year, participating 0.4 * 50 = 20
    assert res.by_year["participating"].tolist() == pytest.approx([20.0] * 3)


@pytest.mark.parametrize("bad, key", [
    ({"budget": {"referral_rate_by_year": [0.1, 1.5]}}, "share between 0 and 1"),
    ({"budget": {"referral_rate_by_year": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}}, "econ.budget.referral_rate_by_year"),
    ({"budget": {"referral_rate_by_year": [0.1, 0.2], "uptake_by_year": [0.3, 0.3, 0.3]}},
     "uptake_by_year has 3 values but the horizon is 2"),
    ({"budget": {"years": 6}}, "econ.budget.years"),
    ({"budget": {"plan_members": 0}}, "econ.budget.plan_members"),
    ({"budget": {"prevalence": 2}}, "econ.budget.prevalence"),
    ({"budget": {"low": {"savings": "lowest"}}}, "econ.budget.low.savings"),
    ({"budget": {"high": {"uptake_by_year": [0.5, 0.5]}, "referral_rate_by_year": [0.1, 0.2, 0.3]}},
     "high.uptake_by_year has 2 values"),
    ({"budget": {"plan_size": 10}}, "did you mean 'plan_name'|unknown key"),
    ({"wtp_values": [-100]}, "willingness to pay cannot be negative"),
    ({"joint_replicates": -1}, "econ.joint_replicates"),
])
def test_bad_econ_values_give_clear_errors(bad, key):
    with pytest.raises(ParamsError, match=key):
        P.validate({"econ": bad})


def test_existing_params_files_still_validate():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "params"
    for name in ("demo.yaml", "humphreys_moos.yaml", "healthwise_er.yaml"):
        p = P.load(root / name)
        assert p.econ.budget.horizon >= 1
    hm = P.load(root / "humphreys_moos.yaml")
    assert hm.econ.budget.plan_members == 250000 and hm.econ.budget.horizon == 3


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def hm_run(shared_runs):
    """params/humphreys_moos.yaml, every workbook, with 60 joint replicates and 1,000 PSA
    draws (the session's run of it: tests/shared_runs.py)."""
    return shared_runs.params_file("humphreys_moos")


def test_cost_benefit_workbook_end_to_end(hm_run):
    res = json.loads(hm_run.results_path.read_text())
    assert res["run"]["status"] == "ok"
    est = [e for e in res["estimates"] if e["workbook"] == "cost_benefit"]
    by = {}
    for e in est:
        by.setdefault(e["scale"], []).append(e)
    # the headline: net savings per referred member with a 95% interval, and the chance
    # of saving money (the cohorts differ by about $1,846 a year: Humphreys & Moos 2001)
    net = by["net_savings_per_member"][0]
    assert net["ci_low"] < net["estimate"] < net["ci_high"] and net["estimate"] > 0
    assert 0.9 <= by["probability_cost_saving"][0]["estimate"] <= 1
    # ER visits averted and money saved: the programme dominates, said in words
    icer = by["icer"][0]
    assert icer["estimate"] is None and icer["status"] == "dominant"
    assert "ER visits fell: it dominates" in icer["estimand"]
    nmb = {e["wtp"]: e for e in by["nmb"]}
    assert set(nmb) == {0.0, 1000.0, 2000.0}
    assert nmb[0.0]["estimate"] == pytest.approx(net["estimate"])      # NMB(0) = net savings
    assert nmb[2000.0]["estimate"] > nmb[1000.0]["estimate"] > nmb[0.0]["estimate"]
    assert "jointly" in nmb[0.0]["method"]
    t = res["tables"]
    ceac = t["cost_benefit.ceac"]
    assert ceac[0]["wtp"] == 0 and ceac[-1]["wtp"] == 5000 and len(ceac) == 101
    assert ceac[0]["probability_cost_effective"] == pytest.approx(
        by["probability_cost_saving"][0]["estimate"])
    assert all(r["evpi_population"] is not None for r in ceac)
    tornado = t["cost_benefit.tornado"]
    assert {r["term"] for r in tornado} >= {"uptake", "coordination", "materials",
                                              "fixed_startup", "saving", "discount_rate",
                                              "horizon_years"}
    budget = [r for r in t["cost_benefit.budget_impact"] if r["scenario"] == "base"]
    assert [r["year"] for r in budget] == [1, 2, 3]
    # 250,000 members x 1.5% x 20% referred in year 1 = 750
    assert budget[0]["referred"] == pytest.approx(750.0)
    assert all(r["discount_factor"] == 1.0 for r in budget)
    years = [e for e in est if e["scale"] == "pmpm_difference" and e.get("period")]
    assert [e["period"] for e in years] == ["year 1", "year 2", "year 3"]
    assert all(e["scenario_low"] <= e["estimate"] <= e["scenario_high"] for e in years)
    eff = {r["figure"]: r for r in t["cost_benefit.effectiveness"]}
    # per the spec's own treated unit: the params compare two treatment programs
    s = res["spec"]["study"]
    one, _ = per_treated(res["spec"]["mode"], s["intervention"], s["comparison"], s["unit"])
    assert one == "patient treated in 12-step-oriented programs"
    assert not any("referred" in f for f in eff)
    per_year = eff[f"ER visits avoided per {one} per year"]
    assert per_year["ci_low"] < per_year["estimate"] < per_year["ci_high"]
    assert per_year["estimate"] > 0
    # the ICER table holds the point estimates the NMB records are built from
    ic = t["cost_benefit.icer"][0]
    assert ic["status"] == "dominant" and ic["quadrant"] == "SE"
    assert -ic["delta_cost"] == pytest.approx(net["estimate"])
