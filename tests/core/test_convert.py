"""`pilotboat convert`: Argo Rollouts manifests (tests/core/convert_cases) become Microservices
whose fields are exactly the ones asserted, and every field that does not carry over is
named by its path; the command prints YAML, one line per dropped field, and exits 0, 1 or 2."""

from __future__ import annotations

import doctest
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pilotboat.api import MicroserviceSpec, RolloutPolicySpec
from pilotboat.cli.lint import lint_document
from pilotboat.cli.main import main as cli
from pilotboat.core import convert as convert_module
from pilotboat.core.convert import (
    Conversion,
    ConversionError,
    SourceDocument,
    convert,
    signal_for,
    threshold,
)

pytestmark = pytest.mark.core

CASES = Path(__file__).parent / "convert_cases"
ALL_CASES = sorted(p.name for p in CASES.glob("*.yaml"))


def converted(*names: str, policies: bool = False) -> Conversion:
    documents = [
        SourceDocument(name, doc)
        for name in names
        for doc in yaml.safe_load_all((CASES / name).read_text())
        if doc is not None
    ]
    return convert(documents, policies=policies)


def dropped(conversion: Conversion) -> list[str]:
    """``object: path`` of every field not carried over, in the order reported."""
    return [f"{d.object}: {d.path}" if d.path else d.object for d in conversion.dropped]


def spec_of(conversion: Conversion, name: str) -> dict[str, Any]:
    found = [m for m in conversion.manifests if m["metadata"]["name"] == name]
    assert len(found) == 1, conversion.manifests
    return found[0]["spec"]


