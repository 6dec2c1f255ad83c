"""Admission webhooks served by the operator (``pilotboat run --webhooks``, the default).

The webhooks:

* ``approval-identity`` (mutating, ``failurePolicy: Fail``) stamps every new
  MigrationApproval with the creator's identity from the admission request's ``userInfo``
  and refuses changes to an existing one (:func:`pilotboat.handlers.approvals.admit_approval`);
* ``database-claim`` (validating, ``failurePolicy: Ignore``) refuses a Microservice that
  claims an OwnedDatabase owned by another service, naming the owner. ``Ignore`` because
  the Microservice reconciler enforces the same rule (:func:`database_claim`); the webhook
  only says no earlier, at ``kubectl apply`` time. Called only for a spec that claims one;
* ``microservice-children`` (validating, ``failurePolicy: Ignore``) renders the
  Microservice's Deployment and Service and asks the API server, by a server-side dry run
  that stores nothing, whether it would take them; a refusal names the Microservice's own
  field (``spec.env[0].name: Invalid value …``). ``Ignore`` because the reconciler reports
  the same refusal as ``Ready=False ChildRejected`` (:mod:`pilotboat.handlers.children`).
  Called for a create and for a changed spec only: labels alone render the same children;
* ``featureflag-valid`` (validating, ``failurePolicy: Ignore``) refuses a FeatureFlag that
  flagd could not serve, naming each field (:func:`pilotboat.api.flag.feature_flag_problems`);
  ``Ignore`` for the same reason: the operator does not render a flag it would refuse;
* ``schemamigration-lint`` (validating, ``failurePolicy: Ignore``) admits every
  SchemaMigration but answers the SQL linter's findings as admission warnings naming the
  field, which ``kubectl apply`` prints (:func:`pilotboat.handlers.migrations.lint_warnings`);
  the reconciler is what refuses unsafe SQL, with the same findings in a condition;
* ``contract-author`` (mutating, ``failurePolicy: Ignore``) records in the annotation
  ``pilotboat.dev/contract-author`` who created a SchemaMigration or last changed its
  contract SQL, for separation of duties. ``Ignore``, so a stopped operator never blocks a
  migration: where separation of duties is asked for, the admission policy
  pilotboat-contract-author refuses an annotation naming anyone but the requester (the
  client then sets it itself), and an unknown author is treated as the approver;
* ``command-identity`` (mutating, ``failurePolicy: Ignore``, on ``microservices/status``,
  called only for writes that change ``status.commands``) stamps ``<command>By`` with the
  requesting user when a release command's token changes
  (:func:`pilotboat.handlers.commands.command_identity_patch`). ``Ignore``: without it the
  admission policy pilotboat-command-identity refuses a command that names no sender (the
  client then names itself, as ``kubectl pilotboat`` does);
* ``microservice-queries`` and ``rolloutpolicy-queries`` (validating, ``failurePolicy:
  Ignore``) refuse a Microservice or RolloutPolicy whose analysis queries would not run: a
  template variable the operator does not provide (``{{ servise }}``) or rendered PromQL that
  does not parse, naming each field (:mod:`pilotboat.core.promql_check`). A template over a
  limit on untrusted input is admitted with a warning: the analysis pauses naming the limit.
  ``Ignore``, as a bad query is an Error measurement that pauses the release anyway. The
  Microservice one is called only for a spec that declares analysis signals;
* ``breaking-change-override`` (mutating, ``failurePolicy: Fail``, called only for requests
  whose object carries or carried the override annotations) stamps who allowed a breaking
  contract change (:func:`pilotboat.handlers.contracts.admit_override`).

Kopf serves them (``kopf.WebhookServer`` over HTTPS with a self-signed certificate made by
``openssl``); the operator registers the webhook configurations itself rather than through
Kopf's managed mode, so that each configuration

* is named after the operator instance (its peering name, or a hash of the namespaces it
  watches): operators watching different namespaces do not overwrite each other's;
* applies only to the namespaces the operator watches: a stopped operator blocks approvals
  in its own namespaces only. Watched by name (``shop``, ``!sandbox``), by a
  ``namespaceSelector`` on the label ``kubernetes.io/metadata.name``, which the API server
  sets on every Namespace and tests far more cheaply than a CEL expression on every request
  (:func:`namespace_selector`); watched by a glob, by a ``matchConditions`` entry in CEL
  (:func:`namespace_match_expression`).

The configurations stay when the operator stops: removing them would open a window in
which approvals are created without a stamp (and any stamp a client wrote would pass).
They go with the namespaces they serve: a configuration named after namespaces the
operator watches by name (``pilotboat run --namespace shop``, no glob, no peering) is
*owned* by those Namespaces (``metadata.ownerReferences``, :func:`owning_namespaces`), so
Kubernetes' garbage collector deletes it once the last of them is deleted. Without that,
every operator run for a namespace since deleted (a test's, a benchmark's, a team's
sandbox) left a configuration behind whose ``matchConditions`` the API server still
evaluated, in CEL, on every write of a Microservice in the cluster. A running operator
looks every :data:`REGISTRATION_CHECK_SECONDS` and registers again a configuration that is
gone (its namespace deleted and made again under it, or deleted by hand), owned again once
its namespaces exist; registered again while they were gone, it is unowned, and the
operator deletes it when it stops if none of them exists then (:meth:`_let_go`). An operator
whose configuration no namespace owns (cluster-wide, globs, a peering name, the chart's
``webhooks.registration=operator`` with its create-and-patch-only grant) registers once.

**The chart's registration** (``--webhook-service`` with ``--webhook-ca-secret``, what the
Helm chart runs) is the other way: the chart renders the configurations itself, from
:func:`chart_webhooks` (the same definitions, written to ``charts/pilotboat/files/webhooks.yaml``
by ``hack/render-manifests.sh``), called through a Service with a CA the chart generates.
The operator registers nothing and may not change them; it reads the CA from its Secret,
issues itself a serving certificate for the Service's names valid for
:data:`SERVING_CERT_DAYS` and renews it every :data:`SERVING_CERT_RENEW_SECONDS` (reading the
CA again, so a CA the chart rotated is used from then on), and, as the one replica serving
the webhooks, points the Service's EndpointSlice at its own address.

**Admission has its own threads.** Every check runs on a small pool of its own
(:data:`ADMISSION_WORKERS` threads), awaited by an async handler for at most
``ADMISSION_TIMEOUT_SECONDS`` (:mod:`pilotboat.core.limits`), never on Kopf's executor, which
runs the event handlers: a slow reconcile, or a tenant's object that is slow to check, never
delays another approval. A check that runs out of time refuses where the webhook's
``failurePolicy`` is ``Fail`` (as the API server would refuse without an answer) and admits
with a warning where it is ``Ignore`` (the reconciler checks again). A request nested too
deeply for Python's JSON reader (a FeatureFlag's targeting 2 000 levels deep) is read cut at
``MAX_ADMISSION_DEPTH`` (:func:`pilotboat.core.limits.clip_json_depth`), so it is refused by
the limit of its field instead of going unanswered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp.web
import kopf
import yaml
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pilotboat import GROUP, VERSION
from pilotboat.api import MicroserviceSpec
from pilotboat.api.common import error_path
from pilotboat.api.flag import feature_flag_problems
from pilotboat.core import reasons
from pilotboat.core.limits import ADMISSION_TIMEOUT_SECONDS, MAX_ADMISSION_DEPTH, clip_json_depth
from pilotboat.core.promql_check import QueryProblem, spec_query_problems
from pilotboat.core.workload import Owner
from pilotboat.handlers import metrics, prefetch
from pilotboat.handlers.approvals import ApprovalRefused, admit_approval, contract_author_patch
from pilotboat.handlers.children import ChildRefusal, dry_run_children
from pilotboat.handlers.command_webhook import COMMAND_MATCH, COMMAND_WEBHOOK
from pilotboat.handlers.context import runtime
from pilotboat.handlers.contracts import (
    ANNOTATION_ALLOW_BREAKING,
    ANNOTATION_ALLOWED_BY,
    OverrideRefused,
    admit_override,
)
from pilotboat.handlers.databases import DatabaseClaim, database_claim
from pilotboat.handlers.migrations import lint_warnings
from pilotboat.handlers.ports import Kube

__all__ = [
    "ADMISSION_WORKERS",
    "SERVING_CERT_DAYS",
    "SERVING_CERT_RENEW_SECONDS",
    "REGISTRATION_CHECK_SECONDS",
    "PilotboatWebhookServer",
    "ServiceRef",
    "chart_webhooks",
    "parse_ref",
    "namespace_match_expression",
    "namespace_selector",
    "owning_namespaces",
    "webhook_configuration_name",
]

_log = logging.getLogger("pilotboat.webhooks")
APPROVAL_WEBHOOK = "approval-identity"
CLAIM_WEBHOOK = "database-claim"
FLAG_WEBHOOK = "featureflag-valid"
LINT_WEBHOOK = "schemamigration-lint"
OVERRIDE_WEBHOOK = "breaking-change-override"
CHILDREN_WEBHOOK = "microservice-children"
AUTHOR_WEBHOOK = "contract-author"
QUERIES_WEBHOOK = "microservice-queries"
POLICY_QUERIES_WEBHOOK = "rolloutpolicy-queries"
_WEBHOOKS = frozenset({
    APPROVAL_WEBHOOK, CLAIM_WEBHOOK, FLAG_WEBHOOK, LINT_WEBHOOK, OVERRIDE_WEBHOOK,
    CHILDREN_WEBHOOK, AUTHOR_WEBHOOK, QUERIES_WEBHOOK, POLICY_QUERIES_WEBHOOK, COMMAND_WEBHOOK,
})  # fmt: skip

SERVING_CERT_DAYS = 1
"""Validity of a serving certificate issued from the chart's CA."""
SERVING_CERT_RENEW_SECONDS = 8 * 3600.0
"""How often the operator issues itself a new one (well before the last one expires)."""

