"""Logging in and out: ``GET|POST /login``, ``POST /logout``.

A wrong user name or password is answered 401 after the same Argon2 work as a right
one (console/users.py), counted (``callrec_console_login_failures_total{reason=
"password"}``), logged without the password and written to the audit trail. Too many
failures for a user name or from an address (console/throttle.py) and further attempts
are answered 429 with ``Retry-After`` before any password is checked: counted
(``reason="throttled"``), but not audited one by one (the failure that closed the door
is, with the refusal's reason), so a client hammering the login cannot fill the audit
trail. docs/console.md, "Access control".
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console import metrics
from console.auth import csrf_token
from console.core import ConsoleCore

log = logging.getLogger(__name__)


class LoginPages:
    """The login form, the login itself and the logout."""

    def __init__(self, core: ConsoleCore) -> None:
        self.core = core

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]

    async def login_form(self, request: Request) -> Response:
        nxt = safe_next(request.query_params.get("next", ""))
        return self.core.render(request, "login.html", next=nxt, error="")

    async def login(self, request: Request) -> Response:
        core = self.core
        form = await core.post_form(request)
        if isinstance(form, Response):
            return form
        name, password = str(form.get("user", ""))[:200], str(form.get("password", ""))
        nxt = safe_next(str(form.get("next", "")))
        address = core.auth.address(request)
        refused = core.throttle.refusal(name, address)
        if refused is not None:
            metrics.LOGIN_FAILURES.labels("throttled").inc()
            log.debug("login of %r from %s refused unchecked (%s)", name, address, refused.by)
            minutes = -(-refused.retry_after_s // 60)
            response = core.render(
                request,
                "login.html",
                429,
                next=nxt,
                error=f"Too many failed logins. Try again in {minutes} minute"
                + ("" if minutes == 1 else "s")
                + ".",
            )
            response.headers["retry-after"] = str(refused.retry_after_s)
            return response
        user = await run_in_threadpool(core.users.authenticate, name, password[:1000])
        if user is None:
            metrics.DENIED.labels("password").inc()
            metrics.LOGIN_FAILURES.labels("password").inc()
            closed = core.throttle.failed(name, address)
            detail = None
            if closed is None:
                log.warning("console login failed: user %r from %s", name, address)
            else:
                detail = {"throttled": closed.by, "retry_after_s": str(closed.retry_after_s)}
                log.warning(
                    "console login failed: user %r from %s; too many failures (by %s): "
                    "further attempts refused for %d s",
                    name,
                    address,
                    closed.by,
                    closed.retry_after_s,
                )
            await run_in_threadpool(
                core.trail.append,
                actor=name or "-",
                action="login",
                address=address,
                outcome="denied",
                detail=detail,
            )
            return core.render(
                request, "login.html", 401, next=nxt, error="Wrong user name or password."
            )
        core.throttle.succeeded(user.name)
        request.session.clear()
        request.session.update({"user": user.name, "role": user.role})
        csrf_token(request)  # a fresh token for the new session
        await run_in_threadpool(core.trail.append, actor=user.name, action="login", address=address)
        return RedirectResponse(nxt or "/calls", 303)

    async def logout(self, request: Request) -> Response:
        form = await self.core.post_form(request)
        if isinstance(form, Response):
            return form
        identity = self.core.auth.identify(request)
        if identity is not None:
            await self.core.audit(request, identity, "logout")
        request.session.clear()
        return RedirectResponse("/login", 303)


def safe_next(value: str) -> str:
    """A local path to go back to after login (never another site)."""
    return (
        value
        if value.startswith("/") and not value.startswith("//") and ("\\" not in value)
        else ""
    )
