"""Group-level comparison of self-help groups by leadership type (Yoak & Chesler 1985).

Published facts used here (as docs/published-figures.md gives them; copied here):
Yoak & Chesler (1985): 50 groups of parents of children with cancer; three leadership
types (run by professional staff, independent of staff, shared leadership); shared
leadership groups were larger, lasted longer and ran more kinds of activities. The paper's
figures are an ordering, not per-type values.
"""
import json
from pathlib import Path

import duckdb
import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.duration.survfunc import survdiff

from evalkit import params as P
from evalkit.analysis.comparisons import compare_groups
from evalkit.data import synthetic_person as sp
from evalkit.data.load import scan_sql
from evalkit.data.person import load_person
from evalkit.errors import ParamsError
from evalkit.survival import logrank
from conftest import assert_structured_records

# Yoak & Chesler 1985 (docs/published-figures.md: "Self-help group organisation")
N_GROUPS = 50
TYPES = ("professional", "independent", "shared")
LARGEST = "shared"      # larger, longer-lasting, more kinds of activities

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "params" / "group_types.yaml"
ROSSI = ROOT / "tests" / "reference" / "data" / "rossi.csv"


# ----------------------------------------------------------------------------- generator
def test_generator_is_seeded_and_deterministic():
    a, b = sp.group_types(seed=11), sp.group_types(seed=11)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    c = sp.group_types(seed=12)
    assert not a.frame["members"].equals(c.frame["members"])


def test_generator_shape_and_truth_ordering():
    d = sp.group_types(seed=5)
    f = d.frame
    assert len(f) == N_GROUPS and set(f["leadership"]) == set(TYPES)
    assert f["group_id"].is_unique
    assert f["members"].min() >= 3 and f["activity_kinds"].between(1, 8).all()
    lat = d.latent
    np.testing.assert_array_equal(f["ended"], (lat["lifetime"] <= lat["age_at_survey"]).astype(int))
    t = d.truth["types"]
    assert sum(v["groups"] for v in t.values()) == N_GROUPS
    for key in ("mean_members", "mean_activity_kinds", "mean_lifetime_months"):
        others = [t[x][key] for x in TYPES if x != LARGEST]
        assert t[LARGEST][key] > max(others), key
    with pytest.raises(ParamsError, match="mean_members must give a value for each type"):
        sp.group_types(groups={"a": 25, "b": 25})


def test_ordering_holds_in_expectation_over_seeds():
    """Averaged over 200 seeds, the per-type means of size and activity kinds approach the
    scenario's expected values (within 4 standard errors of the average of 200 samples)
    and the share of groups ended approaches its expected value."""
    reps = 200
    rows = []
    for s in range(reps):
        f = sp.group_types(seed=s).frame
        rows.append(f.groupby("leadership")[["members", "activity_kinds", "ended"]].mean())
    avg = pd.concat(rows).groupby(level=0).mean()
    sd = pd.concat(rows).groupby(level=0).std()
    t = sp.group_types().truth["types"]
    for typ in TYPES:
        for col, key in (("members", "mean_members"), ("activity_kinds", "mean_activity_kinds"),
                         ("ended", "expected_share_ended")):
            assert abs(avg.loc[typ, col] - t[typ][key]) < 4 * sd.loc[typ, col] / np.sqrt(reps), (typ, col)
    assert avg["members"].idxmax() == LARGEST and avg["activity_kinds"].idxmax() == LARGEST
    assert avg["ended"].idxmin() == LARGEST          # lasted longer: fewer had ended