REGISTRATION_CHECK_SECONDS = float(os.environ.get("PILOTBOAT_WEBHOOK_CHECK_SECONDS") or 30)
"""How often an operator that registers its own configurations checks they are still there
(the environment variable is for tests)."""

ADMISSION_WORKERS = 4
"""Threads that run admission checks, and nothing else."""
_admission_pool = ThreadPoolExecutor(max_workers=ADMISSION_WORKERS, thread_name_prefix="admission")
_T = TypeVar("_T")


def _carries_override(obj: str) -> str:
    keys = " || ".join(f"'{k}' in {obj}.metadata.annotations"
                       for k in (ANNOTATION_ALLOW_BREAKING, ANNOTATION_ALLOWED_BY))  # fmt: skip
    return f"({obj} != null && has({obj}.metadata.annotations) && ({keys}))"


_OVERRIDE_MATCH = f"{_carries_override('object')} || {_carries_override('oldObject')}"


def _has(path: str) -> str:
    """CEL: every field of the dotted ``path`` is set (``has()`` field by field, so a
    missing parent is false, not an error).

    >>> _has("object.spec.database")
    'has(object.spec) && has(object.spec.database)'
    """
    parts = path.split(".")
    return " && ".join(f"has({'.'.join(parts[:n])})" for n in range(2, len(parts) + 1))


