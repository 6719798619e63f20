"""Publishing safety: small-cell suppression, secret redaction and the output scan.

No R reference applies here: the expected tables below are worked out by hand from the
rules (CMS cell-size policy: counts 1..10 hidden, plus complementary cells), and the
protection itself is checked by an independent "intruder": exhaustive enumeration for
small tables, and a linear programme (the bounds an intruder can compute from the
visible cells, the margins and non-negativity) for the rest.
"""
import json
import os
import stat

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from evalkit.errors import EvalkitError
from evalkit.privacy import (DisclosureError, PrivacyError, ScanReport, redact_notebook,
                             redact_params, scan_outputs, suppress)


# ----------------------------------------------------------------------------- helpers
def _relations(table, cols, row_total, col_total, rows=True, columns=True):
    """Additive relations of a margin table as lists of (cells, total_cell)."""
    body = [i for i in table.index if i != col_total]
    rel = []
    if rows:
        for i in table.index:
            rel.append(([(i, c) for c in cols], (i, row_total)))
    if columns:
        for c in cols + [row_total]:
            rel.append(([(i, c) for i in body], (col_total, c)))
    return rel


def _feasible_values(table, mask, cols, row_total, col_total):
    """Brute force: every assignment of non-negative integers to the hidden cells that
    agrees with the visible cells and all margins. Returns {cell: set of values}."""
    rel = _relations(table, cols, row_total, col_total)
    hidden = [(i, c) for c in cols + [row_total] for i in table.index if mask.loc[i, c]]
    grand = int(table.loc[col_total, row_total])
    seen = {h: set() for h in hidden}
    pos = {h: k for k, h in enumerate(hidden)}
    # a relation is checked as soon as all its hidden cells are assigned
    checks = {k: [] for k in range(len(hidden))}
    for cells, tot in rel:
        ks = [pos[x] for x in cells + [tot] if x in pos]
        if ks:
            checks[max(ks)].append((cells, tot))
    vals = [0] * len(hidden)
    # a cell is at most what its relation leaves once the visible cells are taken off
    bound = {h: grand for h in hidden}
    for cells, tot in rel:
        if tot not in pos:
            rest = int(table.loc[tot]) - sum(int(table.loc[x]) for x in cells if x not in pos)
            for x in cells:
                if x in pos:
                    bound[x] = min(bound[x], rest)

    def value(x):
        return vals[pos[x]] if x in pos else int(table.loc[x[0], x[1]])

    # when cell k is the last unassigned hidden cell of a relation, that relation fixes it
    forced = {}
    for cells, tot in rel:
        ks = [pos[x] for x in cells + [tot] if x in pos]
        if ks and max(ks) not in forced:
            forced[max(ks)] = (cells, tot)

    def go(k):
        if k == len(hidden):
            for h in hidden:
                seen[h].add(vals[pos[h]])
            return
        choices = range(bound[hidden[k]] + 1)
        if k in forced:
            cells, tot = forced[k]
            vals[k] = 0
            gap = value(tot) - sum(value(x) for x in cells)
            # the cell is +1 in the sum (a member) or -1 (the total)
            v = gap if hidden[k] in cells else -gap
            choices = [v] if 0 <= v <= bound[hidden[k]] else []
        for v in choices:
            vals[k] = v
            if all(sum(value(x) for x in cells) == value(tot) for cells, tot in checks[k]):
                go(k + 1)
    go(0)
    return seen


