"""Readers' outcome labels come from the run's analysis spec: a label set in the params
(``study.outcomes.<name>.label``) reaches the workbooks' tables, sentences and charts;
without a spec the built-in outcomes table names them."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from evalkit import params as P
from evalkit.analysis import plots, show
from evalkit.analysis import spec as SPEC
from evalkit.analysis import summary as S
from evalkit.analysis.design import crude_vs_adjusted, effects_display

LABEL = {"study": {"outcomes": {"er_visits": {"label": "emergency visits"}}}}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def claims_spec():
    return SPEC.resolve(P.validate(LABEL), None)


def _rates():
    rows = [{"outcome": o, "period": p, "arm": a, "rate": r, "ci_low": r - 5, "ci_high": r + 5,
             "members": 400}
            for o in ("er_visits", "inpatient_days") for p in ("baseline", "followup")
            for a, r in (("self_help", 40.0), ("control", 50.0))]
    return pd.DataFrame(rows)


def _contrasts():
    rows = [{"outcome": o, "period": "followup", "scale": s, "estimate": e, "ci_low": lo,
             "ci_high": hi, "p_value": 0.04}
            for o in ("er_visits", "inpatient_days")
            for s, e, lo, hi in (("rate_ratio", 0.8, 0.65, 0.98),
                                 ("rate_difference_per_1000_mm", -10.0, -19.0, -1.0))]
    return pd.DataFrame(rows)


def _comparison():
    return pd.DataFrame({"outcome": ["er_visits", "er_visits", "inpatient_days"],
                         "method": ["crude", "adjusted model", "crude"],
                         "ratio": [0.8, 0.85, 0.9], "ci_low": [0.7, 0.7, 0.8],
                         "ci_high": [0.95, 1.0, 1.1]})


def test_params_label_reaches_the_tables_and_sentences(claims_spec):
    s = claims_spec
    assert s.label("er_visits") == "emergency visits"
    rates = show.table(show.rates_table(_rates(), spec=s)).frame
    assert list(dict.fromkeys(rates["outcome"])) == ["Emergency visits", "Inpatient days"]
    contrasts = show.table(show.contrasts_table(_contrasts(), spec=s)).frame
    assert set(contrasts["outcome"]) == {"Emergency visits", "Inpatient days"}
    assert show.findings(_contrasts(), _rates(), spec=s)[0].startswith("Emergency visits: 40.0")
    effects = show.table(show.effects_table(_contrasts(), spec=s)).frame
    assert effects["outcome"].iloc[0] == "Emergency visits"
    methods = show.table(show.methods_table(_comparison(), spec=s)).frame
    assert list(methods.iloc[:, 0]) == ["Emergency visits", "Inpatient days"]
    crude = crude_vs_adjusted(_contrasts(), _contrasts())
    assert show.table(crude, spec=s).frame["outcome"].iloc[0] == "Emergency visits"
    shown = show.table(effects_display(_contrasts()), spec=s).frame
    assert shown["outcome"].iloc[0] == "Emergency visits"
    # no spec: the built-in outcomes table's label
    assert show.table(show.effects_table(_contrasts())).frame["outcome"].iloc[0] == "ER visits"
    assert show.table(crude).frame["outcome"].iloc[0] == "ER visits"


def test_params_label_reaches_the_charts(claims_spec):
    s = claims_spec
    axes = plots.rate_plot(_rates(), spec=s)
    assert [ax.get_title() for ax in axes] == ["Emergency visits", "Inpatient days"]
    assert plots.rate_plot(_rates())[0].get_title() == "ER visits"
    ax = plots.methods_plot(_comparison(), spec=s)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Emergency visits", "Inpatient days"]
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"group": np.repeat(["self_help", "control"], 200),
                          "er_visits": rng.poisson(1.0, 400),
                          "inpatient_days": rng.poisson(0.5, 400)})
    axes = plots.visits_distribution_plot(frame, ["er_visits", "inpatient_days"], spec=s)
    assert [ax.get_title() for ax in axes] == ["Emergency visits", "Inpatient days"]


HM = {"name": "HM", "outcome": "er_visits", "measure": "ROM", "sd_assumed": True,
      "treated": {"n": 887, "mean": 13.1, "sd": 13.1},
      "control": {"n": 887, "mean": 22.5, "sd": 22.5}}


def test_params_label_reaches_the_synthesis_charts():
    """Summary mode: the forest-style effects chart's rows and the SD-sensitivity legend."""
    p = P.validate({"mode": "summary", "summary": {"studies": [HM]}, **LABEL})
    s = SPEC.resolve(p)
    effects = S.study_effects(p.summary)
    ax = plots.effects_plot(effects, spec=s)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Emergency visits\nHM"]
    ax = plots.sd_sensitivity_plot(S.sd_sensitivity(p.summary), spec=s)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Emergency visits"]
    assert show.table(S.sd_sensitivity(p.summary), spec=s).frame["outcome"].iloc[0] == \
        "Emergency visits"


