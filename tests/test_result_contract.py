"""One result contract across models, causal, survival, synthesis and econ.

Every estimator's result has a tidy ``.table`` keyed by ``term`` with the columns
``estimate, std_error, ci_low, ci_high, p_value``; ``.at(term, column)`` reads one value
of it; ``effect(...)`` is a method (never a field) returning the one effect type,
:class:`evalkit.models.base.EffectResult`, whose table is keyed by ``term`` too. The data
are small seeded simulations: the checks are about the shape of the results, the numbers
are checked against R in the per-estimator tests.
"""
from __future__ import annotations

import dataclasses
import inspect
import warnings

import numpy as np
import pandas as pd
import pytest

from evalkit import causal, econ, models, survival, synthesis
from evalkit.models.base import TABLE_COLUMNS, EffectResult


@pytest.fixture(scope="module")
def members():
    rng = np.random.default_rng(7)
    n = 400
    age = rng.normal(50, 10, n)
    treated = rng.integers(0, 2, n)
    mm = rng.integers(6, 13, n).astype(float)
    visits = rng.poisson(mm * 0.05 * np.exp(0.01 * (age - 50) - 0.2 * treated))
    any_cost = rng.random(n) < 0.6
    cost = np.where(any_cost, rng.gamma(2.0, 400 * np.exp(-0.1 * treated)), 0.0)
    time = rng.exponential(20 * np.exp(0.3 * treated), n)
    return pd.DataFrame({"age": age, "treated": treated, "member_months": mm,
                         "er_visits": visits, "cost": cost, "time": np.minimum(time, 30.0),
                         "died": (time < 30).astype(int)})


