"""Importing this module registers every Kopf handler of the operator."""

from __future__ import annotations

from pilotboat.handlers import approvals, databases, flags, microservice, migrations

__all__ = ["approvals", "databases", "flags", "microservice", "migrations"]
