"""The brief: a finished run's results as ``brief.html`` and ``brief.pdf``.

:func:`write_brief` reads a run folder (``results.json``, ``params.json``), builds the
brief's content for one audience (:func:`build_context`), renders it with the Jinja2
templates in ``evalkit/report/templates`` (:func:`render_html`) and prints the HTML to
PDF with WeasyPrint (:func:`render_pdf`). Everything is rendered offline: the CSS and
the charts (inline SVG drawn by matplotlib) are inside the HTML, and the fonts are the
system's.

The content follows whatever the run recorded: the key findings, charts and tables are
built from the estimates by outcome and scale, and a section whose estimates are absent
is left out, so a run of two workbooks, or a summary-mode run made from published
figures, gets a brief too. The study's shape, its arms, unit and outcome labels, and
whether it was randomized come from the run's spec (:mod:`evalkit.report.story`): they
decide the question, the methods and the limitations; each outcome leads with one main
result and its other analyses follow under their labels (:mod:`evalkit.report.findings`).

Audiences (``report.audience`` in the params, or ``evalkit brief RUN --audience``):

``hmo``
    plan leaders and finance: per 1,000 members per year, PMPM, net savings, ROI and
    budget impact when recorded.
``research``
    methods in detail, diagnostics (balance, model choice), sensitivity, and every
    estimate table.
``clearinghouse``
    plain language for people who refer to self-help groups: no statistical jargon, an
    interval is "a range of plausible values", and a short referral guidance.

Publishing safety (``report.public: true``): every table holding counts of people goes
through :func:`evalkit.privacy.suppress`; estimates resting on fewer than ``min_cell``
members in a group are left out of the sentences and charts; a results table with a
member-level column (``member_id`` ...) makes the brief refuse to render; and the
rendered files are scanned (:func:`evalkit.privacy.scan_outputs`, with the run's member
ids and dates of service from its working database) before they replace any earlier
brief. A brief that fails the scan is not written, nor is a public brief of member-level
data whose working database cannot be read (a run folder copied without ``work/``).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import weasyprint
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from .._version import __version__
from ..data.source import describe_source
from ..errors import EvalkitError
from ..params import validate
from ..prepare import scan_targets
from ..privacy import DisclosureError, scan_outputs
from ..results import FAILED_SHARE_LIMIT, write_json_atomic
from . import charts, story, tables
from .findings import (
    APART,
    AUDIENCES,
    RATIO_SCALES,
    analysis_tag,
    budget_rows,
    comparable,
    direction,
    key_findings,
    primary_estimates,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
HTML_NAME, PDF_NAME = "brief.html", "brief.pdf"

__all__ = ["AUDIENCES", "Brief", "BriefError", "build_context", "render_html", "render_pdf",
           "write_brief"]


class BriefError(EvalkitError):
    """The brief could not be made (missing or failed run, bad audience, rendering error)."""


@dataclass(frozen=True)
class Brief:
    """What :func:`write_brief` wrote.

    Attributes
    ----------
    html, pdf : paths of ``brief.html`` and ``brief.pdf``.
    audience : the audience rendered for.
    public : whether publishing safety was applied.
    cells_suppressed : table cells hidden by small-cell suppression.
    estimates_withheld : estimates left out of sentences and charts because a group
        had fewer than ``min_cell`` members (public briefs only).
    findings : the key-finding sentences, in order, each after its label (the outcome,
        or the analysis for another analysis of the outcome above it).
    """

    html: Path
    pdf: Path
    audience: str
    public: bool
    cells_suppressed: int
    estimates_withheld: int
    findings: tuple

    def to_dict(self, run_dir: Path | None = None) -> dict:
        """The ``run.brief`` block of results.json (paths relative to the run folder)."""
        rel = (lambda p: p.name) if run_dir is None else (
            lambda p: os.path.relpath(p, run_dir))
        return {"html": rel(self.html), "pdf": rel(self.pdf), "audience": self.audience,
                "public": self.public, "cells_suppressed": self.cells_suppressed,
                "estimates_withheld": self.estimates_withheld}


# ====================================================================== content
KINDS = {"hmo": "Brief for plan leadership", "research": "Research summary",
         "clearinghouse": "Plain-language brief"}


def _params_obj(raw: dict):
    return validate(raw)


def _withhold_small(e: pd.DataFrame, public: bool, min_cell: int) -> tuple[pd.DataFrame, int]:
    """Public briefs: leave out of sentences and charts the estimates whose group sizes
    (n_treated, n_control) include one of 1..min_cell-1 members."""
    if not public or e.empty:
        return e, 0
    small = pd.Series(False, index=e.index)
    for c in ("n_treated", "n_control"):
        if c in e:
            n = pd.to_numeric(e[c], errors="coerce")
            small |= (n > 0) & (n < min_cell)
    return e[~small], int(small.sum())


def _refuse_member_level(results: dict) -> None:
    """A results table with a member-level id column cannot go into a public brief."""
    bad = []
    for name, rows in (results.get("tables") or {}).items():
        cols = {k for r in rows if isinstance(r, dict) for k, v in r.items()
                if v not in (None, "")}
        bad += [f"table '{name}', column '{c}'" for c in sorted(cols) if tables.is_id_column(c)]
    for i, rec in enumerate(results.get("estimates") or []):
        bad += [f"estimate {i}, field '{k}'" for k in rec if tables.is_id_column(k)]
    if bad:
        raise DisclosureError(
            "the brief is public but results.json holds member-level data ("
            + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else "") + "). Record only "
            "aggregated tables in the workbooks (no member id column), then re-run.")


def _ratio_chart(e: pd.DataFrame, audience: str, st: story.Study):
    if e.empty or st.shape in ("planning", "k_groups", "survey"):
        return None
    rows = []
    if audience == "research":
        for r in comparable(e).to_dict("records"):
            if r["scale"] in RATIO_SCALES and r.get("ci_low") is not None and \
                    r.get("analysis") not in APART:
                rows.append({"label": f"{st.label(r['outcome'])[:34]} ({analysis_tag(r)})", **r})
    else:
        for outcome, s in primary_estimates(e, st.primary).items():
            for scale in RATIO_SCALES:
                if scale in s:
                    label = st.label(outcome, audience)
                    if len(label) > 40:         # a long plain label: the spec's short one
                        label = st.label(outcome)
                    rows.append({"label": label[:40], **s[scale]})
                    break
    rows = [r for r in rows if r["estimate"] is not None and r["estimate"] > 0]
    if not rows:
        return None
    df = pd.DataFrame(rows)
    arm = "the intervention arm" if st.mode == "summary" else st.treated
    xlabel = {"clearinghouse": f"{arm} compared with {st.control} (1 = no difference; "
                               "below 1 = less)",
              "hmo": "ratio, intervention vs comparison, with 95% CI (below 1 = less)",
              "research": "ratio (rate, hazard or cost), intervention vs comparison, 95% CI, "
                          "log scale"}[audience]
    ax = charts.ratio_plot(df, xlabel)
    title = {"clearinghouse": "How the groups compared",
             "hmo": "Main results as ratios", "research": "Ratio estimates by method"}
    caption = ("Each dot is the best estimate; the line is "
               + ("the range of plausible values. " if audience == "clearinghouse" else
                  "its 95% confidence interval. ")
               + f"Left of the dashed line means less {st.versus}.")
    return {"title": title[audience], "svg": charts.to_svg(ax, title[audience]),
            "caption": caption}


#: The savings chart's bars: the headline's quantity -> its label (the axis says per whom;
#: {h} is the horizon).
_SAVINGS_BARS = {"gross_savings": "gross savings per year",
                 "program_cost": "program cost over {h}", "net_savings": "net savings over {h}"}


def _savings_chart(results: dict, e: pd.DataFrame, audience: str, st: story.Study,
                   horizon_years: float):
    rows = []
    head = (results.get("tables") or {}).get("cost_benefit.headline") or []
    for r in head:
        if r.get("estimate") is not None and r.get("quantity") in _SAVINGS_BARS:
            h = f"{horizon_years:g} year" + ("" if horizon_years == 1 else "s")
            rows.append({"label": _SAVINGS_BARS[r["quantity"]].format(h=h),
                         "estimate": r["estimate"],
                         "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high")})
    if not rows and not e.empty:
        ns = e[e["scale"] == "net_savings_per_member"]
        for r in ns.head(1).to_dict("records"):
            rows.append({"label": "net savings", "estimate": r["estimate"],
                         "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high")})
    if not rows:
        return None
    title = f"Savings against program cost, per {st.per_treated}"
    ax = charts.savings_plot(pd.DataFrame(rows), f"$ per {st.per_treated}")
    cap = ("Bars: best estimate; whiskers: "
           + ("range of plausible values." if audience == "clearinghouse" else
              "95% interval (from the probabilistic sensitivity analysis for net savings)."))
    return {"title": title, "svg": charts.to_svg(ax, title), "caption": cap}


def _guidance(findings, audience: str, st: story.Study, e: pd.DataFrame) -> list[str]:
    """Advice on referral for a clearinghouse brief: only for a study of referral to
    self-help groups (the claims default arms, or published self-help figures in summary
    mode); a study of another intervention gets none, since it would not be true of it.
    Whether use of care went the way the study counts as good is read from each clear
    main result's record (:func:`direction`) and the spec's good direction of its
    outcome, never from the finding's words."""
    if (audience != "clearinghouse" or st.shape in ("planning", "survey", "k_groups")
            or not (st.default_arms or st.mode == "summary")):
        return []
    out = ["Offer referral to a self-help or mutual-aid group alongside professional care, "
           "not instead of it."]
    if st.shape == "time_to_event":
        for f in findings:
            if f.role == "main" and f.topic == "time":
                out.append(f"In these data the rate of {f.label.lower()} clearly differed "
                           f"between {st.treated} and {st.control}; the whole range of "
                           "plausible values points the same way." if f.clear else
                           f"These data do not show a clear difference in "
                           f"{f.label.lower()}.")
    else:
        main = primary_estimates(e, st.primary) if not e.empty else {}
        went: dict = {"better": {}, "worse": {}}
        for f in findings:
            if f.topic == "use" and f.role == "main" and f.clear:
                way, good = direction(main.get(f.outcome, {})), st.good_of(f.outcome)
                if way and good:
                    went["better" if way == good else "worse"][st.label(f.outcome,
                                                                        audience)] = way
        for kind, words in went.items():
            if words:
                moved = " and ".join(dict.fromkeys(words.values()))
                out.append(f"In these data, {story.listed(list(words))} came out {moved} "
                           f"{st.versus}, "
                           + ("the way the study counts as better; the whole range of "
                              "plausible values points that way." if kind == "better" else
                              "the way the study counts as worse; referral should not be "
                              "justified by savings."))
        if not (went["better"] or went["worse"]):
            out.append("These data do not show a clear change in professional care; referral "
                       "can still be offered for the support it gives, but should not be "
                       "justified by savings alone.")
    out.append("Ask the person what kind of group suits them, give a named contact and a "
               "meeting time, and follow up after the first meeting.")
    return out