# ----------------------------------------------------------------------------- k-group log-rank
def _logrank_by_hand(time, status, group):
    """The k-group log-rank statistic from its definition, one event time at a time
    (independent of evalkit's vectorised code): O - E and the hypergeometric covariance,
    summed over event times, then (O - E)' V^-1 (O - E) on the first k - 1 groups."""
    levels = sorted(set(group))
    k = len(levels)
    o_e = np.zeros(k)
    v = np.zeros((k, k))
    for t in sorted(set(time[status == 1])):
        at_risk = np.array([np.sum((time >= t) & (group == g)) for g in levels], float)
        deaths = np.array([np.sum((time == t) & (status == 1) & (group == g)) for g in levels], float)
        n, d = at_risk.sum(), deaths.sum()
        o_e += deaths - d * at_risk / n
        if n > 1:
            for i in range(k):
                for j in range(k):
                    v[i, j] += d * (n - d) / (n - 1) * at_risk[i] / n * ((i == j) - at_risk[j] / n)
    u = o_e[:-1]
    return float(u @ np.linalg.solve(v[:-1, :-1], u)), k - 1


def test_k_group_logrank_on_rossi_with_three_prior_arrest_bands():
    """Reference: Rossi recidivism data (tests/reference/data/rossi.csv), grouped by prior
    convictions 0 / 1-3 / 4+ (a grouping defined here). No R survdiff value is stored for
    this case, so the statistic is compared with statsmodels' survdiff
    (statsmodels.duration.survfunc.survdiff, statsmodels 0.15.0, log-rank weights) and with
    the by-hand computation above, to 1e-10 relative. R's survdiff on the same grouping
    (survdiff(Surv(week, arrest) ~ cut(prio, c(-1, 0, 3, 100)), rossi)) would be the
    external check to add when R is available."""
    d = pd.read_csv(ROSSI)
    d["prio_band"] = pd.cut(d["prio"], [-1, 0, 3, 100], labels=["none", "1-3", "4+"]).astype(str)
    lr = logrank(d, "week", "arrest", "prio_band")
    chisq, p_value = survdiff(d["week"].to_numpy(), d["arrest"].to_numpy(), d["prio_band"].to_numpy())
    assert lr.df == 2
    assert lr.chisq == pytest.approx(float(chisq), rel=1e-10)
    assert lr.p_value == pytest.approx(float(p_value), rel=1e-9)
    hand, df = _logrank_by_hand(d["week"].to_numpy(float), d["arrest"].to_numpy(float),
                                d["prio_band"].to_numpy())
    assert lr.chisq == pytest.approx(hand, rel=1e-10) and df == lr.df
    assert lr.groups["observed"].sum() == d["arrest"].sum()
    assert lr.groups["expected"].sum() == pytest.approx(d["arrest"].sum())


def test_k_group_logrank_tiny_example_by_hand():
    """Three groups, six subjects: A = 1, 3; B = 2, 4+; C = 3, 5.
    t=1: n=(2,2,2), d=(1,0,0); t=2: n=(1,2,2), d=(0,1,0); t=3: n=(1,1,2), d=(1,0,1), n=4;
    t=5: n=(0,0,1), d=(0,0,1). O = (2,1,2); E_A = 1/3 + 1/5 + 2*(1/4) = 31/30."""
    df = pd.DataFrame({"t": [1, 3, 2, 4, 3, 5], "e": [1, 1, 1, 0, 1, 1], "g": list("AABBCC")})
    lr = logrank(df, "t", "e", "g")
    tab = lr.groups.set_index("group")
    assert list(tab["observed"]) == [2, 1, 2]
    assert tab.loc["A", "expected"] == pytest.approx(31 / 30, rel=1e-12)
    hand, _ = _logrank_by_hand(df["t"].to_numpy(float), df["e"].to_numpy(float), df["g"].to_numpy())
    assert lr.chisq == pytest.approx(hand, rel=1e-12)


