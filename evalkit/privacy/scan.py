"""The pre-publication scan of a run's output folder: member ids, dates of service,
secrets, small counts and member-level tables."""
from __future__ import annotations

import csv
import datetime as _dt
import html as _html
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from bs4 import BeautifulSoup

from ..export import read_xlsx
from .errors import DisclosureError, PrivacyError
from .redact import _as_secret_list, _is_binary_mime, _secret_forms

__all__ = ["DEFAULT_COUNT_HEADERS", "DEFAULT_ID_HEADERS", "Finding", "ScanReport",
           "scan_outputs"]


DEFAULT_COUNT_HEADERS = ("n", "count", "counts", "members", "patients", "people", "persons",
                         "participants", "subjects", "individuals", "n_treated", "n_control",
                         "events", "cases", "deaths", "excluded", "freq", "frequency")
DEFAULT_ID_HEADERS = ("member_id", "person_id", "patient_id", "subject_id", "beneficiary_id",
                      "mrn", "ssn")
# words that make a header a rate, share or summary rather than a count of people
_NOT_COUNT_WORDS = frozenset((
    "pct", "percent", "percentage", "rate", "rates", "mean", "avg", "average", "median",
    "sd", "se", "std", "ratio", "per", "share", "proportion", "prop", "cost", "costs",
    "pmpm", "ci", "lower", "upper", "estimate", "diff", "difference", "smd", "weight",
    "weights", "months", "days", "years", "p", "z", "t",
    # counts of things other than people: n_params, n_iter, n_boot, n_groups ...
    "param", "params", "parameters", "iter", "iters", "iterations", "boot", "bootstrap",
    "draws", "sims", "simulations", "reps", "replicates", "folds", "knots", "df", "dof",
    "lag", "lags", "periods", "terms", "covariates", "levels", "categories", "columns",
    "cols", "tables", "workbooks", "digits", "decimals", "threads", "groups", "clusters",
    "programs", "sites", "arms", "windows", "chunks"))
_TEXT_SUFFIXES = {".html", ".htm", ".ipynb", ".json", ".md", ".txt", ".csv", ".tsv", ".svg"}
_DATA_SUFFIXES = {".parquet", ".duckdb", ".db", ".sqlite", ".sqlite3", ".feather", ".arrow",
                  ".pkl", ".pickle", ".xls", ".sas7bdat", ".dta", ".rds", ".rdata",
                  ".h5", ".hdf5", ".npy", ".npz", ".orc", ".avro"}
_SKIP_DIRS = ("work", ".ipynb_checkpoints", "__pycache__", ".git")


@dataclass(frozen=True)
class Finding:
    """One problem in one file.

    ``kind`` is one of ``member_id``, ``date_of_service``, ``secret``, ``small_cell``,
    ``id_column`` (a table with a member-level id column), ``data_file`` (a data file in
    the public folder), ``unscanned`` (a PDF that could not be read) or ``unreadable``.
    ``where`` locates it (line, table/row/column, JSON path, notebook cell); ``excerpt``
    is the offending text shortened so the finding itself does not repeat it.
    """

    file: str
    kind: str
    where: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind} at {self.where} ({self.excerpt})"


@dataclass(frozen=True)
class ScanReport:
    """What :func:`scan_outputs` found.

    Attributes
    ----------
    folder : the folder scanned.
    findings : tuple of :class:`Finding`.
    scanned : relative paths of the files read.
    not_scanned : ``(path, reason)`` pairs for files and folders not read (excluded
        folders, images, PDFs when ``unscanned_pdfs="report"``).
    """

    folder: str
    findings: tuple
    scanned: tuple
    not_scanned: tuple

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([f.__dict__ for f in self.findings],
                            columns=["file", "kind", "where", "excerpt"])

    def summary(self) -> str:
        head = (f"privacy scan of {self.folder}: {len(self.scanned)} files scanned, "
                f"{len(self.not_scanned)} not scanned")
        if self.ok:
            return head + "; nothing found"
        kinds = pd.Series([f.kind for f in self.findings]).value_counts()
        return head + "; found " + ", ".join(f"{n} {k}" for k, n in kinds.items())

    def raise_if_found(self, limit: int = 25) -> None:
        """Raise :class:`DisclosureError` listing the findings (secrets and ids shortened)."""
        if self.ok:
            return
        lines = [str(f) for f in self.findings[:limit]]
        if len(self.findings) > limit:
            lines.append(f"... and {len(self.findings) - limit} more (see ScanReport.findings)")
        raise DisclosureError(
            f"{len(self.findings)} privacy finding(s) in {self.folder}; do not publish "
            "these files until they are fixed (suppress small cells with "
            "evalkit.privacy.suppress, remove member-level rows, redact secrets with "
            "redact_notebook and re-export the HTML):\n  " + "\n  ".join(lines),
            self.findings)


