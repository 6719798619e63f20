"""The errors of :mod:`evalkit.privacy`."""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import EvalkitError

__all__ = ["DisclosureError", "PrivacyError"]


class PrivacyError(EvalkitError, ValueError):
    """Publishing safety could not be applied (bad arguments, a table that cannot be
    protected)."""


class DisclosureError(PrivacyError):
    """A public output holds something it must not (member ids, dates of service,
    secrets, small counts). ``findings`` holds the :class:`Finding` records; the message
    lists them with the offending text shortened so that it is not repeated in full."""

    def __init__(self, message: str, findings: Iterable = ()):
        super().__init__(message)
        self.findings = tuple(findings)