# The API server calls a Microservice's validating webhooks only when they have something
# to check: the claim for a spec that claims an OwnedDatabase, the queries for a spec that
# declares analysis signals, the children for a create or a changed spec (a change to the
# labels alone renders the same children, which were admitted).
_CLAIM_MATCH = _has("object.spec.database.ownedDatabase")
_QUERIES_MATCH = _has("object.spec.rollout.canary.analysis.signals")
_CHILDREN_MATCH = ("oldObject == null || !has(object.spec) || !has(oldObject.spec)"
                   " || object.spec != oldObject.spec")  # fmt: skip


def webhook_configuration_name(namespaces: Sequence[str], peering: str | None) -> str:
    """``pilotboat-<peering>`` or ``pilotboat-<hash of the namespace patterns>``.

    >>> webhook_configuration_name([], "prod")
    'pilotboat-prod'
    >>> webhook_configuration_name([], None)
    'pilotboat-clusterwide'
    """
    if peering:
        return f"pilotboat-{peering}"
    if not namespaces:
        return "pilotboat-clusterwide"
    digest = hashlib.sha256(",".join(sorted(namespaces)).encode()).hexdigest()[:10]
    return f"pilotboat-ns-{digest}"


def _patterns(namespaces: Sequence[str]) -> list[str]:
    """The namespace patterns of ``--namespace`` (repeated, or comma-separated), in order.

    >>> _patterns(["shop, pay", "t-*"])
    ['shop', 'pay', 't-*']
    """
    return [p.strip() for arg in namespaces for p in arg.split(",") if p.strip()]


def owning_namespaces(namespaces: Sequence[str], peering: str | None) -> list[str]:
    """The Namespaces that own the configuration an operator registers itself: those it
    watches, when it watches them by name and has no peering name (which names an operator
    that outlives namespaces); none otherwise.

    >>> owning_namespaces(["shop", "pay,shop"], None)
    ['pay', 'shop']
    >>> owning_namespaces(["shop"], "prod"), owning_namespaces(["t-*"], None)
    ([], [])
    >>> owning_namespaces(["shop", "!sandbox"], None), owning_namespaces([], None)
    ([], [])
    """
    patterns = sorted(set(_patterns(namespaces)))
    if peering or not patterns or any(set(p) & set("*?!") for p in patterns):
        return []
    return patterns


def _glob_regex(pattern: str) -> str:
    return (
        "^"
        + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        + "$"
    )


_NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def namespace_selector(namespaces: Sequence[str]) -> dict[str, Any] | None:
    """A ``namespaceSelector`` selecting the namespaces Kopf watches when every pattern is a
    name or a ``!name``, on the label ``kubernetes.io/metadata.name`` (the API server sets it
    on every Namespace, to its name, and refuses a change); None when any pattern is a glob
    (:func:`namespace_match_expression` selects those) or there are none (every namespace).

    >>> namespace_selector(["shop,pay", "!sandbox"])  # doctest: +NORMALIZE_WHITESPACE
    {'matchExpressions': [{'key': 'kubernetes.io/metadata.name', 'operator': 'In',
                           'values': ['pay', 'shop']},
                          {'key': 'kubernetes.io/metadata.name', 'operator': 'NotIn',
                           'values': ['sandbox']}]}
    >>> namespace_selector(["!sandbox"])["matchExpressions"]  # doctest: +NORMALIZE_WHITESPACE
    [{'key': 'kubernetes.io/metadata.name', 'operator': 'NotIn', 'values': ['sandbox']}]
    >>> namespace_selector(["shop", "t-*"]) is None, namespace_selector([]) is None
    (True, True)
    """
    patterns = _patterns(namespaces)
    if not patterns or any(set(p) & set("*?") for p in patterns):
        return None
    include = sorted({p for p in patterns if not p.startswith("!")})
    exclude = sorted({p[1:] for p in patterns if p.startswith("!")})
    expressions = [{"key": _NAMESPACE_NAME_LABEL, "operator": operator, "values": values}
                   for operator, values in (("In", include), ("NotIn", exclude)) if values]
    return {"matchExpressions": expressions}


