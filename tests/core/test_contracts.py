"""Contract compatibility: a table of real OpenAPI changes, breaking and not, consumers'
expectations held and broken, and `pilotboat contract check` exit codes."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pilotboat.cli.main import main as cli
from pilotboat.core.contracts import (
    ConsumerExpectation,
    ContractError,
    breaking_changes,
    check_contract,
    consumer_violations,
    load_document,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "contracts"
V1 = load_document((EXAMPLES / "orders-v1.yaml").read_text())
Doc = dict[str, Any]


def schemas(d: Doc) -> Doc:
    return d["components"]["schemas"]  # type: ignore[no-any-return]


def order_extra(d: Doc) -> Doc:
    return schemas(d)["Order"]["allOf"][1]  # type: ignore[no-any-return]


def params(d: Doc, path: str, method: str) -> list[Doc]:
    return d["paths"][path][method].setdefault("parameters", [])  # type: ignore[no-any-return]


def _set(fn: Callable[[Doc], Any]) -> Callable[[Doc], None]:
    return lambda d: (fn(d), None)[1]


CASES: list[tuple[str, Callable[[Doc], None], set[str]]] = [
    # --- breaking ---
    ("path removed", lambda d: d["paths"].pop("/orders/{id}"), {"path-removed"}),
    ("operation removed", lambda d: d["paths"]["/orders/{id}"].pop("delete"),
     {"operation-removed"}),
    ("response field removed", lambda d: order_extra(d)["properties"].pop("totalCents"),
     {"response-field-removed"}),
    ("response field renamed",
     lambda d: order_extra(d)["properties"].__setitem__(
         "total", order_extra(d)["properties"].pop("totalCents")),
     {"response-field-removed"}),
    ("nested response field removed in an array",
     lambda d: schemas(d)["Line"]["properties"].pop("sku"),
     {"response-field-removed"}),
    ("response field type changed",
     lambda d: order_extra(d)["properties"]["totalCents"].__setitem__("type", "string"),
     {"type-changed"}),
    ("response field became optional", lambda d: order_extra(d)["required"].remove("status"),
     {"response-field-optional"}),
    ("new required request field",
     lambda d: (schemas(d)["NewOrder"]["properties"].__setitem__("channel", {"type": "string"}),
                schemas(d)["NewOrder"]["required"].append("channel")),
     {"request-field-required"}),
    ("optional request field made required",
     lambda d: schemas(d)["NewOrder"]["required"].append("note"), {"request-field-required"}),
    ("new required field in array items",
     lambda d: schemas(d)["Line"]["required"].append("unitCents")
     or schemas(d)["Line"]["properties"].__setitem__("unitCents", {"type": "integer"}),
     {"request-field-required"}),
    ("new required query parameter",
     lambda d: params(d, "/orders", "get").append(
         {"name": "tenant", "in": "query", "required": True, "schema": {"type": "string"}}),
     {"request-parameter-required"}),
    ("optional parameter made required",
     lambda d: params(d, "/orders", "get")[1].__setitem__("required", True),
     {"request-parameter-required"}),
    ("request enum narrowed",
     lambda d: schemas(d)["NewOrder"]["properties"]["currency"]["enum"].remove("GBP"),
     {"request-enum-narrowed"}),
    ("parameter enum narrowed",
     lambda d: params(d, "/orders", "get")[0]["schema"]["enum"].remove("shipped"),
     {"request-enum-narrowed"}),
    ("enum added to a free request field",
     lambda d: schemas(d)["NewOrder"]["properties"]["note"].__setitem__("enum", ["gift"]),
     {"request-enum-narrowed"}),
    ("request field type changed",
     lambda d: schemas(d)["Line"]["properties"]["quantity"].__setitem__("type", "string"),
     {"type-changed"}),
    ("parameter type changed",
     lambda d: params(d, "/orders", "get")[1]["schema"].__setitem__("type", "string"),
     {"type-changed"}),
    ("request body made required on an operation without one",
     lambda d: d["paths"]["/orders/{id}"]["delete"].__setitem__("requestBody", {
         "required": True, "content": {"application/json": {"schema": {"type": "object"}}}}),
     {"request-body-required"}),
    ("request field removed where unknown fields are refused",
     lambda d: (schemas(d)["NewOrder"].__setitem__("additionalProperties", False),
                schemas(d)["NewOrder"]["properties"].pop("note")),
     {"request-field-removed", "response-field-removed"}),  # Order embeds NewOrder
    # --- not breaking ---
    ("nothing changed", lambda d: None, set()),
    ("new path", lambda d: d["paths"].__setitem__("/health", {"get": {
        "responses": {"200": {"description": "ok"}}}}), set()),
    ("new operation", lambda d: d["paths"]["/orders/{id}"].__setitem__("patch", {
        "operationId": "updateOrder", "responses": {"200": {"description": "ok"}}}), set()),
    ("new optional request field",
     lambda d: schemas(d)["NewOrder"]["properties"].__setitem__("channel", {"type": "string"}),
     set()),
    ("new response field",
     lambda d: order_extra(d)["properties"].__setitem__("createdAt", {"type": "string"}),
     set()),
    ("request enum widened",
     lambda d: schemas(d)["NewOrder"]["properties"]["currency"]["enum"].append("CHF"),
     {"response-enum-widened"}),  # currency is also in the response (Order embeds NewOrder)
    ("parameter enum widened",
     lambda d: params(d, "/orders", "get")[0]["schema"]["enum"].append("cancelled"), set()),
    ("required header made optional",
     lambda d: params(d, "/orders", "post")[0].__setitem__("required", False), set()),
    ("request integer widened to number",
     lambda d: schemas(d)["Line"]["properties"]["quantity"].__setitem__("type", "number"),
     {"type-changed"}),  # quantity is also in the response (Order embeds NewOrder)
    ("new optional parameter",
     lambda d: params(d, "/orders", "get").append(
         {"name": "cursor", "in": "query", "schema": {"type": "string"}}), set()),
    ("schema inlined instead of $ref",
     lambda d: d["paths"]["/orders/{id}"]["get"]["responses"]["200"]["content"][
         "application/json"].__setitem__("schema", copy.deepcopy(schemas(d)["Order"])), set()),
    ("new optional object with a required field inside",
     lambda d: schemas(d)["NewOrder"]["properties"].__setitem__("gift", {
         "type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}}),
     set()),
]  # fmt: skip


@pytest.mark.parametrize(("name", "change", "rules"), CASES, ids=[c[0] for c in CASES])
def test_breaking_changes(name: str, change: Callable[[Doc], None], rules: set[str]) -> None:
    new = copy.deepcopy(V1)
    change(new)
    found = breaking_changes(V1, load_document(new))
    assert {v.rule for v in found} == rules, [v.describe() for v in found]
    for v in found:
        assert v.path and v.message


def test_a_violation_names_the_consumers_of_its_operation() -> None:
    new = copy.deepcopy(V1)
    new["paths"]["/orders/{id}"].pop("delete")
    consumers = [ConsumerExpectation("admin", ("cancelOrder",)), ConsumerExpectation("web")]
    (violation,) = breaking_changes(V1, new, consumers)
    assert violation.consumers == ("admin",)
    assert violation.location() == "DELETE /orders/{id}"
    assert "(breaks admin)" in violation.describe()


PAYMENTS = ConsumerExpectation(
    "payments", ("getOrder", "createOrder"),
    request_fields=("createOrder:customerId", "createOrder:lines[].sku",
                    "createOrder:lines.quantity", "createOrder:Idempotency-Key"),
    response_fields=("getOrder:status", "totalCents", "lines[].sku"),
)  # fmt: skip

CONSUMER_CASES: list[tuple[str, Callable[[Doc], None], set[str]]] = [
    ("satisfied", lambda d: None, set()),
    ("satisfied by a new version that only adds",
     lambda d: order_extra(d)["properties"].__setitem__("total", {"type": "number"}), set()),
    ("operation gone", lambda d: d["paths"]["/orders/{id}"].pop("get"),
     {"consumer-operation-missing"}),
    ("response field it reads gone", lambda d: order_extra(d)["properties"].pop("status"),
     {"consumer-response-field-missing"}),
    ("request field it sends gone", lambda d: schemas(d)["Line"]["properties"].pop("sku"),
     {"consumer-request-field-missing", "consumer-response-field-missing"}),
    ("new required field it does not send",
     lambda d: schemas(d)["NewOrder"]["required"].append("currency"),
     {"consumer-required-field-unsent"}),
    ("new required header it does not send",
     lambda d: params(d, "/orders", "post").append(
         {"name": "X-Tenant", "in": "header", "required": True, "schema": {"type": "string"}}),
     {"consumer-required-field-unsent"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "change", "rules"), CONSUMER_CASES, ids=[c[0] for c in CONSUMER_CASES]
)
def test_consumer_expectations(name: str, change: Callable[[Doc], None], rules: set[str]) -> None:
    new = copy.deepcopy(V1)
    change(new)
    found = consumer_violations(new, [PAYMENTS])
    assert {v.rule for v in found} == rules, [v.describe() for v in found]
    assert all(v.consumers == ("payments",) for v in found)


def test_nothing_deployed_checks_the_consumers_only() -> None:
    new = copy.deepcopy(V1)
    new["paths"].pop("/orders/{id}")
    assert {v.rule for v in check_contract(None, new, [PAYMENTS])} == {
        "consumer-operation-missing"
    }


@pytest.mark.parametrize(
    "text",
    ["openapi: 2.0\npaths: {}", "swagger: '2.0'", "- a list", "{not: yaml: at all",
     "openapi: 3.0.0\npaths:\n  /x:\n    get:\n      responses:\n        '200':\n"
     "          $ref: 'other.yaml#/x'"],
)  # fmt: skip
def test_unreadable_documents_are_errors(text: str) -> None:
    with pytest.raises(ContractError):
        check_contract(None, load_document(text))


# --- the command line ----------------------------------------------------------------------


def contract_check(*args: str) -> Any:
    return CliRunner().invoke(cli, ["contract", "check", *args])


def test_cli_exits_0_for_a_compatible_release() -> None:
    result = contract_check(str(EXAMPLES / "orders-v1.yaml"), str(EXAMPLES / "orders-v2.yaml"),
                            "--consumers", str(EXAMPLES / "consumers"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("compatible")


def test_cli_exits_1_and_prints_each_violation_with_the_consumer() -> None:
    result = contract_check(
        str(EXAMPLES / "orders-v1.yaml"), str(EXAMPLES / "orders-v2-breaking.yaml"),
        "--consumers", str(EXAMPLES / "consumers"), "--service", "orders",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    out = result.output
    assert "BREAKING" in out
    for rule in ("operation-removed", "request-field-required", "response-field-removed",
                 "consumer-response-field-missing"):  # fmt: skip
        assert rule in out
    assert "[breaks payments" in out and "DELETE /orders/{id}" in out


def test_cli_without_consumers_and_with_an_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("swagger: '2.0'\n")
    result = contract_check(str(EXAMPLES / "orders-v1.yaml"), str(bad))
    assert result.exit_code == 2 and "OpenAPI 3" in result.output
    old_json = tmp_path / "old.json"
    old_json.write_text(yaml.safe_dump(V1))  # JSON is YAML; any mapping text reads
    result = contract_check(str(old_json), str(EXAMPLES / "orders-v2-breaking.yaml"))
    assert result.exit_code == 1 and "consumer-" not in result.output


# --- documents validated against the OpenAPI specification ---------------------------------

INFO = {"title": "pets", "version": "1"}


def _get(responses: Doc, **op: Any) -> Doc:
    return {"openapi": "3.0.3", "info": INFO, "paths": {"/pets": {"get": {
        "responses": responses, **op}}}}  # fmt: skip


@pytest.mark.parametrize(("doc", "where", "says"), [
    ({"openapi": "3.0.3", "paths": {}}, "$", "'info' is a required property"),
    (_get({"200": {"content": {}}}), "$.paths['/pets'].get.responses['200']",
     "'description' is a required property"),
    (_get({"200": {"description": "ok"}}, parameters=[{"name": "kind", "in": "body"}]),
     "$.paths['/pets'].get.parameters[0]", ""),
    (_get({"200": {"description": "ok", "content": {"application/json": {
        "schema": {"type": "strin"}}}}}),
     "$.paths['/pets'].get.responses['200'].content['application/json'].schema.type",
     "'strin' is not one of"),
    ({"openapi": "3.0.3", "info": INFO, "paths": {"pets": {}}}, "$.paths", "'pets' does not match"),
    (_get({"200": {"description": "ok", "content": {"application/json": {
        "schema": {"type": "string", "maxLength": -1}}}}}),
     "$.paths['/pets'].get.responses['200'].content['application/json'].schema.maxLength",
     "less than the minimum of 0"),
])  # fmt: skip
def test_an_invalid_document_is_refused_naming_the_json_path(doc: Doc, where: str,
                                                            says: str) -> None:
    with pytest.raises(ContractError) as refused:
        load_document(doc)
    message = str(refused.value)
    assert message.startswith(f"not a valid OpenAPI 3.0 document: {where}: "), message
    assert says in message


@pytest.mark.parametrize(("schema", "says"), [
    ({"$ref": "https://schemas.example.com/pet.json"}, "only local $refs are supported"),
    ({"$ref": "file:///etc/passwd"}, "only local $refs are supported"),
    ({"$ref": "pet.yaml#/Pet"}, "only local $refs are supported"),
    ({"$id": "https://schemas.example.com/", "$ref": "pet.json"}, "only local $refs"),
    ({"$ref": "#/components/schemas/Nope"}, "points nowhere"),
])  # fmt: skip
def test_nothing_outside_the_document_is_fetched(
    schema: Doc, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    doc = _get({"200": {"description": "ok", "content": {"application/json": {"schema": schema}}}})
    doc["openapi"] = "3.1.0"
    with pytest.raises(ContractError, match=re.escape(says)):
        load_document(doc)


def test_a_dangling_ref_outside_the_operations_is_refused() -> None:
    doc = _get({"200": {"description": "ok"}})
    doc["components"] = {"schemas": {"Pet": {"type": "object", "properties": {
        "owner": {"$ref": "#/components/schemas/Owner"}}}}}  # fmt: skip
    with pytest.raises(ContractError, match="'/components/schemas/Owner' points nowhere"):
        load_document(doc)


def test_an_unsupported_version_is_refused() -> None:
    with pytest.raises(ContractError, match=r"OpenAPI 3\.9\.0 is not supported"):
        load_document({"openapi": "3.9.0", "info": INFO, "paths": {}})


def test_openapi_3_1_documents_are_read() -> None:
    doc = _get({"200": {"description": "ok", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"name": {"type": ["string", "null"]}}}}}}})  # fmt: skip
    doc["openapi"] = "3.1.0"
    assert check_contract(load_document(doc), load_document(doc)) == []


def test_cli_names_the_file_and_the_json_path_of_an_invalid_document(tmp_path: Path) -> None:
    bad = tmp_path / "pets.yaml"
    bad.write_text(yaml.safe_dump(_get({"200": {"content": {}}})))
    result = contract_check(str(EXAMPLES / "orders-v1.yaml"), str(bad))
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {bad}: not a valid OpenAPI 3.0 document: $.paths['/pets'].get.responses['200']: "
        "'description' is a required property"
    )


def test_a_schema_too_tangled_for_the_validators_walk_is_held_to_the_specification() -> None:
    # allOf back to itself: the validator's own walk would not end, its JSON Schema still holds
    doc = _get({"200": {"description": "ok"}})
    doc["components"] = {"schemas": {"Pet": {"allOf": [
        {"$ref": "#/components/schemas/Pet"}, {"type": "strin"}]}}}  # fmt: skip
    with pytest.raises(ContractError, match=re.escape(
            "$.components.schemas.Pet.allOf[1].type: 'strin' is not one of")):  # fmt: skip
        load_document(doc)
    doc["components"]["schemas"]["Pet"]["allOf"][1]["type"] = "object"
    assert load_document(doc)["components"] == doc["components"]
