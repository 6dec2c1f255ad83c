#!/usr/bin/env bash
# make demo: the local cluster, the operator, and a release told as a timeline.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/cluster.sh up >/dev/null
exec .venv/bin/python hack/demo.py "$@"
