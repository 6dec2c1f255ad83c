"""FeatureFlags: each service's flag file, and each flag's consumers and served split.

One writer per object. The Microservice reconciler decides the splits in force and keeps
them in ``status.flagOverrides`` (core.release); this module renders, from
that status and the FeatureFlags as they are, each service's ConfigMap ``<service>-flags``
and each flag's ``status``. It runs on every event of a FeatureFlag and of a Microservice,
so a flag edit (the kill switch among them) reaches the file at once, whatever the
service's release is waiting for; a setFlag step reaches it as soon as the reconciler has
written its status. Both passes are idempotent: the same inputs render the same file.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from pilotboat import GROUP, VERSION
from pilotboat.api import FeatureFlagSpec
from pilotboat.api.flag import feature_flag_problems
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition
from pilotboat.core.flags import (
    FLAGS_KEY,
    RenderedFlags,
    flag_config_map_name,
    overrides_from_status,
    render_flags,
)
from pilotboat.core.workload import LABEL_MANAGED_BY, LABEL_NAME, Owner
from pilotboat.handlers.context import Reconcile, runtime
from pilotboat.handlers.ports import Kube

__all__ = [
    "sync_flag_status",
    "sync_service_flags",
]

_SERVED = "pilotboat.dev/served"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
# Services seen without flags and without a flag file. Only this process writes flag files,
# and only for a service that reads flags (which takes it out of here), so one 404 per
# service is enough: its later events (status writes above all) cost no request.
_without_flag_files: set[tuple[str, str]] = set()


def _lock_for(namespace: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(namespace, threading.Lock())


def _valid_spec(flag: Mapping[str, Any] | None) -> FeatureFlagSpec | None:
    if flag is None or feature_flag_problems(flag.get("spec")):
        return None
    return FeatureFlagSpec.model_validate(flag["spec"])


def _config_map(owner: Owner, rendered: RenderedFlags) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": flag_config_map_name(owner.name),
            "namespace": owner.namespace,
            "labels": {LABEL_NAME: owner.name, LABEL_MANAGED_BY: "pilotboat"},
            "annotations": {_SERVED: json.dumps(rendered.served, sort_keys=True)},
            "ownerReferences": [owner.reference()],
        },
        "data": {FLAGS_KEY: rendered.text()},
    }


def sync_service_flags(
    kube: Kube, service: Mapping[str, Any], flags: Mapping[str, FeatureFlagSpec | None]
) -> RenderedFlags | None:
    """Render one service's flag file into its ConfigMap (only when it changed); None
    when the service reads no flags (its ConfigMap, if any, is deleted)."""
    meta = service["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    names = list((service.get("spec") or {}).get("flags") or [])
    name = flag_config_map_name(owner.name)
    current = kube.get("ConfigMap", owner.namespace, name)
    if not names:
        if current is not None and _owned_by(current, owner):
            kube.delete("ConfigMap", owner.namespace, name)
        return None
    if current is not None and not _owned_by(current, owner):
        Reconcile.start(kube, service).log.warning(
            "ConfigMap %s exists and is not controlled by Microservice %s; its flags are not "
            "written there (Pilotboat never overwrites what it does not own)", name, owner.name,
            extra={"reason": reasons.CHILD_NOT_OWNED},
        )
        return None
    previous = None
    if current is not None:
        try:
            previous = json.loads((current.get("data") or {}).get(FLAGS_KEY) or "{}")
        except ValueError:
            previous = None
    overrides = overrides_from_status((service.get("status") or {}).get("flagOverrides"))
    rendered = render_flags(names, flags, overrides, previous)
    if current is None or (current.get("data") or {}).get(FLAGS_KEY) != rendered.text():
        kube.apply(_config_map(owner, rendered))
        rc = Reconcile.start(kube, service)
        verb = "Created" if current is None else "Updated"
        served = "; ".join(
            f"{flag}: " + (", ".join(f"{v} {p}%" for v, p in split.items()) or "off/targeted")
            for flag, split in sorted(rendered.served.items())
        )
        reason = reasons.FLAGS_CONFIG_CREATED if current is None else reasons.FLAGS_CONFIG_UPDATED
        rc.event(reason, f"{verb} ConfigMap {name}: {served}")
        for problem in rendered.problems:
            rc.event(reasons.FLAG_PROBLEM, problem, warning=True)
    return rendered


def _owned_by(obj: Mapping[str, Any], owner: Owner) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == owner.uid for r in refs)


def sync_flag_status(
    kube: Kube,
    flag: Mapping[str, Any],
    services: Iterable[Mapping[str, Any]],
    served: Mapping[str, Mapping[str, Mapping[str, int]]],
) -> None:
    """Write a FeatureFlag's status: valid or not (naming the fields), its consumers, and
    what each serves."""
    meta = flag["metadata"]
    name = meta["name"]
    consumers = sorted(
        s["metadata"]["name"]
        for s in services
        if name in ((s.get("spec") or {}).get("flags") or [])
    )
    problems = feature_flag_problems(flag.get("spec"))
    per_service = {svc: dict(served.get(svc, {}).get(name, {})) for svc in consumers}
    if problems:
        conditions = [
            DesiredCondition(
                reasons.VALID_CONDITION, "False", reasons.INVALID_FLAG, "; ".join(problems)
            ),
            DesiredCondition(
                reasons.READY,
                "False",
                reasons.INVALID_FLAG,
                "not rendered; services keep the last good one",
            ),
        ]
    else:
        conditions = [
            DesiredCondition(
                reasons.VALID_CONDITION, "True", reasons.VALID, "flagd can evaluate this flag"
            ),
            DesiredCondition(
                reasons.READY,
                "True",
                reasons.RENDERED,
                f"rendered for {', '.join(consumers)}" if consumers else "no service reads it",
            ),
        ]
    fields = {
        "observedGeneration": int(meta.get("generation", 0)),
        "consumers": consumers,
        "served": per_service,
    }
    rc = Reconcile.start(kube, flag)
    rc.write_status(dict(flag.get("status") or {}), conditions, fields, warn=bool(problems))


def _sync_namespace(kube: Kube, namespace: str, services: set[str] | None = None) -> None:
    """Render the flag files of ``services`` (all when None) and every flag's status."""
    with _lock_for(namespace):
        all_services = [
            s
            for s in kube.list("Microservice", namespace)
            if not s["metadata"].get("deletionTimestamp")
        ]
        flags = {f["metadata"]["name"]: f for f in kube.list("FeatureFlag", namespace)}
        specs = {n: _valid_spec(f) for n, f in flags.items()}
        served: dict[str, dict[str, dict[str, int]]] = {}
        for service in all_services:
            svc_meta = service["metadata"]
            names = set((service.get("spec") or {}).get("flags") or [])
            if services is not None and svc_meta["name"] not in services:
                current = _served_from_config_map(kube, namespace, svc_meta["name"])
                served[svc_meta["name"]] = current
                continue
            rendered = sync_service_flags(kube, service, {n: specs.get(n) for n in names})
            if rendered is not None:
                served[svc_meta["name"]] = rendered.served
        for flag in flags.values():
            sync_flag_status(kube, flag, all_services, served)


