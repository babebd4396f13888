"""The compliance operations' errors: one root, the CLI prints them as one line::

ComplianceError
├── NotFoundError       no such call or recording in the archive
├── OnHoldError         refused: the recording is under a legal hold
├── RetainedError       refused: Object Lock retention forbids the delete until a date
├── NoNumbersError      the calls table has no from_number/to_number columns
└── SigningKeyError     an export signing or public key that cannot be read
"""

from __future__ import annotations


class ComplianceError(Exception):
    """Root of the compliance operations' errors (the tree is in the module docstring)."""


class NotFoundError(ComplianceError):
    pass


class OnHoldError(ComplianceError):
    pass


class RetainedError(ComplianceError):
    pass


class NoNumbersError(ComplianceError):
    pass


class SigningKeyError(ComplianceError, ValueError):
    pass
