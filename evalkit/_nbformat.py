"""nbformat, imported without jsonschema's checker of "iri" strings.

jsonschema, which nbformat loads, adds a checker of the "iri" and "iri-reference" string
formats when the rfc3987-syntax package is installed (JupyterLab brings it, through
jupyter-events), and that package compiles 38 grammars when it is imported: 1.4 s of the
start of every ``evalkit run`` and of every process that loads the runner, on the machines
measured. nbformat validates notebooks against schemas that use no string format and
checks none, so the runner and :mod:`evalkit.kernels` take nbformat from here: it is
imported with that package hidden, which is put back afterwards, so that anything else in
the process can still import it (jsonschema alone then leaves the "iri" formats
unchecked). Where jsonschema or the package is loaded already, nothing is hidden.
"""
from __future__ import annotations

import sys

_HIDDEN = "rfc3987_syntax"
_hide = "jsonschema" not in sys.modules and _HIDDEN not in sys.modules
if _hide:
    sys.modules[_HIDDEN] = None     # makes ``import rfc3987_syntax`` raise ImportError
try:
    import nbformat
finally:
    if _hide:
        del sys.modules[_HIDDEN]

__all__ = ["nbformat"]
