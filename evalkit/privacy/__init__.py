"""Publishing safety: small-cell suppression, secret redaction and a privacy scan.

Three things stand between an evalkit run and a public release:

* :func:`suppress` (:mod:`evalkit.privacy.suppress`) hides table cells that describe
  fewer than ``min_cell`` people (11 by default, the usual health-plan and CMS
  small-cell rule) **and** every cell from which such a count could be worked out again:
  by subtraction from a row or column total (complementary suppression), from a
  percentage or rate computed from it, or from the same count published in another
  table (:func:`suppress_together`).
* :func:`redact_params` and :func:`redact_notebook` (:mod:`evalkit.privacy.redact`) keep
  secrets given as parameters (database passwords, tokens, connection URLs) out of
  executed notebooks: papermill writes injected parameters both into a code cell and
  into ``metadata.papermill.parameters``.
* :func:`scan_outputs` (:mod:`evalkit.privacy.scan`) reads every public output file of a
  run folder (notebooks, HTML, JSON, Markdown, text, and PDFs through ``pdftotext``) and
  reports member ids, dates of service, secrets and small counts it finds, as a
  :class:`ScanReport`; :func:`scan_text` looks at one piece of text the same way.

Everything here returns values; nothing prints, and input DataFrames and dicts are never
modified.
"""
from __future__ import annotations

from .errors import DisclosureError, PrivacyError
from .redact import DEFAULT_SECRET_KEYS, REDACTED, redact_notebook, redact_params, scrub
from .suppress import SuppressionResult, suppress, suppress_shares, suppress_together

#: The scanner's names, imported from :mod:`evalkit.privacy.scan` when first asked for
#: (PEP 562): it loads an HTML parser and a spreadsheet reader (~0.2 s) that the
#: analyses, which only suppress, never use.
_SCAN_NAMES = ("DEFAULT_COUNT_HEADERS", "DEFAULT_ID_HEADERS", "Finding", "ScanReport",
               "scan_outputs", "scan_text")


def __getattr__(name: str):
    """The scanner's names (:data:`_SCAN_NAMES`), imported on first use."""
    if name in _SCAN_NAMES:
        from . import scan
        return getattr(scan, name)
    raise AttributeError(f"module 'evalkit.privacy' has no attribute {name!r}")

__all__ = [
                   "DEFAULT_COUNT_HEADERS",
                   "DEFAULT_ID_HEADERS",
                   "DEFAULT_SECRET_KEYS",
                   "REDACTED",
                   "DisclosureError",
                   "Finding",
                   "PrivacyError",
                   "ScanReport",
                   "SuppressionResult",
                   "redact_notebook",
                   "redact_params",
                   "scan_outputs",
                   "scan_text",
                   "scrub",
                   "suppress",
                   "suppress_shares",
                   "suppress_together",
]
