"""`pilotboat dashboard`: a page on 127.0.0.1 with the Microservices, where each release
stands, the golden signals of canary against stable, the gates and approvals; and promote /
abort buttons.

The page reads and acts with the user's own kubeconfig: a button is a patch of
`status.commands` that the API server allows or refuses by the user's RBAC, and a refusal is
shown as the API server said it. Forms carry a token bound to the browser's session cookie
(`HttpOnly`, `SameSite=Strict`; the token is an HMAC of the cookie under a key made at
start-up), so another site open in the same browser cannot press the buttons, and a token
seen elsewhere (a screenshot, a log) is worth nothing without that browser's cookie; and the
server answers only requests addressed
to itself (`Host` is 127.0.0.1 or localhost with its port; a POST's `Origin`, when the browser
sends one, is the page's own), so a site whose name an attacker points at 127.0.0.1 (DNS
rebinding) can neither read the page and its token nor post the form. The page may not be
framed by another site.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import html
import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import click
from kubernetes.client.exceptions import ApiException

from pilotboat.adapters.kube import Kube
from pilotboat.cli.get import release_row
from pilotboat.cli.options import ClusterTarget, cluster_options
from pilotboat.cli.release import whoami

__all__ = ["SESSION_COOKIE", "dashboard", "form_token", "render_page", "session_of"]

SESSION_COOKIE = "pilotboat_session"

_STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;background:#f6f7f9;color:#1b1f24}
h1{font-size:20px}.card{background:#fff;border:1px solid #d8dde3;border-radius:8px;
padding:14px 18px;margin:0 0 16px}.phase{padding:2px 8px;border-radius:10px;color:#fff}
.Healthy{background:#2e7d32}.Progressing{background:#1565c0}.Paused{background:#ef6c00}
.Degraded{background:#c62828}.bar{height:12px;background:#e3e7ec;border-radius:6px;width:320px}
.bar>div{height:12px;background:#1565c0;border-radius:6px}table{border-collapse:collapse}
td,th{padding:3px 10px 3px 0;text-align:left}.bad{color:#c62828}.good{color:#2e7d32}
.notice{padding:8px 12px;border-radius:6px;background:#fdecea;color:#c62828}
.done{background:#e8f5e9;color:#2e7d32}button{margin-right:8px}
"""
_GOOD = {"Successful", "True"}
_TRUE_IS_BAD = {"Paused", "RolledBack"}


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _signals(status: Mapping[str, Any]) -> str:
    latest: dict[str, Mapping[str, Any]] = {}
    for record in (status.get("analysis") or {}).get("history") or []:
        latest[record["signal"]] = record
    if not latest:
        return "<p>No analysis yet.</p>"
    rows = "".join(
        f"<tr><td>{_e(s)}</td><td>{_number(r.get('value'))}</td>"
        f"<td>{_number(r.get('stableValue'))}</td><td>{_e(r.get('threshold'))}</td>"
        f"<td class='{'good' if r.get('verdict') in _GOOD else 'bad'}'>{_e(r.get('verdict'))}</td>"
        f"<td>{_e(r.get('message'))}</td></tr>"
        for s, r in sorted(latest.items())
    )
    return ("<table class='signals'><tr><th>signal</th><th>canary</th><th>stable</th>"
            f"<th>threshold</th><th>verdict</th><th></th></tr>{rows}</table>")


def _judgement(status: Mapping[str, Any]) -> str:
    """The statistical judge's last score and each signal's test, if it ran."""
    j = (status.get("analysis") or {}).get("judgement") or {}
    if not j.get("verdict"):
        return ""
    rows = "".join(
        f"<tr><td>{_e(s.get('signal'))}</td><td>{_e(s.get('test'))}</td>"
        f"<td>{_e(s.get('weight'))}</td>"
        f"<td>{_e(s.get('canarySamples'))}/{_e(s.get('stableSamples'))}</td>"
        f"<td>{_number(s.get('canaryMedian'))}</td><td>{_number(s.get('stableMedian'))}</td>"
        f"<td>{_number(s.get('pValue'))}</td>"
        f"<td class='{'good' if s.get('verdict') == 'Pass' else 'bad'}'>{_e(s.get('verdict'))}"
        f"</td><td>{_e(s.get('explanation'))}</td></tr>"
        for s in j.get("signals") or []
    )
    good = "good" if j.get("verdict") == "Pass" else "bad"
    return (
        f"<h3>Judge</h3><p class='judgement'><span class='{good}'>{_e(j.get('verdict'))}</span>,"
        f" score {_number(j.get('score'))} (pass at {_e(j.get('passScore'))}, fail below"
        f" {_e(j.get('marginalScore'))}), {_e(j.get('at'))}: {_e(j.get('explanation'))}</p>"
        "<table class='judge'><tr><th>signal</th><th>test</th><th>weight</th><th>n</th>"
        f"<th>canary median</th><th>stable median</th><th>p</th><th>verdict</th><th></th></tr>"
        f"{rows}</table>"
    )


