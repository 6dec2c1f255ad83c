"""Pod discovery for a Prometheus built without kubernetes_sd_configs (Debian's).

Every few seconds, lists the pods the kubeconfig can see and writes them to a file_sd file
as one target group per pod, labelled as ``kubernetes_sd_configs`` (role: pod) labels them:
``__meta_kubernetes_namespace``, ``__meta_kubernetes_pod_{name,ip,phase,node_name}``,
``__meta_kubernetes_pod_label_<name>`` and ``__meta_kubernetes_pod_annotation_<name>`` (names
with every character outside ``[a-zA-Z0-9_]`` replaced by ``_``). The relabelling in
kubernetes-pods.yml then does the rest, as it would for a cluster's own Prometheus.

    python pod_sd.py --kubeconfig .state/kubeconfig --out .state/prometheus/pods/kubernetes.json

Runs until SIGTERM; an unreachable API server is logged and retried, the last file kept.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import kubernetes

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _name(text: str) -> str:
    return _UNSAFE.sub("_", text)


def target_groups(pods: list[Any]) -> list[dict[str, Any]]:
    """file_sd target groups for the pods that have an IP, sorted so equal input writes
    equal bytes."""
    groups = []
    for pod in pods:
        ip = pod.status.pod_ip if pod.status else None
        if not ip:
            continue
        meta = pod.metadata
        labels = {
            "__meta_kubernetes_namespace": meta.namespace,
            "__meta_kubernetes_pod_name": meta.name,
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": pod.status.phase or "",
            "__meta_kubernetes_pod_node_name": (pod.spec.node_name if pod.spec else None) or "",
        }
        for key, value in (meta.labels or {}).items():
            labels[f"__meta_kubernetes_pod_label_{_name(key)}"] = value
            labels[f"__meta_kubernetes_pod_labelpresent_{_name(key)}"] = "true"
        for key, value in (meta.annotations or {}).items():
            labels[f"__meta_kubernetes_pod_annotation_{_name(key)}"] = value
            labels[f"__meta_kubernetes_pod_annotationpresent_{_name(key)}"] = "true"
        groups.append({"targets": [ip], "labels": labels})
    return sorted(
        groups,
        key=lambda g: (
            g["labels"]["__meta_kubernetes_namespace"],
            g["labels"]["__meta_kubernetes_pod_name"],
        ),
    )


def _write(out: Path, groups: list[dict[str, Any]]) -> bool:
    text = json.dumps(groups, indent=1, sort_keys=True) + "\n"
    if out.exists() and out.read_text() == text:
        return False
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)  # atomic: Prometheus never reads half a file
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between two lists")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    failing = False
    while not stop.is_set():
        try:
            api = kubernetes.config.new_client_from_config(config_file=args.kubeconfig)
            with api:
                core = kubernetes.client.CoreV1Api(api)
                while not stop.is_set():
                    pods = core.list_pod_for_all_namespaces(_request_timeout=10).items
                    _write(args.out, target_groups(pods))
                    if failing:
                        print("pod_sd: listing pods again", file=sys.stderr, flush=True)
                        failing = False
                    stop.wait(args.every)
        except Exception as exc:  # the API server may be down for a while: keep trying
            if not failing:
                print(f"pod_sd: cannot list pods: {exc}", file=sys.stderr, flush=True)
                failing = True
            stop.wait(args.every)


if __name__ == "__main__":
    main()
