"""Errors of the command line, without a cluster: each is one line on stderr with a hint and a
non-zero exit, as kubectl says them; the table of `explain`; -h everywhere; NO_COLOR."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException
from urllib3.exceptions import MaxRetryError, NewConnectionError

from pilotboat.cli.errors import ApiRequest, CommandError, explain
from pilotboat.cli.main import CommandLine, main

UNREACHABLE = "https://127.0.0.1:1"
NO_CLUSTER_LINE = (
    f"error: cannot reach the cluster at {UNREACHABLE}: connection refused "
    "(is the cluster running? check --kubeconfig/--context)"
)


def kubeconfig(path: Path, server: str = UNREACHABLE, namespace: str = "shop") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "local",
                      "context": {"cluster": "local", "user": "me", "namespace": namespace}}],
    }))
    return path


def run(*args: str, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, list(args), env={"KUBECONFIG": None, **(env or {})})


def one_error_line(result: click.testing.Result) -> str:
    """The only line on stderr, which must start with `error: `; no traceback anywhere."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args", [
    ["get", "-A"], ["get"], ["get", "cart", "-o", "yaml"], ["status", "cart"],
    ["status", "cart", "--wait", "--timeout", "5s"], ["promote", "cart"], ["abort", "cart"],
    ["retry", "cart", "-A"], ["approve", "orders-split"], ["version"],
])
def test_no_cluster_reachable_is_one_line(args: list[str], tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "config")
    result = run(*args, "--kubeconfig", str(config))
    assert one_error_line(result) == NO_CLUSTER_LINE
    if args[0] == "version":  # as kubectl: the client's version first, then the error
        assert result.stdout.startswith("Client: pilotboat ")
    else:
        assert result.stdout == ""


def test_no_cluster_reachable_through_the_KUBECONFIG_variable(tmp_path: Path) -> None:  # noqa: N802
    config = kubeconfig(tmp_path / "config")
    assert one_error_line(run("get", env={"KUBECONFIG": str(config)})) == NO_CLUSTER_LINE


def test_version_json_says_the_server_error_and_exits_1(tmp_path: Path) -> None:
    result = run("version", "-o", "json", "--kubeconfig", str(kubeconfig(tmp_path / "c")))
    assert one_error_line(result) == NO_CLUSTER_LINE
    report = json.loads(result.stdout)
    assert report["server"] == {"error": NO_CLUSTER_LINE.removeprefix("error: ")}


def test_version_client_only_needs_no_kubeconfig() -> None:
    result = run("version", "--client", "--kubeconfig", "/nonexistent")
    assert result.exit_code == 0 and "Server" not in result.output


@pytest.mark.parametrize(("content", "expected"), [
    ("clusters: [\n", "is not valid YAML at line 2: expected the node content, but found "
                      "'<stream end>' (fix it, or point --kubeconfig or KUBECONFIG at another)"),
    ("hello\n", "is not a kubeconfig (clusters, users and contexts) (fix it, or point "
                "--kubeconfig or KUBECONFIG at another)"),
    ("", "is unusable: Invalid kube-config."),
    ("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
     "Expected key current-context"),
])
def test_a_broken_kubeconfig_is_one_line(content: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(content)
    line = one_error_line(run("get", "--kubeconfig", str(path)))
    assert line.startswith(f"error: kubeconfig {path} "), line
    assert expected in line


def test_a_missing_kubeconfig_is_named(tmp_path: Path) -> None:
    line = one_error_line(run("get", "--kubeconfig", str(tmp_path / "nope")))
    assert line == (f"error: no kubeconfig: {tmp_path / 'nope'} does not exist "
                    "(pass --kubeconfig or set KUBECONFIG)")


def test_the_default_kubeconfig_missing_is_named(tmp_path: Path) -> None:
    line = one_error_line(run("status", "cart", env={"HOME": str(tmp_path),
                                                     "KUBERNETES_SERVICE_HOST": None}))
    assert line == (f"error: no kubeconfig: {tmp_path}/.kube/config does not exist "
                    "(pass --kubeconfig or set KUBECONFIG)")


def test_an_unknown_context_lists_the_known_ones(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "config")
    line = one_error_line(run("get", "--kubeconfig", str(config), "--context", "prod"))
    assert line == f"error: context 'prod' is not in kubeconfig {config} (its contexts: local)"


# What the API server answers, as the kubernetes client raises it.
LIST = ApiRequest("GET", "https://10.0.0.1:6443/apis/pilotboat.dev/v1alpha1/namespaces/shop/"
                         "microservices")
GET_ONE = ApiRequest("GET", LIST.url + "/nope")
PATCH_STATUS = ApiRequest("PATCH", LIST.url + "/cart/status")


def api_error(status: int, reason: str, body: object) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = body if isinstance(body, str) else json.dumps(body)
    return exc


def status_body(code: int, reason: str, message: str, **details: str) -> dict[str, object]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code, **({"details": details} if details else {})}