def canary(steps: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    """``spec.rollout`` of a Microservice: the steps, more fields, then the routing."""
    routing = more.pop("routing", {"replicaRatio": {}})
    return {"canary": {"steps": steps, **more, "trafficRouting": routing}}


# --- the cases ----------------------------------------------------------------------------


def test_a_plain_canary_carries_over_whole() -> None:
    result = converted("01-basic.yaml")
    assert result.dropped == ()
    (manifest,) = result.manifests
    assert manifest["apiVersion"] == "pilotboat.dev/v1alpha1"
    assert manifest["kind"] == "Microservice"
    assert manifest["metadata"] == {"name": "orders", "namespace": "shop",
                                    "labels": {"team": "checkout"}}
    assert manifest["spec"] == {
        "image": "registry.example.com/shop/orders:2.4.1",
        "imagePullPolicy": "IfNotPresent",
        "version": "2.4.1",
        "replicas": 4,
        "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
        "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "EMPTY", "value": ""}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"memory": "256Mi"}},
        "readinessProbe": {"path": "/ready", "port": "http", "periodSeconds": 5},
        "nodeSelector": {"pool": "general"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"},
            {"operator": "Exists"},
        ],
        "rollout": canary([
            {"setWeight": 10}, {"pause": {"duration": "30s"}},
            {"setWeight": 25}, {"pause": {"duration": "10m"}},
            {"setWeight": 50}, {"pause": {"duration": "1h"}},
            {"setWeight": 75}, {"pause": {"untilPromoted": True}},
        ]),
    }


def test_the_image_tag_is_the_version_and_plain_seconds_are_durations() -> None:
    result = converted("02-version-from-tag.yaml")
    assert result.dropped == ()
    assert spec_of(result, "cart") == {
        "image": "ghcr.io/example/cart:v3.1.0-rc.2",
        "version": "v3.1.0-rc.2",
        "replicas": 1,
        "rollout": canary([
            {"setWeight": 20}, {"pause": {"duration": "45s"}},
            {"setWeight": 40}, {"pause": {"duration": "1m30s"}},
            {"setWeight": 100},
        ]),
    }


def test_a_digest_is_the_version_and_no_strategy_is_a_plain_update() -> None:
    result = converted("03-version-from-digest.yaml")
    assert result.dropped == ()
    assert spec_of(result, "search") == {
        "image": "registry.example.com/search@sha256:"
                 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "version": "9f86d081884c",
        "replicas": 2,
        "ports": [{"name": "port-7000", "port": 7000},
                  {"name": "port-7001", "port": 7001, "protocol": "UDP"}],
    }


def test_a_pod_template_the_short_fields_cannot_say_carries_over_whole() -> None:
    result = converted("04-pod-extras.yaml")
    rollout = "Rollout shop/payments"
    # The short fields cannot say it all, so the pod template carries over whole.
    assert dropped(result) == [
        f"{rollout}: spec.revisionHistoryLimit",
        f"{rollout}: spec.minReadySeconds",
        f'{rollout}: metadata.annotations["rollout.argoproj.io/revision"]',
    ]
    (manifest,) = result.manifests
    assert manifest["metadata"]["annotations"] == {"owner": "payments-team"}
    source = yaml.safe_load((CASES / "04-pod-extras.yaml").read_text())["spec"]["template"]
    assert manifest["spec"] == {
        "template": {"metadata": {"labels": {"tier": "backend"},
                                  "annotations": {"prometheus.io/scrape": "true"}},
                     "spec": source["spec"]},
        "version": "1.9.0",
        "replicas": 3,
        "ports": [{"name": "http", "port": 8080}],  # the Service's, from the first container
        "rollout": canary([{"setWeight": 50}, {"pause": {"untilPromoted": True}}]),
    }
    spec = MicroserviceSpec.model_validate(manifest["spec"])
    assert spec.main_image == "payments:1.9.0"


SUCCESS_QUERY = (
    '1 - (sum(rate(http_requests_total{service="{{ service }}",namespace="{{ namespace }}",'
    'code!~"5.."}[2m]))\n/\nsum(rate(http_requests_total{service="{{ service }}",'
    'namespace="{{ namespace }}"}[2m])))'
)


def test_analysis_steps_take_the_templates_thresholds() -> None:
    result = converted("05-analysis-step.yaml")
    assert result.dropped == ()
    assert spec_of(result, "checkout")["rollout"] == canary(
        [{"setWeight": 20}, {"analysis": {"intervals": 5}},
         {"setWeight": 60}, {"analysis": {"intervals": 5}}],
        analysis={
            "interval": "1m",
            "failureLimit": 0,
            "inconclusiveLimit": 0,
            "consecutiveErrorLimit": 4,
            "minSampleSize": 0,
            "prometheus": {"address": "http://prometheus.monitoring:9090"},
            "signals": {
                # success rate >= 0.95 is an error ratio <= 1 - 0.95, exactly in binary
                "errors": {"maxRatio": 1 - 0.95, "query": SUCCESS_QUERY},
                # failure when > 0.3 is success when <= 0.3; "p99" names the quantile
                "latency": {
                    "quantile": 0.99,
                    "maxSeconds": 0.3,
                    "query": "histogram_quantile(0.99, sum by (le) (rate("
                             'http_request_duration_seconds_bucket{service="{{ service }}"}'
                             "[2m])))",
                },
            },
        },
    )


def test_background_analysis_carries_over_from_its_starting_step() -> None:
    result = converted("06-background-analysis.yaml")
    assert result.dropped == ()
    rollout = spec_of(result, "inventory")["rollout"]["canary"]
    assert [s for s in rollout["steps"] if "analysis" in s] == []
    assert rollout["backgroundAnalysis"] == {"startingStep": 1}
    assert rollout["analysis"]["interval"] == "30s"
    assert rollout["analysis"]["signals"] == {"errors": {
        "maxRatio": math.nextafter(0.01, 0),  # result[0] < 0.01 excludes 0.01 itself
        "query": 'sum(rate(http_requests_total{service="inventory",code=~"5.."}[1m]))'
                 ' / sum(rate(http_requests_total{service="inventory"}[1m]))',
    }}


def test_a_cluster_template_gives_latency_traffic_and_saturation() -> None:
    result = converted("07-cluster-template.yaml")
    assert result.dropped == ()
    analysis = spec_of(result, "catalog")["rollout"]["canary"]
    assert analysis["steps"] == [{"setWeight": 10}, {"analysis": {"intervals": 3}},
                                 {"setWeight": 50}, {"pause": {"duration": "15m"}}]
    assert analysis["analysis"]["interval"] == "2m"
    assert analysis["analysis"]["prometheus"] == {
        "address": "http://prometheus.monitoring.svc:9090"}
    assert analysis["analysis"]["signals"] == {
        "latency": {
            "quantile": 0.95,
            "maxSeconds": math.nextafter(0.5, 0),
            "query": "histogram_quantile(0.95, sum by (le) (rate("
                     'http_request_duration_seconds_bucket{app="catalog"}[2m])))',
        },
        # failure when < 1 is success when >= 1
        "traffic": {"minRate": 1.0, "query": 'sum(rate(http_requests_total{app="catalog"}[2m]))'},
        # 0.8 >= result[0], turned round
        "saturation": {
            "max": 0.8,
            "query": 'max(rate(container_cpu_usage_seconds_total{app="catalog"}[2m]))',
        },
    }


def test_metrics_without_an_exact_threshold_are_named_with_why() -> None:
    result = converted("08-inexact-analysis.yaml")
    mixed, rollout = "AnalysisTemplate shop/mixed", "Rollout shop/reviews"
    step = "spec.strategy.canary.steps[1].analysis"
    assert dropped(result) == [
        f"{rollout}: {step}.args[1].valueFrom",  # podTemplateHashValue
        f"{mixed}: spec.metrics[0]",  # an Inconclusive band between the two conditions
        f"{mixed}: spec.metrics[1]",  # not a comparison of result[0] with a number
        f"{mixed}: spec.metrics[2].provider.prometheus.timeout",
        f"{mixed}: spec.metrics[2]",  # its query needs the pod-template hash
        f"{mixed}: spec.metrics[3].provider",  # datadog
        f"{mixed}: spec.metrics[4].initialDelay",
        f"{mixed}: spec.metrics[4]",  # its name does not say which signal
        f"{mixed}: spec.metrics[5].provider.prometheus.timeout",
        f"{mixed}: spec.metrics[6]",  # errors already taken by metrics[5]
        f"{rollout}: {step}.templates[1]",  # not in the input
        "AnalysisTemplate shop/unused",  # no Rollout uses it
    ]
    why = {(d.object, d.path): d.why for d in result.dropped}
    assert why[(mixed, "spec.metrics[0]")].startswith(
        "successCondition and failureCondition leave values that meet neither")
    assert why[(mixed, "spec.metrics[3].provider")] == (
        "Pilotboat reads Prometheus only, not datadog")
    assert why[(rollout, f"{step}.templates[1]")] == (
        "AnalysisTemplate not-in-the-input is not in the input; give its file too")
    assert spec_of(result, "reviews")["rollout"]["canary"]["analysis"]["signals"] == {
        "errors": {
            "maxRatio": 0.02,
            "query": 'sum(rate(errors_total{service="reviews"}[1m]))'
                     ' / sum(rate(requests_total{service="reviews"}[1m]))',
        }
    }


def test_the_gateway_api_plugin_becomes_gateway_api_routing() -> None:
    result = converted("09-gateway-api.yaml")
    assert result.dropped == ()  # frontend-stable and frontend-canary are Pilotboat's names
    assert spec_of(result, "frontend")["rollout"] == canary(
        [{"setWeight": 5}, {"pause": {"duration": "2m"}},
         {"setWeight": 30}, {"pause": {"untilPromoted": True}}],
        routing={"gatewayAPI": {"httpRoute": "frontend", "port": 3000}},
    )


def test_a_second_route_another_namespace_and_other_service_names_are_named() -> None:
    result = converted("10-gateway-api-routes.yaml")
    plugin = 'spec.strategy.canary.trafficRouting.plugins["argoproj-labs/gatewayAPI"]'
    assert dropped(result) == [
        f"Rollout web/api: {plugin}.httpRoutes[1]",
        f"Rollout web/api: {plugin}.namespace",
        "Rollout web/api: spec.strategy.canary.stableService",
        "Rollout web/api: spec.strategy.canary.canaryService",
    ]
    assert spec_of(result, "api")["rollout"]["canary"]["trafficRouting"] == {
        "gatewayAPI": {"httpRoute": "api-public", "port": 8080}}  # Pilotboat's default port


def test_istio_header_routes_and_other_steps_are_named() -> None:
    result = converted("11-istio.yaml")
    canary_path = "Rollout mesh/ratings: spec.strategy.canary"
    assert dropped(result) == [
        f"{canary_path}.steps[0].setCanaryScale",
        f"{canary_path}.steps[1].setHeaderRoute",
        f"{canary_path}.steps[3].experiment",
        f"{canary_path}.steps[4].setMirrorRoute",
        f"{canary_path}.trafficRouting.managedRoutes",
        f"{canary_path}.trafficRouting.istio",
        f"{canary_path}.stableService",
        f"{canary_path}.canaryService",
    ]
    assert str(result.dropped[5]) == (
        "11-istio.yaml: Rollout mesh/ratings: spec.strategy.canary.trafficRouting.istio: not"
        " carried over: Pilotboat routes by replica ratio or Gateway API only; it splits by"
        " replica ratio instead")
    assert spec_of(result, "ratings")["rollout"] == canary(
        [{"setWeight": 10}, {"pause": {"duration": "10m"}}])


def test_smi_nginx_and_alb_are_named_and_replica_ratio_used() -> None:
    result = converted("12-other-routers.yaml")
    assert dropped(result) == [
        f"Rollout edge: spec.strategy.canary.trafficRouting.{router}"
        for router in ("smi", "nginx", "alb")
    ]
    spec = spec_of(result, "edge")
    assert spec["version"] == "2024.06"  # the label wins over the tag "latest"
    assert spec["rollout"] == canary([{"setWeight": 33}, {"pause": {"duration": "1h30m"}}])


def test_workload_refs_become_adoptions_and_scale_down_carries_over() -> None:
    result = converted("13-workload-ref.yaml")
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment"}
    assert spec_of(result, "legacy") == {
        "workloadRef": {**deployment, "name": "legacy", "scaleDown": "never"},  # Argo's default
        "version": "v1", "replicas": 2, "rollout": canary([{"setWeight": 50}])}
    billing = spec_of(result, "billing")
    assert billing["workloadRef"] == {**deployment, "name": "billing-deploy",
                                      "scaleDown": "progressively"}
    assert billing["version"] == "3.2" and billing["replicas"] == 4
    assert spec_of(result, "ledger")["workloadRef"]["scaleDown"] == "progressively"
    assert [(d.object, d.path, d.why) for d in result.dropped] == [
        ("Rollout shop/billing", "spec.workloadRef.scaleDown",
         "Pilotboat has no onsuccess: it scales the Deployment down one pod for each of its own"
         " that is ready (progressively), which it uses instead"),
        ("Rollout shop/jobs", "spec.workloadRef.kind",
         "Pilotboat adopts an apps/v1 Deployment only, not v1 PodTemplate: the Rollout is not"
         " converted"),
    ]
    assert "jobs" not in {m["metadata"]["name"] for m in result.manifests}


def test_blue_green_is_refused() -> None:
    result = converted("14-blue-green.yaml")
    assert result.manifests == ()
    assert [(d.path, d.why) for d in result.dropped] == [(
        "spec.strategy.blueGreen",
        "Pilotboat releases by canary only; it has no preview Service to switch: the Rollout"
        " is not converted")]


def test_canary_settings_and_a_falling_weight_are_named() -> None:
    result = converted("15-canary-extras.yaml")
    rollout = "Rollout shop/shipping"
    assert dropped(result) == [
        f"{rollout}: spec.selector.matchExpressions",
        f"{rollout}: spec.strategy.canary.maxUnavailable",
        f"{rollout}: spec.strategy.canary.dynamicStableScale",
        f"{rollout}: spec.strategy.canary.scaleDownDelaySeconds",
        f"{rollout}: spec.strategy.canary.steps[2].setWeight",
        f"{rollout}: spec.strategy.canary.canaryService",
    ]
    assert result.dropped[4].why == "Pilotboat's weights never decrease, and 20 follows 40"
    assert spec_of(result, "shipping")["template"] == {"metadata": {"labels": {"tier": "backend"}}}
    assert spec_of(result, "shipping")["progressDeadlineSeconds"] == 600
    assert spec_of(result, "shipping")["rollout"] == canary(
        [{"setWeight": 40}, {"pause": {"duration": "20s"}}, {"pause": {"duration": "20s"}},
         {"setWeight": 80}], routing={"replicaRatio": {"maxSurge": "25%"}})  # Argo's maxSurge


def test_one_set_of_signals_judges_every_analysis_step() -> None:
    result = converted("16-two-analysis-templates.yaml")
    assert dropped(result) == [
        "AnalysisTemplate shop/long-errors: spec.metrics[0].interval",  # no count
        "Rollout shop/users: spec.strategy.canary.steps[3].analysis",  # other thresholds
    ]
    rollout = spec_of(result, "users")["rollout"]["canary"]
    # count 4 with failureLimit 1: Argo passes when at most 1 of 4 fails; Pilotboat when 3
    # pass before a second failure, the same verdict for every sequence of results
    assert rollout["steps"] == [{"setWeight": 10}, {"analysis": {"intervals": 3}},
                                {"setWeight": 50}, {"analysis": {"interval": "5m"}}]
    assert rollout["analysis"]["failureLimit"] == 1
    assert rollout["analysis"]["signals"]["errors"]["maxRatio"] == 0.05


def test_identical_strategies_share_one_rollout_policy() -> None:
    result = converted("17-shared-strategy.yaml", policies=True)
    assert result.dropped == ()
    assert [(m["kind"], m["metadata"]["name"]) for m in result.manifests] == [
        ("RolloutPolicy", "wishlist"), ("Microservice", "wishlist"),
        ("Microservice", "coupons"), ("RolloutPolicy", "gifts"), ("Microservice", "gifts"),
    ]
    assert spec_of(result, "coupons")["rollout"] == {"rolloutPolicyRef": "wishlist"}
    policy = result.manifests[0]
    assert policy["metadata"] == {"name": "wishlist", "namespace": "shop"}
    assert policy["spec"]["steps"] == [{"setWeight": 25}, {"pause": {"duration": "1m"}},
                                       {"setWeight": 75}, {"pause": {"untilPromoted": True}}]


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_manifest_is_what_the_crds_accept(case: str) -> None:
    for policies in (False, True):
        for manifest in converted(case, policies=policies).manifests:
            model = MicroserviceSpec if manifest["kind"] == "Microservice" else RolloutPolicySpec
            model.model_validate(manifest["spec"])
            assert lint_document(case, manifest) == []


# --- the rules ----------------------------------------------------------------------------


def test_the_worked_examples_in_the_docstrings_hold() -> None:
    result = doctest.testmod(convert_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("op", "limit", "passes", "fails"),
    [
        ("<=", 0.05, 0.05, math.nextafter(0.05, 1)),
        ("<", 0.05, math.nextafter(0.05, 0), 0.05),
        (">=", 1.0, 1.0, math.nextafter(1.0, 0)),
        (">", 1.0, math.nextafter(1.0, 2), 1.0),
    ],
)
def test_a_threshold_passes_exactly_what_the_condition_passes(
    op: str, limit: float, passes: float, fails: float
) -> None:
    inclusive = threshold(op, limit)
    ceiling = op.startswith("<")

    def pilotboat(v: float) -> bool:  # pilotboat.core.analysis: value <= max, value >= min
        return v <= inclusive if ceiling else v >= inclusive

    assert pilotboat(passes) and not pilotboat(fails)


@pytest.mark.parametrize(
    ("name", "ceiling", "signal"),
    [
        ("error-rate", True, "errors"),
        ("http-5xx", True, "errors"),
        ("p99-latency", True, "latency"),
        ("request-duration", True, "latency"),
        ("cpu-usage", True, "saturation"),
        ("queue-depth", True, "saturation"),
        ("success-rate", False, "success"),
        ("availability", False, "success"),
        ("request-rate", False, "traffic"),
        ("throughput", False, "traffic"),
        ("error-rate", False, None),
        ("success-rate", True, None),
        ("canary-check", True, None),
    ],
)
def test_the_signal_follows_from_the_metric_name(
    name: str, ceiling: bool, signal: str | None
) -> None:
    assert signal_for(name, ceiling) == signal


def _with_template(metric: dict[str, Any]) -> list[SourceDocument]:
    template = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": {"name": "t"}, "spec": {"metrics": [{
                    "name": "error-rate", "successCondition": "result[0] <= 0.01",
                    "provider": {"prometheus": {"query": "vector(0)"}}, **metric}]}}
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "r"}, "spec": {
                   "template": {"spec": {"containers": [{"image": "r:1"}]}},
                   "strategy": {"canary": {"steps": [{"analysis": {
                       "templates": [{"templateName": "t"}]}}]}}}}
    return [SourceDocument("t.yaml", template), SourceDocument("t.yaml", rollout)]


