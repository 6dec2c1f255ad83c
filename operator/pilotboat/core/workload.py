"""The child objects of a Microservice, built as data: Deployments and Services.

Pure functions: a spec in, plain dicts (wire form) out, ready for server-side apply. The
stable Deployment is named after the Microservice; the canary is `<name>-canary`. Both
carry the same `app.kubernetes.io/name`, so the Service that selects only that label
spreads traffic over both in proportion to their ready replicas.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pilotboat import API_VERSION
from pilotboat.api import MicroserviceSpec
from pilotboat.core.flags import (
    FLAGS_DIRECTORY,
    flag_config_map_name,
    flags_environment,
)

__all__ = [
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_REVISION",
    "LABEL_TRACK",
    "LABEL_VERSION",
    "ANNOTATION_REVISION",
    "Owner",
    "Track",
    "deployment_name",
    "pod_revision",
    "render_deployment",
    "render_service",
    "revision_of",
    "selector_labels",
    "source_field",
]

Track = Literal["stable", "canary"]

LABEL_NAME = "app.kubernetes.io/name"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TRACK = "pilotboat.dev/track"
ANNOTATION_REVISION = "pilotboat.dev/revision"
LABEL_REVISION = "pilotboat.dev/revision"
"""The pod label that tells one release's pods from another's: the revision (the pod
template's digest, 16 hex characters) the pods run. Prometheus relabels it to ``revision``
and the default analysis queries select on it, so a change of image or env that keeps
``version`` is still a canary measured on its own pods. Set after the digest is taken (the
digest does not depend on itself) and never in a Deployment's selector (immutable)."""


@dataclass(frozen=True)
class Owner:
    """The Microservice that owns the children: its identity, for owner references."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "Microservice",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def deployment_name(service: str, track: Track) -> str:
    """`payments` for the stable track, `payments-canary` for the canary."""
    return service if track == "stable" else f"{service}-canary"


def selector_labels(service: str, track: Track) -> dict[str, str]:
    return {LABEL_NAME: service, LABEL_TRACK: track}


def _by_name(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``entries`` with each name kept once, at its last occurrence: what is added later (the
    short fields over the template, the operator's own over both) wins, and server-side
    apply, which keys these lists by name, never sees a name twice."""
    last = {str(e.get("name")): i for i, e in enumerate(entries)}
    return [dict(e) for i, e in enumerate(entries) if last[str(e.get("name"))] == i]


def _container(spec: MicroserviceSpec, extra_env: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    main = spec.template.main_container() if spec.template else None
    container: dict[str, Any] = json.loads(json.dumps(main)) if main else {"name": "app"}
    env: list[dict[str, Any]] = [dict(e) for e in container.get("env") or ()]
    env += [{"name": e.name, "value": e.value} for e in spec.env or ()]
    env += [dict(e) for e in extra_env]
    if spec.flags:
        env += flags_environment()
    env += [
        {"name": "SERVICE_VERSION", "value": spec.version},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    ports = [dict(p) for p in container.get("ports") or ()]
    taken = {p.get("name") for p in ports} | {p.get("containerPort") for p in ports}
    ports += [
        {"name": p.name, "containerPort": p.target_port or p.port, "protocol": p.protocol}
        for p in spec.ports
        if p.name not in taken and (p.target_port or p.port) not in taken
    ]
    container.update(image=spec.main_image, ports=ports, env=_by_name(env))
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.resources is not None:
        container["resources"] = spec.resources.model_dump(by_alias=True, exclude_none=True)
    probe = spec.readiness_probe
    if probe is not None:
        port: int | str = probe.port if probe.port is not None else spec.ports[0].name
        container["readinessProbe"] = {
            "httpGet": {"path": probe.path, "port": port},
            "periodSeconds": probe.period_seconds,
        }
    return container


def _pod_template(
    spec: MicroserviceSpec, service: str, track: Track, extra_env: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    metrics_port = spec.ports[0].target_port or spec.ports[0].port
    template = spec.template
    pod_spec: dict[str, Any] = json.loads(json.dumps(template.spec)) if template else {}
    pod_spec["containers"] = [_container(spec, extra_env), *pod_spec.get("containers", [])[1:]]
    if spec.flags:
        _mount_flags(pod_spec, service)
    if spec.node_selector:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **spec.node_selector}
    if spec.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    meta = template.metadata if template else None
    return {
        "metadata": {
            "labels": {
                **((meta.labels if meta else None) or {}),
                **selector_labels(service, track),
                LABEL_VERSION: spec.version,
                LABEL_MANAGED_BY: "pilotboat",
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(metrics_port),
                "prometheus.io/path": "/metrics",
                **((meta.annotations if meta else None) or {}),
            },
        },
        "spec": pod_spec,
    }


def _mount_flags(pod_spec: dict[str, Any], service: str) -> None:
    """The service's flag file (a ConfigMap) at FLAGS_DIRECTORY. Only the ConfigMap's name is
    in the template: a flag changes the file, never the pod (no restart, no release)."""
    pod_spec["volumes"] = _by_name([
        *pod_spec.get("volumes", []),
        {"name": "pilotboat-flags", "configMap": {"name": flag_config_map_name(service)}},
    ])
    main = pod_spec["containers"][0]
    mounts = [m for m in main.get("volumeMounts", []) if m.get("name") != "pilotboat-flags"]
    main["volumeMounts"] = [
        *mounts, {"name": "pilotboat-flags", "mountPath": FLAGS_DIRECTORY, "readOnly": True}
    ]


def template_hash(template: Mapping[str, Any]) -> str:
    """A short, stable digest of a pod template."""
    blob = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def revision_of(
    service: str, spec: MicroserviceSpec, extra_env: Sequence[Mapping[str, Any]] = ()
) -> str:
    """The release revision of `spec`: the digest of the pod template it asks for, the same
    whichever track runs it. Replicas are not part of it: scaling is not a release."""
    return template_hash(_pod_template(spec, service, "stable", extra_env))


def render_deployment(
    owner: Owner,
    spec: MicroserviceSpec,
    *,
    track: Track,
    replicas: int,
    extra_env: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The Deployment of one track, with `replicas` replicas of `spec`'s version.

    `extra_env` joins the container's environment (the owned database's credentials, as
    references to their Secret)."""
    template = _pod_template(spec, owner.name, track, extra_env)
    revision = revision_of(owner.name, spec, extra_env)
    template["metadata"]["labels"][LABEL_REVISION] = revision
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(owner.name, track),
            "namespace": owner.namespace,
            "labels": {
                **selector_labels(owner.name, track),
                LABEL_VERSION: spec.version,
                LABEL_MANAGED_BY: "pilotboat",
            },
            "annotations": {ANNOTATION_REVISION: revision},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(owner.name, track)},
            "template": template,
        },
    }


def pod_revision(deployment: Mapping[str, Any] | None) -> str:
    """The revision label the pods of ``deployment`` carry, or ``""`` when its pod template
    has none (a Deployment written before the label existed): in PromQL ``revision=""``
    selects the series without the label, i.e. those pods.

    >>> pod_revision({"spec": {"template": {"metadata": {"labels": {LABEL_REVISION: "ab12"}}}}})
    'ab12'
    >>> pod_revision({"spec": {"template": {"metadata": {}}}}), pod_revision(None)
    ('', '')
    """
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    return str(((template.get("metadata") or {}).get("labels") or {}).get(LABEL_REVISION, ""))


def render_service(
    owner: Owner, spec: MicroserviceSpec, *, name: str | None = None, track: Track | None = None
) -> dict[str, Any]:
    """A ClusterIP Service: over both tracks by default, or over one `track`."""
    selector = {LABEL_NAME: owner.name}
    if track is not None:
        selector[LABEL_TRACK] = track
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name or owner.name,
            "namespace": owner.namespace,
            "labels": {LABEL_NAME: owner.name, LABEL_MANAGED_BY: "pilotboat"},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": p.name,
                    "port": p.port,
                    "targetPort": p.target_port or p.port,
                    "protocol": p.protocol,
                }
                for p in spec.ports
            ],
        },
    }


_CONTAINER = "spec.template.spec.containers[0]."
# A rendered child's field → the Microservice field it comes from (longest prefix first).
_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("Deployment", "metadata.name", "metadata.name"),
    ("Service", "metadata.name", "metadata.name"),
    ("Deployment", _CONTAINER + "image", "spec.image"),
    ("Deployment", _CONTAINER + "imagePullPolicy", "spec.imagePullPolicy"),
    ("Deployment", _CONTAINER + "env", "spec.env"),
    ("Deployment", _CONTAINER + "resources", "spec.resources"),
    ("Deployment", _CONTAINER + "readinessProbe.httpGet.port", "spec.readinessProbe.port"),
    ("Deployment", _CONTAINER + "readinessProbe.httpGet.path", "spec.readinessProbe.path"),
    ("Deployment", _CONTAINER + "readinessProbe.periodSeconds",
     "spec.readinessProbe.periodSeconds"),
    ("Deployment", _CONTAINER + "readinessProbe", "spec.readinessProbe"),
    ("Deployment", _CONTAINER + "ports", "spec.ports"),
    ("Deployment", "spec.template.spec.nodeSelector", "spec.nodeSelector"),
    ("Deployment", "spec.template.spec.tolerations", "spec.tolerations"),
    ("Deployment", "spec.template.metadata.labels", "spec.version"),
    ("Deployment", "metadata.labels", "spec.version"),
    ("Service", "spec.ports", "spec.ports"),
)


def _template_source(field: str, spec: MicroserviceSpec) -> str | None:
    """The Microservice field a Deployment field comes from when ``spec`` has a template:
    the template's own path where the template said it, the short field where that did."""
    template = spec.template
    assert template is not None
    main = template.main_container() or {}
    rest = field.removeprefix("spec.template.")
    container = re.match(r"^spec\.containers\[0\]\.(?P<key>\w+)(?P<rest>.*)$", rest)
    if container is not None:
        key, tail = container["key"], container["rest"]
        counts = {"env": (len(main.get("env") or ()), len(spec.env or ()), "spec.env"),
                  "ports": (len(main.get("ports") or ()), len(spec.ports), "spec.ports")}
        if key in counts:
            ours, sugar, sugar_field = counts[key]
            index = re.match(r"^\[(\d+)\]", tail)
            if index is None:
                return f"spec.template.{rest}"
            i = int(index[1])
            if i < ours:
                return f"spec.template.{rest}"
            if i < ours + sugar:
                return f"{sugar_field}[{i - ours}]" + (tail[index.end():] if key == "env" else "")
            return None  # an entry the operator adds
        sugar_set = {"image": spec.image, "imagePullPolicy": spec.image_pull_policy,
                     "resources": spec.resources, "readinessProbe": spec.readiness_probe}
        if key in sugar_set and sugar_set[key] is not None:
            return None  # the short field's own mapping below says which
        return f"spec.template.{rest}"
    pod = re.match(r"^spec\.(?P<key>\w+)", rest)
    if pod is None:
        return None
    if pod["key"] in ("nodeSelector", "tolerations") and getattr(
            spec, "node_selector" if pod["key"] == "nodeSelector" else "tolerations"):
        return None
    return f"spec.template.{rest}"


def source_field(kind: str, field: str, *, env_count: int = 0,
                 spec: MicroserviceSpec | None = None) -> str | None:
    """The Microservice field that a field of its rendered ``kind`` comes from, or None.

    Indexes carry over where the lists match one to one (ports; ``env`` for the first
    ``env_count`` entries, the user's own, before those the operator adds).

    >>> source_field("Deployment", "spec.template.spec.containers[0].env[1].name", env_count=2)
    'spec.env[1].name'
    >>> source_field("Service", "spec.ports[0].port")
    'spec.ports[0].port'
    >>> source_field("Deployment", "spec.template.spec.containers[0].ports[1].containerPort")
    'spec.ports[1]'

    With a pod template (``spec``), a field the template set is named at its own path.
    """
    if (kind == "Deployment" and spec is not None and spec.template is not None
            and field.startswith("spec.template.spec.")):
        source = _template_source(field, spec)
        if source is not None:
            return source
        if field.startswith("spec.template.spec.containers[0].env["):
            return None  # an entry the operator adds
    for child_kind, prefix, source in _SOURCES:
        if child_kind != kind or not (field == prefix or field.startswith(prefix)):
            continue
        rest = field[len(prefix):]
        if rest and rest[0] not in ".[":
            continue
        if source == "spec.env":
            index = re.match(r"^\[(\d+)\]", rest)
            if index is None or int(index[1]) >= env_count:
                return None  # an entry the operator adds, not the user's
            return source + rest
        if source == "spec.ports" and kind == "Deployment":
            index = re.match(r"^\[(\d+)\]", rest)
            return source + (index[0] if index else "")
        return source + rest
    return None
