"""Helpers for testing and benchmarking the operator: as users run it, and in memory.

`OperatorProcess` starts `pilotboat run` as a subprocess with its log in a file, waits until
its liveness endpoint answers, and can kill it the way a crash would.

`FakeKube` is the API server in a dict, for the fast handler tests: it implements
:class:`pilotboat.handlers.ports.Kube` the way the API server answers it (see its
docstring); the cluster tests run the same handlers against the real one.
"""

from __future__ import annotations

import copy
import datetime as _dt
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from kubernetes.client.exceptions import ApiException

from pilotboat.adapters.kube import FIELD_MANAGER, resource_for

__all__ = ["ChildProcess", "FakeKube", "OperatorProcess", "Write"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChildProcess:
    """What tests do to a program they run: kill it as a crash would, stop it, read its log.

    Subclasses set `proc` (the running Popen, or None) and `log_path`.
    """

    proc: subprocess.Popen[bytes] | None
    log_path: Path
    stop_grace: float = 20.0

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash or an OOM kill would leave it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_grace` seconds."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_exit(self, timeout: float = 60) -> int:
        """The exit code; an AssertionError carrying the log's tail if it is still running."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {timeout}s:\n{self.log_text()[-3000:]}"
            ) from None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The log's JSON lines, parsed; other lines are left out."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records


class OperatorProcess(ChildProcess):
    """`pilotboat run` as a subprocess whose log the test can read."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = log_dir / "operator.log"

    def start(self, *, env: dict[str, str] | None = None, wait_live: bool = True) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        port = _free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        # As a user runs it: the kubeconfig by flag, none in the environment.
        env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            "PYTHONUNBUFFERED": "1",
            **self.env,
            **(env or {}),
        }
        cmd = [
            sys.executable, "-m", "pilotboat", "run",
            "--kubeconfig", str(self.kubeconfig),
            "--liveness", f"http://127.0.0.1:{port}/healthz",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if not wait_live:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited at start:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the operator did not become live:\n{self.log_text()[-4000:]}")

    def restart(self) -> None:
        self.kill()
        self.start()

    def rss_bytes(self) -> int:
        """Resident memory of the operator process, from /proc."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")


# --- the API server in memory -----------------------------------------------------------

_NO_STATUS = frozenset(
    {"ConfigMap", "Secret", "Event", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
     "ClusterRoleBinding", "CustomResourceDefinition"}
)
"""Kinds without a status subresource: a write may set any field."""

Key = tuple[str, str | None, str]  # kind, namespace (None: cluster-scoped), name
ManagedFields = list[dict[str, Any]]


@dataclass(frozen=True)
class Write:
    """One write the fake took, in order (reads are not recorded)."""

    verb: str
    """apply, patch, create, delete"""
    kind: str
    namespace: str | None
    name: str
    field_manager: str
    subresource: str | None = None
    body: Mapping[str, Any] | None = None


def _api_error(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
         "reason": reason.replace(" ", ""), "code": status}
    )  # fmt: skip
    return exc


def _merge(into: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, a null removes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(into) if isinstance(into, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _fields(value: Any) -> dict[str, Any]:
    """The managedFields ``fieldsV1`` tree of the fields `value` sets (maps only)."""
    if not isinstance(value, Mapping):
        return {}
    return {f"f:{k}": _fields(v) for k, v in value.items() if v is not None}


def _union(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, sub in b.items():
        out[key] = _union(out.get(key, {}), sub)
    return out


def _without(tree: Mapping[str, Any], taken: Mapping[str, Any]) -> dict[str, Any]:
    """`tree` minus the leaves `taken` (another manager now owns them)."""
    out: dict[str, Any] = {}
    for key, sub in tree.items():
        if key not in taken:
            out[key] = sub
        elif sub and taken[key]:
            rest = _without(sub, taken[key])
            if rest:
                out[key] = rest
    return out


class FakeKube:
    """The Kubernetes API in memory, answering as the API server does, as far as the
    handlers can tell:

    - objects by (kind, namespace, name); a kind pilotboat does not know is a KeyError;
    - every change takes the next ``resourceVersion`` (one counter for the store); a write
      that changes nothing keeps it; ``generation`` moves when anything but metadata and
      status changes; ``uid`` and ``creationTimestamp`` are set on create;
    - 404 for a patch of a missing object, 409 for a create of an existing one and for a
      ``metadata.resourceVersion`` that is not the stored one;
    - kinds with a status subresource keep ``status`` out of writes to the object and take
      only ``status`` through ``subresource="status"``;
    - ``managedFields`` says which manager last set each field (a write moves the fields
      it sets to its manager), so ``trusted_status`` reads the fake as the real thing;
    - server-side apply merges the applied fields into the object (forced), without
      removing fields a previous apply set and this one leaves out: the operator always
      applies whole objects, so the difference never shows in what the handlers read.

    ``watch(callback)`` delivers every change as a watch event would, for the caches.
    ``acting_as(manager)`` is the same store written by someone else (a person's
    ``kubectl``, the Deployment controller). ``writes`` and ``events`` record what was done.
    ``refuse(kind, name, status, message)`` makes the next writes of that object fail as
    the API server refuses an invalid object.
    """

    def __init__(self, field_manager: str = FIELD_MANAGER) -> None:
        self.field_manager = field_manager
        self._objects: dict[Key, dict[str, Any]] = {}
        self._versions = itertools.count(1)
        self._refusals: dict[tuple[str, str], tuple[int, str]] = {}
        self.writes: list[Write] = []
        self.events: list[dict[str, Any]] = []
        self._watchers: list[Callable[[str, dict[str, Any], bool], None]] = []

    def watch(self, watcher: Callable[[str, dict[str, Any], bool], None]) -> None:
        """Call ``watcher(kind, object, deleted)`` after every change, as a watch delivers
        it (here at once; on a real API server a moment later)."""
        self._watchers.append(watcher)

    def acting_as(self, field_manager: str) -> FakeKube:
        """The same store, written with another field manager."""
        other = FakeKube.__new__(FakeKube)
        other.__dict__.update(self.__dict__)
        other.field_manager = field_manager
        return other

    def refuse(self, kind: str, name: str, status: int = 422, message: str = "") -> None:
        self._refusals[(kind, name)] = (status, message or f"{kind} {name} is invalid")

    # --- reads ---

    def _key(self, kind: str, namespace: str | None, name: str) -> Key:
        return (kind, namespace if resource_for(kind).namespaced else None, name)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        found = self._objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self, kind: str, namespace: str | None = None, *, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        resource_for(kind)
        found = []
        for (k, ns, _), obj in sorted(self._objects.items(), key=lambda kv: str(kv[0])):
            have = obj["metadata"].get("labels") or {}
            if k == kind and (namespace is None or ns == namespace) and all(
                have.get(lk) == lv for lk, lv in (labels or {}).items()
            ):
                found.append(copy.deepcopy(obj))
        return found

    # --- writes ---

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = self._key(obj["kind"], meta.get("namespace"), meta["name"])
        self._check_refusal(obj["kind"], meta["name"])
        if key in self._objects:
            raise _api_error(409, "Conflict",
                             f'{obj["kind"]} "{meta["name"]}" already exists')  # fmt: skip
        self._record("create", key, None, obj)
        return self._store(key, None, obj, "Update", None)

    def apply(
        self, obj: dict[str, Any], *, subresource: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        key = self._key(obj["kind"], meta.get("namespace"), meta["name"])
        self._check_refusal(obj["kind"], meta["name"], applied=obj)
        current = self._objects.get(key)
        if current is not None:  # an apply that creates ignores a resourceVersion
            self._check_version(key, current, obj)
        if dry_run:
            return copy.deepcopy(_merge(current or {}, obj))
        self._record("apply", key, subresource, obj)
        return self._store(key, current, obj, "Apply", subresource)

    def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        key = self._key(kind, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise _api_error(404, "Not Found", f'{kind} "{name}" not found')
        self._check_refusal(kind, name)
        self._check_version(key, current, patch)
        self._record("patch", key, subresource, patch)
        return self._store(key, current, patch, "Update", subresource)

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        key = self._key(kind, namespace, name)
        if key not in self._objects:
            return False
        self._record("delete", key, None, None)
        gone = self._objects.pop(key)
        self._deliver(kind, gone, deleted=True)
        return True

    def event(
        self,
        involved: dict[str, Any],
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
        component: str = "pilotboat",
    ) -> None:
        meta = involved["metadata"]
        self.events.append(
            {"kind": involved.get("kind"), "namespace": meta.get("namespace"),
             "name": meta["name"], "reason": reason, "message": message[:1024],
             "type": type_, "component": component}
        )  # fmt: skip

    # --- what a write does ---

    def _record(
        self, verb: str, key: Key, subresource: str | None, body: Mapping[str, Any] | None
    ) -> None:
        self.writes.append(
            Write(verb, key[0], key[1], key[2], self.field_manager, subresource,
                  copy.deepcopy(body) if body is not None else None)
        )  # fmt: skip

    def _check_refusal(
        self, kind: str, name: str, *, applied: Mapping[str, Any] | None = None
    ) -> None:
        refusal = self._refusals.get((kind, name))
        if refusal is not None:
            exc = _api_error(refusal[0], "Invalid", refusal[1])
            exc.applied_object = applied  # type: ignore[attr-defined]  # as Kube.apply does
            raise exc

    def _check_version(
        self, key: Key, current: Mapping[str, Any] | None, body: Mapping[str, Any]
    ) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is None:
            return
        have = (current or {}).get("metadata", {}).get("resourceVersion")
        if current is None or str(wanted) != str(have):
            raise _api_error(
                409, "Conflict",
                f'Operation cannot be fulfilled on {key[0]} "{key[2]}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )  # fmt: skip

    def _store(
        self,
        key: Key,
        current: Mapping[str, Any] | None,
        body: Mapping[str, Any],
        operation: str,
        subresource: str | None,
    ) -> dict[str, Any]:
        kind = key[0]
        change = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        meta_change = {k: v for k, v in (change.get("metadata") or {}).items()
                       if k not in ("resourceVersion", "managedFields", "uid", "generation",
                                    "creationTimestamp")}  # fmt: skip
        change["metadata"] = meta_change
        if kind not in _NO_STATUS:
            if subresource == "status":
                change = {"status": change.get("status"), "metadata": {}}
            else:
                change.pop("status", None)
        before = copy.deepcopy(current) if current is not None else None
        new = _merge(current or {}, change)
        new["apiVersion"] = body.get("apiVersion") or (current or {}).get("apiVersion") \
            or resource_for(kind).api_version
        new["kind"] = kind
        meta = new["metadata"]
        meta.setdefault("name", key[2])
        if key[1] is not None:
            meta["namespace"] = key[1]
        managed = [dict(m) for m in meta.get("managedFields") or []]
        meta.pop("managedFields", None)
        comparable = {k: v for k, v in (before or {}).items()}
        if before is not None:
            comparable["metadata"] = {k: v for k, v in before["metadata"].items()
                                      if k != "managedFields"}  # fmt: skip
        if before is not None and new == comparable:
            return copy.deepcopy(dict(current or {}))
        if before is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
        else:
            if _spec_of(new) != _spec_of(before):
                meta["generation"] = int(before["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = str(next(self._versions))
        meta["managedFields"] = self._managed(managed, change, operation, subresource)
        self._objects[key] = new
        self._deliver(kind, new, deleted=False)
        return copy.deepcopy(new)

    def _deliver(self, kind: str, obj: dict[str, Any], *, deleted: bool) -> None:
        for watcher in self._watchers:
            watcher(kind, copy.deepcopy(obj), deleted)

    def _managed(
        self,
        managed: ManagedFields,
        change: Mapping[str, Any],
        operation: str,
        subresource: str | None,
    ) -> ManagedFields:
        """``managedFields`` after this manager set the fields of `change`."""
        taken = _fields(change)
        if not taken.get("f:metadata"):
            taken.pop("f:metadata", None)
        mine: dict[str, Any] = {}
        others = []
        for entry in managed:
            same = (entry.get("manager") == self.field_manager
                    and entry.get("operation") == operation
                    and entry.get("subresource") == subresource)  # fmt: skip
            if same:
                mine = entry.get("fieldsV1") or {}
                continue
            rest = _without(entry.get("fieldsV1") or {}, taken)
            if rest:
                others.append({**entry, "fieldsV1": rest})
        entry = {"manager": self.field_manager, "operation": operation, "apiVersion": "v1",
                 "time": _now(), "fieldsType": "FieldsV1", "fieldsV1": _union(mine, taken)}
        if subresource:
            entry["subresource"] = subresource
        return [*others, entry]


if TYPE_CHECKING:
    from pilotboat.handlers.ports import Kube

    _FITS: type[Kube] = FakeKube  # mypy checks that the fake is what the handlers take


def _spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that moves ``generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
