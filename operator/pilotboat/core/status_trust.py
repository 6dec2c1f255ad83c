"""Which parts of a status the operator may believe: only what it wrote itself.

Release commands arrive in ``status.commands`` (people may patch ``microservices/status``
for that), so the API server cannot keep other hands off the rest of ``status``. Every
operator write names the field manager ``pilotboat``; ``metadata.managedFields`` tells who
last wrote each field. A top-level status field that another manager owns — forged analysis
measurements, a forged ``phase: Degraded`` — is treated as absent: the operator measures
again, decides again, and writes it back as its own.

>>> managed = [
...     {"manager": "pilotboat", "fieldsV1": {"f:status": {"f:phase": {}, "f:analysis": {}}}},
...     {"manager": "kubectl-patch", "fieldsV1": {"f:status": {"f:analysis": {},
...                                                          "f:commands": {}}}},
... ]
>>> sorted(foreign_status_fields(managed))
['analysis']
>>> trusted_status({"phase": "Progressing", "analysis": {"measurements": []}}, managed)
{'phase': 'Progressing'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["OPERATOR_MANAGER", "USER_STATUS_FIELDS", "foreign_status_fields", "trusted_status"]

OPERATOR_MANAGER = "pilotboat"
USER_STATUS_FIELDS = frozenset({"commands"})
"""Status fields people write on purpose (release commands); everything else is the
operator's."""


def foreign_status_fields(
    managed_fields: Iterable[Mapping[str, Any]] | None,
    *,
    operator: str = OPERATOR_MANAGER,
    user_fields: frozenset[str] = USER_STATUS_FIELDS,
) -> frozenset[str]:
    """Top-level status fields (but ``user_fields``) that a manager other than ``operator``
    owns."""
    foreign: set[str] = set()
    for entry in managed_fields or ():
        if entry.get("manager") == operator:
            continue
        status = (entry.get("fieldsV1") or {}).get("f:status") or {}
        foreign.update(key[2:] for key in status if key.startswith("f:"))
    return frozenset(foreign - user_fields)


def trusted_status(
    status: Mapping[str, Any] | None,
    managed_fields: Iterable[Mapping[str, Any]] | None,
    *,
    operator: str = OPERATOR_MANAGER,
) -> dict[str, Any]:
    """``status`` without the fields someone other than ``operator`` wrote."""
    foreign = foreign_status_fields(managed_fields, operator=operator)
    return {k: v for k, v in (status or {}).items() if k not in foreign}