def _served_from_config_map(kube: Kube, namespace: str, service: str) -> dict[str, Any]:
    current = kube.get("ConfigMap", namespace, flag_config_map_name(service))
    raw = (((current or {}).get("metadata") or {}).get("annotations") or {}).get(_SERVED)
    try:
        served = json.loads(raw or "{}")
    except ValueError:
        return {}
    return served if isinstance(served, dict) else {}


# --- Kopf wiring -------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "featureflags", id="flag-files")
def on_feature_flag_event(body: kopf.Body, **_: Any) -> None:
    """A flag changed (or was deleted): every service's file, and every flag's status."""
    _sync_namespace(runtime().kube, body["metadata"]["namespace"])


def _reads_flags_or_had_a_file(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> bool:
    """Kopf's filter: a service that reads no flags (or is gone) and was seen without a flag
    file since it last read some has nothing to write or remove, and its event (a status
    write, above all) costs no handler call. Asked on Kopf's event loop."""
    meta = body["metadata"]
    gone = event.get("type") == "DELETED" or bool(meta.get("deletionTimestamp"))
    if (body.get("spec") or {}).get("flags") and not gone:
        return True
    with _locks_guard:
        return (str(meta["namespace"]), str(meta["name"])) not in _without_flag_files


@kopf.on.event(GROUP, VERSION, "microservices", id="flag-files", when=_reads_flags_or_had_a_file)
def on_microservice_for_its_flags(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """A service's flags or splits may have changed: its file, and every flag's status."""
    meta = body["metadata"]
    kube = runtime().kube
    key = (str(meta["namespace"]), str(meta["name"]))
    gone = event.get("type") == "DELETED" or bool(meta.get("deletionTimestamp"))
    if not _reads_flags_or_had_a_file(event, body):
        return  # Kopf's filter, asked again for a direct call or an event that raced this one
    if not (body.get("spec") or {}).get("flags") or gone:
        if kube.get("ConfigMap", meta["namespace"], flag_config_map_name(meta["name"])) is None:
            with _locks_guard:
                _without_flag_files.add(key)
            return  # reads no flags, and never did since its ConfigMap was last removed
    with _locks_guard:
        _without_flag_files.discard(key)
    _sync_namespace(kube, meta["namespace"], set() if gone else {meta["name"]})