# ----------------------------------------------------------------------------- compare_groups
def test_compare_groups_tests_match_scipy_and_suppress_people():
    f = sp.group_types(seed=3).frame
    g = compare_groups(f, "leadership", ["members", "activity_kinds"], "lifetime_months", "ended",
                       people="members")
    t = g.tests.set_index("outcome")
    for col in ("members", "activity_kinds"):
        xs = [f.loc[f["leadership"] == lv, col] for lv in sorted(TYPES)]
        assert t.loc[col, "anova_f"] == pytest.approx(stats.f_oneway(*xs).statistic, rel=1e-12)
        assert t.loc[col, "kruskal_p"] == pytest.approx(stats.kruskal(*xs).pvalue, rel=1e-12)
    assert g.logrank.df == 2 and g.hazard_ratios.shape[0] == 3
    # a pairwise HR not against the reference level (from the coefficients' difference and
    # covariance) equals the same factor model refitted with the other level as reference
    from evalkit.survival import cox
    refit = cox(f, "C(leadership, Treatment(reference='professional'))", "lifetime_months",
                "ended").table
    row = refit[refit["term"].str.endswith("shared")].iloc[0]
    hr = g.hazard_ratios.set_index("contrast").loc["shared vs professional"]
    assert hr["hazard_ratio"] == pytest.approx(row["hazard_ratio"], rel=1e-8)
    assert hr["std_error"] == pytest.approx(row["std_error"], rel=1e-6)
    assert g.suppression.n_suppressed == 0

    # a kind of group with fewer than 11 people in all: its people count is hidden, with
    # a complementary cell, and the mean size and the differences that would give it back
    small = f.copy()
    idx = small.index[small["leadership"] == "independent"][:]
    small = small.drop(idx[2:])                                 # two independent groups left
    small.loc[idx[:2], "members"] = [3, 4]
    with pytest.warns(Warning, match="fewer than 3 units"):
        g2 = compare_groups(small, "leadership", ["members", "activity_kinds"], people="members")
    people = g2.people.set_index("group")
    assert people.loc["independent", "people"] == "*"
    assert (people["people"] == "*").sum() == 2                  # plus one complementary cell
    assert people.loc["independent", "units"] == 2               # groups are not people
    d = g2.describe.set_index(["outcome", "group"])
    assert np.isnan(d.loc[("members", "independent"), "mean"])
    assert not np.isnan(d.loc[("activity_kinds", "independent"), "mean"])
    assert not any("independent" in c for c in g2.pairwise.query("outcome == 'members'")["contrast"])
    assert not any(r.outcome == "members" and "independent" in str(r.contrast)
                   for r in g2.effects.itertuples())


# ----------------------------------------------------------------------------- params + loading
GROUPS = {"mode": "person", "data": {"source": "synthetic", "scenario": "group_types",
                                     "person": {"groups": "leadership",
                                                "outcomes": ["members", "activity_kinds"],
                                                "duration": "lifetime_months", "event": "ended",
                                                "people": "members"}},
          "workbooks": ["group_comparison"]}


def test_person_params_for_k_groups():
    p = P.validate(GROUPS)
    assert p.data.person.treatment is None and p.data.person.groups == "leadership"
    assert P.load(PARAMS_FILE).data.person.people == "members"
    with pytest.raises(ParamsError, match="compare two arms and need data.person.treatment"):
        P.validate({**GROUPS, "workbooks": ["data_quality", "group_comparison"]})
    with pytest.raises(ParamsError, match="`treatment` .* or `groups`"):
        P.validate({**GROUPS, "data": {**GROUPS["data"], "person": {"outcomes": ["members"],
                                                                     "path": "x.csv"}}})
    two_arm = {"mode": "person", "data": {"person": {"path": "x.csv", "treatment": "arm",
                                                     "outcomes": ["visits"]}},
               "workbooks": ["group_comparison"]}
    with pytest.raises(ParamsError, match="needs data.person.groups"):
        P.validate(two_arm)
    # the two-arm person mode is unchanged
    assert P.validate({**two_arm, "workbooks": ["utilization"]}).data.person.groups is None