def _intruder_bounds(values, mask, rels):
    """Smallest and largest value of each hidden cell given the visible cells, the
    relations and non-negativity (linear programme; for two-way tables with margins the
    bounds are attained by integer tables). ``values``/``mask`` are dicts by cell."""
    hidden = [c for c, m in mask.items() if m]
    pos = {c: k for k, c in enumerate(hidden)}
    a_eq, b_eq = [], []
    for cells, tot in rels:
        row = np.zeros(len(hidden))
        rhs = 0.0
        for c in cells:
            if c in pos:
                row[pos[c]] += 1
            else:
                rhs -= values[c]
        if tot is None:
            rhs += sum(values[c] for c in cells)   # total known from elsewhere
        elif tot in pos:
            row[pos[tot]] -= 1
        else:
            rhs += values[tot]
        if row.any():
            a_eq.append(row)
            b_eq.append(rhs)
    out = {}
    for c, k in pos.items():
        obj = np.zeros(len(hidden))
        obj[k] = 1
        lo = linprog(obj, A_eq=np.array(a_eq), b_eq=b_eq, bounds=(0, None)).fun
        hi = -linprog(-obj, A_eq=np.array(a_eq), b_eq=b_eq, bounds=(0, None)).fun
        out[c] = (lo, hi)
    return out


def _margins(body: pd.DataFrame) -> pd.DataFrame:
    t = body.copy()
    t["Total"] = t.sum(axis=1)
    t.loc["Total"] = t.sum(axis=0)
    return t


# ----------------------------------------------------------------------------- suppress
def test_single_small_cell_forces_row_then_column_complements():
    # Worked by hand. r1/A = 5 < 11 is primary. Row r1: the next smallest count is
    # B = 20 -> hidden. Column A now has one hidden cell (r1): next smallest 25 (r2).
    # Column B likewise: 40 (r2). Row r2 then has two hidden cells: stable.
    t = _margins(pd.DataFrame({"A": [5, 25, 30], "B": [20, 40, 50], "C": [30, 35, 60]},
                              index=["r1", "r2", "r3"]))
    before = t.copy()
    res = suppress(t, ["A", "B", "C"], row_total="Total", col_total="Total")
    pd.testing.assert_frame_equal(t, before)                       # input untouched
    expect_hidden = {("r1", "A"), ("r1", "B"), ("r2", "A"), ("r2", "B")}
    got = {(r, c) for r in t.index for c in t.columns if res.mask.loc[r, c]}
    assert got == expect_hidden
    rules = {(r.row, r.column): r.rule for r in res.report.itertuples()}
    assert rules == {("r1", "A"): "primary", ("r1", "B"): "complementary",
                     ("r2", "A"): "complementary", ("r2", "B"): "complementary"}
    assert "row 'r1'" in res.report.set_index(["row", "column"]).loc[("r1", "B"), "reason"]
    assert "column 'A'" in res.report.set_index(["row", "column"]).loc[("r2", "A"), "reason"]
    assert res.table["A"].dtype == object and res.table.loc["r1", "A"] == "*"
    assert res.table["C"].dtype == t["C"].dtype                     # untouched column
    assert res.table.loc["r3", "A"] == 30 and res.table.loc["Total", "Total"] == 295
    table, report = res                                            # unpacks
    assert table is res.table and report is res.report
    # brute force: every hidden cell has more than one value consistent with what is shown
    feasible = _feasible_values(t, res.mask, ["A", "B", "C"], "Total", "Total")
    assert all(len(v) > 1 for v in feasible.values())
    assert 5 in feasible[("r1", "A")]


def test_small_cell_in_the_margin_and_a_second_row():
    # Worked by hand: x/B = 3 and y/B = 4 are both primary; column B then holds two
    # hidden cells but rows x and y one each -> their next smallest counts (x/A = 12,
    # y/C = 13) are hidden; those make columns A and C singletons -> the next smallest
    # in column A is y/A = 20, in column C x/C = 30. Rows x and y are then hidden
    # entirely except their totals; row z and the margins stay visible.
    body = pd.DataFrame({"A": [12, 20, 40], "B": [3, 4, 50], "C": [30, 13, 45]},
                        index=["x", "y", "z"])
    t = _margins(body)
    res = suppress(t, ["A", "B", "C"], row_total="Total", col_total="Total")
    got = {(r, c) for r in t.index for c in t.columns if res.mask.loc[r, c]}
    assert got == {("x", "A"), ("x", "B"), ("x", "C"), ("y", "A"), ("y", "B"), ("y", "C")}
    feasible = _feasible_values(t, res.mask, ["A", "B", "C"], "Total", "Total")
    assert all(len(v) > 1 for v in feasible.values())


