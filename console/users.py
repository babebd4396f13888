"""Built-in users and roles: ``user:role:<argon2 hash>`` lines, checked in constant time.

Roles are ordered: each one can do what the one before it can.

- ``viewer``: search, call pages, transcripts, integrity checks;
- ``listener``: + audio (playback and WAV download);
- ``compliance``: + holds and exports (docs/console.md).

Passwords are hashed with Argon2id (argon2-cffi, the reference implementation's
bindings) and never stored or logged in the clear: ``callrec console
--hash-password`` prints a hash for the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from console.errors import UsersFileError

log = logging.getLogger(__name__)

Role = Literal["viewer", "listener", "compliance"]
ROLES: tuple[Role, ...] = ("viewer", "listener", "compliance")
"""Lowest first."""

_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not a password")
"""Verified against when the user is unknown, so the answer takes as long as for a
known user (no user enumeration by timing)."""


def allows(role: Role, needed: Role) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str


class Users:
    """The users of the users file."""

    def __init__(self, users: dict[str, User]) -> None:
        self._users = users

    @classmethod
    def load(cls, path: str | None) -> Users:
        if not path:
            return cls({})
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsersFileError(f"cannot read users file {path}: {exc}") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, source: str = "users file") -> Users:
        users: dict[str, User] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, rest = line.partition(":")
            role, _, password_hash = rest.partition(":")
            if not name or role not in ROLES or not password_hash.startswith("$argon2"):
                raise UsersFileError(
                    f"{source} line {number}: expected user:role:<argon2 hash> with role one "
                    f"of {', '.join(ROLES)}"
                )
            users[name] = User(name, role, password_hash)
        return cls(users)

    def __len__(self) -> int:
        return len(self._users)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is right; None otherwise (same time either way)."""
        user = self._users.get(name)
        try:
            _hasher.verify(user.password_hash if user else _DUMMY, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user
