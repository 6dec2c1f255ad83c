"""Builders of the objects tests apply, so each test states only what matters to it."""

from __future__ import annotations

from typing import Any

from pilotboat import API_VERSION

__all__ = ["FAKE_NODE_PLACEMENT", "microservice"]

# Pods of these Microservices land on KWOK's fake nodes, which carry this taint.
FAKE_NODE_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [
        {"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}
    ],
}


def microservice(
    name: str,
    *,
    version: str = "v1",
    image: str | None = None,
    replicas: int = 2,
    fake_nodes: bool = True,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": image or f"localhost/pilotboat/echo:{version}",
        "version": version,
        "replicas": replicas,
        "ports": [{"name": "http", "port": 8080}],
        **(FAKE_NODE_PLACEMENT if fake_nodes else {}),
        **spec,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "Microservice",
        "metadata": {"name": name},
        "spec": body,
    }
