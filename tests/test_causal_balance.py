"""Balance tables: MatchIt summary() conventions.

Reference values: tests/reference/expected/matchit_lalonde.json, blocks
``nearest_default`` and ``nearest_caliper``, fields ``summary_all`` and
``summary_matched`` = ``summary(m)`` (MatchIt's summary.matchit, standardize = TRUE,
ATT: SMD denominator = SD of the full-sample treated group) on the corrected matches
made by tests/reference/r/matchit_lalonde.R (R 4.2.2). ``null`` in the JSON (NA in R:
variance ratio of binary variables, pair distance before matching) must be NaN here.
Tolerance 1e-6 relative (absolute for exact zeros); measured ~3e-13.
"""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from conftest import reference_data, reference_json  # noqa: E402

from evalkit.causal import balance, covariate_frame, love_plot, match, overlap_plot  # noqa: E402
from evalkit.errors import DataDroppedWarning, DataValidationError, ParamsError  # noqa: E402
from evalkit.style import MUTED_COLOR, PASS_COLOR  # noqa: E402

FORMULA = "age + educ + race + married + nodegree + re74 + re75"
COLS = {"Means Treated": "means_treated", "Means Control": "means_control",
        "Std. Mean Diff.": "smd", "Var. Ratio": "var_ratio", "eCDF Mean": "ecdf_mean",
        "eCDF Max": "ecdf_max", "Std. Pair Dist.": "std_pair_dist"}


@pytest.fixture(scope="module")
def lalonde():
    return reference_data("lalonde")


@pytest.fixture(scope="module")
def ref():
    return reference_json("matchit_lalonde")


def compare_table(got: pd.DataFrame, expected: dict, rel=1e-6):
    assert list(got.index) == list(expected)  # distance, age, ..., raceblack, racehispan, ...
    for term, row in expected.items():
        for r_col, col in COLS.items():
            ev = row[r_col]
            gv = got.loc[term, col] if col in got.columns else np.nan
            if ev is None:
                assert np.isnan(gv), (term, r_col, gv)
            elif ev == 0:
                assert abs(gv) < 1e-12, (term, r_col, gv)
            else:
                assert abs(gv - ev) <= rel * abs(ev), (term, r_col, gv, ev)


@pytest.mark.parametrize("block, caliper", [("nearest_default", None), ("nearest_caliper", 0.1)])
def test_balance_tables_equal_matchit_summary(lalonde, ref, block, caliper):
    m = match(lalonde, "treat", FORMULA, caliper=caliper)
    bal = m.balance()
    compare_table(bal.before, ref[block]["summary_all"])
    compare_table(bal.after, ref[block]["summary_matched"])
    smd_after = ref[block]["std_mean_diff_after"]
    np.testing.assert_allclose(bal.after.loc[list(smd_after), "smd"], list(smd_after.values()),
                               rtol=1e-6, atol=1e-12)


def test_balance_direct_call_equals_method(lalonde, ref):
    """The same table from balance() with weights, distance and subclass passed in."""
    before = lalonde.copy(deep=True)
    m = match(lalonde, "treat", FORMULA)
    bal = balance(lalonde, "treat", FORMULA, weights=m.weights, distance=m.propensity.scores,
                  subclass=m.subclass)
    compare_table(bal.after, ref["nearest_default"]["summary_matched"])
    compare_table(bal.before, ref["nearest_default"]["summary_all"])
    pd.testing.assert_frame_equal(lalonde, before)
    # a list of columns gives the same table as the formula; weights may be a column
    cols = ["age", "educ", "race", "married", "nodegree", "re74", "re75"]
    bal2 = balance(lalonde.assign(w=m.weights), "treat", cols, weights="w")
    pd.testing.assert_frame_equal(bal2.after, bal.after.drop(index="distance")
                                  .drop(columns="std_pair_dist"))


def test_covariate_frame_expands_all_levels(lalonde):
    X = covariate_frame(lalonde, FORMULA)
    assert list(X.columns) == ["age", "educ", "raceblack", "racehispan", "racewhite", "married",
                               "nodegree", "re74", "re75"]
    assert (X[["raceblack", "racehispan", "racewhite"]].sum(axis=1) == 1).all()
    X2 = covariate_frame(lalonde, ["age", "C(race)", "I(age ** 2)", "age:educ"])
    assert list(X2.columns) == ["age", "raceblack", "racehispan", "racewhite", "I(age^2)",
                                "age:educ"]
    np.testing.assert_allclose(X2["I(age^2)"], lalonde.age ** 2)


# --------------------------------------------------------------- hand-checked fixtures
def small():
    # treated x = 1, 2, 3 (mean 2, var 1); control x = 5, 7 (mean 6, var 2)
    return pd.DataFrame({"t": [1, 1, 1, 0, 0], "x": [1.0, 2, 3, 5, 7],
                         "b": [1, 0, 1, 0, 0]})


