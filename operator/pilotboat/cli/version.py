"""`pilotboat version`: this client, and (when reachable) the cluster and the CRDs it serves."""

from __future__ import annotations

import json
from importlib.metadata import version as _distribution_version
from typing import Any

import click

from pilotboat import API_VERSION, GROUP
from pilotboat.api.catalog import KINDS
from pilotboat.cli.errors import CommandError, explain
from pilotboat.cli.options import ClusterTarget, cluster_options

__all__ = ["version"]


def _server(target: ClusterTarget) -> dict[str, Any]:
    """What the cluster runs and which CRD versions it serves; ``{"error": …}`` (one line,
    with its hint) when it cannot be asked."""
    import kubernetes

    try:
        kube = target.connect()
        info = kubernetes.client.VersionApi(kube.api_client).get_code()
        served = {}
        for kind in KINDS:
            crd = kube.get("CustomResourceDefinition", None, kind.crd_name)
            versions = [v["name"] for v in (crd or {}).get("spec", {}).get("versions", [])
                        if v.get("served")]
            served[kind.kind] = versions or None
    except Exception as exc:
        failure = explain(exc)
        if failure is None:
            raise
        return {"error": failure.format_message(), "exitCode": failure.exit_code}
    return {"kubernetes": info.git_version, "crds": served}


@click.command()
@click.option("--client", "client_only", is_flag=True, help="This client only; no cluster.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@cluster_options(namespaced=False)
def version(client_only: bool, output: str, target: ClusterTarget) -> None:
    """Print the client version, the API version it speaks, and what the cluster serves.

    Exits 1, after the client's version, when the cluster cannot be asked (as kubectl does)."""
    result: dict[str, Any] = {"client": _distribution_version("pilotboat"),
                              "apiVersion": API_VERSION}
    if not client_only:
        result["server"] = _server(target)
    error = (result.get("server") or {}).pop("exitCode", None)
    if output == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"Client: pilotboat {result['client']} ({result['apiVersion']})")
        server = result.get("server")
        if server and "error" not in server:
            click.echo(f"Server: Kubernetes {server['kubernetes']}")
            plurals = {kind.kind: kind.plural for kind in KINDS}
            for kind, versions in server["crds"].items():
                served = ", ".join(versions) if versions else click.style("not installed",
                                                                           fg="red")
                click.echo(f"  {plurals[kind]}.{GROUP}: {served}")
    if error is not None:
        raise CommandError(result["server"]["error"], exit_code=error)
