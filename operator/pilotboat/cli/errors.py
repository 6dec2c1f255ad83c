"""What went wrong, in one line with a hint, the way kubectl says it.

`explain` turns what the Kubernetes client raises (an `ApiException` from the API server,
a urllib3 error when the server cannot be reached, a `ConfigException` from a kubeconfig,
an `OSError`) into a `CommandError`; the command line's group calls it once for every
command (`pilotboat.cli.main`), so no command catches these itself. `explain` is a pure
function of the exception and the request it answers, so its table is tested without a
cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

import click
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException
from urllib3 import exceptions as _urllib3

from pilotboat import GROUP
from pilotboat.api.catalog import KINDS

__all__ = ["EXIT_ERROR", "EXIT_TIMEOUT", "ApiRequest", "CommandError", "explain", "one_line"]

EXIT_ERROR = 1
"""Every error: the cluster unreachable, refused, a missing object, a bad kubeconfig."""
EXIT_TIMEOUT = 2
"""`status --wait` gave up (click's usage errors exit 2 as well)."""

_REACH_HINT = "is the cluster running? check --kubeconfig/--context"
_CRDS_HINT = (
    "install the CRDs: kubectl apply --server-side -f crds/, or helm install charts/pilotboat"
)
_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?(?: in the namespace "(?P<namespace>[^"]+)")?'
)
_API_PATH = re.compile(
    r"^/apis?/(?:(?P<group>[^/]+)/)?(?P<version>v[^/]*)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?"
)
_ERRNO = re.compile(r"\[Errno -?\d+\] (?P<why>[^'\"\)]+)")
_KIND_OF_PLURAL = {kind.plural: kind.kind for kind in KINDS}


