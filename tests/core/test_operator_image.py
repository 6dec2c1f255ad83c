"""The operator image's pinned dependencies (images/operator/requirements.txt) are complete:
every runtime dependency of pyproject.toml is there at a version its range accepts, and so is
everything those need (build.sh installs them with --no-deps, so a gap would only show as an
ImportError in the pod)."""

from __future__ import annotations

import importlib.metadata as md
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, Version]:
    pinned = {}
    for line in (REPO / "images/operator/requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pinned[canonicalize_name(name)] = Version(version)
    return pinned


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def _needs(req: Requirement) -> list[str]:
    """The names `req` brings in: itself, and for psycopg[binary] its binary package."""
    names = [canonicalize_name(req.name)]
    names += [canonicalize_name(f"{req.name}-{extra}") for extra in req.extras
              if req.name == "psycopg"]
    return names


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for req in runtime_requirements():
        for name in _needs(req):
            assert name in pinned, f"{name} (pyproject.toml) is not in requirements.txt"
        assert pinned[canonicalize_name(req.name)] in req.specifier, req


def test_what_the_dependencies_need_is_pinned_too() -> None:
    """Walks the installed distributions' requirements (those without an extra or a marker
    that does not hold on Linux/CPython 3.11): each must be pinned."""
    pinned = pins()
    missing = []
    for name in pinned:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # pinned but not installed here: nothing to walk
            continue
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(req.name) not in pinned:
                missing.append(f"{req.name} (needed by {name})")
    assert not missing, missing


def test_the_pins_are_exact() -> None:
    text = (REPO / "images/operator/requirements.txt").read_text()
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    assert all("==" in ln for ln in lines if ln), [ln for ln in lines if ln and "==" not in ln]
    assert len(pins()) == len([ln for ln in lines if ln])