def test_no_small_cells_is_unchanged():
    t = _margins(pd.DataFrame({"A": [15, 25], "B": [0, 40]}, index=["x", "y"]))
    res = suppress(t, ["A", "B"], row_total="Total", col_total="Total")
    pd.testing.assert_frame_equal(res.table, t)
    assert res.report.empty and not res.mask.to_numpy().any()
    assert res.n_suppressed == 0 and "no cell" in res.summary()


def test_zero_shown_by_default_and_optionally_suppressed():
    t = pd.DataFrame({"treated": [0, 30, 44], "control": [25, 0, 41]}, index=list("abc"))
    assert suppress(t, ["treated", "control"]).report.empty        # CMS: zero is allowed
    res = suppress(t, ["treated", "control"], suppress_zero=True)
    primary = res.report.query("rule == 'primary'")
    assert set(zip(primary.row, primary.column)) == {("a", "treated"), ("b", "control")}
    # rows are protected without a total column (row totals assumed known elsewhere)
    assert res.mask.sum(axis=1).tolist() == [2, 2, 0]


def test_zero_is_not_chosen_as_complement_when_a_count_is_left():
    # row: 4 (primary), 0, 30 -> hiding the zero would leave 4 = total - 30 nearly exact
    t = pd.DataFrame({"a": [4, 20], "b": [0, 25], "c": [30, 35]}, index=["x", "y"])
    res = suppress(t, ["a", "b", "c"])
    assert res.mask.loc["x"].tolist() == [True, False, True]


def test_derived_percentages_hidden_with_their_count():
    t = pd.DataFrame({"n_treated": [4, 60, 36], "n_control": [22, 55, 23]},
                     index=["er", "ip", "op"])
    t["pct_treated"] = 100 * t["n_treated"] / 100
    t["pct_control"] = 100 * t["n_control"] / 100
    res = suppress(t, ["n_treated", "n_control"],
                   derived={"pct_treated": "n_treated", "pct_control": "n_control"},
                   marker="<11")
    assert res.table.loc["er"].tolist() == ["<11", "<11", "<11", "<11"]
    assert res.table.loc["ip", "pct_treated"] == 60.0
    derived = res.report.query("rule == 'derived'")
    assert set(derived.column) == {"pct_treated", "pct_control"}
    reason = derived.set_index("column").loc["pct_treated", "reason"]
    assert "suppressed count in 'n_treated'" in reason


def test_derived_from_a_hidden_denominator():
    # the total of row x is itself small: a share of it would give the total back
    t = pd.DataFrame({"a": [3, 40], "b": [5, 30]}, index=["x", "y"])
    t["total"] = t.sum(axis=1)
    t["share_a"] = t["a"] / t["total"]
    res = suppress(t, ["a", "b"], row_total="total", derived={"share_a": ["a", "total"]})
    assert res.mask.loc["x"].all() and not res.mask.loc["y"].any()


def test_crosstab_with_margins_all():
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"age": rng.choice(["18-34", "35-54", "55-64", "65+"], 400,
                                         p=[0.4, 0.35, 0.22, 0.03]),
                       "arm": rng.choice(["self_help", "control"], 400)})
    ct = pd.crosstab(df.age, df.arm, margins=True)
    res = suppress(ct, ["control", "self_help"], row_total="All", col_total="All")
    assert res.mask.loc["65+", "control"] or res.mask.loc["65+", "self_help"]
    cells = ["control", "self_help", "All"]
    values = {(i, c): float(ct.loc[i, c]) for i in ct.index for c in cells}
    mask = {(i, c): bool(res.mask.loc[i, c]) for i in ct.index for c in cells}
    bounds = _intruder_bounds(values, mask, _relations(ct, ["control", "self_help"], "All", "All"))
    assert all(hi - lo >= 1 for lo, hi in bounds.values())


