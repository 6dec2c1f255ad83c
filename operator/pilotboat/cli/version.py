"""`pilotboat version`: this client, and (when reachable) the cluster and the CRDs it serves."""

from __future__ import annotations

import json
from importlib.metadata import version as _distribution_version
from typing import Any

import click

from pilotboat import API_VERSION, GROUP
from pilotboat.api.catalog import KINDS

__all__ = ["version"]


def _server(kubeconfig: str | None) -> dict[str, Any]:
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    from pilotboat.cli.kubeclient import connect

    try:
        kube = connect(kubeconfig)
        info = kubernetes.client.VersionApi(kube.api_client).get_code()
        served = {}
        for kind in KINDS:
            crd = kube.get("CustomResourceDefinition", None, kind.crd_name)
            versions = [v["name"] for v in (crd or {}).get("spec", {}).get("versions", [])
                        if v.get("served")]
            served[kind.kind] = versions or None
    except (ApiException, kubernetes.config.ConfigException, OSError) as exc:
        return {"error": str(exc).splitlines()[0]}
    return {"kubernetes": info.git_version, "crds": served}


@click.command()
@click.option("--client", "client_only", is_flag=True, help="This client only; no cluster.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None)
def version(client_only: bool, output: str, kubeconfig: str | None) -> None:
    """Print the client version, the API version it speaks, and what the cluster serves."""
    result: dict[str, Any] = {"client": _distribution_version("pilotboat"),
                              "apiVersion": API_VERSION}
    if not client_only:
        result["server"] = _server(kubeconfig)
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"Client: pilotboat {result['client']} ({result['apiVersion']})")
    server = result.get("server")
    if server is None:
        return
    if "error" in server:
        click.secho(f"Server: unreachable: {server['error']}", fg="yellow")
        return
    click.echo(f"Server: Kubernetes {server['kubernetes']}")
    for kind, versions in server["crds"].items():
        served = ", ".join(versions) if versions else click.style("not installed", fg="red")
        click.echo(f"  {kind.lower()}s.{GROUP}: {served}")
