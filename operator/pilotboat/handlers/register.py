"""Importing this module registers every Kopf handler of the operator."""

from __future__ import annotations

from pilotboat.handlers import microservice

__all__ = ["microservice"]
