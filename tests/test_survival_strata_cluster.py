"""Stratified and cluster-robust Cox models, Kaplan-Meier interval types and the stratified
log-rank test, against R's survival package.

Reference values: tests/reference/expected/cox_cluster_strata.json, produced by
tests/reference/r/cox_cluster_strata.R (R 4.2.2, survival 3.5-3) on
tests/reference/data/lung.csv (survival::lung, exported by r/00_export_lung.R; clusters are
the enrolling institutions, ``inst``) and tests/reference/data/rossi.csv:

* ``coxph(Surv(time, status) ~ age + sex + ph_ecog + wt_loss + cluster(inst))``,
  ``... ~ age + ph_ecog + wt_loss + strata(sex)`` and ``... + strata(sex) + cluster(inst)``
  on the 212 lung rows complete in those columns, Efron and Breslow ties;
  ``coxph(Surv(week, arrest) ~ fin + age + race + mar + paro + prio + strata(wexp))``
  (Efron, Breslow, and Efron with robust = TRUE), ``strata(wexp, paro)`` and
  ``strata(wexp) + cluster(age)``, and ``cluster(third)`` with three clusters by row position;
  all with ``coxph.control(eps = 1e-11)``.
* ``summary(survfit(..., conf.type = "log" | "log-log" | "plain"), times = ...)`` and the
  median table of ``print(survfit(...))``.
* ``survdiff(Surv(week, arrest) ~ fin + strata(wexp))`` and
  ``survdiff(Surv(time, status) ~ sex + strata(ph_ecog))``.

Tolerances. Cox: 1e-7 relative. R stops at a relative change of the log partial
likelihood below 1e-11, which leaves the coefficients ~1e-10 from the optimum (the
largest gap measured over all blocks is 2.5e-10, in the Wald statistic of the rossi
cluster(age) fit; most are ~1e-14). The problems are well conditioned (information
matrices with condition numbers below 1e5 after centring), so a different BLAS kernel
moves results by ~1e-13; 1e-7 keeps a wide margin for that and still catches any
formula error, which shows at 1e-3 or more (a Breslow-form robust SE is 0.46% off
coxph's for Efron ties). Kaplan-Meier and log-rank are closed-form sums without
iteration: 1e-10 relative (measured ~1e-15).
"""
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from conftest import reference_data, reference_json

from evalkit.errors import DataValidationError, ParamsError, StatisticalWarning
from evalkit.survival import concordance_index, cox, kaplan_meier, logrank

RTOL_COX = 1e-7
RTOL_CLOSED_FORM = 1e-10
LUNG_COLUMNS = ["time", "status", "inst", "age", "sex", "ph_ecog", "wt_loss"]

# block name in the JSON -> (data set, formula, duration, event, keyword arguments)
COX_SPECS = {
    "lung_cluster": ("lung", "age + sex + ph_ecog + wt_loss", {"cluster": "inst"}),
    "lung_strata": ("lung", "age + ph_ecog + wt_loss", {"strata": "sex"}),
    "lung_strata_cluster": ("lung", "age + ph_ecog + wt_loss", {"strata": "sex", "cluster": "inst"}),
    "rossi_strata": ("rossi", "fin + age + race + mar + paro + prio", {"strata": "wexp"}),
    "rossi_strata_robust": ("rossi", "fin + age + race + mar + paro + prio",
                            {"strata": "wexp", "robust": True}),
    "rossi_two_strata": ("rossi", "fin + age + race + mar + prio", {"strata": ["wexp", "paro"]}),
    "rossi_strata_cluster_age": ("rossi", "fin + race + mar + paro + prio",
                                 {"strata": "wexp", "cluster": "age"}),
    # 3 clusters for 7 coefficients: a singular robust variance (rank 2)
    "rossi_few_clusters": ("rossi", "fin + age + race + wexp + mar + paro + prio",
                           {"cluster": "third"}),
}
SURV_COLUMNS = {"lung": ("time", "dead"), "rossi": ("week", "arrest")}


@pytest.fixture(scope="module")
def ref():
    return reference_json("cox_cluster_strata")


