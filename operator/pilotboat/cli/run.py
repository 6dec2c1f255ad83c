"""`pilotboat run`: start the operator against the current kubeconfig (or in-cluster)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from pilotboat import GROUP

if TYPE_CHECKING:
    from pilotboat.adapters.kube import Kube
    from pilotboat.adapters.leadership import Leadership

__all__ = ["run"]

_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
CONNECTIONS = 48
"""Kept-alive connections to the API server: one for every thread that may ask at once (the
reconcile loops' 15 workers, a first deploy's Service writer and SchemaMigration list beside
each Microservice worker, 4 Event posters, 4 cache readers, 4 admission checks, Kopf's sync
handlers). The client's default, five per CPU, had threads open, and then drop, a new
TLS connection when the pool was full."""


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
    "--context",
    default=None,
    help="The kubeconfig context to use (default: its current context).",
)
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
    "--webhook-service",
    default=None,
    metavar="NAMESPACE/NAME",
    help="The chart's registration: the API server calls the webhooks through this Service "
    "(whose EndpointSlice the serving replica points at itself); the operator registers no "
    "webhook configuration. Needs --webhook-ca-secret.",
)
@click.option(
    "--webhook-ca-secret",
    default=None,
    metavar="NAMESPACE/NAME",
    help="Secret with the CA (ca.crt, ca.key) the serving certificate for --webhook-service "
    "is issued from, short-lived and renewed.",
)
@click.option(
    "--metrics-port",
    default=0,
    help="Serve /metrics, /healthz and /readyz on this port; not at all when 0.",
)
@click.option("--metrics-address", default="0.0.0.0", show_default=True)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=False,
    show_default=True,
    help="Act only while holding a Lease, so that of several replicas one acts; the others "
    "stand by (they answer probes) and take over when it stops.",
)
@click.option(
    "--lease-namespace",
    envvar="POD_NAMESPACE",
    default=None,
    help="Namespace of the Lease (default: the pod's, from its service account).",
)
@click.option(
    "--lease-name",
    default=None,
    help="Name of the Lease (default: pilotboat-<peering name>, or pilotboat).",
)
@click.option(
    "--operator-namespace",
    envvar="POD_NAMESPACE",
    default="pilotboat-system",
    show_default=True,
    help="The operator's own namespace: DatabaseServer admin and CA Secrets are read there, "
    "never in a tenant's namespace.",
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def run(
    namespaces: tuple[str, ...],
    kubeconfig: str | None,
    context: str | None,
    liveness: str,
    prometheus_url: str | None,
    peering: str | None,
    log_format: str,
    webhooks: bool,
    webhook_address: str,
    webhook_port: int,
    webhook_service: str | None,
    webhook_ca_secret: str | None,
    metrics_port: int,
    metrics_address: str,
    leader_elect: bool,
    lease_namespace: str | None,
    lease_name: str | None,
    operator_namespace: str,
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
    api_client = _api_client(kubernetes, kubeconfig, context)

    @kopf.on.login()
    def _login(**_: Any) -> kopf.ConnectionInfo:
        # Kopf logs in with exactly what the operator's own client uses (this kubeconfig
        # and context, or the pod's service account), not with what it would find itself.
        info: kopf.ConnectionInfo = _connection_info(kopf, api_client.configuration)
        return info

    from pilotboat.handlers import metrics

    metrics.count_requests(api_client)
    kube = Kube(api_client)
    _wait_for_the_api(kube)
    configure_runtime(
        Runtime(
            kube=kube,
            prometheus_url=prometheus_url,
            operator_namespace=operator_namespace,
            extras={"webhooks": webhooks},
            event_poster=ThreadPoolExecutor(max_workers=4, thread_name_prefix="events"),
        )
    )
    if webhooks:
        from pilotboat.handlers import webhooks as _webhooks

        if (webhook_service is None) != (webhook_ca_secret is None):
            raise click.UsageError("--webhook-service and --webhook-ca-secret go together")
        try:
            service_ref = webhook_service and _webhooks.parse_ref(webhook_service,
                                                                  "--webhook-service")
            ca_ref = webhook_ca_secret and _webhooks.parse_ref(webhook_ca_secret,
                                                               "--webhook-ca-secret")
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None

    @kopf.on.startup()
    def _settings(settings: kopf.OperatorSettings, **_: Any) -> None:
        from pilotboat.handlers import kopf_settings

        kopf_settings.apply(settings, kopf.get_default_registry())
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
                service=service_ref or None,
                ca_secret=ca_ref or None,
                owners=_webhooks.owning_namespaces(namespaces, peering),
            )

    ready, standby = threading.Event(), threading.Event()
    if metrics_port:
        metrics.serve(metrics_address, metrics_port, ready, standby)
    leadership = None
    if leader_elect:
        leadership = _lead(api_client, lease_namespace, lease_name or _lease(peering), liveness,
                           standby)  # fmt: skip
    metrics.leading(True)
    if leadership is not None and peering:

        @kopf.on.startup()
        def _fence(settings: kopf.OperatorSettings, **_: Any) -> None:
            # A second fence behind the Lease: each leader's Kopf peering priority is the
            # time it took the Lease, so a leader that has not noticed it lost the Lease
            # pauses in favour of the newer one, and a crashed leader's stale peering
            # record (lower priority) does not pause its successor.
            settings.peering.priority = int(time.time())

    from pilotboat.adapters.memory import Trimmer

    Trimmer().start()  # the start's temporaries, then each burst's, go back to the system
    try:
        _operate(kopf, ready, namespaces, peering, liveness)
    finally:
        if leadership is not None:
            leadership.release()


def _api_client(kubernetes: Any, kubeconfig: str | None, context: str | None) -> Any:
    """A client on ``kubeconfig``/``context``; in a pod without them, its service account;
    else the default kubeconfig. A missing or broken kubeconfig is one line, not a trace."""
    config = kubernetes.client.Configuration()
    try:
        if kubeconfig or context:
            kubernetes.config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=config
            )
        else:
            try:
                kubernetes.config.load_incluster_config(client_configuration=config)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=config)
    except (kubernetes.config.ConfigException, OSError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise click.ClickException(f"cannot load the kubeconfig {where}: {exc}") from None
    config.connection_pool_maxsize = CONNECTIONS
    return kubernetes.client.ApiClient(config)


def _connection_info(kopf: Any, config: Any) -> Any:
    """Kopf's credentials from a loaded kubernetes client configuration."""
    if getattr(config, "refresh_api_key_hook", None) is not None:
        config.refresh_api_key_hook(config)  # exec and auth-provider plugins renew here
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


