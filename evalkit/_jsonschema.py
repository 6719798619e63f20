"""jsonschema, imported for nbformat without the checker of the "iri" formats.

jsonschema adds a checker of the "iri" and "iri-reference" string formats when the
rfc3987-syntax package is installed (JupyterLab brings it, through jupyter-events), and
that package compiles 38 grammars when it is imported: 1.4 s of the start of every
``evalkit run`` and of every process that loads the runner, on the machines measured.
nbformat validates notebooks against schemas that use no string format and checks none,
so the runner and :mod:`evalkit.kernels` import this module before nbformat: it imports
jsonschema with that package hidden, and puts it back, so that anything else in the
process can still import it (jsonschema alone then leaves the "iri" formats unchecked).
"""
from __future__ import annotations

import sys

_HIDDEN = "rfc3987_syntax"


def _import_without_iri_checks() -> None:
    if "jsonschema" in sys.modules or _HIDDEN in sys.modules:
        return                          # imported already: nothing left to save
    sys.modules[_HIDDEN] = None         # makes ``import rfc3987_syntax`` raise ImportError
    try:
        import jsonschema  # noqa: F401
    finally:
        del sys.modules[_HIDDEN]


_import_without_iri_checks()