def namespace_match_expression(namespaces: Sequence[str]) -> str | None:
    r"""CEL over the admission request selecting the namespaces Kopf watches (globs, ``!x``)
    when a pattern is a glob; None when :func:`namespace_selector` selects them (names
    only) or there are none (every namespace).

    >>> namespace_match_expression(["t-*", "!t-skip"])
    "(request.namespace.matches('^t\\\\-.*$')) && !(request.namespace.matches('^t\\\\-skip$'))"
    >>> namespace_match_expression(["shop", "!sandbox"]) is None, namespace_match_expression([])
    (True, None)
    """
    patterns = _patterns(namespaces)
    if not patterns or namespace_selector(patterns) is not None:
        return None

    def matches(p: str) -> str:
        escaped = _glob_regex(p).replace("\\", "\\\\").replace("'", "\\'")
        return f"request.namespace.matches('{escaped}')"

    include = [matches(p) for p in patterns if not p.startswith("!")] or ["true"]
    exclude = [matches(p[1:]) for p in patterns if p.startswith("!")]
    expression = f"({' || '.join(include)})"
    if exclude:
        expression += f" && !({' || '.join(exclude)})"
    return expression


def _self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    san = f"IP:{host}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host) else f"DNS:{host}"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "365",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName={san},DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


@dataclass(frozen=True)
class ServiceRef:
    """A namespaced object by namespace and name (the webhook Service, the CA Secret)."""

    namespace: str
    name: str


def parse_ref(value: str, option: str) -> ServiceRef:
    """``<namespace>/<name>``, or a ValueError naming ``option``.

    >>> parse_ref("pilotboat-system/pilotboat-webhooks", "--webhook-service")
    ServiceRef(namespace='pilotboat-system', name='pilotboat-webhooks')
    """
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"{option}: expected <namespace>/<name>, got {value!r}")
    return ServiceRef(namespace, name)


def _configurations(
    name: str,
    client_config: Mapping[str, Any],
    namespaces: Sequence[str],
    *,
    service: ServiceRef | None = None,
) -> list[dict[str, Any]]:
    """The two webhook configurations: called at ``client_config``'s URL, or through
    ``service`` (port 443) when given."""
    base_url = str(client_config.get("url") or "").rstrip("/")
    expression = namespace_match_expression(namespaces)
    match = [{"name": "watched-namespaces", "expression": expression}] if expression else []
    selector = namespace_selector(namespaces)
    scope = {"namespaceSelector": selector} if selector else {}

    def client(handler: str) -> dict[str, Any]:
        if service is not None:
            return {
                "service": {"namespace": service.namespace, "name": service.name,
                            "path": f"/{handler}", "port": 443},
                "caBundle": client_config.get("caBundle"),
            }  # fmt: skip
        return {"url": f"{base_url}/{handler}", "caBundle": client_config.get("caBundle")}

    def webhook(
        handler: str, plural: str, failure: str, when: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """One webhook; `when` (name, CEL) narrows the requests the API server sends it."""
        condition = [{"name": when[0], "expression": when[1]}] if when else []
        return {
            "name": f"{handler}.{GROUP}",
            "clientConfig": client(handler),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [plural],
                    "operations": ["CREATE", "UPDATE"],
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": failure,
            "sideEffects": "None",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1"],
            **scope,
            "matchConditions": [*match, *condition],
        }

    labels = {"app.kubernetes.io/managed-by": "pilotboat"}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "labels": labels},
            "webhooks": [
                webhook(APPROVAL_WEBHOOK, "migrationapprovals", "Fail"),
                webhook(OVERRIDE_WEBHOOK, "microservices", "Fail", ("override", _OVERRIDE_MATCH)),
                webhook(AUTHOR_WEBHOOK, "schemamigrations", "Ignore"),
                webhook(COMMAND_WEBHOOK, "microservices/status", "Ignore",
                        ("commands", COMMAND_MATCH)),
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name, "labels": labels},
            "webhooks": [
                webhook(CLAIM_WEBHOOK, "microservices", "Ignore",
                        ("claims-a-database", _CLAIM_MATCH)),
                webhook(CHILDREN_WEBHOOK, "microservices", "Ignore",
                        ("spec-changed", _CHILDREN_MATCH)),
                webhook(FLAG_WEBHOOK, "featureflags", "Ignore"),
                webhook(LINT_WEBHOOK, "schemamigrations", "Ignore"),
                webhook(QUERIES_WEBHOOK, "microservices", "Ignore",
                        ("has-signals", _QUERIES_MATCH)),
                webhook(POLICY_QUERIES_WEBHOOK, "rolloutpolicies", "Ignore"),
            ],
        },
    ]


