"""``pilotboat approve MIGRATION``: approve a SchemaMigration's contract phase.

Creates a MigrationApproval as the current kubeconfig user. Who approved is not something
this command says: the API server authenticates the request, RBAC decides whether that user
may create approvals, and the operator's admission webhook records the identity it saw.
"""

from __future__ import annotations

import os
import secrets
import time

import click

from pilotboat import API_VERSION

__all__ = ["approve"]


@click.command()
@click.argument("migration")
@click.option("--namespace", "-n", default=None, help="Namespace; the kubeconfig's by default.")
@click.option("--reason", default=None, help="Why, for the record.")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Path to a kubeconfig.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the operator has recorded the approval.",
)
def approve(
    migration: str, namespace: str | None, reason: str | None, kubeconfig: str | None, wait: bool
) -> None:
    """Approve the contract phase of MIGRATION (a SchemaMigration)."""
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    from pilotboat.adapters.kube import Kube
    from pilotboat.core.migration import checksum

    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    if namespace is None:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    api = kubernetes.config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
    kube = Kube(api)
    try:
        target = kube.get("SchemaMigration", namespace, migration)
    except ApiException as exc:
        raise click.ClickException(
            f"cannot read SchemaMigration {migration}: {exc.reason}"
        ) from None
    if target is None:
        raise click.ClickException(f"SchemaMigration {migration} not found in {namespace}")
    sql = target["spec"]["contract"]["sql"]
    click.echo(
        f"Approving the contract of {namespace}/{migration} "
        f"(checksum {checksum(sql)[:12]}):\n{sql.strip()}\n"
    )
    name = f"{migration[:240]}-{secrets.token_hex(3)}"
    body = {
        "apiVersion": API_VERSION,
        "kind": "MigrationApproval",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "migration": migration,
            "phase": "contract",
            **({"reason": reason} if reason else {}),
        },
    }
    try:
        kube.create(body)
    except ApiException as exc:
        raise click.ClickException(
            f"the API server refused the approval ({exc.status} {exc.reason}): {exc.body}"
        ) from None
    click.echo(f"migrationapproval.pilotboat.dev/{name} created")
    if not wait:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = (kube.get("MigrationApproval", namespace, name) or {}).get("status") or {}
        if status.get("valid") is not None:
            who = (status.get("approvedBy") or {}).get("username", "?")
            state = "valid" if status["valid"] else "NOT valid"
            conditions = status.get("conditions") or [{}]
            click.echo(f"recorded: approved by {who}; {state}: {conditions[-1].get('message')}")
            return
        time.sleep(0.5)
    click.echo("the operator has not recorded the approval yet (is it running?)")
