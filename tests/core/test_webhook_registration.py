"""An operator that registers its own webhook configurations (`pilotboat run --namespace
shop`) makes them owned by the Namespaces it watches by name, so they go with them; it
registers as before when it may not read a Namespace or one is missing, and registers again
a configuration that is gone. (On a real API server, garbage collection included:
tests/cluster/test_run_cli.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat.handlers.webhooks import PilotboatWebhookServer
from pilotboat.testing import FakeKube

CLIENT = {"url": "https://127.0.0.1:9443", "caBundle": "Y2E="}
KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


class _NoNamespaces(FakeKube):
    """A client that may not read Namespaces."""

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        if kind == "Namespace":
            raise ApiException(status=403, reason="Forbidden")
        return super().get(kind, namespace, name)


def _server(kube: FakeKube, owners: list[str]) -> PilotboatWebhookServer:
    return PilotboatWebhookServer(kube, name="pilotboat-ns-test", namespaces=owners or ["t-*"],
                                  addr="127.0.0.1", host="127.0.0.1", owners=owners)


def _owners(kube: FakeKube) -> list[list[Any]]:
    return [(kube.get(kind, None, "pilotboat-ns-test") or {})["metadata"].get("ownerReferences")
            for kind in KINDS]


def _left(kube: FakeKube) -> list[bool]:
    """Whether each configuration is still there."""
    return [kube.get(kind, None, "pilotboat-ns-test") is not None for kind in KINDS]


def _namespace(kube: FakeKube, name: str) -> str:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    found = kube.get("Namespace", None, name)
    assert found is not None
    return str(found["metadata"]["uid"])


def test_owned_by_every_namespace_it_serves() -> None:
    kube = FakeKube()
    uids = {name: _namespace(kube, name) for name in ("pay", "shop")}
    _server(kube, ["pay", "shop"])._register(CLIENT)
    want = [{"apiVersion": "v1", "kind": "Namespace", "name": n, "uid": uids[n]}
            for n in ("pay", "shop")]
    assert _owners(kube) == [want, want]


@pytest.mark.parametrize("case", ["one namespace missing", "may not read namespaces", "globs"])
def test_registered_unowned_when_its_namespaces_cannot_all_own_it(case: str) -> None:
    kube = _NoNamespaces() if case == "may not read namespaces" else FakeKube()
    if case == "one namespace missing":
        _namespace(kube, "shop")
    owners = [] if case == "globs" else ["pay", "shop"]
    _server(kube, owners)._register(CLIENT)
    assert _owners(kube) == [None, None]


def test_a_configuration_that_is_gone_is_registered_again() -> None:
    kube = FakeKube()
    _namespace(kube, "shop")
    server = _server(kube, ["shop"])
    server._register(CLIENT)
    writes = len(kube.writes)
    server._still_registered(CLIENT)
    assert len(kube.writes) == writes  # both there: nothing written
    kube.delete("ValidatingWebhookConfiguration", None, "pilotboat-ns-test")
    server._still_registered(CLIENT)
    assert kube.get("ValidatingWebhookConfiguration", None, "pilotboat-ns-test") is not None


def test_registered_again_while_its_namespace_is_gone_it_is_owned_once_the_namespace_is_back(
) -> None:
    """The garbage collector took the configuration with its namespace, and the operator's
    check registered it again before the operator stopped: unowned. Once the namespace
    exists again, the next check gives it its owner."""
    kube = FakeKube()
    server = _server(kube, ["shop"])
    server._register(CLIENT)  # the namespace is gone: registered unowned
    assert _owners(kube) == [None, None]
    server._still_registered(CLIENT)
    assert _owners(kube) == [None, None]  # still nothing that could own it
    uid = _namespace(kube, "shop")
    server._still_registered(CLIENT)
    owner = [{"apiVersion": "v1", "kind": "Namespace", "name": "shop", "uid": uid}]
    assert _owners(kube) == [owner, owner]


@pytest.mark.parametrize("namespace_exists", [False, True])
def test_on_the_way_out_an_unowned_configuration_goes_only_if_none_of_its_namespaces_exists(
    namespace_exists: bool,
) -> None:
    kube = FakeKube()
    server = _server(kube, ["shop"])
    server._register(CLIENT)  # unowned: the namespace was gone
    if namespace_exists:
        _namespace(kube, "shop")  # made again since: the configuration protects it
    server._let_go()
    assert _left(kube) == [namespace_exists, namespace_exists]


def test_on_the_way_out_an_owned_configuration_is_left_to_the_garbage_collector() -> None:
    kube = FakeKube()
    _namespace(kube, "shop")
    server = _server(kube, ["shop"])
    server._register(CLIENT)
    kube.delete("Namespace", None, "shop")
    server._let_go()
    assert _left(kube) == [True, True]


def test_on_the_way_out_a_client_that_may_not_read_namespaces_leaves_them() -> None:
    kube = _NoNamespaces()
    server = _server(kube, ["shop"])
    server._register(CLIENT)
    server._let_go()
    assert _left(kube) == [True, True]


def test_on_the_way_out_a_namespace_being_deleted_protects_nothing() -> None:
    kube = FakeKube()
    server = _server(kube, ["shop"])
    server._register(CLIENT)
    _namespace(kube, "shop")
    kube.acting_as("pilotboat").merge_patch(
        "Namespace", None, "shop", {"metadata": {"deletionTimestamp": "2026-12-03T19:00:00Z"}}
    )
    server._let_go()
    assert _left(kube) == [False, False]
