"""Cost-benefit figures, ICER and NMB, each checked against arithmetic done by hand here.

No reference software is involved: every expected number below is worked out in the
comment next to it from the formulas in ``evalkit/econ/costbenefit.py``'s docstring.
"""
import math
import warnings

import numpy as np
import pytest

from evalkit.econ import ProgramCosts, cost_benefit, icer, nmb
from evalkit.errors import ParamsError, StatisticalWarning
from evalkit.results import SCALES, Recorder


def simple_costs(**kw):
    # C = 120 + 50 + 30 = 200 per referred member; start-up 100,000; undiscounted, 1 year.
    base = dict(coordination=120, facilitation=50, materials=30, uptake=0.5,
                fixed_startup=100_000, horizon_years=1, discount_rate=0.0)
    base.update(kw)
    return ProgramCosts(**base)


def fig(res, name, col="estimate"):
    return float(res.table.loc[res.table["term"] == name, col].iloc[0])


# --------------------------------------------------------------------------------------
# ProgramCosts
# --------------------------------------------------------------------------------------
def test_program_costs_sum_and_discount_factors():
    pc = simple_costs(horizon_years=3, discount_rate=0.03)
    assert pc.cost_per_referred == 200.0
    # end of year: 1.03^-1, 1.03^-2, 1.03^-3
    np.testing.assert_allclose(pc.discount_factors, [1 / 1.03, 1 / 1.03 ** 2, 1 / 1.03 ** 3],
                               rtol=1e-15)
    start = simple_costs(horizon_years=3, discount_rate=0.03, discount_timing="start")
    np.testing.assert_allclose(start.discount_factors, [1.0, 1 / 1.03, 1 / 1.03 ** 2], rtol=1e-15)


@pytest.mark.parametrize("kw, match", [
    (dict(coordination=-1), "coordination must be >= 0"),
    (dict(materials=-0.01), "materials must be >= 0"),
    (dict(fixed_startup=-5), "fixed_startup must be >= 0"),
    (dict(uptake=1.2), "uptake must be >= 0 and <= 1"),
    (dict(uptake=-0.1), "uptake must be >= 0 and <= 1"),
    (dict(horizon_years=0), "horizon_years must be a whole number of years >= 1"),
    (dict(horizon_years=1.5), "horizon_years must be a whole number"),
    (dict(discount_rate=1.5), "discount_rate must be >= 0 and < 1"),
    (dict(discount_rate=-0.03), "discount_rate"),
    (dict(perspective="payer"), "perspective must be one of"),
    (dict(member_time_cost=-10), "member_time_cost must be >= 0"),
    (dict(discount_timing="middle"), "discount_timing"),
    (dict(coordination="lots"), "coordination must be a number"),
    (dict(uptake=float("nan")), "uptake must be a finite number"),
])
def test_program_costs_bad_inputs(kw, match):
    with pytest.raises(ParamsError, match=match):
        simple_costs(**kw)


def test_program_costs_requires_uptake():
    with pytest.raises(TypeError):
        ProgramCosts(coordination=100)  # uptake has no default: it drives every figure


# --------------------------------------------------------------------------------------
# cost_benefit: one undiscounted year
# --------------------------------------------------------------------------------------
def test_one_year_undiscounted_by_hand():
    res = cost_benefit(1000, simple_costs(), members=1000)
    # per referred member: gross G = 0.5 * 1000 = 500; cost K = 100,000/1,000 + 200 = 300
    assert fig(res, "gross_savings_per_member") == pytest.approx(500)
    assert fig(res, "program_cost_per_member") == pytest.approx(300)
    assert res.net_savings_per_member == pytest.approx(200)
    assert res.roi == pytest.approx(200 / 300)                 # (G - K) / K
    assert res.benefit_cost_ratio == pytest.approx(500 / 300)  # G / K
    # PMPM over 12 member-months
    assert res.net_savings_pmpm == pytest.approx(200 / 12)
    assert fig(res, "gross_savings_pmpm") == pytest.approx(500 / 12)
    assert fig(res, "program_cost_pmpm") == pytest.approx(25.0)
    # totals: x 1,000 members
    assert fig(res, "total_net_savings") == pytest.approx(200_000)
    assert fig(res, "total_program_cost") == pytest.approx(300_000)
    # payback: start-up 100 per member recovered at a net 500 - 200 = 300 a year -> 4 months
    assert res.payback_months == pytest.approx(4.0)
    # break-even uptake: u * 1000 = 100 + 200 -> 0.3
    assert res.break_even_uptake == pytest.approx(0.3)
    # break-even cost per referred: 0.5 * 1000 - 100 = 400
    assert res.break_even_cost_per_referred == pytest.approx(400)
    # no CI given: the CI columns are empty
    assert res.table["at_ci_low"].isna().all()


