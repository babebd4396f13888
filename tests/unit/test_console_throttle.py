"""Login throttling (console/throttle.py) on a clock the test moves, and over HTTP: the
sixth wrong password in the window is answered 429 with Retry-After, unchecked."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest
from starlette.testclient import TestClient

from compliance.audit import AuditLog
from console.app import Console
from console.throttle import MAX_KEYS, LoginThrottle
from infra.store.local import LocalStore
from tests.consoleutil import PASSWORD, archive_analyzed, console_settings, tone, users_file


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_of_a_user_close_the_door_until_the_first_ages_out() -> None:
    clock = Clock()
    throttle = LoginThrottle(5, 20, 900, clock)
    for _ in range(4):
        assert throttle.refusal("ann", "10.0.0.1") is None
        assert throttle.failed("ann", "10.0.0.1") is None
        clock.now += 60
    closed = throttle.failed("ann", "10.0.0.1")  # the fifth, at t+240
    assert closed is not None and closed.by == "user"
    refused = throttle.refusal("ann", "10.0.0.2")  # from anywhere
    assert refused is not None and refused.retry_after_s == 900 - 240
    assert throttle.refusal("bob", "10.0.0.1") is None  # the address is under its limit
    clock.now += 900 - 240  # the first failure leaves the window
    assert throttle.refusal("ann", "10.0.0.1") is None
    assert throttle.failures("user", "ann") == 4


def test_a_success_forgives_the_user_not_the_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(5, 8, 900, clock)
    for name in ("a", "b", "c", "d"):
        throttle.failed(name, "10.0.0.9")
        throttle.failed(name, "10.0.0.9")
    assert throttle.refusal("mallory", "10.0.0.9") is not None  # 8 from one address
    throttle.succeeded("a")
    assert throttle.failures("user", "a") == 0
    assert throttle.failures("address", "10.0.0.9") == 8  # a valid account resets nothing
    refused = throttle.refusal("a", "10.0.0.9")
    assert refused is not None and refused.by == "address"


def test_zero_means_no_limit_and_memory_is_bounded() -> None:
    throttle = LoginThrottle(0, 0, 900, Clock())
    for _ in range(50):
        assert throttle.failed("ann", "10.0.0.1") is None
    assert throttle.refusal("ann", "10.0.0.1") is None
    crowded = LoginThrottle(3, 0, 900, Clock())
    for i in range(MAX_KEYS + 10):
        crowded.failed(f"user-{i}", "10.0.0.1")
    assert len(crowded._failures) == MAX_KEYS
    assert crowded.failures("user", "user-0") == 0  # the oldest were dropped
    assert crowded.failures("user", f"user-{MAX_KEYS + 9}") == 1


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, LocalStore]]:
    store = LocalStore(tmp_path / "archive")
    archive_analyzed(store, "t-1", {"inbound": tone(500)}, [(0, 400, "hi")], tmp_path)
    settings = console_settings(
        str(store.root), users_file(tmp_path / "users"), console_login_max_failures=3
    )
    with TestClient(Console(settings, store).app(), base_url="https://testserver") as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "index never loaded"
            time.sleep(0.02)
        yield c, store


def _failures(reason: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "callrec_console_login_failures_total", {"reason": reason}
    )
    return value or 0.0


def test_over_http_the_fourth_attempt_is_429_unchecked_and_a_success_resets(
    client: tuple[TestClient, LocalStore], caplog: pytest.LogCaptureFixture
) -> None:
    c, store = client

    def csrf() -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
        assert match
        return match.group(1)

    wrong = {"csrf": csrf(), "user": "viewer", "password": "hunter2-wrong"}
    right = {**wrong, "password": PASSWORD}
    before = (_failures("password"), _failures("throttled"))
    assert c.post("/login", data=wrong).status_code == 401
    assert c.post("/login", data=wrong).status_code == 401
    # Two wrong, then right: the user's count starts again.
    assert c.post("/login", data=right, follow_redirects=False).status_code == 303
    wrong["csrf"] = right["csrf"] = csrf()  # the new session's token
    for _ in range(3):
        assert c.post("/login", data=wrong).status_code == 401
    refused = c.post("/login", data=right)  # even the right password: not checked
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 900
    assert "Too many failed logins" in refused.text
    assert (_failures("password") - before[0], _failures("throttled") - before[1]) == (5, 1)
    denied = [e for e in AuditLog(store).entries() if e.action == "login" and e.outcome == "denied"]
    assert len(denied) == 5  # the refused attempt is counted, not audited
    assert denied[-1].detail["throttled"] == "user"
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
    assert any("console login failed: user 'viewer'" in r.getMessage() for r in caplog.records)
    # Another user from the same address is not refused (3 of 20 address failures).
    other = c.post("/login", data={**right, "user": "listener"}, follow_redirects=False)
    assert other.status_code == 303
