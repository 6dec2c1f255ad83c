"""The Kopf settings the operator runs with: no diff base is built, which is safe only while
every registered handler is an event watcher or a webhook."""

from __future__ import annotations

import kopf
import pytest

import pilotboat.handlers.register  # noqa: F401  (registers the operator's handlers)
from pilotboat.handlers.kopf_settings import NoDiffBase, apply, only_event_handlers

pytestmark = pytest.mark.core


def test_the_operators_handlers_need_no_diff_base() -> None:
    only_event_handlers(kopf.get_default_registry())  # raises otherwise


def test_a_change_handler_is_refused_with_its_name() -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.update("pilotboat.dev", "v1alpha1", "microservices", id="resize",
                    registry=registry)
    def resize(**_: object) -> None:
        pass

    with pytest.raises(RuntimeError, match="resize"):
        only_event_handlers(registry)


def test_the_settings_drop_the_diff_base() -> None:
    settings = kopf.OperatorSettings()
    apply(settings, kopf.OperatorRegistry())
    assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
    assert settings.persistence.diffbase_storage.build(body=kopf.Body({})) is None