def test_humphreys_moos_saving_per_participant():
    # Humphreys & Moos (2001): $4,729 vs about $2,883 a year -> $1,846 saved per participant.
    saving = 4729 - 2883
    pc = ProgramCosts(coordination=150, uptake=0.4, discount_rate=0.0)
    res = cost_benefit(saving, pc, members=887)
    # G = 0.4 * 1846 = 738.4; K = 150; net 588.4; ROI 588.4/150
    assert res.net_savings_per_member == pytest.approx(588.4)
    assert res.roi == pytest.approx(588.4 / 150)
    assert res.payback_months == 0.0  # nothing paid up front and a positive yearly net
    assert res.break_even_uptake == pytest.approx(150 / 1846)


def test_savings_ci_gives_figures_at_both_limits():
    res = cost_benefit(1000, simple_costs(), members=1000, savings_ci=(500, 1500))
    # S = 500: G = 250, K = 300, net -50, ROI -1/6; break-even uptake 300/500 = 0.6
    assert fig(res, "net_savings_per_member", "at_ci_low") == pytest.approx(-50)
    assert fig(res, "roi", "at_ci_low") == pytest.approx(-50 / 300)
    assert fig(res, "break_even_uptake", "at_ci_low") == pytest.approx(0.6)
    assert math.isinf(fig(res, "payback_months", "at_ci_low"))  # never pays back
    # S = 1500: G = 750, net 450, ROI 1.5; payback 12 * 100 / (750 - 200) months
    assert fig(res, "net_savings_per_member", "at_ci_high") == pytest.approx(450)
    assert fig(res, "roi", "at_ci_high") == pytest.approx(1.5)
    assert fig(res, "payback_months", "at_ci_high") == pytest.approx(12 * 100 / 550)
    assert fig(res, "break_even_uptake", "at_ci_high") == pytest.approx(0.2)
    # the estimate column is unchanged by giving a CI
    assert res.roi == pytest.approx(200 / 300)


def test_cost_per_er_visit_averted():
    # An 18% drop from 0.35 visits a year = 0.063 visits averted per participant.
    res = cost_benefit(1000, simple_costs(), members=1000, effect_per_member=0.063,
                       effect_ci=(0.02, 0.1))
    # per referred member: 0.5 * 0.063 = 0.0315 visits; cost 300 -> 300 / 0.0315
    assert fig(res, "er_visits_averted_per_member") == pytest.approx(0.0315)
    assert res.cost_per_er_visit_averted == pytest.approx(300 / 0.0315)
    assert fig(res, "cost_per_er_visit_averted", "at_ci_low") == pytest.approx(300 / 0.01)
    assert fig(res, "cost_per_er_visit_averted", "at_ci_high") == pytest.approx(300 / 0.05)
    # no effect (or a harmful one) -> undefined, not a negative cost per visit
    none = cost_benefit(1000, simple_costs(), members=1000, effect_per_member=0.0)
    assert math.isnan(none.cost_per_er_visit_averted)


# --------------------------------------------------------------------------------------
# discounting and payback over several years
# --------------------------------------------------------------------------------------
def test_three_year_discounting_end_of_year():
    pc = simple_costs(horizon_years=3, discount_rate=0.03)
    res = cost_benefit(1000, pc, members=1000)
    # sum of 1.03^-t, t = 1..3, written out
    s = 0.970873786407767 + 0.942595909133754 + 0.915141659353159
    assert fig(res, "gross_savings_per_member") == pytest.approx(500 * s, rel=1e-12)
    assert fig(res, "program_cost_per_member") == pytest.approx(100 + 200 * s, rel=1e-12)
    assert res.net_savings_per_member == pytest.approx(300 * s - 100, rel=1e-12)
    assert res.net_savings_pmpm == pytest.approx((300 * s - 100) / 36, rel=1e-12)
    # break-even uptake (100 + 200 s) / (1000 s); break-even cost (0.5*1000*s - 100) / s
    assert res.break_even_uptake == pytest.approx((100 + 200 * s) / (1000 * s), rel=1e-12)
    assert res.break_even_cost_per_referred == pytest.approx((500 * s - 100) / s, rel=1e-12)
    # payback in year 1: 100 / (300 / 1.03) of a year
    assert res.payback_months == pytest.approx(12 * 100 * 1.03 / 300, rel=1e-12)
    by = res.by_year
    assert by["year"].tolist() == [0, 1, 2, 3]
    assert by["net"].iloc[0] == pytest.approx(-100)
    assert by["cumulative_net"].iloc[-1] == pytest.approx(res.net_savings_per_member)