def _wait_for_the_api(kube: Kube, timeout: float = 120) -> None:
    """Wait until API discovery lists every kind the operator watches: Kopf looks its
    resources up once at start (and again only when a CRD changes), so an operator started
    just after its CRDs were made, before discovery had them, would not watch them."""
    from pilotboat.adapters.kube import RESOURCES

    log = logging.getLogger("pilotboat")
    wanted: dict[tuple[str, str], set[str]] = {}
    for res in RESOURCES.values():
        if res.group == GROUP:
            wanted.setdefault((res.group, res.version), set()).add(res.plural)
    deadline = time.monotonic() + timeout
    said = False
    for (group, version), plurals in wanted.items():
        while not plurals <= kube.served(group, version):
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the API server does not serve {group}/{version} "
                    f"({', '.join(sorted(plurals))}) after {timeout:.0f}s: are the CRDs installed?"
                )
            if not said:
                log.info("waiting for the API server to serve %s/%s", group, version)
                said = True
            time.sleep(0.5)


def _lease(peering: str | None) -> str:
    return f"pilotboat-{peering}" if peering else "pilotboat"


def _lead(
    api_client: Any, namespace: str | None, name: str, liveness: str, standby: threading.Event
) -> Leadership:
    """Stand by (answering the liveness probe) until this process holds the Lease."""
    from pilotboat.adapters.leadership import Leadership
    from pilotboat.handlers import metrics

    if namespace is None:
        try:
            namespace = Path(_SA_NAMESPACE).read_text().strip()
        except OSError:
            raise click.UsageError(
                "--leader-elect needs --lease-namespace (or POD_NAMESPACE) outside a pod"
            ) from None
    identity = os.environ.get("POD_ID") or f"{socket.gethostname()}-{os.getpid()}"
    leadership = Leadership(api_client, namespace, name, identity)
    metrics.leading(False)
    url = urlsplit(liveness)
    probe = metrics.serve(url.hostname or "0.0.0.0", url.port or 80, threading.Event(), standby)
    standby.set()
    # As PID 1 of a container, a process without a handler ignores SIGTERM: a standby would
    # wait out the pod's whole grace period, then be killed. It has nothing to finish.
    previous = signal.signal(signal.SIGTERM, _stop_standing_by)
    try:
        leadership.acquire()
    finally:
        signal.signal(signal.SIGTERM, previous)  # Kopf installs its own
        standby.clear()
        probe.shutdown()
        probe.server_close()  # Kopf's liveness endpoint takes the port over
    return leadership


def _stop_standing_by(signum: int, _frame: Any) -> None:
    logging.getLogger("pilotboat").info(
        "stopping while standing by (%s)", signal.Signals(signum).name
    )
    raise SystemExit(0)


def _operate(
    kopf: Any,
    ready: threading.Event,
    namespaces: tuple[str, ...],
    peering: str | None,
    liveness: str,
) -> None:
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
