"""Who may use a DatabaseServer, and the admin connection the operator builds from one."""

from __future__ import annotations

import base64
import doctest
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

import pilotboat.core.database_server
from pilotboat.api import DatabaseServerSpec, OwnedDatabaseSpec
from pilotboat.core.database_server import namespace_allowed

SERVER: dict[str, Any] = {"host": "pg.platform", "adminSecretRef": {"name": "pg-admin"}}


def _spec(**fields: Any) -> DatabaseServerSpec:
    return DatabaseServerSpec.model_validate({**SERVER, **fields})


def test_docstring_examples() -> None:
    assert doctest.testmod(pilotboat.core.database_server).failed == 0


def test_no_namespace_may_use_a_server_that_names_none() -> None:
    server = _spec()
    assert server.tls.mode == "verify-full" and server.port == 5432
    for namespace in ("default", "kube-system", "pilotboat-system", "shop"):
        assert not namespace_allowed(server, namespace, {"any": "label"})


@pytest.mark.parametrize(
    ("patterns", "namespace", "allowed"),
    [
        (["shop"], "shop", True),
        (["shop"], "shop-eu", False),
        (["shop-*"], "shop-eu", True),
        (["shop-*"], "shop", False),
        (["team-?"], "team-a", True),
        (["team-[ab]"], "team-c", False),
        (["*"], "anything", True),
    ],
)
def test_allowed_namespaces_are_names_or_patterns(
    patterns: list[str], namespace: str, allowed: bool
) -> None:
    assert namespace_allowed(_spec(allowedNamespaces=patterns), namespace, {}) is allowed


def test_a_namespace_selector_admits_by_labels() -> None:
    server = _spec(namespaceSelector={
        "matchLabels": {"pilotboat.dev/postgres": "shared"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["sandbox"]},
                             {"key": "frozen", "operator": "DoesNotExist"}],
    })  # fmt: skip
    assert namespace_allowed(server, "a", {"pilotboat.dev/postgres": "shared"})
    assert namespace_allowed(server, "a", {"pilotboat.dev/postgres": "shared", "tier": "prod"})
    assert not namespace_allowed(server, "a", {"pilotboat.dev/postgres": "other"})
    assert not namespace_allowed(server, "a", {"pilotboat.dev/postgres": "shared",
                                               "tier": "sandbox"})  # fmt: skip
    assert not namespace_allowed(server, "a", {"pilotboat.dev/postgres": "shared", "frozen": ""})
    assert not namespace_allowed(server, "a", None)  # labels unknown: no


# --- the admin connection (pilotboat.handlers.databases) ---------------------------------------


class _Secrets:
    """Just enough of Kube for _admin_dsn: DatabaseServers, Namespaces and Secrets by name."""

    def __init__(self, objects: dict[tuple[str, str | None, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.asked: list[tuple[str, str | None, str]] = []

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.asked.append((kind, namespace, name))
        return self.objects.get((kind, namespace, name))


def _data(**values: str) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


@pytest.fixture
def operator_namespace() -> Iterator[str]:
    from pilotboat.handlers import context

    before = context._runtime
    context.configure_runtime(
        context.Runtime(kube=None, operator_namespace="platform")  # type: ignore[arg-type]
    )
    yield "platform"
    context._runtime = before


def test_the_admin_dsn_comes_from_the_server_and_the_operators_namespace(
    operator_namespace: str,
) -> None:
    from pilotboat.handlers.databases import _admin_dsn

    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    server = {**SERVER, "port": 6432, "allowedNamespaces": ["shop"],
              "tls": {"mode": "verify-full", "caSecretRef": {"name": "pg-ca"}}}  # fmt: skip
    kube = _Secrets({
        ("DatabaseServer", None, "shared"): {"spec": server},
        ("Secret", "platform", "pg-admin"): _data(username="admin", password="s3cret"),
        ("Secret", "platform", "pg-ca"): _data(**{"ca.crt": pem}),
        # A tenant's Secret of the same name is never read.
        ("Secret", "shop", "pg-admin"): _data(username="evil", password="x"),
    })  # fmt: skip
    spec = OwnedDatabaseSpec.model_validate({"owner": "orders", "serverRef": {"name": "shared"}})

    params = conninfo_to_dict(_admin_dsn(kube, "shop", spec))  # type: ignore[arg-type]

    assert {k: params[k] for k in ("host", "port", "user", "password", "dbname", "sslmode",
                                   "require_auth")} == {
        "host": "pg.platform", "port": "6432", "user": "admin", "password": "s3cret",
        "dbname": "postgres", "sslmode": "verify-full", "require_auth": "scram-sha-256"}
    ca = Path(params["sslrootcert"])
    assert ca.read_text() == pem
    assert stat.S_IMODE(ca.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.parent.stat().st_mode) == 0o700
    assert all(ns in (None, "platform") for kind, ns, _ in kube.asked if kind == "Secret")
    # The same CA again: the same file.
    again = conninfo_to_dict(_admin_dsn(kube, "shop", spec))  # type: ignore[arg-type]
    assert again["sslrootcert"] == str(ca)


def test_verify_full_without_a_ca_uses_the_system_cas(operator_namespace: str) -> None:
    from pilotboat.handlers.databases import _admin_dsn

    kube = _Secrets({
        ("DatabaseServer", None, "shared"): {"spec": {**SERVER, "allowedNamespaces": ["*"]}},
        ("Secret", "platform", "pg-admin"): _data(username="admin", password="s3cret"),
    })  # fmt: skip
    spec = OwnedDatabaseSpec.model_validate({"owner": "orders", "serverRef": {"name": "shared"}})
    params = conninfo_to_dict(_admin_dsn(kube, "shop", spec))  # type: ignore[arg-type]
    assert (params["sslmode"], params["sslrootcert"]) == ("verify-full", "system")


@pytest.mark.parametrize(
    ("objects", "reason", "words"),
    [
        ({}, "DatabaseServerNotFound", ["DatabaseServer shared", "spec.serverRef.name"]),
        ({("DatabaseServer", None, "shared"): {"spec": {**SERVER, "allowedNamespaces": ["ads"]}}},
         "NamespaceNotAllowed", ["DatabaseServer shared", "namespace shop"]),
        ({("DatabaseServer", None, "shared"): {"spec": {**SERVER, "allowedNamespaces": ["shop"]}}},
         "AdminSecretMissing", ["admin Secret pg-admin", "namespace platform"]),
        ({("DatabaseServer", None, "shared"): {"spec": {**SERVER, "allowedNamespaces": ["shop"],
                                                         "tls": {"caSecretRef": {"name": "c"}}}},
          ("Secret", "platform", "pg-admin"): _data(username="admin", password="s3cret")},
         "CaSecretMissing", ["CA Secret c", "namespace platform"]),
    ],
    ids=["no-server", "namespace-not-allowed", "no-admin-secret", "no-ca-secret"],
)
def test_refusals_name_what_is_missing(
    operator_namespace: str, objects: dict[Any, Any], reason: str, words: list[str]
) -> None:
    from pilotboat.handlers.databases import _admin_dsn, _ServerRefused

    spec = OwnedDatabaseSpec.model_validate({"owner": "orders", "serverRef": {"name": "shared"}})
    with pytest.raises(_ServerRefused) as refused:
        _admin_dsn(_Secrets(objects), "shop", spec)  # type: ignore[arg-type]
    assert refused.value.reason == reason
    for word in words:
        assert word in str(refused.value)
    assert "s3cret" not in str(refused.value)