def test_discount_timing_start_leaves_year_one_undiscounted():
    one = cost_benefit(1000, simple_costs(discount_rate=0.03, discount_timing="start"),
                       members=1000)
    assert one.net_savings_per_member == pytest.approx(200)  # same as undiscounted
    end = cost_benefit(1000, simple_costs(discount_rate=0.03), members=1000)
    # end of year: G = 500/1.03, K = 100 + 200/1.03
    assert end.net_savings_per_member == pytest.approx(300 / 1.03 - 100)


def test_payback_in_second_year_with_discounting():
    # start-up 500 per member, yearly net 0.5*1000 - 200 = 300, r = 10%, end of year.
    pc = simple_costs(fixed_startup=500_000, horizon_years=3, discount_rate=0.10)
    res = cost_benefit(1000, pc, members=1000)
    # year 1 flow 300/1.1 = 272.73 -> still -227.27 (= -250/1.1); year 2 flow 300/1.21.
    # fraction of year 2: (250/1.1) / (300/1.21) = 0.91667 -> 11 months; payback 23 months.
    assert res.payback_months == pytest.approx(23.0, rel=1e-12)


def test_payback_beyond_horizon_is_infinite():
    pc = simple_costs(fixed_startup=500_000, horizon_years=1, discount_rate=0.0)
    res = cost_benefit(1000, pc, members=1000)  # needs 500/300 years > 1 year
    assert math.isinf(res.payback_months)
    assert res.net_savings_per_member == pytest.approx(-200)


def test_one_off_referral_cost():
    # recurring=False: the 200 is paid once at time 0 with the start-up cost.
    pc = simple_costs(horizon_years=2, recurring=False)
    res = cost_benefit(1000, pc, members=1000)
    # G = 2 * 500 = 1000; K = 100 + 200 = 300; net 700
    assert res.net_savings_per_member == pytest.approx(700)
    # payback: 300 up front at 500 a year -> 7.2 months
    assert res.payback_months == pytest.approx(7.2)
    # break-even one-off cost: 0.5 * 1000 * 2 - 100 = 900
    assert res.break_even_cost_per_referred == pytest.approx(900)
    assert res.by_year["program_cost"].tolist() == pytest.approx([300, 0, 0])


def test_society_perspective_adds_member_time():
    plan = simple_costs(member_time_cost=80)
    soc = simple_costs(member_time_cost=80, perspective="society")
    r_plan = cost_benefit(1000, plan, members=1000)
    r_soc = cost_benefit(1000, soc, members=1000)
    assert r_plan.net_savings_per_member == pytest.approx(200)   # time ignored
    # society: + 0.5 * 80 = 40 per referred member -> K = 340, net 160
    assert fig(r_soc, "program_cost_per_member") == pytest.approx(340)
    assert r_soc.net_savings_per_member == pytest.approx(160)
    # break-even uptake (100 + 200) / (1000 - 80)
    assert r_soc.break_even_uptake == pytest.approx(300 / 920)


def test_society_without_time_cost_warns():
    with pytest.warns(StatisticalWarning, match="member_time_cost"):
        cost_benefit(1000, simple_costs(perspective="society"), members=1000)


def test_zero_cost_gives_undefined_ratios_not_errors():
    pc = ProgramCosts(uptake=0.5, discount_rate=0.0)
    res = cost_benefit(1000, pc, members=10)
    assert math.isnan(res.roi) and math.isnan(res.benefit_cost_ratio)
    assert res.net_savings_per_member == pytest.approx(500)


@pytest.mark.parametrize("kw, match", [
    (dict(members=0), "members must be a whole number"),
    (dict(members=2.5), "members must be a whole number"),
    (dict(members=10, savings_ci=(1500, 500)), "low <= high"),
    (dict(members=10, savings_ci=(500,)), "pair"),
    (dict(members=10, effect_ci=(0.01, 0.1)), "effect_ci was given without"),
])
def test_cost_benefit_bad_inputs(kw, match):
    with pytest.raises(ParamsError, match=match):
        cost_benefit(1000, simple_costs(), **kw)