def test_bridge_between_two_blocks_is_caught():
    # Primary cells alone form two 2x2 blocks joined by one cell (x1/C): every row and
    # column holds 0 or >= 2 hidden cells, yet x1/C is fixed by the margins (it is a
    # bridge of the hidden-cell graph). The exact check must add a complement.
    body = pd.DataFrame({"A": [3, 4, 50, 60], "B": [5, 6, 55, 65],
                         "C": [7, 70, 8, 9], "D": [80, 75, 2, 3]},
                        index=["x1", "x2", "x3", "x4"])
    t = _margins(body)
    cols = ["A", "B", "C", "D"]
    values = {(i, c): float(t.loc[i, c]) for i in t.index for c in cols + ["Total"]}
    rels = _relations(t, cols, "Total", "Total")
    primary_only = {k: 0 < v < 11 for k, v in values.items()}
    lo, hi = _intruder_bounds(values, primary_only, rels)[("x1", "C")]
    assert hi - lo < 1e-9                                 # the pattern really leaks x1/C
    res = suppress(t, cols, row_total="Total", col_total="Total")
    mask = {k: bool(res.mask.loc[k]) for k in values}
    assert sum(mask.values()) > sum(primary_only.values())
    assert any("combining rows and columns" in r for r in res.report.reason)
    bounds = _intruder_bounds(values, mask, rels)
    assert all(h - lo_ >= 1 for lo_, h in bounds.values())


def test_random_tables_leave_nothing_recoverable():
    rng = np.random.default_rng(20240611)
    for _ in range(25):
        r, c = rng.integers(2, 5), rng.integers(2, 5)
        raw = rng.choice([0, 1, 2, 5, 8, 10, 11, 14, 25, 40, 90], size=(r, c),
                         p=[.05, .05, .05, .1, .05, .05, .05, .1, .2, .15, .15])
        t = _margins(pd.DataFrame(raw, index=[f"r{i}" for i in range(r)],
                                  columns=[f"c{j}" for j in range(c)]))
        cols = [f"c{j}" for j in range(c)]
        try:
            res = suppress(t, cols, row_total="Total", col_total="Total")
        except PrivacyError:
            continue   # a table that cannot be protected is refused, not published
        values = {(i, k): float(t.loc[i, k]) for i in t.index for k in cols + ["Total"]}
        mask = {key: bool(res.mask.loc[key]) for key in values}
        assert all(mask[k] for k, v in values.items() if 0 < v < 11)
        for cells, tot in _relations(t, cols, "Total", "Total"):
            assert sum(mask[x] for x in cells + [tot]) != 1
        bounds = _intruder_bounds(values, mask, _relations(t, cols, "Total", "Total"))
        for key, (lo, hi) in bounds.items():
            assert hi - lo > 1e-6, (key, t)


def test_columns_protected_without_total_row_when_asked():
    t = pd.DataFrame({"n": [4, 30, 50]}, index=["a", "b", "c"])
    assert suppress(t, "n").mask["n"].tolist() == [True, False, False]
    res = suppress(t, "n", protect_columns=True)          # N published elsewhere
    assert res.mask["n"].tolist() == [True, True, False]


def test_suppress_bad_input():
    t = pd.DataFrame({"a": [3, 20], "b": ["x", "y"], "c": [-1, 5]}, index=["x", "y"])
    with pytest.raises(PrivacyError, match="not in the table"):
        suppress(t, ["zz"])
    with pytest.raises(PrivacyError, match="not numeric"):
        suppress(t, ["a", "b"])
    with pytest.raises(PrivacyError, match="negative count"):
        suppress(t, ["a", "c"])
    with pytest.raises(PrivacyError, match="col_total"):
        suppress(t, ["a"], col_total="Total")
    with pytest.raises(PrivacyError, match="min_cell"):
        suppress(t, ["a"], min_cell=0)
    with pytest.raises(PrivacyError, match="derived column"):
        suppress(t, ["a"], derived={"pct": "a"})
    # a hidden count whose row has nothing else to hide (only missing values) is refused
    with pytest.raises(PrivacyError, match="no other visible count"):
        suppress(pd.DataFrame({"n": [4, 30], "k": [np.nan, np.nan]}), ["n", "k"])
    assert issubclass(PrivacyError, EvalkitError)
    # one count column with its row total: the total is the same small count, so hidden too
    one = pd.DataFrame({"n": [np.nan, 4], "total": [np.nan, 4]})
    assert suppress(one, ["n"], row_total="total").mask.loc[1].all()


