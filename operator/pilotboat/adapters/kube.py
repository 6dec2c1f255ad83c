"""The Kubernetes API, as the operator uses it: server-side apply, get, list, delete, events.

Objects travel as plain dicts (the wire form). Writes of child objects go through
server-side apply with one field manager, so the operator owns exactly the fields it sets
and a second apply of the same object is a no-op on the server. Every other write (merge
patch, create) carries the same field manager, so ``managedFields`` names ``pilotboat`` for
everything the operator wrote, and nothing it did not.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from kubernetes import client as _k8s
from kubernetes.client.exceptions import ApiException

__all__ = [
    "FIELD_MANAGER",
    "RESOURCES",
    "Kube",
    "Resource",
    "resource_for",
]

FIELD_MANAGER = "pilotboat"


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: enough to build its URL paths."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        return base


RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        Resource("", "v1", "namespaces", "Namespace", namespaced=False),
        Resource("", "v1", "services", "Service"),
        Resource("", "v1", "configmaps", "ConfigMap"),
        Resource("", "v1", "secrets", "Secret"),
        Resource("", "v1", "pods", "Pod"),
        Resource("", "v1", "serviceaccounts", "ServiceAccount"),
        Resource("", "v1", "events", "Event"),
        Resource("apps", "v1", "deployments", "Deployment"),
        Resource("apps", "v1", "replicasets", "ReplicaSet"),
        Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
        Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),
        Resource("pilotboat.dev", "v1alpha1", "microservices", "Microservice"),
        Resource("pilotboat.dev", "v1alpha1", "rolloutpolicies", "RolloutPolicy"),
        Resource("pilotboat.dev", "v1alpha1", "owneddatabases", "OwnedDatabase"),
        Resource(
            "pilotboat.dev", "v1alpha1", "databaseservers", "DatabaseServer", namespaced=False
        ),
        Resource("pilotboat.dev", "v1alpha1", "schemamigrations", "SchemaMigration"),
        Resource("pilotboat.dev", "v1alpha1", "migrationapprovals", "MigrationApproval"),
        Resource("pilotboat.dev", "v1alpha1", "featureflags", "FeatureFlag"),
        Resource(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            namespaced=False,
        ),
        Resource(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            namespaced=False,
        ),
        Resource(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicies",
            "ValidatingAdmissionPolicy",
            namespaced=False,
        ),
        Resource(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicybindings",
            "ValidatingAdmissionPolicyBinding",
            namespaced=False,
        ),
        Resource("rbac.authorization.k8s.io", "v1", "roles", "Role"),
        Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
        Resource(
            "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False
        ),
        Resource(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            namespaced=False,
        ),
        Resource(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
        ),
    )
}


def resource_for(kind: str) -> Resource:
    """The `Resource` of a kind the operator knows; KeyError names the kind otherwise."""
    try:
        return RESOURCES[kind]
    except KeyError:
        raise KeyError(f"pilotboat does not know the kind {kind!r}") from None


class Kube:
    """A thin, synchronous client over `kubernetes.client.ApiClient`.

    Every method is safe to call again after a crash: `apply` converges, `delete` of a
    missing object is not an error, `get` of a missing object is None.
    """

    def __init__(
        self,
        api_client: _k8s.ApiClient,
        field_manager: str = FIELD_MANAGER,
        *,
        timeout: float = 30.0,
    ) -> None:
        self._api = api_client
        self._field_manager = field_manager
        self._timeout = timeout

    @property
    def api_client(self) -> _k8s.ApiClient:
        return self._api

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        method_, url, headers, body_, post = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(
            method_,
            url,
            header_params=headers,
            body=body_,
            post_params=post,
            _request_timeout=self._timeout,
        )
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(
                http_resp=response, body=(response.data or b"").decode(errors="replace"), data=None
            )
        raw = response.data
        return json.loads(raw) if raw else None

    def served(self, group: str, version: str) -> set[str]:
        """The resources (plurals, subresources too) API discovery lists for `group/version`:
        empty while the API server does not serve it yet (a CRD just made may be
        Established some time before discovery has it)."""
        groups = self._call("GET", "/apis") or {}
        versions = {
            v.get("groupVersion")
            for g in groups.get("groups", [])
            if g.get("name") == group
            for v in g.get("versions", [])
        }
        if f"{group}/{version}" not in versions:
            return set()
        try:
            listing = self._call("GET", f"/apis/{group}/{version}") or {}
        except ApiException as exc:
            if exc.status == 404:
                return set()
            raise
        return {str(r["name"]) for r in listing.get("resources", [])}

    def apply(
        self, obj: dict[str, Any], *, subresource: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply `obj` (it must carry apiVersion, kind, metadata.name).

        With `dry_run` the API server validates and admits it and stores nothing."""
        res = resource_for(obj["kind"])
        meta = obj["metadata"]
        path = res.path(meta.get("namespace"), meta["name"])
        if subresource:
            path += f"/{subresource}"
        try:
            result: dict[str, Any] = self._call(
                "PATCH",
                path,
                body=obj,
                query=[
                    ("fieldManager", self._field_manager),
                    ("force", "true"),
                    *([("dryRun", "All")] if dry_run else []),
                ],
                content_type="application/apply-patch+yaml",
            )
        except ApiException as exc:
            exc.applied_object = obj  # type: ignore[attr-defined]  # what was refused
            raise
        return result

    def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        path = resource_for(kind).path(namespace, name)
        if subresource:
            path += f"/{subresource}"
        result: dict[str, Any] = self._call(
            "PATCH",
            path,
            body=patch,
            query=[("fieldManager", self._field_manager)],
            content_type="application/merge-patch+json",
        )
        return result

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call("GET", resource_for(kind).path(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list(
        self, kind: str, namespace: str | None = None, *, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query: list[tuple[str, Any]] = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items())))
        items: list[dict[str, Any]] = self._call(
            "GET", resource_for(kind).path(namespace), query=query
        )["items"]
        return items

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        res = resource_for(obj["kind"])
        result: dict[str, Any] = self._call(
            "POST",
            res.path(obj["metadata"].get("namespace")),
            body=obj,
            query=[("fieldManager", self._field_manager)],
        )
        return result

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete in the background; False when it was already gone."""
        try:
            self._call(
                "DELETE",
                resource_for(kind).path(namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
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
        """Record a core/v1 Event about `involved` (a full object as read from the API)."""
        meta = involved["metadata"]
        now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta.get("namespace", "default"),
            },
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.create(event)
