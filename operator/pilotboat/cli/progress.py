"""Where a release stands, as `pilotboat status --wait` follows it (like `kubectl argo rollouts
status`): promoted, failed, or still under way; the verdict is a pure function of the
Microservice as read, the same reading Argo CD's health check makes
(examples/argocd/argocd-cm.yaml)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import click

from pilotboat.api.common import parse_duration
from pilotboat.cli.errors import EXIT_ERROR, EXIT_TIMEOUT, CommandError
from pilotboat.cli.get import step_label

__all__ = ["duration_option", "ReleaseProgress", "release_progress", "wait_for_release"]

Outcome = Literal["promoted", "failed", "waiting"]
POLL_INTERVAL = 2.0


@dataclass(frozen=True)
class ReleaseProgress:
    """The verdict on a release, and the line that says where it is."""

    outcome: Outcome
    line: str


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _where(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    steps = ((spec.get("rollout") or {}).get("canary") or {}).get("steps") or []
    step = step_label(status.get("currentStepIndex"), steps)
    return f"weight={int(status.get('canaryWeight') or 0)}%" + (f" step={step}" if step else "")


def release_progress(ms: Mapping[str, Any]) -> ReleaseProgress:
    """Whether the release of ``ms``'s ``spec.version`` is promoted, failed or under way.

    - promoted: phase Healthy, Ready, and the stable version is the declared one;
    - failed: phase Degraded (rolled back, aborted), the spec refused, or the database
      claimed by another service — unless a `retry` waits for the operator;
    - waiting: anything else, the operator not having seen this generation yet included.

    >>> release_progress({"metadata": {"generation": 1}, "spec": {"version": "v2"},
    ...     "status": {"observedGeneration": 1, "phase": "Healthy", "stableVersion": "v2",
    ...                "message": "v2 is stable"}})
    ReleaseProgress(outcome='promoted', line='Healthy — v2 is stable')
    """
    meta, spec, status = ms.get("metadata") or {}, ms.get("spec") or {}, ms.get("status") or {}
    generation = meta.get("generation") or 0
    if status.get("observedGeneration") is None or status["observedGeneration"] < generation:
        return ReleaseProgress("waiting", f"waiting for the operator to see generation "
                                          f"{generation}")
    message = status.get("message") or ""
    valid = _condition(status, "SpecValid")
    if valid is not None and valid.get("status") == "False":
        return ReleaseProgress("failed", f"Degraded — the spec is refused: {valid.get('message')}")
    claim = _condition(status, "DatabaseClaimed")
    if claim and claim.get("status") == "False" and claim.get("reason") == "DatabaseOwnedByAnother":
        return ReleaseProgress("failed", f"Degraded — {claim.get('message')}")
    phase = status.get("phase")
    if phase == "Degraded":
        retry = (status.get("commands") or {}).get("retry")
        handled = ((status.get("release") or {}).get("handledCommands") or {}).get("retry")
        if retry and retry != handled:
            return ReleaseProgress("waiting", "Degraded — retry requested; waiting for the "
                                              "operator")
        return ReleaseProgress("failed", f"Degraded — {message or 'rolled back'}")
    if phase == "Healthy":
        ready = _condition(status, "Ready")
        if ready is not None and ready.get("status") != "True":
            return ReleaseProgress("waiting", f"Healthy, not ready — {ready.get('message')}")
        stable, version = status.get("stableVersion"), spec.get("version")
        if stable != version:
            return ReleaseProgress("waiting", f"Healthy at {stable}, not yet at {version}")
        return ReleaseProgress("promoted", f"Healthy — {message or f'running {version}'}")
    if phase == "Paused":
        why = status.get("pauseReason") or message
        return ReleaseProgress("waiting", f"Paused {_where(spec, status)} — {why}")
    if phase == "Progressing":
        return ReleaseProgress("waiting", f"Progressing {_where(spec, status)} — {message}")
    return ReleaseProgress("waiting", "waiting for the operator")


def duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An option callback: a duration as the API writes them (``30s``, ``10m``, ``1h30m``) or
    plain seconds, in seconds; ``0`` (and no value) is None, no limit."""
    text = (value or "0").strip()
    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration such as 30s, 10m or 1h30m",
                                 ctx, param) from None
    return seconds or None


def wait_for_release(read: Callable[[], Mapping[str, Any]], name: str, timeout: float | None,
                     *, say: Callable[[str], None], interval: float = POLL_INTERVAL) -> None:
    """Read the Microservice until its release is promoted (return), failed (`CommandError`,
    exit 1) or ``timeout`` seconds passed (`CommandError`, exit 2), saying each new line."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        progress = release_progress(read())
        if progress.line != last:
            say(f"{name}: {progress.line}")
            last = progress.line
        if progress.outcome == "promoted":
            return
        if progress.outcome == "failed":
            raise CommandError(f"{name} did not release: {progress.line}", exit_code=EXIT_ERROR)
        if deadline is not None and time.monotonic() >= deadline:
            raise CommandError(
                f"timed out after {timeout:g}s waiting for {name}: {progress.line}",
                "wait longer with --timeout",
                exit_code=EXIT_TIMEOUT,
            )
        pause = interval if deadline is None else min(interval, deadline - time.monotonic())
        time.sleep(max(pause, 0.0))
