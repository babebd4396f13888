"""The review console as an app (Starlette's TestClient), over a local archive written by
the recorder's and analyzer's own code: login, roles, CSRF, the calls page's filters and
keyset pages, CSV, Range playback, peaks, the integrity check and the audit trail.
Browser behaviour (playback, sync, rendering) is in tests/integration/test_console.py."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from compliance.audit import AuditLog
from console.app import Console
from console.errors import BadRequest, RangeNotSatisfiable, UsersFileError
from console.media import MAX_RANGE_BYTES, parse_range
from console.search import CallQuery, build_where, decode_token, encode_token, highlight
from console.users import Users, hash_password
from infra.peaks import decode_peaks
from infra.store.local import LocalStore
from tests.analyzerutil import START_NS
from tests.consoleutil import PASSWORD, archive_analyzed, console_settings, tone, users_file

DAY_NS = 86_400 * 1_000_000_000


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    root = tmp_path_factory.mktemp("archive")
    work = tmp_path_factory.mktemp("work")
    store = LocalStore(root)
    both = {"inbound": tone(3000), "outbound": tone(3000, freq=330)}
    for i in range(5):  # one a day, 3 s each, the transcript says which
        archive_analyzed(
            store,
            f"call-{i}",
            both,
            [(0, 1000, f"number {i} refund please"), (1500, 2500, "thank you")],
            work,
            start_ns=START_NS + i * DAY_NS,
        )
    archive_analyzed(
        store,
        "short-1",
        {"inbound": tone(1000)},
        [(0, 900, "brief")],
        work,
        start_ns=START_NS + 9 * DAY_NS,
    )
    return store


@pytest.fixture
def client(archive: LocalStore, tmp_path: Path) -> Iterator[TestClient]:
    settings = console_settings(
        str(archive.root),
        users_file(tmp_path / "users"),
        console_page_size=2,
        console_trusted_proxies="10.9.9.9",
    )
    app = Console(settings, archive).app()
    with TestClient(app, base_url="https://testserver") as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "index never loaded"
            time.sleep(0.02)
        yield c


def csrf(client: TestClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert match
    return match.group(1)


def log_in(client: TestClient, user: str) -> None:
    response = client.post(
        "/login",
        data={"csrf": csrf(client), "user": user, "password": PASSWORD, "next": "/calls"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def rows(html: str) -> list[str]:
    return re.findall(r'data-recording="([^"]+)"', html)


def audit(store: LocalStore, **match: str) -> list[Any]:
    return [
        e for e in AuditLog(store).entries() if all(getattr(e, k) == v for k, v in match.items())
    ]


# -- access ----------------------------------------------------------------------------------


def test_every_page_but_the_probes_needs_a_login(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert "callrec_console_requests_total" in client.get("/metrics").text
    page = client.get("/calls?q=refund", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fcalls%3Fq%3Drefund"
    assert client.get("/calls.csv", follow_redirects=False).status_code == 303
    for path in (
        "/calls/call-0-0/audio",
        "/calls/call-0-0/audio.wav",
        "/calls/call-0-0/peaks.json",
        "/calls/call-0-0/manifest.json",
    ):
        assert client.get(path, follow_redirects=False).status_code == 401, path


def test_login_sets_a_hardened_cookie_and_wrong_passwords_are_refused_and_audited(
    client: TestClient,
    archive: LocalStore,
) -> None:
    token = csrf(client)
    bad = client.post("/login", data={"csrf": token, "user": "viewer", "password": "nope"})
    assert bad.status_code == 401 and "Wrong user name or password" in bad.text
    assert audit(archive, action="login", actor="viewer", outcome="denied")
    good = client.post(
        "/login",
        data={"csrf": token, "user": "viewer", "password": PASSWORD},
        follow_redirects=False,
    )
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
    page = client.get("/calls")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text  # the only script is the static file


def test_a_post_without_the_csrf_token_is_refused(client: TestClient) -> None:
    assert client.post("/login", data={"user": "viewer", "password": PASSWORD}).status_code == 403
    log_in(client, "viewer")
    assert client.post("/calls/call-0-0/verify", data={}).status_code == 403
    assert client.post("/calls/call-0-0/verify", data={"csrf": "x" * 43}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/calls").status_code == 200  # still logged in


def test_roles_viewer_reads_listener_plays(client: TestClient, archive: LocalStore) -> None:
    log_in(client, "viewer")
    page = client.get("/calls/call-1-0")
    assert page.status_code == 200 and 'id="no-audio"' in page.text
    assert client.get("/calls/call-1-0/audio?ps=a").status_code == 403
    assert client.get("/calls/call-1-0/audio.wav").status_code == 403
    assert client.get("/calls/call-1-0/transcript.json").status_code == 200
    denied = audit(archive, action="play", actor="viewer", target="call-1-0")
    assert [e.outcome for e in denied] == ["denied"]


def test_a_trusted_proxy_names_the_user_an_untrusted_one_cannot(
    archive: LocalStore, tmp_path: Path
) -> None:
    settings = console_settings(
        str(archive.root), users_file(tmp_path / "users"), console_trusted_proxies="10.9.9.9"
    )
    headers = {
        "x-forwarded-user": "alice",
        "x-forwarded-groups": "staff,callrec-listener",
        "x-forwarded-for": "192.0.2.7",
    }
    app = Console(settings, archive).app()
    with TestClient(app, base_url="https://t", client=("10.9.9.9", 1)) as proxied:
        while proxied.get("/readyz").status_code != 200:
            time.sleep(0.02)
        page = proxied.get("/calls/call-2-0", headers=headers)
        assert page.status_code == 200 and "alice" in page.text and 'id="player"' in page.text
        assert (
            proxied.get(
                "/calls/call-2-0",
                headers={**headers, "x-forwarded-groups": "staff"},
                follow_redirects=False,
            ).status_code
            == 303
        )  # no role: back to the login page
    [view] = audit(archive, action="view", actor="alice")
    assert view.address == "192.0.2.7"
    with TestClient(app, base_url="https://t", client=("10.1.1.1", 1)) as direct:
        assert direct.get("/calls", headers=headers, follow_redirects=False).status_code == 303


def test_users_file_lines_are_checked() -> None:
    good = hash_password("long enough password")
    users = Users.parse(f"# comment\nann:listener:{good}\n")
    assert users.authenticate("ann", "long enough password") is not None
    assert users.authenticate("ann", "wrong") is None
    assert users.authenticate("bob", "long enough password") is None
    for line in (f"ann:admin:{good}", "ann:viewer:plaintext", "ann"):
        with pytest.raises(UsersFileError):
            Users.parse(line)


# -- the calls page --------------------------------------------------------------------------


def test_keyset_pages_cover_every_call_once_with_a_total(
    client: TestClient, archive: LocalStore
) -> None:
    log_in(client, "viewer")
    seen: list[str] = []
    url = "/calls?sort=duration_ms&order=asc"
    while url:
        page = client.get(url)
        assert ">6</strong> recordings" in page.text
        seen += rows(page.text)
        found = re.search(r'href="([^"]+)" id="next"', page.text)
        url = found.group(1).replace("&amp;", "&") if found else ""
        assert "offset" not in url.lower()
    assert seen == ["short-1-0", *(f"call-{i}-0" for i in range(5))]
    assert audit(archive, action="search", actor="viewer")


def test_filters_and_transcript_search_with_snippets(client: TestClient) -> None:
    log_in(client, "viewer")
    page = client.get("/calls?q=NUMBER+3")
    assert rows(page.text) == ["call-3-0"]
    assert "<mark>number 3</mark> refund please" in page.text
    assert 'href="/calls/call-3-0?t=0.000"' in page.text
    assert rows(client.get("/calls?max_duration_s=2").text) == ["short-1-0"]
    assert rows(client.get("/calls?date_from=2025-11-25&date_to=2025-11-25").text) == ["call-1-0"]
    assert rows(client.get("/calls?call=short").text) == ["short-1-0"]
    assert rows(client.get("/calls?q=100%25").text) == []  # % is text, not a wildcard
    both = client.get("/calls?min_overtalk_s=0.5&order=asc&sort=call_id")
    assert rows(both.text) == ["call-0-0", "call-1-0"]  # page 1 of 5 two-sided calls
    # The calls table has the control plane's number columns: their filters show; these
    # calls were not made through it (no numbers), so a number matches none.
    assert {"number", "direction"} <= set(re.findall(r'name="(\w+)"', both.text))
    assert rows(client.get("/calls?number=%2B15551234567").text) == []
    assert client.get("/calls?min_duration_s=abc").status_code == 400
    assert client.get("/calls?sort=evil").status_code == 400
    assert client.get("/calls?next=garbage").status_code == 400


def test_the_csv_is_the_same_view(client: TestClient, archive: LocalStore) -> None:
    log_in(client, "viewer")
    response = client.get("/calls.csv?q=refund&sort=call_id&order=asc")
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["recording_id"] for r in table] == [f"call-{i}-0" for i in range(5)]
    assert table[0]["duration_ms"] == "3000"
    assert audit(archive, action="download", target="calls.csv", actor="viewer")


def test_query_state_round_trips_through_the_url() -> None:
    params = {
        "q": "refund",
        "min_overtalk_s": "10",
        "complete": "no",
        "date_from": "2025-01-02",
        "sort": "overtalk_ms",
        "order": "asc",
    }
    query = CallQuery.parse(params)
    assert CallQuery.parse(query.params()) == query
    assert query.params() == params
    assert decode_token(encode_token(123, "r-0")) == (123, "r-0")
    where = build_where(CallQuery(number="+15551234567"), frozenset({"from_number", "to_number"}))
    assert "c.from_number = ?" in where.where and where.args == ["+15551234567"] * 2
    assert build_where(CallQuery(number="1"), frozenset()).where == "TRUE"
    assert highlight("Ask not, ASK", "ask") == [("Ask", True), (" not, ", False), ("ASK", True)]


# -- the call page ---------------------------------------------------------------------------


def test_range_requests_are_answered_206_and_a_play_is_audited_once(
    client: TestClient,
    archive: LocalStore,
) -> None:
    log_in(client, "listener")
    page = client.get("/calls/call-4-0")
    session = re.search(r"audio\?ps=([\w-]+)", page.text)
    assert session
    wav = archive.get_bytes("recordings/call-4-0/audio.wav")
    url = f"/calls/call-4-0/audio?ps={session.group(1)}"
    first = client.get(url, headers={"range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == wav[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{len(wav)}"
    seek = client.get(url, headers={"range": f"bytes={len(wav) - 10}-"})
    assert seek.status_code == 206 and seek.content == wav[-10:]
    assert client.get(url, headers={"range": f"bytes={len(wav)}-"}).status_code == 416
    plays = audit(archive, action="play", target="call-4-0", actor="listener")
    assert len(plays) == 1 and plays[0].outcome == "ok"
    assert "listener" in client.get("/calls/call-4-0").text.split('id="listens"')[1]
    whole = client.get("/calls/call-4-0/audio.wav")
    assert whole.status_code == 200 and whole.content == wav
    assert audit(archive, action="download", target="call-4-0", actor="listener")


def test_parse_range() -> None:
    assert parse_range("bytes=0-", 1000) == (0, 1000)
    assert parse_range("bytes=10-19", 1000) == (10, 20)
    assert parse_range("bytes=-100", 1000) == (900, 1000)
    assert parse_range("bytes=0-", 10 * MAX_RANGE_BYTES) == (0, MAX_RANGE_BYTES)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=1000-", 1000)
    for bad in ("bytes=a-b", "items=0-1", "bytes=0-1,5-6", "bytes=-"):
        with pytest.raises(BadRequest):
            parse_range(bad, 1000)


def test_peaks_are_served_and_computed_for_recordings_archived_without_them(
    client: TestClient,
    archive: LocalStore,
) -> None:
    log_in(client, "viewer")
    stored = client.get("/calls/call-0-0/peaks.json")
    assert stored.content == archive.get_bytes("recordings/call-0-0/peaks.json")
    peaks = decode_peaks(stored.content)
    assert [c.track for c in peaks.channels] == ["inbound", "outbound"]
    assert len(peaks.channels[0].max) == 300 and max(peaks.channels[0].max) > 30
    old = archive.get_bytes("recordings/short-1-0/peaks.json")
    archive.delete("recordings/short-1-0/peaks.json")  # as archived before peaks existed
    try:
        assert client.get("/calls/short-1-0/peaks.json").content == old
    finally:
        archive.put_bytes("recordings/short-1-0/peaks.json", old, "application/json")


def test_the_integrity_check_names_the_damaged_object(
    client: TestClient, archive: LocalStore
) -> None:
    log_in(client, "viewer")
    token = csrf(client, "/calls")
    ok = client.post("/calls/call-2-0/verify", data={"csrf": token})
    assert 'id="verdict">verified' in ok.text
    manifest = json.loads(archive.get_bytes("recordings/call-2-0/manifest.json"))
    key = "recordings/call-2-0/peaks.json"
    original = archive.get_bytes(key)
    archive.put_bytes(key, original[:-2] + b"]\n", "application/json")
    try:
        bad = client.post("/calls/call-2-0/verify", data={"csrf": token})
        assert 'id="verdict">mismatch' in bad.text
        assert re.search(
            r'<tr class="mismatch"><td class="mono">recordings/call-2-0/peaks.json', bad.text
        )
        assert next(o["sha256"] for o in manifest["objects"] if o["key"] == key) in bad.text
    finally:
        archive.put_bytes(key, original, "application/json")
    outcomes = [e.detail["result"] for e in audit(archive, action="verify", target="call-2-0")]
    assert outcomes[-2:] == ["verified", "mismatch"]


def test_unknown_and_malformed_recordings(client: TestClient) -> None:
    log_in(client, "listener")
    assert client.get("/calls/nope-0").status_code == 404
    assert client.get("/calls/..%2Fetc").status_code in (400, 404)
    assert client.get("/calls/nope-0/audio?ps=x").status_code == 404


def test_legal_holds_filter_and_show(client: TestClient, archive: LocalStore) -> None:
    from compliance.holds import set_hold

    set_hold(archive, ["call-3-0"], "matter 42", "ann")
    log_in(client, "viewer")
    deadline = time.monotonic() + 30
    while rows(client.get("/calls?hold=yes").text) != ["call-3-0"]:  # the next refresh
        assert time.monotonic() < deadline, "the hold never showed"
        time.sleep(0.1)
    assert "call-3-0" not in rows(client.get("/calls?hold=no&sort=call_id").text)
    page = client.get("/calls/call-3-0").text
    assert re.search(r'id="hold"><span class="warn">on hold', page)


def test_the_call_page_shows_turns_and_response_latencies(
    archive: LocalStore, tmp_path: Path
) -> None:
    silence = b"\0\0" * 24  # 1 ms of L16/24000
    archive_analyzed(
        archive,
        "turns-1",
        {"inbound": tone(1000) + silence * 2000,  # the caller speaks 0-1 s...
         "outbound": silence * 1600 + tone(1000, freq=330) + silence * 400},  # agent 1.6-2.6 s
        [(0, 1000, "hello there"), (1600, 2600, "how can I help")],
        tmp_path,
        start_ns=START_NS + 20 * DAY_NS,
    )
    settings = console_settings(str(archive.root), users_file(tmp_path / "users"))
    with TestClient(Console(settings, archive).app(), base_url="https://testserver") as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "index never loaded"
            time.sleep(0.02)
        log_in(c, "viewer")
        page = c.get("/calls/turns-1-0").text
    assert 'id="turn-figures"' in page
    listed = page.split('id="turns"')[1]
    turns = re.findall(r'<li class="seg speaker-(\w+)" data-start="(\d+)"', listed)
    assert [t[0] for t in turns] == ["caller", "agent"]
    latency = re.search(r"after (\d+) ms", listed)
    assert latency and abs(int(latency.group(1)) - 600) <= 30, "the agent answered 600 ms later"


def test_the_last_recorded_verify_is_exported_for_the_alerts(tmp_path: Path) -> None:
    import prometheus_client

    from compliance.verify import record_status, verify_archive

    store = LocalStore(tmp_path / "archive")
    archive_analyzed(store, "v-1", {"inbound": tone(500)}, [(0, 400, "hi")], tmp_path)
    console = Console(console_settings(str(store.root), users_file(tmp_path / "u")), store)

    def gauge(name: str) -> float | None:
        return prometheus_client.REGISTRY.get_sample_value(name)

    record_status(store, verify_archive(store))
    console._read_verify_status()
    assert gauge("callrec_console_verify_problems") == 0
    finished = gauge("callrec_console_verify_last_run_timestamp_seconds")
    assert finished is not None and abs(finished - time.time()) < 120

    (store.root / "recordings" / "v-1-0" / "audio.wav").write_bytes(b"RIFF tampered")
    record_status(store, verify_archive(store))
    console._read_verify_status()
    assert gauge("callrec_console_verify_problems") == 1
