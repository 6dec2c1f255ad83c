"""What every command that talks to the cluster takes, as kubectl spells it: ``--kubeconfig``,
``--context``, ``-n/--namespace``, ``-A/--all-namespaces``; and the shell completion of the
names they are followed by, read from the cluster (silently nothing when it cannot be read).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import kubernetes
from click.shell_completion import CompletionItem

from pilotboat import GROUP, VERSION
from pilotboat.adapters.kube import Kube, resource_for
from pilotboat.cli.errors import CommandError
from pilotboat.cli.kubeclient import connect, current_namespace, kubeconfig_files

__all__ = ["ClusterTarget", "cluster_options", "complete_names", "fetch", "locate"]

F = TypeVar("F", bound=Callable[..., Any])
Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


@dataclass(frozen=True)
class ClusterTarget:
    """Which cluster, as whom, and where in it a command acts."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False

    def connect(self, *, timeout: float = 30.0, retries: int | None = None) -> Kube:
        return connect(self.kubeconfig, self.context, timeout=timeout, retries=retries)

    @property
    def default_namespace(self) -> str:
        """``-n``, else the context's namespace, else ``default``."""
        return self.namespace or current_namespace(self.kubeconfig, self.context)

    @property
    def scope(self) -> str | None:
        """The namespace to list in; None for every namespace (``-A``)."""
        return None if self.all_namespaces else self.default_namespace


def _target(ctx: click.Context) -> ClusterTarget:
    params = ctx.params
    return ClusterTarget(
        params.get("kubeconfig") or None,
        params.get("context") or None,
        params.get("namespace") or None,
        bool(params.get("all_namespaces")),
    )


def complete_names(kind: str, *, everywhere: bool = False) -> Completer:
    """A ``shell_complete`` for an argument naming a ``kind`` object: the names in the
    namespace the command line has chosen so far (every namespace with ``everywhere`` or
    ``-A``); nothing at all when the cluster cannot be asked."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        target = _target(ctx)
        try:
            namespace = None if everywhere or not resource_for(kind).namespaced else target.scope
            items = target.connect(timeout=3, retries=0).list(kind, namespace)
        except Exception:  # completion must never fail the shell
            return []
        names = sorted({str(i["metadata"]["name"]) for i in items})
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]

    return complete


def _complete_contexts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        path = os.pathsep.join(str(f) for f in kubeconfig_files(ctx.params.get("kubeconfig")))
        contexts, _ = kubernetes.config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except Exception:  # completion must never fail the shell
        return []
    names = sorted(str(c.get("name")) for c in contexts or [])
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def cluster_options(*, namespaced: bool = True) -> Callable[[F], F]:
    """Add ``--kubeconfig`` and ``--context`` (and, when ``namespaced``, ``-n`` and ``-A``)
    to a command, which receives them as one ``target: ClusterTarget``."""
    options = [
        click.option(
            "--kubeconfig",
            envvar="KUBECONFIG",
            default=None,
            metavar="PATH",
            help="Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).",
        ),
        click.option(
            "--context",
            default=None,
            shell_complete=_complete_contexts,
            help="Kubeconfig context (default: its current context).",
        ),
    ]
    if namespaced:
        options += [
            click.option(
                "-n",
                "--namespace",
                default=None,
                shell_complete=complete_names("Namespace", everywhere=True),
                help="Namespace (default: the context's, else 'default').",
            ),
            click.option(
                "-A", "--all-namespaces", is_flag=True, help="Every namespace."
            ),
        ]

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def with_target(
            *args: Any,
            kubeconfig: str | None,
            context: str | None,
            namespace: str | None = None,
            all_namespaces: bool = False,
            **kwargs: Any,
        ) -> Any:
            target = ClusterTarget(kubeconfig, context, namespace, all_namespaces)
            return command(*args, target=target, **kwargs)

        wrapped: Any = with_target
        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


def _missing(kube: Kube, kind: str, namespace: str | None, name: str) -> CommandError:
    """Why ``kind`` ``name`` is not there: the object is not, or its CRD is not installed."""
    resource = resource_for(kind)
    if resource.group == GROUP and resource.plural not in kube.served(GROUP, VERSION):
        return CommandError(
            f"the cluster does not serve {resource.plural}.{GROUP}/{VERSION}: "
            "the Pilotboat CRDs are not installed",
            "install the CRDs: kubectl apply --server-side -f crds/, or helm install "
            "charts/pilotboat",
        )
    where = f" in namespace {namespace}" if namespace else " in any namespace"
    listing = (
        f"pilotboat get -n {namespace}"
        if kind == "Microservice" and namespace
        else f"kubectl get {resource.plural}.{resource.group} "
        + (f"-n {namespace}" if namespace else "-A")
    )
    return CommandError(f"{kind} {name} not found{where}", f"list them: {listing}")


def fetch(kube: Kube, kind: str, namespace: str, name: str) -> dict[str, Any]:
    """The object, or a `CommandError` that says whether it or its CRD is missing."""
    obj = kube.get(kind, namespace, name)
    if obj is None:
        raise _missing(kube, kind, namespace, name)
    return obj


def locate(kube: Kube, target: ClusterTarget, kind: str, name: str) -> str:
    """The namespace of ``kind`` ``name``: ``-n`` (or the context's), or with ``-A`` the one
    namespace that holds an object of that name."""
    if not target.all_namespaces:
        return target.default_namespace
    found = sorted(
        str(o["metadata"]["namespace"]) for o in kube.list(kind) if o["metadata"]["name"] == name
    )
    if not found:
        raise _missing(kube, kind, None, name)
    if len(found) > 1:
        raise CommandError(
            f"{kind} {name} is in {len(found)} namespaces: {', '.join(found)}",
            "pick one with -n",
        )
    return found[0]
