"""Who sent a release command, as the API server itself vouches.

A command is a fresh token in ``status.commands.<command>`` (``promote``, ``promoteFull``,
``abort``, ``retry``); beside it ``status.commands.<command>By`` names who sent it. The
admission policy ``pilotboat-command-identity`` (installed with the CRDs,
manifests/crds/pilotboat-admission-policies.yaml) refuses a status write that changes a
token unless its ``<command>By`` is the user the API server authenticated, and any change of
a ``<command>By`` to another name: it holds with no webhook and no operator running.

Clients that cannot know their user name (an Argo CD resource action runs as Argo CD's
service account; a plain ``kubectl patch``) leave ``<command>By`` out: the operator's
mutating webhook ``command-identity`` (``failurePolicy: Ignore``) fills it in from the
admission request's ``userInfo`` (:func:`command_identity_patch`). Mutating webhooks run
before validating admission policies, so the stamp satisfies the policy; while the webhook
does not answer, the policy refuses such a write (identity fails closed) and ``kubectl
pilotboat`` still works, as it names its user itself.

The Microservice reconciler reports each command it acts on with its sender
(:func:`verified_commands` says whose name the API server vouches for).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from pilotboat.core.release import COMMANDS
from pilotboat.handlers.approvals import identity_enforced_since
from pilotboat.handlers.ports import Kube

__all__ = [
    "COMMAND_MATCH",
    "COMMAND_POLICY",
    "COMMAND_WEBHOOK",
    "command_identity_patch",
    "command_times",
    "pending_commands",
    "verified_commands",
]

COMMAND_WEBHOOK = "command-identity"
COMMAND_POLICY = "pilotboat-command-identity"

COMMAND_MATCH = (
    "has(object.status) && has(object.status.commands) && (oldObject == null || "
    "!has(oldObject.status) || !has(oldObject.status.commands) || "
    "object.status.commands != oldObject.status.commands)"
)
"""CEL: the webhook is called only for status writes that change ``status.commands`` (not for
the operator's own status writes)."""


def _commands(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    commands = ((obj or {}).get("status") or {}).get("commands")
    return commands if isinstance(commands, Mapping) else {}


def command_identity_patch(
    body: Mapping[str, Any], old: Mapping[str, Any] | None, userinfo: Mapping[str, Any]
) -> dict[str, str] | None:
    """``{"<command>By": username}`` for each command whose token this write changes and
    whose ``<command>By`` the client left as it was (or out); None when there is none.

    A ``<command>By`` the client changed itself is left as sent: if it names someone else the
    admission policy refuses it, naming the field.

    >>> old = {"status": {"commands": {"promote": "t1", "promoteBy": "bob"}}}
    >>> new = {"status": {"commands": {"promote": "t2", "promoteBy": "bob", "abort": "a"}}}
    >>> command_identity_patch(new, old, {"username": "alice"})
    {'promoteBy': 'alice', 'abortBy': 'alice'}
    >>> command_identity_patch(old, old, {"username": "alice"}) is None
    True
    """
    username = str(userinfo.get("username") or "")
    if not username:
        return None
    new_commands, old_commands = _commands(body), _commands(old)
    stamp: dict[str, str] = {}
    for command in COMMANDS:
        token, by = new_commands.get(command), f"{command}By"
        changed = bool(token) and token != old_commands.get(command)
        said = by in new_commands and new_commands.get(by) != old_commands.get(by)
        if changed and not said and new_commands.get(by) != username:
            stamp[by] = username
    return stamp or None


def pending_commands(status: Mapping[str, Any] | None) -> list[str]:
    """The commands whose token the operator has not handled yet."""
    commands = (status or {}).get("commands") or {}
    handled = (((status or {}).get("release") or {}).get("handledCommands")) or {}
    return [c for c in COMMANDS if commands.get(c) and commands.get(c) != handled.get(c)]


def _time(text: Any) -> _dt.datetime | None:
    if not text:
        return None
    return _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def command_times(managed_fields: Any) -> dict[str, _dt.datetime]:
    """When each command token was last written, as ``metadata.managedFields`` says: the time
    of the entry that owns ``status.commands.<command>``.

    >>> entry = {"manager": "kubectl", "time": "2026-01-02T03:04:05Z",
    ...          "fieldsV1": {"f:status": {"f:commands": {"f:promote": {}, "f:promoteBy": {}}}}}
    >>> {k: v.isoformat() for k, v in command_times([entry]).items()}
    {'promote': '2026-01-02T03:04:05+00:00'}
    """
    times: dict[str, _dt.datetime] = {}
    for entry in managed_fields or ():
        owned = (((entry.get("fieldsV1") or {}).get("f:status") or {}).get("f:commands")) or {}
        moment = _time(entry.get("time"))
        for command in COMMANDS:
            if f"f:{command}" in owned and moment is not None:
                times[command] = max(moment, times.get(command, moment))
    return times


def verified_commands(kube: Kube, body: Mapping[str, Any]) -> frozenset[str]:
    """The pending commands whose ``<command>By`` the API server vouches for: written after
    the policy pilotboat-command-identity and its binding last changed. Asks the API server
    only while a command is pending; without leave to read the policy, none."""
    pending = pending_commands(body.get("status"))
    if not pending:
        return frozenset()
    try:
        since = identity_enforced_since(kube, COMMAND_POLICY)
    except ApiException as exc:
        if exc.status != 403:
            raise
        return frozenset()
    if since is None:
        return frozenset()
    times = command_times((body.get("metadata") or {}).get("managedFields"))
    return frozenset(c for c in pending if c in times and times[c] > since)
