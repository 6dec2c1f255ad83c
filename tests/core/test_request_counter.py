"""`pilotboat_api_requests_total`: every request the operator's Kubernetes client sends is
counted once, by method and response class, including the ones the server refuses and the
ones that get no answer. The client talks to a small HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat.adapters.kube import Kube
from pilotboat.handlers import metrics

pytestmark = pytest.mark.core


class _Answers(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        missing = self.path.endswith("/missing")
        body = json.dumps({"kind": "Status", "code": 404} if missing else
                          {"kind": "ConfigMap", "metadata": {"name": "a"}}).encode()
        self.send_response(404 if missing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PATCH = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def counted(method: str, code: str) -> float:
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if (sample.name == "pilotboat_api_requests_total"
                    and sample.labels == {"method": method, "code": code}):
                return sample.value
    return 0.0


def client(host: str) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    config.host = host
    config.retries = 0
    api_client = kubernetes.client.ApiClient(config)
    metrics.count_requests(api_client)
    return api_client


def test_each_request_is_counted_once_by_method_and_answer(server: str) -> None:
    kube = Kube(client(server), timeout=5)
    before = {key: counted(*key) for key in [("GET", "2xx"), ("GET", "4xx"), ("PATCH", "2xx")]}

    assert kube.get("ConfigMap", "shop", "a") is not None
    assert kube.get("ConfigMap", "shop", "missing") is None
    kube.merge_patch("ConfigMap", "shop", "a", {"data": {"k": "v"}})

    assert counted("GET", "2xx") - before["GET", "2xx"] == 1
    assert counted("GET", "4xx") - before["GET", "4xx"] == 1
    assert counted("PATCH", "2xx") - before["PATCH", "2xx"] == 1


def test_a_request_without_an_answer_is_counted_as_an_error() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Answers) as closed:
        port = closed.server_address[1]  # bound, then closed: nobody listens there
    kube = Kube(client(f"http://127.0.0.1:{port}"), timeout=5)
    before = counted("GET", "error")
    with pytest.raises(Exception) as raised:
        kube.get("ConfigMap", "shop", "a")
    assert not isinstance(raised.value, ApiException)
    assert counted("GET", "error") - before == 1