@pytest.mark.parametrize(
    ("metric", "step", "dropped_path"),
    [
        ({}, {"intervals": 1}, None),  # measured once
        ({"count": 3}, {"intervals": 3}, None),
        ({"count": 5, "failureLimit": 2}, {"intervals": 3}, None),
        ({"count": 5, "inconclusiveLimit": 1}, {"intervals": 4}, None),
        ({"count": 5, "failureLimit": 1, "inconclusiveLimit": 1}, {}, "spec.metrics[0].count"),
        ({"count": 2, "failureLimit": 2}, {}, "spec.metrics[0].count"),
        ({"interval": "1m"}, {}, "spec.metrics[0].interval"),
    ],
)
def test_count_and_limits_become_the_passes_a_step_waits_for(
    metric: dict[str, Any], step: dict[str, Any], dropped_path: str | None
) -> None:
    result = convert(_with_template(metric))
    assert [d.path for d in result.dropped] == ([dropped_path] if dropped_path else [])
    assert spec_of(result, "r")["rollout"]["canary"]["steps"] == [{"analysis": step}]


@pytest.mark.parametrize(
    ("condition", "signal"),
    [
        ({"successCondition": "result[0] <= 0.01"}, {"maxRatio": 0.01}),
        ({"successCondition": "result <= 0.01"}, {"maxRatio": 0.01}),
        ({"failureCondition": "result[0] > 0.01"}, {"maxRatio": 0.01}),
        ({"failureCondition": "result[0] >= 0.01"}, {"maxRatio": math.nextafter(0.01, 0)}),
        ({"successCondition": "result[0] <= 0.01", "failureCondition": "result[0] > 0.01"},
         {"maxRatio": 0.01}),
    ],
)
def test_conditions_that_map_exactly(condition: dict[str, str], signal: dict[str, Any]) -> None:
    metric = {"successCondition": None} | condition
    if metric["successCondition"] is None:
        del metric["successCondition"]
    docs = _with_template({})
    docs[0].body["spec"]["metrics"][0] = {
        "name": "error-rate", "provider": {"prometheus": {"query": "vector(0)"}}, **metric}
    result = convert(docs)
    assert result.dropped == ()
    signals = spec_of(result, "r")["rollout"]["canary"]["analysis"]["signals"]
    assert signals == {"errors": {**signal, "query": "vector(0)"}}


