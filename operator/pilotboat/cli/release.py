"""`pilotboat status | promote | abort | retry`: read and steer a release.

Commands are written to the Microservice's status subresource (`status.commands`), never
to its spec: RBAC can grant `patch` on `microservices/status` to release managers without
letting them edit what Git declares, and the operator acts on each command token once.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any

import click

from pilotboat.cli.kubeclient import connect, current_namespace

__all__ = ["abort", "promote", "retry", "status"]

_namespace_option = click.option(
    "-n", "--namespace", default=None, help="Namespace (default: the kubeconfig's)."
)
_kubeconfig_option = click.option("--kubeconfig", envvar="KUBECONFIG", default=None)


def _token() -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def _send(kubeconfig: str | None, namespace: str | None, name: str, command: str) -> None:
    kube = connect(kubeconfig)
    ns = namespace or current_namespace(kubeconfig)
    if kube.get("Microservice", ns, name) is None:
        raise click.ClickException(f"Microservice {ns}/{name} not found")
    token = _token()
    kube.merge_patch(
        "Microservice", ns, name, {"status": {"commands": {command: token}}}, subresource="status"
    )
    click.echo(f"{command} requested for {ns}/{name} (token {token})")


@click.command()
@click.argument("name")
@click.option("--full", is_flag=True, help="Skip all remaining steps and promote now.")
@_namespace_option
@_kubeconfig_option
def promote(name: str, full: bool, namespace: str | None, kubeconfig: str | None) -> None:
    """Go past the current pause or analysis step (or, with --full, promote now)."""
    _send(kubeconfig, namespace, name, "promoteFull" if full else "promote")


@click.command()
@click.argument("name")
@_namespace_option
@_kubeconfig_option
def abort(name: str, namespace: str | None, kubeconfig: str | None) -> None:
    """Roll the release back: all traffic to stable, canary scaled to zero."""
    _send(kubeconfig, namespace, name, "abort")


@click.command()
@click.argument("name")
@_namespace_option
@_kubeconfig_option
def retry(name: str, namespace: str | None, kubeconfig: str | None) -> None:
    """Start a rolled-back release again from its first step."""
    _send(kubeconfig, namespace, name, "retry")


def _render(ms: dict[str, Any]) -> str:
    spec, st = ms.get("spec", {}), ms.get("status", {}) or {}
    steps = ((spec.get("rollout") or {}).get("canary") or {}).get("steps") or []
    lines = [
        f"Microservice {ms['metadata']['namespace']}/{ms['metadata']['name']}",
        f"  phase:    {st.get('phase', '-')}",
        f"  message:  {st.get('message', '-')}",
        f"  stable:   {st.get('stableVersion', '-')}",
        f"  canary:   {st.get('canaryVersion') or '-'}  weight {st.get('canaryWeight', 0)}%"
        + (
            f" (actual {st['actualWeight']}%)"
            if st.get("actualWeight", st.get("canaryWeight", 0)) != st.get("canaryWeight", 0)
            else ""
        ),
        f"  replicas: {st.get('readyReplicas', 0)}/{st.get('replicas', 0)} ready",
    ]
    if st.get("pauseReason"):
        lines.append(f"  paused:   {st['pauseReason']}")
    current = st.get("currentStepIndex")
    if steps:
        lines.append("  steps:")
        for i, step in enumerate(steps):
            mark = "→" if i == current else ("✓" if current is not None and i < current else " ")
            lines.append(f"    {mark} {i + 1}. {json.dumps(step, separators=(',', ':'))}")
    analysis = st.get("analysis") or {}
    if analysis.get("history"):
        lines.append("  signals (latest):")
        latest: dict[str, dict[str, Any]] = {}
        for record in analysis["history"]:
            latest[record["signal"]] = record
        for record in latest.values():
            lines.append(
                f"    {record['signal']:<10} {record['verdict']:<12} {record.get('message', '')}"
            )
    lines.append("  conditions:")
    for cond in st.get("conditions", []) or []:
        lines.append(
            f"    {cond['type']:<11} {cond['status']:<6} {cond.get('reason', '')}: "
            f"{cond.get('message', '')}"
        )
    return "\n".join(lines)


@click.command()
@click.argument("name")
@_namespace_option
@_kubeconfig_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def status(name: str, namespace: str | None, kubeconfig: str | None, output: str) -> None:
    """Show where a release stands: steps, weight, signals, conditions."""
    kube = connect(kubeconfig)
    ns = namespace or current_namespace(kubeconfig)
    ms = kube.get("Microservice", ns, name)
    if ms is None:
        raise click.ClickException(f"Microservice {ns}/{name} not found")
    if output == "json":
        click.echo(
            json.dumps(
                {"metadata": {"name": name, "namespace": ns}, "status": ms.get("status", {})},
                indent=2,
            )
        )
    else:
        click.echo(_render(ms))
