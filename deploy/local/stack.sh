#!/usr/bin/env bash
# Run callrec's local Kafka + MinIO stack tool from the repository root.
#   deploy/local/stack.sh install|start|stop|status|env [--kafka-port N] [--minio-port N] [--dir DIR]
#   eval "$(deploy/local/stack.sh start)"   # start and export CALLREC_* settings
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 -m deploy.local.stack "$@"
