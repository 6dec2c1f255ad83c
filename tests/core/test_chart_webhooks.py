"""The chart's webhooks are the operator's: charts/pilotboat/files/webhooks.yaml is what
pilotboat.handlers.webhooks.chart_webhooks writes (hack/render-manifests.sh), the identity
webhooks fail closed, and a serving certificate issued from the chart's CA is valid for the
webhook Service's names and signed by that CA. (The chart rendering the same configurations
as the operator would register is tests/cluster/test_install.py's, which has Helm.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pilotboat.handlers.webhooks import (
    APPROVAL_WEBHOOK,
    OVERRIDE_WEBHOOK,
    ServiceRef,
    _issue_serving_cert,
    chart_webhooks,
    parse_ref,
)

REPO = Path(__file__).resolve().parents[2]
FILE = REPO / "charts" / "pilotboat" / "files" / "webhooks.yaml"


def test_the_charts_webhooks_are_the_operators() -> None:
    assert FILE.read_text() == chart_webhooks(), "run hack/render-manifests.sh"


def test_a_changed_definition_shows_as_drift() -> None:
    drifted = chart_webhooks().replace("failurePolicy: Fail", "failurePolicy: Ignore", 1)
    assert drifted != FILE.read_text()


def test_identity_webhooks_fail_closed() -> None:
    hooks = {h["name"]: h for c in yaml.safe_load(FILE.read_text())["configurations"]
             for h in c["webhooks"]}
    for name in (APPROVAL_WEBHOOK, OVERRIDE_WEBHOOK):
        assert hooks[f"{name}.pilotboat.dev"]["failurePolicy"] == "Fail", name
        assert hooks[f"{name}.pilotboat.dev"]["clientConfig"] == {
            "service": {"path": f"/{name}"}}


def test_a_reference_is_namespace_slash_name() -> None:
    assert parse_ref("ns/name", "--webhook-service") == ServiceRef("ns", "name")
    for bad in ("name", "/name", "ns/", "a/b/c"):
        with pytest.raises(ValueError, match="--webhook-ca-secret: expected <namespace>/<name>"):
            parse_ref(bad, "--webhook-ca-secret")


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True,
                          text=True).stdout


def test_a_serving_certificate_from_the_charts_ca(tmp_path: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "ca.key"),
             "-out", str(tmp_path / "ca.crt"), "-days", "1", "-subj", "/CN=test-ca")
    other = tmp_path / "other"
    other.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(other / "ca.key"),
             "-out", str(other / "ca.crt"), "-days", "1", "-subj", "/CN=other-ca")
    served = tmp_path / "served"
    served.mkdir()
    cert, key = _issue_serving_cert(served, (tmp_path / "ca.crt").read_bytes(),
                                    (tmp_path / "ca.key").read_bytes(),
                                    ServiceRef("pilotboat-system", "pilotboat-webhooks"))
    # One file, the key and the certificate, replaced in one rename; no CA key left behind.
    assert cert == key and sorted(p.name for p in served.iterdir()) == ["tls.pem"]
    assert key.stat().st_mode & 0o077 == 0
    assert "OK" in _openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), str(cert))
    with pytest.raises(subprocess.CalledProcessError):
        _openssl("verify", "-CAfile", str(other / "ca.crt"), str(cert))
    text = _openssl("x509", "-in", str(cert), "-noout", "-text")
    assert "DNS:pilotboat-webhooks.pilotboat-system.svc," in text
    assert "DNS:pilotboat-webhooks.pilotboat-system.svc.cluster.local" in text
    assert "TLS Web Server Authentication" in text
    # Short-lived: it ends within a day and a minute of now.
    assert subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-checkend",
                           str(86400 + 60)], capture_output=True).returncode == 1
    assert subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-checkend",
                           str(86400 - 3600)], capture_output=True).returncode == 0
    # The key matches the certificate.
    assert _openssl("x509", "-in", str(cert), "-noout", "-pubkey") == _openssl(
        "pkey", "-in", str(key), "-pubout")
    import ssl

    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)  # as Kopf
    # Renewed: a new certificate and key in place of the old.
    old = cert.read_bytes()
    _issue_serving_cert(served, (tmp_path / "ca.crt").read_bytes(),
                        (tmp_path / "ca.key").read_bytes(),
                        ServiceRef("pilotboat-system", "pilotboat-webhooks"))
    assert cert.read_bytes() != old