def _gates(status: Mapping[str, Any]) -> str:
    def good(c: Mapping[str, Any]) -> bool:
        return (c.get("status") == "True") != (c.get("type") in _TRUE_IS_BAD)

    items = "".join(
        f"<li class='{'good' if good(c) else 'bad'}'>{_e(c.get('type'))}: "
        f"{_e(c.get('status'))} ({_e(c.get('reason'))}) {_e(c.get('message'))}</li>"
        for c in status.get("conditions") or []
    )
    return f"<ul class='gates'>{items}</ul>"


def _service_card(ms: Mapping[str, Any], token: str) -> str:
    row, status = release_row(ms), ms.get("status") or {}
    steps = ((ms.get("spec") or {}).get("rollout") or {}).get("canary", {}).get("steps") or []
    current = status.get("currentStepIndex")
    step_items = "".join(
        f"<li>{'→ ' if i == current else ''}{_e(json.dumps(step))}</li>"
        for i, step in enumerate(steps)
    )
    form = "".join(
        f"<form method='post' action='/{action}' style='display:inline'>"
        f"<input type='hidden' name='token' value='{token}'>"
        f"<input type='hidden' name='namespace' value='{_e(row['namespace'])}'>"
        f"<input type='hidden' name='name' value='{_e(row['name'])}'>"
        f"<button name='action' value='{action}'>{action}</button></form>"
        for action in ("promote", "abort")
    )
    phase = row["phase"] or "Unknown"
    return f"""
<section class="card microservice" id="{_e(row['namespace'])}-{_e(row['name'])}">
  <h2>{_e(row['namespace'])}/{_e(row['name'])}
      <span class="phase {_e(phase)}">{_e(phase)}</span></h2>
  <p class="versions">stable <b>{_e(row['stable'])}</b> · canary <b>{_e(row['canary'])}</b>
     · step {_e(row['step'])} · ready {_e(row['ready'])}</p>
  <div class="bar" title="canary weight"><div style="width:{row['weight']}%"></div></div>
  <p class="weight">canary weight {row['weight']}%</p>
  <p class="message">{_e(row['message'])}</p>
  <h3>Golden signals, canary against stable</h3>{_signals(status)}{_judgement(status)}
  <h3>Steps</h3><ol>{step_items}</ol>
  <h3>Gates</h3>{_gates(status)}
  <p>{form}</p>
</section>"""


def _migration_card(mig: Mapping[str, Any], approvals: Sequence[Mapping[str, Any]]) -> str:
    meta, status = mig["metadata"], mig.get("status") or {}
    gates = "".join(
        f"<li class='{'good' if g.get('holds') else 'bad'}'>{_e(g.get('name'))}: "
        f"{_e(g.get('message'))}</li>" for g in status.get("gates") or []
    )
    mine = [a for a in approvals if (a.get("spec") or {}).get("migration") == meta["name"]]
    approved = "".join(
        f"<li>{_e(((a.get('status') or {}).get('approvedBy') or {}).get('username'))}: "
        f"{'valid' if (a.get('status') or {}).get('valid') else 'not valid'}</li>" for a in mine
    ) or "<li>none</li>"
    return f"""
<section class="card migration">
  <h2>SchemaMigration {_e(meta['namespace'])}/{_e(meta['name'])}
      <span class="phase">{_e(status.get('phase'))}</span></h2>
  <p>{_e(status.get('message'))}</p><h3>Gates</h3><ul>{gates}</ul>
  <h3>Approvals</h3><ul>{approved}</ul>
</section>"""


def render_page(kube: Kube, namespace: str | None, token: str, notice: str = "",
                ok: bool = False) -> str:
    """The whole page, from what the API server returns to this user now."""
    try:
        services = kube.list("Microservice", namespace)
        migrations = kube.list("SchemaMigration", namespace)
        approvals = kube.list("MigrationApproval", namespace)
    except ApiException as exc:
        services, migrations, approvals = [], [], []
        notice, ok = f"cannot read from the cluster: {exc.status} {exc.reason}", False
    key = lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
    cards = "".join(_service_card(ms, token) for ms in sorted(services, key=key))
    cards += "".join(_migration_card(m, approvals) for m in sorted(migrations, key=key))
    banner = f"<p class='notice{' done' if ok else ''}'>{_e(notice)}</p>" if notice else ""
    where = "every namespace" if namespace is None else f"namespace {namespace}"
    now = _dt.datetime.now(_dt.UTC).strftime("%H:%M:%S UTC")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Pilotboat</title>