@pytest.mark.parametrize(
    ("name", "condition", "why"),
    [
        ("success-rate", "result[0] >= 0.3",
         "a success rate at least 0.3 is an error ratio at most 1 - 0.3 exactly only for"
         " thresholds from 0.5 to 1"),
        ("error-rate", "result[0] <= 2",
         "errors threshold 2.0 is outside what Pilotboat accepts for errors"),
        ("error-rate", "isNaN(result[0]) || result[0] < 0.1",
         "successCondition 'isNaN(result[0]) || result[0] < 0.1' is not a comparison of"
         " result[0] with a number, the only form Pilotboat's thresholds express"),
    ],
)
def test_conditions_that_do_not_map_say_why(name: str, condition: str, why: str) -> None:
    docs = _with_template({"name": name, "successCondition": condition})
    result = convert(docs)
    assert [(d.path, d.why) for d in result.dropped][0] == ("spec.metrics[0]", why)


@pytest.mark.parametrize(
    ("labels", "rollout_labels", "image", "version"),
    [
        ({"app.kubernetes.io/version": "v7"}, {"app.kubernetes.io/version": "v6"}, "a:1.0",
         "v7"),
        ({}, {"app.kubernetes.io/version": "v6"}, "a:1.0", "v6"),
        ({}, {}, "registry:5000/team/a:1.0", "1.0"),
        ({}, {}, "a:1.0@sha256:" + "ab" * 32, "1.0"),
        ({}, {}, "a@sha256:" + "ab" * 32, "abababababab"),
    ],
)
def test_the_version_rule(
    labels: dict[str, str], rollout_labels: dict[str, str], image: str, version: str
) -> None:
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "a", "labels": rollout_labels},
               "spec": {"template": {"metadata": {"labels": labels},
                                     "spec": {"containers": [{"image": image}]}}}}
    result = convert([SourceDocument("a.yaml", rollout)])
    assert spec_of(result, "a")["version"] == version


