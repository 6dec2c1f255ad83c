"""`pilotboat status | promote | abort | retry`: read and steer a release.

Commands are written to the Microservice's status subresource (`status.commands`), never
to its spec: RBAC can grant `patch` on `microservices/status` to release managers without
letting them edit what Git declares, and the operator acts on each command token once.
Each command names who sends it (`status.commands.<command>By`, the user a SelfSubjectReview
returns): the admission policy pilotboat-command-identity checks that name against the
request's, so a command is accepted with or without the operator's webhook running.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any

import click
import kubernetes
from kubernetes.client.exceptions import ApiException

from pilotboat.adapters.kube import Kube
from pilotboat.cli.options import ClusterTarget, cluster_options, complete_names, fetch, locate
from pilotboat.cli.progress import duration_option, wait_for_release

__all__ = ["abort", "judgement_lines", "promote", "retry", "status"]


def _token() -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def whoami(kube: Kube) -> str | None:
    """The user the API server authenticates this client as (a SelfSubjectReview); None
    where the API server does not answer one (the operator's webhook then names the user)."""
    api = kubernetes.client.AuthenticationV1Api(kube.api_client)
    try:
        review = api.create_self_subject_review(
            kubernetes.client.V1SelfSubjectReview(
                api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"
            )
        )
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise
    user = review.status.user_info if review.status else None
    return str(user.username) if user and user.username else None


def _send(target: ClusterTarget, name: str, command: str) -> None:
    kube = target.connect()
    ns = locate(kube, target, "Microservice", name)
    fetch(kube, "Microservice", ns, name)
    token = _token()
    me = whoami(kube)
    sent: dict[str, str] = {command: token, **({f"{command}By": me} if me else {})}
    kube.merge_patch("Microservice", ns, name, {"status": {"commands": sent}},
                     subresource="status")  # fmt: skip
    by = f" by {me}" if me else ""
    click.echo(f"{command} requested for {ns}/{name}{by} (token {token})")


_name_argument = click.argument("name", shell_complete=complete_names("Microservice"))


@click.command()
@_name_argument
@click.option("--full", is_flag=True, help="Skip all remaining steps and promote now.")
@cluster_options()
def promote(name: str, full: bool, target: ClusterTarget) -> None:
    """Go past the current pause or analysis step (or, with --full, promote now)."""
    _send(target, name, "promoteFull" if full else "promote")


@click.command()
@_name_argument
@cluster_options()
def abort(name: str, target: ClusterTarget) -> None:
    """Roll the release back: all traffic to stable, canary scaled to zero."""
    _send(target, name, "abort")


@click.command()
@_name_argument
@cluster_options()
def retry(name: str, target: ClusterTarget) -> None:
    """Start a rolled-back release again from its first step."""
    _send(target, name, "retry")


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def judgement_lines(judgement: dict[str, Any]) -> list[str]:
    """The statistical judge's last score and each signal's test (status.analysis.judgement)."""
    if not judgement.get("verdict"):
        return []
    pass_score, marginal = judgement.get("passScore", 95), judgement.get("marginalScore", 75)
    at = f" at {judgement['at']}" if judgement.get("at") else ""
    lines = [
        f"  judge:    {judgement['verdict']}, score {_num(judgement.get('score'))}"
        f" (pass >= {pass_score:g}, fail < {marginal:g}){at}: {judgement.get('explanation', '')}"
    ]
    for s in judgement.get("signals") or []:
        relative = s.get("relativeEffect")
        effect = (
            f"{relative * 100:+.1f}%" if relative is not None else f"{_num(s.get('effect'))} abs"
        )
        lines.append(
            f"    {s['signal']:<10} {s['verdict']:<12} {s.get('test', '')}, weight"
            f" {s.get('weight', 1):g}, n={s.get('canarySamples', 0)}/{s.get('stableSamples', 0)},"
            f" median {_num(s.get('canaryMedian'))} vs stable {_num(s.get('stableMedian'))}"
            f" ({effect}), p={_num(s.get('pValue'))}"
        )
    return lines


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
    last = st.get("lastCommand") or {}
    if last.get("name"):
        who = last.get("by") or "an unnamed user"
        lines.append(f"  command:  {last['name']} sent by {who}"
                     + ("" if last.get("verified") else " (unverified)")
                     + (f", acted on {last['at']}" if last.get("at") else ""))  # fmt: skip
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
    lines += judgement_lines(analysis.get("judgement") or {})
    lines.append("  conditions:")
    for cond in st.get("conditions", []) or []:
        lines.append(
            f"    {cond['type']:<11} {cond['status']:<6} {cond.get('reason', '')}: "
            f"{cond.get('message', '')}"
        )
    return "\n".join(lines)


@click.command()
@_name_argument
@cluster_options()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--wait", is_flag=True,
              help="Wait until the release is promoted (exit 0), fails (exit 1) or --timeout "
                   "passes (exit 2), printing a line each time it moves.")
@click.option("--timeout", callback=duration_option, default="10m", show_default=True,
              help="How long --wait waits (30s, 10m, 1h; 0: no limit).")
def status(name: str, target: ClusterTarget, output: str, wait: bool,
           timeout: float | None) -> None:
    """Show where a release stands: steps, weight, signals, conditions."""
    kube = target.connect()
    ns = locate(kube, target, "Microservice", name)
    ms = fetch(kube, "Microservice", ns, name)
    if wait:
        wait_for_release(lambda: fetch(kube, "Microservice", ns, name), name, timeout,
                         say=lambda line: click.echo(line, err=output == "json"))
        ms = fetch(kube, "Microservice", ns, name)
        if output == "text":
            return
    if output == "json":
        click.echo(
            json.dumps(
                {"metadata": {"name": name, "namespace": ns}, "status": ms.get("status", {})},
                indent=2,
            )
        )
    else:
        click.echo(_render(ms))