def _sections(findings) -> list[dict]:
    """Findings grouped for the page: each outcome's main result with its other analyses
    under it, then the findings not tied to one outcome (value, budget, planning)."""
    out: list[dict] = []
    by_outcome: dict = {}
    for f in findings:
        if f.role == "main":
            sec = {"label": f.label, "main": f, "others": []}
            by_outcome[f.outcome] = sec
            out.append(sec)
        elif f.role == "other" and f.outcome in by_outcome:
            by_outcome[f.outcome]["others"].append(f)
        else:
            out.append({"label": f.label, "main": f, "others": []})
    return out


def build_context(results: dict, params, audience: str | None = None) -> dict:
    """Everything the template shows, for one audience.

    Parameters
    ----------
    results : the mapping in results.json (``run``, ``estimates``, ``tables``).
    params : the validated params (:class:`evalkit.params.Params` or the params.json
        mapping).
    audience : ``hmo``, ``research`` or ``clearinghouse``; default ``report.audience``.

    Returns
    -------
    dict with the title, question, findings, charts, tables (``BriefTable``), methods,
    limitations, guidance and provenance, plus ``cells_suppressed`` and
    ``estimates_withheld``.
    """
    p = params if hasattr(params, "report") else _params_obj(params)
    audience = audience or p.report.audience
    if audience not in AUDIENCES:
        raise BriefError(f"audience {audience!r} is not known; use one of "
                         f"{', '.join(AUDIENCES)}")
    public, min_cell = p.report.public, p.report.min_cell
    if public:
        _refuse_member_level(results)
    est_all = pd.DataFrame(results.get("estimates") or [])
    if not est_all.empty:
        for c in ("ci_low", "ci_high", "p_value", "std_error", "estimate"):
            if c in est_all:
                est_all[c] = pd.to_numeric(est_all[c], errors="coerce")
    est, withheld = _withhold_small(est_all, public, min_cell)
    st = story.study_of(results, p)
    findings = key_findings(est, audience, study=st, tables=results.get("tables") or {},
                            followup_days=p.windows.followup_days,
                            horizon_years=p.econ.horizon_years,
                            discount_rate=p.econ.discount_rate,
                            uptake=p.econ.uptake) if not est.empty else []
    kw = {"public": public, "min_cell": min_cell}
    # summary mode: the group sizes belong to different published studies; none is "the"
    # cohort. Counts shown in several tables are suppressed together (an arm's size, its n)
    arms = st.arms
    no_cohort = p.mode == "summary" or st.shape == "k_groups"
    linked = {} if no_cohort else tables.linked_cells(results, est_all, audience=audience, **kw)
    cohort = None if no_cohort else tables.cohort_table(
        results, est_all, hide=linked.get("cohort", ()), arms=arms, unit=st.unit, **kw)
    tabs = [cohort]
    if audience in ("hmo", "research"):
        tabs.append(tables.rates_table(results, audience, study=st, **kw))
        tabs.append(tables.headline_table(results, audience, st, p.econ.horizon_years))
    if audience == "hmo":
        tabs.append(tables.budget_table(budget_rows(est)))
    if audience == "research":
        tabs.append(tables.table1(results, study=st, **kw))
        tabs.append(tables.model_choice_table(results))
        tabs.append(tables.survival_table(results, hide=linked.get("survival", ()), study=st,
                                          **kw))
        tabs.append(tables.sensitivity_table(results, st))
        for name, rows in (results.get("tables") or {}).items():
            if any(w in name for w in tables.SENSITIVITY_WORDS):
                tabs.append(tables.generic_table(name, rows, **kw))
        tabs.extend(tables.estimate_tables(est_all, audience, linked=linked, study=st, **kw))
        tabs.append(tables.budget_table(budget_rows(est)))
    if audience == "clearinghouse":
        tabs.append(tables.headline_table(results, audience, st, p.econ.horizon_years))
    tabs = [t for t in tabs if t is not None and not t.frame.empty]
    chart_list = [c for c in (_ratio_chart(est, audience, st),
                              _savings_chart(results, est, audience, st,
                                             p.econ.horizon_years))
                  if c is not None]
    run = results.get("run") or {}

    def when(s):
        if not s:
            return None
        try:
            return _dt.datetime.fromisoformat(s).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            return str(s)
    provenance = [
        ("Data", describe_source(p).text),
        ("Workbooks", ", ".join(f"{w['workbook']} ({w['status']})" for w in run.get("workbooks", []))
         or "none recorded"),
        ("Run id", run.get("run_id") or "not recorded"),
        ("Params hash (SHA-256)", run.get("params_hash") or p.digest()),
        ("Data fingerprint (SHA-256)", run.get("data_fingerprint") or "not recorded"),
        ("evalkit version", run.get("evalkit_version") or __version__),
        ("Seed", str(run.get("seed", p.seed))),
        ("Run started", when(run.get("started")) or "not recorded"),
    ]
    if run.get("finished"):
        provenance.append(("Run finished", when(run["finished"])))
    provenance.append(("Publishing safety", (
        f"public: counts of fewer than {min_cell} people suppressed (* in tables)"
        if public else "not public: for internal use; set report.public to publish")))
    cells = sum(t.suppressed for t in tabs)
    notes = story.replicate_notes(st, est_all, FAILED_SHARE_LIMIT)
    if withheld:
        notes.append(f"{withheld} estimate(s) resting on fewer than {min_cell} members in a "
                     "group are not shown in the findings or charts.")
    members = None
    if cohort is not None and not cohort.suppressed:    # no sentence built on a hidden count
        m = dict(zip(cohort.frame["group"], cohort.frame[st.unit]))
        members = (m.get(arms[0]), m.get(arms[1]))
    outcomes = list(dict.fromkeys(f.outcome for f in findings if f.role == "main"))
    return {
        "title": p.title, "kind": KINDS[audience], "audience": audience,
        "question": story.question(st, audience, outcomes, p),
        "members": members, "who": story.who(st, members), "findings": findings,
        "sections": _sections(findings), "shape": st.shape,
        "charts": chart_list, "tables": tabs, "methods": story.methods(st, p, est_all, audience),
        "limitations": story.limitations(st, p, est_all, audience),
        "assumptions": story.assumptions(p, results, est_all, st),
        "guidance": _guidance(findings, audience, st, est), "provenance": provenance,
        "notes": notes, "public": public, "min_cell": min_cell, "mode": p.mode,
        "cells_suppressed": cells, "estimates_withheld": withheld,
        "interval_words": ("range of plausible values" if audience == "clearinghouse"
                           else "95% confidence interval (CI)"),
    }


