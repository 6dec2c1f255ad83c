"""`pilotboat get`: the Microservices of a namespace (or all), one line each, as `kubectl get`
would print them with the release's phase, step and canary weight; or as wide, JSON, YAML
or names; and, with ``--watch``, again each time one changes."""

from __future__ import annotations

import datetime as _dt
import json
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click
import yaml

from pilotboat import GROUP
from pilotboat.adapters.kube import Kube
from pilotboat.cli.errors import CommandError
from pilotboat.cli.options import ClusterTarget, cluster_options, complete_names
from pilotboat.core.release import step_label

__all__ = ["OUTPUTS", "changed_rows", "get", "release_row", "render", "step_label"]

OUTPUTS = ("table", "wide", "json", "yaml", "name")
WATCH_INTERVAL = 2.0
"""Seconds between two reads under ``--watch``."""

_PHASE_COLOURS = {"Healthy": "green", "Progressing": "cyan", "Paused": "yellow",
                  "Degraded": "red"}
_COLUMNS = [("NAME", "name"), ("VERSION", "version"), ("STABLE", "stable"),
            ("PHASE", "phase"), ("STEP", "step"), ("WEIGHT", "weight"),
            ("READY", "ready"), ("AGE", "age")]
_WIDE_COLUMNS = [("CANARY", "canary"), ("ACTUAL", "actualWeight"), ("MESSAGE", "message")]
_PERCENT = {"weight", "actualWeight"}


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
    """What one line says about a Microservice: identity, versions, phase, step (from 1),
    weight, and ready pods of the desired ones (`ready/desired`)."""
    now = now or _dt.datetime.now(_dt.UTC)
    meta, spec, st = ms["metadata"], ms.get("spec") or {}, ms.get("status") or {}
    steps = ((spec.get("rollout") or {}).get("canary") or {}).get("steps") or []
    desired = spec.get("replicas", st.get("replicas", 1))
    return {
        "namespace": meta.get("namespace"),
        "name": meta["name"],
        "version": spec.get("version"),
        "stable": st.get("stableVersion"),
        "canary": st.get("canaryVersion"),
        "phase": st.get("phase"),
        "step": st.get("step") or step_label(st.get("currentStepIndex"), steps),
        "weight": int(st.get("canaryWeight") or 0),
        "actualWeight": int(st.get("actualWeight") or 0),
        "ready": st.get("ready") or f"{st.get('readyReplicas', 0)}/{desired}",
        "message": st.get("message"),
        "age": _age(meta.get("creationTimestamp"), now),
    }


def _cell(row: Mapping[str, Any], key: str) -> str:
    value = row[key]
    if value is None:
        return "-"
    return f"{value}%" if key in _PERCENT else str(value)


