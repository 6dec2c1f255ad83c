"""`pilotboat run`: start the operator against the current kubeconfig (or in-cluster)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
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
@click.option(
    "--webhooks/--no-webhooks",
    default=True,
    show_default=True,
    help="Serve admission webhooks: approver identity on MigrationApprovals, and refusal of "
    "a second claimant of an OwnedDatabase. Without them approvals do not count.",
)
@click.option(
    "--webhook-address",
    default="127.0.0.1",
    show_default=True,
    help="Address the webhook server listens on, and the API server calls.",
)
@click.option("--webhook-port", default=0, help="Webhook server port; a free one when 0.")
@click.option(
    "--metrics-port",
    default=0,
    help="Serve /metrics, /healthz and /readyz on this port; not at all when 0.",
)
@click.option("--metrics-address", default="0.0.0.0", show_default=True)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def run(
    namespaces: tuple[str, ...],
    kubeconfig: str | None,
    liveness: str,
    prometheus_url: str | None,
    peering: str | None,
    log_format: str,
    webhooks: bool,
    webhook_address: str,
    webhook_port: int,
    metrics_port: int,
    metrics_address: str,
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
    kube = Kube(api_client)
    configure_runtime(
        Runtime(kube=kube, prometheus_url=prometheus_url, extras={"webhooks": webhooks})
    )
    if webhooks:
        from pilotboat.handlers import webhooks as _webhooks

    @kopf.on.startup()
    def _settings(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = 8
        settings.networking.error_backoffs = [1, 2, 5, 10]
        if webhooks:
            settings.admission.server = _webhooks.PilotboatWebhookServer(
                kube,
                name=_webhooks.webhook_configuration_name(namespaces, peering),
                namespaces=namespaces,
                addr=webhook_address,
                host=webhook_address,
                port=webhook_port or None,
            )

    ready = threading.Event()
    if metrics_port:
        from pilotboat.handlers import metrics

        metrics.serve(metrics_address, metrics_port, ready)
    asyncio.run(
        kopf.operator(
            ready_flag=ready,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=peering is None,
            peering_name=peering,
            liveness_endpoint=liveness,
        )
    )
