"""evalkit.synthesis against R (metafor, prop.test, binom.test) and published examples.

Reference values:
* tests/reference/expected/meta_bcg.json from tests/reference/r/meta_bcg.R (R 4.2.2,
  metafor 3.8-1) on tests/reference/data/bcg.csv:
  escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg) and
  rma(yi, vi, method = "DL" / "REML" / "FE"); REML is compared with the `REML_tight` block
  (control = list(threshold = 1e-12)) because metafor's default threshold 1e-5 leaves
  tau2 2e-7 (relative) short of the maximum (README, "Convergence tolerances").
* tests/reference/expected/proportions.json from tests/reference/r/proportions.R:
  prop.test(x, n, correct = FALSE / TRUE)$conf.int, binom.test(x, n)$conf.int, Wald and
  Jeffreys (qbeta) intervals for 44/74 and 57/63.
* Newcombe RG (1998) Stat Med 17:873-890, Table II, method 10 (hybrid score interval):
  56/70 - 48/80 -> (0.0524, 0.3339); 9/10 - 3/10 -> (0.1705, 0.8090).
* MD, SMD, IRR, OR and RD have no R reference file; they are checked against the formulas
  in metafor's escalc documentation, computed directly in the test (and, for FE/DL
  pooling, against statsmodels' independent combine_effects).
"""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from conftest import reference_data, reference_json
from scipy import special, stats

from evalkit.errors import DataDroppedWarning, DataValidationError, ParamsError, StatisticalWarning
from evalkit.synthesis import (
    compare_proportions,
    effect_size,
    forest_plot,
    meta_analysis,
    proportion_ci,
)

FIELDS = {  # evalkit attribute -> metafor block key (meta_bcg.R, block())
    "estimate": "estimate", "std_error": "se", "z_value": "zval", "p_value": "pval",
    "ci_low": "ci_lb", "ci_high": "ci_ub", "tau2": "tau2", "i2": "I2", "h2": "H2",
    "q": "Q", "q_p": "Q_pval",
}


@pytest.fixture(scope="module")
def bcg():
    return reference_data("bcg")


@pytest.fixture(scope="module")
def ref():
    return reference_json("meta_bcg")


@pytest.fixture(scope="module")
def es(bcg):
    return effect_size("RR", ai=bcg["tpos"], bi=bcg["tneg"], ci=bcg["cpos"], di=bcg["cneg"])


# ---------------------------------------------------------------------------- escalc
def test_log_risk_ratio_matches_escalc(es, ref):
    """escalc(measure = "RR", ...): meta_bcg.json yi / vi."""
    np.testing.assert_allclose(es["yi"], ref["yi"], rtol=1e-12)
    np.testing.assert_allclose(es["vi"], ref["vi"], rtol=1e-12)


def test_log_risk_ratio_from_group_sizes(bcg, es):
    alt = effect_size("RR", ai=bcg["tpos"], n1i=bcg["tpos"] + bcg["tneg"], ci=bcg["cpos"],
                      n2i=bcg["cpos"] + bcg["cneg"])
    pd.testing.assert_frame_equal(alt, es)


def test_odds_ratio_and_risk_difference_formulas(bcg):
    """escalc's documented formulas, computed directly from the 2x2 cells (no zero cells in BCG)."""
    a, b, c, d = (bcg[k].to_numpy(float) for k in ("tpos", "tneg", "cpos", "cneg"))
    orr = effect_size("OR", ai=a, bi=b, ci=c, di=d)
    np.testing.assert_allclose(orr["yi"], np.log(a * d / (b * c)), rtol=1e-12)
    np.testing.assert_allclose(orr["vi"], 1 / a + 1 / b + 1 / c + 1 / d, rtol=1e-12)
    rd = effect_size("RD", ai=a, bi=b, ci=c, di=d)
    p1, p2 = a / (a + b), c / (c + d)
    np.testing.assert_allclose(rd["yi"], p1 - p2, rtol=1e-12)
    np.testing.assert_allclose(rd["vi"], p1 * (1 - p1) / (a + b) + p2 * (1 - p2) / (c + d), rtol=1e-12)


