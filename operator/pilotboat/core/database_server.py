"""Whether a namespace may use a DatabaseServer: decided before anything connects anywhere.

A DatabaseServer admits a namespace that matches one of its ``allowedNamespaces`` (a name or
an fnmatch pattern) or its ``namespaceSelector``; with neither set it admits none.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from pilotboat.api.database_server import DatabaseServerSpec, LabelSelector

__all__ = ["REQUIRED_AUTH", "namespace_allowed", "selector_matches"]

REQUIRED_AUTH = "scram-sha-256"
"""The only authentication the operator answers (libpq ``require_auth``): a server asking
for a cleartext or MD5 password is refused before any password is sent."""


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every part of ``selector`` (Kubernetes semantics).

    >>> from pilotboat.api import LabelSelector
    >>> selector_matches(LabelSelector(match_labels={"team": "shop"}), {"team": "shop"})
    True
    >>> selector_matches(LabelSelector(match_labels={"team": "shop"}), {"team": "ads"})
    False
    """
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In" and not (present and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def namespace_allowed(
    server: DatabaseServerSpec, namespace: str, labels: Mapping[str, str] | None
) -> bool:
    """Whether OwnedDatabases in ``namespace`` (with ``labels``; None when unknown) may use
    ``server``.

    >>> from pilotboat.api import DatabaseServerSpec
    >>> spec = DatabaseServerSpec.model_validate(
    ...     {"host": "db", "adminSecretRef": {"name": "a"}, "allowedNamespaces": ["shop-*"]})
    >>> namespace_allowed(spec, "shop-eu", {}), namespace_allowed(spec, "shop", {})
    (True, False)
    >>> namespace_allowed(spec.model_copy(update={"allowed_namespaces": []}), "shop-eu", {})
    False
    """
    if any(fnmatchcase(namespace, pattern) for pattern in server.allowed_namespaces):
        return True
    selector = server.namespace_selector
    return selector is not None and labels is not None and selector_matches(selector, labels)
