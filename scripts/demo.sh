#!/usr/bin/env bash
# README command 1: record a demo call end to end on this machine.
#
# Creates .venv, installs callrec, starts the local Kafka + MinIO stack
# (deploy/local), runs `callrec ingest` and `callrec recorder`, streams the
# bundled stereo test call through `callrec simulate` as Wavix would, and prints
# where the WAV and the manifest landed. Services keep running until Ctrl-C, so
# real Wavix streams can reach ws://HOST:8080/v1/stream?token=demo-token.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .

eval "$(.venv/bin/python -m deploy.local.stack start)"
export CALLREC_ARCHIVE_URI=${CALLREC_ARCHIVE_URI:-s3://callrec}
export CALLREC_S3_CREATE_BUCKET=true
export CALLREC_INGEST_TOKENS=${CALLREC_INGEST_TOKENS:-demo-token}
export CALLREC_INGEST_PORT=${CALLREC_INGEST_PORT:-8080}
export CALLREC_RECORDER_PORT=${CALLREC_RECORDER_PORT:-9091}

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
.venv/bin/callrec ingest & pids+=($!)
.venv/bin/callrec recorder & pids+=($!)

until curl -fsS "http://127.0.0.1:$CALLREC_INGEST_PORT/readyz" >/dev/null 2>&1; do sleep 0.5; done
call_id="demo-$(date +%s)"
.venv/bin/callrec simulate tests/data/stereo_diarization.wav --layout oneway \
  --url "ws://127.0.0.1:$CALLREC_INGEST_PORT/v1/stream" --token "$CALLREC_INGEST_TOKENS" \
  --call-id-prefix "$call_id" --fast

.venv/bin/python - "$call_id" <<'PY'
import sys, time
from callrec.settings import RecorderSettings
store = RecorderSettings().open_store()
prefix = f"recordings/{sys.argv[1]}"
deadline = time.monotonic() + 60
while not (keys := [k for k in store.list_keys(prefix) if k.endswith("manifest.json")]):
    if time.monotonic() > deadline:
        sys.exit("no recording archived within 60 s")
    time.sleep(0.5)
for key in store.list_keys(prefix):
    print("archived:", store.uri(key))
PY
echo "Serving: give Wavix stream_url=ws://<this host>:$CALLREC_INGEST_PORT/v1/stream?token=$CALLREC_INGEST_TOKENS (Ctrl-C stops)"
wait
