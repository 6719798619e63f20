"""Small-cell suppression: primary, complementary (within a table and across the tables
of one publication) and derived cells; shares that stand for small counts."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import null_space

from .errors import PrivacyError

__all__ = ["SuppressionResult", "suppress", "suppress_shares"]


@dataclass(frozen=True)
class SuppressionResult:
    """What :func:`suppress` returns.

    Attributes
    ----------
    table : the publishable copy; columns with a suppressed cell have object dtype and
        show ``marker`` in the suppressed cells, every other column is unchanged.
    report : one row per suppressed cell: ``row`` (index label), ``row_position``,
        ``column``, ``rule`` (``primary`` / ``linked`` / ``complementary`` / ``derived``) and
        ``reason`` (a sentence). It never holds the hidden values.
    mask : boolean DataFrame shaped like ``table``, True where a cell is suppressed.
    min_cell, marker : the settings used.

    The result unpacks as ``table, report = suppress(...)``.
    """

    table: pd.DataFrame
    report: pd.DataFrame
    mask: pd.DataFrame
    min_cell: int
    marker: str

    def __iter__(self):
        yield self.table
        yield self.report

    @property
    def n_suppressed(self) -> int:
        return len(self.report)

    @property
    def footnote(self) -> str:
        """A footnote for the published table explaining the marker."""
        return (f"{self.marker} suppressed: a count of fewer than {self.min_cell} people, "
                "or a cell (or a figure computed from one) from which such a count could "
                "be worked out.")

    def summary(self) -> str:
        if self.report.empty:
            return f"no cell suppressed (smallest count shown: {self.min_cell})"
        by = self.report["rule"].value_counts()
        parts = [f"{by.get(r, 0)} {r}" for r in ("primary", "linked", "complementary", "derived")
                 if by.get(r, 0)]
        return f"{len(self.report)} cells suppressed ({', '.join(parts)}); min_cell={self.min_cell}"


@dataclass
class _Group:
    """One additive relation of the table: members sum to the total."""

    label: str
    members: list          # cells (row position, cell-column position)
    total: tuple | None    # the total cell when it is in the table; None = known elsewhere

    @property
    def cells(self) -> list:
        return self.members + ([self.total] if self.total is not None else [])


def suppress(table: pd.DataFrame, count_columns, min_cell: int = 11, row_total=None,
             col_total=None, derived: Mapping | None = None, marker: str | None = None, *,
             suppress_zero: bool = False, protect_rows: bool = True,
             protect_columns: bool | None = None, hide: Iterable = (),
             relations: Iterable = ()) -> SuppressionResult:
    """Small-cell suppression of a table of counts of people, ready to publish.

    Three rules are applied, in order, until nothing changes:

    1. **Primary.** A count ``c`` with ``0 < c < min_cell`` is hidden (with the default
       ``min_cell=11``: counts 1 to 10). A zero is shown by default, as the CMS
       cell-size policy allows (a zero describes nobody); ``suppress_zero=True`` hides
       zeros too, for settings whose rule covers them.
    2. **Complementary.** A row of counts, and its total, form an additive relation
       ``c_1 + ... + c_k = total``; so does a column. If exactly one cell of a relation
       is hidden, it can be recovered by subtraction, so a second cell of the relation
       is hidden too: the smallest non-zero visible count (ties go to a cell whose other
       relation already has exactly one hidden cell, then to the first in table order);
       the total only if no count is left, a zero as a last resort (hiding a zero adds
       little protection). This is iterated over rows and columns until stable. Then an
       exact check runs: with all relations together, a hidden cell is still recoverable
       when it is fixed by the linear system (for example two blocks of hidden cells
       joined by a single cell). Any such cell gets one more complementary cell, and the
       loop repeats.
    Cells given in ``hide`` are hidden before rule 2 (rule ``linked``: the same count
    is hidden in another table of the publication, see :func:`suppress_together`), and
    ``relations`` adds additive relations that are not a row or a column (e.g. an
    attrition table's ``members before a step = members after it + excluded``).
    3. **Derived.** A percentage, rate or mean computed from a hidden count gives the
       count back, so it is hidden with it (``derived={"pct": "n"}``; a list of source
       columns hides the derived cell if any of them is hidden, e.g. a percentage of a
       row total that is itself hidden: ``{"pct": ["n", "total"]}``).

    Parameters
    ----------
    table : DataFrame; one row per category. Not modified.
    count_columns : column name or list of names holding counts of people (the cells).
    min_cell : smallest count of people that may be shown (default 11).
    row_total : name of a column holding each row's total (a margin). The total itself
        is a count (hidden if small) and part of the row relation. Without it, rows are
        still protected when ``protect_rows`` is True, as if the row totals were
        published elsewhere (the cautious assumption).
    col_total : index label of the row holding column totals (e.g. ``"Total"``, or
        ``"All"`` from ``pd.crosstab(..., margins=True)``). Giving it switches on column
        protection.
    derived : ``{derived_column: count_column or [source columns]}``.
    marker : text shown in every hidden cell. Default ``"*"`` (see Notes).
    suppress_zero : also treat zeros as small cells (default False, see rule 1).
    protect_rows : apply complementary suppression along rows (default True).
    protect_columns : apply it along columns; default: only when ``col_total`` is given.
        Set True when column totals are published elsewhere (e.g. N per arm in a table
        header).
    hide : ``[(row label, column), ...]`` count cells to hide whatever their value
        (rule ``linked``), e.g. because the same count is hidden in another table.
    relations : ``[(members, total), ...]`` more additive relations: ``members`` a list
        of ``(row label, column)`` count cells that sum to the ``total`` cell (or to a
        total known elsewhere when ``total`` is None).

    Returns
    -------
    SuppressionResult
        ``table`` (a new DataFrame), ``report`` (what was hidden and why), ``mask``.

    Raises
    ------
    PrivacyError
        For a missing or non-numeric column, a negative count, an unknown ``col_total``
        label, or a relation that cannot be protected (no visible cell left to hide).

    Notes
    -----
    *One marker for every hidden cell.* Showing ``"<11"`` on primary cells and another
    mark on complementary ones lets a reader bound the primary value: in a row
    ``a + b = 12`` with ``a`` marked ``<11`` and ``b`` known to be a complement (so
    ``b >= 11``), ``a = 1``. A single marker (and a footnote, :attr:`SuppressionResult.footnote`)
    avoids that. Pass ``marker="<11"`` if your publication standard requires it, knowing
    that it then also stands on complementary cells.

    *What is protected.* No hidden cell can be computed exactly from the visible cells
    and the row and column relations (checked by linear algebra, not only by the
    "exactly one hidden cell" rule). Bounds are not widened to a target interval, and
    cells with a missing value (NaN) are treated as visible and are never chosen as
    complements. Relations across several tables (the same counts published twice) are
    not seen; suppress such tables together (:func:`suppress_together`).

    Examples
    --------
    >>> t = pd.DataFrame({"A": [5, 25, 30, 60], "B": [20, 40, 50, 110],
    ...                   "Total": [25, 65, 80, 170]}, index=["r1", "r2", "r3", "Total"])
    >>> res = suppress(t, ["A", "B"], row_total="Total", col_total="Total")
    >>> print(res.table)
            A    B  Total
    r1      *    *     25
    r2      *    *     65
    r3     30   50     80
    Total  60  110    170
    >>> sorted(res.report["rule"])
    ['complementary', 'complementary', 'complementary', 'primary']

    References
    ----------
    Centers for Medicare & Medicaid Services, *Cell Size Suppression Policy* (cells of
    1 to 10 beneficiaries are not published, nor cells from which they can be derived).
    Hundepool A. et al. (2012), *Statistical Disclosure Control*, Wiley, ch. 4
    (primary and secondary suppression; the "singleton in a relation" problem).
    """
    t = _Table.check(table, count_columns, min_cell, row_total, col_total, derived)
    if protect_columns is None:
        protect_columns = col_total is not None
    groups = t.groups(protect_rows, protect_columns, relations)
    hidden: dict = {}   # cell -> (rule, reason), in the order hidden
    for i in range(t.nrow):
        for j in range(t.ncell):
            v = t.values[i, j]
            if np.isfinite(v) and (0 < v < min_cell or (suppress_zero and v == 0)):
                hidden[(i, j)] = ("primary", f"count of fewer than {min_cell} people"
                                  if v > 0 else "zero count (suppress_zero=True)")
    for cell in hide:
        c = t.cell(cell, "hide")
        hidden.setdefault(c, ("linked", "the same count is suppressed in another table"))
    _complement(t, groups, hidden)
    return t.result(hidden, "*" if marker is None else str(marker))


class _Table:
    """The checked inputs of :func:`suppress`: the count cells as a float array
    (``values[row position, cell column]``), their columns and the table's labels."""

    def __init__(self, table, cell_cols, values, min_cell, jt, total_pos, derived_map):
        self.table, self.cell_cols, self.values = table, cell_cols, values
        self.min_cell, self.jt, self.total_pos, self.derived_map = (min_cell, jt, total_pos,
                                                                    derived_map)
        self.nrow, self.ncell = values.shape
        self.label = table.index

    @classmethod
    def check(cls, table, count_columns, min_cell, row_total, col_total, derived) -> _Table:
        """Validate the arguments of :func:`suppress` (a :class:`PrivacyError` names the
        first problem)."""
        if not isinstance(table, pd.DataFrame):
            raise PrivacyError("suppress: table must be a pandas DataFrame, "
                               f"got {type(table).__name__}")
        if not table.columns.is_unique:
            dup = table.columns[table.columns.duplicated()].tolist()
            raise PrivacyError(f"suppress: column names must be unique; duplicated: {dup}")
        if isinstance(count_columns, str) or not isinstance(count_columns, Iterable):
            count_columns = [count_columns]
        count_columns = list(dict.fromkeys(count_columns))
        if not count_columns:
            raise PrivacyError("suppress: count_columns is empty; name the columns holding "
                               "counts")
        if isinstance(min_cell, bool) or not isinstance(min_cell, (int, np.integer)) \
                or min_cell < 1:
            raise PrivacyError(f"suppress: min_cell must be a whole number >= 1, "
                               f"got {min_cell!r}")
        if row_total is not None and row_total in count_columns:
            count_columns.remove(row_total)
        cell_cols = count_columns + ([row_total] if row_total is not None else [])
        missing = [c for c in cell_cols if c not in table.columns]
        if missing:
            raise PrivacyError(f"suppress: column(s) {missing} not in the table; "
                               f"columns are {list(table.columns)}")
        for c in cell_cols:
            s = table[c]
            if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
                raise PrivacyError(f"suppress: count column '{c}' is not numeric "
                                   f"(dtype {s.dtype}); pass counts, not formatted text")
        values = table[cell_cols].to_numpy(dtype=float, na_value=np.nan)
        if np.any(values < 0):
            r, j = np.argwhere(values < 0)[0]
            raise PrivacyError(f"suppress: negative count {values[r, j]:g} in column "
                               f"'{cell_cols[j]}', row {table.index[r]!r}; counts of people "
                               "cannot be negative")
        total_pos = None
        if col_total is not None:
            hits = np.flatnonzero(table.index == col_total)
            if len(hits) != 1:
                raise PrivacyError(f"suppress: col_total={col_total!r} must label exactly one "
                                   f"row of the index; found {len(hits)}. Put the category "
                                   "labels in the index (e.g. table.set_index('category')).")
            total_pos = int(hits[0])
        derived_map = {}
        for dcol, src in (derived or {}).items():
            srcs = [src] if isinstance(src, str) or not isinstance(src, Iterable) else list(src)
            if dcol not in table.columns:
                raise PrivacyError(f"suppress: derived column '{dcol}' not in the table")
            if dcol in cell_cols:
                raise PrivacyError(f"suppress: '{dcol}' is both a count column and a derived "
                                   "column")
            bad = [s for s in srcs if s not in cell_cols]
            if bad:
                raise PrivacyError(f"suppress: derived column '{dcol}' is computed from {bad}, "
                                   f"which are not count columns ({cell_cols})")
            derived_map[dcol] = [cell_cols.index(s) for s in srcs]
        jt = len(cell_cols) - 1 if row_total is not None else None
        return cls(table, cell_cols, values, int(min_cell), jt, total_pos, derived_map)

    def describe(self, cell) -> str:
        return f"row {self.label[cell[0]]!r}, column '{self.cell_cols[cell[1]]}'"

    def cell(self, cell, what: str) -> tuple:
        """``(row label, column)`` as ``(row position, cell column)``."""
        try:
            row, col = cell
        except (TypeError, ValueError):
            raise PrivacyError(f"suppress: {what} takes (row label, column) pairs, "
                               f"got {cell!r}") from None
        hits = np.flatnonzero(self.label == row)
        if len(hits) != 1 or col not in self.cell_cols:
            raise PrivacyError(f"suppress: {what} names the cell (row {row!r}, column "
                               f"{col!r}), which is not one count cell of the table")
        return int(hits[0]), self.cell_cols.index(col)

    def groups(self, protect_rows: bool, protect_columns: bool, relations) -> list:
        """The additive relations: rows, columns and the ones given."""
        member_cols = [j for j in range(self.ncell) if j != self.jt]
        groups: list[_Group] = []
        if protect_rows:
            for i in range(self.nrow):
                if self.jt is None and len(member_cols) < 2:
                    continue
                groups.append(_Group(f"row {self.label[i]!r}", [(i, j) for j in member_cols],
                                     (i, self.jt) if self.jt is not None else None))
        if protect_columns:
            body = [i for i in range(self.nrow) if i != self.total_pos]
            for j in range(self.ncell):
                if self.total_pos is None and len(body) < 2:
                    continue
                total = (self.total_pos, j) if self.total_pos is not None else None
                groups.append(_Group(f"column '{self.cell_cols[j]}'", [(i, j) for i in body],
                                     total))
        for k, (members, total) in enumerate(relations, start=1):
            groups.append(_Group(f"relation {k}", [self.cell(c, "relations") for c in members],
                                 None if total is None else self.cell(total, "relations")))
        return groups

    def result(self, hidden: dict, marker: str) -> SuppressionResult:
        """The published copy: hidden counts and the cells derived from them marked."""
        label, cell_cols = self.label, self.cell_cols
        extra = {}
        for dcol, srcs in self.derived_map.items():
            for i in range(self.nrow):
                src = [cell_cols[j] for j in srcs if (i, j) in hidden]
                if src:
                    extra[(i, dcol)] = ("derived",
                                        f"computed from the suppressed count in '{src[0]}'")
        out = self.table.copy(deep=True)
        mask = pd.DataFrame(False, index=self.table.index, columns=self.table.columns)
        records = []
        by_col: dict = {}
        cells = [((i, cell_cols[j]), why) for (i, j), why in hidden.items()] + list(extra.items())
        for (i, col), (rule, reason) in cells:
            by_col.setdefault(col, []).append(i)
            records.append((label[i], i, col, rule, reason))
        for col, rows in by_col.items():
            shown = out[col].astype(object)
            shown.iloc[rows] = marker
            out[col] = shown
            m = mask[col].to_numpy(copy=True)
            m[rows] = True
            mask[col] = m
        order = {"primary": 0, "linked": 1, "complementary": 2, "derived": 3}
        records.sort(key=lambda r: order[r[3]])
        report = pd.DataFrame(records, columns=["row", "row_position", "column", "rule",
                                                "reason"])
        return SuppressionResult(out, report, mask, self.min_cell, marker)


def _complement(t: _Table, groups: list, hidden: dict) -> None:
    """Rule 2 of :func:`suppress`: add complementary cells to ``hidden`` until no hidden
    cell can be recovered from the relations."""
    values = t.values
    groups_of: dict = {}
    for g in groups:
        for c in g.cells:
            groups_of.setdefault(c, []).append(g)

    def candidates(g: _Group) -> list:
        """Visible cells of g in order of preference (best first)."""
        def cascade(c):
            pen = 0
            for other in groups_of.get(c, []):
                if other is g:
                    continue
                k = sum(x in hidden for x in other.cells)
                pen += 0 if k == 1 else (1 if k >= 2 else 2)
            return pen
        free = [c for c in g.members if c not in hidden and np.isfinite(values[c])]
        nonzero = sorted((c for c in free if values[c] > 0),
                         key=lambda c: (values[c], cascade(c), c))
        zeros = sorted((c for c in free if values[c] == 0), key=lambda c: (cascade(c), c))
        tot = []
        if g.total is not None and g.total not in hidden and np.isfinite(values[g.total]):
            tot = [g.total]
        return nonzero + tot + zeros

    while True:
        changed = False
        for g in groups:
            inside = [c for c in g.cells if c in hidden]
            if len(inside) != 1:
                continue
            cand = candidates(g)
            if not cand:
                raise PrivacyError(
                    f"suppress: {t.describe(inside[0])} is hidden but {g.label} has no other "
                    "visible count to hide with it, so it could be recovered from the "
                    "total. Merge categories or drop the total before publishing.")
            why = (f"hidden so that {t.describe(inside[0])} cannot be recovered from the "
                   f"total of {g.label}")
            hidden[cand[0]] = ("complementary", why)
            changed = True
        if changed:
            continue
        exposed = _recoverable(list(hidden), groups)
        if not exposed:
            return
        x = exposed[0]
        options = [(c, g) for g in groups_of.get(x, []) for c in candidates(g)[:1]]
        if not options:
            raise PrivacyError(
                f"suppress: {t.describe(x)} could be worked out from the rows and columns and "
                "no visible cell is left to protect it. Merge categories before publishing.")
        c, g = min(options, key=lambda o: (values[o[0]] == 0, values[o[0]], o[0]))
        why = f"hidden so that {t.describe(x)} cannot be worked out by combining rows and columns"
        hidden[c] = ("complementary", why)


def suppress_together(tables: Mapping, links: Iterable = (), min_cell: int = 11,
                      marker: str | None = None) -> dict:
    """Suppress the tables of one publication together, so that a count hidden in one
    table cannot be read in another or worked out from another's totals.

    Small-cell rules are about what a reader can learn from *everything* published. A
    count hidden in one table is disclosed if the same count is shown in another (the
    size of an arm in a cohort table and the ``n`` of an estimate), and a complementary
    cell hidden in one table is useless if another table shows it. This applies
    :func:`suppress` to each table, then, for every group of ``links`` (cells that show
    the same count), hides every cell of the group as soon as one of them is hidden
    (rule ``linked``) and suppresses again, with complementary cells for the newly
    hidden ones, until no table changes. Hidden cells only ever grow, so this ends.

    Parameters
    ----------
    tables : ``{name: {"table": DataFrame, "count_columns": [...], **keywords}}``, the
        keywords those of :func:`suppress` (``row_total``, ``col_total``, ``derived``,
        ``protect_rows``, ``relations`` ...).
    links : groups of cells that show the same count: ``[[(name, row label, column),
        (other name, row label, column)], ...]``.
    min_cell, marker : as for :func:`suppress`, the same for every table.

    Returns
    -------
    dict
        ``{name: SuppressionResult}``.

    Raises
    ------
    PrivacyError
        A link naming an unknown table or cell, or linking cells that hold different
        counts, and whatever :func:`suppress` raises.

    Examples
    --------
    >>> arms = pd.DataFrame({"members": [8, 412, 420]}, index=["self_help", "control", "all"])
    >>> est = pd.DataFrame({"n_control": [412], "rr": [0.81]}, index=["er"])
    >>> res = suppress_together(
    ...     {"arms": {"table": arms, "count_columns": "members", "col_total": "all"},
    ...      "est": {"table": est, "count_columns": "n_control", "derived": {"rr": "n_control"}}},
    ...     links=[[("arms", "control", "members"), ("est", "er", "n_control")]])
    >>> res["est"].table                  # 420 - 412 would give the arm of 8 back
       n_control rr
    er         *  *

    References
    ----------
    Centers for Medicare & Medicaid Services, *Cell Size Suppression Policy*: no cell of
    1 to 10 people may be displayed, nor a figure (a percentage, a difference) from
    which such a cell can be worked out. National Center for Health Statistics, *NCHS
    Staff Manual on Confidentiality*: complementary (secondary) suppression, so that a
    suppressed cell cannot be recovered from totals or from other published tables.
    Hundepool A. et al. (2012), *Statistical Disclosure Control*, Wiley, ch. 4 (linked
    tables: tables sharing cells are protected together).
    """
    specs = {name: dict(spec) for name, spec in tables.items()}
    for name, spec in specs.items():
        if "table" not in spec or "count_columns" not in spec:
            raise PrivacyError(f"suppress_together: table {name!r} needs 'table' and "
                               "'count_columns'")
    groups = [list(g) for g in links]
    for g in groups:
        shown = set()
        for cell in g:
            name, row, col = _linked_cell(specs, cell)
            v = specs[name]["table"].loc[row, col]
            if pd.notna(v):
                shown.add(float(v))
        if len(shown) > 1:
            raise PrivacyError(f"suppress_together: the linked cells {g} hold different "
                               f"counts; link only cells that show the same count")
    hide = {name: set(spec.pop("hide", ())) for name, spec in specs.items()}
    while True:
        results = {name: _suppress_spec(spec, min_cell, marker, sorted(hide[name], key=str))
                   for name, spec in specs.items()}
        changed = False
        for g in groups:
            if any(results[n].mask.loc[r, c] for n, r, c in g):
                for n, r, c in g:
                    if (r, c) not in hide[n] and not results[n].mask.loc[r, c]:
                        hide[n].add((r, c))
                        changed = True
        if not changed:
            return results


def _suppress_spec(spec: dict, min_cell: int, marker, hide: list) -> SuppressionResult:
    kw = {k: v for k, v in spec.items() if k not in ("table", "count_columns")}
    return suppress(spec["table"], spec["count_columns"], min_cell, marker=marker, hide=hide,
                    **kw)


def _linked_cell(specs: dict, cell) -> tuple:
    try:
        name, row, col = cell
    except (TypeError, ValueError):
        raise PrivacyError(f"suppress_together: a link cell is (table name, row label, "
                           f"column), got {cell!r}") from None
    table = specs.get(name, {}).get("table")
    if table is None or col not in table.columns or (table.index == row).sum() != 1:
        raise PrivacyError(f"suppress_together: the linked cell {cell!r} is not one cell of "
                           "the tables given")
    return name, row, col


def suppress_shares(table: pd.DataFrame, sizes: Mapping, min_cell: int = 11, *,
                    share_rows=None, derived: Iterable[str] = ()) -> pd.DataFrame:
    """Hide shares that stand for small counts of people (a copy; hidden cells are NaN).

    A share ``p`` of a group of ``N`` people stands for ``round(p * N)`` people with the
    characteristic and the rest without it; when either is in ``1..min_cell-1`` (so
    always when ``N < min_cell``) the share is hidden, as the CMS cell-size policy
    requires for percentages. Cells of ``derived`` columns (a standardized difference
    computed from the shares) are hidden in any row where a share was hidden.

    Parameters
    ----------
    table : DataFrame of shares in [0, 1]. Not modified.
    sizes : ``{share column: group size N}``.
    min_cell : smallest count of people that may be shown.
    share_rows : boolean mask of the rows holding shares (default: every row).
    derived : columns computed from the shares of a row.

    Returns
    -------
    DataFrame
        The copy, with hidden cells set to NaN.

    Examples
    --------
    >>> t = pd.DataFrame({"p_t": [0.429, 0.5], "p_c": [0.5, 0.5], "smd": [-0.14, 0.0]})
    >>> suppress_shares(t, {"p_t": 14, "p_c": 300}, derived=["smd"])
       p_t  p_c  smd
    0  NaN  0.5  NaN
    1  NaN  0.5  NaN
    """
    out = table.copy()
    rows = np.ones(len(out), bool) if share_rows is None else np.asarray(share_rows, bool)
    hidden = np.zeros(len(out), bool)
    for col, n in sizes.items():
        p = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=float)
        n = float(n)
        with np.errstate(invalid="ignore"):
            k = np.round(p * n)
            small = ((k > 0) & (k < min_cell)) | ((n - k > 0) & (n - k < min_cell))
        hide = rows & np.isfinite(p) & small
        out[col] = out[col].astype(float).where(~hide, np.nan)
        hidden |= hide
    for col in derived:
        out[col] = out[col].astype(float).where(~hidden, np.nan)
    return out


def _recoverable(hidden_cells: list, groups: list) -> list:
    """Hidden cells whose value is fixed by the additive relations.

    The relations restricted to the hidden cells read ``A x = b`` (``b`` known from
    the visible cells). The solutions are ``x0 + null(A)``; cell ``k`` is fixed exactly
    when every null-space vector is zero in coordinate ``k``. Written out here because
    this is the whole test; a statistical-disclosure package would be a heavy
    dependency for it.
    """
    if not hidden_cells:
        return []
    pos = {c: k for k, c in enumerate(hidden_cells)}
    rows = []
    for g in groups:
        r = np.zeros(len(hidden_cells))
        touched = False
        for c in g.members:
            if c in pos:
                r[pos[c]] = 1.0
                touched = True
        if g.total is not None and g.total in pos:
            r[pos[g.total]] = -1.0
            touched = True
        if touched:
            rows.append(r)
    if not rows:
        return []
    ns = null_space(np.vstack(rows))
    if ns.size == 0:
        return list(hidden_cells)
    free = np.linalg.norm(ns, axis=1) > 1e-9
    return [c for c, f in zip(hidden_cells, free) if not f]
