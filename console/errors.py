"""Errors of the review console.

::

    ConsoleError
    ├── UsersFileError      the users file is unreadable or has a bad line (start-up)
    ├── ExportKeyError      the export signing key file is unreadable or not a key (start-up)
    └── BadRequest          a query string or Range header the console cannot serve (400/416)
        └── RangeNotSatisfiable   416: a Range outside the object
"""

from __future__ import annotations


class ConsoleError(Exception):
    """Root of the console's errors."""


class UsersFileError(ConsoleError):
    pass


class ExportKeyError(ConsoleError):
    pass


class BadRequest(ConsoleError):
    status = 400


class RangeNotSatisfiable(BadRequest):
    status = 416
