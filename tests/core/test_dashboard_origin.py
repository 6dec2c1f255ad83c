"""The dashboard answers only its own page: DNS rebinding (another Host) and cross-site
forms (another Origin) are refused before anything reads the cluster or acts on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pilotboat.cli.dashboard import foreign_request, make_server

pytestmark = pytest.mark.core


@pytest.mark.parametrize(
    ("host", "origin", "posting", "refused"),
    [
        ("127.0.0.1:8765", None, False, None),
        ("localhost:8765", None, True, None),
        ("127.0.0.1:8765", "http://127.0.0.1:8765", True, None),
        ("evil.example:8765", None, False, 421),  # a name rebound to 127.0.0.1
        ("127.0.0.1:9999", None, False, 421),
        (None, None, False, 421),
        ("127.0.0.1:8765", "http://evil.example", True, 403),  # a form of another site
        ("127.0.0.1:8765", "null", True, 403),  # a sandboxed frame or a file
        ("127.0.0.1:8765", "http://localhost:8765", True, 403),  # another origin, same port
        ("127.0.0.1:8765", "http://evil.example", False, None),  # a GET changes nothing
    ],
)
def test_foreign_requests(host: str | None, origin: str | None, posting: bool,
                          refused: int | None) -> None:
    answer = foreign_request(host, origin, 8765, posting)
    assert (answer[0] if answer else None) == refused


class Untouchable:
    """A Kube that fails the test if the dashboard reaches the cluster."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the dashboard used the cluster ({name}) for a foreign request")


@pytest.fixture
def url() -> Iterator[str]:
    server = make_server(Untouchable(), None, 0)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_a_rebound_name_gets_neither_the_page_nor_the_token(url: str) -> None:
    reply = httpx.get(url, headers={"Host": "evil.example"})
    assert reply.status_code == 421
    assert "token" not in reply.text


def test_a_form_of_another_site_is_refused_before_the_token_is_checked(url: str) -> None:
    reply = httpx.post(url + "abort", headers={"Origin": "http://evil.example"},
                       data={"token": "x", "namespace": "shop", "name": "orders"})
    assert reply.status_code == 403
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