def test_smd_denominators_by_estimand():
    d = small()
    # mean difference 2 - 6 = -4
    att = balance(d, "t", ["x"], estimand="ATT").before.loc["x"]
    assert att.smd == pytest.approx(-4 / 1)                     # treated SD = 1
    atc = balance(d, "t", ["x"], estimand="ATC").before.loc["x"]
    assert atc.smd == pytest.approx(-4 / np.sqrt(2))            # control SD = sqrt 2
    ate = balance(d, "t", ["x"], estimand="ATE").before.loc["x"]
    assert ate.smd == pytest.approx(-4 / np.sqrt((1 + 2) / 2))  # pooled
    assert att.var_ratio == pytest.approx(1 / 2)
    # eCDFs at 1, 2, 3, 5, 7: treated 1/3, 2/3, 1, 1, 1; control 0, 0, 0, 1/2, 1
    # |diff| = 1/3, 2/3, 1, 1/2, 0 -> mean 2.5/5 = 0.5, max 1
    assert att.ecdf_mean == pytest.approx(0.5) and att.ecdf_max == pytest.approx(1.0)


def test_binary_variables_std_and_raw():
    d = small()
    # b: treated p = 2/3, control 0; SD treated sqrt(p(1-p)) = sqrt(2/9) (no n-1)
    row = balance(d, "t", ["b"]).before.loc["b"]
    assert row.smd == pytest.approx((2 / 3) / np.sqrt(2 / 9))
    assert np.isnan(row.var_ratio)
    assert row.ecdf_mean == pytest.approx(2 / 3) and row.ecdf_max == pytest.approx(2 / 3)
    raw = balance(d, "t", ["b"], binary="raw").before.loc["b"]
    assert raw.smd == pytest.approx(2 / 3)


def test_weighted_means_and_reliability_variance():
    d = small()
    w = np.array([1, 1, 2, 3, 1.0])
    after = balance(d, "t", ["x"], weights=w).after.loc["x"]
    assert after.means_treated == pytest.approx((1 + 2 + 6) / 4)     # 2.25
    assert after.means_control == pytest.approx((15 + 7) / 4)        # 5.5
    # denominator stays the unweighted treated SD (1)
    assert after.smd == pytest.approx(2.25 - 5.5)
    # reliability variance, treated: w = (1,1,2)/4, mean 2.25,
    # sum w (x-m)^2 = (1.5625 + .0625 + 2*.5625)/4 = .6875; 1 - sum w^2 = 1 - 6/16 = .625
    # control: w = (3,1)/4, mean 5.5, sum w (x-m)^2 = (3*.25 + 2.25)/4 = .75; 1 - 10/16
    assert after.var_ratio == pytest.approx((0.6875 / 0.625) / (0.75 / 0.375))


def test_max_abs_smd_pass_and_tables(lalonde):
    m = match(lalonde, "treat", FORMULA, caliper=0.1)
    bal = m.balance()
    assert bal.max_abs_smd() == pytest.approx(np.abs(bal.after.smd.drop("distance")).max())
    assert bal.passes() is True  # caliper match: all |SMD| < 0.1 (max 0.092)
    assert bal.passes(threshold=0.05) is False
    assert list(bal.table.columns[:3]) == ["term", "means_treated_before", "means_treated_after"]
    assert bal.n.loc["adjusted", "treated"] == 111
    assert "balance (ATT" in bal.summary()


def test_plots_return_axes(lalonde):
    import matplotlib.pyplot as plt

    m = match(lalonde, "treat", FORMULA)
    ax = love_plot(m.balance())
    assert len(ax.get_yticklabels()) == 9
    before, after = ax.collections[:2]          # evalkit.style's colours, not matplotlib's
    assert to_hex(before.get_edgecolors()[0]) == MUTED_COLOR
    assert to_hex(after.get_facecolors()[0]) == PASS_COLOR
    fig, ax2 = plt.subplots()
    assert overlap_plot(m.propensity.scores, lalonde.treat, ax=ax2) is ax2
    plt.close("all")


def test_bad_input():
    d = small()
    with pytest.raises(DataValidationError, match="not in the data"):
        balance(d, "t", "x + zz")
    with pytest.raises(ParamsError):
        balance(d, "t", ["x"], estimand="XYZ")
    with pytest.raises(DataValidationError, match="shape"):
        balance(d, "t", ["x"], weights=[1, 2])
    with pytest.raises(DataValidationError, match=">= 0"):
        balance(d, "t", ["x"], weights=[1, 1, 1, -1, 1])
    d2 = d.assign(x=[1.0, np.nan, 3, 5, 7])
    with pytest.warns(DataDroppedWarning, match="1 of 5"):
        bal = balance(d2, "t", ["x"])
    assert bal.n.loc["all", "treated"] == 2