def refused(exc: ConnectionRefusedError) -> MaxRetryError:
    try:
        raise NewConnectionError(None, "Failed to establish a new connection: "  # type: ignore[arg-type]
                                       "[Errno 111] Connection refused") from exc
    except NewConnectionError as new:
        return MaxRetryError(None, "/api", new)  # type: ignore[arg-type]


FORBIDDEN_LIST = (
    'microservices.pilotboat.dev is forbidden: User "system:serviceaccount:shop:nobody" cannot '
    'list resource "microservices" in API group "pilotboat.dev" in the namespace "shop"'
)
FORBIDDEN_STATUS = (
    'microservices.pilotboat.dev "cart" is forbidden: User "jane" cannot patch resource '
    '"microservices/status" in API group "pilotboat.dev" in the namespace "shop"'
)

EXPLAINED = [
    pytest.param(
        api_error(403, "Forbidden", status_body(403, "Forbidden", FORBIDDEN_LIST,
                                                group="pilotboat.dev", kind="microservices")),
        LIST,
        "forbidden: system:serviceaccount:shop:nobody cannot list microservices.pilotboat.dev in "
        "namespace shop (ask a cluster admin for RBAC that allows it; check with: kubectl auth "
        "can-i list microservices.pilotboat.dev -n shop)", id="403 list"),
    pytest.param(
        api_error(403, "Forbidden", status_body(403, "Forbidden", FORBIDDEN_STATUS)),
        PATCH_STATUS,
        "forbidden: jane cannot patch microservices/status.pilotboat.dev in namespace shop (ask a "
        "cluster admin for RBAC that allows it; check with: kubectl auth can-i patch "
        "microservices.pilotboat.dev --subresource=status -n shop)", id="403 status subresource"),
    pytest.param(
        api_error(403, "Forbidden", status_body(
            403, "Forbidden", 'admission webhook "approvals.pilotboat.dev" denied the request: '
                              "approvals must name a SchemaMigration")),
        None,
        "the API server refused the request (403 Forbidden): admission webhook "
        '"approvals.pilotboat.dev" denied the request: approvals must name a SchemaMigration',
        id="403 webhook"),
    pytest.param(
        api_error(404, "Not Found", "404 page not found\n"), LIST,
        "the cluster does not serve microservices.pilotboat.dev/v1alpha1: the Pilotboat CRDs are "
        "not installed (install the CRDs: kubectl apply --server-side -f crds/, or helm install "
        "charts/pilotboat)", id="404 CRDs missing"),
    pytest.param(
        api_error(404, "Not Found", "404 page not found\n"),
        ApiRequest("GET", "https://10.0.0.1:6443/apis/widgets.example.com/v1/widgets"),
        "the cluster does not serve widgets.widgets.example.com/v1 (is its CRD or API service "
        "installed? kubectl api-resources lists what it serves)", id="404 another group"),
    pytest.param(
        api_error(404, "Not Found", status_body(
            404, "NotFound", 'microservices.pilotboat.dev "nope" not found',
            name="nope", group="pilotboat.dev", kind="microservices")),
        GET_ONE, "Microservice nope not found in namespace shop", id="404 object"),
    pytest.param(
        api_error(404, "Not Found", status_body(404, "NotFound", 'namespaces "x" not found',
                                                name="x", kind="namespaces")),
        ApiRequest("GET", "https://10.0.0.1:6443/api/v1/namespaces/x"),
        "namespaces x not found", id="404 core object"),
    pytest.param(
        api_error(401, "Unauthorized", status_body(401, "Unauthorized", "Unauthorized")), LIST,
        "the cluster at https://10.0.0.1:6443 did not accept your credentials (401 Unauthorized) "
        "(your token or certificate may have expired; check the kubeconfig's user)", id="401"),
    pytest.param(
        api_error(422, "Unprocessable Entity", status_body(
            422, "Invalid", 'Microservice.pilotboat.dev "cart" is invalid: spec.replicas: '
                            "Invalid value: -1")), LIST,
        "the API server refused the request (422 Unprocessable Entity): Microservice."
        'pilotboat.dev "cart" is invalid: spec.replicas: Invalid value: -1', id="422"),
    pytest.param(
        api_error(503, "Service Unavailable", "upstream\nconnect error"), LIST,
        "the API server failed (503 Service Unavailable): upstream connect error (try again; if "
        "it persists, see its logs)", id="503"),
    pytest.param(
        ApiException(status=0, reason="SSLError\n[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                      "verify failed"), LIST,
        "cannot reach the cluster at https://10.0.0.1:6443: TLS failed: SSLError [SSL: "
        "CERTIFICATE_VERIFY_FAILED] certificate verify failed (check the kubeconfig's "
        "certificate-authority-data and server address)", id="TLS"),
    pytest.param(
        refused(ConnectionRefusedError(111, "Connection refused")), LIST,
        "cannot reach the cluster at https://10.0.0.1:6443: connection refused (is the cluster "
        "running? check --kubeconfig/--context)", id="refused"),
    pytest.param(
        ConfigException("Invalid kube-config file. No configuration found."), None,
        "invalid kubeconfig: Invalid kube-config file. No configuration found. (check "
        "--kubeconfig/--context)", id="ConfigException"),
    pytest.param(
        PermissionError(13, "Permission denied", "/home/me/.kube/config"), None,
        "Permission denied: /home/me/.kube/config", id="OSError"),
]


@pytest.mark.parametrize(("exc", "request_", "message"), EXPLAINED)
def test_explain(exc: BaseException, request_: ApiRequest | None, message: str) -> None:
    failure = explain(exc, request_)
    assert failure is not None
    assert failure.format_message() == message
    assert failure.exit_code == 1 and "\n" not in failure.format_message()


def test_explain_reads_the_request_recorded_on_the_error() -> None:
    exc = api_error(404, "Not Found", "404 page not found")
    exc.request = LIST
    failure = explain(exc)
    assert failure is not None and "the Pilotboat CRDs are not installed" in failure.message


def test_a_bug_is_not_explained_away() -> None:
    assert explain(ValueError("a bug")) is None
    assert explain(KeyError("status")) is None


def sample_group() -> click.Group:
    @click.group(cls=CommandLine)
    def sample() -> None:
        pass

    @sample.command()
    def plain() -> None:
        raise click.ClickException("something\nwent wrong")

    @sample.command()
    def bug() -> None:
        raise ValueError("a bug")

    @sample.command()
    def refused() -> None:
        exc = api_error(404, "Not Found", "404 page not found")
        exc.request = LIST
        raise exc

    @sample.command()
    def coloured() -> None:
        click.secho("Healthy", fg="green")

    return sample


def test_the_group_shows_errors_as_one_line_and_keeps_a_bugs_traceback() -> None:
    group = sample_group()
    plain = CliRunner().invoke(group, ["plain"])
    assert (plain.exit_code, plain.stderr) == (1, "error: something went wrong\n")
    refused = CliRunner().invoke(group, ["refused"])
    assert refused.exit_code == 1 and refused.stderr.startswith("error: the cluster does not ")
    bug = CliRunner().invoke(group, ["bug"])
    assert isinstance(bug.exception, ValueError)  # not hidden: a bug keeps its traceback
    debug = CliRunner().invoke(group, ["refused"], env={"PILOTBOAT_DEBUG": "1"})
    assert isinstance(debug.exception, ApiException)


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("1", False), ("", True)])
def test_NO_COLOR_turns_colour_off(no_color: str | None, coloured: bool) -> None:  # noqa: N802
    result = CliRunner().invoke(sample_group(), ["coloured"], color=True,
                                env={"NO_COLOR": no_color})
    assert ("\x1b[" in result.output) is coloured
    assert "Healthy" in result.output