@pytest.fixture(scope="module")
def data():
    lung = reference_data("lung")
    # R's status coding: 1 = censored, 2 = dead
    lung = lung.assign(dead=lung["status"] - 1)
    rossi = reference_data("rossi")
    # as r/cox_cluster_strata.R: third = (row number - 1) %% 3
    rossi = rossi.assign(third=np.arange(len(rossi)) % 3)
    return {"lung_all": lung, "lung": lung.dropna(subset=LUNG_COLUMNS).reset_index(drop=True),
            "rossi": rossi}


def _fit(data, block: str):
    name, ties = block.rsplit("_", 1)
    source, formula, kwargs = COX_SPECS[name]
    duration, event = SURV_COLUMNS[source]
    return cox(data[source], formula, duration, event, ties=ties, **kwargs)


def _values(mapping, keys):
    return np.array([mapping[k] for k in keys], float)


# ---------------------------------------------------------------------------- Cox
@pytest.mark.parametrize("block", [
    "lung_cluster_efron", "lung_cluster_breslow", "lung_strata_efron", "lung_strata_breslow",
    "lung_strata_cluster_efron", "lung_strata_cluster_breslow", "rossi_strata_efron",
    "rossi_strata_breslow", "rossi_strata_robust_efron", "rossi_two_strata_efron",
    "rossi_strata_cluster_age_efron", "rossi_few_clusters_efron"])
def test_cox_matches_coxph(data, ref, block):
    """Coefficients, robust and model-based SEs, the whole variance matrix, log partial
    likelihoods, LR / Wald / score / robust score tests and the concordance: the JSON block.

    With 3 clusters for 7 coefficients the robust variance is singular: evalkit warns, and
    its Wald and robust score tests still equal R's, which come from coxph.wtest's
    generalized Cholesky inverse (a plain solve gives a Wald statistic of ~6e16 there)."""
    r = ref["cox"][block]
    if block == "rossi_few_clusters_efron":
        with pytest.warns(StatisticalWarning, match="singular .rank 2 for 7 coefficients, 3 clusters"):
            fit = _fit(data, block)
    else:
        fit = _fit(data, block)
    terms = list(r["coefficients"])
    assert fit.table["term"].tolist() == terms
    assert fit.nobs == r["n"] and fit.extra["n_events"] == r["nevent"]
    np.testing.assert_allclose(fit.table["estimate"], _values(r["coefficients"], terms), rtol=RTOL_COX)
    np.testing.assert_allclose(fit.table["std_error"], _values(r["se"], terms), rtol=RTOL_COX)
    np.testing.assert_allclose(_values(fit.extra["naive_std_error"], terms),
                               _values(r["naive_se"], terms), rtol=RTOL_COX)
    assert fit.extra["vcov"].index.tolist() == terms
    np.testing.assert_allclose(fit.extra["vcov"].to_numpy(), np.asarray(r["var"]), rtol=RTOL_COX)
    np.testing.assert_allclose(fit.loglik, r["logLik"], rtol=RTOL_COX)
    np.testing.assert_allclose(fit.extra["loglik_null"], r["loglik_null_and_final"][0], rtol=RTOL_COX)
    np.testing.assert_allclose(fit.extra["lr_test"][0], r["likelihood_ratio_test"], rtol=RTOL_COX)
    np.testing.assert_allclose(fit.extra["wald_test"][0], r["wald_test"], rtol=RTOL_COX)
    np.testing.assert_allclose(fit.extra["score_test"][0], r["score_test"], rtol=RTOL_COX)
    if r["robust_score_test"] is None:
        assert not fit.extra["robust"] and "robust_score_test" not in fit.extra
    else:
        assert fit.extra["robust"]
        np.testing.assert_allclose(fit.extra["robust_score_test"][0], r["robust_score_test"],
                                   rtol=RTOL_COX)
    np.testing.assert_allclose(fit.concordance, r["concordance"], rtol=RTOL_COX)
    np.testing.assert_allclose(fit.concordance_se, r["concordance_se"], rtol=RTOL_COX)
    counts = fit.extra["concordance_counts"]
    assert [counts[k] for k in ("concordant", "discordant", "tied_x", "tied_y", "tied_xy")] == \
        [r["concordance_counts"][k] for k in ("concordant", "discordant", "tied.x", "tied.y", "tied.xy")]
    assert fit.extra["cluster"] == r["cluster"]
    assert fit.extra["n_clusters"] == r["n_clusters"]
    assert fit.extra["strata"] == (None if r["strata"] is None else list(np.atleast_1d(r["strata"])))
    assert fit.extra["n_strata"] == (r["n_strata"] or 1)