def test_cost_benefit_needs_program_costs():
    with pytest.raises(ParamsError, match="ProgramCosts"):
        cost_benefit(1000, {"uptake": 0.5}, members=10)


def test_estimates_use_results_vocabulary(tmp_path):
    res = cost_benefit(1000, simple_costs(), members=1000, savings_ci=(500, 1500))
    est = res.estimates()
    assert set(est["scale"]) == {"net_savings_per_member", "pmpm_difference", "roi",
                                 "benefit_cost_ratio"}
    assert set(est["scale"]) <= set(SCALES)
    roi = est.set_index("scale").loc["roi"]
    assert (roi["ci_low"], roi["estimate"], roi["ci_high"]) == pytest.approx((-50 / 300, 2 / 3, 1.5))
    rec = Recorder(tmp_path, "economics")
    rec.add_estimates(est, analysis="valuation")  # raises if a scale is outside the vocabulary
    assert len(rec.estimates) == 4


# --------------------------------------------------------------------------------------
# ICER
# --------------------------------------------------------------------------------------
def test_icer_four_quadrants():
    ne = icer(500.0, 0.25)
    assert (ne.quadrant, ne.status, ne.icer) == ("NE", "icer", 2000.0)
    se = icer(-300.0, 0.1)
    assert (se.quadrant, se.status) == ("SE", "dominant") and math.isnan(se.icer)
    nw = icer(300.0, -0.1)
    assert (nw.quadrant, nw.status) == ("NW", "dominated") and math.isnan(nw.icer)
    sw = icer(-500.0, -0.25)
    assert (sw.quadrant, sw.status, sw.icer) == ("SW", "icer", 2000.0)
    assert "saved per unit of effect given up" in sw.interpretation
    # the raw ratio is still shown under dominance
    assert se.table["ratio"].iloc[0] == pytest.approx(-3000.0)


def test_icer_axes_and_vector_input():
    t = icer([-100, 100, 0, 0, 0], [0, 0, 0.1, -0.1, 0]).table
    assert t["status"].tolist() == ["dominant", "dominated", "dominant", "dominated", "equivalent"]
    assert t["quadrant"].tolist() == ["axis", "axis", "axis", "axis", "origin"]
    assert t["estimate"].isna().all()
    with pytest.raises(AttributeError, match="several pairs"):
        icer([1, 2], [1, 2]).icer


def test_icer_estimates_only_where_meaningful():
    est = icer([500, -300], [0.25, 0.1]).estimates()
    assert est["scale"].tolist() == ["icer"] and est["estimate"].tolist() == [2000.0]


def test_icer_bad_inputs():
    with pytest.raises(ParamsError, match="same length"):
        icer([1, 2], [1])
    with pytest.raises(ParamsError, match="finite"):
        icer(float("nan"), 0.1)


# --------------------------------------------------------------------------------------
# NMB
# --------------------------------------------------------------------------------------
def test_nmb_by_hand():
    r = nmb(500.0, 0.25, [0, 1000, 2000, 4000])
    # NMB = wtp * 0.25 - 500
    assert r.table["estimate"].tolist() == [-500.0, -250.0, 0.0, 500.0]
    assert r.table["cost_effective"].tolist() == [False, False, False, True]
    assert r.threshold_wtp == pytest.approx(2000.0)  # equals the ICER
    assert set(r.estimates()["scale"]) == {"nmb"}


def test_nmb_dominant_and_cost_only():
    dom = nmb(-300.0, 0.1, [0, 5000])
    assert dom.table["estimate"].tolist() == [300.0, 800.0]
    assert math.isnan(dom.threshold_wtp)
    # no health effect: NMB is the net saving at every WTP
    assert nmb(-588.4, 0.0, [0, 100]).table["estimate"].tolist() == pytest.approx([588.4, 588.4])


def test_nmb_bad_wtp():
    with pytest.raises(ParamsError, match="wtp"):
        nmb(1.0, 1.0, [-5, 10])
    with pytest.raises(ParamsError, match="wtp"):
        nmb(1.0, 1.0, [])


def test_no_printing(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cost_benefit(1000, simple_costs(), members=1000)
        icer(1, 1)
        nmb(1, 1, 10)
    assert capsys.readouterr().out == ""
