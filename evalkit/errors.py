"""The small family of errors and warnings evalkit raises.

Every message says what happened, where, and what to do next.
"""
from __future__ import annotations


class EvalkitError(Exception):
    """Base class of every error evalkit raises on purpose."""


class ParamsError(EvalkitError):
    """A params file or override is invalid (unknown key, wrong type, bad value)."""


class DataValidationError(EvalkitError):
    """Input data break the data contract in a way that cannot be quarantined.

    ``failures`` holds every structural failure found (not just the first), as a list
    of dicts with keys ``table``, ``column``, ``reason``, ``count`` and ``examples``.
    """

    def __init__(self, message: str, failures: list[dict] | None = None):
        super().__init__(message)
        self.failures = list(failures or [])


class ConvergenceError(EvalkitError):
    """A model fit did not converge; the message names the model and what to try."""


class WorkbookError(EvalkitError):
    """A workbook failed while it ran; names the notebook and the failing cell."""


class EvalkitWarning(UserWarning):
    """Base class of evalkit warnings."""


class StatisticalWarning(EvalkitWarning):
    """A result is computable but should be read with care (sparse arm, weak overlap, ...)."""


class DataDroppedWarning(EvalkitWarning):
    """Rows were set aside (quarantined or excluded); the message gives how many and why."""
