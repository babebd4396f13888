"""The review console in a real browser (headless Chromium through Selenium) on an archive
made by the real pipeline: simulate -> ingest -> Kafka -> recorder -> MinIO -> analyzer
(faster-whisper tiny.en), plus recordings archived and analysed by the same code with a
scripted transcript (hostile text, and one whose WAV the test damages).

The archive is built once for the module, in a MinIO bucket with Object Lock (so a legal
hold is the real S3 one); the console serves it from MinIO with uvicorn on port 0, with an
export signing key. Screenshots of the calls page, a call page and the compliance role's
call page are saved into the test's tmp directory, and into ``$CALLREC_SCREENSHOT_DIR``
when set (docs/img for docs/console.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from callrec import simulator, wiring
from compliance.export import check_bundle, new_key_pair
from deploy.local import stack
from infra.store.local import LocalStore
from infra.store.s3 import S3Store
from infra.tables import connect
from tests.consoleutil import (
    PASSWORD,
    archive_analyzed,
    console_settings,
    running_console,
    tone,
    users_file,
)
from tests.integration.conftest import create_topics
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.recorderutil import (
    new_bucket,
    recorder_settings,
    running,
    running_recorder,
    s3_store,
)
from workers.analyzer.settings import AnalyzerSettings
from workers.analyzer.transcribe import TranscriberConfig, WhisperTranscriber

CHROMEDRIVER = "/usr/bin/chromedriver"
XSS_CALL = "<script>window.__xss=1</script>"
XSS_TEXT = '"><img src=x onerror="window.__xss=2">'
WAIT_S = 60


class Archive:
    """The module's archive in MinIO."""

    def __init__(self, minio: stack.MinioServer, bucket: str) -> None:
        self.minio = minio
        self.bucket = bucket
        self.store: S3Store = s3_store(minio, bucket)
        self.recordings: dict[str, str] = {}
        """call id -> recording id."""


async def _run_pipeline(
    kafka: stack.KafkaServer, minio: stack.MinioServer, bucket: str, work: Path, data_dir: Path
) -> dict[str, str]:
    media_topic = f"callrec.media.console-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka.bootstrap, media_topic)
    recorder = recorder_settings(kafka, minio, media_topic, bucket, str(work / "spill"))
    await create_topics(kafka.bootstrap, recorder.kafka_recordings_topic, partitions=2)
    analyzer = AnalyzerSettings(
        kafka_bootstrap=kafka.bootstrap,
        kafka_recordings_topic=recorder.kafka_recordings_topic,
        archive_uri=f"s3://{bucket}",
        s3_endpoint_url=minio.endpoint,
        s3_access_key_id=minio.access_key,
        s3_secret_access_key=minio.secret_key,
        analyzer_group_id=f"analyzer-{uuid.uuid4().hex[:8]}",
        analyzer_cpu_threads=2,
    )
    os.environ["HF_HUB_OFFLINE"] = "1"
    transcriber = await asyncio.to_thread(WhisperTranscriber, TranscriberConfig(cpu_threads=2))
    [jfk] = simulator.build_calls(data_dir / "jfk.flac", channel="inbound", call_id_prefix="jfk")
    [stereo] = simulator.build_calls(data_dir / "stereo_diarization.wav", call_id_prefix="stereo")
    store = s3_store(minio, bucket)
    analyzer_store = analyzer.open_store()
    async with (
        running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
        running_recorder(recorder),
        running(wiring.analyzer_service(analyzer, analyzer_store, transcriber)),
    ):
        for call in (jfk, stereo):
            report = await simulator.stream_call(
                stream_url(ingest, None), call, realtime=False, token=TOKEN
            )
            assert report.completed
        async with asyncio.timeout(300):
            while (
                len(
                    [
                        k
                        for k in await asyncio.to_thread(store.list_keys, "recordings/")
                        if k.endswith("/transcript.json")
                    ]
                )
                < 2
            ):
                await asyncio.sleep(0.3)
    return {jfk.call_id: f"{jfk.call_id}-0", stereo.call_id: f"{stereo.call_id}-0"}


