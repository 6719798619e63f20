"""Budget impact (ISPOR good practice: Mauskopf et al. 2007; Sullivan et al. 2014).

Every expected number is worked by hand in the comments from the formulas in
``evalkit/econ/budget.py``: eligible = members x prevalence; referred = eligible x
referral rate; participating = referred x uptake; programme cost = referred x cost
(+ start-up in year 1); savings = participating x saving; net = cost - savings;
PMPM = net / (12 x members).
"""
import numpy as np
import pytest

from evalkit.econ import ProgramCosts, budget_impact
from evalkit.errors import ParamsError
from evalkit.results import SCALES, Recorder

BASE = dict(plan_members=100_000, prevalence=0.02, referral_rate_by_year=[0.1, 0.2, 0.3],
            uptake_by_year=[0.4, 0.5, 0.5], savings_per_participant=1846,
            cost_per_referred=150, years=3, fixed_cost=20_000)


def test_year_by_year_by_hand():
    t = budget_impact(**BASE).by_year
    assert t["year"].tolist() == [1, 2, 3]
    assert t["eligible"].tolist() == pytest.approx([2000, 2000, 2000])
    assert t["referred"].tolist() == pytest.approx([200, 400, 600])
    assert t["participating"].tolist() == pytest.approx([80, 200, 300])
    # cost: 200*150 + 20,000 start-up; 400*150; 600*150
    assert t["program_cost"].tolist() == pytest.approx([50_000, 60_000, 90_000])
    # savings: 80*1846; 200*1846; 300*1846
    assert t["savings"].tolist() == pytest.approx([147_680, 369_200, 553_800])
    assert t["net_budget_impact"].tolist() == pytest.approx([-97_680, -309_200, -463_800])
    # PMPM over 100,000 members x 12 months
    assert t["pmpm_impact"].tolist() == pytest.approx([-97_680 / 1.2e6, -309_200 / 1.2e6,
                                                       -463_800 / 1.2e6])
    assert t["cumulative_net_budget_impact"].iloc[-1] == pytest.approx(-870_680)
    # undiscounted by default, as the ISPOR reports advise
    assert (t["discount_factor"] == 1.0).all()


def test_discounting_end_of_year_when_asked():
    t = budget_impact(**{**BASE, "discount_rate": 0.03}).by_year
    f = np.array([1 / 1.03, 1 / 1.03 ** 2, 1 / 1.03 ** 3])
    np.testing.assert_allclose(t["discount_factor"], f, rtol=1e-15)
    np.testing.assert_allclose(t["net_budget_impact"], np.array([-97_680, -309_200, -463_800]) * f,
                               rtol=1e-12)


def test_growing_plan_and_program_costs_input():
    pc = ProgramCosts(coordination=100, materials=50, uptake=0.5)
    r = budget_impact([100_000, 110_000], 0.02, 0.1, 0.5, 1846, pc.cost_per_referred, years=2)
    t = r.by_year
    # year 2: eligible 2,200, referred 220, participating 110
    assert t["referred"].tolist() == pytest.approx([200, 220])
    assert t["net_budget_impact"].iloc[1] == pytest.approx(220 * 150 - 110 * 1846)
    assert t["pmpm_impact"].iloc[1] == pytest.approx((220 * 150 - 110 * 1846) / (110_000 * 12))


def test_scenarios_and_ranges():
    r = budget_impact(**BASE, scenarios={"low": {"uptake_by_year": 0.2},
                                         "high": {"uptake_by_year": 0.6,
                                                  "savings_per_participant": 2500}})
    assert r.summary["scenario"].tolist() == ["base", "low", "high"]
    low = r.scenarios[r.scenarios["scenario"] == "low"]
    # low, year 1: 200 referred, 40 participating: 50,000 - 40*1846 = -23,840
    assert low["net_budget_impact"].iloc[0] == pytest.approx(50_000 - 40 * 1846)
    high = r.scenarios[r.scenarios["scenario"] == "high"]
    # high, year 3: 600 referred, 360 participating: 90,000 - 360*2500 = -810,000
    assert high["net_budget_impact"].iloc[2] == pytest.approx(-810_000)
    rng = r.ranges.set_index("year")
    assert rng.loc[1, "net_high"] == pytest.approx(50_000 - 40 * 1846)       # low scenario
    assert rng.loc[3, "net_low"] == pytest.approx(-810_000)                  # high scenario
    assert rng.loc[3, "pmpm_low"] == pytest.approx(-810_000 / 1.2e6)
    s = r.summary.set_index("scenario")
    assert s.loc["base", "total_net_budget_impact"] == pytest.approx(-870_680)
    assert s.loc["base", "total_program_cost"] == pytest.approx(200_000)
    # base-case table is the base scenario
    np.testing.assert_allclose(r.by_year["net_budget_impact"],
                               r.scenarios.loc[r.scenarios["scenario"] == "base",
                                               "net_budget_impact"])


def test_estimates_records(tmp_path):
    r = budget_impact(**BASE, scenarios={"low": {"uptake_by_year": 0.2}})
    est = r.estimates()
    assert set(est["scale"]) == {"cost_difference", "pmpm_difference"} and \
        set(est["scale"]) <= set(SCALES)
    y1 = est[(est["period"] == "year 1") & (est["scale"] == "cost_difference")].iloc[0]
    assert y1["estimate"] == pytest.approx(-97_680)
    assert (y1["scenario_low"], y1["scenario_high"]) == pytest.approx((-97_680, -23_840))
    rec = Recorder(tmp_path, "economics")
    rec.add_estimates(est)
    assert rec.estimates[0]["period"] == "year 1" and len(rec.estimates) == 6


@pytest.mark.parametrize("kw, match", [
    (dict(prevalence=1.5), "prevalence must be >= 0 and <= 1"),
    (dict(uptake_by_year=[0.4, 1.2, 0.5]), "uptake_by_year\\[year 2\\] must be >= 0 and <= 1"),
    (dict(referral_rate_by_year=[0.1, 0.2]), "has 2 values but years=3"),
    (dict(cost_per_referred=-150), "cost_per_referred must be >= 0"),
    (dict(plan_members=0), "plan_members must be > 0"),
    (dict(years=0), "years must be a whole number >= 1"),
    (dict(discount_rate=3), "discount_rate must be >= 0 and < 1"),
    (dict(fixed_cost=-1), "fixed_cost must be >= 0"),
    (dict(scenarios={"odd": {"price": 3}}), "unknown inputs \\['price'\\]"),
    (dict(scenarios={"base": {"prevalence": 0.03}}), "name of the base case"),
    (dict(scenarios={"low": {"uptake_by_year": 2}}), "scenario 'low': uptake_by_year"),
])
def test_bad_inputs(kw, match):
    with pytest.raises(ParamsError, match=match):
        budget_impact(**{**BASE, **kw})