def test_load_person_keeps_a_k_level_group_column(tmp_path):
    f = tmp_path / "g.csv"
    f.write_text("gid,kind,size,life,stopped\n10,a,5,12,1\n11,b,8,30,0\n12,c,6,4,1\n13,,7,9,1\n")
    con = duckdb.connect()
    load_person(con, scan_sql(str(f)), None, None, ["size"], None, [], "gid",
                duration="life", event="stopped", groups="kind")
    cols = [r[0] for r in con.execute("DESCRIBE persons").fetchall()]
    assert "group" not in cols and {"kind", "size", "life", "stopped"} <= set(cols)
    assert con.execute("SELECT list(kind ORDER BY member_id) FROM persons").fetchall()[0][0] == ["a", "b", "c"]
    assert con.execute("SELECT reason FROM quarantine").fetchall() == [("missing_value",)]


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def run(shared_runs):
    """The shipped params file, run as a public release: every output is scanned for
    small counts of people (counts of groups are labelled as such and pass). The
    session's run of it (tests/shared_runs.py)."""
    return shared_runs.params_file("group_types")


def test_params_file_end_to_end(run):
    out = run.output_dir
    res = json.loads(run.results_path.read_text())
    assert res["run"]["status"] == "ok" and res["run"]["privacy"]["ok"]
    assert_structured_records(res)
    for name in ("12_group_comparison.ipynb", "12_group_comparison.html"):
        assert (out / name).is_file()
    done = nbformat.read(out / "12_group_comparison.ipynb", as_version=4)
    assert sum("image/png" in o.get("data", {}) for c in done.cells if c.cell_type == "code"
               for o in c.get("outputs", [])) >= 2            # a chart per outcome + the curves
    people = {r["group"]: r for r in res["tables"]["group_comparison.people"]}
    assert set(people) == set(TYPES) and sum(r["units"] for r in people.values()) == N_GROUPS
    est = [e for e in res["estimates"] if e["workbook"] == "group_comparison"]
    means = {(e["outcome"], e["contrast"]): e for e in est if e["scale"] == "mean"}
    for outcome in ("members", "activity_kinds"):
        for typ in TYPES:
            e = means[(outcome, typ)]
            assert e["ci_low"] < e["estimate"] < e["ci_high"]
    # the published ordering: shared-leadership groups larger, with more kinds of activity
    for outcome in ("members", "activity_kinds"):
        assert max(TYPES, key=lambda t: means[(outcome, t)]["estimate"]) == LARGEST
    # ... and lasting longer: a lower hazard of ending than each other type
    hrs = {e["contrast"]: e for e in est if e["scale"] == "hazard_ratio"}
    assert len(hrs) == 3
    for other in ("professional", "independent"):
        assert hrs[f"shared vs {other}"]["estimate"] < 1
    tests = {r["outcome"]: r for r in res["tables"]["group_comparison.tests"]}
    assert tests["members"]["anova_df1"] == 2 and tests["members"]["anova_df2"] == N_GROUPS - 3
    lr = res["tables"]["group_comparison.logrank"]
    assert sum(r["groups"] for r in lr) == N_GROUPS


def test_lifetime_tables_label_groups_or_suppress_people():
    f = sp.group_types(seed=3).frame
    as_groups = compare_groups(f, "leadership", ["activity_kinds"], "lifetime_months", "ended",
                               people="members").publishable()
    assert {"groups_at_risk", "groups_ended"} <= set(as_groups["still_running_at"].columns)
    assert "groups" in as_groups["logrank"].columns
    # the same rows read as people: counts below 11 at risk are hidden with their survival
    as_people = compare_groups(f, "leadership", ["activity_kinds"], "lifetime_months",
                               "ended").publishable()
    at = as_people["still_running_at"]
    assert "n_event" not in at.columns
    small = at["n_risk"].apply(lambda v: v == "*")
    assert small.any() and (at.loc[small, "survival"] == "*").all()
    shown = at.loc[~small, "n_risk"].astype(int)
    assert ((shown == 0) | (shown >= 11)).all()