def test_cox_labels_say_strata_and_cluster(data):
    fit = _fit(data, "lung_strata_cluster_efron")
    assert fit.formula == "Surv(time, dead) ~ age + ph_ecog + wt_loss + strata(sex) + cluster(inst)"
    assert fit.method == ("Cox proportional hazards (efron ties, stratified by sex, robust SE "
                          "clustered by inst)")
    plain = cox(data["rossi"], "fin + age", "week", "arrest")
    assert plain.extra["strata"] is None and plain.extra["cluster"] is None
    assert plain.extra["n_strata"] == 1 and plain.extra["n_clusters"] is None


def test_robust_equals_cluster_of_one_row_each(data):
    """robust = TRUE is the cluster sandwich with every subject its own cluster."""
    rossi = data["rossi"].assign(row=np.arange(len(data["rossi"])))
    formula = "fin + age + race + mar + paro + prio"
    with warnings.catch_warnings():
        warnings.simplefilter("error", StatisticalWarning)      # full-rank: no warning
        by_row = cox(rossi, formula, "week", "arrest", strata="wexp", cluster="row")
        robust = cox(rossi, formula, "week", "arrest", strata="wexp", robust=True)
    np.testing.assert_allclose(by_row.table["std_error"], robust.table["std_error"], rtol=1e-12)
    np.testing.assert_allclose(by_row.extra["robust_score_test"][0],
                               robust.extra["robust_score_test"][0], rtol=1e-12)
    np.testing.assert_allclose(by_row.concordance_se, robust.concordance_se, rtol=1e-12)


def test_cox_strata_and_cluster_ignore_row_order_and_labels(data):
    """Shuffling rows and renaming strata / clusters changes nothing."""
    lung = data["lung"]
    base = cox(lung, "age + ph_ecog + wt_loss", "time", "dead", strata="sex", cluster="inst")
    shuffled = lung.sample(frac=1.0, random_state=3).assign(
        sex=lambda d: d["sex"].map({1: "male", 2: "female"}),
        inst=lambda d: "site-" + d["inst"].astype(int).astype(str))
    other = cox(shuffled, "age + ph_ecog + wt_loss", "time", "dead", strata="sex", cluster="inst")
    for col in ("estimate", "std_error", "p_value"):
        np.testing.assert_allclose(other.table[col], base.table[col], rtol=1e-10)
    np.testing.assert_allclose(other.concordance_se, base.concordance_se, rtol=1e-10)


def test_singular_variance_warning_only_for_robust_fits(data):
    """A monotone likelihood (no events when fin = 1) makes the model-based information
    nearly singular; that is reported as an infinite coefficient, not as a robust-variance
    problem."""
    rossi = data["rossi"]
    no_events = rossi.assign(arrest=np.where(rossi["fin"] == 1, 0, rossi["arrest"]))
    with pytest.warns(StatisticalWarning) as record:
        cox(no_events, "fin + age", "week", "arrest")
    assert [str(w.message) for w in record if "robust variance" in str(w.message)] == []


def test_cox_strata_with_missing_covariate_rows_dropped_as_before(data):
    """Rows missing a covariate are still dropped with a warning; the strata and clusters
    are formed from the rows that remain (lung_all has 16 rows with a missing value)."""
    from evalkit.errors import DataDroppedWarning

    lung = data["lung_all"].dropna(subset=["inst"])
    with pytest.warns(DataDroppedWarning, match="15 of 227"):
        fit = cox(lung, "age + ph_ecog + wt_loss", "time", "dead", strata="sex", cluster="inst")
    assert fit.nobs == 212 and fit.extra["n_clusters"] == 18


