"""A Microservice with a full pod template (``spec.template``) on the real node: a volume, a
Secret through ``valueFrom``, liveness and startup probes, command and args, a sidecar and a
``restricted`` securityContext, in a namespace whose Pod Security admission enforces
``restricted``. It goes through a canary and is promoted; the next release, whose service
never starts, is rolled back at its progress deadline with stable whole throughout."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

from tests.fixtures.real_node import echo_image, require_real_node
from tests.story import Story, phase_is

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}


def full_service(version: str, args: list[str]) -> dict[str, Any]:
    image = echo_image(version)
    return {
        "apiVersion": "pilotboat.dev/v1alpha1",
        "kind": "Microservice",
        "metadata": {"name": "ledger"},
        "spec": {
            "version": version,
            "replicas": 2,
            "imagePullPolicy": "Never",
            "nodeSelector": {"type": "real"},
            "progressDeadlineSeconds": 40,
            "ports": [{"name": "http", "port": 8080}],
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                          "limits": {"memory": "128Mi"}},
            "rollout": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "3s"}}]}},
            "template": {
                "metadata": {"labels": {"team": "ledger"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                        "runAsGroup": 65534,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "containers": [
                        {
                            "name": "ledger",
                            "image": image,
                            "command": ["python3"],
                            "args": args,
                            "env": [{"name": "LEDGER_TOKEN", "valueFrom": {
                                "secretKeyRef": {"name": "ledger-token", "key": "token"}}}],
                            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                            "startupProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                             "periodSeconds": 1, "failureThreshold": 60},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                              "periodSeconds": 5},
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                               "periodSeconds": 1},
                            "securityContext": RESTRICTED_CONTAINER,
                        },
                        {
                            "name": "sidecar",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "env": [{"name": "PORT", "value": "9090"}],
                            "resources": {"requests": {"cpu": "5m", "memory": "16Mi"},
                                          "limits": {"memory": "64Mi"}},
                            "securityContext": RESTRICTED_CONTAINER,
                        },
                    ],
                },
            },
        },
    }


def _pods(story: Story, track: str) -> list[Any]:
    """The track's pods that are not on their way out."""
    pods = CoreV1Api(story.kube.api_client).list_namespaced_pod(
        story.namespace, label_selector=f"app.kubernetes.io/name=ledger,pilotboat.dev/track={track}"
    ).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def _all_ready_at(story: Story, version: str) -> bool:
    pods = _pods(story, "stable")
    return len(pods) == 2 and all(
        p.metadata.labels.get("app.kubernetes.io/version") == version
        and all(c.ready for c in p.status.container_statuses or ()) for p in pods)


@pytest.mark.usefixtures("operator")
def test_a_full_pod_template_under_restricted_goes_through_a_canary_and_a_rollback(
    story: Story,
) -> None:
    require_real_node(story.kube.api_client)
    story.kube.merge_patch("Namespace", None, story.namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"}}})
    story.given({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "ledger-token"}, "stringData": {"token": "s3cret"}})
    story.given(full_service("v1", ["/app/echo.py"]))
    story.wait_for("Microservice", "ledger", phase_is("Healthy"), timeout=180, what="v1 Healthy")

    story.apply(full_service("v2", ["/app/echo.py"]))
    story.wait_for("Microservice", "ledger", lambda ms: phase_is("Healthy")(ms)
                   and ms["status"].get("stableVersion") == "v2",  # type: ignore[index]
                   timeout=240, what="v2 promoted")
    story.wait_for("Microservice", "ledger", lambda _: _all_ready_at(story, "v2"), timeout=120,
                   what="two ready v2 pods and no others")

    pods = _pods(story, "stable")
    assert len(pods) == 2, [p.metadata.name for p in pods]
    for pod in pods:
        assert pod.metadata.labels["team"] == "ledger"
        assert pod.metadata.labels["app.kubernetes.io/version"] == "v2"
        statuses = {c.name: c for c in pod.status.container_statuses or ()}
        assert set(statuses) == {"ledger", "sidecar"}
        assert all(c.ready for c in statuses.values()), statuses
        ledger = next(c for c in pod.spec.containers if c.name == "ledger")
        assert ledger.command == ["python3"] and ledger.args == ["/app/echo.py"]
        assert ledger.image == echo_image("v2")
        assert ledger.startup_probe and ledger.liveness_probe
        assert {m.name for m in ledger.volume_mounts or ()} >= {"scratch"}
        env = {e.name: e for e in ledger.env or ()}
        assert env["LEDGER_TOKEN"].value_from.secret_key_ref.name == "ledger-token"
        assert env["SERVICE_VERSION"].value == "v2"  # the operator's own, added to it
        assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"

    # v3 never starts (its args name no program): rolled back at the deadline, stable whole.
    story.apply(full_service("v3", ["/app/no-such-program.py"]))
    deadline = time.monotonic() + 150
    while not phase_is("Degraded")(story.get("Microservice", "ledger")):
        assert time.monotonic() < deadline, "v3 was not rolled back within 150 s"
        stable = story.get("Deployment", "ledger") or {}
        assert (stable.get("status") or {}).get("readyReplicas") == 2, \
            "stable lost ready capacity while the canary never started"
        time.sleep(1)
    ms = story.get("Microservice", "ledger")
    assert ms is not None
    rolled_back = next(c for c in ms["status"]["conditions"] if c["type"] == "RolledBack")
    assert rolled_back["reason"] == "ProgressDeadlineExceeded", rolled_back
    assert ms["status"]["stableVersion"] == "v2"
    story.wait_for("Microservice", "ledger",
                   lambda _: not _pods(story, "canary"), timeout=60, what="canary pods gone")
