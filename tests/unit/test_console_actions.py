"""The compliance role's actions in the console (console/actions.py) over HTTP, on a local
archive written by the recorder's and analyzer's code: place and release a legal hold,
the holds page, the signed evidence export, and who may do each. The same in a real
browser on MinIO: tests/integration/test_console.py."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from compliance.audit import AuditLog
from compliance.export import check_bundle, new_key_pair
from compliance.holds import list_holds
from console.app import Console
from console.errors import ExportKeyError
from infra.store.local import LocalStore
from tests.consoleutil import PASSWORD, archive_analyzed, console_settings, tone, users_file


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(private key file, public key PEM)."""
    private, public = new_key_pair()
    path = tmp_path_factory.mktemp("keys") / "export.key"
    path.write_bytes(private)
    return path, public.decode()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    store = LocalStore(tmp_path_factory.mktemp("archive"))
    work = tmp_path_factory.mktemp("work")
    both = {"inbound": tone(1500), "outbound": tone(1500, freq=330)}
    for name in ("keep-1", "keep-2"):
        archive_analyzed(store, name, both, [(0, 1000, f"{name} says hello")], work)
    return store


def _ready(c: TestClient) -> TestClient:
    deadline = time.monotonic() + 60
    while c.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "index never loaded"
        time.sleep(0.02)
    return c


@pytest.fixture
def client(archive: LocalStore, keys: tuple[Path, str], tmp_path: Path) -> Iterator[TestClient]:
    settings = console_settings(
        str(archive.root),
        users_file(tmp_path / "users"),
        console_export_signing_key_file=str(keys[0]),
        console_index_refresh_s=3600,  # a change must show without waiting for a refresh
    )
    with TestClient(Console(settings, archive).app(), base_url="https://testserver") as c:
        yield _ready(c)


