"""Argo CD's view of Pilotboat's resources: the Lua health checks in examples/argocd/health
and the Microservice's resource actions in examples/argocd/actions, run by Debian's Lua 5.4
on objects the operator wrote.

Two ways: the live tests drive real objects through each state with the shared operator and
judge them as they are; the fixture tests judge status objects saved from such runs
(tests/fixtures/status/<kind>/<state>.<Health>.json; PILOTBOAT_RECORD_STATUS=1 rewrites them
from a live run), so every state stays covered even when a live run takes another path.

An action's script returns the object changed; Argo CD's server sends the difference as a
JSON merge patch to the status subresource when it touches status (and the rest, if any, to
the object). :func:`apply_like_argo_cd` does the same here, so the live test steers a
release through the actions alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_approvals import whoami
from tests.cluster.test_databases import (
    admin_secret,
    database_server,
    given_server,
    owned_database,
)
from tests.cluster.test_migrations import (
    CONTRACT,
    approval,
    create_in,
    given_database_with_orders,
    running,
    schema_migration,
    workload,
)
from tests.conftest import SESSION
from tests.fixtures.postgres import PostgresServer
from tests.manifests import microservice
from tests.story import Story

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "examples" / "argocd" / "health"
ACTIONS = REPO / "examples" / "argocd" / "actions" / "microservice"
FIXTURES = REPO / "tests" / "fixtures" / "status"
RECORD = os.environ.get("PILOTBOAT_RECORD_STATUS") == "1"


@pytest.fixture(scope="session")
def lua() -> str:
    if shutil.which("lua5.4") is None:  # as hack/deps.sh installs it
        subprocess.run([str(REPO / "hack" / "deps.sh")], check=True)
    path = shutil.which("lua5.4")
    assert path, "lua5.4 is not installed (hack/deps.sh installs it)"
    return path


def _lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are Lua escapes here
    if isinstance(value, list):
        return "{" + ", ".join(_lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(
        f"[{json.dumps(k)}] = {_lua_literal(v)}" for k, v in value.items()) + "}"


def health(lua: str, kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD would get them: `obj` global, the script's return value."""
    script = (HEALTH / f"{kind.lower()}.lua").read_text()
    program = (f"obj = {_lua_literal(obj)}\n"
               f"local function check()\n{script}\nend\n"
               "local hs = check()\nio.write(hs.status, '\\n', hs.message or '', '\\n')\n")
    out = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, check=True)
    status, message = out.stdout.split("\n", 1)
    return status, message.strip()


# Argo CD's JSON encoding of the object a script returns, for this harness: Lua has one table
# type, so an empty one is written [] (compare with _same, which equates [] and {}).
_ENCODE = r"""
local function encode(v)
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return string.format("%.17g", v)
  end
  if t == "string" then
    local escaped = v:gsub('[%c"\\]', function(c)
      local named = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t' }
      return named[c] or string.format("\\u%04x", c:byte())
    end)
    return '"' .. escaped .. '"'
  end
  local parts = {}
  if #v > 0 or next(v) == nil then
    for _, item in ipairs(v) do table.insert(parts, encode(item)) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do table.insert(keys, k) end
  table.sort(keys)
  for _, k in ipairs(keys) do table.insert(parts, encode(k) .. ":" .. encode(v[k])) end
  return "{" .. table.concat(parts, ",") .. "}"
end
"""


def _run(lua: str, script: str, obj: dict[str, Any]) -> Any:
    """What `script` returns with `obj` as its global, as JSON."""
    program = (f"obj = {_lua_literal(obj)}\n{_ENCODE}\n"
               f"local function run()\n{script}\nend\n"
               "io.write(encode(run()))\n")
    out = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def offered(lua: str, obj: dict[str, Any]) -> set[str]:
    """The Microservice actions Argo CD offers (not disabled) for `obj`."""
    actions = _run(lua, (ACTIONS / "discovery.lua").read_text(), obj)
    return {name for name, action in actions.items() if not action.get("disabled")}


