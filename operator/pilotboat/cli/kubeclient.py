"""The command line's connection to the cluster: the user's own kubeconfig and identity."""

from __future__ import annotations

import kubernetes

from pilotboat.adapters.kube import Kube

__all__ = ["connect", "current_namespace"]


def connect(kubeconfig: str | None) -> Kube:
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    return Kube(api, field_manager="kubectl-pilotboat")


def current_namespace(kubeconfig: str | None) -> str:
    """The namespace of the kubeconfig's current context, `default` when it names none."""
    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, FileNotFoundError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")
