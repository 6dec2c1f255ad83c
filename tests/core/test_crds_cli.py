"""`pilotboat crds generate` and `pilotboat crds check` against the committed crds/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pilotboat.api import KINDS
from pilotboat.cli.crds import HEADER, crds, render_crds

pytestmark = pytest.mark.core

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "crds"


def test_committed_crds_match_the_models() -> None:
    result = CliRunner().invoke(crds, ["check", "--dir", str(COMMITTED)])
    assert result.exit_code == 0, result.output


def test_a_tampered_crd_fails_the_check_with_a_diff(tmp_path: Path) -> None:
    copy = tmp_path / "crds"
    shutil.copytree(COMMITTED, copy)
    victim = copy / "microservices.pilotboat.dev.yaml"
    victim.write_text(victim.read_text().replace("maximum: 1000", "maximum: 2000"))

    result = CliRunner().invoke(crds, ["check", "--dir", str(copy)])

    assert result.exit_code == 1
    assert "microservices.pilotboat.dev.yaml" in result.output
    assert "-                maximum: 2000" in result.output
    assert "+                maximum: 1000" in result.output


def test_missing_and_extra_files_fail_the_check(tmp_path: Path) -> None:
    copy = tmp_path / "crds"
    shutil.copytree(COMMITTED, copy)
    (copy / "featureflags.pilotboat.dev.yaml").unlink()
    (copy / "stale.pilotboat.dev.yaml").write_text("kind: Stale\n")

    result = CliRunner().invoke(crds, ["check", "--dir", str(copy)])

    assert result.exit_code == 1
    assert "featureflags.pilotboat.dev.yaml" in result.output
    assert "stale.pilotboat.dev.yaml" in result.output


def test_generate_writes_one_file_per_kind(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    result = CliRunner().invoke(crds, ["generate", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{k.plural}.pilotboat.dev.yaml" for k in KINDS
    )
    for path in out.iterdir():
        text = path.read_text()
        assert text.startswith(HEADER)
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
    again = CliRunner().invoke(crds, ["check", "--dir", str(out)])
    assert again.exit_code == 0, again.output


def test_rendering_is_stable() -> None:
    assert render_crds() == render_crds()