<meta http-equiv="refresh" content="5; url=/"><style>{_STYLE}</style></head>
<body><h1>Pilotboat — {_e(where)}</h1><p>updated {now}</p>{banner}
{cards or '<p>No Microservices.</p>'}</body></html>"""


def _command(kube: Kube, namespace: str, name: str, action: str,
             user: str | None = None) -> tuple[str, bool]:
    command = {"promote": "promote", "abort": "abort"}[action]
    token = f"{_dt.datetime.now(_dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    # Who sends it, as the API server's admission policy requires (the operator's webhook
    # names the user when this is None).
    sent = {command: token, **({f"{command}By": user} if user else {})}
    try:
        kube.merge_patch("Microservice", namespace, name,
                         {"status": {"commands": sent}}, subresource="status")
    except ApiException as exc:
        return f"{action} {namespace}/{name} refused: {exc.status} {exc.reason}", False
    return f"{action} requested for {namespace}/{name} (token {token})", True


def foreign_request(
    host: str | None, origin: str | None, port: int, posting: bool
) -> tuple[int, str] | None:
    """Why a request is not the dashboard's own page talking to it, if it is not: another
    `Host` (a name pointed at 127.0.0.1: DNS rebinding), or a POST from another `Origin`."""
    if host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
        return 421, f"refused: this dashboard answers only at http://127.0.0.1:{port}/"
    if posting and origin is not None and origin != f"http://{host}":
        return 403, "refused: a form of another site"
    return None


def form_token(key: bytes, session: str) -> str:
    """The forms' token for one browser session: an HMAC of its cookie under the server's key.

    >>> form_token(b"k", "s") == form_token(b"k", "s") != form_token(b"k", "t")
    True
    """
    return hmac.new(key, session.encode(), hashlib.sha256).hexdigest()[:32]


def session_of(cookie_header: str | None) -> str | None:
    """The session cookie's value in a `Cookie` header, if it has a well-formed one.

    >>> session_of("a=1; pilotboat_session=abc_DEF-1234567890")
    'abc_DEF-1234567890'
    >>> session_of("pilotboat_session=<script>") is None
    True
    """
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and 16 <= len(value) <= 64 and all(
                c.isalnum() or c in "-_" for c in value):
            return value
    return None


def make_server(kube: Kube, namespace: str | None, port: int,
                user: str | None = None) -> ThreadingHTTPServer:
    """The dashboard's HTTP server on 127.0.0.1 (port 0: any free one); its buttons send
    commands as ``user`` (the kubeconfig's, from a SelfSubjectReview)."""
    key = secrets.token_bytes(32)

    class Page(BaseHTTPRequestHandler):
        def _foreign(self, posting: bool) -> tuple[int, str] | None:
            return foreign_request(self.headers.get("Host"), self.headers.get("Origin"),
                                   bound[0], posting)

        def do_GET(self) -> None:  # noqa: N802
            if refused := self._foreign(posting=False):
                self._reply(*refused)
                return
            if self.path.split("?")[0] != "/":
                self._reply(404, "not found")
                return
            query = parse_qs(self.path.partition("?")[2])
            session = session_of(self.headers.get("Cookie"))
            cookie = None
            if session is None:
                session = secrets.token_urlsafe(24)
                cookie = (f"{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/")
            self._reply(200, render_page(kube, namespace, form_token(key, session),
                                         query.get("notice", [""])[0],
                                         query.get("ok", [""])[0] == "1"), cookie=cookie)

        def do_POST(self) -> None:  # noqa: N802
            if refused := self._foreign(posting=True):
                self._reply(*refused)
                return
            length = min(int(self.headers.get("Content-Length") or 0), 4096)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            action = self.path.strip("/")
            session = session_of(self.headers.get("Cookie"))
            if (session is None or action not in ("promote", "abort")
                    or not hmac.compare_digest(form.get("token", ""), form_token(key, session))):
                self._reply(403, "refused: not a form of this dashboard (no session cookie, "
                                 "or a token of another session)")
                return
            notice, ok = _command(kube, form.get("namespace", ""), form.get("name", ""), action,
                                  user)
            self.send_response(303)
            self.send_header("Location", "/?" + urlencode({"notice": notice, "ok": int(ok)}))
            self.end_headers()

        def _reply(self, code: int, body: str, cookie: str | None = None) -> None:
            data = body.encode()
            self.send_response(code)
            if cookie:
                self.send_header("Set-Cookie", cookie)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
            self.send_header("X-Frame-Options", "DENY")
            # Not no-referrer: under it a browser posts the page's own forms with
            # `Origin: null`, which the Origin check refuses as another site's.
            self.send_header("Referrer-Policy", "same-origin")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Page)
    bound = [server.server_port]
    return server


@click.command()
@cluster_options()
@click.option("--port", default=8765, show_default=True, help="Port on 127.0.0.1 (0: any).")
def dashboard(target: ClusterTarget, port: int) -> None:
    """Serve a page on 127.0.0.1 with releases, golden signals, gates, approvals, and
    promote / abort buttons that act as you (your kubeconfig, your RBAC)."""
    kube = target.connect()
    ns = target.scope
    server = make_server(kube, ns, port, whoami(kube))
    click.echo(f"Pilotboat dashboard on http://127.0.0.1:{server.server_address[1]}/ "
               "(Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
