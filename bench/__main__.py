"""Run every benchmark against the local cluster and print JSON lines.

Benchmarks measure; they assert nothing. Numbers depend on the machine (2 cores here).
Each module contributes a ``BENCHMARKS`` dict (name → function of the Kube client and the
kubeconfig, yielding records); ``python -m bench NAME...`` runs only those named.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes

from bench import (
    adoption,
    argo_rollback,
    argo_rollouts,
    background,
    failover,
    flags,
    judge,
    migration,
    reconcile,
    rollback,
)
from pilotboat.adapters.kube import Kube

REPO = Path(__file__).resolve().parents[1]

Benchmark = Callable[[Kube, Path], Iterator[dict[str, Any]]]
BENCHMARKS: dict[str, Benchmark] = {
    **reconcile.BENCHMARKS,
    **rollback.BENCHMARKS,
    **adoption.BENCHMARKS,
    **background.BENCHMARKS,
    **migration.BENCHMARKS,
    **failover.BENCHMARKS,
    **flags.BENCHMARKS,
    **argo_rollouts.BENCHMARKS,
    **argo_rollback.BENCHMARKS,
    **judge.BENCHMARKS,
}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def main() -> int:
    kubeconfig = Path(os.environ.get("PILOTBOAT_KUBECONFIG", REPO / ".state" / "kubeconfig"))
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    kube = Kube(api, field_manager="pilotboat-bench")
    for path in sorted((REPO / "crds").glob("*.yaml")):
        import yaml

        kube.apply(yaml.safe_load(path.read_text()))
    time.sleep(2)
    selected = set(sys.argv[1:])
    unknown = selected - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmarks {sorted(unknown)}; known: {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name, bench in BENCHMARKS.items():
        if selected and name not in selected:
            continue
        for record in bench(kube, kubeconfig):
            emit({"benchmark": name, **record})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