def log_in(c: TestClient, user: str) -> str:
    """Log in; the session's CSRF token."""
    token = csrf(c, "/login")
    response = c.post(
        "/login", data={"csrf": token, "user": user, "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303
    return csrf(c, "/calls")


def csrf(c: TestClient, path: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)
    assert match
    return match.group(1)


def rows(html: str) -> list[str]:
    return re.findall(r'data-recording="([^"]+)"', html)


def entries(store: LocalStore, **match: Any) -> list[Any]:
    return [
        e
        for e in AuditLog(store).entries()
        if all(
            (e.detail.get(k[7:]) if k.startswith("detail_") else getattr(e, k)) == v
            for k, v in match.items()
        )
    ]


def held_objects(store: LocalStore, rec: str) -> list[str]:
    return sorted(
        p.name for p in (store.root / "recordings" / rec).iterdir() if p.name.endswith("hold")
    )


def test_a_compliance_user_places_and_releases_a_hold(
    client: TestClient, archive: LocalStore
) -> None:
    token = log_in(client, "compliance")
    page = client.get("/calls/keep-1-0").text
    assert 'id="place-hold"' in page and 'id="export"' in page
    assert client.post("/calls/keep-1-0/hold", data={"csrf": token, "reason": " "}).status_code == (
        400
    )  # a hold needs a reason
    placed = client.post(
        "/calls/keep-1-0/hold",
        data={"csrf": token, "reason": "matter 2024-117 <b>"},
        follow_redirects=False,
    )
    assert placed.status_code == 303 and placed.headers["location"] == "/calls/keep-1-0"
    page = client.get("/calls/keep-1-0").text
    assert re.search(r'id="notice">Legal hold placed on \d+ objects', page)
    assert re.search(r'id="hold"><span class="warn">on hold', page)
    assert "by compliance: matter 2024-117 &lt;b&gt;" in page  # escaped
    assert 'id="release-hold"' in page and 'id="place-hold"' not in page
    # Every object of the recording is held (the local archive's marker files)...
    assert len(held_objects(archive, "keep-1-0")) >= 3
    # ...the record is what `callrec hold list` shows, and the filter finds it at once.
    [record] = [h for h in list_holds(archive) if h.recording_id == "keep-1-0"]
    assert (record.set_by, record.reason) == ("compliance", "matter 2024-117 <b>")
    assert rows(client.get("/calls?hold=yes").text) == ["keep-1-0"]
    holds = client.get("/holds").text
    assert rows(holds) == ["keep-1-0"] and "matter 2024-117 &lt;b&gt;" in holds
    [entry] = entries(archive, action="hold.set", detail_recording_id="keep-1-0")
    assert (entry.actor, entry.address, entry.target) == ("compliance", "testclient", "keep-1")
    # Placing it again would overwrite who and why: refused.
    again = client.post("/calls/keep-1-0/hold", data={"csrf": token, "reason": "other"})
    assert again.status_code == 409 and "already on hold" in again.text

    released = client.post(
        "/calls/keep-1-0/release",
        data={"csrf": token, "reason": "matter closed"},
        follow_redirects=False,
    )
    assert released.status_code == 303
    assert held_objects(archive, "keep-1-0") == []
    assert rows(client.get("/calls?hold=yes").text) == []
    assert 'id="place-hold"' in client.get("/calls/keep-1-0").text
    [cleared] = entries(archive, action="hold.clear", detail_recording_id="keep-1-0")
    assert cleared.detail["reason"] == "matter closed" and cleared.actor == "compliance"
    assert (
        client.post("/calls/keep-1-0/release", data={"csrf": token, "reason": "again"}).status_code
        == 409
    )
    assert "matter closed" in client.get("/holds?all=1").text


@pytest.mark.parametrize("role", ["viewer", "listener"])
def test_other_roles_see_no_controls_and_are_refused(
    client: TestClient, archive: LocalStore, role: str
) -> None:
    token = log_in(client, role)
    page = client.get("/calls/keep-2-0").text
    for control in ("place-hold", "release-hold", "export", "nav-holds"):
        assert f'id="{control}"' not in page
    for action in ("hold", "release", "export"):
        refused = client.post(
            f"/calls/keep-2-0/{action}", data={"csrf": token, "reason": "mine now"}
        )
        assert refused.status_code == 403, action
    assert client.get("/holds").status_code == 403
    denied = entries(archive, actor=role, outcome="denied", target="keep-2-0")
    assert {e.action for e in denied} >= {"hold.set", "hold.clear", "export"}
    assert held_objects(archive, "keep-2-0") == []


def test_a_post_without_the_csrf_token_changes_nothing(
    client: TestClient, archive: LocalStore
) -> None:
    log_in(client, "compliance")
    for action in ("hold", "export"):
        refused = client.post(f"/calls/keep-2-0/{action}", data={"reason": "no token"})
        assert refused.status_code == 403
    assert held_objects(archive, "keep-2-0") == []
    assert entries(archive, action="csrf", actor="compliance", target="/calls/keep-2-0/hold")


def test_the_export_downloads_a_bundle_that_checks_offline(
    client: TestClient, archive: LocalStore, keys: tuple[Path, str], tmp_path: Path
) -> None:
    token = log_in(client, "compliance")
    response = client.post("/calls/keep-2-0/export", data={"csrf": token})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == ('attachment; filename="keep-2-evidence.zip"')
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(response.content)
    check = check_bundle(bundle, keys[1])
    assert check.ok, check.problems
    manifest = json.loads(archive.get_bytes("recordings/keep-2-0/manifest.json"))
    wav_sha = next(o["sha256"] for o in manifest["objects"] if o["key"].endswith("audio.wav"))
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert hashlib.sha256(zf.read("keep-2-0/audio.wav")).hexdigest() == wav_sha
        exported_by = json.loads(zf.read("SIGNATURE.json"))["exported_by"]
    assert exported_by == "compliance"
    [entry] = entries(archive, action="export", target="keep-2")
    assert (entry.actor, entry.address) == ("compliance", "testclient")
    assert not list(archive.root.rglob("*.zip")), "nothing written into the archive"


def test_without_a_signing_key_there_is_no_button_and_export_is_409(
    archive: LocalStore, tmp_path: Path
) -> None:
    settings = console_settings(str(archive.root), users_file(tmp_path / "users"))
    with TestClient(Console(settings, archive).app(), base_url="https://testserver") as c:
        token = log_in(_ready(c), "compliance")
        page = c.get("/calls/keep-2-0").text
        assert 'id="export"' not in page and 'id="no-export"' in page
        refused = c.post("/calls/keep-2-0/export", data={"csrf": token})
        assert refused.status_code == 409
        assert "CALLREC_CONSOLE_EXPORT_SIGNING_KEY_FILE" in refused.text


def test_a_bad_signing_key_file_stops_the_console(archive: LocalStore, tmp_path: Path) -> None:
    for content in (None, "not a key"):
        path = tmp_path / "bad.key"
        if content is not None:
            path.write_text(content)
        settings = console_settings(
            str(archive.root),
            users_file(tmp_path / "users"),
            console_export_signing_key_file=str(path),
        )
        with pytest.raises(ExportKeyError, match=r"bad\.key"):
            Console(settings, archive)
