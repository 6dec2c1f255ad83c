"""The command line's connection to the cluster: the user's own kubeconfig, context and
identity.

The kubeconfig is the one kubectl would use: ``--kubeconfig``, else ``$KUBECONFIG`` (a list
of files, merged), else ``~/.kube/config``; in a pod with none of them, its service account.
Every error from the API server carries the request it answers (``exc.request``, an
`ApiRequest`), so `pilotboat.cli.errors.explain` can tell a missing object from a kind the
cluster does not serve.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException
from urllib3 import exceptions as _urllib3

from pilotboat.adapters.kube import Kube
from pilotboat.cli.errors import ApiRequest, CommandError, one_line

__all__ = ["FIELD_MANAGER", "connect", "current_namespace", "kubeconfig_files"]

FIELD_MANAGER = "kubectl-pilotboat"
_DEFAULT_KUBECONFIG = "~/.kube/config"
_KUBECONFIG_HINT = "pass --kubeconfig or set KUBECONFIG"
_FIX_HINT = "fix it, or point --kubeconfig or KUBECONFIG at another"


class _RequestRecordingClient(kubernetes.client.ApiClient):
    """An `ApiClient` whose errors name the request they answer."""

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().call_api(method, url, *args, **kwargs)
        except (ApiException, _urllib3.HTTPError) as exc:
            setattr(exc, "request", ApiRequest(method, url))  # noqa: B010
            raise
        if 200 <= response.status <= 299:
            return response
        response.read()  # type: ignore[no-untyped-call]
        try:
            raise ApiException.from_response(
                http_resp=response, body=(response.data or b"").decode(errors="replace"), data=None
            )
        except ApiException as exc:
            setattr(exc, "request", ApiRequest(method, url))  # noqa: B010
            raise


def kubeconfig_files(kubeconfig: str | None) -> list[Path]:
    """The files a kubeconfig setting names (``$KUBECONFIG``'s ``:``-separated list too)."""
    given = kubeconfig or os.environ.get("KUBECONFIG") or _DEFAULT_KUBECONFIG
    return [Path(p).expanduser() for p in given.split(os.pathsep) if p]


def _readable(kubeconfig: str | None) -> str | None:
    """The kubeconfig setting to load, None for the pod's service account; CommandError
    when none of its files exists."""
    files = kubeconfig_files(kubeconfig)
    if any(f.is_file() for f in files):
        return os.pathsep.join(str(f) for f in files)
    if not kubeconfig and not os.environ.get("KUBECONFIG") and os.environ.get(
        "KUBERNETES_SERVICE_HOST"
    ):
        return None
    names = ", ".join(str(f) for f in files)
    raise CommandError(f"no kubeconfig: {names} does not exist", _KUBECONFIG_HINT)


def _load(config: Any, kubeconfig: str | None, context: str | None) -> None:
    path = _readable(kubeconfig)
    if path is None:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        return
    try:
        if context is not None:
            contexts, _ = kubernetes.config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
            names = sorted(str(c.get("name")) for c in contexts or [])
            if context not in names:
                raise CommandError(
                    f"context {context!r} is not in kubeconfig {path}",
                    f"its contexts: {', '.join(names) or 'none'}",
                )
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=config
        )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CommandError(
            f"kubeconfig {path} is not valid YAML{where}: {one_line(problem)}",
            _FIX_HINT,
        ) from None
    except kubernetes.config.ConfigException as exc:
        said = one_line(str(exc), 200)
        raise CommandError(
            f"kubeconfig {path} is unusable: {said}",
            "pass --context, or choose one: kubectl config use-context NAME"
            if "current-context" in said
            else _FIX_HINT,
        ) from None
    except (AttributeError, TypeError, KeyError):  # YAML, but not a kubeconfig's mapping
        raise CommandError(
            f"kubeconfig {path} is not a kubeconfig (clusters, users and contexts)", _FIX_HINT
        ) from None


def connect(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    timeout: float = 30.0,
    retries: int | None = None,
) -> Kube:
    """A client acting as the kubeconfig's user in ``context`` (the current one when None);
    each request gives up after ``timeout`` seconds and ``retries`` retries (urllib3's
    default of 3 when None).

    Raises `CommandError` when the kubeconfig is missing, broken or has no such context."""
    config = kubernetes.client.Configuration()
    _load(config, kubeconfig, context)
    config.retries = retries
    return Kube(_RequestRecordingClient(configuration=config), FIELD_MANAGER, timeout=timeout)


def current_namespace(kubeconfig: str | None, context: str | None = None) -> str:
    """The namespace of ``context`` (default: the kubeconfig's current one), `default` when
    it names none; in a pod without a kubeconfig, the pod's namespace."""
    try:
        path = _readable(kubeconfig)
        if path is None:
            sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            return sa.read_text().strip() if sa.is_file() else "default"
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, CommandError, OSError, yaml.YAMLError):
        return "default"
    if context is not None:
        active = next((c for c in contexts or [] if c.get("name") == context), None)
    return str(((active or {}).get("context") or {}).get("namespace") or "default")
