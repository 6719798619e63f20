"""evalkit: does orienting health-plan members to self-help groups change their use of
professional care, and what is it worth?

Entry points: :func:`evalkit.runner.run` (same as ``evalkit run`` on the command line)
and :class:`evalkit.Study` (what the workbooks use to read a prepared run). The runner
is not imported here, so that a workbook's kernel does not load the notebook tooling
(papermill, nbconvert, WeasyPrint) it never uses.
"""
from ._version import __version__
from .analysis.study import Study

__all__ = ["Study", "__version__"]