def test_zero_cells_get_one_half_only_in_affected_studies():
    """escalc default add = 1/2, to = "only0": the second study has a zero cell."""
    out = effect_size("RR", ai=[4, 0], bi=[96, 50], ci=[8, 5], di=[92, 45])
    np.testing.assert_allclose(out["yi"].iloc[0], np.log((4 / 100) / (8 / 100)))
    np.testing.assert_allclose(out["yi"].iloc[1], np.log((0.5 / 51) / (5.5 / 51)))
    np.testing.assert_allclose(out["vi"].iloc[1], 1 / 0.5 - 1 / 51 + 1 / 5.5 - 1 / 51)
    with pytest.warns(StatisticalWarning, match="non-finite"):
        raw = effect_size("RR", ai=[4, 0], bi=[96, 50], ci=[8, 5], di=[92, 45], to="none")
    assert np.isinf(raw["yi"].iloc[1])


def test_mean_difference_smd_and_irr():
    """MD, SMD (Hedges' g with escalc's exact J and "LS" variance) and IRR formulas."""
    md = effect_size("MD", m1i=[103.0], sd1i=[5.5], n1i=[50], m2i=[100.0], sd2i=[4.5], n2i=[50])
    np.testing.assert_allclose(md["yi"], [3.0])
    np.testing.assert_allclose(md["vi"], [5.5 ** 2 / 50 + 4.5 ** 2 / 50])
    smd = effect_size("SMD", m1i=[103.0], sd1i=[5.5], n1i=[50], m2i=[100.0], sd2i=[4.5], n2i=[50])
    g = smd["yi"].iloc[0]
    m = 98
    d = 3 / np.sqrt((49 * 5.5 ** 2 + 49 * 4.5 ** 2) / 98)
    # Hedges' usual approximation J ~ 1 - 3/(4m - 1) is within 1e-4 of the exact factor
    assert abs(g - d * (1 - 3 / (4 * m - 1))) < 1e-4
    j_exact = special.gamma(m / 2) / (np.sqrt(m / 2) * special.gamma((m - 1) / 2))
    np.testing.assert_allclose(g, j_exact * 3 / np.sqrt((49 * 5.5 ** 2 + 49 * 4.5 ** 2) / 98), rtol=1e-12)
    np.testing.assert_allclose(smd["vi"].iloc[0], 1 / 50 + 1 / 50 + g ** 2 / 200, rtol=1e-12)
    irr = effect_size("IRR", x1i=[12, 0], t1i=[1000.0, 500.0], x2i=[20, 4], t2i=[900.0, 450.0])
    np.testing.assert_allclose(irr["yi"].iloc[0], np.log((12 / 1000) / (20 / 900)))
    np.testing.assert_allclose(irr["vi"].iloc[0], 1 / 12 + 1 / 20)
    np.testing.assert_allclose(irr["yi"].iloc[1], np.log((0.5 / 500) / (4.5 / 450)))


def test_effect_size_bad_input():
    with pytest.raises(ParamsError, match="measure"):
        effect_size("HR", ai=[1], bi=[2], ci=[3], di=[4])
    with pytest.raises(ParamsError, match="needs"):
        effect_size("OR", ai=[1], bi=[2], ci=[3])
    with pytest.raises(DataValidationError, match=">= 0"):
        effect_size("RR", ai=[5], n1i=[3], ci=[1], di=[4])
    with pytest.raises(DataValidationError, match="differ in length"):
        effect_size("RR", ai=[1, 2], bi=[2, 3, 4], ci=[3, 4], di=[4, 5])


