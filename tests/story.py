"""Given / When / Then for cluster tests: apply objects, wait for what must happen, and on
failure show the object and its events, so a red test explains itself."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from pilotboat.adapters.kube import Kube

__all__ = ["Story", "TimedOut", "phase_is"]


class TimedOut(AssertionError):
    pass


class Story:
    """One test's view of one namespace."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    # Given / When
    def apply(self, *manifests: Mapping[str, Any] | str) -> Story:
        for manifest in manifests:
            docs = yaml.safe_load_all(manifest) if isinstance(manifest, str) else [manifest]
            for doc in docs:
                obj = copy.deepcopy(dict(doc))
                obj.setdefault("metadata", {})["namespace"] = self.namespace
                self.kube.apply(obj)
        return self

    given = apply

    def patch(self, kind: str, name: str, patch: Mapping[str, Any]) -> Story:
        self.kube.merge_patch(kind, self.namespace, name, dict(patch))
        return self

    def patch_status_command(self, name: str, command: str) -> Story:
        """What `kubectl pilotboat promote|abort|retry` does: a fresh token in status.commands,
        naming who sends it (so it passes the admission policy pilotboat-command-identity with
        or without the operator's webhook answering)."""
        import uuid

        from pilotboat.cli.release import whoami

        me = whoami(self.kube)
        sender = {f"{command}By": me} if me else {}
        self.kube.merge_patch(
            "Microservice",
            self.namespace,
            name,
            {"status": {"commands": {command: uuid.uuid4().hex, **sender}}},
            subresource="status",
        )
        return self

    def delete(self, kind: str, name: str) -> Story:
        self.kube.delete(kind, self.namespace, name)
        return self

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(kind, self.namespace, name)

    # Then
    def wait_for(
        self,
        kind: str,
        name: str,
        predicate: Callable[[dict[str, Any] | None], bool],
        *,
        timeout: float = 60,
        what: str = "",
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        obj = None
        while time.monotonic() < deadline:
            obj = self.get(kind, name)
            if predicate(obj):
                return obj
            time.sleep(0.25)
        raise TimedOut(
            f"after {timeout}s, {kind} {self.namespace}/{name} "
            f"is still not {what or 'as expected'}\n"
            + self.describe(kind, name)
        )

    def wait_condition(
        self, kind: str, name: str, type_: str, status: str = "True", *, timeout: float = 60
    ) -> dict[str, Any]:
        def holds(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            for cond in obj.get("status", {}).get("conditions", []) or []:
                if cond.get("type") == type_:
                    gen = obj["metadata"].get("generation")
                    return bool(
                        cond.get("status") == status and cond.get("observedGeneration") == gen
                    )
            return False

        obj = self.wait_for(kind, name, holds, timeout=timeout, what=f"{type_}={status}")
        assert obj is not None
        return obj

    def wait_gone(self, kind: str, name: str, *, timeout: float = 60) -> None:
        self.wait_for(kind, name, lambda o: o is None, timeout=timeout, what="gone")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events = self.kube.list("Event", self.namespace)
        if name is not None:
            events = [e for e in events if e.get("involvedObject", {}).get("name") == name]
        return sorted(events, key=lambda e: e.get("lastTimestamp") or "")

    def describe(self, kind: str, name: str) -> str:
        obj = self.get(kind, name)
        lines = [yaml.safe_dump(obj, sort_keys=False) if obj else "(no such object)", "events:"]
        for e in self.events(name):
            lines.append(f"  {e.get('type')} {e.get('reason')}: {e.get('message')}")
        return "\n".join(lines)


def phase_is(phase: str, step: int | None = None) -> Callable[[dict[str, Any] | None], bool]:
    """A `Story.wait_for` predicate: the Microservice is in `phase` (at step index `step`)."""

    def check(ms: dict[str, Any] | None) -> bool:
        status = (ms or {}).get("status") or {}
        return status.get("phase") == phase and (
            step is None or status.get("currentStepIndex") == step
        )

    return check
