"""Installing Pilotboat: the Helm chart lints and renders (alone, and as a subchart with every
platform value set), the committed manifests are what it renders, its PrometheusRule carries
the plain rules file, Helm installs, upgrades and uninstalls a release of it, everything
applies to a real API server, and the operator's RBAC is both enough
(the operator, from its image built here, running as a pod on the real node with the chart's
ServiceAccount, takes a release and a migration through)
and no more than it uses (without any one rule, something the operator does is refused)."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from pilotboat.adapters.kube import Kube
from pilotboat.adapters.leadership import lease_holder
from tests.cluster.test_migrations import (
    approval,
    create_in,
    given_database_with_orders,
    history,
    schema_migration,
    workload,
)
from tests.cluster.test_real_node import POD_CIDR
from tests.core.test_chart_alerts import check_rules, promtool_or_skip
from tests.fixtures.postgres import PostgresServer, running_server
from tests.manifests import microservice
from tests.story import Story

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pilotboat"
KUBECTL = REPO / ".state" / "bin" / "kubectl"
SYSTEM = "pilotboat-system"
OPERATOR_SA = f"system:serviceaccount:{SYSTEM}:pilotboat"
HELM_OWNER = {"meta.helm.sh/release-name": "pilotboat", "meta.helm.sh/release-namespace": SYSTEM}
# A Helm built from source (hack/build-helm.sh) assumes Kubernetes 1.20 when no cluster is
# asked, older than the chart's kubeVersion: offline commands say which version to render for.
KUBE_VERSION = dict(line.split("=", 1) for line in (REPO / "hack" / "versions.env").read_text()
                    .splitlines() if "=" in line and not line.startswith("#"))["KUBERNETES_VERSION"]
OFFLINE = ["--kube-version", KUBE_VERSION]


@pytest.fixture(scope="session")
def helm() -> str:
    out = subprocess.run(
        [str(REPO / "hack" / "build-helm.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def render(helm: str, *values: str, chart: Path = CHART) -> list[dict[str, Any]]:
    args = [a for v in values for a in ("--set", v)]
    out = subprocess.run(
        [helm, "template", "pilotboat", str(chart), "--namespace", SYSTEM, "--skip-crds",
         *OFFLINE, *args],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), *args], input=stdin,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def apply_all(kubeconfig: Path, docs: list[dict[str, Any]]) -> None:
    """`kubectl apply --server-side`, annotated so that Helm may adopt the objects."""
    objs = [copy.deepcopy(d) for d in docs]
    for obj in objs:
        obj["metadata"].setdefault("annotations", {}).update(HELM_OWNER)
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=pilotboat-install",
            "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(objs))


def kinds(docs: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    return sorted((d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs)


def role(docs: list[dict[str, Any]], name: str, kind: str = "ClusterRole") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


# --- the chart and the committed manifests ------------------------------------------------------


def test_the_chart_lints_with_default_and_namespaced_values(helm: str) -> None:
    namespaced = ["--set", "watchNamespaces={shop,shop-*}", "--set", "webhooks.enabled=false",
                  "--set", "rbac.clusterWideForGlobs=true"]
    for extra in ([], namespaced):
        out = subprocess.run([helm, "lint", "--strict", str(CHART), *OFFLINE, *extra],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("bad", ["replicas=-1", "logLevel=loud", "peering.name=Not_A_Name",
                                 "prometheus.url=prometheus:9090", "surprise=1",
                                 "image.digest=latest", "serviceMonitor.interval=soon",
                                 "prometheusRule.for.NoSuchAlert=1h",
                                 "imagePullSecrets[0].secret=regcred"])
def test_values_the_schema_refuses(helm: str, bad: str) -> None:
    out = subprocess.run([helm, "template", "x", str(CHART), *OFFLINE, "--set", bad],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr


def test_values_shape_what_is_rendered(helm: str) -> None:
    docs = render(helm, "replicas=3", "image.tag=1.2.3", "prometheus.url=http://prom:9090",
                  "logLevel=debug", "webhooks.enabled=false", "watchNamespaces={shop}")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "localhost/pilotboat/operator:1.2.3"
    assert {"--no-webhooks", "--verbose", "--namespace=shop", "--peering=pilotboat"} <= set(
        container["args"])
    assert {"name": "PILOTBOAT_PROMETHEUS_URL", "value": "http://prom:9090"} in container["env"]
    rules = role(docs, "pilotboat-operator")["rules"]
    # No webhooks, so no webhook configurations to register (the admission policy that
    # vouches for approvers is still read).
    assert not any(res.endswith("webhookconfigurations") for r in rules for res in r["resources"])
    assert any("kopfpeerings" in r["resources"]
               for r in role(docs, "pilotboat-operator-namespaced")["rules"])
    # Watching named namespaces only, Secrets are readable in those namespaces (and the
    # operator's own) alone, and everything else namespaced in those alone.
    bindings = [d for d in docs if d["metadata"]["name"] == "pilotboat-operator-secrets"
                and d["kind"].endswith("Binding")]
    assert [(b["kind"], b["metadata"].get("namespace")) for b in bindings] == [
        ("RoleBinding", "shop"), ("RoleBinding", SYSTEM)]
    bindings = [d for d in docs if d["kind"].endswith("Binding")
                and d["roleRef"]["name"] == "pilotboat-operator-namespaced"]
    assert [(b["kind"], b["metadata"].get("namespace")) for b in bindings] == [
        ("RoleBinding", "shop")]


def test_globs_need_cluster_wide_bindings_said_out_loud(helm: str) -> None:
    """A RoleBinding cannot name a glob: the chart refuses globs unless the values accept
    that the operator's namespaced rights are bound cluster-wide, and then binds them so."""
    out = subprocess.run([helm, "template", "x", str(CHART), *OFFLINE,
                          "--set", "watchNamespaces={shop,shop-*}"], capture_output=True, text=True)
    assert out.returncode != 0
    assert "RBAC cannot bind a Role by a glob" in out.stderr
    assert "rbac.clusterWideForGlobs=true" in out.stderr
    docs = render(helm, "watchNamespaces={shop,shop-*}", "rbac.clusterWideForGlobs=true")
    bound = sorted(d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding")
    assert bound == ["pilotboat-operator", "pilotboat-operator-namespaced",
                     "pilotboat-operator-secrets"]
    assert not [d for d in docs if d["kind"] == "RoleBinding"
                and d["roleRef"]["name"].startswith("pilotboat-operator")]


def _namespace_scoping(hook: dict[str, Any]) -> set[str]:
    """What limits a webhook to the watched namespaces: its namespaceSelector, its CEL
    condition `watched-namespaces`, or nothing."""
    conditions = {c["name"] for c in hook.get("matchConditions") or []}
    return ({"namespaceSelector"} & hook.keys()) | ({"watched-namespaces"} & conditions)


@pytest.mark.parametrize(("namespaces", "scope"), [
    ([], None),
    (["shop", "shop-b"], "namespaceSelector"),
    (["shop", "!shop-sandbox"], "namespaceSelector"),
    (["!shop-sandbox"], "namespaceSelector"),
    (["shop-*", "!shop-sandbox"], "watched-namespaces"),
    (["shop", "shop-?"], "watched-namespaces"),
], ids=["cluster-wide", "names", "names-and-exclusions", "exclusions-only", "globs",
        "a-name-and-a-glob"])
def test_the_charts_webhook_configurations_are_the_operators(
    helm: str, namespaces: list[str], scope: str | None
) -> None:
    """What the chart registers is, webhook for webhook, what the operator would register
    itself for the same namespaces, called through the webhook Service: one source. Names
    are scoped by a namespaceSelector, globs by the CEL condition `watched-namespaces`."""
    import base64

    from pilotboat.handlers.webhooks import ServiceRef, _configurations

    values = [f"watchNamespaces={{{','.join(namespaces)}}}"] if namespaces else []
    docs = render(helm, *values, *(["rbac.clusterWideForGlobs=true"] if namespaces else []))
    secret = _named(docs, "Secret", "pilotboat-webhook-ca")
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert b"BEGIN CERTIFICATE" in ca
    expected = _configurations("pilotboat-pilotboat", {"caBundle": base64.b64encode(
        ca).decode()}, namespaces, service=ServiceRef(SYSTEM, "pilotboat-webhooks"))
    def conditions_always(hooks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Helm leaves out an empty list; the API server reads no matchConditions as none.
        return [{**h, "matchConditions": h.get("matchConditions") or []} for h in hooks]

    for want in expected:
        got = _named(docs, want["kind"], "pilotboat-pilotboat")
        assert conditions_always(got["webhooks"]) == conditions_always(want["webhooks"]), (
            want["kind"])
        for hook in got["webhooks"]:
            assert _namespace_scoping(hook) == ({scope} if scope else set()), hook["name"]
    assert {d["kind"] for d in expected} == {"MutatingWebhookConfiguration",
                                             "ValidatingWebhookConfiguration"}


def test_with_the_charts_registration_the_operator_may_not_touch_webhooks(helm: str) -> None:
    docs = render(helm)
    for name in ("pilotboat-operator", "pilotboat-operator-namespaced",
                 "pilotboat-operator-secrets"):
        assert not [r for r in role(docs, name)["rules"]
                    if any(res.endswith("webhookconfigurations") for res in r["resources"])]
    args = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--webhook-service={SYSTEM}/pilotboat-webhooks" in args
    assert f"--webhook-ca-secret={SYSTEM}/pilotboat-webhook-ca" in args
    service = _named(docs, "Service", "pilotboat-webhooks")
    assert "selector" not in service["spec"]  # the serving replica writes its EndpointSlice
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": 9443,
                                         "protocol": "TCP"}]
    # The operator's own registration (manifests/) keeps its grant, on its configurations only.
    rules = role(render(helm, "webhooks.registration=operator"), "pilotboat-operator")["rules"]
    (grant,) = [r for r in rules if "validatingwebhookconfigurations" in r["resources"]]
    assert grant["resourceNames"] == ["pilotboat-pilotboat"]
    assert grant["verbs"] == ["create", "patch"]