def test_cox_strata_cluster_bad_inputs(data):
    lung, rossi = data["lung_all"], data["rossi"]
    # a missing cluster id (lung has one row without inst) is an error, not a silent drop
    with pytest.raises(DataValidationError, match="cluster column 'inst' has 1 missing value.*belong to a cluster"):
        cox(lung, "age + sex", "time", "dead", cluster="inst")
    with pytest.raises(DataValidationError, match="strata column 'ph_ecog' has 1 missing.*stratum"):
        cox(lung, "age + sex", "time", "dead", strata="ph_ecog")
    with pytest.raises(DataValidationError, match="single value") as err:
        cox(rossi.assign(one=1), "fin + age", "week", "arrest", strata="one")
    assert err.value.failures[0]["reason"] == "single stratum"
    with pytest.raises(DataValidationError, match="at least two clusters"):
        cox(rossi.assign(site="A"), "fin + age", "week", "arrest", cluster="site")
    with pytest.raises(DataValidationError, match="constant within every stratum"):
        cox(rossi, "fin + wexp", "week", "arrest", strata="wexp")
    with pytest.raises(DataValidationError, match="linearly dependent within strata"):
        cox(rossi.assign(w2=rossi["wexp"] * 3 + rossi["fin"]), "fin + w2", "week", "arrest",
            strata="wexp")
    with pytest.raises(DataValidationError, match="not found"):
        cox(rossi, "fin + age", "week", "arrest", strata="site")
    with pytest.raises(ParamsError, match="strata must be a column name"):
        cox(rossi, "fin + age", "week", "arrest", strata=3)
    with pytest.raises(ParamsError, match="cluster must name one column"):
        cox(rossi, "fin + age", "week", "arrest", cluster=["age", "prio"])


# ---------------------------------------------------------------------------- Kaplan-Meier
def _nan(values):
    return np.array([np.nan if v is None else v for v in values], float)


KM_BLOCKS = ["rossi_fin_log", "rossi_fin_log-log", "rossi_fin_plain", "lung_sex_log",
             "lung_sex_log-log", "lung_sex_plain", "ten_events_log", "ten_events_log-log",
             "ten_events_plain", "lung_sex_log-log_90"]


@pytest.mark.parametrize("block", KM_BLOCKS)
def test_kaplan_meier_conf_types_match_survfit(data, ref, block):
    """summary(survfit(..., conf.type = ct), times) rows and print(survfit) medians with
    their confidence limits; S = 1 rows have [1, 1], S = 0 rows NA (NaN) as in R."""
    r = ref["kaplan_meier"][block]
    times = None if isinstance(r["times"], str) else r["times"]
    kwargs = {"times": times, "alpha": 1 - r["conf_int"], "conf_type": r["conf_type"]}
    if block.startswith("rossi"):
        km = kaplan_meier(data["rossi"], "week", "arrest", group="fin", **kwargs)
        label = "fin={}".format
    elif block.startswith("lung"):
        km = kaplan_meier(data["lung_all"], "time", "dead", group="sex", **kwargs)
        label = "sex={}".format
    else:
        ten = pd.DataFrame({"t": np.arange(1, 11), "e": 1})
        km = kaplan_meier(ten, "t", "e", **kwargs)
        label = lambda g: "all"  # noqa: E731
    assert km.conf_type == r["conf_type"]
    assert km.table["group"].nunique() == len(r["curves"])
    for g, tab in km.table.groupby("group"):
        c = r["curves"][label(g)]
        np.testing.assert_array_equal(tab["time"], c["time"])
        np.testing.assert_array_equal(tab["n_risk"], c["n_risk"])
        np.testing.assert_array_equal(tab["n_event"], c["n_event"])
        np.testing.assert_allclose(tab["survival"], c["survival"], rtol=RTOL_CLOSED_FORM)
        np.testing.assert_allclose(tab["std_error"], _nan(c["std_err"]), rtol=RTOL_CLOSED_FORM)
        np.testing.assert_allclose(tab["ci_low"], _nan(c["lower"]), rtol=RTOL_CLOSED_FORM)
        np.testing.assert_allclose(tab["ci_high"], _nan(c["upper"]), rtol=RTOL_CLOSED_FORM)
        med = km.median.set_index("group").loc[g]
        m = c["median"]
        assert (med["n"], med["events"]) == (m["n"], m["events"])
        np.testing.assert_allclose([med["median"], med["ci_low"], med["ci_high"]],
                                   _nan([m["median"], m["lower"], m["upper"]]))
    if times is not None:                  # .survival_at() uses the result's interval type
        pd.testing.assert_frame_equal(km.survival_at(times), km.table)