def _shorten(text: str) -> str:
    """First characters only, and the length: enough to find it, not enough to reuse it."""
    keep = min(2, len(text) // 3)
    return f"{text[:keep]}…[{len(text)} chars]"


def _norm_words(header) -> list[str]:
    return re.findall(r"[a-z0-9]+", str(header).lower())


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


# Tokens: runs of letters/digits, possibly joined by single '.' or ',' (numbers such as
# 1,234.50 stay one token, so an id is never matched inside a longer number).
_TOKEN = re.compile(r"[A-Za-z0-9]++(?:[.,][A-Za-z0-9]++)*+")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"\d+\.\d+")
_COLUMN_GAP = re.compile(r"\S\s{2,}\S")     # printed tables separate columns by 2+ spaces
_NUMBER = re.compile(r"^\s*[<>≤≥~]?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(%?)")

# a group size in a header: "treated (n=14)", "Control, N = 1,234"
_HEADER_N = re.compile(r"(?i)(?<![A-Za-z0-9])n\s*=\s*(\d{1,3}(?:,\d{3})+|\d+)(?![\d.])")


def _as_number(v) -> float | None:
    """A cell as a number (None if it is not one)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v) if np.isfinite(v) else None
    try:
        x = float(str(v).replace(",", "").strip())
    except ValueError:
        return None
    return x if np.isfinite(x) else None


_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul",
                                       "aug", "sep", "oct", "nov", "dec"), start=1)}
_MON = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_DATE_PATTERNS = (
    ("ymd", re.compile(r"(?<![0-9])(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?![0-9])")),
    ("mdy", re.compile(r"(?<![0-9.])(\d{1,2})([-/])(\d{1,2})\2(\d{4}|\d{2})(?![0-9])")),
    ("compact", re.compile(r"(?<![0-9])(\d{4})(\d{2})(\d{2})(?![0-9])")),
    ("mon_d_y", re.compile(r"(?i)\b" + _MON
                           + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?![0-9])")),
    ("d_mon_y", re.compile(r"(?i)(?<![0-9])(\d{1,2})(?:st|nd|rd|th)?\s+" + _MON
                           + r",?\s+(\d{4})(?![0-9])")),
)


def _to_dates(values) -> set:
    if values is None:
        return set()
    if isinstance(values, (str, _dt.date, pd.Timestamp, np.datetime64)):
        values = [values]
    out = set()
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
            continue
        try:
            ts = pd.Timestamp(v)
        except (ValueError, TypeError):
            raise PrivacyError(f"scan_outputs: cannot read {v!r} as a date of service; "
                               "give dates, Timestamps or ISO strings") from None
        if pd.isna(ts):
            continue
        out.add(ts.date())
    return out


def _id_strings(member_ids) -> list[str]:
    """Member ids as stripped strings (whole floats as integers; missing ones dropped)."""
    if member_ids is None:
        return []
    if isinstance(member_ids, (str, int, np.integer)):
        member_ids = [member_ids]
    out = []
    for m in member_ids:
        try:
            if m is None or pd.isna(m):
                continue
        except (TypeError, ValueError):
            pass
        if isinstance(m, (float, np.floating)) and float(m).is_integer():
            m = int(m)
        s = str(m).strip()
        if s:
            out.append(s)
    return out


def _norm_id(s: str) -> str:
    """How an id is compared: casefolded, a number without its leading zeros."""
    return (s.lstrip("0") or "0") if s.isdigit() else s.casefold()


# An id written after a word that says it is one: "member 123", "member_id=123",
# "Patient ID: 123", "MRN 123", "member #123" (not "per member 12": a rate; not a
# plural; not a bare "#123", which is also how HTML writes colours).
_ID_CONTEXT = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?<!per )(?:member|person|patient|subject|beneficiary|enrollee"
    r"|mrn|id)(?:[ _-]?(?:id|no\.?|number|nr))?[ \t]?[:=#]?[ \t]?#?"
    r"(?P<tok>[A-Za-z0-9]+)(?![A-Za-z0-9]|[.,]\d)")


class _Scanner:
    def __init__(self, member_ids, dates, secrets, min_cell, count_headers, id_headers,
                 context_ids=None):
        self.min_cell = int(min_cell)
        self.simple_ids: set[str] = set()      # letters/digits only, casefolded
        self.numeric_ids: set[str] = set()     # digits without leading zeros
        self.context_ids = {_norm_id(x) for x in _id_strings(context_ids)}
        complex_ids = []
        for s in _id_strings(member_ids):
            if s.isascii() and s.isalnum():
                self.simple_ids.add(s.casefold())
                if s.isdigit():
                    self.numeric_ids.add(s.lstrip("0") or "0")
            else:
                complex_ids.append(s)
        self.complex_res = []
        complex_ids = sorted(set(complex_ids), key=len, reverse=True)
        for k in range(0, len(complex_ids), 500):
            alt = "|".join(re.escape(x) for x in complex_ids[k:k + 500])
            self.complex_res.append(re.compile(
                rf"(?<![A-Za-z0-9])(?:{alt})(?![A-Za-z0-9])", re.IGNORECASE))
        self.dates = dates
        self.dates_yy = {(d.year % 100, d.month, d.day) for d in dates}
        self.secrets = [(s, _secret_forms(s)) for s in _as_secret_list(secrets)]
        self.count_names = {"_".join(_norm_words(h)) for h in count_headers}
        self.count_single = {n for n in self.count_names if "_" not in n}
        self.id_names = {"_".join(_norm_words(h)) for h in id_headers}
        self.findings: list[Finding] = []

    # ------------------------------------------------------------------ free text
    def _id_candidates(self, tok: str):
        if _THOUSANDS.fullmatch(tok):
            ip, _, frac = tok.partition(".")
            if not frac.strip("0"):
                yield ip.replace(",", "")
            return
        for part in tok.split(","):
            if _DECIMAL.fullmatch(part):
                ip, frac = part.split(".")
                if not frac.strip("0"):
                    yield ip
                continue
            yield from part.split(".")

    def _is_id(self, cand: str) -> bool:
        if cand.casefold() in self.simple_ids:
            return True
        return cand.isdigit() and (cand.lstrip("0") or "0") in self.numeric_ids

    def text(self, text: str, file: str, where: str, lines: bool = True,
             ids: bool = True, dates: bool = True, secrets: bool = True) -> None:
        """Member ids, dates of service and secrets in a piece of text."""
        if not text:
            return
        if "base64," in text:
            text = _strip_data_uris(text)

        def loc(pos):
            return f"{where}, line {_line_of(text, pos)}" if lines else where
        if ids and self.simple_ids:
            for m in _TOKEN.finditer(text):
                for cand in self._id_candidates(m.group()):
                    if cand and self._is_id(cand):
                        self.findings.append(Finding(file, "member_id", loc(m.start()),
                                                     _shorten(cand)))
        if ids:
            for rx in self.complex_res:
                for m in rx.finditer(text):
                    self.findings.append(Finding(file, "member_id", loc(m.start()),
                                                 _shorten(m.group())))
        if ids and self.context_ids:
            for m in _ID_CONTEXT.finditer(text):
                if _norm_id(m["tok"]) in self.context_ids:
                    self.findings.append(Finding(file, "member_id", loc(m.start("tok")),
                                                 "an id after a word naming one, "
                                                 + _shorten(m["tok"])))
        if dates and self.dates:
            for kind, rx in _DATE_PATTERNS:
                for m in rx.finditer(text):
                    if self._date_hit(kind, m):
                        self.findings.append(Finding(file, "date_of_service", loc(m.start()),
                                                     _shorten(m.group())))
        if secrets:
            for secret, forms in self.secrets:
                for f in forms:
                    start = text.find(f)
                    while start >= 0:
                        self.findings.append(Finding(file, "secret", loc(start),
                                                     _shorten(secret)))
                        start = text.find(f, start + len(f))

    def _date_hit(self, kind: str, m) -> bool:
        try:
            if kind == "ymd":
                y, mo, d = int(m[1]), int(m[3]), int(m[4])
            elif kind == "mdy":
                mo, d, y = int(m[1]), int(m[3]), m[4]
                if len(y) == 2:
                    return (int(y), mo, d) in self.dates_yy
                y = int(y)
            elif kind == "compact":
                y, mo, d = int(m[1]), int(m[2]), int(m[3])
            elif kind == "mon_d_y":
                mo, d, y = _MONTHS[m[1].lower()[:3]], int(m[2]), int(m[3])
            else:
                d, mo, y = int(m[1]), _MONTHS[m[2].lower()[:3]], int(m[3])
            return _dt.date(y, mo, d) in self.dates
        except (ValueError, KeyError):
            return False

    def scalar(self, value, file: str, where: str) -> None:
        """A JSON number: an id only if it equals one exactly."""
        if isinstance(value, bool) or not self.numeric_ids:
            return
        if isinstance(value, float) and not value.is_integer():
            return
        s = str(int(value))
        if s in self.numeric_ids:
            self.findings.append(Finding(file, "member_id", where, _shorten(s)))

    # ------------------------------------------------------------------ tables
    def is_count_header(self, header) -> bool:
        words = _norm_words(header)
        if not words:
            return False
        if "_".join(words) in self.count_names:
            return True
        if any(w in _NOT_COUNT_WORDS for w in words):
            return False
        return words[0] in self.count_single or words[-1] in self.count_single

    def is_id_header(self, header) -> bool:
        words = _norm_words(header)
        joined = "_".join(words)
        return bool(words) and any(joined == n or joined.endswith("_" + n) for n in self.id_names)

    def small(self, value):
        """The count if ``value`` reads as a whole number in 1..min_cell-1, else None."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, (int, np.integer, float, np.floating)):
            v = float(value)
        else:
            m = _NUMBER.match(str(value))
            if not m or m[3]:
                return None
            v = float(m[1].replace(",", "") + (m[2] or ""))
        if np.isfinite(v) and v.is_integer() and 1 <= v < self.min_cell:
            return int(v)
        return None

    def table(self, headers: list, rows: list, file: str, where: str,
              row_labels: list | None = None) -> None:
        """Small counts in count-like columns, and member-level id columns.

        ``rows`` are lists aligned with ``headers``; ``row_labels`` (index labels of
        each row) make a row whose label is a count header ("n") a row of counts too.
        """
        count_cols = [k for k, h in enumerate(headers) if self.is_count_header(h)]
        id_cols = [k for k, h in enumerate(headers) if self.is_id_header(h)]
        self.shares(headers, rows, file, where, row_labels)
        for k in id_cols:
            if any(k < len(r) and str(r[k]).strip() not in ("", "None", "nan")
                   for r in rows):
                self.findings.append(Finding(file, "id_column", f"{where}, column "
                                             f"{str(headers[k]).strip()!r}",
                                             f"a member-level column '{str(headers[k]).strip()}'"))
        for r_i, r in enumerate(rows, start=1):
            for k in count_cols:
                if k < len(r):
                    v = self.small(r[k])
                    if v is not None:
                        self.findings.append(Finding(
                            file, "small_cell",
                            f"{where}, row {r_i}, column {str(headers[k]).strip()!r}",
                            f"{str(headers[k]).strip()}={v}"))
            if row_labels is not None and r_i - 1 < len(row_labels):
                lab = row_labels[r_i - 1]
                if lab and self.is_count_header(lab):
                    for k, val in enumerate(r):
                        if k in count_cols:
                            continue
                        v = self.small(val)
                        if v is not None:
                            self.findings.append(Finding(
                                file, "small_cell",
                                f"{where}, row {str(lab).strip()!r}, column "
                                f"{str(headers[k]).strip()!r}", f"{str(lab).strip()}={v}"))

    def shares(self, headers: list, rows: list, file: str, where: str,
               row_labels: list | None = None) -> None:
        """Small counts hidden in shares: a share ``p`` of a group of ``N`` people stands
        for ``p * N`` people with the characteristic and ``N - p * N`` without; either
        one in ``1..min_cell-1`` is a small cell (so is any share of a group smaller than
        ``min_cell``).

        The group sizes ``N`` come from a header such as ``treated (n=14)`` or from a
        row labelled as a count of people (``members``, ``n``; the label may be a cell
        of the row, as in Table 1). Shares are percentages (``42.9%``) and, in rows whose
        ``kind`` column says ``binary`` (or ``share``, ``proportion``), fractions in
        [0, 1].
        """
        heads = [str(h).strip() for h in headers]
        denom: dict[int, float] = {}
        for k, h in enumerate(heads):
            m = _HEADER_N.search(h)
            if m:
                denom[k] = float(m[1].replace(",", ""))
        labels = [[*( [row_labels[r_i]] if row_labels and r_i < len(row_labels) else []),
                   *(v for v in r if isinstance(v, str))] for r_i, r in enumerate(rows)]
        for r, labs in zip(rows, labels):
            if any(lab and self.is_count_header(lab) for lab in labs):
                for k, v in enumerate(r):
                    n = _as_number(v)
                    if k not in denom and n is not None and n >= 0 and float(n).is_integer():
                        denom[k] = n
                break
        if not denom:
            return
        kind_col = next((k for k, h in enumerate(heads) if _norm_words(h) == ["kind"]), None)
        for r_i, r in enumerate(rows, start=1):
            kind = str(r[kind_col]).strip().lower() if kind_col is not None and \
                kind_col < len(r) else ""
            fractions = kind in ("binary", "share", "proportion")
            for k, n in denom.items():
                if k >= len(r) or isinstance(r[k], bool):
                    continue
                v = r[k]
                text = str(v).strip()
                if text.endswith("%") and _NUMBER.match(text):
                    p = _as_number(text.rstrip("%").strip())
                    p = None if p is None else p / 100
                elif fractions:
                    p = _as_number(v)
                else:
                    continue
                if p is None or not 0 <= p <= 1 or n <= 0:
                    continue
                with_ = round(p * n)
                small = [c for c in (with_, n - with_) if 0 < c < self.min_cell]
                if small:
                    lab = next((x for x in labels[r_i - 1] if x.strip()
                                and _as_number(x) is None), f"row {r_i}")
                    self.findings.append(Finding(
                        file, "small_cell",
                        f"{where}, row {str(lab).strip()!r}, column {heads[k]!r}",
                        f"share {text} of {n:g} people implies {int(min(small))}"))

    def html_tables(self, html_text: str, file: str, where: str) -> None:
        soup = BeautifulSoup(html_text, "html.parser")
        for t_i, tab in enumerate(soup.find_all("table"), start=1):
            grid, is_head, is_th = _html_grid(tab)
            if not grid:
                continue
            n_head = 0
            while n_head < len(grid) and is_head[n_head]:
                n_head += 1
            if n_head == 0:
                continue
            width = max(len(r) for r in grid)
            headers = []
            for k in range(width):
                parts = []
                for r in grid[:n_head]:
                    txt = r[k] if k < len(r) else ""
                    if txt and (not parts or parts[-1] != txt):
                        parts.append(txt)
                headers.append(" ".join(parts))
            body = grid[n_head:]
            labels = [" ".join(r[k] for k in range(len(r)) if th[k])
                      for r, th in zip(body, is_th[n_head:])]
            self.table(headers, body, file, f"{where}table {t_i}", labels)

    def text_tables(self, text: str, file: str, where: str) -> None:
        """DataFrame/Series text renderings (right-aligned columns)."""
        for block in re.split(r"\n\s*\n", text):
            lines = [ln for ln in block.splitlines() if ln.strip()]
            lines = [ln for ln in lines if not ln.lstrip().startswith(("[", "dtype:", "Name:"))]
            if len(lines) < 2:
                continue
            head = lines[0]
            if not (head[:1].isspace() or _COLUMN_GAP.search(head)):
                continue            # prose, not a printed table
            cols = [(m.group(), m.end()) for m in re.finditer(r"\S+", head)]
            count_cols = [(h, e) for h, e in cols if self.is_count_header(h)]
            id_cols = [(h, e) for h, e in cols if self.is_id_header(h)]
            for h, e in id_cols:
                self.findings.append(Finding(file, "id_column", f"{where}, column {h!r}",
                                             f"a member-level column '{h}'"))
            for r_i, ln in enumerate(lines[1:], start=1):
                for h, e in count_cols:
                    if len(ln) < e or (len(ln) > e and not ln[e].isspace()):
                        continue
                    m = re.search(r"(\S+)$", ln[:e])
                    v = self.small(m.group()) if m else None
                    if v is not None:
                        self.findings.append(Finding(
                            file, "small_cell", f"{where}, text table row {r_i}, column {h!r}",
                            f"{h}={v}"))
            # Series / key-value lines: "n_treated    5"
            for ln in lines:
                toks = ln.split()
                if (len(toks) == 2 and _COLUMN_GAP.search(ln)
                        and self.is_count_header(toks[0])):
                    v = self.small(toks[1])
                    if v is not None:
                        self.findings.append(Finding(file, "small_cell",
                                                     f"{where}, line {toks[0]!r}",
                                                     f"{toks[0]}={v}"))

    def md_tables(self, text: str, file: str, where: str) -> None:
        lines = text.splitlines()
        i, t_i = 0, 0
        while i < len(lines) - 1:
            if (lines[i].strip().startswith("|")
                    and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1])):
                t_i += 1
                headers = _md_cells(lines[i])
                rows = []
                j = i + 2
                while j < len(lines) and lines[j].strip().startswith("|"):
                    rows.append(_md_cells(lines[j]))
                    j += 1
                self.table(headers, rows, file, f"{where}markdown table {t_i}")
                i = j
            else:
                i += 1

    def json_records(self, obj, file: str, path: str) -> None:
        """Tables stored as records (lists of dicts) or pandas 'split' dicts."""
        if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
            headers = list(dict.fromkeys(k for r in obj for k in r))
            rows = [[r.get(h) for h in headers] for r in obj]
            rows = [["" if v is None else v for v in r] for r in rows]
            self.table(headers, rows, file, path or "$")
        elif (isinstance(obj, dict) and isinstance(obj.get("columns"), list)
              and isinstance(obj.get("data"), list)
              and all(isinstance(r, list) for r in obj["data"])):
            self.table([str(c) for c in obj["columns"]], obj["data"], file, path or "$")
        if isinstance(obj, dict):
            for k, v in obj.items():
                self.json_records(v, file, f"{path}.{k}" if path else str(k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                self.json_records(v, file, f"{path}[{i}]")


def _md_cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|"):
        s = s[:-1]
    return [c.strip() for c in s.split("|")]


def _html_grid(tab):
    """Expand an HTML table (rowspan/colspan) into a text grid.

    Returns (grid, is_header_row, is_th) where is_th marks header cells per row.
    Nested tables are left to their own pass.
    """
    rows = [tr for tr in tab.find_all("tr") if tr.find_parent("table") is tab]
    grid: list[list[str]] = []
    th_grid: list[list[bool]] = []
    head: list[bool] = []
    pending: dict = {}   # (row, col) -> (text, is_th) from a rowspan above
    for r_i, tr in enumerate(rows):
        row: list[str] = []
        ths: list[bool] = []
        cells = [c for c in tr.find_all(["td", "th"]) if c.find_parent("tr") is tr]

        def fill():
            while (r_i, len(row)) in pending:
                txt, th = pending.pop((r_i, len(row)))
                row.append(txt)
                ths.append(th)
        for c in cells:
            fill()
            txt = " ".join(c.get_text(" ", strip=True).split())
            th = c.name == "th"
            try:
                cs = max(1, int(c.get("colspan", 1)))
                rs = max(1, int(c.get("rowspan", 1)))
            except ValueError:
                cs = rs = 1
            for _ in range(min(cs, 1000)):
                col = len(row)
                row.append(txt)
                ths.append(th)
                for d in range(1, min(rs, 10000)):
                    pending[(r_i + d, col)] = (txt, th)
        fill()
        grid.append(row)
        th_grid.append(ths)
        in_head = tr.find_parent("thead") is not None
        head.append(in_head or (bool(cells) and all(c.name == "th" for c in cells)))
    # header rows are the leading run of <thead> / all-<th> rows
    lead, still = [], True
    for h in head:
        still = still and h
        lead.append(still)
    return grid, lead, th_grid


def _strip_data_uris(text: str) -> str:
    """Drop base64 payloads (embedded images): random letters and digits, no text."""
    return re.sub(r"data:[\w/+.\-]+;base64,[A-Za-z0-9+/=\r\n]+",
                  lambda m: "data:;base64," + "\n" * m.group().count("\n"), text)


def scan_outputs(folder, member_ids=None, dates_of_service=None, secrets=(), min_cell: int = 11,
                 *, context_ids=None, count_headers: Iterable[str] = DEFAULT_COUNT_HEADERS,
                 id_headers: Iterable[str] = DEFAULT_ID_HEADERS,
                 skip_dirs: Iterable[str] = _SKIP_DIRS,
                 unscanned_pdfs: str = "fail", scanned_before: Iterable[str] = ()) -> ScanReport:
    """Scan a run's public output folder for anything that must not be published.

    Every file under ``folder`` (recursively; folders named in ``skip_dirs`` such as the
    member-level ``work/`` are left out and listed as not scanned) is read:

    * ``.ipynb``: every string of the notebook: cell sources, outputs (text, HTML,
      JSON, tracebacks) and notebook and cell metadata (papermill's injected
      parameters); base64 images are skipped. DataFrame outputs are checked for small
      counts in their ``text/html`` rendering, or ``text/plain`` when there is no HTML;
      so are printed tables in stream outputs and Markdown tables in markdown cells.
    * ``.html``/``.htm``/``.svg``: the text, raw and HTML-unescaped; ``<table>``s for
      small counts.
    * ``.json``: every key and value; tables stored as records (lists of dicts) or in
      pandas' "split" layout for small counts.
    * ``.md``, ``.txt``, ``.csv``, ``.tsv``: the text; pipe tables, printed tables and
      CSV columns for small counts.
    * ``.pdf``: the text from ``pdftotext`` when that command is installed (poppler);
      otherwise each PDF is a finding of kind ``unscanned`` (``unscanned_pdfs="fail"``,
      default) or is listed in ``not_scanned`` (``"report"``). Tables in PDFs are not
      parsed for small counts; check the HTML they were made from.
    * ``.xlsx``: each sheet as a CSV table (needs openpyxl; without it the file is a
      finding of kind ``unscanned``).
    * data files (Parquet, DuckDB, SQLite, pickles, ``.xls`` ...): a ``data_file``
      finding; member-level data has no place in a public folder.
    * anything else (images ...): listed in ``not_scanned``.

    What is looked for:

    * ``member_ids`` as whole tokens: ``12345`` is found in ``id 12345``, ``12345.0``
      and ``"12,345"`` but not in ``912345``, ``123456`` or ``0.12345``. String ids are
      compared case-insensitively. Very short numeric ids (a few digits) cannot be told
      apart from ordinary numbers and will be reported wherever such a number occurs;
      give them as ``context_ids`` instead.
    * ``context_ids`` as whole tokens where they would identify someone: right after a
      word naming an id (``member 12``, ``member_id=12``, ``Patient ID: 12``, ``MRN 12``,
      ``member #12``; not ``per member 12``).
    * ``dates_of_service`` written as ISO ``2023-05-07`` (also with ``/`` or ``.``, and
      inside timestamps), US ``05/07/2023``, ``5/7/23``, ``5-7-2023``, compact
      ``20230507``, ``May 7, 2023`` and ``7 May 2023``.
    * each of ``secrets`` as a substring anywhere, also HTML-, JSON-, Python- and
      URL-escaped.
    * small counts hidden in shares: a percentage (or, in rows whose ``kind`` column
      says ``binary``, a fraction) of a group whose size is known from the table (a
      header ``(n=14)``, a row labelled ``members`` or ``n``) that implies fewer than
      ``min_cell`` people with, or without, the characteristic.
    * small counts: a whole number in ``1..min_cell-1`` in a table column (or row)
      whose header is a people count: a header equal to one of ``count_headers``, or
      whose first or last word is one (``n``, ``n_treated``, ``n (%)``,
      ``total_members``), unless it also has a word such as ``pct``, ``rate``,
      ``mean``, ``per`` or ``cost``. ``5 (10.0%)`` counts as 5; ``<11`` and ``*`` do not.
    * a column named like ``member_id`` (``id_headers``) in any table: member-level rows.

    Parameters
    ----------
    folder : the output folder.
    member_ids : iterable of ids (ints or strings), e.g. ``members["member_id"]``.
    dates_of_service : iterable of dates (date, Timestamp or ISO strings).
    context_ids : iterable of ids too short to look for everywhere (see above).
    secrets : strings that must not appear (see :func:`redact_params`).
    min_cell : smallest count of people that may be shown (default 11).
    count_headers, id_headers : header names, see above.
    skip_dirs : folder names not scanned (default: ``work``, checkpoints, caches, .git).
    unscanned_pdfs : ``"fail"`` or ``"report"``, see above.
    scanned_before : paths (relative to ``folder``) already scanned for the same things,
        e.g. a brief that was checked before it was written: counted as scanned, not read
        again.

    Returns
    -------
    ScanReport
        ``findings``, ``ok``, ``raise_if_found()``, ``to_frame()``, ``summary()``.

    Examples
    --------
    >>> report = scan_outputs("runs/demo", member_ids=members.member_id,
    ...                       secrets=secrets)                        # doctest: +SKIP
    >>> report.raise_if_found()                                       # doctest: +SKIP
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PrivacyError(f"scan_outputs: {folder} is not a folder")
    if unscanned_pdfs not in ("fail", "report"):
        raise PrivacyError(f"scan_outputs: unscanned_pdfs must be 'fail' or 'report', "
                           f"got {unscanned_pdfs!r}")
    if isinstance(count_headers, str):
        count_headers = [count_headers]
    if isinstance(id_headers, str):
        id_headers = [id_headers]
    sc = _Scanner(member_ids, _to_dates(dates_of_service), secrets,
                  _min_cell("scan_outputs", min_cell), list(count_headers), list(id_headers),
                  context_ids)
    skip, before = set(skip_dirs), set(scanned_before)
    pdftotext = shutil.which("pdftotext")
    scanned, not_scanned = [], []
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        for d in sorted(dirs):
            if d in skip:
                not_scanned.append(((rel_root / d).as_posix() + "/",
                                    "excluded folder (not a public output)"))
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for name in sorted(files):
            rel = (rel_root / name).as_posix()
            skipped = None if rel in before else _scan_file(sc, Path(root) / name, rel,
                                                            pdftotext, unscanned_pdfs)
            if skipped is None:
                scanned.append(rel)
            elif skipped:
                not_scanned.append((rel, skipped))
    findings = tuple(dict.fromkeys(sc.findings))   # same finding twice (raw + unescaped) once
    return ScanReport(str(folder), findings, tuple(scanned), tuple(not_scanned))


def scan_text(texts, member_ids=None, dates_of_service=None, secrets=(), *,
              context_ids=None, file: str = "text") -> tuple:
    """Member ids, dates of service and secrets in pieces of text that are not files:
    a title, a label, a message about to be written to a log.

    The same rules as :func:`scan_outputs` (ids as whole tokens, ``context_ids`` after a
    word naming an id, dates in their usual forms, secrets also escaped).

    Parameters
    ----------
    texts : a string, or a mapping ``{where: text}`` (e.g. dotted params keys).
    member_ids, dates_of_service, secrets, context_ids : as for :func:`scan_outputs`.
    file : the name the findings are reported under.

    Returns
    -------
    tuple of Finding
        Empty when nothing was found.

    Examples
    --------
    >>> [f.kind for f in scan_text({"title": "member M000000123, 2 years"},
    ...                            member_ids=["M000000123"])]
    ['member_id']
    >>> scan_text("2 years of follow-up", member_ids=["M000000123"])
    ()
    """
    if isinstance(texts, str):
        texts = {"text": texts}
    sc = _Scanner(member_ids, _to_dates(dates_of_service), secrets, 11, [], [], context_ids)
    for where, text in texts.items():
        sc.text(text, file, where, lines="\n" in text)
    return tuple(dict.fromkeys(sc.findings))


def _min_cell(caller: str, min_cell) -> int:
    if isinstance(min_cell, bool) or not isinstance(min_cell, (int, np.integer)) or min_cell < 1:
        raise PrivacyError(f"{caller}: min_cell must be a whole number >= 1, got {min_cell!r}")
    return int(min_cell)


def _scan_file(sc: _Scanner, path: Path, rel: str, pdftotext: str | None,
               unscanned_pdfs: str) -> str | None:
    """Scan one file into ``sc``. Returns None when it was read, else why not ("" when the
    reason is already a finding)."""
    suffix = path.suffix.lower()
    if path.is_symlink() and not path.exists():
        return "broken link"
    if suffix in _DATA_SUFFIXES:
        sc.findings.append(Finding(rel, "data_file", "whole file",
                                   f"a {suffix} data file in the public folder"))
        return ""
    if suffix == ".pdf":
        return _scan_pdf(sc, path, rel, pdftotext, unscanned_pdfs)
    if suffix == ".xlsx":
        return _scan_xlsx(sc, path, rel)
    if suffix not in _TEXT_SUFFIXES:
        return f"not a text output ({suffix or 'no suffix'})"
    text = path.read_bytes().decode("utf-8", errors="replace")
    if suffix in (".ipynb", ".json"):
        try:
            obj = json.loads(text)
        except ValueError:
            kind = "notebook JSON" if suffix == ".ipynb" else "JSON"
            sc.text(text, rel, f"raw text (not valid {kind})")
            return None
        if suffix == ".ipynb":
            _scan_notebook(sc, obj, rel)
        else:
            _scan_json(sc, obj, rel, "$")
            sc.json_records(obj, rel, "")
    elif suffix in (".html", ".htm", ".svg"):
        _scan_html(sc, text, rel, "")
    elif suffix in (".csv", ".tsv"):
        _scan_csv(sc, text, rel, "\t" if suffix == ".tsv" else ",")
    else:   # .md, .txt
        sc.text(text, rel, "text")
        sc.md_tables(text, rel, "")
        sc.text_tables(text, rel, "text")
    return None


def _scan_pdf(sc: _Scanner, path: Path, rel: str, pdftotext: str | None,
              unscanned_pdfs: str) -> str | None:
    """The text of a PDF through ``pdftotext``; see :func:`_scan_file` for the return."""
    if pdftotext is None:
        reason = "PDF not scanned: the pdftotext command (poppler) is not installed"
        if unscanned_pdfs == "fail":
            sc.findings.append(Finding(rel, "unscanned", "whole file", reason))
            return ""
        return reason
    try:
        proc = subprocess.run([pdftotext, "-layout", "-enc", "UTF-8", str(path), "-"],
                              capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        sc.findings.append(Finding(rel, "unreadable", "whole file",
                                   f"pdftotext failed: {type(err).__name__}"))
        return ""
    if proc.returncode != 0:
        sc.findings.append(Finding(rel, "unreadable", "whole file",
                                   f"pdftotext exit status {proc.returncode}"))
        return ""
    sc.text(proc.stdout.decode("utf-8", errors="replace"), rel, "PDF text")
    return None


def _scan_html(sc: _Scanner, text: str, file: str, where: str) -> None:
    clean = _strip_data_uris(text)
    sc.text(clean, file, where + "html")
    unescaped = _html.unescape(clean)
    if unescaped != clean:
        before = len(sc.findings)
        sc.text(unescaped, file, where + "html (unescaped)")
        # keep only what the raw pass did not already report at the same line
        seen = {(f.kind, f.excerpt) for f in sc.findings[:before]}
        sc.findings[before:] = [f for f in sc.findings[before:]
                                if (f.kind, f.excerpt) not in seen]
    if "<table" in clean.lower():
        sc.html_tables(clean, file, where)


def _scan_csv(sc: _Scanner, text: str, file: str, delim: str) -> None:
    # secrets and dates over the whole text; ids field by field, because a comma
    # between two short numbers would otherwise read as a thousands separator
    sc.text(text, file, "text", ids=False)
    rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    if not rows:
        return
    for r_i, r in enumerate(rows, start=1):
        for c_i, cell in enumerate(r, start=1):
            sc.text(cell, file, f"row {r_i}, field {c_i}", lines=False, dates=False,
                    secrets=False)
    sc.table(rows[0], rows[1:], file, "csv")


def _scan_xlsx(sc: _Scanner, path: Path, rel: str) -> str | None:
    """Each sheet of an Excel workbook (such as the run's ``tables.xlsx``) as a CSV table."""
    try:
        sheets = read_xlsx(path)
    except Exception as err:  # noqa: BLE001 - a damaged file is a finding, not a crash
        sc.findings.append(Finding(rel, "unreadable", "whole file",
                                   f"not a readable Excel workbook: {type(err).__name__}"))
        return ""
    for sheet, rows in sheets.items():
        buf = io.StringIO()
        csv.writer(buf).writerows([["" if v is None else v for v in r] for r in rows])
        _scan_csv(sc, buf.getvalue(), f"{rel} [{sheet}]", ",")
    return None


def _join_text(v) -> str:
    return "".join(v) if isinstance(v, list) else (v if isinstance(v, str) else "")


def _scan_json(sc: _Scanner, obj, file: str, path: str) -> None:
    """Every key, string and number of a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            sub = f"{path}.{k}"
            if _is_binary_mime(k):
                continue
            sc.text(str(k), file, f"{path} (key)", lines=False)
            _scan_json(sc, v, file, sub)
    elif isinstance(obj, list):
        if (len(obj) > 1 and all(isinstance(v, str) for v in obj)
                and all(v.endswith("\n") for v in obj[:-1])):
            # a notebook's multi-line string, stored as a list of lines
            sc.text("".join(obj), file, path, lines=True)
            return
        for i, v in enumerate(obj):
            _scan_json(sc, v, file, f"{path}[{i}]")
    elif isinstance(obj, str):
        sc.text(obj, file, path, lines="\n" in obj)
    elif isinstance(obj, (int, float)):
        sc.scalar(obj, file, path)


def _scan_notebook(sc: _Scanner, nb: dict, file: str) -> None:
    # every string: sources, outputs, metadata
    _scan_json(sc, nb, file, "notebook")
    for c_i, cell in enumerate(nb.get("cells", []) if isinstance(nb, dict) else []):
        if not isinstance(cell, dict):
            continue
        where = f"cell {c_i} ({cell.get('cell_type', '?')})"
        if cell.get("cell_type") == "markdown":
            sc.md_tables(_join_text(cell.get("source")), file, f"{where} ")
        for o_i, out in enumerate(cell.get("outputs", []) or []):
            if not isinstance(out, dict):
                continue
            ow = f"{where} output {o_i}"
            data = out.get("data") or {}
            if "text/html" in data:
                html_text = _join_text(data["text/html"])
                if "<table" in html_text.lower():
                    sc.html_tables(_strip_data_uris(html_text), file, f"{ow} text/html ")
            elif "text/plain" in data:
                sc.text_tables(_join_text(data["text/plain"]), file, f"{ow} text/plain")
            if out.get("output_type") == "stream":
                sc.text_tables(_join_text(out.get("text")), file,
                               f"{ow} {out.get('name', 'stream')}")
            if "text/markdown" in data:
                sc.md_tables(_join_text(data["text/markdown"]), file, f"{ow} text/markdown ")