def _rollout(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"template": {"spec": {"containers": [{"image": "x:1"}]}}}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "x", "namespace": "ns"}, "spec": base | spec}


def _steps(*steps: Any) -> dict[str, Any]:
    return {"strategy": {"canary": {"steps": list(steps)}}}


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ("text", "", "expected a mapping (an object)"),
        ({**_rollout(), "metadata": {"namespace": "ns"}}, "metadata.name",
         "expected a non-empty string"),
        (_rollout(**_steps({"setWeight": 10, "pause": {}})), "spec.strategy.canary.steps[0]",
         "a step has exactly one field, found setWeight, pause"),
        (_rollout(**_steps({"setWeight": 150})), "spec.strategy.canary.steps[0].setWeight",
         "a percentage from 0 to 100, not 150"),
        (_rollout(**_steps({"setWeight": "half"})), "spec.strategy.canary.steps[0].setWeight",
         "expected an integer"),
        (_rollout(**_steps({"pause": {"duration": "2d"}})),
         "spec.strategy.canary.steps[0].pause.duration", "not a duration: '2d'"),
        (_rollout(template={"spec": {"containers": []}}), "spec.template.spec.containers",
         "a pod template needs a container"),
        (_rollout(template={"spec": {"containers": [{"image": "nginx"}]}}),
         "spec.template.spec.containers[0].image", "no version: 'nginx' has no tag or digest"),
        (_rollout(template={"spec": {"containers": [{"image": "Not An Image:1"}]}}),
         "spec.image", "the converted value is refused"),
        (_rollout(replicas=[3]), "spec.replicas", "expected an integer"),
    ],
)
def test_invalid_input_names_the_field(document: Any, path: str, message: str) -> None:
    with pytest.raises(ConversionError) as raised:
        convert([SourceDocument("bad.yaml", {"kind": "ConfigMap"}),
                 SourceDocument("bad.yaml", document)])
    assert (raised.value.source, raised.value.path) == ("bad.yaml", path)
    assert raised.value.object.startswith("document 2" if document == "text" else "Rollout ns/")
    assert raised.value.message.startswith(message), raised.value.message


