"""Textbook acceptance: inverse-probability weighting on NHEFS, through `evalkit run`.

Hernán MA, Robins JM. *Causal Inference: What If* (Boca Raton: Chapman & Hall/CRC, 2020),
chapter 12: the average causal effect of quitting smoking (qsmk) on weight gain 1971-1982
(wt82_71, kg) among the 1,566 NHEFS participants with a 1982 weight, estimated with
stabilised inverse-probability weights from a logistic model of qsmk on sex, race, age,
age^2, education (5 levels), smoking intensity and its square, years of smoking and its
square, exercise (3 levels), activity (3 levels), weight in 1971 and its square.

Reference values (tests/reference/README.md, section NHEFS):
* the book's text (sections 12.2-12.3): 3.4 kg, 95% CI 2.4 to 4.5;
* the book's R program 12.3 (geepack::geeglm with independence working correlation;
  CI = beta -/+ qnorm(0.975) SE), as printed in the companion code: 3.44 (SE 0.525),
  95% CI 2.41 to 4.47; its propensity model's coefficients, printed to 6 decimals.

The run goes through person mode exactly as a user would: params/nhefs_ipw.yaml maps the
book's columns onto the roles and gives the book's propensity formula.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from conftest import assert_structured_records
from scipy import stats

from evalkit.report import build_context

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "reference" / "data" / "nhefs.csv"
FORMULA = ("C(sex) + C(race) + age + I(age**2) + C(education) + smokeintensity"
           " + I(smokeintensity**2) + smokeyrs + I(smokeyrs**2) + C(exercise) + C(active)"
           " + wt71 + I(wt71**2)")


@pytest.fixture(scope="module")
def run(shared_runs):
    """The session's run of the params file as shipped (tests/shared_runs.py)."""
    result = shared_runs.params_file("nhefs_ipw")
    res = json.loads(result.results_path.read_text())
    assert_structured_records(res)
    return res


@pytest.fixture(scope="module")
def estimate(run):
    (rec,) = [e for e in run["estimates"] if e["workbook"] == "cohort_balance"]
    return rec


@pytest.fixture(scope="module")
def independent():
    """Program 12.3 redone directly with statsmodels on the CSV (no evalkit code)."""
    d = pd.read_csv(DATA).dropna(subset=["wt82"])
    denom = smf.glm(f"qsmk ~ {FORMULA}", d, family=sm.families.Binomial()).fit()
    p = denom.predict(d)
    pn = d["qsmk"].mean()                         # numerator model qsmk ~ 1
    sw = np.where(d["qsmk"] == 1, pn / p, (1 - pn) / (1 - p))
    fit = smf.wls("wt82_71 ~ qsmk", d, weights=sw).fit(cov_type="HC0")
    return d, denom, fit


def test_sample_is_the_books(run, independent):
    d, _, _ = independent
    assert len(d) == 1566 and int(d["qsmk"].sum()) == 403        # book: N = 1566; 403 quitters
    sample = {r["arm"]: r for r in run["tables"]["cohort_balance.design_sample"]}
    assert sample["referred (self_help)"]["members"] == 403
    assert sample["comparison (control)"]["members"] == 1163
    assert run["run"]["status"] == "ok"


def test_matches_the_book_at_its_printed_precision(estimate):
    assert estimate["scale"] == "difference" and estimate["estimand"] == "ATE"
    assert "stabilised" in estimate["method"]
    # book text: 3.4 kg (95% CI 2.4 to 4.5)
    assert (round(estimate["estimate"], 1), round(estimate["ci_low"], 1),
            round(estimate["ci_high"], 1)) == (3.4, 2.4, 4.5)
    # Program 12.3 output: 3.44, SE 0.525, 95% CI 2.41 to 4.47
    assert round(estimate["estimate"], 2) == 3.44
    assert round(estimate["std_error"], 3) == 0.525
    assert (round(estimate["ci_low"], 2), round(estimate["ci_high"], 2)) == (2.41, 4.47)


def test_propensity_model_matches_the_book(run):
    # Program 12.3's glm(qsmk ~ as.factor(sex) + ..., family = binomial()), printed to 6 dp
    # under R's names; the params write C(sex) where R's code has as.factor(sex), and the
    # terms are named as R names them (the term as written, then the level)
    book = {"(Intercept)": -2.242519, "as.factor(sex)1": -0.527478,
            "as.factor(race)1": -0.839264, "age": 0.121205, "as.factor(education)5": 0.475961,
            "smokeintensity": -0.077270, "I(smokeintensity^2)": 0.001045,
            "smokeyrs": -0.073597, "as.factor(exercise)2": 0.395704,
            "as.factor(active)2": 0.176784, "wt71": -0.015236}
    got = {r["term"]: r["estimate"] for r in run["tables"]["cohort_balance.propensity_model"]}
    for term, value in book.items():
        ours = term.replace("as.factor(", "C(")
        assert round(got[ours], 6) == pytest.approx(value, abs=1e-6), term


def test_agrees_with_statsmodels_to_1e6(estimate, independent):
    d, denom, fit = independent
    beta, se = float(fit.params["qsmk"]), float(fit.bse["qsmk"])
    # evalkit reports t intervals on the residual degrees of freedom (as lm/coeftest)
    q = stats.t.ppf(0.975, fit.df_resid)
    assert estimate["estimate"] == pytest.approx(beta, abs=1e-6)
    assert estimate["std_error"] == pytest.approx(se, abs=1e-6)
    assert estimate["ci_low"] == pytest.approx(beta - q * se, abs=1e-6)
    assert estimate["ci_high"] == pytest.approx(beta + q * se, abs=1e-6)


def test_weighting_balances_the_confounders(run):
    diag = {r["diagnostic"].split(":")[0]: r for r in run["tables"]["cohort_balance.design_diagnostics"]}
    assert diag["balance"]["passed"] is True and diag["balance"]["value"] < 0.1
    assert estimate_passed(run)


def estimate_passed(run) -> bool:
    return all(e.get("diagnostics_passed") for e in run["estimates"]
               if e["workbook"] == "cohort_balance")


def test_research_brief_tables_use_the_spec_words(run):
    """The outcome is the spec's label with its unit, the arms the study's own words."""
    tabs = {t.key: t for t in build_context(run, run["run"]["params"], "research")["tables"]}
    est = tabs["estimates.cohort_balance"].frame.iloc[0]
    assert est["outcome"] == "weight change 1971-1982" and est["scale"] == "difference (kg)"
    assert est["n who quit smoking"] == "403" and est["n who did not quit"] == "1,163"
    assert list(tabs["cohort"].frame["group"]) == ["Who quit smoking", "Who did not quit", "Total"]
