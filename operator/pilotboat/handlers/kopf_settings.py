"""How the operator runs Kopf: only what its handlers need, so a watch event costs little.

The operator's Kopf handlers are all event watchers (``@kopf.on.event``, which only enqueue
keys or feed caches) and admission webhooks: no ``on.create``/``on.update``/``on.resume``, no
daemons or timers. Kopf still builds every object's *diff base* on every event (a deep copy
of the whole body, to tell what changed since a change handler last ran). With hundreds of
Microservices, their Deployments, ReplicaSets and Pods that was the largest part of the
operator's event loop. So :class:`NoDiffBase` stores and builds no diff base, and
:func:`only_event_handlers` checks, at start, that no handler that would need one is
registered.

Kopf's "Handler … succeeded." lines stay: they are how an operator's log shows which
replica acted (the leadership tests read them).
"""

from __future__ import annotations

from typing import Any

import kopf

__all__ = ["NoDiffBase", "apply", "only_event_handlers"]


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that is never built, read or stored: nothing of the operator diffs an
    object against the state a change handler last saw."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def only_event_handlers(registry: kopf.OperatorRegistry) -> None:
    """Raise when a handler that needs Kopf's diff base (change handlers, daemons, timers)
    is registered: :class:`NoDiffBase` would then hide every change from it."""
    changing = registry._changing.get_all_handlers()
    spawning = registry._spawning.get_all_handlers()
    if changing or spawning:
        names = sorted(str(h.id) for h in [*changing, *spawning])
        raise RuntimeError(
            "pilotboat.handlers.kopf_settings.NoDiffBase cannot serve change handlers,"
            f" daemons or timers, and these are registered: {', '.join(names)}"
        )


def apply(settings: kopf.OperatorSettings, registry: kopf.OperatorRegistry) -> None:
    """Set the operator's Kopf settings described in the module docstring."""
    only_event_handlers(registry)
    settings.persistence.diffbase_storage = NoDiffBase()