def acted(lua: str, action: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object `action`'s script returns for `obj`."""
    result = _run(lua, (ACTIONS / f"{action}.lua").read_text(), obj)
    assert isinstance(result, dict)
    return result


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()} if value else []
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) from `old` to `new`, as Argo CD computes it."""
    patch: dict[str, Any] = {}
    for key in old.keys() | new.keys():
        if key not in new:
            patch[key] = None
        elif key not in old:
            patch[key] = new[key]
        elif _normal(old[key]) != _normal(new[key]):
            both = isinstance(old[key], dict) and isinstance(new[key], dict)
            patch[key] = merge_patch(old[key], new[key]) if both else new[key]
    return patch


def apply_like_argo_cd(story: Story, live: dict[str, Any], new: dict[str, Any]) -> None:
    """What Argo CD's server does with an action's result: the whole difference to the status
    subresource when it touches status, then what is not status to the object (here: nothing,
    which the assertion proves)."""
    patch = merge_patch(live, new)
    assert set(patch) == {"status"}, f"the action changed more than status: {patch}"
    story.kube.merge_patch(live["kind"], story.namespace, live["metadata"]["name"], patch,
                           subresource="status")


def run_action(lua: str, story: Story, name: str, action: str) -> str:
    """Run `action` on the live Microservice `name` as Argo CD would; returns its token."""
    live = story.get("Microservice", name)
    assert live is not None
    assert action in offered(lua, live), (action, offered(lua, live), live.get("status"))
    new = acted(lua, action, live)
    apply_like_argo_cd(story, live, new)
    command = {"promote-full": "promoteFull"}.get(action, action)
    return str(new["status"]["commands"][command])


def judged(lua: str, story: Story, kind: str, name: str, state: str, expected: str) -> str:
    obj = story.get(kind, name)
    assert obj is not None
    status, message = health(lua, kind, obj)
    assert status == expected, f"{kind} {name} in state {state}: {status} ({message})\n" + \
        json.dumps(obj.get("status"), indent=2)
    if RECORD:
        keep = {"apiVersion": obj["apiVersion"], "kind": kind,
                "metadata": {"name": name, "generation": obj["metadata"].get("generation")},
                "spec": obj.get("spec"), "status": obj.get("status")}
        out = FIXTURES / kind.lower() / f"{state}.{expected}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(keep, indent=2, sort_keys=True) + "\n")
    return message


def _status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("status") or {}


# --- saved status objects ---------------------------------------------------------------------

SAVED = sorted(FIXTURES.glob("*/*.json"))


@pytest.mark.parametrize("path", SAVED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_saved_status_objects(lua: str, path: Path) -> None:
    obj = json.loads(path.read_text())
    expected = path.stem.rsplit(".", 1)[1]
    status, message = health(lua, obj["kind"], obj)
    assert status == expected, message
    assert message


def test_every_health_is_covered_by_saved_objects() -> None:
    covered = {(p.parent.name, p.stem.rsplit(".", 1)[1]) for p in SAVED}
    assert {("microservice", h) for h in ("Healthy", "Progressing", "Suspended", "Degraded")} \
        <= covered
    assert {("schemamigration", h) for h in ("Healthy", "Progressing", "Degraded")} <= covered
    # Waiting for an approval is Healthy with a message, never Suspended (docs/argocd.md).
    assert ("schemamigration", "Suspended") not in covered
    assert {("owneddatabase", h) for h in ("Healthy", "Progressing", "Degraded")} <= covered


def test_an_object_the_operator_has_not_seen_is_progressing(lua: str) -> None:
    for kind in ("Microservice", "SchemaMigration", "OwnedDatabase"):
        obj = {"apiVersion": "pilotboat.dev/v1alpha1", "kind": kind,
               "metadata": {"name": "x", "generation": 1}, "spec": {}}
        assert health(lua, kind, obj)[0] == "Progressing"
        obj["status"] = {"phase": "Healthy", "observedGeneration": 0}
        assert health(lua, kind, obj)[0] == "Progressing"


# --- live, with the shared operator -----------------------------------------------------------

STEPS = [{"setWeight": 25}, {"pause": {"untilPromoted": True}}]


@pytest.mark.usefixtures("operator")
def test_a_release_seen_by_argo_cd(lua: str, story: Story, postgres_server: PostgresServer
                                   ) -> None:
    def phase(p: str):  # type: ignore[no-untyped-def]
        return lambda o: _status(o).get("phase") == p and _status(o).get(
            "observedGeneration") == (o or {})["metadata"]["generation"]

    shop = microservice("shop", version="v1", rollout={"canary": {"steps": STEPS}})
    story.given(shop)
    story.wait_for("Microservice", "shop", phase("Healthy"), timeout=90)
    story.wait_condition("Microservice", "shop", "Ready")
    judged(lua, story, "Microservice", "shop", "released", "Healthy")

    # v2 needs a schema migration whose database does not exist yet: the release waits.
    story.given(schema_migration("shop-schema", database="missing-db",
                                 requiredBy={"service": "shop", "version": "v2"}))
    story.apply(microservice("shop", version="v2", rollout={"canary": {"steps": STEPS}}))
    story.wait_for("Microservice", "shop", lambda o: _status(o).get("observedGeneration") == 2
                   and "waits for its schema migrations" in (_status(o).get("message") or ""))
    message = judged(lua, story, "Microservice", "shop", "waiting-for-expand", "Progressing")
    assert "canary" in message
    story.wait_for("SchemaMigration", "shop-schema", phase("Pending"))
    judged(lua, story, "SchemaMigration", "shop-schema", "database-not-ready", "Progressing")

    story.delete("SchemaMigration", "shop-schema")
    story.wait_for("Microservice", "shop", phase("Paused"), timeout=60)
    message = judged(lua, story, "Microservice", "shop", "paused", "Suspended")
    assert "promot" in message.lower()

    story.patch_status_command("shop", "abort")
    story.wait_for("Microservice", "shop", phase("Degraded"), timeout=60)
    judged(lua, story, "Microservice", "shop", "rolled-back", "Degraded")

    story.given(microservice("broken", rollout={"rolloutPolicyRef": "no-such-policy"}))
    story.wait_condition("Microservice", "broken", "SpecValid", "False")
    message = judged(lua, story, "Microservice", "broken", "invalid-spec", "Degraded")
    assert "no-such-policy" in message


@pytest.mark.usefixtures("operator")
def test_a_migration_seen_by_argo_cd(lua: str, story: Story, postgres_server: PostgresServer
                                     ) -> None:
    given_database_with_orders(story, postgres_server)
    judged(lua, story, "OwnedDatabase", "orders-db", "ready", "Healthy")
    story.given(workload("v1", 1))
    story.wait_for("Deployment", "orders-v1", lambda _: running(story, "v1") == 1)

    story.given(schema_migration(contract={"sql": CONTRACT, "soak": "1s"}))
    story.wait_for("SchemaMigration", "customer-column",
                   lambda o: _status(o).get("phase") == "Expanded")
    message = judged(lua, story, "SchemaMigration", "customer-column", "expanded", "Healthy")
    assert "v1" in message

    story.given(workload("v2", 1), workload("v1", 0))
    story.wait_for("SchemaMigration", "customer-column", lambda o: [
        g["name"] for g in _status(o).get("gates", []) if not g["holds"]] == ["Approved"],
        timeout=60, what="waiting for approval only")
    message = judged(lua, story, "SchemaMigration", "customer-column", "awaiting-approval",
                     "Healthy")
    assert "kubectl pilotboat approve customer-column" in message

    create_in(story.kube, story.namespace, approval("yes"))
    story.wait_for("SchemaMigration", "customer-column",
                   lambda o: _status(o).get("phase") == "Contracted", timeout=60)
    judged(lua, story, "SchemaMigration", "customer-column", "contracted", "Healthy")

    story.given(schema_migration("unsafe", expand={"sql": "ALTER TABLE orders DROP COLUMN id;"}))
    story.wait_for("SchemaMigration", "unsafe", lambda o: _status(o).get("phase") == "Failed")
    judged(lua, story, "SchemaMigration", "unsafe", "unsafe-sql", "Degraded")

    # A second OwnedDatabase naming the same PostgreSQL database is refused.
    orders = story.get("OwnedDatabase", "orders-db")
    assert orders is not None
    thief = owned_database("thief-db", postgres_server, owner="thief")
    thief["spec"]["databaseName"] = orders["status"]["databaseName"]
    story.given(thief)
    story.wait_for("OwnedDatabase", "thief-db", lambda o: _status(o).get("phase") == "Refused")
    judged(lua, story, "OwnedDatabase", "thief-db", "refused", "Degraded")

    # Its DatabaseServer lacks its admin Secret: refused, the platform team must fix it.
    lonely = given_server(story.kube, postgres_server, secret="absent", with_secret=False)
    story.given(owned_database("lonely-db", lonely, owner="lonely"))
    story.wait_for("OwnedDatabase", "lonely-db", lambda o: _status(o).get("phase") == "Refused")
    judged(lua, story, "OwnedDatabase", "lonely-db", "admin-secret-missing", "Degraded")

    # A server that does not answer (yet): Progressing.
    story.kube.apply(admin_secret(postgres_server))
    story.kube.apply(database_server(postgres_server, name=f"t{SESSION}-argo-nowhere", port=1))
    story.given(owned_database("waiting-db", f"t{SESSION}-argo-nowhere", owner="waiting"))
    story.wait_for("OwnedDatabase", "waiting-db", lambda o: any(
        c["reason"] == "ServerUnreachable" for c in _status(o).get("conditions") or []))
    judged(lua, story, "OwnedDatabase", "waiting-db", "server-unreachable", "Progressing")


# --- the rest of the Argo CD example -----------------------------------------------------------

ARGOCD = REPO / "examples" / "argocd"


def test_argocd_cm_carries_each_script_verbatim() -> None:
    import yaml

    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    for kind in ("Microservice", "SchemaMigration", "OwnedDatabase"):
        key = f"resource.customizations.health.pilotboat.dev_{kind}"
        assert data[key] == (HEALTH / f"{kind.lower()}.lua").read_text(), key


def test_the_applications_point_at_this_repository() -> None:
    import yaml

    for name, path in (("shop-application.yaml", "examples/shop"),
                       ("pilotboat-application.yaml", "charts/pilotboat")):
        app = yaml.safe_load((ARGOCD / name).read_text())
        assert app["kind"] == "Application"
        assert app["spec"]["source"]["path"] == path
        assert (REPO / path).is_dir()


def test_the_sync_wave_component_orders_databases_migrations_services(
    tmp_path: Path, kubeconfig: Path
) -> None:
    import yaml

    objects = [{"apiVersion": "pilotboat.dev/v1alpha1", "kind": kind,
                "metadata": {"name": kind.lower()}, "spec": {}}
               for kind in ("Microservice", "SchemaMigration", "OwnedDatabase", "RolloutPolicy",
                            "FeatureFlag")]
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump_all(objects))
    shutil.copytree(ARGOCD / "sync-waves", tmp_path / "sync-waves")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": ["objects.yaml"], "components": ["sync-waves"]}))
    out = subprocess.run([str(REPO / ".state/bin/kubectl"), "kustomize", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    waves = {d["kind"]: d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
             for d in yaml.safe_load_all(out) if d}
    assert waves == {"OwnedDatabase": "0", "SchemaMigration": "1", "RolloutPolicy": "1",
                     "FeatureFlag": "1", "Microservice": "2"}


# --- resource actions ----------------------------------------------------------------------------

ACTION_NAMES = ("promote", "promote-full", "abort", "retry")
TOKEN = re.compile(r"^\d{8}T\d{6}Z-argocd$")

# What each saved Microservice offers: steering while a canary runs, retry after a rollback;
# nothing while the release waits for its migration (no canary yet).
OFFERED = {
    "paused": {"promote", "promote-full", "abort"},
    "waiting-for-expand": set(),
    "rolled-back": {"retry"},
    "released": set(),
    "invalid-spec": set(),
}


def test_argocd_cm_carries_each_action_verbatim() -> None:
    import yaml

    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    actions = yaml.safe_load(data["resource.customizations.actions.pilotboat.dev_Microservice"])
    assert actions["discovery.lua"] == (ACTIONS / "discovery.lua").read_text()
    assert [d["name"] for d in actions["definitions"]] == list(ACTION_NAMES)
    for definition in actions["definitions"]:
        assert definition["action.lua"] == (ACTIONS / f"{definition['name']}.lua").read_text()


@pytest.mark.parametrize("state", sorted(OFFERED))
def test_actions_offered_by_saved_microservices(lua: str, state: str) -> None:
    (path,) = FIXTURES.glob(f"microservice/{state}.*.json")
    assert offered(lua, json.loads(path.read_text())) == OFFERED[state]


def test_nothing_is_offered_before_the_operator_reports(lua: str) -> None:
    obj = {"apiVersion": "pilotboat.dev/v1alpha1", "kind": "Microservice",
           "metadata": {"name": "x", "generation": 1}, "spec": {}}
    assert offered(lua, obj) == set()


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_an_action_writes_one_command_token_to_status(lua: str, action: str) -> None:
    """The patch Argo CD derives holds one fresh token under status.commands, as `kubectl
    pilotboat` writes; the spec and the operator's own status fields stay as they are."""
    live = json.loads((FIXTURES / "microservice" / "rolled-back.Degraded.json").read_text())
    command = {"promote-full": "promoteFull"}.get(action, action)
    patch = merge_patch(live, acted(lua, action, live))
    token = patch["status"]["commands"][command]
    assert patch == {"status": {"commands": {command: token}}}
    assert TOKEN.match(token), token
    assert token != live["status"]["commands"].get(command)
    bare = {k: v for k, v in live.items() if k != "status"}  # not seen by the operator yet
    commands = acted(lua, action, bare)["status"]["commands"]
    assert list(commands) == [command] and TOKEN.match(commands[command])