def _table(rows: Sequence[Mapping[str, Any]], all_namespaces: bool, wide: bool,
           header: bool) -> list[str]:
    columns = _COLUMNS + (_WIDE_COLUMNS if wide else [])
    if all_namespaces:
        columns = [("NAMESPACE", "namespace"), *columns]
    cells = [[h for h, _ in columns]] + [[_cell(r, k) for _, k in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    phase_at = [k for _, k in columns].index("phase")
    lines = []
    for n, line in enumerate(cells):
        if n == 0 and not header:
            continue
        padded = [c.ljust(w) for c, w in zip(line, widths, strict=True)]
        phase = rows[n - 1]["phase"] if n else None
        if phase in _PHASE_COLOURS:  # styled after padding: escapes take no width
            padded[phase_at] = click.style(phase, fg=_PHASE_COLOURS[phase]) + padded[
                phase_at][len(phase):]
        lines.append("   ".join(padded).rstrip())
    return lines


def render(rows: Sequence[Mapping[str, Any]], output: str, *, all_namespaces: bool = False,
           header: bool = True, listing: bool = True) -> list[str]:
    """The lines that print ``rows`` (from `release_row`) as ``output``. ``header`` False
    leaves out a table's column names; ``listing`` False prints JSON and YAML one object per
    document (as ``--watch`` does) instead of one ``{"items": [...]}``."""
    if output in ("table", "wide"):
        return _table(rows, all_namespaces, output == "wide", header)
    if output == "name":
        return [f"microservice.{GROUP}/{r['name']}" for r in rows]
    if output == "json":
        if listing:
            return [json.dumps({"items": list(rows)}, indent=2)]
        return [json.dumps(r, indent=2) for r in rows]
    if output == "yaml":
        if listing:
            return [yaml.safe_dump({"items": [dict(r) for r in rows]}, sort_keys=False).rstrip()]
        return ["---\n" + yaml.safe_dump(dict(r), sort_keys=False).rstrip() for r in rows]
    raise ValueError(f"unknown output {output!r}")


def _key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row["namespace"] or "", row["name"])


def changed_rows(before: Mapping[tuple[str, str], Mapping[str, Any]],
                 rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows that are new or say something else than ``before`` (by namespace and name);
    a row whose age alone moved has not changed."""
    def same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        return {**a, "age": None} == {**b, "age": None}

    return [r for r in rows if _key(r) not in before or not same(before[_key(r)], r)]


def _rows(kube: Kube, namespace: str | None, names: Sequence[str]) -> list[dict[str, Any]]:
    items = sorted(kube.list("Microservice", namespace),
                   key=lambda m: (m["metadata"].get("namespace", ""), m["metadata"]["name"]))
    if names:
        items = [m for m in items if m["metadata"]["name"] in names]
    return [release_row(m) for m in items]


def _missing(rows: Sequence[Mapping[str, Any]], names: Sequence[str],
             namespace: str | None) -> None:
    missing = set(names) - {r["name"] for r in rows}
    if missing:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        raise CommandError(
            f"Microservice {', '.join(sorted(missing))} not found in {where}",
            f"list them: pilotboat get {'-A' if namespace is None else '-n ' + namespace}",
        )


def _watch(kube: Kube, namespace: str | None, names: Sequence[str], output: str,
           all_namespaces: bool, rows: list[dict[str, Any]], timeout: float | None) -> None:
    seen = {_key(r): r for r in rows}
    deadline = None if timeout is None else time.monotonic() + timeout
    # Ctrl-C sets `stopped` instead of raising wherever the process happens to be (inside
    # the Kubernetes client a KeyboardInterrupt can be caught and retried): the watch ends
    # at its next wait, at most one list call later.
    stopped = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        while deadline is None or time.monotonic() < deadline:
            pause = WATCH_INTERVAL if deadline is None else min(WATCH_INTERVAL,
                                                                 deadline - time.monotonic())
            if stopped.wait(max(pause, 0)):
                return
            _print_changes(kube, namespace, names, output, all_namespaces, seen)
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_changes(kube: Kube, namespace: str | None, names: Sequence[str], output: str,
                   all_namespaces: bool, seen: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Print the rows that changed since `seen`, and remember the rows now in `seen`."""
    rows = _rows(kube, namespace, names)
    changed = changed_rows(seen, rows)
    seen.clear()
    seen.update({_key(r): r for r in rows})
    if changed:
        table = render(rows, output, all_namespaces=all_namespaces, header=False,
                       listing=False)
        if output in ("table", "wide"):  # widths as if the whole table were printed
            keys = {_key(r) for r in changed}
            table = [line for line, r in zip(table, rows, strict=True) if _key(r) in keys]
        else:
            table = render(changed, output, listing=False)
        for line in table:
            click.echo(line)


@click.command()
@click.argument("names", nargs=-1, shell_complete=complete_names("Microservice"))
@cluster_options()
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table", show_default=True,
              help="table, wide (adds canary, actual weight, message), json, yaml, or name.")
@click.option("-w", "--watch", is_flag=True,
              help=f"After the list, print each Microservice again when it changes (reads "
                   f"every {WATCH_INTERVAL:g}s); Ctrl-C stops.")
@click.option("--watch-timeout", type=float, default=None, hidden=True,
              help="Stop watching after this many seconds (for tests).")
def get(names: tuple[str, ...], target: ClusterTarget, output: str, watch: bool,
        watch_timeout: float | None) -> None:
    """List Microservices with their release: phase, step, canary weight, readiness."""
    kube = target.connect()
    namespace = target.scope
    rows = _rows(kube, namespace, names)
    _missing(rows, names, namespace)
    if not rows and output in ("table", "wide"):
        click.echo(f"No Microservices in {'any namespace' if namespace is None else namespace}.",
                   err=True)
    else:
        for line in render(rows, output, all_namespaces=target.all_namespaces,
                           listing=not watch):
            click.echo(line)
    if watch:
        try:
            _watch(kube, namespace, names, output, target.all_namespaces, rows, watch_timeout)
        except KeyboardInterrupt:
            pass
