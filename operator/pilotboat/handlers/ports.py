"""What the handlers need of the world outside them, as Protocols: the Kubernetes API.

The handlers are typed on these, never on an implementation: the operator runs them on
:class:`pilotboat.adapters.kube.Kube` (the API server) and the fast tests on
:class:`pilotboat.testing.FakeKube` (objects in a dict, with the API server's
``resourceVersion``, 404 and 409). The database side is
:class:`pilotboat.adapters.database.DatabaseEngine`.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Kube"]


class Kube(Protocol):
    """The Kubernetes API as the handlers use it. Objects travel as plain dicts (the wire
    form); every write carries the field manager ``pilotboat``; a failure is a
    ``kubernetes.client.exceptions.ApiException`` with the API server's status."""

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        ...

    def list(
        self, kind: str, namespace: str | None = None, *, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The objects of a kind (in `namespace`; all namespaces for None) whose labels
        include `labels`."""
        ...

    def apply(
        self, obj: dict[str, Any], *, subresource: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply `obj` (forced); with `dry_run`, validate and store nothing."""
        ...

    def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch; a ``metadata.resourceVersion`` in it must match (409)."""
        ...

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create `obj`; 409 when it exists."""
        ...

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete in the background; False when it was already gone."""
        ...

    def event(
        self,
        involved: dict[str, Any],
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
        component: str = "pilotboat",
    ) -> None:
        """Record a core/v1 Event about `involved`."""
        ...
