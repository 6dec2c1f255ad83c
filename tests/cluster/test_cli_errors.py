"""The command line's errors against the real API server: a user RBAC allows nothing is told
which verb on which resource it may not use, and by whom; a kubeconfig with the wrong CA
fails its TLS handshake in one line; what the server answers for a group or version it does
not serve is what `explain` calls the CRDs missing; names complete from the cluster."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click
import kubernetes
import pytest
import yaml
from click.testing import CliRunner

from pilotboat.adapters.kube import Kube
from pilotboat.cli.errors import explain
from pilotboat.cli.kubeclient import connect
from pilotboat.cli.main import main as cli
from tests.manifests import microservice
from tests.story import Story


def as_service_account(kube: Kube, admin: Path, namespace: str, name: str, path: Path,
                       rules: list[dict[str, Any]] | None = None) -> Path:
    """A kubeconfig acting as ServiceAccount ``name`` (a TokenRequest token), bound to a Role
    with ``rules`` when given, to nothing at all otherwise."""
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace}})
    if rules:
        kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": name, "namespace": namespace}, "rules": rules})
        kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": namespace},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": name,
                                  "namespace": namespace}]})
    token = kubernetes.client.CoreV1Api(kube.api_client).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 600}}).status.token
    config = yaml.safe_load(admin.read_text())
    config["users"] = [{"name": name, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = name
    path.write_text(yaml.safe_dump(config))
    return path


def run(kubeconfig: Path, *args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, [*args, "--kubeconfig", str(kubeconfig)])


def one_error_line(result: click.testing.Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_user_without_rbac_is_told_what_they_may_not_do(
    story: Story, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = story.namespace
    nobody = as_service_account(story.kube, kubeconfig, ns, "nobody", tmp_path / "nobody")

    line = one_error_line(run(nobody, "get", "-n", ns))

    assert line == (
        f"error: forbidden: system:serviceaccount:{ns}:nobody cannot list "
        f"microservices.pilotboat.dev in namespace {ns} (ask a cluster admin for RBAC that "
        f"allows it; check with: kubectl auth can-i list microservices.pilotboat.dev -n {ns})")
    everywhere = one_error_line(run(nobody, "get", "-A"))
    assert everywhere == (
        f"error: forbidden: system:serviceaccount:{ns}:nobody cannot list "
        "microservices.pilotboat.dev cluster-wide (ask a cluster admin for RBAC that allows it; "
        "check with: kubectl auth can-i list microservices.pilotboat.dev -A)")


def test_a_viewer_may_read_a_release_but_not_steer_it(
    story: Story, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = story.namespace
    story.given(microservice("cart"))
    viewer = as_service_account(
        story.kube, kubeconfig, ns, "viewer", tmp_path / "viewer",
        rules=[{"apiGroups": ["pilotboat.dev"], "resources": ["microservices"],
                "verbs": ["get", "list"]}])

    assert run(viewer, "status", "cart", "-n", ns).exit_code == 0
    line = one_error_line(run(viewer, "promote", "cart", "-n", ns))

    assert line == (
        f"error: forbidden: system:serviceaccount:{ns}:viewer cannot patch "
        f"microservices/status.pilotboat.dev in namespace {ns} (ask a cluster admin for RBAC "
        "that allows it; check with: kubectl auth can-i patch microservices.pilotboat.dev "
        f"--subresource=status -n {ns})")
    missing = one_error_line(run(viewer, "status", "nope", "-n", ns))
    assert missing == (f"error: Microservice nope not found in namespace {ns} "
                       f"(list them: pilotboat get -n {ns})")


def raw_get(kube: Kube, path: str) -> BaseException:
    """What the real server answers to GET ``path``, as the command line's client raises it."""
    api = kube.api_client
    method, url, headers, body, post = api.param_serialize(
        method="GET", resource_path=path, header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    with pytest.raises(Exception) as raised:
        api.call_api(method, url, header_params=headers, body=body, post_params=post)
    return raised.value


def test_a_group_or_version_the_server_does_not_serve(kubeconfig: Path) -> None:
    kube = connect(str(kubeconfig))

    unserved_version = explain(raw_get(kube, "/apis/pilotboat.dev/v1alpha9/namespaces/x/"
                                             "microservices"))
    assert unserved_version is not None
    assert unserved_version.format_message() == (
        "the cluster does not serve microservices.pilotboat.dev/v1alpha9: the Pilotboat CRDs "
        "are not installed (install the CRDs: kubectl apply --server-side -f crds/, or helm "
        "install charts/pilotboat)")
    unserved_group = explain(raw_get(kube, "/apis/widgets.example.com/v1/widgets"))
    assert unserved_group is not None
    assert unserved_group.message == "the cluster does not serve widgets.widgets.example.com/v1"
    missing = explain(raw_get(kube, "/api/v1/namespaces/pilotboat-no-such-namespace"))
    assert missing is not None
    assert missing.message == "namespaces pilotboat-no-such-namespace not found"


SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")


def test_the_wrong_certificate_authority_fails_in_one_line(
    kubeconfig: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    other_ca = base64.b64encode(SYSTEM_CAS.read_bytes()).decode()  # none signed the server's
    for cluster in config["clusters"]:
        cluster["cluster"].pop("certificate-authority", None)
        cluster["cluster"]["certificate-authority-data"] = other_ca
    wrong = tmp_path / "wrong-ca"
    wrong.write_text(yaml.safe_dump(config))

    line = one_error_line(run(wrong, "get"))

    server = config["clusters"][0]["cluster"]["server"]
    assert line.startswith(f"error: cannot reach the cluster at {server}: TLS failed: "), line
    assert "CERTIFICATE_VERIFY_FAILED" in line
    assert line.endswith("(check the kubeconfig's certificate-authority-data and server "
                         "address)")


def test_names_complete_from_the_cluster(story: Story, kubeconfig: Path) -> None:
    story.given(microservice("cart"), microservice("catalog"), microservice("search"))

    def complete(words: str) -> list[str]:
        result = CliRunner().invoke(cli, [], prog_name="pilotboat", env={
            "_PILOTBOAT_COMPLETE": "bash_complete", "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1), "KUBECONFIG": str(kubeconfig)})
        assert result.exit_code == 0, result.output
        return [line.removeprefix("plain,") for line in result.output.split()]

    assert complete(f"pilotboat status -n {story.namespace} ") == ["cart", "catalog", "search"]
    assert complete(f"pilotboat promote -n {story.namespace} ca") == ["cart", "catalog"]
    assert complete(f"pilotboat get -n {story.namespace} s") == ["search"]
    assert story.namespace in complete(f"pilotboat get -n {story.namespace[:8]}")