# ----------------------------------------------------------------------------- redaction
def test_redact_params_nested_and_case_insensitive():
    params = {
        "title": "x",
        "data": {"source": "duckdb", "DB_Password": "Pa55&word\"1", "key_column": "member_id",
                 "database": "postgresql://ana:p%40ss@db.example.org/claims",
                 "warehouse": {"apiToken": "tok-123456", "token_count": 5,
                               "credentials": {"user": "svc", "secret": "zzz-top"}}},
        "extra": [{"connection_url": "snowflake://u:pw123@acct"}, {"Secret_Key": None}],
    }
    before = json.loads(json.dumps(params))
    red, secrets = redact_params(params)
    assert params == before                                          # not modified
    assert red["data"]["DB_Password"] == "***"
    assert red["data"]["key_column"] == "member_id"                 # not a secret key
    assert red["data"]["warehouse"]["apiToken"] == "***"
    assert red["data"]["warehouse"]["token_count"] == 5
    assert red["data"]["warehouse"]["credentials"] == "***"
    assert red["data"]["database"] == "postgresql://ana:***@db.example.org/claims"
    assert red["extra"][0]["connection_url"] == "***"
    assert red["extra"][1]["Secret_Key"] is None                     # nothing to hide
    assert {"Pa55&word\"1", "tok-123456", "svc", "zzz-top", "p%40ss", "p@ss",
            "snowflake://u:pw123@acct", "pw123"} == set(secrets)
    red2, s2 = redact_params({"Password": "a"}, secret_keys=("password",))
    assert red2 == {"Password": "***"} and s2 == ["a"]
    with pytest.raises(PrivacyError):
        redact_params(["not", "a", "mapping"])