@dataclass(frozen=True)
class ApiRequest:
    """The request an error answers: its method and full URL."""

    method: str
    url: str

    @property
    def server(self) -> str:
        """``scheme://host:port`` of the API server asked."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


class CommandError(click.ClickException):
    """An error shown as one line on stderr, ``error: what (hint)``, with its exit code."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_ERROR):
        super().__init__(one_line(message))
        self.hint = hint
        self.exit_code = exit_code  # type: ignore[misc]  # click's is per class; ours per error

    def format_message(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with its whitespace (newlines too) collapsed, cut at ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def explain(exc: BaseException, request: ApiRequest | None = None) -> CommandError | None:
    """The `CommandError` that says what ``exc`` means for the person at the terminal, or
    None when it is not an error of talking to the cluster (a bug, which keeps its
    traceback). ``request`` defaults to the one `pilotboat.cli.kubeclient` recorded on
    ``exc``."""
    if isinstance(exc, CommandError):
        return exc
    request = request or getattr(exc, "request", None)
    if isinstance(exc, ApiException):
        return _from_api_server(exc, request)
    if isinstance(exc, _urllib3.HTTPError):
        return _unreachable(exc, request)
    if isinstance(exc, ConfigException):
        return CommandError(
            f"invalid kubeconfig: {one_line(str(exc))}", "check --kubeconfig/--context"
        )
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return CommandError(f"{exc.strerror or exc}{where}")
    return None


def _status_body(exc: ApiException) -> dict[str, Any]:
    """The API server's `Status` object, or {} when the body is something else (the plain
    ``404 page not found`` of a path nobody serves, a proxy's HTML)."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


def _from_api_server(exc: ApiException, request: ApiRequest | None) -> CommandError:
    status = _status_body(exc)
    said = status.get("message") or one_line(str(exc.body or ""), 200) or exc.reason or ""
    code = f"{exc.status} {exc.reason or ''}".strip()
    server = request.server if request else "the API server"
    if not exc.status:  # the client's own failure before any answer: TLS, for one
        why = one_line(str(exc.reason or ""), 200)
        tls = why.startswith("SSLError")
        return CommandError(
            f"cannot reach the cluster at {server}: {'TLS failed: ' if tls else ''}{why}",
            "check the kubeconfig's certificate-authority-data and server address"
            if tls
            else _REACH_HINT,
        )
    if exc.status == 401:
        return CommandError(
            f"the cluster at {server} did not accept your credentials ({code})",
            "your token or certificate may have expired; check the kubeconfig's user",
        )
    if exc.status == 403:
        return _forbidden(said, code)
    if exc.status == 404:
        return _not_found(status, request)
    if exc.status and exc.status >= 500:
        return CommandError(
            f"the API server failed ({code}): {said}", "try again; if it persists, see its logs"
        )
    return CommandError(f"the API server refused the request ({code}): {said}")


def _forbidden(said: str, code: str) -> CommandError:
    match = _FORBIDDEN.search(said)
    if match is None:  # an admission webhook's refusal, for one
        return CommandError(f"the API server refused the request ({code}): {said}")
    resource, _, subresource = match["resource"].partition("/")
    qualified = f"{resource}.{match['group']}" if match["group"] else resource
    scope = f" -n {match['namespace']}" if match["namespace"] else " -A"
    check = (
        f"kubectl auth can-i {match['verb']} {qualified}"
        + (f" --subresource={subresource}" if subresource else "")
        + scope
    )
    where = f" in namespace {match['namespace']}" if match["namespace"] else " cluster-wide"
    return CommandError(
        f"forbidden: {match['user']} cannot {match['verb']} {match['resource']}"
        f"{'.' + match['group'] if match['group'] else ''}{where}",
        f"ask a cluster admin for RBAC that allows it; check with: {check}",
    )


def _not_found(status: dict[str, Any], request: ApiRequest | None) -> CommandError:
    details = status.get("details") or {}
    path = _API_PATH.match(request.path) if request else None
    namespace = path["namespace"] if path else None
    if details.get("name"):  # the resource is served; the object is not there
        plural, group = str(details.get("kind") or ""), details.get("group")
        if group == GROUP and plural in _KIND_OF_PLURAL:
            what = _KIND_OF_PLURAL[plural]
        else:
            what = f"{plural}.{group}" if group else plural
        where = f" in namespace {namespace}" if namespace else ""
        return CommandError(f"{what} {details['name']} not found{where}")
    if path is None:
        return CommandError(f"the API server has no such resource: {status.get('message', '')}")
    served = f"{path['plural']}.{path['group']}" if path["group"] else path["plural"]
    if path["group"] == GROUP:
        return CommandError(
            f"the cluster does not serve {served}/{path['version']}: "
            "the Pilotboat CRDs are not installed",
            _CRDS_HINT,
        )
    return CommandError(
        f"the cluster does not serve {served}/{path['version']}",
        "is its CRD or API service installed? kubectl api-resources lists what it serves",
    )


def _cause(exc: BaseException) -> BaseException:
    """The innermost cause: urllib3 wraps the socket's error once or twice."""
    seen = exc
    while True:
        inner = getattr(seen, "reason", None) if isinstance(seen, _urllib3.MaxRetryError) else None
        inner = inner or seen.__cause__ or seen.__context__
        if not isinstance(inner, BaseException) or inner is seen:
            return seen
        seen = inner


def _why(exc: _urllib3.HTTPError) -> tuple[str, str]:
    """Why the connection failed, in words, and the hint for it."""
    reason = exc.reason if isinstance(exc, _urllib3.MaxRetryError) else exc
    root = _cause(exc)
    if isinstance(reason, _urllib3.NameResolutionError):
        return "cannot resolve the host name", _REACH_HINT
    if isinstance(reason, _urllib3.SSLError) or isinstance(root, _urllib3.SSLError):
        return (
            f"TLS failed: {one_line(str(root), 160)}",
            "check the kubeconfig's certificate-authority-data and server address",
        )
    if isinstance(root, ConnectionRefusedError):
        return "connection refused", _REACH_HINT
    if isinstance(reason, _urllib3.NewConnectionError):
        errno = _ERRNO.search(str(reason))
        return (errno["why"].strip().lower() if errno else "cannot connect"), _REACH_HINT
    if isinstance(reason, _urllib3.ConnectTimeoutError):
        return "connection timed out", _REACH_HINT
    if isinstance(reason, _urllib3.ReadTimeoutError):
        return "no answer in time", "the API server may be overloaded; try again"
    if isinstance(reason, _urllib3.ProtocolError) or isinstance(root, ConnectionError):
        return "the connection broke", _REACH_HINT
    return one_line(str(root), 160), _REACH_HINT


def _unreachable(exc: _urllib3.HTTPError, request: ApiRequest | None) -> CommandError:
    server = request.server if request else None
    if server is None and isinstance(exc, _urllib3.MaxRetryError) and exc.pool is not None:
        server = f"{exc.pool.scheme}://{exc.pool.host}:{exc.pool.port}"
    why, hint = _why(exc)
    return CommandError(f"cannot reach the cluster at {server or '(unknown)'}: {why}", hint)