def test_kaplan_meier_conf_types_differ_only_in_the_interval(data):
    rossi = data["rossi"]
    tables = {ct: kaplan_meier(rossi, "week", "arrest", group="fin", times=[20, 52],
                               conf_type=ct).table for ct in ("log", "log-log", "plain")}
    for ct in ("log-log", "plain"):
        pd.testing.assert_frame_equal(tables[ct].drop(columns=["ci_low", "ci_high"]),
                                      tables["log"].drop(columns=["ci_low", "ci_high"]))
        assert not np.allclose(tables[ct]["ci_low"], tables["log"]["ci_low"])
    # log-log intervals are asymmetric around S and stay inside (0, 1)
    ll = tables["log-log"]
    assert ((ll["ci_low"] > 0) & (ll["ci_high"] < 1)).all()
    assert ((ll["ci_low"] < ll["survival"]) & (ll["survival"] < ll["ci_high"])).all()


def test_kaplan_meier_unknown_conf_type_and_plot(data):
    with pytest.raises(ParamsError, match="conf_type must be one of"):
        kaplan_meier(data["rossi"], "week", "arrest", conf_type="loglog")
    ax = kaplan_meier(data["rossi"], "week", "arrest", group="fin", conf_type="log-log").plot()
    assert len(ax.collections) >= 2        # one shaded band per curve
    import matplotlib.pyplot as plt

    plt.close("all")


# ---------------------------------------------------------------------------- log-rank
@pytest.mark.parametrize("block", ["rossi_fin_strata_wexp", "lung_sex_strata_ecog"])
def test_stratified_logrank_matches_survdiff(data, ref, block):
    """survdiff(Surv(...) ~ group + strata(s)): chisq, df, O and E summed over strata, V."""
    r = ref["logrank"][block]
    if block.startswith("rossi"):
        lr = logrank(data["rossi"], "week", "arrest", "fin", strata="wexp")
        labels = ["fin=0", "fin=1"]
    else:
        lung = data["lung_all"].dropna(subset=["ph_ecog"])
        lr = logrank(lung, "time", "dead", "sex", strata="ph_ecog")
        labels = ["sex=1", "sex=2"]
    np.testing.assert_allclose(lr.chisq, r["chisq"], rtol=RTOL_CLOSED_FORM)
    np.testing.assert_allclose(lr.p_value, r["p_value"], rtol=RTOL_CLOSED_FORM)
    assert lr.df == r["df"]
    np.testing.assert_array_equal(lr.groups["n"], _values(r["n"], labels))
    np.testing.assert_array_equal(lr.groups["observed"], _values(r["observed"], labels))
    np.testing.assert_allclose(lr.groups["expected"], _values(r["expected"], labels),
                               rtol=RTOL_CLOSED_FORM)
    np.testing.assert_allclose(lr.variance, r["variance"], rtol=RTOL_CLOSED_FORM)


def test_stratified_logrank_bad_inputs(data):
    with pytest.raises(DataValidationError, match="strata column 'ph_ecog' has 1 missing"):
        logrank(data["lung_all"], "time", "dead", "sex", strata="ph_ecog")
    with pytest.raises(DataValidationError, match="single value"):
        logrank(data["rossi"].assign(one=1), "week", "arrest", "fin", strata="one")


# ---------------------------------------------------------------------------- concordance
def test_stratified_concordance_counts_only_pairs_within_strata():
    """Pair counts with strata equal the sums of the per-stratum counts; a cluster per
    subject leaves the standard error unchanged."""
    rng = np.random.default_rng(11)
    n = 300
    t = rng.integers(1, 20, n).astype(float)
    s = (rng.random(n) < 0.6).astype(float)
    x = rng.integers(0, 8, n).astype(float)
    st = rng.integers(0, 3, n)
    both = concordance_index(t, s, x, strata=st)
    parts = [concordance_index(t[st == k], s[st == k], x[st == k]) for k in range(3)]
    for key in ("concordant", "discordant", "tied_x", "tied_y", "tied_xy"):
        assert both[key] == sum(p[key] for p in parts)
    own = concordance_index(t, s, x, strata=st, cluster=np.arange(n))
    np.testing.assert_allclose(own["std_error"], both["std_error"], rtol=1e-13)
    assert own["concordance"] == both["concordance"]
