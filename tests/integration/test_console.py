"""The review console in a real browser (headless Chromium through Selenium) on an archive
made by the real pipeline: simulate -> ingest -> Kafka -> recorder -> MinIO -> analyzer
(faster-whisper tiny.en), plus recordings archived and analysed by the same code with a
scripted transcript (hostile text, and one whose WAV the test damages).

The archive is built once for the module; the console serves it from MinIO with uvicorn
on port 0. Screenshots of the calls page and a call page are saved into the test's tmp
directory, and into ``$CALLREC_SCREENSHOT_DIR`` when set (docs/img for docs/console.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from callrec import simulator, wiring
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
    archive = Archive(minio, new_bucket(minio))
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
def console_url(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    users = users_file(tmp_path_factory.mktemp("console-users") / "users")
    settings = console_settings(
        f"s3://{archive.bucket}",
        users,
        s3_endpoint_url=archive.minio.endpoint,
        s3_access_key_id=archive.minio.access_key,
        s3_secret_access_key=archive.minio.secret_key,
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
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
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

    settings = console_settings(
        f"s3://{archive.bucket}",
        Path("/dev/null"),
        s3_endpoint_url=archive.minio.endpoint,
        s3_access_key_id=archive.minio.access_key,
        s3_secret_access_key=archive.minio.secret_key,
    )
    con = connect(settings.archive_uri, settings)
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
