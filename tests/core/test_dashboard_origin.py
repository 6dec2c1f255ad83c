"""The dashboard answers only its own page: DNS rebinding (another Host) and cross-site
forms (another Origin) are refused before anything reads the cluster or acts on it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pilotboat.cli.dashboard import SESSION_COOKIE, foreign_request, make_server, session_of

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


class Recording:
    """A Kube with no Microservices that records the release commands it is sent."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def list(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        if kind != "Microservice":
            return []
        return [{"metadata": {"namespace": "shop", "name": "orders"}, "spec": {}, "status": {}}]

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any],
                    subresource: str | None = None) -> None:
        self.patches.append((namespace, name, patch))


@pytest.fixture
def recorded() -> Iterator[tuple[str, Recording]]:
    kube = Recording()
    server = make_server(kube, None, 0)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", kube
    server.shutdown()
    server.server_close()


def _token(page: str) -> str:
    match = re.search(r"name='token' value='([^']+)'", page)
    assert match, page
    return match.group(1)


def test_the_form_token_is_bound_to_the_browsers_session_cookie(
    recorded: tuple[str, Recording],
) -> None:
    url, kube = recorded
    form = {"namespace": "shop", "name": "orders"}
    with httpx.Client() as browser, httpx.Client() as other:
        first = browser.get(url)
        cookie = first.headers["Set-Cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        token = _token(first.text)
        assert _token(browser.get(url).text) == token  # the same session keeps its token
        other_token = _token(other.get(url).text)
        assert other_token != token  # another browser gets another one

        # The token without its cookie, or with another session's cookie, does nothing.
        assert httpx.post(url + "abort", data={**form, "token": token}).status_code == 403
        assert other.post(url + "abort", data={**form, "token": token}).status_code == 403
        assert browser.post(url + "abort", data={**form, "token": "forged"}).status_code == 403
        assert kube.patches == []

        reply = browser.post(url + "abort", data={**form, "token": token})
        assert reply.status_code == 303
    assert [(ns, name, list(p["status"]["commands"])) for ns, name, p in kube.patches] == [
        ("shop", "orders", ["abort"])]


@pytest.mark.parametrize("header", [None, "", "pilotboat_session=short",
                                    "pilotboat_session=" + "x" * 65,
                                    "pilotboat_session=has space in it and more"])
def test_a_malformed_session_cookie_is_no_session(header: str | None) -> None:
    assert session_of(header) is None
