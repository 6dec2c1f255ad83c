"""`pilotboat dashboard` in a real browser (Debian's headless Chromium): a release paused at
50% after an analysis on real signals shows its weight, its steps and the golden signals of
canary against stable; promote, clicked in the browser, acts as the user, and a user whose
RBAC does not allow it is refused by the API server, on the page.

The signals come from echo processes on loopback standing in for the pods (tests/fixtures/
standins.py): what is under test is the page, not how pods are run, and the page's numbers
only need a release with real Prometheus series behind it; the canary analysis tests cover
the same signals from real pods on the real node."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
import yaml

from pilotboat.adapters.kube import Kube
from pilotboat.cli.dashboard import make_server
from pilotboat.cli.kubeclient import connect
from pilotboat.cli.release import whoami
from tests.fixtures.browser import Chromium
from tests.fixtures.prometheus import LocalPrometheus
from tests.fixtures.standins import Traffic, echo, standin_labels
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def chromium() -> str:
    if shutil.which("chromium") is None:
        subprocess.run([str(REPO / "hack" / "deps.sh"), "chromium"], check=True)
    path = shutil.which("chromium")
    assert path, "chromium is not installed (hack/deps.sh installs it)"
    return path


def browse(chromium: str, url: str, profile: Path, *extra: str) -> str:
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--window-size=1200,1800", *extra, url],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def serve(kube: Kube, namespace: str) -> Iterator[str]:
    server = make_server(kube, namespace, 0, whoami(kube))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def service(name: str, version: str, prometheus: LocalPrometheus) -> dict[str, Any]:
    return microservice(name, version=version, rollout={"canary": {
        "steps": [{"setWeight": 50}, {"analysis": {"intervals": 1}},
                  {"pause": {"untilPromoted": True}}],
        "analysis": {"interval": "6s", "minSampleSize": 10,
                     "prometheus": {"address": prometheus.url},
                     "signals": {"errors": {"maxRatio": 0.05},
                                 "latency": {"quantile": 0.99, "maxSeconds": 0.5}}}}})


def read_only_kubeconfig(kube: Kube, admin: Path, namespace: str, path: Path) -> Path:
    """A ServiceAccount that may read releases but not steer them, as a kubeconfig."""
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "viewer", "namespace": namespace}})
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "pilotboat-viewer", "namespace": namespace},
                "rules": [{"apiGroups": ["pilotboat.dev"], "verbs": ["get", "list", "watch"],
                           "resources": ["microservices", "schemamigrations",
                                         "migrationapprovals"]}]})
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "viewer", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "pilotboat-viewer"},
                "subjects": [{"kind": "ServiceAccount", "name": "viewer",
                              "namespace": namespace}]})
    token = kubernetes.client.CoreV1Api(kube.api_client).create_namespaced_service_account_token(
        "viewer", namespace, {"spec": {"expirationSeconds": 600}}).status.token
    config = yaml.safe_load(admin.read_text())
    config["users"] = [{"name": "viewer", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "viewer"
    path.write_text(yaml.safe_dump(config))
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_release_in_progress_in_a_real_browser(
    story: Story, kube: Kube, kubeconfig: Path, prometheus: LocalPrometheus, chromium: str,
    tmp_path: Path,
) -> None:
    v1, v2 = (standin_labels(story.namespace, service("cart", v, prometheus)) for v in ("v1", "v2"))
    with echo("v1") as stable, echo("v2") as canary, \
            prometheus.scraped(f"{story.namespace}-cart-v1", stable, v1), \
            prometheus.scraped(f"{story.namespace}-cart-v2", canary, v2):
        story.given(service("cart", "v1", prometheus))
        story.wait_for("Microservice", "cart", lambda o: ((o or {}).get("status") or {}).get(
            "phase") == "Healthy", timeout=90)
        with Traffic(story, "cart", stable, canary, rate=30):
            story.apply(service("cart", "v2", prometheus))
            story.wait_for("Microservice", "cart", lambda o: ((o or {}).get("status") or {}).get(
                "phase") == "Paused" and bool(o["status"].get("analysis")),  # type: ignore[index]
                timeout=120, what="paused after a passed analysis")

    pages = serve(connect(str(kubeconfig)), story.namespace)
    url = next(pages)
    try:
        dom = browse(chromium, url, tmp_path / "profile", "--dump-dom")
        shot = tmp_path / "dashboard.png"
        browse(chromium, url, tmp_path / "profile2", f"--screenshot={shot}")
        (REPO / ".state" / "logs").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, REPO / ".state" / "logs" / "dashboard.png")  # for a person to look at

        assert f"{story.namespace}/cart" in dom
        assert re.search(r'class="phase Paused">Paused<', dom)
        assert "canary weight 50%" in dom and 'style="width:50%"' in dom
        assert re.search(r"stable <b>v1</b> · canary <b>v2</b>\s+· step 3/3", dom)
        signals = dom[dom.index("class=\"signals\""):]
        for signal in ("errors", "latency"):
            assert f"<td>{signal}</td>" in signals, signal
        assert signals.count("Successful") >= 2
        assert "Paused: True (Paused)" in dom and "{\"setWeight\": 50}" in dom
        assert png_size(shot) == (1200, 1800) and shot.stat().st_size > 20_000

        # A form posted without this browser's session (another site, a copied token): no.
        token = re.search(r"name=\"token\" value=\"([^\"]+)\"", dom)
        assert token
        form = {"token": token.group(1), "namespace": story.namespace, "name": "cart"}
        assert httpx.post(url + "promote", data=form).status_code == 403
        assert (story.get("Microservice", "cart") or {})["status"]["phase"] == "Paused"

        # Promote, clicked in the browser, as the user whose kubeconfig the dashboard has.
        with Chromium(chromium, tmp_path / "profile3") as browser:
            browser.open(url)
            browser.click(f"section[id='{story.namespace}-cart'] button[value='promote']")
            assert f"promote requested for {story.namespace}/cart" in browser.text()
        story.wait_for("Microservice", "cart", lambda o: ((o or {}).get("status") or {}).get(
            "stableVersion") == "v2", timeout=90, what="promoted")
        last = (story.get("Microservice", "cart") or {})["status"]["lastCommand"]
        assert last["name"] == "promote" and last["by"] == whoami(connect(str(kubeconfig))), last
    finally:
        next(pages, None)

    # Someone who may only look: the API server refuses the button, and the page says so.
    viewer = read_only_kubeconfig(kube, kubeconfig, story.namespace, tmp_path / "viewer")
    pages = serve(connect(str(viewer)), story.namespace)
    url = next(pages)
    try:
        with Chromium(chromium, tmp_path / "profile4") as browser:
            browser.open(url)
            assert f"{story.namespace}/cart" in browser.text()
            browser.click(f"section[id='{story.namespace}-cart'] button[value='abort']")
            assert f"abort {story.namespace}/cart refused: 403 Forbidden" in browser.text()
        assert (story.get("Microservice", "cart") or {})["status"]["phase"] == "Healthy"
    finally:
        next(pages, None)
