"""evalkit: does orienting health-plan members to self-help groups change their use of
professional care, and what is it worth?

Entry points: :func:`evalkit.run` (same as ``evalkit run`` on the command line) and
:class:`evalkit.Study` (what the workbooks use to read a prepared run).
"""
__version__ = "0.1.0"


def run(*args, **kwargs):
    """Run an analysis end to end; see :func:`evalkit.runner.run`."""
    from .runner import run as _run
    return _run(*args, **kwargs)


def __getattr__(name):
    if name == "Study":
        from .study import Study
        return Study
    raise AttributeError(name)
