"""Who sent a release command, as the API server itself vouches: the admission policy
pilotboat-command-identity (installed with the CRDs) refuses a command naming anyone but the
sender, and one naming no one while no webhook fills the name in; the operator's webhook
command-identity names the sender for clients that cannot (Argo CD's actions, kubectl
patch); the operator tells who in the Event and in status.lastCommand."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from pilotboat.adapters.kube import Kube
from pilotboat.cli.main import main as cli
from pilotboat.testing import OperatorProcess
from tests.cluster.test_approvals import whoami
from tests.manifests import microservice
from tests.story import Story, phase_is

STEPS = [{"setWeight": 50}, {"pause": {"untilPromoted": True}}]


def as_user(kubeconfig: Path, user: str) -> Kube:
    """The admin's client, impersonating `user` (in system:masters, so RBAC lets it patch
    status: only the admission policy stands in its way)."""
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    api.set_default_header("Impersonate-User", user)
    api.set_default_header("Impersonate-Group", "system:masters")
    return Kube(api, field_manager="pilotboat-tests")


def send(kube: Kube, namespace: str, name: str, **commands: str | None) -> dict[str, Any]:
    return kube.merge_patch("Microservice", namespace, name, {"status": {"commands": commands}},
                            subresource="status")  # fmt: skip


def refused(action: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as caught:
        action()
    assert caught.value.status == 403, caught.value.body
    return str(caught.value.body)


def token() -> str:
    return uuid.uuid4().hex


def until_enforced(kube: Kube, namespace: str, name: str, timeout: float = 60) -> str:
    """Until the API server enforces the policy (a policy just installed takes a moment):
    a promote naming someone else is refused. Returns the refusal."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            send(kube, namespace, name, promote=token(), promoteBy="the-cto")
        except ApiException as exc:
            if exc.status == 403 and "status.commands.promoteBy" in str(exc.body):
                return str(exc.body)
            raise
        assert time.monotonic() < deadline, f"forged senders still pass after {timeout:.0f}s"
        time.sleep(0.5)


def released(story: Story, name: str, *, enforced: bool = False) -> None:
    """`name` v1 Healthy (the policy in force, with `enforced`), then v2 paused at its
    promote step."""
    story.given(microservice(name, version="v1", rollout={"canary": {"steps": STEPS}}))
    if enforced:  # a forged command that passed would be swallowed by the release of v2
        until_enforced(story.kube, story.namespace, name)
    story.wait_for("Microservice", name, phase_is("Healthy"), timeout=120)
    story.apply(microservice(name, version="v2", rollout={"canary": {"steps": STEPS}}))
    story.wait_for("Microservice", name, phase_is("Paused", 1), timeout=90)


def promoted(story: Story, name: str) -> dict[str, Any]:
    obj = story.wait_for("Microservice", name, lambda o: phase_is("Healthy")(o) and (
        (o or {}).get("status", {}).get("stableVersion") == "v2"), timeout=120, what="promoted")
    assert obj is not None
    return obj


def told_sender(story: Story, name: str, sender: str) -> bool:
    """Whether the Event of the skipped pause says who sent promote, as verified."""
    told = [str(e.get("message")) for e in story.events(name) if e.get("reason") == "PauseSkipped"]
    said = f"; promote sent by {sender}"
    return any(said in m and f"{said} (unverified)" not in m for m in told)


def test_the_api_server_refuses_a_command_naming_another_or_no_one_with_no_webhook(
    kube: Kube, private_namespace: str, kubeconfig: Path
) -> None:
    ns = private_namespace  # no operator, so no webhook, watches it
    Story(kube, ns).given(microservice("web"))
    me = whoami(kubeconfig)
    mallory = as_user(kubeconfig, "mallory")

    forged = until_enforced(kube, ns, "web")
    assert f"status.commands.promoteBy must name the user sending status.commands.promote: {me}" \
        in forged
    assert "mallory" in refused(lambda: send(mallory, ns, "web", promote=token(),
                                             promoteBy="alice"))
    # No webhook answers here: a command naming no one is refused, naming the field.
    assert "status.commands.abortBy" in refused(lambda: send(kube, ns, "web", abort=token()))
    assert "status.commands.retryBy" in refused(lambda: send(kube, ns, "web", retry=token()))

    honest = send(kube, ns, "web", promote=token(), promoteBy=me)
    assert honest["status"]["commands"]["promoteBy"] == me
    # Nobody renames the sender of a command to a third person, nor erases it.
    assert "promoteBy" in refused(lambda: send(mallory, ns, "web", promoteBy="alice"))
    assert "promoteBy" in refused(lambda: send(kube, ns, "web", promoteBy=None))
    mallory_sent = send(mallory, ns, "web", promoteFull=token(), promoteFullBy="mallory")
    assert mallory_sent["status"]["commands"]["promoteFullBy"] == "mallory"


@pytest.mark.usefixtures("operator")
def test_a_plain_patch_is_stamped_with_its_sender_and_the_release_goes_on(
    story: Story, kubeconfig: Path
) -> None:
    released(story, "stamped", enforced=True)
    alice = as_user(kubeconfig, "alice")

    sent = token()
    deadline = time.monotonic() + 60
    while True:  # until the shared operator's webhook is registered and answers
        try:
            stored = send(alice, story.namespace, "stamped", promote=sent)
            break
        except ApiException as exc:
            assert exc.status == 403 and time.monotonic() < deadline, exc.body
            time.sleep(0.5)

    assert stored["status"]["commands"]["promoteBy"] == "alice"
    done = promoted(story, "stamped")
    assert done["status"]["release"]["handledCommands"]["promote"] == sent
    last = done["status"]["lastCommand"]
    assert (last["name"], last["by"], last["verified"]) == ("promote", "alice", True), last
    assert told_sender(story, "stamped", "alice"), story.describe("Microservice", "stamped")


def test_kubectl_pilotboat_names_its_user_with_no_webhook_running(
    kube: Kube, private_namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    """An operator without webhooks: a plain patch is refused, `kubectl pilotboat promote`
    names its user itself and the release goes on, the Event saying who."""
    story = Story(kube, private_namespace)
    me = whoami(kubeconfig)
    own = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace,
                                                 "--no-webhooks"])  # fmt: skip
    own.start()
    try:
        released(story, "cli", enforced=True)
        assert "status.commands.promoteBy" in refused(
            lambda: send(kube, private_namespace, "cli", promote=token()))

        result = CliRunner().invoke(cli, ["promote", "cli", "-n", private_namespace,
                                          "--kubeconfig", str(kubeconfig)])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"promote requested for {private_namespace}/cli by {me} (token " in result.output

        done = promoted(story, "cli")
        assert done["status"]["commands"]["promoteBy"] == me
        assert (done["status"]["lastCommand"]["by"], done["status"]["lastCommand"]["verified"]) \
            == (me, True)
        assert told_sender(story, "cli", me), story.describe("Microservice", "cli")
        shown = CliRunner().invoke(cli, ["status", "cli", "-n", private_namespace,
                                         "--kubeconfig", str(kubeconfig)])  # fmt: skip
        assert f"  command:  promote sent by {me}, acted on " in shown.output, shown.output
    finally:
        own.stop()
