#!/usr/bin/env bash
# make demo: the local cluster, PostgreSQL, cluster DNS, Prometheus and the operator; the shop
# deployed and released, told as a timeline (examples/shop/demo). Exit 0 only when every step
# behaved as described. Report: .state/demo/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m examples.shop.demo "$@"