def test_the_pod_is_locked_down(helm: str) -> None:
    deployment = next(d for d in render(helm) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]


# --- platform values, and the chart as a subchart ---------------------------------------------

DIGEST = "sha256:" + "0123456789abcdef" * 4
# What a platform team sets, as a parent chart's values for its `pilotboat` dependency.
PLATFORM: dict[str, Any] = {
    "image": {"repository": "registry.example.com/pilotboat/operator", "tag": "9.9.9",
              "digest": DIGEST},
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccount": {"create": True, "name": "pilotboat",
                       "annotations": {"iam.example.com/role": "pilotboat-operator"}},
    "priorityClassName": "platform-critical",
    "podLabels": {"team": "platform"},
    "podAnnotations": {"example.com/owner": "platform"},
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"},
                 {"name": "NO_PROXY", "valueFrom": {"configMapKeyRef": {"name": "proxy",
                                                                        "key": "no-proxy"}}}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "node-role.example.com/platform", "operator": "Exists"}]}]}}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform",
                     "effect": "NoSchedule"}],
    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                       "ruleLabels": {"team": "platform"},
                       "for": {"PilotboatMigrationAwaitingApproval": "8h"}},
}


@pytest.fixture
def parent_chart(helm: str, tmp_path: Path) -> Path:
    """A platform's umbrella chart with Pilotboat as a file:// dependency and `global`
    values of its own, its charts/ filled by `helm dependency update`."""
    parent = tmp_path / "platform"
    (parent / "templates").mkdir(parents=True)
    (parent / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "platform", "version": "1.0.0",
        "description": "A platform's umbrella chart", "icon": "https://example.com/icon.png",
        "dependencies": [{"name": "pilotboat", "version": "0.1.0",
                          "repository": f"file://{CHART}"}],
    }))
    (parent / "values.yaml").write_text(yaml.safe_dump({
        "global": {"imageRegistry": "registry.example.com", "environment": "production"},
        "pilotboat": PLATFORM,
    }))
    (parent / "templates" / "environment.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: environment\n"
        "data:\n  name: {{ .Values.global.environment | quote }}\n")
    out = subprocess.run([helm, "dependency", "update", str(parent)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return parent


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_the_chart_as_a_subchart_with_every_platform_value(helm: str, parent_chart: Path,
                                                           tmp_path: Path) -> None:
    out = subprocess.run([helm, "lint", "--strict", str(parent_chart), *OFFLINE],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    docs = render(helm, chart=parent_chart)

    deployment = _one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["image"] == f"registry.example.com/pilotboat/operator@{DIGEST}"  # not 9.9.9
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["priorityClassName"] == "platform-critical"
    assert pod["metadata"]["labels"] == {**selector, "team": "platform"}
    assert pod["metadata"]["annotations"]["example.com/owner"] == "platform"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert all(env in container["env"] for env in PLATFORM["extraEnv"])
    assert spec["affinity"] == PLATFORM["affinity"]
    assert spec["nodeSelector"] == PLATFORM["nodeSelector"]
    assert spec["tolerations"] == PLATFORM["tolerations"]
    assert spec["topologySpreadConstraints"] == [
        {**PLATFORM["topologySpreadConstraints"][0], "labelSelector": {"matchLabels": selector}}]
    assert _one(docs, "ServiceAccount")["metadata"]["annotations"] == {
        "iam.example.com/role": "pilotboat-operator"}

    service = _named(docs, "Service", "pilotboat-metrics")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090,
                                         "targetPort": "metrics"}]
    monitor = _one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics",
                                             "interval": "15s", "honorLabels": True}]

    rule = _one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert all(r["labels"]["team"] == "platform" and r["labels"]["severity"] for r in rules)
    assert {r["alert"]: r["for"] for r in rules}["PilotboatMigrationAwaitingApproval"] == "8h"
    (tmp_path / "rendered.rules.yaml").write_text(yaml.safe_dump(
        {"groups": rule["spec"]["groups"]}))
    check_rules(promtool_or_skip(), tmp_path / "rendered.rules.yaml")
    assert _one(docs, "ConfigMap")["data"]["name"] == "production"  # the parent's own global


