"""Complementary disclosure across tables and along relations that are not a row or a
column: planted cases whose answers can be worked out by hand."""
import pandas as pd
import pytest

from evalkit.privacy import PrivacyError, suppress, suppress_together
from evalkit.report import tables


def _recovered(published: pd.DataFrame, truth: pd.DataFrame, col_total) -> bool:
    """Whether some hidden count equals the column total minus the visible ones."""
    shown = pd.to_numeric(published.drop(index=col_total)["members"], errors="coerce")
    hidden = shown.isna()
    return hidden.sum() == 1 and truth.loc[col_total, "members"] - shown.sum() == \
        truth.loc[hidden, "members"].iloc[0]


def test_an_arm_hidden_in_one_table_is_hidden_where_its_count_is_repeated():
    # 8 self-help members: hidden; 412 comparison members: hidden as its complement (else
    # 420 - 412 = 8). The estimates table repeats 412 as n_control: hidden there too.
    arms = pd.DataFrame({"members": [8, 412, 420]}, index=["self_help", "control", "all"])
    est = pd.DataFrame({"n_treated": [8, 30], "n_control": [412, 412], "rr": [0.8, 0.9]},
                       index=["er", "cost"])
    alone = suppress(est, ["n_treated", "n_control"], protect_rows=False,
                     derived={"rr": ["n_treated", "n_control"]})
    assert alone.table.loc["cost", "n_control"] == 412        # on its own it would show it
    res = suppress_together(
        {"arms": {"table": arms, "count_columns": "members", "col_total": "all"},
         "est": {"table": est, "count_columns": ["n_treated", "n_control"],
                 "protect_rows": False, "derived": {"rr": ["n_treated", "n_control"]}}},
        links=[[("arms", "control", "members"), ("est", "er", "n_control"),
                ("est", "cost", "n_control")]])
    assert list(res["arms"].table["members"]) == ["*", "*", 420]
    assert list(res["est"].table["n_control"]) == ["*", "*"]
    assert res["est"].table.loc["cost", "rr"] == "*"               # computed from it
    assert res["est"].table.loc["cost", "n_treated"] == 30
    rules = res["est"].report.set_index(["row", "column"])["rule"]
    assert rules[("cost", "n_control")] == "linked" and rules[("er", "n_treated")] == "primary"


def test_a_count_hidden_in_the_second_table_is_hidden_in_the_first():
    # the estimates hide n_control = 9; the arms table shows the same 9 unless linked
    arms = pd.DataFrame({"members": [300, 409, 709]}, index=["self_help", "control", "all"])
    est = pd.DataFrame({"n_treated": [300], "n_control": [9]}, index=["subgroup"])
    links = [[("arms", "self_help", "members"), ("est", "subgroup", "n_treated")]]
    res = suppress_together(
        {"arms": {"table": arms, "count_columns": "members", "col_total": "all"},
         "est": {"table": est, "count_columns": ["n_treated", "n_control"]}}, links)
    # the row relation of the estimates hides 300 as 9's complement; linked, the arms
    # table hides it and (300 = 709 - 409) its own complement
    assert list(res["est"].table.loc["subgroup"]) == ["*", "*"]
    assert list(res["arms"].table["members"]) == ["*", "*", 709]
    assert not _recovered(res["arms"].table, arms, "all")


def test_links_must_join_the_same_count():
    a = pd.DataFrame({"n": [20, 30]}, index=["x", "y"])
    b = pd.DataFrame({"n": [21]}, index=["x"])
    with pytest.raises(PrivacyError, match="different counts"):
        suppress_together({"a": {"table": a, "count_columns": "n"},
                           "b": {"table": b, "count_columns": "n"}},
                          [[("a", "x", "n"), ("b", "x", "n")]])
    with pytest.raises(PrivacyError, match="not one cell"):
        suppress_together({"a": {"table": a, "count_columns": "n"}}, [[("a", "z", "n")]])


def test_attrition_exclusions_are_protected_by_their_relation():
    """Members before a step = members after it + those excluded; 3 excluded at the
    second step cannot be read as 1,000 - 997 once the relations are given."""
    att = pd.DataFrame({"total": [1000, 997, 950], "excluded": [0, 3, 47]},
                       index=["enrolled", "index date", "follow-up"])
    rel = [([("index date", "total"), ("index date", "excluded")], ("enrolled", "total")),
           ([("follow-up", "total"), ("follow-up", "excluded")], ("index date", "total"))]
    res = suppress(att, ["total", "excluded"], protect_rows=False, relations=rel)
    # 3 hidden; then 997 (else 1,000 - 997) and 47 (else 997 = 950 + 47 gives 997 back):
    # a + b = 1,000 and a = 950 + c leave one degree of freedom, so none is fixed
    assert res.table["total"].tolist() == [1000, "*", 950]
    assert res.table["excluded"].tolist() == [0, "*", "*"]
    plain = suppress(att, ["total", "excluded"], protect_rows=False)
    assert plain.table.loc["index date", "total"] == 997            # without: 1000 - 997
    with pytest.raises(PrivacyError, match="not one count cell"):
        suppress(att, ["total"], relations=[([("enrolled", "excluded")], None)])


def test_brief_tables_hide_an_arm_size_wherever_it_is_shown():
    """A public brief: the cohort table and every estimates table agree on what is hidden."""
    surv = [{"group": g, "time": t, "n_risk": n, "n_event": e, "survival": 0.9,
             "ci_low": 0.8, "ci_high": 0.95}
            for g, t, n, e in (("self_help", 0, 8, 0), ("control", 0, 640, 0),
                               ("control", 30, 600, 40))]
    results = {"tables": {"data_quality.attrition": [
        {"step": "all", "self_help_members": 8, "control_members": 640}],
        "time_to_event.survival_at": surv}}
    est = pd.DataFrame({"workbook": ["utilization", "utilization", "costs"],
                        "outcome": ["er", "outpatient_mh", "cost"], "method": ["nb"] * 3,
                        "scale": ["rate_ratio", "rate_ratio", "cost_difference"],
                        "estimate": [0.8, 1.1, -120.0], "ci_low": [0.6, 0.9, -300.0],
                        "ci_high": [1.0, 1.3, 60.0], "p_value": [0.04, 0.3, 0.2],
                        "n_treated": [8, 8, 8], "n_control": [640, 640, 640]})
    kw = {"public": True, "min_cell": 11}
    linked = tables.linked_cells(results, est, **kw)
    cohort = tables.cohort_table(results, est, hide=linked.get("cohort", ()), **kw)
    assert list(cohort.frame["members"]) == ["*", "*", "648"]
    for t in tables.estimate_tables(est, "research", linked=linked, **kw):
        assert set(t.frame["n comparison"]) == {"*"}, t.key
        assert set(t.frame["estimate"]) == {"*"}
    # the number at risk on day 0 is the arm's size again: hidden; day 30 is not
    s = tables.survival_table(results, hide=linked.get("survival", ()), **kw).frame
    assert s["n at risk"].tolist() == ["*", "*", "600"]
    # the plan leaders' brief shows neither table: its cohort table is linked to nothing
    assert tables.linked_cells(results, est, audience="hmo", **kw) == {"cohort": []}
    # not public: nothing hidden, nothing linked
    assert tables.linked_cells(results, est, public=False, min_cell=11) == {}
    shown = tables.cohort_table(results, est, public=False, min_cell=11)
    assert list(shown.frame["members"]) == ["8", "640", "648"]