# ====================================================================== rendering
def _environment():
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                       autoescape=select_autoescape(["html", "j2"], default_for_string=True),
                       trim_blocks=True, lstrip_blocks=True)


def render_html(context: dict) -> str:
    """The brief as one self-contained HTML page (CSS and charts inline)."""
    ctx = dict(context)
    ctx["charts"] = [{**c, "svg": Markup(c["svg"])} for c in context["charts"]]
    ctx["css"] = Markup((TEMPLATES / "brief.css").read_text())
    return _environment().get_template("brief.html.j2").render(**ctx)


def render_pdf(html: str, path: str | Path) -> Path:
    """Print the HTML to PDF with WeasyPrint (offline: nothing in the page is fetched)."""

    def no_fetch(url, *args, **kwargs):
        raise BriefError(f"the brief tried to load {url!r}; it must be self-contained")
    quiet = [logging.getLogger(n) for n in ("weasyprint", "fontTools")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        weasyprint.HTML(string=html, base_url=str(TEMPLATES),
                        url_fetcher=no_fetch).write_pdf(str(path))
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    return Path(path)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise BriefError(f"{path} is missing: {what}. Make a brief from a finished run "
                         "folder (the --out of `evalkit run`).")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise BriefError(f"{path} is not valid JSON ({err}); re-run the analysis") from None


def _run_scan_targets(run_dir: Path, mode: str) -> dict:
    """What the pre-publication scan of a public brief looks for
    (:func:`evalkit.prepare.scan_targets`: the run's member ids and dates of service,
    from its working database).

    A summary-mode run holds published figures only, so without its database there is
    nothing of a member's to look for. Any other run whose database cannot be read (a
    run folder copied without ``work/``) cannot be checked, and a public brief is not
    made from it unchecked: :class:`BriefError` says why and what to do."""
    try:
        return scan_targets(run_dir)
    except Exception as err:  # noqa: BLE001 - any reason the database cannot be read
        if mode == "summary":
            return {}
        raise BriefError(
            f"the public brief was not written: its check for member ids and dates of "
            f"service needs the run's working database ({run_dir / 'work'}), which cannot "
            f"be read ({type(err).__name__}: {err}). Make the public brief in the run "
            "folder that holds work/ (the --out of `evalkit run`), or copy work/ with it; "
            "an internal brief (report.public: false) needs no database.") from None


def write_brief(run_dir: str | Path, *, audience: str | None = None, results: dict | None = None,
                params=None, member_ids=None, stem: str = "brief", secrets=()) -> Brief:
    """Render ``brief.html`` and ``brief.pdf`` into a run folder.

    Parameters
    ----------
    run_dir : the run's output folder.
    audience : override ``report.audience`` (``hmo``, ``research``, ``clearinghouse``).
    stem : the files' name without suffix; ``brief`` (the run's own brief, recorded in
        results.json) or e.g. ``brief-research`` for a copy written for another
        audience beside it (``evalkit brief RUN --audience research``), which leaves
        the run's own brief and its record untouched.
    results : the results mapping; default: read ``results.json`` (the runner passes the
        one it is assembling).
    params : validated params; default: read ``params.json``.
    member_ids : ids the public brief is scanned for; default: read from the run's
        working database (with its dates of service). A public brief of a run with
        member-level data whose database cannot be read is refused (BriefError).
    secrets : strings the public brief must not hold (the run's redacted secrets); with
        them the brief's scan is the whole pre-publication check of its two files, and
        the run's scan of the folder does not read them again.

    Returns
    -------
    Brief

    Raises
    ------
    BriefError
        Missing or failed run, unknown audience, a rendering failure, or a public brief
        of member-level data whose working database cannot be read for its scan.
    DisclosureError
        Public brief only: member-level data in results.json, or the rendered brief
        holds member ids or small counts (nothing is written then).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BriefError(f"run folder {run_dir} does not exist")
    if params is None:
        params = _params_obj(_read_json(run_dir / "params.json", "the run's validated params"))
    from_disk = results is None
    if from_disk:
        results = _read_json(run_dir / "results.json", "the run's results")
    status = (results.get("run") or {}).get("status")
    if status == "failed":
        raise BriefError(f"the run in {run_dir} failed (see results.json); fix it and re-run "
                         "before making a brief")
    context = build_context(results, params, audience)
    try:
        html = render_html(context)
    except EvalkitError:
        raise
    except Exception as err:
        raise BriefError(f"rendering brief.html failed: {type(err).__name__}: {err}") from err
    partial = run_dir / ".brief-partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        html_name, pdf_name = f"{stem}.html", f"{stem}.pdf"
        (partial / html_name).write_text(html, encoding="utf-8")
        try:
            render_pdf(html, partial / pdf_name)
        except EvalkitError:
            raise
        except Exception as err:
            raise BriefError(f"printing brief.pdf failed: {type(err).__name__}: {err}") from err
        if context["public"]:
            targets = ({"member_ids": member_ids} if member_ids is not None
                       else _run_scan_targets(run_dir, context["mode"]))
            report = scan_outputs(partial, min_cell=context["min_cell"], secrets=secrets,
                                  **targets)
            if not report.ok:
                raise DisclosureError(
                    "the public brief was not written: " + "; ".join(
                        f"{f.file}: {f.kind} at {f.where} ({f.excerpt})"
                        for f in report.findings[:10]), report.findings)
        for name in (html_name, pdf_name):
            os.replace(partial / name, run_dir / name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    brief = Brief(run_dir / html_name, run_dir / pdf_name, context["audience"],
                  context["public"], context["cells_suppressed"],
                  context["estimates_withheld"],
                  tuple(f"{f.label}: {f.text}" if f.label else f.text
                        for f in context["findings"]))
    if from_disk and stem == "brief" and isinstance(results.get("run"), dict):
        # the run's own brief re-rendered: say so in results.json
        write_json_atomic(run_dir / "results.json",
                          {**results, "run": {**results["run"], "brief": brief.to_dict(run_dir)}})
    return brief