# ---------------------------------------------------------------------------- rma
@pytest.mark.parametrize("method,block", [("DL", "DL"), ("REML", "REML_tight"), ("FE", "FE")])
def test_meta_analysis_matches_rma(es, ref, method, block):
    """rma(yi, vi, method = ...): meta_bcg.json DL / REML_tight / FE."""
    res = meta_analysis(es["yi"], es["vi"], method=method)
    r = ref[block]
    for attr, key in FIELDS.items():
        np.testing.assert_allclose(getattr(res, attr), r[key], rtol=1e-9, atol=1e-300,
                                   err_msg=f"{method} {attr}")
    assert res.q_df == r["Q_df"] and res.k == r["k"]
    if r["se_tau2"] is None:
        assert res.tau2_se is None
    else:
        np.testing.assert_allclose(res.tau2_se, r["se_tau2"], rtol=1e-9)
    np.testing.assert_allclose(np.exp(res.estimate), r["risk_ratio"], rtol=1e-9)


def test_reml_default_threshold_gap_is_what_the_readme_says(es, ref):
    """metafor's default (threshold 1e-5) REML tau2 is within 1e-6 of the tight solution."""
    res = meta_analysis(es["yi"], es["vi"], method="REML")
    np.testing.assert_allclose(res.tau2, ref["REML"]["tau2"], rtol=1e-6)


def test_meta_analysis_study_table_and_labels(es, bcg):
    res = meta_analysis(es["yi"], es["vi"], method="DL", labels=bcg["author"])
    assert res.studies["label"].tolist() == bcg["author"].tolist()
    np.testing.assert_allclose(res.studies["weight"].sum(), 100)
    w = 1 / (es["vi"] + res.tau2)
    np.testing.assert_allclose(res.estimate, np.sum(w * es["yi"]) / w.sum(), rtol=1e-12)
    assert res.to_frame().shape == (1, 15)


def test_fe_and_dl_agree_with_statsmodels_combine_effects(es):
    """Independent implementation (statsmodels) of FE and DL pooling when Q > k - 1."""
    from statsmodels.stats.meta_analysis import combine_effects

    sm = combine_effects(es["yi"].to_numpy(), es["vi"].to_numpy(), method_re="chi2")
    fe = meta_analysis(es["yi"], es["vi"], method="FE")
    dl = meta_analysis(es["yi"], es["vi"], method="DL")
    np.testing.assert_allclose([fe.estimate, fe.std_error], [sm.mean_effect_fe, sm.sd_eff_w_fe],
                               rtol=1e-12)
    np.testing.assert_allclose([dl.estimate, dl.std_error, dl.tau2, dl.q],
                               [sm.mean_effect_re, sm.sd_eff_w_re, sm.tau2, sm.q], rtol=1e-12)


def test_homogeneous_studies_give_tau2_zero():
    """Q < df: DL truncates at 0 and REML stops at the boundary; both then equal FE."""
    yi = np.array([0.10, 0.12, 0.11, 0.09])
    vi = np.array([0.04, 0.05, 0.03, 0.06])
    fe = meta_analysis(yi, vi, method="FE")
    for method in ("DL", "REML"):
        res = meta_analysis(yi, vi, method=method)
        assert res.tau2 == 0 and res.i2 == 0
        np.testing.assert_allclose(res.estimate, fe.estimate, rtol=1e-12)


def test_meta_analysis_bad_input(es):
    with pytest.raises(DataValidationError, match="same length"):
        meta_analysis([0.1, 0.2], [0.1])
    with pytest.raises(DataValidationError, match="<= 0"):
        meta_analysis([0.1, 0.2], [0.1, 0.0])
    with pytest.raises(DataValidationError, match="at least 2"):
        meta_analysis([0.1], [0.1])
    with pytest.raises(ParamsError):
        meta_analysis(es["yi"], es["vi"], method="PM")
    yi = es["yi"].to_numpy().copy()
    yi[0] = np.nan
    with pytest.warns(DataDroppedWarning, match="1 of 13"):
        res = meta_analysis(yi, es["vi"], method="DL")
    assert res.k == 12 and res.dropped == {"missing_values": 1}


