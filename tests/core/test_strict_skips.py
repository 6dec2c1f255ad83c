"""Nothing passes by skipping (tests/fixtures/strict.py): pytest runs in a subprocess on a
tiny test file with the strict plugin loaded, as `make test` runs the suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SKIPS = '''
import pytest


@pytest.fixture
def server():
    pytest.skip("PostgreSQL binaries not found in /nowhere")


def test_skips_itself():
    pytest.skip("node pilotboat-real is not Ready")


def test_needs_a_server(server):
    pass


@pytest.mark.xfail(reason="known to fail")
def test_expected_to_fail():
    assert False


@pytest.mark.xfail(reason="flaky once")
def test_passes_despite_its_marker():
    pass


def test_passes():
    pass
'''

MODULE_SKIP = '''
import pytest

pytest.skip("helm is not installed", allow_module_level=True)


def test_never_collected():
    pass
'''

STRICT = "in a strict run (CI=true or PILOTBOAT_STRICT=1)"

# Variables of the environment that would make the subprocess strict, or not, on their own.
_OURS = {"CI", "PILOTBOAT_STRICT", "PILOTBOAT_KUBECONFIG", "PILOTBOAT_STATE", "PYTEST_ADDOPTS",
         "PYTEST_PLUGINS", "PY_COLORS", "FORCE_COLOR"}


def run_pytest(tmp_path: Path, source: str, **env: str) -> tuple[int, str, dict[str, int]]:
    """(exit code, output, outcome counts) of pytest on `source` with the strict plugin."""
    (tmp_path / "test_sample.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this repository's settings
    base = {k: v for k, v in os.environ.items() if k not in _OURS}
    env = {
        **base,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH")) if p),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # none of the installed plugins plays a part
        "COLUMNS": "250",  # summary lines whole
        **env,
    }
    argv = ["-p", "no:cacheprovider", "-p", "tests.fixtures.strict", "--color=no", "-ra",
            "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)]
    done = subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    final = done.stdout.strip().splitlines()[-1]
    counts = {word.rstrip("s") if word == "errors" else word: int(n)
              for n, word in re.findall(r"(\d+) (\w+)", final)}
    return done.returncode, output, counts


@pytest.mark.parametrize("env", [{"PILOTBOAT_STRICT": "1"}, {"CI": "true"}])
def test_in_a_strict_run_a_skip_or_xfail_fails_with_its_reason(
    tmp_path: Path, env: dict[str, str]
) -> None:
    code, output, counts = run_pytest(tmp_path, SKIPS, **env)

    assert code == 1, output
    assert counts == {"failed": 3, "passed": 1, "error": 1}, output
    # each on the summary line too (-ra), not only in the failures section
    assert re.search(rf"FAILED .*test_skips_itself - skipped {re.escape(STRICT)}: "
                     r"node pilotboat-real is not Ready", output), output
    assert re.search(rf"ERROR .*test_needs_a_server - skipped {re.escape(STRICT)}: "
                     r"PostgreSQL binaries not found in /nowhere", output), output
    assert re.search(r"FAILED .*test_expected_to_fail - xfailed .*: known to fail", output), output
    assert re.search(r"FAILED .*test_passes_despite_its_marker - xpassed .*: flaky once", output)
    assert "test_sample.py:11\n" in output, "where the test skipped"
    assert "strict: a skip or xfail is a failure" in output  # the header says so


def test_a_module_skipped_at_collection_fails_a_strict_run(tmp_path: Path) -> None:
    code, output, counts = run_pytest(tmp_path, MODULE_SKIP, PILOTBOAT_STRICT="1")

    assert code != 0, output
    assert counts.get("error") == 1 and "skipped" not in counts, output
    assert f"skipped {STRICT}: helm is not installed" in output


def test_outside_a_strict_run_a_skip_is_a_skip(tmp_path: Path) -> None:
    code, output, counts = run_pytest(tmp_path, SKIPS)

    assert code == 0, output
    assert counts == {"passed": 1, "skipped": 2, "xfailed": 1, "xpassed": 1}, output
    assert "not tested on this cluster" not in output


def test_on_a_cluster_chosen_by_kubeconfig_skips_stay_and_are_listed(tmp_path: Path) -> None:
    chosen = tmp_path / "kind.kubeconfig"
    code, output, counts = run_pytest(
        tmp_path, SKIPS, PILOTBOAT_STRICT="1", PILOTBOAT_KUBECONFIG=str(chosen)
    )

    assert code == 0, output
    assert counts == {"passed": 1, "skipped": 2, "xfailed": 1, "xpassed": 1}, output
    section = output.split("not tested on this cluster:", 1)[1]
    assert f"PILOTBOAT_KUBECONFIG={chosen}" in section
    assert "test_sample.py::test_skips_itself: node pilotboat-real is not Ready" in section
    assert "test_sample.py::test_needs_a_server: PostgreSQL binaries not found in /nowhere" in (
        section
    )


def test_the_local_cluster_named_by_kubeconfig_is_still_strict(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, output, counts = run_pytest(
        tmp_path, SKIPS, PILOTBOAT_STRICT="1", PILOTBOAT_STATE=str(state),
        PILOTBOAT_KUBECONFIG=str(state / "kubeconfig"),
    )

    assert code == 1, output
    assert "skipped" not in counts and "not tested on this cluster" not in output, output
