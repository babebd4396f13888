#!/usr/bin/env bash
# README command 2, and what CI runs: the whole test suite against real Kafka and MinIO.
#
# On a fresh machine with Python 3.11+, Java 17+, Maven and Go it creates .venv,
# installs callrec with its test extras, installs Kafka and MinIO into the cache
# ($CALLREC_CACHE_DIR, default ~/.cache/callrec; later runs reuse it), lints, and
# runs pytest. Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

# Kafka jars from Maven Central, MinIO and Helm from the Go module proxy: cached, idempotent.
.venv/bin/python -m deploy.local.stack install
.venv/bin/python -m deploy.tools helm
# espeak-ng makes the speech of the analyzer's timing tests (Debian package; root in CI).
command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng sox)
# Headless Chromium and its driver for the console's browser tests (Debian packages).
[ -x /usr/bin/chromedriver ] || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || echo "note: ruff format would reformat some files"
.venv/bin/mypy

exec .venv/bin/python -m pytest "$@"