@pytest.fixture(scope="module")
def archive(
    kafka: stack.KafkaServer,
    minio: stack.MinioServer,
    tmp_path_factory: pytest.TempPathFactory,
    data_dir: Path,
) -> Archive:
    """Two calls through the whole pipeline, and two archived + analysed by its code."""
    work = tmp_path_factory.mktemp("console-archive")
    archive = Archive(minio, new_bucket(minio, object_lock=True))
    archive.recordings = asyncio.run(_run_pipeline(kafka, minio, archive.bucket, work, data_dir))
    hostile = archive_analyzed(
        archive.store,
        XSS_CALL,
        {"inbound": tone(2000)},
        [(0, 900, XSS_TEXT), (1000, 1900, "<script>window.__xss=3</script> said")],
        work,
    )
    archive.recordings[XSS_CALL] = hostile.recording_id
    damaged = archive_analyzed(
        archive.store,
        "damaged-1",
        {"inbound": tone(2000), "outbound": tone(2000, freq=330)},
        [(0, 1500, "this one will be damaged")],
        work,
    )
    archive.recordings["damaged-1"] = damaged.recording_id
    return archive


@pytest.fixture(scope="module")
def export_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the console's signing key file, the public key PEM a checker holds)."""
    private, public = new_key_pair()
    path = tmp_path_factory.mktemp("export-key") / "signing.key"
    path.write_bytes(private)
    return path, public.decode()