def test_the_prometheus_rule_carries_the_plain_rules_file(helm: str, tmp_path: Path) -> None:
    plain = yaml.safe_load((REPO / "examples/prometheus/pilotboat.rules.yaml").read_text())
    rule = _one(render(helm, "prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["spec"]["groups"] == plain["groups"]
    (tmp_path / "rendered.rules.yaml").write_text(yaml.safe_dump(
        {"groups": rule["spec"]["groups"]}))
    check_rules(promtool_or_skip(), tmp_path / "rendered.rules.yaml")


def test_by_default_a_metrics_service_and_no_prometheus_operator_objects(helm: str) -> None:
    docs = render(helm)
    assert _named(docs, "Service", "pilotboat-metrics")
    assert not {"ServiceMonitor", "PrometheusRule"} & {d["kind"] for d in docs}
    assert [d["metadata"]["name"] for d in render(helm, "metrics.service.enabled=false")
            if d["kind"] == "Service"] == ["pilotboat-webhooks"]


def test_a_service_monitor_needs_the_metrics_service(helm: str) -> None:
    out = subprocess.run([helm, "template", "x", str(CHART), *OFFLINE, "--set",
                          "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "serviceMonitor.enabled needs metrics.service.enabled" in out.stderr


def test_a_service_account_the_platform_brings(helm: str) -> None:
    docs = render(helm, "serviceAccount.create=false", "serviceAccount.name=platform-operator")
    assert not any(d["kind"] == "ServiceAccount" for d in docs)
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-operator"
    subjects = [s for d in docs if d["kind"].endswith("Binding") for s in d["subjects"]]
    assert subjects and {s["name"] for s in subjects} == {"platform-operator"}


def test_the_chart_refuses_a_kubernetes_older_than_it_needs(helm: str) -> None:
    out = subprocess.run([helm, "template", "x", str(CHART), "--kube-version", "v1.29.0"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "incompatible with Kubernetes v1.29.0" in out.stderr


def test_the_committed_manifests_are_the_chart_rendered(helm: str) -> None:
    committed = [d for d in yaml.safe_load_all((REPO / "manifests/pilotboat.yaml").read_text())
                 if d]
    rendered = render(helm, "webhooks.registration=operator")  # as hack/render-manifests.sh
    for doc in rendered:
        labels = doc["metadata"]["labels"]
        if "app.kubernetes.io/managed-by" in labels:
            labels["app.kubernetes.io/managed-by"] = "kubectl"
    assert committed == rendered, "run hack/render-manifests.sh"
    chart_crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    sources = sorted(p for p in [*REPO.glob("crds/*.yaml"), *REPO.glob("manifests/crds/*.yaml")])
    assert chart_crds == sorted(p.name for p in sources)
    for source in sources:
        assert (CHART / "crds" / source.name).read_text() == source.read_text(), source.name


def test_the_standalone_people_roles_are_the_charts(helm: str) -> None:
    docs = render(helm)
    standalone = yaml.safe_load((REPO / "manifests/rbac/migration-approver.yaml").read_text())
    assert role(docs, "pilotboat-migration-approver")["rules"] == standalone["rules"]
    standalone = yaml.safe_load((REPO / "manifests/rbac/release-manager.yaml").read_text())
    assert role(docs, "pilotboat-release-manager")["rules"] == standalone["rules"]


def test_kustomize_builds_the_same_objects(helm: str, kubeconfig: Path) -> None:
    out = kubectl(kubeconfig, "kustomize", str(REPO / "manifests"))
    built = [d for d in yaml.safe_load_all(out) if d]
    namespace = yaml.safe_load((REPO / "manifests/namespace.yaml").read_text())
    assert kinds(built) == kinds([namespace, *render(helm, "webhooks.registration=operator")])


# --- on the API server ---------------------------------------------------------------------------


def _wait_crds(kube: Kube, names: list[str]) -> None:
    deadline = time.monotonic() + 60
    for name in names:
        while time.monotonic() < deadline:
            crd = kube.get("CustomResourceDefinition", None, name) or {}
            if any(c["type"] == "Established" and c["status"] == "True"
                   for c in crd.get("status", {}).get("conditions", [])):
                break
            time.sleep(0.2)


def install(kube: Kube, kubeconfig: Path, helm: str, *values: str,
            webhook_configurations: bool = False) -> list[dict[str, Any]]:
    """The CRDs, the namespace and the chart's objects, with no operator pod (replicas 0):
    the tests' own operators share this cluster. The chart's webhook configurations only
    when asked: with no operator pod to answer them, the `Fail` ones would refuse every
    approval in the watched namespaces (every namespace, by default) of this shared cluster."""
    crds = [d for p in sorted((CHART / "crds").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]
    for crd in crds:
        kube.apply(crd)
    _wait_crds(kube, [c["metadata"]["name"] for c in crds])
    kube.apply(yaml.safe_load((REPO / "manifests/namespace.yaml").read_text()))
    docs = render(helm, "replicas=0", *values)
    apply_all(kubeconfig, [d for d in docs if webhook_configurations
                           or not d["kind"].endswith("WebhookConfiguration")])
    return docs


@pytest.fixture(scope="module")
def installed(kube: Kube, kubeconfig: Path, helm: str) -> list[dict[str, Any]]:
    return install(kube, kubeconfig, helm)


def test_helm_accepts_the_applied_objects_as_its_release(
    installed: list[dict[str, Any]], helm: str, kubeconfig: Path
) -> None:
    out = subprocess.run(
        [helm, "upgrade", "--install", "pilotboat", str(CHART), "--namespace", SYSTEM,
         "--kubeconfig", str(kubeconfig), "--dry-run=server", "--set", "replicas=0",
         "--set", "logLevel=debug"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "STATUS: pending-install" in out.stdout
    assert "--verbose" in out.stdout


def test_helm_installs_upgrades_and_uninstalls_a_release(
    installed: list[dict[str, Any]], helm: str, kube: Kube, kubeconfig: Path,
    private_namespace: str,
) -> None:
    """docs/install.md's Helm life cycle on a release of its own beside the session's install:
    no operator pod (replicas 0), and nothing cluster-wide it shares with that install (its
    own ClusterRoles and peering, no people's roles, no webhooks). An upgrade changes the
    Deployment; uninstalling leaves the CRDs and the custom resources, as the doc says."""
    import hashlib

    release = "pb-" + hashlib.sha256(private_namespace.encode()).hexdigest()[:10]

    def run(*args: str) -> str:
        out = subprocess.run([helm, *args, "--namespace", private_namespace,
                              "--kubeconfig", str(kubeconfig)], capture_output=True, text=True)
        assert out.returncode == 0, f"helm {' '.join(args)}: {out.stderr}"
        return out.stdout

    values = ["replicas=0", "webhooks.enabled=false", "peopleRoles.create=false",
              f"peering.name={release}", f"watchNamespaces={{{private_namespace}}}"]
    run("install", release, str(CHART), "--skip-crds", *[a for v in values for a in ("--set", v)])
    deployment = kube.get("Deployment", private_namespace, release)
    assert deployment is not None
    assert "--verbose" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert kube.get("ClusterRole", None, f"{release}-operator") is not None
    Story(kube, private_namespace).given(microservice("stays", version="v1"))

    run("upgrade", release, str(CHART), "--reuse-values", "--set", "logLevel=debug")
    deployment = kube.get("Deployment", private_namespace, release)
    assert deployment is not None
    assert "--verbose" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    (listed,) = json.loads(run("list", "--filter", f"^{release}$", "--output", "json"))
    assert (listed["revision"], listed["status"]) == ("2", "deployed")

    run("uninstall", release, "--wait")
    assert kube.get("Deployment", private_namespace, release) is None
    assert kube.get("ClusterRole", None, f"{release}-operator") is None
    assert kube.get("CustomResourceDefinition", None, "microservices.pilotboat.dev") is not None
    assert kube.get("Microservice", private_namespace, "stays") is not None


def test_helm_keeps_the_webhook_ca_across_upgrades_and_rotates_it_when_asked(
    installed: list[dict[str, Any]], helm: str, kube: Kube, kubeconfig: Path,
    private_namespace: str,
) -> None:
    """The chart's webhook CA (Helm's `lookup` of its Secret): the same after an upgrade; a
    new one when webhooks.ca.generation changes, the previous one still in the caBundle (the
    operator's serving certificate under it stays trusted until renewed), and dropped at the
    change after. A release of its own, no pod; its webhooks match only its namespace."""
    import base64
    import hashlib

    release = "pb-ca-" + hashlib.sha256(private_namespace.encode()).hexdigest()[:8]

    def run(*args: str) -> None:
        out = subprocess.run([helm, *args, "--namespace", private_namespace,
                              "--kubeconfig", str(kubeconfig)], capture_output=True, text=True)
        assert out.returncode == 0, f"helm {' '.join(args)}: {out.stderr}"

    def ca() -> tuple[bytes, bytes, bytes]:
        secret = kube.get("Secret", private_namespace, f"{release}-webhook-ca")
        assert secret is not None
        bundle = kube.get("ValidatingWebhookConfiguration", None, f"pilotboat-{release}")
        assert bundle is not None
        return (base64.b64decode(secret["data"]["ca.crt"]),
                base64.b64decode(secret["data"].get("previous-ca.crt") or ""),
                base64.b64decode(bundle["webhooks"][0]["clientConfig"]["caBundle"]))

    values = ["replicas=0", "peopleRoles.create=false", f"peering.name={release}",
              f"watchNamespaces={{{private_namespace}}}"]
    sets = [a for v in values for a in ("--set", v)]
    run("install", release, str(CHART), "--skip-crds", *sets)
    try:
        first, previous, bundle = ca()
        assert previous == b"" and bundle == first
        run("upgrade", release, str(CHART), "--reuse-values", "--set", "logLevel=debug")
        assert ca() == (first, b"", first), "an upgrade made a new CA"
        run("upgrade", release, str(CHART), "--reuse-values", "--set", "webhooks.ca.generation=2")
        second, previous, bundle = ca()
        assert second != first
        assert previous == first and bundle == second + first
        run("upgrade", release, str(CHART), "--reuse-values", "--set", "webhooks.ca.generation=3")
        third, previous, bundle = ca()
        assert previous == second and bundle == third + second
    finally:
        run("uninstall", release, "--wait")


# What the operator does through the API, read from operator/pilotboat (every `kube.*` call,
# the Kopf watches, Kopf's own peering and event posting, the webhook registration):
# (verb, group, resource[/subresource], name or None, where). A server-side apply is a
# `patch`, and a `create` too when it makes the object.
@dataclass(frozen=True)
class Operation:
    verb: str
    group: str
    resource: str
    name: str | None = None
    where: str = ""
    namespace: str = "default"

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}{'/' + self.name if self.name else ''} ({self.where})"


def _ops(verbs: str, group: str, resource: str, where: str, name: str | None = None,
         namespace: str = "default") -> list[Operation]:
    return [Operation(v, group, resource, name, where, namespace) for v in verbs.split()]


PB = "pilotboat.dev"
OPERATIONS: list[Operation] = [
    *_ops("get list watch", PB, "microservices", "Kopf watch; microservice._reconcile_guarded get; "
          "on_owned_database_for_its_claimants list"),
    *_ops("get list watch", PB, "owneddatabases", "Kopf watch; databases.database_claim get"),
    *_ops("get list watch", PB, "schemamigrations", "Kopf watch; migrations_blocking list"),
    *_ops("get list watch", PB, "migrationapprovals", "Kopf watch; approvals_for list"),
    *_ops("get list watch", PB, "featureflags", "Kopf watch; flags: get by name, list"),
    *[Operation("patch", PB, f"{r}/status", None, "Reconcile.write_status")
      for r in ("microservices", "owneddatabases", "schemamigrations", "migrationapprovals",
                "featureflags")],
    Operation("patch", PB, "owneddatabases", None, "databases._set_finalizer"),
    Operation("get", PB, "rolloutpolicies", None, "microservice._strategy"),
    *_ops("get list watch create patch delete", "apps", "deployments",
          "Kopf watch; microservice: apply, _scale, canary delete; adoption: get, scale and "
          "hand back an adopted Deployment (merge patch), the hand-back finalizer"),
    *_ops("list watch", "apps", "replicasets", "Kopf watch; migrations.observe_running"),
    *_ops("list watch", "", "pods", "Kopf watch; migrations.observe_running"),
    *_ops("get create patch", "", "services", "microservice._apply_services (server-side apply)"),
    *_ops("list watch", "", "services", "Kopf watch: microservice.on_child_service_event"),
    *_ops("get create patch", "", "secrets", "databases: admin Secret, credentials Secret"),
    *_ops("get create patch", "", "secrets", "databases: admin and owner Secrets, in its own "
          "namespace; webhooks._read_ca: the chart's webhook CA", namespace=SYSTEM),
    *_ops("get create patch delete", "", "configmaps", "flags.sync_service_flags: the flag file"),
    Operation("create", "", "events", None, "Reconcile.event, migrations._event_once, Kopf"),
    *_ops("get patch", "gateway.networking.k8s.io", "httproutes", "traffic.route"),
    *[Operation(verb, "discovery.k8s.io", "endpointslices", name,
                "webhooks.PilotboatWebhookServer._point_service_here (apply)", SYSTEM)
      for verb, name in (("create", None), ("patch", "pilotboat-webhooks"))],
    *[Operation("get", "admissionregistration.k8s.io", resource, policy,
                "approvals.identity_enforced_since; the command-identity policy")
      for resource in ("validatingadmissionpolicies", "validatingadmissionpolicybindings")
      for policy in ("pilotboat-approver-identity", "pilotboat-command-identity")],
    *_ops("get list watch", PB, "databaseservers", "Kopf watch; databases: the server an "
          "OwnedDatabase names"),
    *_ops("list watch", "apiextensions.k8s.io", "customresourcedefinitions",
          "Kopf resource observer"),
    *_ops("list watch", "kopf.dev", "clusterkopfpeerings", "Kopf peering"),
    Operation("patch", "kopf.dev", "clusterkopfpeerings", "pilotboat", "Kopf peering keep-alive"),
    *_ops("get update", "coordination.k8s.io", "leases", "adapters.leadership: renew",
          "pilotboat-pilotboat", SYSTEM),
    Operation("create", "coordination.k8s.io", "leases", None,
              "adapters.leadership: the first replica makes the Lease", SYSTEM),
]

# What it must never be able to do.
FORBIDDEN: list[Operation] = [
    Operation("delete", "", "namespaces"),
    Operation("list", "", "secrets"),
    Operation("watch", "", "secrets"),
    Operation("delete", "", "secrets"),
    Operation("patch", PB, "microservices", None, "a user's spec is Git's"),
    Operation("update", PB, "microservices"),
    Operation("patch", PB, "schemamigrations"),
    Operation("create", PB, "migrationapprovals", None, "only people approve"),
    Operation("create", "", "pods"),
    Operation("list", "", "configmaps"),
    Operation("patch", PB, "featureflags", None, "a user's spec is Git's"),
    Operation("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
    Operation("escalate", "rbac.authorization.k8s.io", "clusterroles"),
    Operation("impersonate", "", "users"),
    Operation("create", "", "serviceaccounts/token"),
    Operation("create", "apiextensions.k8s.io", "customresourcedefinitions"),
    Operation("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations",
              "someone-elses"),
    Operation("delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations",
              "pilotboat-pilotboat"),
    # The chart registers the webhooks: the operator may not change where they call, what
    # they match, or what happens when it does not answer.
    *[Operation(verb, "admissionregistration.k8s.io", f"{kind}webhookconfigurations",
                "pilotboat-pilotboat", "the chart's")
      for verb in ("create", "patch", "update") for kind in ("mutating", "validating")],
    Operation("patch", "discovery.k8s.io", "endpointslices", "kubernetes", "", "default"),
    Operation("delete", "", "secrets", None, "", SYSTEM),
    Operation("patch", "kopf.dev", "clusterkopfpeerings", "another-operator"),
    Operation("update", "coordination.k8s.io", "leases", "kube-scheduler", "", "kube-system"),
    Operation("update", "coordination.k8s.io", "leases", "another-operator", "", SYSTEM),
    Operation("create", "coordination.k8s.io", "leases", None, "", "default"),
]


def allowed(api: kubernetes.client.ApiClient, user: str, op: Operation) -> bool:
    resource, _, subresource = op.resource.partition("/")
    attributes: dict[str, Any] = {"verb": op.verb, "group": op.group, "resource": resource,
                                  "subresource": subresource, "name": op.name or ""}
    if resource not in {"namespaces", "customresourcedefinitions", "clusterkopfpeerings",
                        "databaseservers", "validatingadmissionpolicies",
                        "validatingadmissionpolicybindings",
                        "mutatingwebhookconfigurations", "validatingwebhookconfigurations",
                        "clusterroles", "clusterrolebindings", "users"}:
        attributes["namespace"] = op.namespace
    review = kubernetes.client.AuthorizationV1Api(api).create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                 "resourceAttributes": attributes},
    })
    return bool(review.status.allowed)


@pytest.mark.parametrize("op", OPERATIONS, ids=str)
def test_the_operator_may_do_what_it_does(
    installed: list[dict[str, Any]], kube_api: kubernetes.client.ApiClient, op: Operation
) -> None:
    assert allowed(kube_api, OPERATOR_SA, op), f"the operator may not {op}"


@pytest.mark.parametrize("op", FORBIDDEN, ids=str)
def test_the_operator_may_not(
    installed: list[dict[str, Any]], kube_api: kubernetes.client.ApiClient, op: Operation
) -> None:
    assert not allowed(kube_api, OPERATOR_SA, op), f"the operator may {op}"


# --- a namespaced install, on a shared cluster: SubjectAccessReviews for its ServiceAccount -----

SHARED_RELEASE = "pb-shared"
WATCHED = "pb-shared-watched"
SHARED_SA = f"system:serviceaccount:{SYSTEM}:{SHARED_RELEASE}"


@pytest.fixture(scope="module")
def namespaced_install(kube: Kube, kube_api: kubernetes.client.ApiClient, kubeconfig: Path,
                       helm: str) -> Iterator[list[dict[str, Any]]]:
    """The chart's RBAC for a release of its own (`pb-shared`, ServiceAccount `pb-shared`)
    watching one namespace, with the chart's webhook registration, applied to the API
    server: no pod, no webhook configuration (nothing would answer it), no people's roles."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": WATCHED, "labels": {"pilotboat.dev/test": "true"}}})
    out = subprocess.run(
        [helm, "template", SHARED_RELEASE, str(CHART), "--namespace", SYSTEM, "--skip-crds",
         *OFFLINE, "--set", "replicas=0", "--set", f"watchNamespaces={{{WATCHED}}}",
         "--set", f"serviceAccount.name={SHARED_RELEASE}", "--set", "peopleRoles.create=false",
         "--set", f"peering.name={SHARED_RELEASE}", "--set", "metrics.service.enabled=false",
         "--set", "podDisruptionBudget.enabled=false"],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d
            and d["kind"] not in ("Deployment", "KopfPeering")
            and not d["kind"].endswith("WebhookConfiguration")]
    kube.apply(yaml.safe_load((REPO / "manifests/namespace.yaml").read_text()))
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=pilotboat-install",
            "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(docs))
    probe = Operation("create", "", "secrets", None, "", WATCHED)
    deadline = time.monotonic() + 10
    while not allowed(kube_api, SHARED_SA, probe):  # the authorizer has seen the bindings
        assert time.monotonic() < deadline, "the namespaced install's RBAC never took effect"
        time.sleep(0.1)
    yield docs
    kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
            stdin=yaml.safe_dump_all(docs))
    kube.delete("Namespace", None, WATCHED)


# (operation, why it must be refused): each a test of its own, failing with its reason.
SHARED_DENIED: list[tuple[Operation, str]] = [
    (Operation("create", "", "secrets", None, "", "kube-system"),
     "create a Secret in kube-system"),
    (Operation("create", "", "secrets", None, "", "default"),
     "create a Secret in a namespace it does not watch"),
    (Operation("get", "", "secrets", "some-token", "", "kube-system"),
     "read a Secret in kube-system"),
    (Operation("create", "", "serviceaccounts/token", "default", "", WATCHED),
     "mint a token for a ServiceAccount of a watched namespace"),
    (Operation("create", "", "serviceaccounts/token", SHARED_RELEASE, "", SYSTEM),
     "mint a token for its own ServiceAccount"),
    (Operation("create", "apps", "deployments", None, "", "default"),
     "create a Deployment in a namespace it does not watch"),
    (Operation("patch", "apps", "deployments", "coredns", "", "kube-system"),
     "patch a Deployment in kube-system"),
    (Operation("patch", "", "services", "kubernetes", "", "default"),
     "patch a Service in a namespace it does not watch"),
    (Operation("patch", "", "configmaps", "kube-proxy", "", "kube-system"),
     "patch a ConfigMap in kube-system"),
    (Operation("list", "", "pods", None, "", "kube-system"),
     "list pods in a namespace it does not watch"),
    (Operation("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations",
               f"pilotboat-{SHARED_RELEASE}"), "patch its own ValidatingWebhookConfiguration"),
    (Operation("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations",
               f"pilotboat-{SHARED_RELEASE}"), "patch its own MutatingWebhookConfiguration"),
    (Operation("create", "admissionregistration.k8s.io", "validatingwebhookconfigurations"),
     "create a ValidatingWebhookConfiguration"),
    (Operation("delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations",
               f"pilotboat-{SHARED_RELEASE}"), "delete its own MutatingWebhookConfiguration"),
    (Operation("update", "", "secrets", f"{SHARED_RELEASE}-webhook-ca", "", SYSTEM),
     "replace its webhook CA Secret (update)"),
    (Operation("delete", "", "secrets", f"{SHARED_RELEASE}-webhook-ca", "", SYSTEM),
     "delete its webhook CA Secret"),
    (Operation("list", "", "secrets", None, "", WATCHED), "list Secrets in a watched namespace"),
    (Operation("patch", "discovery.k8s.io", "endpointslices", "kubernetes", "", "default"),
     "redirect another Service"),
]

SHARED_ALLOWED: list[tuple[Operation, str]] = [
    *[(Operation(v, "", "secrets", None, "", WATCHED), f"{v} the owner's credentials Secret in "
       "a watched namespace") for v in ("get", "create", "patch")],
    *[(Operation(v, "", "secrets", None, "", SYSTEM), f"{v} admin and owner Secrets in its own "
       "namespace") for v in ("get", "create", "patch")],
    (Operation("get", "", "secrets", f"{SHARED_RELEASE}-webhook-ca", "", SYSTEM),
     "read the chart's webhook CA"),
    *[(Operation(v, "apps", "deployments", None, "", WATCHED), f"{v} Deployments in a watched "
       "namespace") for v in ("get", "list", "watch", "create", "patch", "delete")],
    *[(Operation(v, "", "services", None, "", WATCHED), f"{v} Services in a watched namespace")
      for v in ("get", "list", "watch", "create", "patch")],
    *[(Operation(v, "", "configmaps", None, "", WATCHED), f"{v} flag ConfigMaps in a watched "
       "namespace") for v in ("get", "create", "patch", "delete")],
    (Operation("create", "", "events", None, "", WATCHED), "post Events in a watched namespace"),
    *[(Operation(v, "", "pods", None, "", WATCHED), f"{v} pods in a watched namespace")
      for v in ("list", "watch")],
    *[(Operation(v, "gateway.networking.k8s.io", "httproutes", None, "", WATCHED),
       f"{v} HTTPRoutes in a watched namespace") for v in ("get", "patch")],
    *[(Operation(v, PB, kind, None, "", WATCHED), f"{v} {kind} in a watched namespace")
      for kind in ("microservices", "owneddatabases", "schemamigrations", "migrationapprovals",
                   "featureflags") for v in ("get", "list", "watch")],
    (Operation("patch", PB, "microservices/status", None, "", WATCHED),
     "report a Microservice's status"),
    *[(Operation(v, PB, "databaseservers"), f"{v} DatabaseServers (cluster-scoped)")
      for v in ("get", "list", "watch")],
    *[(Operation(v, "", "namespaces"), f"{v} namespaces (Kopf's namespace patterns)")
      for v in ("list", "watch")],
    *[(Operation(v, "apiextensions.k8s.io", "customresourcedefinitions"), f"{v} CRDs")
      for v in ("list", "watch")],
    (Operation("get", "admissionregistration.k8s.io", "validatingadmissionpolicies",
               "pilotboat-command-identity"), "read the command-identity policy"),
    (Operation("patch", "discovery.k8s.io", "endpointslices", f"{SHARED_RELEASE}-webhooks", "",
               SYSTEM), "point its webhook Service at the serving replica"),
    (Operation("patch", "kopf.dev", "kopfpeerings", SHARED_RELEASE, "", WATCHED),
     "keep its peering alive in a watched namespace"),
]


@pytest.mark.parametrize(("op", "what"), SHARED_DENIED, ids=[w for _, w in SHARED_DENIED])
def test_a_namespaced_operator_may_not(
    namespaced_install: list[dict[str, Any]], kube_api: kubernetes.client.ApiClient,
    op: Operation, what: str,
) -> None:
    assert not allowed(kube_api, SHARED_SA, op), (
        f"the operator of a namespaced install may {what}: SubjectAccessReview allowed {op} "
        f"in {op.namespace}")


@pytest.mark.parametrize(("op", "what"), SHARED_ALLOWED, ids=[w for _, w in SHARED_ALLOWED])
def test_a_namespaced_operator_may_do_its_work(
    namespaced_install: list[dict[str, Any]], kube_api: kubernetes.client.ApiClient,
    op: Operation, what: str,
) -> None:
    assert allowed(kube_api, SHARED_SA, op), (
        f"the operator of a namespaced install may not {what}: SubjectAccessReview refused "
        f"{op} in {op.namespace}")


def test_a_namespaced_install_binds_nothing_namespaced_cluster_wide(
    namespaced_install: list[dict[str, Any]],
) -> None:
    """Only cluster-scoped kinds are granted by ClusterRoleBinding."""
    bound = {d["roleRef"]["name"] for d in namespaced_install if d["kind"] == "ClusterRoleBinding"}
    assert bound == {f"{SHARED_RELEASE}-operator"}
    cluster = role(namespaced_install, f"{SHARED_RELEASE}-operator")["rules"]
    resources = {r for rule in cluster for r in rule["resources"]}
    assert resources == {"databaseservers", "validatingadmissionpolicies",
                         "validatingadmissionpolicybindings", "customresourcedefinitions",
                         "namespaces"}, resources


def _grants(rules: list[dict[str, Any]]) -> list[tuple[int, str, str, str, str | None]]:
    """Every (rule index, verb, group, resource, name) a list of rules grants."""
    return [
        (i, verb, group, resource, name)
        for i, rule in enumerate(rules)
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for name in (rule.get("resourceNames") or [None])
    ]


def _without(rules: list[dict[str, Any]], grant: tuple[int, str, str, str, str | None]
             ) -> list[dict[str, Any]]:
    """The rules with one (verb, group, resource, name) of one rule taken out."""
    i, verb, group, resource, name = grant
    out = [r for j, r in enumerate(rules) if j != i]
    rule = rules[i]
    for v, g, r, n in [(v, g, r, n) for (j, v, g, r, n) in _grants([rule])]:
        if (v, g, r, n) != (verb, group, resource, name):
            out.append({"apiGroups": [g], "resources": [r], "verbs": [v],
                        **({"resourceNames": [n]} if n else {})})
    return out


def test_every_rule_is_needed(
    installed: list[dict[str, Any]], kube: Kube, kube_api: kubernetes.client.ApiClient
) -> None:
    """Take out any one grant (a verb on a resource of one rule) and an operation the
    operator performs is refused: for each grant, a ClusterRole without it is bound to a
    probe user, and the API server's own RBAC says no to that operation."""
    rules = [*role(installed, "pilotboat-operator")["rules"],
             *role(installed, "pilotboat-operator-namespaced")["rules"],
             *role(installed, "pilotboat-operator-secrets")["rules"],
             *role(installed, "pilotboat-leader-election", "Role")["rules"],
             *role(installed, "pilotboat-webhook-endpoint", "Role")["rules"]]
    grants = _grants(rules)
    uncovered = [g for g in grants
                 if not any((o.verb, o.group, o.resource, o.name) == g[1:] for o in OPERATIONS)]
    assert not uncovered, f"grants that no operation of the operator uses: {uncovered}"

    probes: list[tuple[str, tuple[int, str, str, str, str | None]]] = []
    for n, grant in enumerate(grants):
        name = f"pilotboat-rbac-probe-{n}"
        kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": name, "labels": {"pilotboat.dev/test": "true"}},
                    "rules": _without(rules, grant)})
        kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": name, "labels": {"pilotboat.dev/test": "true"}},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": name},
                    "subjects": [{"kind": "User", "name": name,
                                  "apiGroup": "rbac.authorization.k8s.io"}]})
        probes.append((name, grant))
    try:
        for name, grant in probes:
            ops = [o for o in OPERATIONS if (o.verb, o.group, o.resource, o.name) == grant[1:]]
            control = next(o for o in OPERATIONS if o not in ops)
            deadline = time.monotonic() + 10
            while not allowed(kube_api, name, control):  # the authorizer has seen the binding
                assert time.monotonic() < deadline, f"{name} never took effect"
                time.sleep(0.1)
            refused = [o for o in ops if not allowed(kube_api, name, o)]
            assert refused, f"without {grant[1:]} the operator could still {ops[0]}"
    finally:
        for name, _ in probes:
            kube.delete("ClusterRoleBinding", None, name)
            kube.delete("ClusterRole", None, name)


# --- the operator in-cluster: its image, as a pod on the real node, as its ServiceAccount ------


def operator_image_tag() -> str:
    """The tag of the operator image built from this checkout (hack/images.sh imports it)."""
    out = subprocess.run([str(REPO / "images" / "operator" / "build.sh"), "ref"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def pod_reachable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server on the pod network's gateway (the real node's bridge, hack/node.sh):
    the operator's pod and this host both reach it there."""
    with running_server(host=str(POD_CIDR[1])) as server:
        yield server


@dataclass
class OperatorPods:
    core: kubernetes.client.CoreV1Api
    namespace: str
    selector: str
    lease: str

    def ready(self, count: int) -> list[Any]:
        """The operator's pods once `count` of them, and only those, are ready (within 5
        minutes: a busy 2-core node starts two pods of a Python image with scipy slowly)."""
        deadline = time.monotonic() + 300
        while True:
            pods = self.core.list_namespaced_pod(self.namespace,
                                                 label_selector=self.selector).items
            ready = [p for p in pods if not p.metadata.deletion_timestamp and any(
                c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
            if len(ready) == count == len(pods):
                return sorted(ready, key=lambda p: p.metadata.name)
            assert time.monotonic() < deadline, [
                (p.metadata.name, p.status.phase, p.status.container_statuses) for p in pods]
            time.sleep(0.5)

    def leader(self, other_than: str | None = None) -> str:
        """The pod holding the Lease, once a running pod other than `other_than` does (a
        Lease left by the pods of an earlier install is taken over only once it has not been
        renewed for its duration)."""
        deadline = time.monotonic() + 60
        while True:
            holder = lease_holder(self.core.api_client, self.namespace, self.lease)
            live = {p.metadata.name for p in self.core.list_namespaced_pod(
                self.namespace, label_selector=self.selector).items
                if not p.metadata.deletion_timestamp}
            if holder in live and holder != other_than:
                return str(holder)
            assert time.monotonic() < deadline, f"no running pod holds {self.lease}: {holder}"
            time.sleep(0.5)

    def log(self, pod: str) -> str:
        return str(self.core.read_namespaced_pod_log(pod, self.namespace, container="operator"))


@pytest.fixture
def operator_in_cluster(
    kube: Kube, kube_api: kubernetes.client.ApiClient, helm: str, kubeconfig: Path,
    private_namespace: str,
) -> Iterator[OperatorPods]:
    """The chart installed as a user would, watching one namespace: two operator pods (the
    default), from the image built here, on the real node, as the chart's ServiceAccount with
    the chart's RBAC."""
    install(kube, kubeconfig, helm, f"watchNamespaces={{{private_namespace}}}", "replicas=2",
            f"image.tag={operator_image_tag()}", "image.pullPolicy=Never",
            webhook_configurations=True)
    pods = OperatorPods(kubernetes.client.CoreV1Api(kube_api), SYSTEM,
                        "app.kubernetes.io/name=pilotboat", "pilotboat-pilotboat")
    try:
        yield pods
    finally:  # the pods stop with the RBAC they ran with; then the default, cluster-wide one
        install(kube, kubeconfig, helm, f"watchNamespaces={{{private_namespace}}}")
        deadline = time.monotonic() + 60
        while pods.core.list_namespaced_pod(SYSTEM, label_selector=pods.selector).items:
            assert time.monotonic() < deadline, "the operator's pods did not stop"
            time.sleep(0.5)
        install(kube, kubeconfig, helm)
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            kube.delete(kind, None, "pilotboat-pilotboat")


def _acted(log: str) -> list[str]:
    """The lines of an operator's log that say it handled an object."""
    return [line for line in log.splitlines() if "Handler '" in line]


def _refusals(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if any(r in line for r in ("Forbidden", "forbidden", "Not enough permissions",
                                       '"status": 403'))]


def test_the_operator_in_cluster_releases_and_migrates_with_one_replica_acting(
    operator_in_cluster: OperatorPods, kube: Kube, private_namespace: str,
    pod_reachable_postgres: PostgresServer,
) -> None:
    pods = operator_in_cluster
    both = pods.ready(2)
    for pod in both:
        assert pod.spec.node_name == "pilotboat-real"
        assert pod.spec.service_account_name == "pilotboat"
        (container,) = pod.spec.containers
        assert container.security_context.read_only_root_filesystem is True
        assert pod.spec.security_context.run_as_user == 65534
    first = pods.leader()
    (standby,) = [p.metadata.name for p in both if p.metadata.name != first]

    story = Story(kube, private_namespace)
    steps = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]

    def healthy_at(version: str):  # type: ignore[no-untyped-def]
        return lambda o: ((o or {}).get("status") or {}).get("phase") == "Healthy" and (
            o or {})["status"].get("stableVersion") == version

    story.given(microservice("web", version="v1", rollout={"canary": {"steps": steps}}))
    story.wait_for("Microservice", "web", healthy_at("v1"), timeout=90, what="Healthy at v1")
    story.apply(microservice("web", version="v2", rollout={"canary": {"steps": steps}}))
    story.wait_for("Microservice", "web", lambda o: ((o or {}).get("status") or {}).get(
        "canaryWeight") == 50, timeout=60, what="at 50%")
    story.wait_for("Microservice", "web", healthy_at("v2"), timeout=90, what="Healthy at v2")

    # One replica acted; the other stood by, answering its probes.
    assert _acted(pods.log(first)), pods.log(first)[-3000:]
    assert not _acted(pods.log(standby)), _acted(pods.log(standby))[:5]
    assert "waiting for the lease" in pods.log(standby)

    # The leader stops (as in a node drain) and hands the Lease over: the standby, or the
    # pod replacing the leader, whichever asks first, takes over.
    pods.core.delete_namespaced_pod(first, SYSTEM)
    second = pods.leader(other_than=first)

    # The migration, with the new leader: its pod reaches PostgreSQL, and the API server
    # reaches its webhook, which stamps the approval with the identity it saw.
    dsn = given_database_with_orders(story, pod_reachable_postgres)
    story.given(workload("v2", 1))
    story.given(schema_migration(contract={"sql": "ALTER TABLE orders DROP COLUMN "
                                                  "customer_name;", "soak": "1s"}))
    story.wait_condition("SchemaMigration", "customer-column", "ExpandApplied", timeout=60)
    created = create_in(kube, private_namespace, approval("ok"))
    assert created["metadata"]["annotations"]["pilotboat.dev/approver"]
    # It answered through the chart's Service, pointed at the new leader, under the chart's
    # CA; the webhook configurations are the chart's alone (the operator may not write them).
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        configuration = kube.get(kind, None, "pilotboat-pilotboat")
        assert configuration is not None, kind
        assert all(h["clientConfig"]["service"]["name"] == "pilotboat-webhooks"
                   for h in configuration["webhooks"]), kind
        managers = {m["manager"] for m in configuration["metadata"]["managedFields"]}
        assert managers == {"pilotboat-install"}, managers
    endpoints = kube.get("EndpointSlice", SYSTEM, "pilotboat-webhooks")
    assert endpoints is not None
    leader_ip = pods.core.read_namespaced_pod(second, SYSTEM).status.pod_ip
    assert endpoints["endpoints"][0]["addresses"] == [leader_ip]
    story.wait_for("SchemaMigration", "customer-column",
                   lambda o: ((o or {}).get("status") or {}).get("phase") == "Contracted",
                   timeout=90, what="Contracted")
    assert [p for p, _ in history(dsn)] == ["expand", "backfill", "contract"]

    log = pods.log(second)
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(r.get("reason") == "ContractApplied" and r.get("correlation_id")
               for r in records), log[-3000:]
    assert not _refusals(log), _refusals(log)[:5]
    replacement = [p for p in pods.ready(2) if p.metadata.name != second]
    assert pods.leader() == second
    for pod in pods.ready(2):
        assert pod.status.container_statuses[0].restart_count == 0, pod.metadata.name
    assert not _acted(pods.log(replacement[0].metadata.name))


def _shell_commands(markdown: str) -> list[list[str]]:
    """Every command of the ```sh blocks of a Markdown text, one argv each (continuation
    lines joined, comments dropped)."""
    commands = []
    for block in markdown.split("```sh")[1:]:
        body = block[:block.index("```")].replace("\\\n", " ")
        commands += [line.split("#")[0].split() for line in body.splitlines()
                     if line.split("#")[0].strip()]
    return commands


def _readme_commands() -> list[list[str]]:
    """The kubectl and Helm commands of the README's install section, one argv each."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Install on a real cluster"):]
    section = section[:section.index("```", section.index("```sh") + 5) + 3]
    return [c for c in _shell_commands(section)
            if c[0] in ("kubectl", "helm") and not any("argocd" in a for a in c)]


# Commands of docs/install.md not run by the doc test (by their first words), each with why;
# the doc names each too.
NOT_RUN_HERE = {
    "skopeo": "pushes to the reader's registry; there is no registry here",
    "helm uninstall": "would remove the session's installation; "
                      "test_helm_installs_upgrades_and_uninstalls_a_release runs it on its own",
}


def _not_run_here(argv: list[str]) -> str | None:
    return next((prefix for prefix in NOT_RUN_HERE
                 if argv[:len(prefix.split())] == prefix.split()), None)


def _run_install_command(argv: list[str], helm: str, kubeconfig: Path) -> None:
    """Run as written, against the embedded cluster; what would start an operator pod or
    delete something in this shared cluster runs as a server-side dry run."""
    tool = str(KUBECTL) if argv[0] == "kubectl" else helm
    dry = "-k" in argv or argv[0] == "helm" or argv[1] == "delete"
    extra = ["--dry-run=server"] if dry else []
    if argv[:2] == ["helm", "upgrade"] and "--install" not in argv:
        # No release of that name exists here (its objects were applied, not installed):
        # Helm's dry run takes it as new.
        extra.append("--install")
    if "-k" in argv:  # the objects here were installed the Helm way, labelled so
        extra.append("--force-conflicts")
    if argv[1] == "apply" and any("manifests/crds" in a or "pilotboat/crds" in a for a in argv):
        # The session applied the admission policies already, as another field manager;
        # their matchConstraints is one atomic value the API server defaults, so a
        # second manager conflicts where the first one's is kept.
        extra.append("--force-conflicts")
    out = subprocess.run([tool, *argv[1:], "--kubeconfig", str(kubeconfig), *extra],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, f"{' '.join(argv)}: {out.stderr}"


def test_the_readme_install_commands_work(
    installed: list[dict[str, Any]], helm: str, kubeconfig: Path
) -> None:
    commands = _readme_commands()
    assert [c[0] for c in commands] == ["kubectl", "kubectl", "helm"]
    for argv in commands:
        _run_install_command(argv, helm, kubeconfig)


def test_every_command_of_the_install_doc_runs(
    installed: list[dict[str, Any]], helm: str, kubeconfig: Path
) -> None:
    """docs/install.md's commands, each run as written (kubectl and Helm as above; the image
    build as is), except those NOT_RUN_HERE, which the doc must name as not tested."""
    doc = (REPO / "docs" / "install.md").read_text()
    commands = _shell_commands(doc)
    assert {c[0] for c in commands} == {"kubectl", "helm", "images/operator/build.sh", "skopeo"}
    for argv in commands:
        skipped = _not_run_here(argv)
        if skipped is not None:
            assert f"`{skipped}`" in doc, f"docs/install.md must say why `{skipped}` is not run"
            continue
        if argv[0].startswith("images/"):
            out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
            assert out.returncode == 0, f"{' '.join(argv)}: {out.stderr[-2000:]}"
            continue
        _run_install_command(argv, helm, kubeconfig)
