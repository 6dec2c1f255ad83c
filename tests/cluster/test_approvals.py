"""Who approved, as the API server itself vouches: the admission policy installed with the
CRDs, the webhook's refusals, and approvals that never count."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.core.migration import checksum
from pilotboat.testing import OperatorProcess
from tests.cluster.test_migrations import (
    CONTRACT,
    condition,
    given_approver,
    schema_migration,
)
from tests.story import Story

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "manifests" / "crds" / "pilotboat-admission-policies.yaml"
BINDING = "pilotboat-approver-identity"


def whoami(kubeconfig: Path) -> str:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    review = kubernetes.client.AuthenticationV1Api(api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return str(review.status.user_info.username)


def approval(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "MigrationApproval", "metadata": {"name": name},
            "spec": {"migration": "customer-column", **spec}}


def valid_condition(story: Story, name: str) -> dict[str, Any]:
    # Long enough for the first test of a session on a cold cluster, where the shared
    # operator's first watch events have come a minute or more after it was live.
    obj = story.wait_for("MigrationApproval", name,
                         lambda o: (o or {}).get("status", {}).get("valid") is not None,
                         timeout=300, what="judged")
    return condition(obj, "Valid")


@pytest.fixture
def restore_policies(kube: Kube) -> Iterator[None]:
    yield
    for doc in yaml.safe_load_all(POLICIES.read_text()):
        kube.apply(doc)


def test_the_api_server_refuses_a_forged_approver_with_no_webhook_running(
    kube: Kube, private_namespace: str, kubeconfig: Path
) -> None:
    story = Story(kube, private_namespace)  # no operator, so no webhook, watches it
    story.given(schema_migration())
    me = whoami(kubeconfig)

    shown = checksum(CONTRACT)
    for forged in (approval("cto-says-yes", approver="the-cto", checksum=shown),
                   approval("nobody", checksum=shown)):
        with pytest.raises(ApiException) as refused:
            story.given(forged)
        assert refused.value.status == 403
        assert f"spec.approver must be the user creating the approval: {me}" in \
            str(refused.value.body)

    with pytest.raises(ApiException) as unsaid:
        story.given(approval("what", approver=me))
    assert "spec.checksum must name the SQL" in str(unsaid.value.body)
    story.given(approval("honest", approver=me, checksum=shown))
    with pytest.raises(ApiException) as changed:
        story.patch("MigrationApproval", "honest", {"spec": {"reason": "later"}})
    assert changed.value.status == 403 and "cannot change" in str(changed.value.body)


def test_an_approval_made_while_the_policy_was_missing_never_counts(
    kube: Kube, private_namespace: str, kubeconfig: Path, tmp_path: Path,
    restore_policies: None,
) -> None:
    story = Story(kube, private_namespace)
    story.given(schema_migration())
    me = whoami(kubeconfig)

    kube.delete("ValidatingAdmissionPolicyBinding", None, BINDING)
    deadline = time.monotonic() + 30
    while True:  # the API server stops enforcing a deleted binding within moments
        try:
            story.given(approval("forged", approver="the-cto",
                                 checksum=checksum(CONTRACT)))
            break
        except ApiException:
            assert time.monotonic() < deadline, "the policy still refuses after 30 s"
            time.sleep(0.5)
    for doc in yaml.safe_load_all(POLICIES.read_text()):
        kube.apply(doc)
    time.sleep(1.1)  # creation times are in seconds: the honest one is strictly later
    deadline = time.monotonic() + 30
    while True:
        try:
            story.given(approval("honest", approver=me, checksum=checksum(CONTRACT)))
            break
        except ApiException:  # the re-created binding takes a moment to be enforced
            assert time.monotonic() < deadline
            time.sleep(0.5)

    # An operator without webhooks: identity rests on the admission policy alone.
    own = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace,
                                                 "--no-webhooks"])
    own.start()
    try:
        forged = valid_condition(story, "forged")
        honest = valid_condition(story, "honest")
    finally:
        own.stop()
    assert (forged["status"], forged["reason"]) == ("False", "IdentityMissing"), forged
    assert (honest["status"], honest["reason"]) == ("True", "ApprovalValid"), honest


@pytest.mark.usefixtures("operator")
def test_stale_checksums_other_migrations_and_self_approvals_are_refused(
    story: Story, kubeconfig: Path
) -> None:
    migration = schema_migration(contract={"sql": CONTRACT, "soak": "2s",
                                           "approval": {"separateApprover": True}})
    deadline = time.monotonic() + 60
    while True:  # until the operator's webhooks serve: the policy wants the author recorded
        try:
            story.given(migration)
            break
        except ApiException as exc:
            assert time.monotonic() < deadline, exc.body
            time.sleep(0.5)
    mig = story.get("SchemaMigration", "customer-column")
    assert mig is not None
    me = whoami(kubeconfig)
    assert mig["metadata"]["annotations"]["pilotboat.dev/contract-author"] == me
    as_dba, dba = given_approver(story.kube, story.namespace, kubeconfig)
    shown = checksum(CONTRACT)

    with pytest.raises(ApiException) as own:
        story.given(approval("mine", checksum=shown))
    assert own.value.status == 403 and "may not approve it" in str(own.value.body)

    with pytest.raises(ApiException) as stale:
        as_dba.create({**approval("stale", checksum=checksum("DROP TABLE x;")),
                       "metadata": {"name": "stale", "namespace": story.namespace}})
    assert stale.value.status == 403 and "is stale" in str(stale.value.body)

    with pytest.raises(ApiException) as other:
        as_dba.create({**approval("other", migrationUID="0000-gone", checksum=shown),
                       "metadata": {"name": "other", "namespace": story.namespace}})
    assert other.value.status == 403 and "re-created" in str(other.value.body)

    as_dba.create({**approval("ok", checksum=shown),
                   "metadata": {"name": "ok", "namespace": story.namespace}})
    recorded = story.get("MigrationApproval", "ok")
    assert recorded is not None
    assert recorded["spec"]["approver"] == dba
    assert recorded["spec"]["migrationUID"] == mig["metadata"]["uid"]
    valid = valid_condition(story, "ok")
    assert (valid["status"], valid["reason"]) == ("True", "ApprovalValid"), valid
