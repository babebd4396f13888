"""Errors of the control plane.

::

    ControlError
    ├── RulesError           the recording rules file cannot be used (start-up)
    └── WavixError           a Wavix REST request did not do what was asked
        ├── WavixRejected    a 4xx answer: an outcome, never retried (``status``, ``detail``)
        └── WavixUnavailable a 5xx answer, a timeout or no connection: retried with back-off
"""

from __future__ import annotations


class ControlError(Exception):
    """Root of the control plane's errors."""

    retriable = False


class RulesError(ControlError):
    """The recording rules are invalid."""


class WavixError(ControlError):
    """A Wavix REST request failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WavixRejected(WavixError):
    """Wavix answered 4xx: the request will not succeed by repeating it."""


class WavixUnavailable(WavixError):
    """Wavix answered 5xx, timed out or could not be reached."""

    retriable = True