def chart_webhooks() -> str:
    """``charts/pilotboat/files/webhooks.yaml``: the webhooks of both configurations as the
    chart renders them (it adds the Service's name and namespace, the caBundle and the
    watched-namespaces condition). One source: the chart never lists webhooks of its own."""
    placeholder = ServiceRef("", "")
    configurations = []
    for configuration in _configurations("", {}, [], service=placeholder):
        webhooks = []
        for hook in configuration["webhooks"]:
            hook = dict(hook)
            hook["clientConfig"] = {"service": {"path": hook["clientConfig"]["service"]["path"]}}
            webhooks.append(hook)
        configurations.append({"kind": configuration["kind"], "webhooks": webhooks})
    header = ("# Generated by hack/render-manifests.sh from pilotboat.handlers.webhooks "
              "(chart_webhooks). DO NOT EDIT.\n")  # fmt: skip
    plain = json.loads(json.dumps({"configurations": configurations}))  # no YAML anchors
    return header + yaml.safe_dump(plain, sort_keys=False, width=100)


def _run_openssl(*args: str, stdin: bytes | None = None) -> None:
    subprocess.run(["openssl", *args], input=stdin, check=True, capture_output=True)


def _issue_serving_cert(
    directory: Path, ca_crt: bytes, ca_key: bytes, service: ServiceRef
) -> tuple[Path, Path]:
    """A fresh key and a certificate for the Service's DNS names, signed by the CA, valid
    for SERVING_CERT_DAYS, both in one file (``tls.pem``, the server's certificate file and
    key file at once) moved over the old one in one rename: Kopf's server notices the change
    and never reads a key of one pair with the certificate of another. The CA key is on
    disk (the pod's memory volume) only while signing."""
    names = [f"{service.name}.{service.namespace}.svc",
             f"{service.name}.{service.namespace}.svc.cluster.local",
             f"{service.name}.{service.namespace}", service.name]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="issue-", dir=directory))
    try:
        (work / "ca.crt").write_bytes(ca_crt)
        (work / "ca.key").touch(mode=0o600)
        (work / "ca.key").write_bytes(ca_key)
        (work / "ext").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names)
                                  + "\nextendedKeyUsage=serverAuth\n")  # fmt: skip
        _run_openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-keyout", str(work / "tls.key"), "-out", str(work / "tls.csr"),
                     "-subj", f"/CN={names[0]}")  # fmt: skip
        _run_openssl("x509", "-req", "-in", str(work / "tls.csr"), "-CA", str(work / "ca.crt"),
                     "-CAkey", str(work / "ca.key"), "-CAcreateserial", "-days",
                     str(SERVING_CERT_DAYS), "-extfile", str(work / "ext"),
                     "-out", str(work / "tls.crt"))  # fmt: skip
        pem = directory / "tls.pem"
        (work / "tls.pem").touch(mode=0o600)
        (work / "tls.pem").write_bytes((work / "tls.key").read_bytes()
                                       + (work / "tls.crt").read_bytes())  # fmt: skip
        (work / "tls.pem").replace(pem)
        return pem, pem
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()


def _read_ca(kube: Kube, secret: ServiceRef) -> tuple[bytes, bytes]:
    found = kube.get("Secret", secret.namespace, secret.name)
    data = (found or {}).get("data") or {}
    if not data.get("ca.crt") or not data.get("ca.key"):
        raise RuntimeError(f"the webhook CA Secret {secret.namespace}/{secret.name} has no "
                           "ca.crt and ca.key (the chart makes it)")  # fmt: skip
    return base64.b64decode(data["ca.crt"]), base64.b64decode(data["ca.key"])


_CONFIGURATION_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


def _owned(configuration: Mapping[str, Any]) -> bool:
    return bool((configuration.get("metadata") or {}).get("ownerReferences"))