@pytest.fixture(scope="module")
def panel():
    rng = np.random.default_rng(11)
    rows = []
    for unit in range(40):
        treated = int(unit < 20)
        level = rng.normal(10, 2)
        for t in range(6):
            post = int(t >= 3)
            rows.append({"unit": unit, "time": t, "treated": treated,
                         "y": level + 0.5 * t - 1.5 * treated * post + rng.normal(0, 1)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(5)
    t = np.arange(36)
    rate = 50 + 0.3 * t - 6 * (t >= 18) + rng.normal(0, 1.5, t.size)
    return pd.DataFrame({"month": t, "rate": rate})


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _results(members, panel, series):
    """(name, result, effect call) for every public estimator result type."""
    count = models.count_model(members, "er_visits ~ treated + age", family="poisson",
                               exposure="member_months")
    twopart = models.two_part(members, "cost ~ treated + age")
    did = _quiet(models.did, panel, "y", "unit", "time", "treated", intervention_time=3)
    its = _quiet(models.its, series, "rate", "month", intervention_time=18)
    eff = _quiet(causal.estimate, members, "er_visits", "treated", "age", method="ipw",
                 estimand="ATE", outcome_type="count", exposure="member_months")
    cox = survival.cox(members, "treated + age", "time", "died")
    rmst = survival.restricted_mean(members, "time", "died", group="treated", tau=25)
    logrank = survival.logrank(members, "time", "died", "treated")
    meta = synthesis.meta_analysis([-0.2, -0.1, -0.3], [0.01, 0.02, 0.015])
    props = synthesis.compare_proportions(30, 60, 20, 60)
    return [
        ("models.count_model", count, lambda r: r.effect("treated")),
        ("models.two_part", twopart, lambda r: r.effect("treated")),
        ("models.did", did, lambda r: r.effect()),
        ("models.its", its, lambda r: r.effect()),
        ("causal.estimate", eff, lambda r: r.effect()),
        ("survival.cox", cox, lambda r: r.effect("treated")),
        ("survival.restricted_mean", rmst, lambda r: r.effect()),
        ("survival.logrank", logrank, None),
        ("synthesis.meta_analysis", meta, lambda r: r.effect("rate_ratio", exponentiate=True)),
        ("synthesis.compare_proportions", props, lambda r: r.effect()),
    ]


def _econ_results():
    cb = econ.cost_benefit(300.0, econ.ProgramCosts(uptake=0.5, coordination=50.0),
                           members=1000, savings_ci=(100.0, 500.0))
    rng = np.random.default_rng(3)
    boot = econ.joint_bootstrap_summary(rng.normal(-100, 50, 200), rng.normal(0.1, 0.05, 200),
                                        wtp=[0, 1000])

    def model(p):
        return {"delta_cost": p["cost"] - p["saving"], "delta_effect": p["saving"] / 1e4}

    psa = econ.psa({"cost": econ.Gamma(150, 30), "saving": econ.Normal(200, 40)}, model,
                   n=200, seed=1, wtp=[0, 1000])
    budget = econ.budget_impact(50000, 0.1, 0.2, 0.5, 300.0, 50.0, years=3)
    return [("econ.cost_benefit", cb), ("econ.icer", econ.icer(100.0, 0.1)),
            ("econ.nmb", econ.nmb(-100.0, 0.1, [0, 1000])),
            ("econ.joint_bootstrap_summary", boot), ("econ.psa", psa),
            ("econ.budget_impact", budget)]


def _econ_tables():
    """(name, result) for every economics result with a ``.table``, records or not."""
    one_way = econ.one_way(lambda p: p["uptake"] * p["saving"] - p["cost"],
                           {"uptake": 0.4, "saving": 1846.0, "cost": 150.0},
                           {"uptake": (0.2, 0.6), "cost": (100.0, 200.0)})
    return _econ_results() + [
        ("econ.one_way", one_way),
        ("econ.nb_sample_size", econ.nb_sample_size(0.35, 0.82, 1.5)),
        ("econ.nb_power", econ.nb_power([500, 1000, 2000], 0.35, 0.82, 1.5)),
        ("econ.nb_mde", econ.nb_mde(2000, 0.35, 1.5)),
    ]


def _check_keyed_by_term(table: pd.DataFrame, where: str) -> None:
    assert isinstance(table, pd.DataFrame), where
    assert table.columns[0] == "term", f"{where}: first column {table.columns[0]!r}"
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    assert not missing, f"{where}: no column(s) {missing}"
    assert len(table) > 0, where


def _check_at(result, where: str) -> None:
    table = result.table
    # one row per term, or per term and the table's other key column(s)
    keys = [c for c in ("part", "wtp", "period", "year", "n_control") if c in table.columns]
    assert not table.duplicated(["term", *keys]).any(), f"{where}: repeated keys"
    row = table.iloc[-1]
    where_keys = {k: row[k] for k in keys if table["term"].eq(row["term"]).sum() > 1}
    for column in TABLE_COLUMNS[1:]:
        got = result.at(row["term"], column, **where_keys)
        want = row[column]
        assert got == want or (np.isnan(got) and np.isnan(want)), f"{where}: at({column})"
    assert result.at(row["term"], **where_keys) == result.at(row["term"], "estimate",
                                                               **where_keys)
    with pytest.raises(KeyError, match="no term"):
        result.at("no such term")


def _check_effect_is_a_method(result, where: str) -> None:
    attr = inspect.getattr_static(type(result), "effect", None)
    assert inspect.isfunction(attr), f"{where}: effect must be a method"
    if dataclasses.is_dataclass(result):
        assert "effect" not in {f.name for f in dataclasses.fields(result)}, where


def test_estimator_results_share_the_contract(members, panel, series):
    for where, result, effect in _results(members, panel, series):
        _check_keyed_by_term(result.table, where)
        _check_at(result, where)
        if effect is None:      # a test, not an effect: keyed by term, nothing to contrast
            continue
        _check_effect_is_a_method(result, where)
        eff = effect(result)
        assert type(eff) is EffectResult, where
        _check_keyed_by_term(eff.table, where + ".effect()")
        _check_at(eff, where + ".effect()")


def test_economic_figures_are_effects_keyed_by_term():
    for where, result in _econ_results():
        _check_effect_is_a_method(result, where)
        eff = result.effect()
        assert type(eff) is EffectResult, where
        _check_keyed_by_term(eff.table, where + ".effect()")
        _check_at(eff, where + ".effect()")
        records = result.estimates()
        assert eff.table["term"].tolist() == records["scale"].tolist(), where


def test_economic_tables_are_keyed_by_term():
    """Every economics table is keyed by ``term`` (qualified by ``wtp``, ``year`` or
    ``n_control`` where a term repeats) and ``.at`` reads each of its values."""
    for where, result in _econ_tables():
        table = result.table
        assert isinstance(table, pd.DataFrame) and len(table) > 0, where
        assert table.columns[0] == "term", f"{where}: first column {table.columns[0]!r}"
        # a one-way analysis has outputs at each end of a range, not one estimate per input
        assert "estimate" in table.columns or where == "econ.one_way", where
        keys = [c for c in ("wtp", "year", "n_control") if c in table.columns]
        assert not table.duplicated(["term", *keys]).any(), f"{where}: repeated keys"
        for row in table.to_dict("records"):
            where_keys = {k: row[k] for k in keys if table["term"].eq(row["term"]).sum() > 1}
            for column, want in row.items():
                got = result.at(row["term"], column, **where_keys)
                assert got == want or (pd.isna(got) and pd.isna(want)), \
                    f"{where}: at({row['term']!r}, {column!r})"
        with pytest.raises(KeyError, match="no term"):
            result.at("no such term")


def test_economic_tables_by_hand():
    """A few values read by term, worked out by hand."""
    tables = dict(_econ_tables())
    # 1000 members, uptake 0.5, saving 300, coordination 50, one year at 3%:
    # net = (0.5 * 300 - 50) / 1.03; ROI = net / (50 / 1.03) = 2
    cb = tables["econ.cost_benefit"]
    assert cb.at("net_savings_per_member") == pytest.approx(100 / 1.03, rel=1e-12)
    assert cb.at("roi") == pytest.approx(2.0, rel=1e-12)
    assert cb.at("roi", "unit") == "(savings - cost) / cost"
    assert tables["econ.icer"].at("icer") == pytest.approx(1000.0)       # 100 / 0.1
    assert tables["econ.nmb"].at("nmb", wtp=1000.0) == pytest.approx(200.0)  # 1000 * .1 + 100
    budget = tables["econ.budget_impact"]
    # 50,000 x 10% eligible x 20% referred = 1,000; 500 take part: 1,000 * 50 - 500 * 300
    assert budget.at("referred", year=2) == pytest.approx(1000.0)
    assert budget.at("net_budget_impact", year=3) == pytest.approx(50_000 - 150_000)
    assert tables["econ.one_way"].at("uptake", "swing") == pytest.approx(0.4 * 1846)
    assert tables["econ.nb_sample_size"].at("n_control") == 1854      # Zhu & Lakkis, method 3
    assert tables["econ.nb_power"].at("power", n_control=2000) == pytest.approx(0.829, abs=5e-4)


def test_effect_terms_are_the_results_scales(members, panel, series):
    """The terms of the model effects are the results vocabulary's scales."""
    got = {where: effect(result).table["term"].tolist()
           for where, result, effect in _results(members, panel, series) if effect is not None}
    assert got["models.count_model"] == ["rate_difference_per_1000_mm", "rate_ratio"]
    assert got["models.two_part"] == ["cost_difference", "ratio"]
    assert got["models.did"] == ["difference"]
    assert got["models.its"] == ["level_change", "slope_change", "ratio_at_horizon",
                                 "average_ratio"]
    assert got["causal.estimate"] == ["rate_ratio"]
    assert got["survival.cox"] == ["hazard_ratio"]
    assert got["synthesis.meta_analysis"] == ["rate_ratio"]
    assert got["synthesis.compare_proportions"] == ["risk_difference"]


def test_logrank_test_is_keyed_by_term_and_curves_stay_curves(members):
    lr = survival.logrank(members, "time", "died", "treated")
    assert lr.table["term"].tolist() == ["chisq"]
    assert lr.at("chisq") == lr.chisq and lr.at("chisq", "p_value") == lr.p_value
    assert lr.at("chisq", "df") == lr.df == 1
    # the per-group observed and expected events sum to the same total
    assert lr.groups["observed"].sum() == pytest.approx(lr.groups["expected"].sum())
    km = survival.kaplan_meier(members, "time", "died", group="treated")
    assert not hasattr(km, "at")
    at = km.survival_at([5.0, 10.0])
    assert at["time"].tolist() == [5.0, 10.0, 5.0, 10.0]


def test_bootstrap_result_is_keyed_by_term(members):
    res = models.bootstrap(members, lambda d: {"mean": d["cost"].mean(),
                                                "median": d["cost"].median()},
                           n_boot=50, seed=1)
    _check_keyed_by_term(res.table, "bootstrap")
    _check_at(res, "bootstrap")
    assert res.at("mean", "ci_low") == res.ci("mean", "bca")[0]


def test_no_result_type_has_an_effect_field_or_an_estimate_method():
    """``effect`` is never a field, and ``estimate`` is never a method (it is a value)."""
    for module in (models, causal, survival, synthesis, econ):
        for name in getattr(module, "__all__", dir(module)):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) and dataclasses.is_dataclass(obj)):
                continue
            names = {f.name for f in dataclasses.fields(obj)}
            assert "effect" not in names, f"{module.__name__}.{name}"
            assert not inspect.isfunction(inspect.getattr_static(obj, "estimate", None)), \
                f"{module.__name__}.{name}.estimate is a method"
