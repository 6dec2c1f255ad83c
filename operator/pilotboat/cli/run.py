"""`pilotboat run`: start the operator against the current kubeconfig (or in-cluster)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import click

__all__ = ["run"]


@click.command()
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeatable); all namespaces when omitted.",
)
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Path to a kubeconfig.")
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Where to serve the liveness probe.",
)
@click.option(
    "--prometheus-url",
    envvar="PILOTBOAT_PROMETHEUS_URL",
    default=None,
    help="Default Prometheus for analyses that name none.",
)
@click.option(
    "--peering",
    default=None,
    help="Kopf peering name: replicas with the same name never act at once. "
    "Standalone (no peering) when omitted.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "plain"]),
    default="json",
    show_default=True,
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def run(
    namespaces: tuple[str, ...],
    kubeconfig: str | None,
    liveness: str,
    prometheus_url: str | None,
    peering: str | None,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the Pilotboat operator."""
    import kopf
    import kubernetes

    import pilotboat.handlers.register  # noqa: F401  (registers the Kopf handlers)
    from pilotboat.adapters.kube import Kube
    from pilotboat.handlers.context import Runtime, configure_runtime

    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object",
    )
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # Kopf's own login reads it too
        api_client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    else:
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        api_client = kubernetes.client.ApiClient()
    configure_runtime(Runtime(kube=Kube(api_client), prometheus_url=prometheus_url))

    @kopf.on.startup()
    def _settings(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = 8
        settings.networking.error_backoffs = [1, 2, 5, 10]

    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=peering is None,
            peering_name=peering,
            liveness_endpoint=liveness,
        )
    )