class PilotboatWebhookServer(kopf.WebhookServer):
    """Kopf's HTTPS webhook server that registers Pilotboat's own webhook configurations,
    or, with ``service`` and ``ca_secret`` (the chart's registration), registers nothing,
    serves a certificate issued from the chart's CA and points ``service`` at itself."""

    def __init__(
        self,
        kube: Kube,
        *,
        name: str,
        namespaces: Sequence[str],
        addr: str,
        host: str,
        port: int | None = None,
        service: ServiceRef | None = None,
        ca_secret: ServiceRef | None = None,
        owners: Sequence[str] = (),
    ) -> None:
        if (service is None) != (ca_secret is None):
            raise ValueError("--webhook-service and --webhook-ca-secret go together")
        directory = Path(tempfile.mkdtemp(prefix="pilotboat-webhook-"))
        if service is not None and ca_secret is not None:
            cert, key = _issue_serving_cert(directory, *_read_ca(kube, ca_secret), service)
            cafile = None
        else:
            cert, key = _self_signed(directory, host)
            cafile = str(cert)
        super().__init__(
            addr=addr,
            host=host,
            port=port or None,
            certfile=str(cert),
            pkeyfile=str(key),
            cafile=cafile,
        )
        self._kube = kube
        self._name = name
        self._namespaces = list(namespaces)
        self._directory = directory
        self._service = service
        self._ca_secret = ca_secret
        self._owners = list(owners)

    def _register(self, client_config: Mapping[str, Any]) -> None:
        if self._service is not None:
            self._point_service_here()
            return
        owners = self._owner_references()
        for configuration in _configurations(self._name, client_config, self._namespaces):
            if owners:
                configuration["metadata"]["ownerReferences"] = owners
            self._kube.apply(configuration)
        _log.info("webhooks registered as %s at %s", self._name, client_config.get("url"),
                  extra={"owners": [o["name"] for o in owners]})  # fmt: skip

    def _owner_references(self) -> list[dict[str, Any]]:
        """The owning Namespaces as owner references, or none unless every one of them
        exists (a configuration must not go with some of its namespaces while the others
        still need it)."""
        references = []
        for name in self._owners:
            try:
                found = self._living_namespace(name)
            except ApiException as exc:  # may not read Namespaces: registered as before
                _log.info("webhook configurations not owned by their namespaces: %s", exc.reason)
                return []
            if found is None:
                return []
            references.append({"apiVersion": "v1", "kind": "Namespace", "name": name,
                               "uid": found["metadata"]["uid"]})  # fmt: skip
        return references

    def _living_namespace(self, name: str) -> dict[str, Any] | None:
        """The Namespace ``name``, unless it is gone or being deleted."""
        found = self._kube.get("Namespace", None, name)
        return None if found is None or found["metadata"].get("deletionTimestamp") else found

    def _still_registered(self, client_config: Mapping[str, Any]) -> None:
        """Register again if either configuration is gone, or is unowned while its
        namespaces could own it now (registered again while they were being deleted, and
        made again since)."""
        found = [self._kube.get(kind, None, self._name) for kind in _CONFIGURATION_KINDS]
        if any(configuration is None for configuration in found):
            _log.warning("webhook configuration %s is gone; registering it again", self._name)
            self._register(client_config)
        elif not all(_owned(c) for c in found if c is not None) and self._owner_references():
            _log.info("webhook configuration %s is owned by its namespaces again", self._name)
            self._register(client_config)

    def _let_go(self) -> None:
        """On the way out: delete this operator's configurations if they are unowned and no
        namespace they serve exists any longer (or each is being deleted). Registered again
        while its namespaces were being deleted (the garbage collector had taken the owned
        one), a configuration has no owner to go with, and nothing else would ever delete
        it; while one of its namespaces lives, it stays (the module's doc says why)."""
        try:
            if any(self._living_namespace(name) is not None for name in self._owners):
                return
            for kind in _CONFIGURATION_KINDS:
                configuration = self._kube.get(kind, None, self._name)
                if configuration is not None and not _owned(configuration):
                    self._kube.delete(kind, None, self._name)
                    _log.info("deleted %s %s: none of its namespaces exists", kind, self._name)
        except ApiException as exc:  # may not read Namespaces: left as before
            _log.info("webhook configurations left in place: %s", exc.reason)

    async def _keep_registered(self, client_config: Mapping[str, Any]) -> None:
        while True:
            await asyncio.sleep(REGISTRATION_CHECK_SECONDS)
            try:
                await asyncio.to_thread(self._still_registered, client_config)
            except Exception:  # noqa: BLE001 - the next look tries again
                _log.exception("checking the webhook configurations failed")

    def _point_service_here(self) -> None:
        """The webhook Service's EndpointSlice: this replica's address and port."""
        assert self._service is not None
        ip = ipaddress.ip_address(self.host or "")
        name = self._service.name
        self._kube.apply({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": self._service.namespace,
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "pilotboat.dev"}},
            "addressType": "IPv6" if ip.version == 6 else "IPv4",
            "endpoints": [{"addresses": [str(ip)], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
        })  # fmt: skip
        _log.info("webhooks served for %s/%s at %s:%s",
                  self._service.namespace, name, ip, self.port)  # fmt: skip

    def _renew(self) -> None:
        assert self._service is not None and self._ca_secret is not None
        _issue_serving_cert(self._directory, *_read_ca(self._kube, self._ca_secret),
                            self._service)  # fmt: skip
        _log.info("webhook serving certificate renewed")

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(SERVING_CERT_RENEW_SECONDS)
            try:
                await asyncio.to_thread(self._renew)
            except Exception:  # noqa: BLE001 - the current certificate serves on; retry soon
                _log.exception("renewing the webhook serving certificate failed; retrying")
                await asyncio.sleep(60)

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        renewal = asyncio.create_task(self._renew_forever()) if self._service else None
        checking: asyncio.Task[None] | None = None
        try:
            async for client_config in super().__call__(fn):
                await asyncio.to_thread(self._register, client_config)
                if self._owners:  # what the garbage collector may delete, it may bring back
                    if checking is not None:
                        checking.cancel()
                    checking = asyncio.create_task(self._keep_registered(client_config))
                yield client_config
        finally:
            for task in (renewal, checking):
                if task is not None:
                    task.cancel()
            if self._owners and self._service is None:
                self._let_go()  # blocking, briefly: the loop is on its way out

    @staticmethod
    async def _serve(fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        """Kopf's, except that a request nested too deeply for Python's JSON reader is read
        cut at ``MAX_ADMISSION_DEPTH`` rather than answered with an error (which the API
        server would take as no answer: with ``failurePolicy: Ignore``, as admitted).
        Each review is counted by webhook (a path no webhook has counts as ``other``)."""
        started = time.perf_counter()
        path = str(request.match_info.get("id") or "")
        try:
            return await PilotboatWebhookServer._answer(fn, request)
        finally:
            metrics.admission_reviewed(path if path in _WEBHOOKS else "other",
                                       time.perf_counter() - started)

    @staticmethod
    async def _answer(fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        text = await request.text()
        try:
            json.loads(text)
        except RecursionError:
            loop = asyncio.get_running_loop()
            clipped = await loop.run_in_executor(
                _admission_pool, clip_json_depth, text, MAX_ADMISSION_DEPTH
            )
            request = cast(aiohttp.web.Request, _ReadRequest(request, clipped))
        except ValueError:
            pass  # not JSON: Kopf answers 400
        return await kopf.WebhookServer._serve(fn, request)


class _ReadRequest:
    """An aiohttp request whose body was read, and is answered as ``text``."""

    def __init__(self, request: aiohttp.web.Request, text: str) -> None:
        self._request = request
        self._text = text

    async def text(self) -> str:
        return self._text

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


async def _check(
    webhook: str, check: Callable[[], _T], *, fail_closed: bool, warnings: list[str]
) -> _T | None:
    """``check()`` on the admission pool, within ``ADMISSION_TIMEOUT_SECONDS``. Out of
    time: refuse when ``fail_closed`` (a ``failurePolicy: Fail`` webhook), else None with a
    warning (the API server would have admitted without an answer)."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(_admission_pool, check), ADMISSION_TIMEOUT_SECONDS
        )
    except TimeoutError:
        _log.warning("admission check %s took more than %ss", webhook, ADMISSION_TIMEOUT_SECONDS)
        message = f"{webhook}: not checked within {ADMISSION_TIMEOUT_SECONDS:g}s"
        if fail_closed:
            raise kopf.AdmissionError(f"{message}; try again", code=503) from None
        warnings.append(f"{message}; the operator checks it when it reconciles")
        return None


# --- the handlers ------------------------------------------------------------------------------


@kopf.on.mutate(
    GROUP, VERSION, "migrationapprovals", id=APPROVAL_WEBHOOK, operations=["CREATE", "UPDATE"]
)
async def approval_identity(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    warnings: list[str],
    **kwargs: Any,
) -> None:
    operation, old = str(kwargs.get("operation")), kwargs.get("old")

    def check() -> dict[str, Any] | None:
        return admit_approval(runtime().kube, operation, body, old, dict(userinfo))

    try:
        admitted = await _check(APPROVAL_WEBHOOK, check, fail_closed=True, warnings=warnings)
    except ApprovalRefused as refusal:
        raise kopf.AdmissionError(str(refusal), code=403) from None
    for part, values in (admitted or {}).items():
        target = patch.setdefault(part, {})
        if part == "metadata":
            target.setdefault("annotations", {}).update(values["annotations"])
        else:
            target.update(values)


@kopf.on.mutate(
    GROUP, VERSION, "schemamigrations", id=AUTHOR_WEBHOOK, operations=["CREATE", "UPDATE"]
)
async def contract_author_stamp(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    warnings: list[str],
    **kwargs: Any,
) -> None:
    def check() -> dict[str, str] | None:
        return contract_author_patch(str(kwargs.get("operation")), body, kwargs.get("old"),
                                     dict(userinfo))  # fmt: skip

    stamp = await _check(AUTHOR_WEBHOOK, check, fail_closed=False, warnings=warnings)
    if stamp:
        patch.setdefault("metadata", {}).setdefault("annotations", {}).update(stamp)


@kopf.on.validate(
    GROUP, VERSION, "microservices", id=CLAIM_WEBHOOK, operations=["CREATE", "UPDATE"]
)
async def database_claim_check(body: kopf.Body, warnings: list[str], **_: Any) -> None:
    ref = ((body.get("spec") or {}).get("database") or {}).get("ownedDatabase")
    if not ref:
        return
    meta = body["metadata"]

    def check() -> DatabaseClaim:
        return database_claim(runtime().kube, meta["namespace"], meta["name"], str(ref))

    claim = await _check(CLAIM_WEBHOOK, check, fail_closed=False, warnings=warnings)
    if claim is not None and claim.reason == reasons.DATABASE_OWNED_BY_ANOTHER:
        raise kopf.AdmissionError(claim.message, code=403)


def _pod_template_error(error: Mapping[str, Any]) -> bool:
    """A refusal of the pod template's own rules (or of image/env against it)."""
    loc = tuple(error.get("loc") or ())
    return bool(loc and loc[0] == "template") or (
        not loc and str(error.get("msg", "")).startswith(("Value error, image:",
                                                           "Value error, env[")))


@kopf.on.validate(
    GROUP, VERSION, "microservices", id=CHILDREN_WEBHOOK, operations=["CREATE", "UPDATE"]
)
async def rendered_children_check(
    body: kopf.Body, warnings: list[str], operation: str | None = None, dryrun: bool = False,
    **_: Any,
) -> None:
    meta = body["metadata"]
    if operation == "CREATE" and not dryrun:  # the first pass's one read, asked meanwhile
        prefetch.schema_migrations_for(runtime().kube, str(meta["namespace"]),
                                       str(meta.get("uid") or ""))  # fmt: skip

    def check() -> ChildRefusal | None:
        try:
            spec = MicroserviceSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            # The CRD's schema, and the reconciler's SpecValid condition, name the rest; the
            # pod template is free-form JSON to the CRD, so its rules are said here.
            template = [e for e in exc.errors() if _pod_template_error(e)]
            if not template:
                return None
            return ChildRefusal("Microservice", str(meta["name"]), "; ".join(
                ": ".join(error_path(e)) for e in template))
        if spec.workload_ref is not None:
            return None  # the template is the adopted Deployment's, which the API server took
        owner = Owner(str(meta["name"]), str(meta["namespace"]), str(meta.get("uid") or ""))
        return dry_run_children(runtime().kube, owner, spec)

    refusal = await _check(CHILDREN_WEBHOOK, check, fail_closed=False, warnings=warnings)
    if refusal is not None:
        prefetch.take_schema_migrations(str(meta.get("uid") or ""))  # no pass will come
        raise kopf.AdmissionError(refusal.message, code=422)


@kopf.on.validate(GROUP, VERSION, "featureflags", id=FLAG_WEBHOOK, operations=["CREATE", "UPDATE"])
async def feature_flag_check(body: kopf.Body, warnings: list[str], **_: Any) -> None:
    def check() -> list[str]:
        return feature_flag_problems(body.get("spec"))

    problems = await _check(FLAG_WEBHOOK, check, fail_closed=False, warnings=warnings)
    if problems:
        raise kopf.AdmissionError("FeatureFlag refused: " + "; ".join(problems), code=422)


@kopf.on.validate(
    GROUP, VERSION, "schemamigrations", id=LINT_WEBHOOK, operations=["CREATE", "UPDATE"]
)
async def schema_migration_lint(body: kopf.Body, warnings: list[str], **_: Any) -> None:
    def check() -> list[str]:
        return list(lint_warnings(body["metadata"].get("name", ""), body.get("spec")))

    found = await _check(LINT_WEBHOOK, check, fail_closed=False, warnings=warnings)
    warnings.extend(found or [])


async def _refuse_bad_queries(
    webhook: str, kind: str, body: kopf.Body, warnings: list[str]
) -> None:
    def check() -> list[QueryProblem]:
        return spec_query_problems(kind, body.get("spec"))

    problems = await _check(webhook, check, fail_closed=False, warnings=warnings) or []
    warnings.extend(str(p) for p in problems if p.over_limit)
    refused = [str(p) for p in problems if not p.over_limit]
    if refused:
        raise kopf.AdmissionError(f"{kind} refused: " + "; ".join(refused), code=422)


@kopf.on.validate(
    GROUP, VERSION, "microservices", id=QUERIES_WEBHOOK, operations=["CREATE", "UPDATE"]
)
async def microservice_queries_check(body: kopf.Body, warnings: list[str], **_: Any) -> None:
    await _refuse_bad_queries(QUERIES_WEBHOOK, "Microservice", body, warnings)


@kopf.on.validate(
    GROUP, VERSION, "rolloutpolicies", id=POLICY_QUERIES_WEBHOOK, operations=["CREATE", "UPDATE"]
)
async def rollout_policy_queries_check(body: kopf.Body, warnings: list[str], **_: Any) -> None:
    await _refuse_bad_queries(POLICY_QUERIES_WEBHOOK, "RolloutPolicy", body, warnings)


@kopf.on.mutate(
    GROUP, VERSION, "microservices", id=OVERRIDE_WEBHOOK, operations=["CREATE", "UPDATE"]
)
async def breaking_change_override(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    warnings: list[str],
    **kwargs: Any,
) -> None:
    operation, old = str(kwargs.get("operation")), kwargs.get("old")

    def check() -> dict[str, str | None] | None:
        return admit_override(operation, body, old, dict(userinfo))

    try:
        stamp = await _check(OVERRIDE_WEBHOOK, check, fail_closed=True, warnings=warnings)
    except OverrideRefused as refusal:
        raise kopf.AdmissionError(str(refusal), code=403) from None
    if stamp:
        patch.setdefault("metadata", {}).setdefault("annotations", {}).update(stamp)
