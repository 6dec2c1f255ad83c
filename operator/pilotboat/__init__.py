"""Pilotboat: canary releases coordinated with expand/contract schema migrations."""

__all__ = ["GROUP", "VERSION", "API_VERSION"]

GROUP = "pilotboat.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
