"""Joint bootstrap summary, PSA, CEAC, EVPI and one-way sensitivity.

The CEAC and EVPI are checked on a five-draw sample written out below, with every
expected number worked by hand in the comments (definitions: Fenwick et al. 2001 for the
CEAC; Briggs, Claxton & Sculpher 2006, ch. 6, for EVPI = E[max(INB, 0)] - max(E[INB], 0)).
The PSA's input distributions are checked against their method-of-moments parameters
(worked by hand) and against the moments of a large seeded sample.
"""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from evalkit.econ import (  # noqa: E402
    Beta,
    Fixed,
    Gamma,
    LogNormal,
    Normal,
    ce_plane_plot,
    ceac_plot,
    joint_bootstrap_summary,
    one_way,
    psa,
    tornado_plot,
)
from evalkit.errors import DataDroppedWarning, DataValidationError, ParamsError  # noqa: E402
from evalkit.results import SCALES, Recorder  # noqa: E402

# Five paired draws of (incremental cost, health gain), written out.
DC = [-100.0, 50.0, -20.0, 10.0, 200.0]
DE = [0.10, 0.05, -0.02, 0.08, 0.30]
WTP = [0.0, 1000.0, 2000.0]
# INB = wtp * DE - DC at each WTP, by hand:
#   wtp 0:    [100, -50,  20, -10, -200]  P(>0) = 2/5; mean -28; E[max(.,0)] = 120/5 = 24
#   wtp 1000: [200,   0,   0,  70,  100]  P(>0) = 3/5 (zeros are not > 0); mean 74; EVPI 74 - 74 = 0
#   wtp 2000: [300,  50, -20, 150,  400]  P(>0) = 4/5; mean 176; E[max] = 900/5 = 180; EVPI 4
CEAC = [0.4, 0.6, 0.8]
EXPECTED_NMB = [-28.0, 74.0, 176.0]
EVPI = [24.0, 0.0, 4.0]