def test_forest_plot_returns_axes(es):
    import matplotlib.pyplot as plt

    res = meta_analysis(es["yi"], es["vi"], method="DL")
    ax = forest_plot(res, transform=np.exp, xlabel="risk ratio")
    assert ax.get_xscale() == "log"
    assert len(ax.get_yticklabels()) == res.k + 1
    plt.close("all")


# ---------------------------------------------------------------------------- proportions
@pytest.mark.parametrize("method,key", [
    ("wilson", "wilson"), ("wilson_cc", "wilson_continuity_corrected"),
    ("clopper_pearson", "clopper_pearson"), ("wald", "wald"), ("jeffreys", "jeffreys")])
def test_proportion_ci_matches_r(method, key):
    """proportions.json: prop.test / binom.test / Wald / Jeffreys for 44/74 and 57/63."""
    ref = reference_json("proportions")
    cases = [ref["p44_of_74"], ref["p57_of_63"]]
    out = proportion_ci([c["x"] for c in cases], [c["n"] for c in cases], method=method)
    expected = np.array([c[key] for c in cases])
    np.testing.assert_allclose(out[["ci_low", "ci_high"]].to_numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(out["proportion"], [c["p_hat"] for c in cases], rtol=1e-14)


def test_wilson_cc_boundaries_and_half_correction():
    """prop.test's rules: limits clipped to [0, 1]; correction min(1/2, |x - n/2|)."""
    out = proportion_ci([0, 10, 5], [10, 10, 10], method="wilson_cc")
    assert out["ci_low"].iloc[0] == 0 and out["ci_high"].iloc[1] == 1
    # x = n/2: the correction vanishes, so the interval is the plain Wilson one
    plain = proportion_ci([5], [10], method="wilson")
    np.testing.assert_allclose(out.iloc[2][["ci_low", "ci_high"]].to_numpy(float),
                               plain.iloc[0][["ci_low", "ci_high"]].to_numpy(float))


def test_proportion_ci_bad_input():
    with pytest.raises(DataValidationError, match="0 <= x <= n"):
        proportion_ci(5, 4)
    with pytest.raises(DataValidationError, match="whole numbers"):
        proportion_ci(2.5, 10)
    with pytest.raises(ParamsError, match="method"):
        proportion_ci(2, 10, method="exact")


def test_compare_proportions_newcombe_examples():
    """Newcombe (1998) Table II, method 10, to the 4 decimals published."""
    a = compare_proportions(56, 70, 48, 80)
    assert (round(a.ci_low, 4), round(a.ci_high, 4)) == (0.0524, 0.3339)
    np.testing.assert_allclose(a.risk_difference, 0.2)
    with pytest.warns(StatisticalWarning, match="fisher"):
        b = compare_proportions(9, 10, 3, 10)
    assert (round(b.ci_low, 4), round(b.ci_high, 4)) == (0.1705, 0.8090)


def test_compare_proportions_tests():
    """Chi-square from the closed form N (ad - bc)^2 / (row and column totals); Fisher via scipy."""
    a, b, c, d = 87, 13, 42, 58
    res = compare_proportions(a, a + b, c, c + d)
    n = a + b + c + d
    chi2 = n * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    np.testing.assert_allclose(res.chi2, chi2, rtol=1e-12)
    np.testing.assert_allclose(res.chi2_p_value, stats.chi2.sf(chi2, 1), rtol=1e-12)
    yates = n * (abs(a * d - b * c) - n / 2) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    np.testing.assert_allclose(compare_proportions(a, a + b, c, c + d, correct=True).chi2, yates,
                               rtol=1e-12)
    np.testing.assert_allclose(res.fisher_p_value,
                               stats.fisher_exact([[a, b], [c, d]]).pvalue, rtol=1e-12)
    assert res.ci_low < res.risk_difference < res.ci_high