@pytest.fixture(scope="module")
def console_url(
    archive: Archive, export_keys: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    users = users_file(tmp_path_factory.mktemp("console-users") / "users")
    settings = console_settings(
        f"s3://{archive.bucket}",
        users,
        s3_endpoint_url=archive.minio.endpoint,
        s3_access_key_id=archive.minio.access_key,
        s3_secret_access_key=archive.minio.secret_key,
        console_export_signing_key_file=str(export_keys[0]),
        console_index_refresh_s=3600,  # a hold must show without waiting for a refresh
    )
    with running_console(settings, settings.open_store()) as url:
        yield url.replace("127.0.0.1", "localhost")  # Secure cookies: a secure context


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """Directories screenshots go to: always a tmp one, and $CALLREC_SCREENSHOT_DIR."""
    dirs = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("CALLREC_SCREENSHOT_DIR"):
        dirs.append(Path(os.environ["CALLREC_SCREENSHOT_DIR"]))
        dirs[-1].mkdir(parents=True, exist_ok=True)
    yield dirs


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """Where the browser saves downloads."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(downloads: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Any, message: str, timeout: float = WAIT_S) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message)


def log_in(driver: WebDriver, base: str, user: str, path: str = "/calls") -> None:
    driver.get(base + path)
    wait(driver, lambda d: d.find_elements(By.ID, "password"), "the login page")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=user]"), "logged in")


def save(driver: WebDriver, dirs: list[Path], name: str) -> None:
    for folder in dirs:
        driver.save_screenshot(str(folder / name))


def fetch_status(
    driver: WebDriver, url: str, method: str = "GET", body: dict[str, str] | None = None
) -> int:
    """The HTTP status the page's own fetch() gets (with the session cookie)."""
    script = """
        const [url, method, body, done] = arguments;
        const options = {method: method, credentials: 'same-origin'};
        if (body) { options.body = new URLSearchParams(body); }
        fetch(url, options).then(r => done(r.status), e => done(String(e)));
    """
    status: int = driver.execute_async_script(script, url, method, body)
    return status


def current_segment(driver: WebDriver) -> WebElement | None:
    found = driver.find_elements(By.CSS_SELECTOR, "#transcript .seg.current")
    return found[0] if found else None


def test_a_transcript_search_finds_the_call_which_plays_in_sync_and_seeks(
    browser: WebDriver,
    console_url: str,
    archive: Archive,
    shots: list[Path],
) -> None:
    log_in(browser, console_url, "listener")
    query = browser.find_element(By.ID, "q")
    query.send_keys("ask not")
    browser.find_element(By.ID, "search").click()
    wait(browser, lambda d: "q=ask+not" in d.current_url, "the search URL")
    rows = browser.find_elements(By.CSS_SELECTOR, "#calls tr.call-row")
    jfk_rec = next(r for c, r in archive.recordings.items() if c.startswith("jfk"))
    assert [r.get_attribute("data-recording") for r in rows] == [jfk_rec]
    marks = browser.find_elements(By.CSS_SELECTOR, "#calls .snippet mark")
    assert marks and marks[0].text.lower() == "ask not"
    assert browser.find_element(By.ID, "total").text.startswith("1 ")
    browser.get(console_url + "/calls?q=an&sort=call_id&order=asc")  # several calls match
    assert len(browser.find_elements(By.CSS_SELECTOR, "#calls tr.call-row")) >= 2
    save(browser, shots, "console-calls.png")

    # The stereo call has sentences on both channels: play, follow, seek.
    stereo_rec = next(r for c, r in archive.recordings.items() if c.startswith("stereo"))
    browser.get(f"{console_url}/calls/{stereo_rec}")
    wait(
        browser,
        lambda d: d.find_element(By.ID, "waveform").get_attribute("data-drawn") == "yes",
        "the waveform drawn from peaks.json",
    )
    segments = browser.find_elements(By.CSS_SELECTOR, "#transcript .seg")
    assert len(segments) >= 2
    speakers = {s.find_element(By.CSS_SELECTOR, ".speaker").text for s in segments}
    assert speakers == {"caller", "agent"}
    browser.execute_script("document.getElementById('player').play()")
    wait(
        browser,
        lambda d: d.execute_script("return document.getElementById('player').currentTime") > 0.5,
        "playback advancing",
    )

    def in_sync(d: WebDriver) -> bool:
        seg = current_segment(d)
        if seg is None:
            return False
        now_ms = d.execute_script("return document.getElementById('player').currentTime")
        start, end = int(seg.get_attribute("data-start")), int(seg.get_attribute("data-end"))
        return start - 300 <= now_ms * 1000 <= end + 300  # the next timeupdate moves it on

    wait(browser, in_sync, "the highlighted segment follows playback")
    save(browser, shots, "console-call.png")

    last = segments[-1]
    target = int(last.get_attribute("data-start"))
    last.click()
    wait(
        browser,
        lambda d: (
            d.execute_script("return document.getElementById('player').currentTime") * 1000
            >= target - 50
        ),
        "the click seeks to the segment",
    )
    wait(
        browser,
        lambda d: (
            current_segment(d) is not None
            and current_segment(d).get_attribute("data-start") == str(target)
        ),
        "the clicked segment is highlighted",
    )
    browser.execute_script("document.getElementById('player').pause()")

    # The play is on the call page's "who listened".
    browser.get(f"{console_url}/calls/{stereo_rec}")
    listens = browser.find_element(By.ID, "listens").text
    assert "listener" in listens


def test_the_integrity_check_verifies_then_reports_a_flipped_byte(
    browser: WebDriver,
    console_url: str,
    archive: Archive,
) -> None:
    rec = archive.recordings["damaged-1"]
    manifest = json.loads(archive.store.get_bytes(f"recordings/{rec}/manifest.json"))
    wav_sha = next(o["sha256"] for o in manifest["objects"] if o["key"].endswith("audio.wav"))
    log_in(browser, console_url, "viewer", f"/calls/{rec}")
    browser.find_element(By.ID, "verify").click()
    verdict = wait(browser, lambda d: d.find_elements(By.ID, "verdict"), "a verdict")[0]
    assert verdict.text.startswith("verified")
    assert wav_sha in browser.find_element(By.ID, "objects").text

    wav = bytearray(archive.store.get_bytes(f"recordings/{rec}/audio.wav"))
    wav[len(wav) // 2] ^= 0x01
    archive.store.put_bytes(f"recordings/{rec}/audio.wav", bytes(wav), "audio/wav")
    browser.get(f"{console_url}/calls/{rec}")
    browser.find_element(By.ID, "verify").click()
    verdict = wait(browser, lambda d: d.find_elements(By.ID, "verdict"), "a verdict")[0]
    assert verdict.text.startswith("mismatch")
    bad = browser.find_elements(By.CSS_SELECTOR, "#objects tr.mismatch")
    assert [row.find_element(By.CSS_SELECTOR, "td").text for row in bad] == [
        f"recordings/{rec}/audio.wav"
    ]
    assert wav_sha in bad[0].text  # expected beside the actual hash


def test_a_viewer_is_refused_audio_and_the_attempt_is_audited(
    browser: WebDriver,
    console_url: str,
    archive: Archive,
) -> None:
    rec = next(r for c, r in archive.recordings.items() if c.startswith("jfk"))
    log_in(browser, console_url, "viewer", f"/calls/{rec}")
    assert browser.find_elements(By.ID, "no-audio")
    assert not browser.find_elements(By.ID, "player")
    assert fetch_status(browser, f"/calls/{rec}/audio?ps=probe") == 403
    assert fetch_status(browser, f"/calls/{rec}/audio.wav") == 403
    # A POST without the CSRF token is refused, whatever it asks.
    assert fetch_status(browser, f"/calls/{rec}/verify", "POST", {}) == 403
    assert fetch_status(browser, f"/calls/{rec}/verify", "POST", {"csrf": "forged"}) == 403
    assert fetch_status(browser, "/logout", "POST", {}) == 403

    con = archive_db(archive)
    rows = con.sql(
        "SELECT action, outcome, actor, address FROM audit WHERE target = ? AND "
        "actor = 'viewer' AND outcome = 'denied' ORDER BY seq",
        params=[rec],
    ).fetchall()
    assert ("play", "denied", "viewer", "127.0.0.1") in rows
    assert ("download", "denied", "viewer", "127.0.0.1") in rows
    [(csrf,)] = con.sql(
        "SELECT count(*) FROM audit WHERE action = 'csrf' AND "
        "actor = 'viewer' AND outcome = 'denied'"
    ).fetchall()
    assert csrf >= 3
    [(views,)] = con.sql(
        "SELECT count(*) FROM audit WHERE action = 'view' AND target = ? AND actor = 'viewer'",
        params=[rec],
    ).fetchall()
    assert views >= 1


def test_hostile_call_ids_and_transcripts_render_as_text(
    browser: WebDriver,
    console_url: str,
    archive: Archive,
) -> None:
    log_in(browser, console_url, "listener", "/calls?call=script")
    cell = browser.find_element(By.CSS_SELECTOR, "#calls td.callid a")
    assert cell.text == XSS_CALL
    browser.find_element(By.ID, "q").send_keys("onerror")
    browser.find_element(By.ID, "search").click()
    wait(browser, lambda d: "q=onerror" in d.current_url, "the search")
    snippet = browser.find_element(By.CSS_SELECTOR, "#calls .snippet")
    assert XSS_TEXT in snippet.text
    browser.find_element(By.CSS_SELECTOR, "#calls td.callid a").click()
    wait(browser, lambda d: d.find_elements(By.ID, "call-id"), "the call page")
    assert browser.find_element(By.ID, "call-id").text == XSS_CALL
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#transcript .seg .text")]
    assert XSS_TEXT in texts[0] and "<script>window.__xss=3</script> said" in texts[1]
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    assert (
        browser.execute_script("return document.querySelectorAll('img, main script').length") == 0
    )


def csrf_of(driver: WebDriver) -> str:
    """The session's CSRF token, as the page's own forms carry it."""
    return str(driver.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value"))


def archive_env(archive: Archive) -> dict[str, str]:
    """The environment of a `callrec` command on the module's archive."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update(
        {
            "CALLREC_ARCHIVE_URI": f"s3://{archive.bucket}",
            "CALLREC_S3_ENDPOINT_URL": archive.minio.endpoint,
            "CALLREC_S3_ACCESS_KEY_ID": archive.minio.access_key,
            "CALLREC_S3_SECRET_ACCESS_KEY": archive.minio.secret_key,
        }
    )
    return env


def hold_list(archive: Archive) -> list[dict[str, Any]]:
    """What `callrec hold list --json` shows."""
    out = subprocess.run(
        [sys.executable, "-m", "callrec.cli", "hold", "list", "--json"],
        env=archive_env(archive),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listed: list[dict[str, Any]] = json.loads(out.stdout)
    return listed


def archive_db(archive: Archive) -> duckdb.DuckDBPyConnection:
    """`callrec query`'s views (``audit`` among them) over the module's archive."""
    settings = console_settings(
        f"s3://{archive.bucket}",
        Path("/dev/null"),
        s3_endpoint_url=archive.minio.endpoint,
        s3_access_key_id=archive.minio.access_key,
        s3_secret_access_key=archive.minio.secret_key,
    )
    return connect(settings.archive_uri, settings)


def audit_rows(archive: Archive, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = archive_db(archive).sql(sql, params=params).fetchall()
    return rows


def calls_on_hold(driver: WebDriver, base: str) -> list[str | None]:
    driver.get(base + "/calls?hold=yes")
    return [
        r.get_attribute("data-recording")
        for r in driver.find_elements(By.CSS_SELECTOR, "#calls tr.call-row")
    ]


def test_a_compliance_officer_holds_exports_and_releases_a_call(
    browser: WebDriver,
    console_url: str,
    archive: Archive,
    export_keys: tuple[Path, str],
    downloads: Path,
    shots: list[Path],
) -> None:
    call_id, rec = next((c, r) for c, r in archive.recordings.items() if c.startswith("jfk"))
    wav = f"recordings/{rec}/audio.wav"
    assert not archive.store.lock_state(wav).legal_hold
    log_in(browser, console_url, "compliance", f"/calls/{rec}")
    reason = "matter 2025-031 <subpoena>"
    browser.find_element(By.ID, "hold-reason").send_keys(reason)
    browser.find_element(By.ID, "place-hold").click()
    notice = wait(browser, lambda d: d.find_elements(By.ID, "notice"), "the hold's notice")[0]
    assert notice.text.startswith("Legal hold placed on ")
    assert browser.find_element(By.ID, "hold").text.startswith("on hold")
    assert reason in browser.find_element(By.ID, "hold-detail").text
    assert browser.find_elements(By.ID, "release-hold") and browser.find_elements(By.ID, "export")
    save(browser, shots, "console-compliance.png")

    # MinIO holds every object of the recording; `callrec hold list` shows the record.
    for key in archive.store.list_keys(f"recordings/{rec}/"):
        assert archive.store.lock_state(key).legal_hold, key
    [listed] = [h for h in hold_list(archive) if h["recording_id"] == rec]
    assert (listed["active"], listed["reason"], listed["set_by"]) == (True, reason, "compliance")
    # The calls page's filter finds it at once (the index refreshes hourly in this test).
    assert calls_on_hold(browser, console_url) == [rec]
    browser.find_element(By.ID, "nav-holds").click()
    wait(browser, lambda d: d.find_elements(By.ID, "holds"), "the holds page")
    held = browser.find_elements(By.CSS_SELECTOR, "#holds tr.hold-row")
    assert [r.get_attribute("data-recording") for r in held] == [rec]
    assert reason in held[0].text
    assert audit_rows(
        archive,
        "SELECT actor, address, detail->>'reason' FROM audit WHERE action = 'hold.set' "
        "AND detail->>'recording_id' = ?",
        [rec],
    ) == [("compliance", "127.0.0.1", reason)]

    # The signed bundle downloads, checks offline and holds the WAV the manifest names.
    browser.get(f"{console_url}/calls/{rec}")
    browser.find_element(By.ID, "export").click()

    def downloaded(_: WebDriver) -> list[Path]:
        done = list(downloads.glob("*.zip"))
        return done if done and not list(downloads.glob("*.crdownload")) else []

    [bundle] = wait(browser, downloaded, "the bundle downloaded")
    assert bundle.name == f"{call_id}-evidence.zip"
    check = check_bundle(bundle, export_keys[1])
    assert check.ok, check.problems
    manifest = json.loads(archive.store.get_bytes(f"recordings/{rec}/manifest.json"))
    wav_sha = next(o["sha256"] for o in manifest["objects"] if o["key"] == wav)
    with zipfile.ZipFile(bundle) as zf:
        assert hashlib.sha256(zf.read(f"{rec}/audio.wav")).hexdigest() == wav_sha
    assert audit_rows(
        archive,
        "SELECT actor, address FROM audit WHERE action = 'export' AND target = ?",
        [call_id],
    ) == [("compliance", "127.0.0.1")]
    assert not [k for k in archive.store.list_keys("") if k.endswith(".zip")]

    # Release: the objects are free again, the filter no longer finds it.
    browser.get(f"{console_url}/calls/{rec}")
    browser.find_element(By.ID, "release-reason").send_keys("matter closed")
    browser.find_element(By.ID, "release-hold").click()
    notice = wait(browser, lambda d: d.find_elements(By.ID, "notice"), "the release notice")[0]
    assert notice.text.startswith("Legal hold released")
    assert browser.find_element(By.ID, "hold").text.startswith("none")
    assert not archive.store.lock_state(wav).legal_hold
    assert calls_on_hold(browser, console_url) == []
    assert [h["recording_id"] for h in hold_list(archive)] == []
    assert audit_rows(
        archive,
        "SELECT actor, detail->>'reason' FROM audit WHERE action = 'hold.clear' "
        "AND detail->>'recording_id' = ?",
        [rec],
    ) == [("compliance", "matter closed")]


@pytest.mark.parametrize("role", ["viewer", "listener"])
def test_other_roles_get_no_hold_or_export_and_the_attempt_is_audited(
    browser: WebDriver, console_url: str, archive: Archive, role: str
) -> None:
    rec = archive.recordings["damaged-1"]
    log_in(browser, console_url, role, f"/calls/{rec}")
    assert not browser.find_elements(By.ID, "compliance")
    assert not browser.find_elements(By.ID, "nav-holds")
    token = csrf_of(browser)
    for action in ("hold", "release", "export"):
        status = fetch_status(
            browser, f"/calls/{rec}/{action}", "POST", {"csrf": token, "reason": "mine"}
        )
        assert status == 403, action
    assert fetch_status(browser, "/holds") == 403
    assert not archive.store.lock_state(f"recordings/{rec}/audio.wav").legal_hold
    denied = audit_rows(
        archive,
        "SELECT DISTINCT action FROM audit WHERE actor = ? AND outcome = 'denied' AND target = ?",
        [role, rec],
    )
    assert {"hold.set", "hold.clear", "export"} <= {a for (a,) in denied}


def test_a_hold_without_the_csrf_token_is_refused(
    browser: WebDriver, console_url: str, archive: Archive
) -> None:
    rec = archive.recordings["damaged-1"]
    log_in(browser, console_url, "compliance", f"/calls/{rec}")
    assert fetch_status(browser, f"/calls/{rec}/hold", "POST", {"reason": "x"}) == 403
    assert fetch_status(browser, f"/calls/{rec}/export", "POST", {}) == 403
    assert not archive.store.lock_state(f"recordings/{rec}/audio.wav").legal_hold
    assert not [h for h in hold_list(archive) if h["recording_id"] == rec]


def documented_policy(bucket: str) -> dict[str, Any]:
    """The console's S3 policy as docs/console.md gives it, for ``bucket``."""
    text = (Path(__file__).parents[2] / "docs" / "console.md").read_text()
    block = text.split("**Store credentials:**", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    policy: dict[str, Any] = json.loads(
        block.replace("arn:aws:s3:::callrec", f"arn:aws:s3:::{bucket}")
    )
    return policy


def test_the_documented_store_policy_lets_the_console_hold_and_export_but_not_delete(
    archive: Archive, export_keys: tuple[Path, str], tmp_path: Path
) -> None:
    """A console whose S3 credentials are limited to docs/console.md's policy (MinIO STS
    with that session policy) logs in, searches, places and releases a hold and exports;
    the same credentials cannot delete, overwrite or unlock anything."""
    import boto3
    from starlette.testclient import TestClient

    from console.app import Console

    policy = documented_policy(archive.bucket)
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert not {a for a in actions if "Delete" in a or "Bypass" in a}
    minio = archive.minio
    creds = boto3.client(
        "sts",
        endpoint_url=minio.endpoint,
        region_name="us-east-1",
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
    ).assume_role(
        RoleArn="arn:minio:iam:::role/console",
        RoleSessionName="console-policy-test",
        Policy=json.dumps(policy),
        DurationSeconds=3600,
    )["Credentials"]
    limited = boto3.client(
        "s3",
        endpoint_url=minio.endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    store = s3_store(minio, archive.bucket)
    store.client = limited  # S3Store takes no session token; the calls are its own
    store.check()
    rec = archive.recordings[XSS_CALL]
    settings = console_settings(
        f"s3://{archive.bucket}",
        users_file(tmp_path / "users"),
        console_export_signing_key_file=str(export_keys[0]),
    )
    with TestClient(Console(settings, store).app(), base_url="https://testserver") as c:
        deadline = time.monotonic() + WAIT_S
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the index never loaded"
            time.sleep(0.05)
        page = c.get("/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        login = {"csrf": token.group(1), "user": "compliance", "password": PASSWORD}
        assert c.post("/login", data=login, follow_redirects=False).status_code == 303
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/calls?hold=no").text)
        assert token
        form = {"csrf": token.group(1), "reason": "policy test"}
        placed = c.post(f"/calls/{rec}/hold", data=form, follow_redirects=False)
        assert placed.status_code == 303, placed.text
        assert archive.store.lock_state(f"recordings/{rec}/audio.wav").legal_hold
        assert f'data-recording="{rec}"' in c.get("/holds").text
        bundle = c.post(f"/calls/{rec}/export", data={"csrf": token.group(1)})
        assert bundle.status_code == 200, bundle.text
        assert bundle.headers["content-disposition"].startswith('attachment; filename="_script_')
        (tmp_path / "b.zip").write_bytes(bundle.content)
        assert check_bundle(tmp_path / "b.zip", export_keys[1]).ok
        released = c.post(f"/calls/{rec}/release", data=form, follow_redirects=False)
        assert released.status_code == 303, released.text
        assert not archive.store.lock_state(f"recordings/{rec}/audio.wav").legal_hold

    import botocore.exceptions

    wav = f"recordings/{rec}/audio.wav"
    for attempt in (
        lambda: limited.delete_object(Bucket=archive.bucket, Key=wav),
        lambda: limited.put_object(Bucket=archive.bucket, Key=wav, Body=b"forged"),
        lambda: limited.delete_object(Bucket=archive.bucket, Key="audit/000000000000.json"),
        lambda: limited.put_object_retention(
            Bucket=archive.bucket,
            Key=wav,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": "2030-01-01T00:00:00Z"},
        ),
    ):
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            attempt()
    assert archive.store.exists(wav)


def test_repeated_wrong_passwords_are_answered_429(console_url: str) -> None:
    """Over real HTTP (uvicorn): five wrong passwords for a user name, then 429 with
    Retry-After, before any password is checked. (A name of its own: the module's
    console would refuse a real user for 15 minutes.)"""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(console_url + "/login", timeout=10) as page:
        match = re.search(r'name="csrf" value="([^"]+)"', page.read().decode())
        # The session cookie is Secure: urllib keeps it off http://, a browser does not.
        cookie = page.headers["set-cookie"].split(";")[0]
    assert match
    user = f"guesser-{uuid.uuid4().hex[:6]}"

    def attempt(password: str) -> urllib.error.HTTPError:
        body = urllib.parse.urlencode({"csrf": match.group(1), "user": user, "password": password})
        request = urllib.request.Request(
            console_url + "/login", data=body.encode(), headers={"cookie": cookie}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(request, timeout=30)
        refused.value.close()
        return refused.value

    assert [attempt(f"wrong-{i}").code for i in range(5)] == [401] * 5
    throttled = attempt(PASSWORD)
    assert throttled.code == 429
    assert 0 < int(throttled.headers["retry-after"]) <= 900


def test_callrec_console_serves_as_a_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    archive = tmp_path / "archive"
    archive_analyzed(
        LocalStore(archive), "proc-1", {"inbound": tone(1000)}, [(0, 900, "hello")], tmp_path
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update(
        {
            "CALLREC_ARCHIVE_URI": str(archive),
            "CALLREC_CONSOLE_PORT": "0",
            "CALLREC_CONSOLE_HOST": "127.0.0.1",
            "CALLREC_CONSOLE_USERS_FILE": str(users_file(tmp_path / "users")),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "callrec.cli", "console"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("callrec console on http://127.0.0.1:"), line
        base = line.split()[3].rstrip("/")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(base + "/healthz", timeout=10) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(base + "/calls/proc-1-0/audio", timeout=10)
        assert refused.value.code == 401
        refused.value.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
