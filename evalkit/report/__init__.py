"""The report layer: a finished run's results as a brief (HTML and PDF).

``write_brief(run_dir)`` makes ``brief.html`` and ``brief.pdf`` for the audience in the
params (``report.audience``: ``hmo``, ``research`` or ``clearinghouse``), safe to
publish when ``report.public`` is true. See :mod:`evalkit.report.brief`.
"""
from .brief import AUDIENCES, Brief, BriefError, build_context, render_html, render_pdf, write_brief

__all__ = ["AUDIENCES", "Brief", "BriefError", "build_context", "render_html", "render_pdf",
           "write_brief"]