def _executed_notebook(secret, member_id="100234567", small=4, date="2023-05-07"):
    """A notebook shaped like a papermill-executed workbook."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": {"params_path": "p.json", "db_password": secret},
                                "default_parameters": {}}
    params = nbformat.v4.new_code_cell('params_path = "params.json"')
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell(f'# Parameters\nparams_path = "p.json"\n'
                                         f'db_password = "{secret}"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    table = pd.DataFrame({"n_treated": [small, 120], "n_control": [30, 140]},
                         index=pd.Index(["er", "ip"], name="outcome"))
    show = nbformat.v4.new_code_cell("rates")
    show.outputs = [nbformat.v4.new_output("execute_result", execution_count=3,
                                           data={"text/html": table.to_html(),
                                                 "text/plain": table.to_string()})]
    printed = nbformat.v4.new_code_cell("print(row)")
    printed.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                              text=f"first claim: member {member_id} seen on "
                                                   f"{date}\n"),
                       nbformat.v4.new_output("display_data",
                                              data={"image/png": "iVBORw0KGgo+12345/AAAA"})]
    printed.metadata["note"] = "checked by analyst"
    nb.cells = [nbformat.v4.new_markdown_cell("# Rates"), params, injected, show, printed]
    return nb


@pytest.fixture
def planted(tmp_path):
    """A fake output folder with a member id, a date of service, a secret and a small
    cell planted in each kind of file."""
    out = tmp_path / "run"
    out.mkdir()
    secret = "hunter2-S3cret!"
    nbformat.write(_executed_notebook(secret), out / "01_rates.ipynb")
    (out / "01_rates.html").write_text(
        "<html><body><p>Report for 07/05/2023 (not a service date) and May 7, 2023.</p>"
        "<img src='data:image/png;base64,AAAA+555123456/BBBB'>"
        "<table><thead><tr><th></th><th>arm</th><th>members</th><th>rate_per_1000</th>"
        "</tr></thead><tbody><tr><th>0</th><td>self_help</td><td>7</td><td>3.0</td></tr>"
        "<tr><th>1</th><td>control</td><td>1,250</td><td>5.0</td></tr></tbody></table>"
        "<p>member 555123456</p></body></html>")
    (out / "results.json").write_text(json.dumps({
        "run": {"params": {"data": {"password_hint": f"was {secret}"}}},
        "estimates": [{"outcome": "er_visits", "n_treated": 5, "n_control": 400,
                       "note": "largest cost: member 700100200 on 2023-08-09T00:00:00"}]}))
    return out, secret


def test_scan_finds_everything_planted(planted):
    out, secret = planted
    rep = scan_outputs(out, member_ids=[100234567, "555123456", 700100200],
                       dates_of_service=["2023-05-07", pd.Timestamp("2023-08-09")],
                       secrets=[secret])
    assert isinstance(rep, ScanReport) and not rep.ok
    df = rep.to_frame()
    found = set(zip(df.file, df.kind))
    assert {("01_rates.ipynb", "member_id"), ("01_rates.ipynb", "date_of_service"),
            ("01_rates.ipynb", "secret"), ("01_rates.ipynb", "small_cell"),
            ("01_rates.html", "member_id"), ("01_rates.html", "date_of_service"),
            ("01_rates.html", "small_cell"), ("results.json", "member_id"),
            ("results.json", "date_of_service"), ("results.json", "secret"),
            ("results.json", "small_cell")} <= found
    nb_secret = df[(df.file == "01_rates.ipynb") & (df.kind == "secret")]["where"].tolist()
    assert any("metadata.papermill.parameters" in w for w in nb_secret)   # metadata
    assert any("cells[2].source" in w for w in nb_secret)                  # injected cell
    small = df[df.kind == "small_cell"]
    assert set(small.excerpt) == {"n_treated=4", "members=7", "n_treated=5"}
    # the html table's small cell is found; 1,250 and the rate column are not
    assert len(small[small.file == "01_rates.html"]) == 1
    # US format 07/05/2023 is July 5th: not a service date; "May 7, 2023" is
    html_dates = df[(df.file == "01_rates.html") & (df.kind == "date_of_service")]
    assert len(html_dates) == 1
    # the base64 image payloads (holding 12345 / 555123456 by chance) are not read
    assert not any("img" in w for w in df["where"])
    # nothing is printed in full
    for f in rep.findings:
        assert secret not in f.excerpt and "100234567" not in f.excerpt
    with pytest.raises(DisclosureError) as err:
        rep.raise_if_found()
    msg = str(err.value)
    assert secret not in msg and "100234567" not in msg and "555123456" not in msg
    assert "small_cell" in msg and "01_rates.ipynb" in msg
    assert isinstance(err.value, EvalkitError) and err.value.findings == rep.findings


def test_clean_folder_passes(tmp_path):
    out = tmp_path / "clean"
    out.mkdir()
    nbformat.write(_executed_notebook("x", member_id="(redacted)", small=40,
                                      date="the index date"), out / "01.ipynb")
    (out / "01.html").write_text("<table><tr><th>n</th><th>pct</th></tr>"
                                 "<tr><td>887</td><td>4.0</td></tr>"
                                 "<tr><td>&lt;11</td><td>*</td></tr></table>")
    (out / "results.json").write_text(json.dumps(
        {"estimates": [{"n_treated": 887, "n_control": 887, "estimate": 3.0}],
         "tables": {"t1": [{"group": "a", "n": 0}, {"group": "b", "n": 31}]}}))
    (out / "notes.md").write_text("| arm | n |\n|---|---|\n| a | 25 |\n| b | <11 |\n")
    (out / "figure.png").write_bytes(b"\x89PNG....")
    (out / "work").mkdir()
    (out / "work" / "analysis.duckdb").write_bytes(b"member-level")
    rep = scan_outputs(out, member_ids=[100234567, 555123456], dates_of_service=["2023-05-07"],
                       secrets=["hunter2-S3cret!"])
    assert rep.ok, rep.findings
    rep.raise_if_found()                                 # no error
    assert set(rep.scanned) == {"01.ipynb", "01.html", "results.json", "notes.md"}
    reasons = dict(rep.not_scanned)
    assert "work/" in reasons and "figure.png" in reasons
    assert "nothing found" in rep.summary()


def test_ids_inside_longer_numbers_are_not_hits(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "a.txt").write_text(
        "912345 123456 0.12345 12345.67 A12345 12345B 2012345 1,123,450 v1.12345x\n")
    (out / "b.json").write_text(json.dumps({"x": 123456, "y": 12345.5, "z": "912345"}))
    rep = scan_outputs(out, member_ids=[12345, "m-77"])
    assert rep.ok, rep.findings
    # while whole-token forms are hits: plain, float rendering, thousands separator,
    # in a file name-like token, and as a JSON number
    (out / "c.txt").write_text("id 12345\n12345.0\n12,345 people\nplot_12345.png\n"
                               "M-77 and m-77\n")
    (out / "d.json").write_text(json.dumps({"member": 12345}))
    rep = scan_outputs(out, member_ids=[12345, "m-77"])
    hits = rep.to_frame()
    assert (hits.file == "c.txt").sum() == 6 and (hits.file == "d.json").sum() == 1
    assert set(hits.kind) == {"member_id"}


def test_csv_fields_and_id_columns(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "t.csv").write_text("member_id,n,cost\n7,3,100\n")
    rep = scan_outputs(out, member_ids=[7])
    kinds = sorted(rep.to_frame().kind)
    assert kinds == ["id_column", "member_id", "small_cell"]


def test_text_plain_dataframe_and_series(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell("print(t); print(s)")
    t = pd.DataFrame({"arm": ["a", "b"], "patients": [3, 300], "cost_pmpm": [2.0, 9.0]})
    s = pd.Series({"n_treated": 8, "n_control": 90})
    c.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                        text=t.to_string() + "\n\n" + s.to_string() + "\n")]
    nb.cells = [c]
    nbformat.write(nb, out / "x.ipynb")
    rep = scan_outputs(out)
    assert sorted(f.excerpt for f in rep.findings) == ["n_treated=8", "patients=3"]


def test_pdfs_never_silently_skipped(tmp_path, monkeypatch):
    out = tmp_path / "o"
    out.mkdir()
    (out / "brief.pdf").write_text("Savings brief. Contact member 100234567. key hunter2!")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    rep = scan_outputs(out, member_ids=[100234567])
    assert not rep.ok and rep.findings[0].kind == "unscanned"
    assert "pdftotext" in rep.findings[0].excerpt
    rep = scan_outputs(out, member_ids=[100234567], unscanned_pdfs="report")
    assert rep.ok and "pdftotext" in dict(rep.not_scanned)["brief.pdf"]
    # with pdftotext available (a stand-in that prints the file) the text is scanned
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pdftotext"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in *.pdf) /bin/cat "$a";; esac; done\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    rep = scan_outputs(out, member_ids=[100234567], secrets=["hunter2!"])
    assert sorted(f.kind for f in rep.findings) == ["member_id", "secret"]
    assert "brief.pdf" in rep.scanned


def test_data_files_in_the_public_folder(tmp_path):
    out = tmp_path / "o"
    (out / "work").mkdir(parents=True)
    (out / "work" / "x.parquet").write_bytes(b"PAR1")
    (out / "extract.parquet").write_bytes(b"PAR1")
    rep = scan_outputs(out)
    assert [(f.file, f.kind) for f in rep.findings] == [("extract.parquet", "data_file")]
    rep = scan_outputs(out, skip_dirs=())
    assert len(rep.findings) == 2


def test_redact_notebook_then_scan_is_clean(tmp_path):
    secret = 'Pa55&"word'
    nb = _executed_notebook(secret, member_id="(none)", small=40, date="-")
    html_out = nbformat.v4.new_code_cell("show()")
    escaped = secret.replace("&", "&amp;").replace('"', "&quot;")     # as HTML shows it
    html_out.outputs = [nbformat.v4.new_output(
        "display_data", data={"text/html": f"<p>{escaped}</p>", "image/png": "iVBORw0KGgo"})]
    nb.cells.append(html_out)
    path = tmp_path / "run" / "01.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    path.chmod(0o640)
    red, secrets = redact_params(nb.metadata["papermill"]["parameters"])
    assert secrets == [secret]
    n = redact_notebook(path, secrets)
    assert n == 3                         # metadata, injected source, html output (escaped)
    text = path.read_text()
    assert "Pa55" not in text
    back = nbformat.read(path, as_version=4)
    nbformat.validate(back)
    assert back.metadata.papermill.parameters.db_password == "***"
    assert 'db_password = "***"' in back.cells[2].source
    assert back.cells[-1].outputs[0].data["image/png"] == "iVBORw0KGgo"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["01.ipynb"]   # no temp file
    assert redact_notebook(path, secrets) == 0                              # idempotent
    assert scan_outputs(path.parent, secrets=secrets).ok
    with pytest.raises(PrivacyError):
        redact_notebook(tmp_path / "missing.ipynb", secrets)


def test_a_secret_spanning_lines_is_redacted_from_a_notebook(tmp_path):
    """A notebook stores multi-line text as a list of lines: a secret with a newline in it
    (a key file's body) is split across the list and must be found all the same."""
    secret = "AAAkeyline\nBBBkeyline"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("load()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text=f"error: bad key {secret} rest\nnext line\n")]
    nb.cells.append(cell)
    path = tmp_path / "01.ipynb"
    nbformat.write(nb, path)
    assert '"error: bad key AAAkeyline\\n",' in path.read_text()     # split on disk
    assert redact_notebook(path, [secret]) == 1
    assert "keyline" not in path.read_text()
    back = nbformat.read(path, as_version=4)
    nbformat.validate(back)
    assert back.cells[0].outputs[0].text == "error: bad key *** rest\nnext line\n"


def test_dates_in_common_formats(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    forms = ["2023-05-07", "2023/5/7", "05/07/2023", "5/7/23", "5-7-2023", "20230507",
             "May 7, 2023", "7 May 2023", "2023-05-07 00:00:00"]
    (out / "d.md").write_text("\n".join(forms) + "\n2023-05-08 12/05/2023 2023-05-070\n")
    rep = scan_outputs(out, dates_of_service=[pd.Timestamp("2023-05-07")])
    assert len(rep.findings) == len(forms)
    assert {f.kind for f in rep.findings} == {"date_of_service"}
    with pytest.raises(PrivacyError):
        scan_outputs(out, dates_of_service=["not a date"])
    with pytest.raises(PrivacyError):
        scan_outputs(tmp_path / "nope")
    with pytest.raises(PrivacyError, match="min_cell"):
        scan_outputs(out, min_cell="11")


def test_files_scanned_before_are_counted_not_read_again(tmp_path):
    """A run's brief is checked before it is written; the run's scan then counts it as
    scanned without reading it again (the planted id shows it was not read)."""
    (tmp_path / "brief.html").write_text("<p>member 100234567</p>")
    (tmp_path / "notes.md").write_text("nothing here")
    rep = scan_outputs(tmp_path, member_ids=[100234567], scanned_before=["brief.html"])
    assert rep.ok and set(rep.scanned) == {"brief.html", "notes.md"}
    assert not scan_outputs(tmp_path, member_ids=[100234567]).ok
