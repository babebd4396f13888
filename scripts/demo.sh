#!/usr/bin/env bash
# README command 1: callrec on this machine, in one process, with nothing but Python.
#
# Creates .venv, installs callrec, starts `callrec up` (ingest + recorder + analyzer
# + review console on a local bus and a local archive: no Kafka, no S3, no Docker), streams the
# bundled stereo test call through `callrec simulate` as Wavix would (two oneway
# streams: caller and agent), then prints where the WAV, the transcript and the
# manifest are and the result of a `callrec query` over the call. It then keeps
# serving, so real Wavix streams can reach it; Ctrl-C stops it.
#
# Environment: CALLREC_UP_DATA_DIR (default ./callrec-data), CALLREC_INGEST_PORT
# (default 8080; 0 = any free port), CALLREC_INGEST_TOKENS (comma-separated stream
# tokens; unset = a random token for this run, printed with the stream_url: the
# server listens on every interface, so a token anyone could guess would let anyone
# record into it). CALLREC_CONSOLE_PORT (default 8081): the review console; its login is
# user `demo` with a random password printed at the end (CALLREC_CONSOLE_USERS_FILE unset).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .

export CALLREC_UP_DATA_DIR=${CALLREC_UP_DATA_DIR:-$PWD/callrec-data}
export CALLREC_INGEST_PORT=${CALLREC_INGEST_PORT:-8080}
if [ -z "${CALLREC_INGEST_TOKENS:-}" ]; then
  CALLREC_INGEST_TOKENS=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(24))')
fi
export CALLREC_INGEST_TOKENS
export CALLREC_LOG_LEVEL=${CALLREC_LOG_LEVEL:-WARNING}
token=${CALLREC_INGEST_TOKENS%%,*}
mkdir -p "$CALLREC_UP_DATA_DIR"
export CALLREC_CONSOLE_PORT=${CALLREC_CONSOLE_PORT:-8081}
# A local archive is cheap to list: the console shows a new call within 2 s.
export CALLREC_CONSOLE_INDEX_REFRESH_S=${CALLREC_CONSOLE_INDEX_REFRESH_S:-2}
console_password=""
if [ -z "${CALLREC_CONSOLE_USERS_FILE:-}" ]; then
  # One user for the demo, role compliance (everything); the hash only is written down.
  console_password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
  CALLREC_CONSOLE_USERS_FILE="$CALLREC_UP_DATA_DIR/console-users"
  printf 'demo:compliance:%s\n' \
    "$(printf '%s\n' "$console_password" | .venv/bin/callrec console --hash-password)" \
    >"$CALLREC_CONSOLE_USERS_FILE"
  chmod 600 "$CALLREC_CONSOLE_USERS_FILE"
fi
export CALLREC_CONSOLE_USERS_FILE
if [ -z "${CALLREC_CONSOLE_SESSION_SECRET:-}" ]; then
  CALLREC_CONSOLE_SESSION_SECRET=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')
fi
export CALLREC_CONSOLE_SESSION_SECRET
log="$CALLREC_UP_DATA_DIR/up.log"

.venv/bin/callrec up >"$log" 2>&1 &
up_pid=$!
trap 'kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true' EXIT INT TERM

# `callrec up` prints its port once ready (the whisper model loads first).
port=""
for _ in $(seq 600); do
  port=$(sed -n 's/.*ws:\/\/<host>:\([0-9]*\)\/v1\/stream.*/\1/p' "$log" | head -n 1)
  [ -n "$port" ] && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$log"; echo "callrec up failed" >&2; exit 1; }
  sleep 0.2
done
[ -n "$port" ] || { cat "$log"; echo "callrec up did not start" >&2; exit 1; }

call="demo-$(date +%Y%m%d-%H%M%S)"
echo "== Streaming tests/data/stereo_diarization.wav as call ${call}-1 (caller left, agent right)"
# The token goes in the environment, never on the command line (ps shows arguments).
CALLREC_SIMULATE_TOKEN="$token" .venv/bin/callrec simulate tests/data/stereo_diarization.wav \
  --layout oneway --fast --url "ws://127.0.0.1:$port/v1/stream" --call-id-prefix "$call"

.venv/bin/python - "$CALLREC_UP_DATA_DIR/archive" "${call}-1-0" <<'PY'
import sys, time
from pathlib import Path
archive, recording = Path(sys.argv[1]), sys.argv[2]
done = archive / "recordings" / recording / "transcript.json"
deadline = time.monotonic() + 180
while not done.exists():
    if time.monotonic() > deadline:
        sys.exit(f"no transcript for {recording} after 180 s")
    time.sleep(0.2)
for name in ("audio.wav", "transcript.json", "manifest.json"):
    print(f"{name:16} {archive / 'recordings' / recording / name}")
PY

echo "== callrec query"
.venv/bin/callrec query --archive "$CALLREC_UP_DATA_DIR/archive" "
  SELECT c.call_id, c.duration_ms, c.complete, s.speaker, s.start_ms, s.text
  FROM calls c JOIN segments s USING (recording_id)
  WHERE c.call_id = '${call}-1' ORDER BY s.start_ms"

console_port=$(sed -n 's/.*console http:\/\/<host>:\([0-9]*\)\/.*/\1/p' "$log" | head -n 1)
echo "== Review console: http://localhost:$console_port/calls?call=${call}"
if [ -n "$console_password" ]; then
  echo "   log in as demo / $console_password (users file $CALLREC_CONSOLE_USERS_FILE)"
else
  echo "   log in with a user of $CALLREC_CONSOLE_USERS_FILE"
fi
echo "== Serving on port $port: stream_url=wss://<public host>/v1/stream?token=$token"
echo "   Wavix needs that URL publicly reachable over TLS: a TLS proxy or a tunnel in front"
echo "   of port $port. Ctrl-C stops."
wait "$up_pid"
