"""``pilotboat approve MIGRATION [--phase contract|expand|backfill]``: approve a phase of a
SchemaMigration, bound to the SQL this command shows (its checksum) and the migration's UID.

Creates a MigrationApproval as the current kubeconfig user. Who approved is not something
this command says: the API server authenticates the request, RBAC decides whether that user
may create approvals, and the operator's admission webhook records the identity it saw.
"""

from __future__ import annotations

import secrets
import time

import click

from pilotboat import API_VERSION
from pilotboat.cli.options import ClusterTarget, cluster_options, complete_names, fetch, locate

__all__ = ["approve"]


@click.command()
@click.argument("migration", shell_complete=complete_names("SchemaMigration"))
@cluster_options()
@click.option("--reason", default=None, help="Why, for the record.")
@click.option(
    "--phase",
    type=click.Choice(["contract", "expand", "backfill"]),
    default="contract",
    show_default=True,
    help="The phase to approve: contract always needs one; expand or backfill when the SQL "
    "linter says their SQL needs approval.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the operator has recorded the approval.",
)
def approve(
    migration: str, target: ClusterTarget, reason: str | None, phase: str, wait: bool
) -> None:
    """Approve a phase (the contract by default) of MIGRATION (a SchemaMigration)."""
    from pilotboat.core.migration import checksum

    kube = target.connect()
    namespace = locate(kube, target, "SchemaMigration", migration)
    schema_migration = fetch(kube, "SchemaMigration", namespace, migration)
    sql = ((schema_migration["spec"].get(phase) or {}).get("sql")) or ""
    if not sql:
        raise click.ClickException(f"SchemaMigration {migration} has no {phase} phase")
    click.echo(
        f"Approving the {phase} of {namespace}/{migration} "
        f"(checksum {checksum(sql)[:12]}):\n{sql.strip()}\n"
    )
    name = f"{migration[:240]}-{secrets.token_hex(3)}"
    body = {
        "apiVersion": API_VERSION,
        "kind": "MigrationApproval",
        "metadata": {"name": name, "namespace": namespace},
        # Bound to what was shown above: the API server refuses it if the SQL changed since
        # (stale checksum) or the migration was re-created (another UID).
        "spec": {
            "migration": migration,
            "phase": phase,
            "checksum": checksum(sql),
            "migrationUID": schema_migration["metadata"]["uid"],
            **({"reason": reason} if reason else {}),
        },
    }
    kube.create(body)
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
