"""The mutating webhook ``command-identity`` (``failurePolicy: Ignore``): it stamps
``status.commands.<command>By`` with the requesting user when a status write changes that
command's token (:func:`pilotboat.handlers.commands.command_identity_patch`). Registered by
:mod:`pilotboat.handlers.webhooks` for ``microservices/status``; a module of its own so that
an operator without webhooks never loads it."""

from __future__ import annotations

from typing import Any

import kopf

from pilotboat import GROUP, VERSION
from pilotboat.handlers.commands import COMMAND_MATCH, COMMAND_WEBHOOK, command_identity_patch

__all__ = ["COMMAND_MATCH", "COMMAND_WEBHOOK", "command_identity"]


@kopf.on.mutate(
    GROUP, VERSION, "microservices", subresource="status", id=COMMAND_WEBHOOK,
    operations=["UPDATE"],
)  # fmt: skip
async def command_identity(
    body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, **kwargs: Any
) -> None:
    # A few dictionary lookups: no I/O, so it runs here rather than on the admission pool.
    stamp = command_identity_patch(body, kwargs.get("old"), dict(userinfo))
    if stamp:
        patch.setdefault("status", {}).setdefault("commands", {}).update(stamp)
