"""Who is asking, and may they: sessions, the trusted proxy, roles and CSRF tokens.

Two ways in (docs/console.md):

- **Built-in users** log in at ``/login``; the session cookie is signed
  (itsdangerous, key ``CALLREC_CONSOLE_SESSION_SECRET``), ``HttpOnly``,
  ``SameSite=Lax`` and ``Secure``, and carries the user, the role and a CSRF token.
- **A trusted OIDC proxy** (oauth2-proxy) names the user in ``X-Forwarded-User``
  (or ``-Email``) and ``X-Forwarded-Groups``; the headers count only on requests
  whose TCP peer is one of ``CALLREC_CONSOLE_TRUSTED_PROXIES``, anyone else
  sending them is ignored (and goes to the login page).

Every POST carries the session's CSRF token in the form field ``csrf``; one
without it, or with another, is refused with 403 before anything happens.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from starlette.requests import Request

from console.users import ROLES, Role

CSRF_FIELD = "csrf"


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    role: Role
    via: str
    """``login`` or ``proxy``."""


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (the login form needs one too)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, form: Mapping[str, object]) -> bool:
    expected = request.session.get("csrf")
    given = form.get(CSRF_FIELD)
    return (
        isinstance(expected, str)
        and isinstance(given, str)
        and hmac.compare_digest(expected.encode(), given.encode())
    )


class Authenticator:
    """Resolves the identity of a request."""

    def __init__(self, trusted_proxies: Sequence[str], proxy_roles: Sequence[str]) -> None:
        self.trusted = frozenset(trusted_proxies)
        self.group_roles: dict[str, Role] = {}
        for pair in proxy_roles:
            group, _, role = pair.partition("=")
            if role not in ROLES:
                raise ValueError(f"proxy role mapping {pair!r}: role must be one of {ROLES}")
            self.group_roles[group.strip()] = role

    def from_proxy(self, request: Request) -> bool:
        return request.client is not None and request.client.host in self.trusted

    def address(self, request: Request) -> str:
        """The client's address: the proxy's X-Forwarded-For (first hop) when trusted."""
        peer = request.client.host if request.client else ""
        if self.from_proxy(request):
            forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
            return forwarded or peer
        return peer

    def identify(self, request: Request) -> Identity | None:
        if self.from_proxy(request):
            user = (
                request.headers.get("x-forwarded-user")
                or request.headers.get("x-forwarded-email")
                or ""
            ).strip()
            if user:
                groups = [
                    g.strip() for g in request.headers.get("x-forwarded-groups", "").split(",")
                ]
                roles = [self.group_roles[g] for g in groups if g in self.group_roles]
                if not roles:
                    return None
                return Identity(user, max(roles, key=ROLES.index), "proxy")
        name, role = request.session.get("user"), request.session.get("role")
        if isinstance(name, str) and role in ROLES:
            return Identity(name, cast(Role, role), "login")
        return None