def test_command_error_show_is_one_line_on_stderr() -> None:
    error = CommandError("it broke\n  badly", "try again", exit_code=2)
    assert (error.format_message(), error.exit_code) == ("it broke badly (try again)", 2)


def every_command(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += every_command(command, (*path, name))
        else:
            found.append((*path, name))
    return found


@pytest.mark.parametrize("command", every_command(main), ids=" ".join)
def test_dash_h_is_help_everywhere(command: tuple[str, ...]) -> None:
    result = run(*command, "-h")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: main {' '.join(command)}".rstrip() + " ")
    assert "-h, --help" in result.stdout


CLUSTER_COMMANDS = [("get",), ("status",), ("promote",), ("abort",), ("retry",), ("approve",),
                    ("dashboard",)]


@pytest.mark.parametrize("command", CLUSTER_COMMANDS, ids=" ".join)
def test_commands_that_talk_to_the_cluster_take_the_common_options(
    command: tuple[str, ...],
) -> None:
    help_text = run(*command, "-h").stdout
    for option in ("--kubeconfig", "--context", "-n, --namespace", "-A, --all-namespaces"):
        assert option in help_text, option


def complete(words: str, tmp_path: Path) -> click.testing.Result:
    config = kubeconfig(tmp_path / "config")
    return CliRunner().invoke(main, [], prog_name="pilotboat", env={
        "_PILOTBOAT_COMPLETE": "bash_complete", "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1), "KUBECONFIG": str(config)})


def test_name_completion_is_silently_empty_without_a_cluster(tmp_path: Path) -> None:
    result = complete("pilotboat status ", tmp_path)
    assert (result.exit_code, result.output.strip()) == (0, "")


def test_context_completion_reads_the_kubeconfig(tmp_path: Path) -> None:
    result = complete("pilotboat get --context ", tmp_path)
    assert (result.exit_code, result.output) == (0, "plain,local\n")


def test_the_completion_script_is_clicks() -> None:
    result = CliRunner().invoke(main, [], prog_name="pilotboat",
                                env={"_PILOTBOAT_COMPLETE": "bash_source"})
    assert result.exit_code == 0 and "_pilotboat_completion()" in result.output