def test_tables_name_the_studys_arms_and_unit():
    """A comparison of two programs among patients: the arm columns are headed by the
    programs, and figures per member read per patient; the claims default keeps
    'referred' and 'member'."""
    study = SPEC.resolve(P.validate({"study": {
        "intervention": "12-step-oriented programs",
        "comparison": "cognitive-behavioral programs", "unit": "patients"}}), None)
    df = pd.DataFrame({"scale": ["net_savings_per_member", "rate_difference_per_1000_mm"],
                       "estimate": [10.0, 2.0], "self_help_members": [20, 30],
                       "control_members": [25, 35]})
    shown = show.readable(df, spec=study)
    assert list(shown.columns) == ["scale", "estimate", "12-step-oriented programs",
                                   "cognitive-behavioral programs"]
    assert list(shown["scale"]) == ["net savings per patient ($)",
                                    "difference per 1,000 patient-months"]
    default = show.readable(df, spec=SPEC.resolve(P.validate({}), None))
    assert list(default.columns) == ["scale", "estimate", "referred", "comparison"]
    assert list(default["scale"]) == ["net savings per member ($)",
                                      "difference per 1,000 member-months"]


def test_chart_legends_and_rate_tables_name_the_studys_arms():
    """Two programs compared: every chart legend and the rates table name the programs,
    never 'Self-help referral' (the claims default's own legend)."""
    programs = SPEC.resolve(P.validate({"study": {
        "intervention": "12-step-oriented programs",
        "comparison": "cognitive-behavioral programs", "unit": "patients"}}), None)
    own = ["12-step-oriented programs", "Cognitive-behavioral programs"]
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"group": np.repeat(["self_help", "control"], 200),
                          "er_visits": rng.poisson(1.0, 400),
                          "total_cost": rng.gamma(1.0, 500.0, 400)})
    attrition = pd.DataFrame({"step": ["a", "b"], "self_help_members": [500, 480],
                              "control_members": [900, 880], "total_members": [1400, 1360],
                              "excluded_members": [0, 40]})
    figures = [plots.rate_plot(_rates(), spec=programs)[0].figure,
               plots.visits_distribution_plot(frame, ["er_visits"], spec=programs)[0].figure,
               plots.cost_distribution_plot(frame, spec=programs).figure,
               plots.attrition_plot(attrition, spec=programs).figure]
    for fig in figures:
        legends = [lg for ax in fig.axes for lg in [ax.get_legend()] if lg] + fig.legends
        texts = [t.get_text() for lg in legends for t in lg.get_texts()]
        assert texts and all(any(t.startswith(o) for o in own) for t in texts), texts
    table = show.rates_table(_rates(), spec=programs)
    assert not any("Self-help" in str(c) for c in table.columns)
    assert any(str(c).startswith(own[0]) for c in table.columns)
    default = plots.attrition_plot(attrition).figure
    assert "Self-help referral" in [t.get_text() for ax in default.axes
                                    for lg in [ax.get_legend()] if lg for t in lg.get_texts()]
