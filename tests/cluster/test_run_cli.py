"""`pilotboat run` as a user starts it: the kubeconfig by flag, nothing in the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from pilotboat.adapters.kube import Kube
from pilotboat.testing import OperatorProcess
from tests.manifests import microservice
from tests.story import Story


def test_run_with_kubeconfig_and_context_flags_and_no_kubeconfig_in_the_environment(
    kube: Kube, private_namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    context = yaml.safe_load(kubeconfig.read_text())["current-context"]
    home = tmp_path / "home"  # no ~/.kube/config to fall back on
    home.mkdir()
    own = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace,
                                                 "--context", context],
                          env={"HOME": str(home)})
    assert "KUBECONFIG" not in own.env
    own.start()
    story = Story(kube, private_namespace)
    try:
        story.given(microservice("catalog", replicas=1))
        ms = story.wait_condition("Microservice", "catalog", "Ready", timeout=90)
    finally:
        own.stop()
    assert ms["status"]["readyReplicas"] == 1
    assert "Ran out of valid credentials" not in own.log_text()


def test_a_context_the_kubeconfig_lacks_is_one_line_and_a_non_zero_exit(
    kubeconfig: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "pilotboat", "run", "--kubeconfig", str(kubeconfig),
         "--context", "no-such-context"],
        capture_output=True, text=True, env={**env, "HOME": str(tmp_path)}, timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-context" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_its_own_webhook_configurations_go_with_the_namespace_they_serve(
    kube: Kube, private_namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    """Run for one namespace by name, the operator's configurations are owned by that
    Namespace: deleted with it by the garbage collector, not left for the API server to
    match every Microservice write against; one deleted under a running operator comes
    back."""
    from pilotboat.handlers.webhooks import webhook_configuration_name

    name = webhook_configuration_name([private_namespace], None)
    kinds = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    story = Story(kube, private_namespace)  # the configurations are cluster-scoped
    uid = kube.get("Namespace", None, private_namespace)["metadata"]["uid"]  # type: ignore[index]
    own = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace],
                          env={"PILOTBOAT_WEBHOOK_CHECK_SECONDS": "1"})
    own.start()
    try:
        for kind in kinds:
            found = story.wait_for(kind, name, lambda o: o is not None, what="registered")
            assert found is not None
            assert found["metadata"]["ownerReferences"] == [
                {"apiVersion": "v1", "kind": "Namespace", "name": private_namespace,
                 "uid": uid}], kind
        kube.delete(kinds[0], None, name)
        story.wait_for(kinds[0], name, lambda o: o is not None, what="registered again")
    finally:
        own.stop()
    kube.delete("Namespace", None, private_namespace)
    for kind in kinds:
        story.wait_for(kind, name, lambda o: o is None, timeout=180,
                       what="deleted with the namespace it served")


def test_a_configuration_registered_again_after_its_namespace_went_goes_when_the_operator_stops(
    kube: Kube, private_namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    """The namespace is deleted under a running operator: the garbage collector takes the
    configurations with it, the operator's check registers them again, unowned (nothing
    left to own them). Stopped, the operator deletes them: no namespace they serve exists,
    and nothing else ever would."""
    from pilotboat.handlers.webhooks import webhook_configuration_name

    name = webhook_configuration_name([private_namespace], None)
    kinds = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    story = Story(kube, private_namespace)
    own = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace],
                          env={"PILOTBOAT_WEBHOOK_CHECK_SECONDS": "1"})
    own.start()
    try:
        for kind in kinds:
            story.wait_for(kind, name, lambda o: o is not None, what="registered")
        kube.delete("Namespace", None, private_namespace)
        story.wait_for("Namespace", private_namespace, lambda o: o is None, timeout=180,
                       what="the namespace gone")  # fmt: skip
        for kind in kinds:
            story.wait_for(kind, name,
                           lambda o: o is not None and not o["metadata"].get("ownerReferences"),
                           timeout=180, what="registered again, unowned")  # fmt: skip
    finally:
        own.stop()
    for kind in kinds:
        assert kube.get(kind, None, name) is None, f"{kind} {name} left behind"