def check_decision_tables(ceac):
    np.testing.assert_allclose(ceac["wtp"], WTP)
    np.testing.assert_allclose(ceac["probability_cost_effective"], CEAC, rtol=0, atol=1e-15)
    np.testing.assert_allclose(ceac["expected_nmb"], EXPECTED_NMB, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ceac["evpi_per_member"], EVPI, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# joint bootstrap
# --------------------------------------------------------------------------------------
def test_joint_bootstrap_on_written_out_sample():
    s = joint_bootstrap_summary(DC, DE, wtp=WTP, population=1000)
    check_decision_tables(s.ceac)
    np.testing.assert_allclose(s.ceac["evpi_population"], [24000.0, 0.0, 4000.0], atol=1e-9)
    assert s.probability_cost_saving == pytest.approx(2 / 5)     # -100 and -20
    assert s.probability_more_effective == pytest.approx(4 / 5)
    shares = s.quadrants.set_index("quadrant")["share"]
    # (-100, .10) SE; (50, .05) NE; (-20, -.02) SW; (10, .08) NE; (200, .30) NE
    assert shares.to_dict() == pytest.approx({"NE": 0.6, "SE": 0.2, "SW": 0.2, "NW": 0.0,
                                              "axis": 0.0})
    t = s.table.set_index("term")
    # means 140/5 = 28 and 0.51/5 = 0.102; ICER at the means 28 / 0.102 (NE quadrant)
    assert t.loc["delta_cost", "estimate"] == pytest.approx(28.0)
    assert t.loc["delta_effect", "estimate"] == pytest.approx(0.102)
    assert s.icer.quadrant == "NE" and s.icer.icer == pytest.approx(28 / 0.102)
    # percentile interval, linear interpolation on the sorted draws [-100, -20, 10, 50, 200]:
    # 2.5%: position 0.1 -> -100 + 0.1 * 80 = -92; 97.5%: position 3.9 -> 50 + 0.9 * 150 = 185
    assert t.loc["delta_cost", "ci_low"] == pytest.approx(-92.0)
    assert t.loc["delta_cost", "ci_high"] == pytest.approx(185.0)
    # SD with n - 1: deviations -128, 22, -48, -18, 172
    sd = np.sqrt((128 ** 2 + 22 ** 2 + 48 ** 2 + 18 ** 2 + 172 ** 2) / 4)
    assert t.loc["delta_cost", "std_error"] == pytest.approx(sd)
    assert len(s.ce_plane) == 5 and s.ce_plane["quadrant"].tolist() == ["SE", "NE", "SW", "NE", "NE"]


def test_joint_bootstrap_point_estimate_and_records(tmp_path):
    s = joint_bootstrap_summary(DC, DE, wtp=WTP, estimate=(30.0, 0.1))
    assert s.icer.icer == pytest.approx(300.0)
    est = s.estimates(wtp=[1000])
    assert set(est["scale"]) <= set(SCALES)
    assert est["scale"].tolist() == ["cost_difference", "probability_cost_saving", "icer", "nmb"]
    nmb_row = est.set_index("scale").loc["nmb"]
    assert nmb_row["estimate"] == pytest.approx(1000 * 0.1 - 30)
    assert nmb_row["wtp"] == 1000
    rec = Recorder(tmp_path, "economics")
    rec.add_estimates(est, analysis="valuation")
    assert [e["scale"] for e in rec.estimates] == est["scale"].tolist()


def test_joint_bootstrap_drops_failed_replicates():
    with pytest.warns(DataDroppedWarning, match="2 of 7"):
        s = joint_bootstrap_summary(DC + [np.nan, 5.0], DE + [0.1, np.inf], wtp=WTP)
    assert s.dropped == {"non_finite_replicate": 2} and s.n_draws == 5
    check_decision_tables(s.ceac)


def test_joint_bootstrap_bad_inputs():
    with pytest.raises(DataValidationError, match="same length"):
        joint_bootstrap_summary([1, 2, 3], [1, 2])
    with pytest.raises(DataValidationError, match="at least 2"):
        joint_bootstrap_summary([1], [1])
    with pytest.raises(ParamsError, match="wtp"):
        joint_bootstrap_summary(DC, DE, wtp=[-1])
    with pytest.raises(ParamsError, match="alpha"):
        joint_bootstrap_summary(DC, DE, alpha=1.5)


# --------------------------------------------------------------------------------------
# input distributions
# --------------------------------------------------------------------------------------
def test_distribution_parameters_by_hand():
    g = Gamma(100, 50)                       # shape (100/50)^2 = 4, scale 50^2/100 = 25
    assert (g.shape, g.scale) == (4.0, 25.0)
    b = Beta(mean=0.2, sd=0.04)              # 0.2*0.8/0.0016 - 1 = 99 -> a 19.8, b 79.2
    assert (b.a, b.b) == pytest.approx((19.8, 79.2))
    assert (Beta(events=44, n=74).a, Beta(events=44, n=74).b) == (44.0, 30.0)
    ln = LogNormal(0.8, 0.8 / 1.25, 0.8 * 1.25)  # symmetric on the log scale
    assert ln.sdlog == pytest.approx(np.log(1.25) / 1.959963984540054)
    # the distribution's 95% interval is the CI it was built from
    assert ln.interval() == pytest.approx((0.64, 1.0))
    assert Fixed(3).interval() == (3.0, 3.0)


def test_draws_match_moments():
    rng = np.random.default_rng(7)
    n = 40_000
    x = Gamma(150, 30).draw(rng, n)
    assert x.mean() == pytest.approx(150, rel=0.01) and x.std() == pytest.approx(30, rel=0.03)
    p = Beta(mean=0.4, sd=0.05).draw(rng, n)
    assert p.mean() == pytest.approx(0.4, rel=0.01) and p.std() == pytest.approx(0.05, rel=0.03)
    r = LogNormal(0.82, 0.70, 0.96).draw(rng, n)
    assert np.median(r) == pytest.approx(0.82, rel=0.01)
    assert np.quantile(r, [0.025, 0.975]) == pytest.approx([0.70, 0.96], rel=0.02)
    z = Normal(-50, 10).draw(rng, n)
    assert z.mean() == pytest.approx(-50, abs=0.3)


@pytest.mark.parametrize("make, match", [
    (lambda: Gamma(-1, 2), "Gamma mean must be > 0"),
    (lambda: Gamma(10, 0), "Gamma sd must be > 0"),
    (lambda: Beta(mean=0.5, sd=0.6), "sd\\^2 < mean"),
    (lambda: Beta(mean=1.2, sd=0.1), "Beta mean"),
    (lambda: Beta(events=5, n=3), "0 < events < n"),
    (lambda: Beta(mean=0.5), "needs both"),
    (lambda: Beta(mean=0.5, sd=0.1, events=3, n=10), "exactly one"),
    (lambda: LogNormal(0.8, 0.9, 1.0), "ci_low < estimate < ci_high"),
    (lambda: LogNormal(-0.8, 0.5, 1.0), "Ratios are positive"),
])
def test_bad_distributions(make, match):
    with pytest.raises(ParamsError, match=match):
        make()


# --------------------------------------------------------------------------------------
# PSA
# --------------------------------------------------------------------------------------
INPUTS = {"cost": Gamma(150, 30), "uptake": Beta(events=40, n=100),
          "saving": Normal(1846, 400), "er_drop": LogNormal(0.82, 0.70, 0.96),
          "baseline_er": 0.35}


def model(p):
    averted = p["uptake"] * p["baseline_er"] * (1 - p["er_drop"])
    return {"delta_cost": p["cost"] - p["uptake"] * p["saving"], "delta_effect": averted}


def test_psa_same_seed_same_draws():
    a = psa(INPUTS, model, n=300, seed=11, wtp=WTP)
    b = psa(INPUTS, model, n=300, seed=11, wtp=WTP)
    c = psa(INPUTS, model, n=300, seed=12, wtp=WTP)
    pd.testing.assert_frame_equal(a.draws, b.draws)
    pd.testing.assert_frame_equal(a.ceac, b.ceac)
    assert not np.allclose(a.draws["cost"], c.draws["cost"])
    assert (a.draws["baseline_er"] == 0.35).all()  # plain numbers are held fixed
    # a recorded seed repeats an unseeded run
    d = psa(INPUTS, model, n=50, wtp=WTP)
    pd.testing.assert_frame_equal(d.draws, psa(INPUTS, model, n=50, seed=d.seed, wtp=WTP).draws)


def test_psa_agrees_with_independent_computation_on_its_draws():
    res = psa(INPUTS, model, n=400, seed=3, wtp=WTP, population=5000)
    d = res.draws
    # recompute each draw's outputs with plain Python, then the CEAC and EVPI
    dc = [row.cost - row.uptake * row.saving for row in d.itertuples()]
    de = [row.uptake * 0.35 * (1 - row.er_drop) for row in d.itertuples()]
    np.testing.assert_allclose(d["delta_cost"], dc, rtol=1e-13)
    for lam, (_, r) in zip(WTP, res.ceac.iterrows()):
        inb = [lam * e - c for c, e in zip(dc, de)]
        mean = sum(inb) / len(inb)
        assert r["probability_cost_effective"] == pytest.approx(sum(v > 0 for v in inb) / len(inb))
        assert r["expected_nmb"] == pytest.approx(mean, rel=1e-12)
        evpi = sum(max(v, 0.0) for v in inb) / len(inb) - max(mean, 0.0)
        assert r["evpi_per_member"] == pytest.approx(evpi, rel=1e-9, abs=1e-9)
        assert r["evpi_population"] == pytest.approx(5000 * evpi, rel=1e-9, abs=1e-6)
    assert res.probability_cost_saving == pytest.approx(sum(v < 0 for v in dc) / len(dc))
    summ = res.table.set_index("term")
    assert summ.loc["cost", "kind"] == "input" and summ.loc["delta_cost", "kind"] == "output"
    assert summ.loc["cost", "estimate"] == pytest.approx(d["cost"].mean())
    assert set(res.estimates()["scale"]) <= set(SCALES)


def test_psa_on_written_out_sample():
    # A model that returns the five written-out draws whatever the inputs: the PSA's CEAC
    # and EVPI must then be the hand-worked values above.
    res = psa({"x": Fixed(0)}, lambda p: (np.array(DC), np.array(DE)), n=5, seed=1, wtp=WTP)
    check_decision_tables(res.ceac)
    assert res.evpi["evpi_per_member"].tolist() == pytest.approx(EVPI, abs=1e-12)
    assert res.probability_cost_saving == pytest.approx(0.4)


def test_psa_vectorized_and_loop_agree():
    def scalar_model(p):
        assert isinstance(p["cost"], float)
        return model(p)

    a = psa(INPUTS, model, n=60, seed=5, wtp=WTP)
    b = psa(INPUTS, scalar_model, n=60, seed=5, wtp=WTP, vectorized=False)
    pd.testing.assert_frame_equal(a.draws, b.draws, rtol=1e-13)
    pd.testing.assert_frame_equal(a.ceac, b.ceac, rtol=1e-12)


def test_psa_degenerate_inputs_give_certain_decision():
    # Every input fixed: dC = 150 - 0.4*1846 < 0 in every draw -> dominant if effect > 0.
    fixed = {"cost": 150, "uptake": 0.4, "saving": 1846, "er_drop": 0.82, "baseline_er": 0.35}
    res = psa(fixed, model, n=10, seed=0, wtp=WTP)
    assert res.probability_cost_saving == 1.0
    assert (res.ceac["probability_cost_effective"] == 1.0).all()
    assert (res.ceac["evpi_per_member"] == 0.0).all()


def test_psa_bad_models_and_inputs():
    with pytest.raises(ParamsError, match="delta_effect"):
        psa(INPUTS, lambda p: {"delta_cost": p["cost"]}, n=10, seed=1)
    with pytest.raises(ParamsError, match="one value per draw"):
        psa(INPUTS, lambda p: (p["cost"][:3], p["cost"][:3]), n=10, seed=1)
    with pytest.raises(DataValidationError, match="infinite"):
        psa(INPUTS, lambda p: (p["cost"] * np.inf, p["cost"]), n=10, seed=1)
    with pytest.raises(ParamsError, match="distribution"):
        psa({"cost": "expensive"}, model, n=10, seed=1)
    with pytest.raises(ParamsError, match="n must be"):
        psa(INPUTS, model, n=1, seed=1)
    with pytest.raises(ParamsError, match="seed"):
        psa(INPUTS, model, n=10, seed=-4)


# --------------------------------------------------------------------------------------
# one-way sensitivity
# --------------------------------------------------------------------------------------
def net(p):
    return p["uptake"] * p["saving"] - p["cost"]


BASE = {"uptake": 0.4, "saving": 1846.0, "cost": 150.0}


def test_one_way_by_hand():
    r = one_way(net, BASE, {"cost": (100, 200), "uptake": (0.2, 0.6)})
    assert r.base_output == pytest.approx(0.4 * 1846 - 150)          # 588.4
    t = r.table.set_index("term")
    # uptake 0.2: 369.2 - 150 = 219.2; 0.6: 1107.6 - 150 = 957.6; swing 738.4
    assert t.loc["uptake", ["output_at_low", "output_at_high", "swing"]].tolist() == \
        pytest.approx([219.2, 957.6, 738.4])
    # cost 100: 638.4; 200: 538.4; swing 100
    assert t.loc["cost", ["output_at_low", "output_at_high", "swing"]].tolist() == \
        pytest.approx([638.4, 538.4, 100.0])
    assert r.table["term"].tolist() == ["uptake", "cost"]        # widest first


def test_one_way_with_distribution_ranges_and_named_output():
    g = Gamma(150, 30)
    lo, hi = g.interval(0.95)
    r = one_way(lambda p: {"net": net(p), "cost": p["cost"]}, BASE, {"cost": g}, output="net")
    row = r.table.iloc[0]
    assert (row["low"], row["high"]) == pytest.approx((lo, hi))
    assert row["output_at_low"] == pytest.approx(0.4 * 1846 - lo)


def test_one_way_bad_inputs():
    with pytest.raises(ParamsError, match="without a base value"):
        one_way(net, BASE, {"price": (1, 2)})
    with pytest.raises(ParamsError, match="low <= high"):
        one_way(net, BASE, {"cost": (200, 100)})
    with pytest.raises(ParamsError, match="name one with output"):
        one_way(lambda p: {"a": 1, "b": 2}, BASE, {"cost": (1, 2)})


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------
def test_plots_take_and_return_ax():
    res = psa(INPUTS, model, n=200, seed=2, wtp=WTP)
    boot = joint_bootstrap_summary(DC, DE, wtp=WTP)
    fig, axes = plt.subplots(1, 4)
    try:
        assert ce_plane_plot(res, ax=axes[0], wtp=2000) is axes[0]
        assert ce_plane_plot(boot, ax=axes[1]) is axes[1]
        assert ceac_plot(res, ax=axes[2], evpi=True) is axes[2]
        ow = one_way(net, BASE, {"cost": (100, 200), "uptake": (0.2, 0.6)})
        assert tornado_plot(ow, ax=axes[3]) is axes[3]
        assert len(axes[3].patches) == 4
        new = ceac_plot(boot)
        assert new.figure is not fig
        plt.close(new.figure)
    finally:
        plt.close(fig)


def test_joint_records_count_replicates_and_failures():
    """Records from paired replicates say how many pairs were given and how many were
    left out; above 5% left out they carry the warning."""
    rng = np.random.default_rng(4)
    dc, de = rng.normal(-100, 50, 100), rng.normal(0.05, 0.02, 100)
    dc[:3] = np.nan
    with pytest.warns(DataDroppedWarning):
        rec = joint_bootstrap_summary(dc, de, wtp=[0.0]).estimates(wtp=[0.0])
    assert (rec["n_replicates"] == 100).all() and (rec["n_failed"] == 3).all()
    assert "replicates_flag" not in rec
    dc[:6] = np.nan
    with pytest.warns(DataDroppedWarning):
        rec = joint_bootstrap_summary(dc, de).estimates()
    assert (rec["n_failed"] == 6).all() and rec["replicates_flag"].str.contains("more than 5%").all()


def test_recorder_writes_resampling_fields_only_where_used(tmp_path):
    rec = Recorder(tmp_path, "costs")
    rec.add_estimates(pd.DataFrame({
        "outcome": ["total_cost", "total_cost"], "scale": ["cost_difference"] * 2,
        "estimate": [-10.0, -10.0], "n_replicates": [np.nan, 1000.0], "n_failed": [np.nan, 3.0]}),
        analysis="adjusted", adjusted_for=["age_at_index"])
    plain, boot = rec.estimates
    assert "n_replicates" not in plain and "n_failed" not in plain
    assert boot["n_replicates"] == 1000 and isinstance(boot["n_replicates"], int)
    assert boot["n_failed"] == 3
