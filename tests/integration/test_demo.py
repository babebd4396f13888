"""README command 1 in a fresh clone, in a clean temporary directory, as a newcomer runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_command_records_transcribes_and_queries_a_call(tmp_path: Path) -> None:
    clone = tmp_path / "callrec"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CALLREC_", "VIRTUAL_ENV"))}
    env["CALLREC_INGEST_PORT"] = "0"  # any free port; the script reads it back
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=clone, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 900
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("== Serving") or time.monotonic() > deadline:
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()
    out = "\n".join(lines)
    assert any(line.startswith("== Serving") for line in lines), out[-3000:]
    assert re.search(r"stream_url=ws://<this host>:\d+/v1/stream\?token=demo-token", out)

    paths = dict(re.findall(r"^(audio\.wav|transcript\.json|manifest\.json)\s+(\S+)$", out,
                            re.MULTILINE))
    assert set(paths) == {"audio.wav", "transcript.json", "manifest.json"}, out[-3000:]
    assert all(Path(p).is_relative_to(clone) for p in paths.values()), "data in the clone"
    assert Path(paths["audio.wav"]).stat().st_size > 400_000  # 5 s, stereo, 24 kHz
    transcript = json.loads(Path(paths["transcript.json"]).read_text())
    assert "horizon" in json.dumps(transcript).lower()
    manifest = json.loads(Path(paths["manifest.json"]).read_text())
    assert manifest["complete"] is True and manifest["tracks"] == ["inbound", "outbound"]

    query = out.split("== callrec query", 1)[1]
    assert re.search(r"caller .*wizard", query) and re.search(r"agent .*horizon", query, re.I)
    assert "(2 rows)" in query