def test_other_kinds_are_named_as_not_converted() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "n"}}
    result = convert([SourceDocument("all.yaml", service)])
    assert [str(d) for d in result.dropped] == [
        "all.yaml: Service n/x: not carried over: convert reads Argo Rollouts' Rollout,"
        " AnalysisTemplate and ClusterAnalysisTemplate (argoproj.io/v1alpha1) only"]


# --- the command --------------------------------------------------------------------------


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, ["convert", *args], input=stdin)


def test_the_command_prints_yaml_and_exits_0_when_all_carried_over() -> None:
    result = run(str(CASES / "01-basic.yaml"), str(CASES / "09-gateway-api.yaml"))
    assert (result.exit_code, result.stderr) == (0, "")
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["metadata"]["name"] for d in docs] == ["orders", "frontend"]
    assert docs[0]["spec"] == converted("01-basic.yaml").manifests[0]["spec"]


def test_the_command_names_each_dropped_field_on_stderr_and_exits_1() -> None:
    path = str(CASES / "12-other-routers.yaml")
    result = run(path)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}: Rollout edge: spec.strategy.canary.trafficRouting.{router}: not carried"
        " over: Pilotboat routes by replica ratio or Gateway API only; it splits by replica"
        " ratio instead"
        for router in ("smi", "nginx", "alb")
    ]
    assert yaml.safe_load(result.stdout)["spec"]["version"] == "2024.06"