@pytest.mark.usefixtures("operator")
def test_a_release_steered_by_argo_cd_actions(lua: str, story: Story, kubeconfig: Path) -> None:
    """Promote, abort, retry and promote-full, each run as Argo CD runs it (the script on the
    live object, the difference patched to the status subresource), move a real release. The
    actions name no sender: the operator's webhook records the user Argo CD runs as."""
    def phase(p: str, version: str | None = None):  # type: ignore[no-untyped-def]
        def holds(o: dict[str, Any] | None) -> bool:
            st = _status(o)
            return st.get("phase") == p and st.get("observedGeneration") == (
                o or {})["metadata"]["generation"] and (
                version is None or version in (st.get("stableVersion"), st.get("canaryVersion")))
        return holds

    def release(version: str) -> dict[str, Any]:
        return microservice("steered", version=version, rollout={"canary": {"steps": STEPS}})

    story.given(release("v1"))
    story.wait_for("Microservice", "steered", phase("Healthy", "v1"), timeout=90)
    assert offered(lua, story.get("Microservice", "steered") or {}) == set()

    story.apply(release("v2"))
    story.wait_for("Microservice", "steered", phase("Paused", "v2"), timeout=60)
    run_action(lua, story, "steered", "promote")
    story.wait_for("Microservice", "steered", lambda o: _status(o).get("phase") == "Healthy"
                   and _status(o).get("stableVersion") == "v2", timeout=90, what="v2 promoted")
    sent = _status(story.get("Microservice", "steered"))
    assert sent["commands"]["promoteBy"] == whoami(kubeconfig)
    assert sent["lastCommand"]["name"] == "promote" and sent["lastCommand"]["verified"]

    story.apply(release("v3"))
    story.wait_for("Microservice", "steered", phase("Paused", "v3"), timeout=60)
    run_action(lua, story, "steered", "abort")
    story.wait_for("Microservice", "steered", phase("Degraded"), timeout=60)
    rolled_back = story.get("Microservice", "steered")
    assert rolled_back is not None and offered(lua, rolled_back) == {"retry"}
    assert _status(rolled_back)["stableVersion"] == "v2"

    token = run_action(lua, story, "steered", "retry")
    story.wait_for("Microservice", "steered", lambda o: (_status(o).get("release") or {}).get(
        "handledCommands", {}).get("retry") == token and _status(o).get("phase") == "Paused",
        timeout=60, what="v3 released again, paused")
    run_action(lua, story, "steered", "promote-full")
    story.wait_for("Microservice", "steered", lambda o: _status(o).get("phase") == "Healthy"
                   and _status(o).get("stableVersion") == "v3", timeout=90, what="v3 promoted")
