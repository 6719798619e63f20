"""evalkit: does orienting health-plan members to self-help groups change their use of
professional care, and what is it worth?

Entry points: :func:`evalkit.runner.run` (same as ``evalkit run`` on the command line)
and :class:`evalkit.Study` (what the workbooks use to read a prepared run). The runner
is not imported here, so that a workbook's kernel does not load the notebook tooling
(papermill, nbconvert, WeasyPrint) it never uses; :class:`Study` is imported on first use,
so that a command that analyses nothing (``evalkit --help``, ``status``, ``params-schema``)
does not load the analysis layer and its statistics.
"""
from ._version import __version__

__all__ = ["Study", "__version__"]


def __getattr__(name: str):
    """:class:`Study`, imported when first asked for (PEP 562)."""
    if name == "Study":
        from .analysis.study import Study
        return Study
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