def test_the_command_reads_stdin_and_writes_queries_as_blocks() -> None:
    text = (CASES / "05-analysis-step.yaml").read_text()
    result = run("-", stdin=text)
    assert (result.exit_code, result.stderr) == (0, "")
    assert "query: |-\n" in result.stdout  # PromQL of several lines stays readable
    signals = yaml.safe_load(result.stdout)["spec"]["rollout"]["canary"]["analysis"]["signals"]
    assert signals["errors"]["query"] == SUCCESS_QUERY


def test_the_command_with_policies() -> None:
    result = run("--policies", str(CASES / "17-shared-strategy.yaml"))
    assert result.exit_code == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["RolloutPolicy", "Microservice", "Microservice", "RolloutPolicy",
                     "Microservice"]


@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        (["missing.yaml"], None, "error: missing.yaml: cannot read: No such file or directory"),
        (["-"], "kind: [\n", "error: stdin: not YAML at line 2: expected the node content,"
                             " but found '<stream end>'"),
        (["-"], "", "error: -: no documents to convert"),
        (["-"], "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: x}\n"
                "spec: {template: {spec: {containers: [{image: 'x:1'}]}},"
                " strategy: {canary: {steps: [{pause: {duration: soon}}]}}}\n",
         "error: stdin: Rollout x: spec.strategy.canary.steps[0].pause.duration: not a"
         " duration: 'soon' (e.g. 30s, 5m, 1h)"),
    ],
)
def test_the_command_exits_2_naming_file_and_field(
    args: list[str], stdin: str | None, error: str
) -> None:
    result = run(*args, stdin=stdin)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", error + "\n")


def test_background_analysis_starts_where_its_step_went_and_shares_the_steps_signals() -> None:
    result = converted("18-background-after-dropped-steps.yaml")
    canary = spec_of(result, "search")["rollout"]["canary"]
    assert canary["steps"] == [{"setWeight": 20}, {"analysis": {"intervals": 3}},
                               {"setWeight": 60}]
    assert canary["backgroundAnalysis"] == {"startingStep": 1}  # Argo's step 2 is our 1
    assert set(canary["analysis"]["signals"]) == {"latency"}  # the analysis step's
    assert [(d.path, d.why) for d in result.dropped] == [
        ("spec.strategy.canary.steps[0].setCanaryScale",
         "Pilotboat sizes the canary from the weight; it has no separate scale"),
        ("spec.strategy.canary.analysis",
         "Pilotboat judges the background by the analysis steps' one set of signals: those of"
         " spec.metrics[0] of AnalysisTemplate shop/search-latency apply there too"),
    ]
