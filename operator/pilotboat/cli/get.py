"""`pilotboat get`: the Microservices of a namespace (or all), one line each, as `kubectl get`
would print them with the release's phase, step and canary weight."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import Any

import click

from pilotboat.cli.kubeclient import connect, current_namespace

__all__ = ["get", "release_row"]

_PHASE_COLOURS = {"Healthy": "green", "Progressing": "cyan", "Paused": "yellow",
                  "Degraded": "red"}


def _age(created: str | None, now: _dt.datetime) -> str:
    if not created:
        return "-"
    seconds = int((now - _dt.datetime.fromisoformat(created.replace("Z", "+00:00")))
                  .total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def release_row(ms: Mapping[str, Any], now: _dt.datetime | None = None) -> dict[str, Any]:
    """What one line says about a Microservice: identity, versions, phase, step, weight."""
    now = now or _dt.datetime.now(_dt.UTC)
    meta, spec, st = ms["metadata"], ms.get("spec") or {}, ms.get("status") or {}
    steps = ((spec.get("rollout") or {}).get("canary") or {}).get("steps") or []
    index = st.get("currentStepIndex")
    return {
        "namespace": meta.get("namespace"),
        "name": meta["name"],
        "version": spec.get("version"),
        "stable": st.get("stableVersion"),
        "canary": st.get("canaryVersion"),
        "phase": st.get("phase"),
        "step": f"{index + 1}/{len(steps)}" if index is not None and steps else None,
        "weight": int(st.get("canaryWeight") or 0),
        "actualWeight": int(st.get("actualWeight") or 0),
        "ready": f"{st.get('readyReplicas', 0)}/{st.get('replicas', spec.get('replicas', 0))}",
        "message": st.get("message"),
        "age": _age(meta.get("creationTimestamp"), now),
    }


def _table(rows: list[dict[str, Any]], all_namespaces: bool) -> list[str]:
    columns = [("NAME", "name"), ("VERSION", "version"), ("STABLE", "stable"),
               ("PHASE", "phase"), ("STEP", "step"), ("WEIGHT", "weight"),
               ("READY", "ready"), ("AGE", "age")]
    if all_namespaces:
        columns.insert(0, ("NAMESPACE", "namespace"))
    cells = [[h for h, _ in columns]] + [
        ["-" if r[k] is None else f"{r[k]}%" if k == "weight" else str(r[k]) for _, k in columns]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = []
    for n, line in enumerate(cells):
        text = "   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        if n and rows[n - 1]["phase"] in _PHASE_COLOURS:
            phase = rows[n - 1]["phase"]
            text = text.replace(f" {phase} ", f" {click.style(phase, fg=_PHASE_COLOURS[phase])} ",
                                1)
        lines.append(text)
    return lines


@click.command()
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default=None, help="Namespace (default: the kubeconfig's).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None)
def get(names: tuple[str, ...], namespace: str | None, all_namespaces: bool, output: str,
        kubeconfig: str | None) -> None:
    """List Microservices with their release: phase, step, canary weight, readiness."""
    kube = connect(kubeconfig)
    ns = None if all_namespaces else namespace or current_namespace(kubeconfig)
    items = sorted(kube.list("Microservice", ns),
                   key=lambda m: (m["metadata"].get("namespace", ""), m["metadata"]["name"]))
    if names:
        items = [m for m in items if m["metadata"]["name"] in names]
        missing = set(names) - {m["metadata"]["name"] for m in items}
        if missing:
            raise click.ClickException(f"Microservice {', '.join(sorted(missing))} not found")
    rows = [release_row(m) for m in items]
    if output == "json":
        click.echo(json.dumps({"items": rows}, indent=2))
    elif not rows:
        click.echo(f"No Microservices in {'any namespace' if ns is None else ns}.", err=True)
    else:
        for line in _table(rows, all_namespaces):
            click.echo(line)
