"""README command 1 in a fresh clone, in a clean temporary directory, as a newcomer runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from callrec import simulator
from tests.integration.recorderutil import wav_channels

REPO = Path(__file__).resolve().parents[2]


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET to this machine (never through a configured proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def http(url: str, data: dict[str, str] | None = None, cookie: str = ""
         ) -> tuple[int, dict[str, str], str]:
    """Status, headers and body, redirects not followed; the cookie is sent by hand (the
    console's is Secure, which Python's cookie jar keeps off http://localhost)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"cookie": cookie} if cookie
                                     else {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def console_login(base: str, user: str, password: str) -> str:
    """The session cookie of a login through the console's form."""
    status, headers, page = http(base + "/login")
    assert status == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    cookie = headers["set-cookie"].split(";")[0]
    status, headers, _ = http(base + "/login", {"csrf": token.group(1), "user": user,
                                                "password": password}, cookie)
    assert status == 303 and headers["location"] == "/calls", status
    return str(headers["set-cookie"].split(";")[0])


def test_the_demo_passes_no_token_on_a_command_line() -> None:
    """Arguments are visible to every user of the machine (ps): tokens go in the environment."""
    script = (REPO / "scripts" / "demo.sh").read_text()
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in commands if "--token" in line]
    assert any('CALLREC_SIMULATE_TOKEN="$token"' in line and "callrec simulate" in line
               for line in commands)


def test_the_demo_command_records_transcribes_and_queries_a_call(tmp_path: Path) -> None:
    clone = tmp_path / "callrec"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CALLREC_", "VIRTUAL_ENV"))}
    env["CALLREC_INGEST_PORT"] = "0"  # any free port; the script reads it back
    env["CALLREC_CONSOLE_PORT"] = "0"
    env["HF_HUB_OFFLINE"] = "1"  # the bundled model only: a newcomer's first run needs no hub
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=clone, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    serving: re.Match[str] | None = None
    probes: dict[str, tuple[int, str]] = {}
    public_token = (0, "")
    alive = False
    console_page = (0, "")
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 900
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("== Serving") or time.monotonic() > deadline:
                break
        serving = re.search(r"^== Serving on port (\d+): "
                            r"stream_url=wss://<public host>/v1/stream\?token=(\S+)$",
                            lines[-1] if lines else "")
        if serving:  # still serving after the demo call: probes answer, the token is needed
            port, token = serving.groups()
            base = f"http://127.0.0.1:{port}"
            probes = {path: http_get(base + path) for path in ("/healthz", "/readyz")}
            public_token = http_get(f"{base}/v1/stream?token=demo-token")
            console = re.search(r"^== Review console: (http://localhost:\d+)(/calls\S*)$\n"
                                r"   log in as demo / (\S+) ", "\n".join(lines), re.MULTILINE)
            if console:
                base_url, path, password = console.groups()
                cookie = console_login(base_url, "demo", password)
                until = time.monotonic() + 60  # the index picks the call up within seconds
                while True:
                    status, _, page = http(base_url + path, cookie=cookie)
                    console_page = (status, page)
                    if status != 200 or "call-row" in page or time.monotonic() > until:
                        break
                    time.sleep(0.5)
            alive = proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()
    out = "\n".join(lines)
    assert serving, out[-3000:]
    assert probes == {"/healthz": (200, "ok\n"), "/readyz": (200, "ready\n")}
    assert alive, "callrec up kept serving after the demo call"
    assert len(token) >= 32 and token != "demo-token", "a random token when none is set"
    assert public_token[0] == 401, "a guessable token records nothing"
    assert console_page[0] == 200, "the printed console URL and login work"
    assert re.search(r'data-recording="demo-[0-9-]+-1-0"', console_page[1]), "the call listed"

    paths = dict(re.findall(r"^(audio\.wav|transcript\.json|manifest\.json)\s+(\S+)$", out,
                            re.MULTILINE))
    assert set(paths) == {"audio.wav", "transcript.json", "manifest.json"}, out[-3000:]
    assert all(Path(p).is_relative_to(clone) for p in paths.values()), "data in the clone"
    rate, channels = wav_channels(Path(paths["audio.wav"]).read_bytes())
    [call] = simulator.build_calls(clone / "tests" / "data" / "stereo_diarization.wav")
    assert rate == 24000 and len(channels) == 2
    assert len(channels[0]) == 5 * 24000 * 2, "5 s of 16-bit samples per channel"
    assert channels == [call.tracks["inbound"], call.tracks["outbound"]], "sample-identical"
    transcript = json.loads(Path(paths["transcript.json"]).read_text())
    assert "horizon" in json.dumps(transcript).lower()
    manifest = json.loads(Path(paths["manifest.json"]).read_text())
    assert manifest["complete"] is True and manifest["tracks"] == ["inbound", "outbound"]

    query = out.split("== callrec query", 1)[1]
    assert re.search(r"caller .*wizard", query) and re.search(r"agent .*horizon", query, re.I)
    assert "(2 rows)" in query
