"""The brief: a finished run's results as ``brief.html`` and ``brief.pdf``.

:func:`write_brief` reads a run folder (``results.json``, ``params.json``), builds the
brief's content for one audience (:func:`build_context`), renders it with the Jinja2
templates in ``evalkit/report/templates`` (:func:`render_html`) and prints the HTML to
PDF with WeasyPrint (:func:`render_pdf`). Everything is rendered offline: the CSS and
the charts (inline SVG drawn by matplotlib) are inside the HTML, and the fonts are the
system's.

The content follows whatever the run recorded: the key findings, charts and tables are
built from the estimates by workbook, outcome and scale, and a section whose estimates
are absent is left out, so a run of two workbooks, or a summary-mode run made from
published figures, gets a brief too.

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
ids when its working database is there) before they replace any earlier brief. A brief
that fails the scan is not written.
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
from ..terms import term_columns as spec_columns
from . import charts, tables
from ..results import write_json_atomic
from .findings import (AUDIENCES, RATIO_SCALES, budget_rows, comparable, key_findings,
                       analysis_tag, outcome_label, primary_estimates)

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
    findings : the key-finding sentences, in order.
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
QUESTIONS = {
    "hmo": "Does referring members to self-help and mutual-aid groups change how much "
           "professional care they use, and does it save the plan money?",
    "research": "Is referral to self-help and mutual-aid groups associated with a change in "
                "members' use of professional care and its cost, and how robust is the "
                "estimate to the method?",
    "clearinghouse": "When people are referred to a self-help or mutual-aid group, do they "
                     "end up needing less professional care, and is the referral worth it?",
}
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


def _ratio_chart(e: pd.DataFrame, audience: str):
    if e.empty:
        return None
    rows = []
    if audience == "research":
        for r in comparable(e).to_dict("records"):
            if r["scale"] in RATIO_SCALES and r.get("ci_low") is not None:
                tag = analysis_tag(r)
                rows.append({"label": f"{outcome_label(r['outcome'])[:34]} ({tag})", **r})
    else:
        for (_, outcome), s in primary_estimates(e).items():
            for scale in RATIO_SCALES:
                if scale in s:
                    label = outcome_label(outcome, audience).replace(
                        "visits to outpatient mental-health services",
                        "outpatient mental-health visits")
                    rows.append({"label": label[:40], **s[scale]})
                    break
    rows = [r for r in rows if r["estimate"] is not None and r["estimate"] > 0]
    if not rows:
        return None
    df = pd.DataFrame(rows)
    xlabel = {"clearinghouse": "compared with similar members not referred (1 = no "
                               "difference; below 1 = less)",
              "hmo": "ratio, self-help referral vs comparison, with 95% CI (below 1 = less)",
              "research": "ratio (rate, hazard or cost), self-help vs comparison, 95% CI, "
                          "log scale"}[audience]
    ax = charts.ratio_plot(df, xlabel)
    title = {"clearinghouse": "How referred members' use of care compared",
             "hmo": "Effects on use of care and cost", "research": "Ratio estimates by method"}
    caption = ("Each dot is the best estimate; the line is "
               + ("the range of plausible values. " if audience == "clearinghouse" else
                  "its 95% confidence interval. ")
               + "Left of the dashed line means less use with self-help referral.")
    return {"title": title[audience], "svg": charts.to_svg(ax, title[audience]),
            "caption": caption}


def _savings_chart(results: dict, e: pd.DataFrame, audience: str):
    rows = []
    head = (results.get("tables") or {}).get("cost_benefit.headline") or []
    for r in head:
        f = str(r.get("figure", ""))
        if r.get("estimate") is not None and r.get("quantity") in (
                "gross_savings", "program_cost", "net_savings"):
            rows.append({"label": f.replace(" per referred member", "")
                         .replace(" (incl. start-up share)", "")[:40],
                         "estimate": r["estimate"], "ci_low": r.get("ci_low"),
                         "ci_high": r.get("ci_high")})
    if not rows and not e.empty:
        ns = e[e["scale"] == "net_savings_per_member"]
        for r in ns.head(1).to_dict("records"):
            rows.append({"label": "net savings", "estimate": r["estimate"],
                         "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high")})
    if not rows:
        return None
    title = "Savings against program cost, per referred member"
    ax = charts.savings_plot(pd.DataFrame(rows))
    cap = ("Bars: best estimate; whiskers: "
           + ("range of plausible values." if audience == "clearinghouse" else
              "95% interval (from the probabilistic sensitivity analysis for net savings)."))
    return {"title": title, "svg": charts.to_svg(ax, title), "caption": cap}


def _adjusted_terms(e: pd.DataFrame) -> list[str]:
    """The terms the adjusted estimates adjusted for, as recorded, in order."""
    rows = e[e["analysis"] == "adjusted"] if "analysis" in e else e.iloc[0:0]
    return list(dict.fromkeys(t for terms in rows.get("adjusted_for", []) for t in terms or []))


def _methods(p, e: pd.DataFrame, audience: str) -> list[str]:
    methods = list(dict.fromkeys(str(m) for m in e.get("method", pd.Series(dtype=str)).dropna()
                                 if str(m)))
    analyses = set(e.get("analysis", pd.Series(dtype=str)).dropna())
    has_did = "prepost" in analyses
    has_adj = "adjusted" in analyses
    has_cox = "model" in e and bool(((e["analysis"] == "survival") & (e["model"] == "Cox")).any())
    has_cb = "net_savings_per_member" in set(e.get("scale", []))
    w, ec = p.windows, p.econ
    per_ref = ec.coordination + ec.facilitation + ec.materials
    out = []
    if p.mode == "summary":
        out.append("Source: figures published for each group (sizes, means, events or rates); "
                   "no member-level data were used." if audience != "clearinghouse" else
                   "These results are worked out from figures that studies have published; no "
                   "information about individual people was used.")
    elif audience == "clearinghouse":
        out.append(f"We compared the health-plan records of members who were referred to "
                   f"self-help groups with similar members who were not, for the "
                   f"{w.followup_days} days after referral and the {w.baseline_days} days before.")
    else:
        out.append(f"Design: observational comparison of members referred to self-help groups "
                   f"with members who were not; outcomes counted over the {w.followup_days} "
                   f"days from the index (referral) date, with the {w.baseline_days} days before "
                   f"as the baseline; use is per member-month of coverage.")
    if has_adj:
        terms = _adjusted_terms(e)
        plain = ", ".join(dict.fromkeys(spec_columns(terms))).replace("_", " ")
        out.append(f"Adjustment: differences between the groups before referral ({plain}) "
                   "are taken into account."
                   if audience == "clearinghouse" else
                   "Adjusted comparison: count models (Poisson or negative binomial family chosen "
                   "by AIC) and a two-part cost model, with effects averaged over members "
                   f"(recycled predictions), adjusting for {', '.join(terms)}.")
    if has_did:
        out.append("Before-and-after check: each group's change from the year before referral "
                   "to the year after is compared." if audience == "clearinghouse" else
                   "Pre/post comparison: difference-in-differences, each member's follow-up "
                   "against their own baseline, with member and period fixed effects and "
                   "standard errors clustered by member.")
    if has_cox:
        out.append("Timing: how soon members made a first emergency-room visit." if
                   audience == "clearinghouse" else
                   "Time to the first ER visit: Kaplan-Meier curves by group and an adjusted "
                   "Cox model, censored at the end of coverage or follow-up.")
    if has_cb:
        out.append(f"Value: savings against program costs of ${per_ref:,.0f} per referred "
                   f"member plus ${ec.fixed_startup:,.0f} start-up, over {ec.horizon_years} "
                   f"year(s), from the {ec.perspective}'s point of view" +
                   ("." if audience == "clearinghouse" else
                    f", discounted at {ec.discount_rate:.0%} a year; uncertainty from "
                    f"{ec.psa_draws:,} probabilistic draws."))
    if audience == "research":
        out.append(f"Bootstrap replicates for cost intervals: {p.models.bootstrap_replicates:,}; "
                   f"seed {p.seed}. Methods as recorded:")
        out += [f"– {m}" for m in methods]
    return out


def _limitations(p, e: pd.DataFrame, audience: str) -> list[str]:
    plain = audience == "clearinghouse"
    out = []
    if p.mode == "summary":
        out.append("The results come from published studies, not from your own members; "
                   "people, programs and health plans differ, so the figures may not carry "
                   "over." if plain else
                   "Published summary figures only: the comparison inherits the original "
                   "studies' designs and populations and cannot be adjusted further; "
                   "transferring it to another plan is an assumption.")
    out.append("People were not assigned to referral at random. Those who accept a referral "
               "may differ (for example in motivation or family support) in ways the records "
               "do not show, so the results show what went together, not proof that referral "
               "caused the difference." if plain else
               "Observational design: referral was not randomized. Adjustment removes "
               "differences in measured characteristics only; unmeasured confounding (e.g. "
               "motivation, social support, severity not captured in claims) can bias the "
               "estimates, which show association, not proof of cause.")
    if "prepost" in set(e.get("analysis", pd.Series(dtype=str)).dropna()):
        out.append("The before-and-after check assumes both groups would have changed in the "
                   "same way without referral. If referral often follows a crisis, use may "
                   "drop afterwards anyway." if plain else
                   "Pre/post designs assume parallel trends: without referral both groups "
                   "would have changed alike. Referral that follows a crisis invites "
                   "regression to the mean, and events at the time of referral can move both "
                   "use and referral.")
    if "net_savings_per_member" in set(e.get("scale", [])):
        out.append(f"Savings count the {p.econ.perspective}'s costs over "
                   f"{p.econ.horizon_years} year(s) with the program costs given; other "
                   "benefits (well-being, family, work) are not counted.")
    if audience == "research":
        out.append("Several outcomes are compared without adjustment for multiplicity; "
                   "intervals are per comparison.")
    if p.mode == "claims" and p.data.source == "synthetic":
        out.insert(0, "These results come from a synthetic (generated) health plan and only "
                      "illustrate the method; they say nothing about a real program.")
    return out


def _assumptions(results: dict) -> list[str]:
    """What the workbooks recorded as assumed (tables named ``*.assumptions``)."""
    out = []
    for name, rows in (results.get("tables") or {}).items():
        if name.endswith(".assumptions"):
            out += [str(r["assumption"]) for r in rows
                    if isinstance(r, dict) and r.get("assumption")]
    return out


def _guidance(findings, audience: str) -> list[str]:
    if audience != "clearinghouse":
        return []
    use = [f for f in findings if f.topic in ("use", "time")]
    fewer = [f for f in use if f.clear and (" fewer " in f.text or " less " in f.text)]
    out = ["Offer referral to a self-help or mutual-aid group alongside professional care, "
           "not instead of it."]
    if fewer:
        out.append("In these data, referred members needed less professional care on at least "
                   "one measure, and the whole range of plausible values points that way.")
    else:
        out.append("These data do not show a clear change in professional care; referral can "
                   "still be offered for the support it gives, but should not be justified by "
                   "savings alone.")
    out.append("Ask the person what kind of group suits them, give a named contact and a "
               "meeting time, and follow up after the first meeting.")
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
    findings = key_findings(est, audience, followup_days=p.windows.followup_days,
                            horizon_years=p.econ.horizon_years) if not est.empty else []
    kw = {"public": public, "min_cell": min_cell}
    # summary mode: the group sizes belong to different published studies; none is "the" cohort
    cohort = None if p.mode == "summary" else tables.cohort_table(results, est_all, **kw)
    tabs = [cohort]
    if audience in ("hmo", "research"):
        tabs.append(tables.rates_table(results, audience, **kw))
        tabs.append(tables.headline_table(results, audience))
    if audience == "hmo":
        tabs.append(tables.budget_table(budget_rows(est)))
    if audience == "research":
        tabs.append(tables.table1(results, **kw))
        tabs.append(tables.model_choice_table(results))
        tabs.append(tables.survival_table(results, **kw))
        tabs.append(tables.sensitivity_table(results))
        for name, rows in (results.get("tables") or {}).items():
            if any(w in name for w in tables.SENSITIVITY_WORDS):
                tabs.append(tables.generic_table(name, rows, **kw))
        tabs.extend(tables.estimate_tables(est_all, audience, **kw))
        tabs.append(tables.budget_table(budget_rows(est)))
    if audience == "clearinghouse":
        tabs.append(tables.headline_table(results, audience))
    tabs = [t for t in tabs if t is not None and not t.frame.empty]
    chart_list = [c for c in (_ratio_chart(est, audience), _savings_chart(results, est, audience))
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
    notes = []
    if withheld:
        notes.append(f"{withheld} estimate(s) resting on fewer than {min_cell} members in a "
                     "group are not shown in the findings or charts.")
    members = None
    if cohort is not None:
        m = dict(zip(cohort.frame["group"], cohort.frame["members"]))
        members = (m.get("Self-help referral"), m.get("Comparison"))
    return {
        "title": p.title, "kind": KINDS[audience], "audience": audience,
        "question": QUESTIONS[audience], "members": members, "findings": findings,
        "charts": chart_list, "tables": tabs, "methods": _methods(p, est_all, audience),
        "limitations": _limitations(p, est_all, audience) + _assumptions(results),
        "guidance": _guidance(findings, audience), "provenance": provenance,
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


def _run_scan_targets(run_dir: Path) -> dict:
    """What the pre-publication scan looks for (:func:`evalkit.prepare.scan_targets`), or
    nothing when the working database cannot be read (summary mode, a copied folder)."""
    try:
        return scan_targets(run_dir)
    except Exception:  # noqa: BLE001 - no database (summary mode, a copied run folder)
        return {}


def write_brief(run_dir: str | Path, *, audience: str | None = None, results: dict | None = None,
                params=None, member_ids=None, stem: str = "brief") -> Brief:
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
        working database when it is there.

    Returns
    -------
    Brief

    Raises
    ------
    BriefError
        Missing or failed run, unknown audience, or a rendering failure.
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
    except Exception as err:  # noqa: BLE001 - a template error is reported as a brief error
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
        except Exception as err:  # noqa: BLE001 - WeasyPrint raises many kinds
            raise BriefError(f"printing brief.pdf failed: {type(err).__name__}: {err}") from err
        if context["public"]:
            targets = ({"member_ids": member_ids} if member_ids is not None
                       else _run_scan_targets(run_dir))
            report = scan_outputs(partial, min_cell=context["min_cell"], **targets)
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
                  context["estimates_withheld"], tuple(f.text for f in context["findings"]))
    if from_disk and stem == "brief" and isinstance(results.get("run"), dict):
        # the run's own brief re-rendered: say so in results.json
        write_json_atomic(run_dir / "results.json",
                          {**results, "run": {**results["run"], "brief": brief.to_dict(run_dir)}})
    return brief
