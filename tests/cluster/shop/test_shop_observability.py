"""Correlation ids in every service's logs, golden-signal metrics, health."""

from __future__ import annotations

import time
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.shop.harness import SERVICES, Shop, free_port


def test_one_correlation_id_in_every_service_log_for_one_order(shop: Shop) -> None:
    cid = f"test-{uuid.uuid4().hex[:12]}"
    response = shop.order(headers={"X-Correlation-ID": cid})
    assert response.headers["X-Correlation-ID"] == cid
    order_id = response.json()["order_id"]
    shop.wait_for(lambda: shop["notifications"].get(
        "/notifications", params={"order_id": order_id}).json())
    for name in SERVICES:
        lines = [line for line in shop[name].log_lines() if line.get("correlation_id") == cid]
        assert lines, f"{name} logged nothing with the correlation id"
        for line in lines:
            assert {"ts", "level", "service", "version", "msg"} <= line.keys()
            assert line["service"] == name and line["version"] == "test"
    order_lines = [line for line in shop["orders"].log_lines() if line.get("correlation_id") == cid]
    assert {line.get("order_id") for line in order_lines if "saga step" in line["msg"]} == {
        order_id}
    stored = shop["notifications"].get("/notifications", params={"order_id": order_id}).json()
    assert [n["correlation_id"] for n in stored] == [cid]
    assert shop["orders"].get(f"/orders/{order_id}").json()["correlation_id"] == cid


def test_a_correlation_id_is_made_at_the_edge_when_absent(shop: Shop) -> None:
    response = shop.order()
    cid = response.headers["X-Correlation-ID"]
    assert cid
    assert any(line.get("correlation_id") == cid for line in shop["payments"].log_lines())


def test_golden_signal_metrics_in_prometheus_format(shop: Shop) -> None:
    assert shop.order().status_code == 201
    shop["catalog"].get("/products/NOPE")  # a 404
    for name in SERVICES:
        text = shop[name].get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert {"http_requests", "http_request_duration_seconds", "http_requests_in_flight",
                "process_cpu_seconds"} <= families.keys(), name
        assert families["http_requests"].type == "counter"
        assert families["http_request_duration_seconds"].type == "histogram"
        labels = [s.labels for s in families["http_requests"].samples
                  if s.name == "http_requests_total"]
        assert labels and all(set(label) == {"code", "method", "route"} for label in labels)
        assert not any(label["route"] in ("/healthz", "/metrics") for label in labels)
    orders = {(s.labels["code"], s.labels["route"]): s.value
              for f in text_string_to_metric_families(shop["orders"].get("/metrics").text)
              if f.name == "http_requests" for s in f.samples if s.name == "http_requests_total"}
    assert orders[("201", "/orders")] == 1
    catalog = shop["catalog"].get("/metrics").text
    assert 'http_requests_total{code="404",method="GET",route="/products/{sku}"} 1.0' in catalog
    buckets = {s.labels["le"]: s.value
               for f in text_string_to_metric_families(shop["orders"].get("/metrics").text)
               if f.name == "http_request_duration_seconds" for s in f.samples
               if s.name.endswith("_bucket") and s.labels["route"] == "/orders"}
    assert buckets["+Inf"] == 1 and "0.005" in buckets and "10.0" in buckets


def test_healthz_fails_gracefully_without_a_database(shop_unstarted: Shop) -> None:
    dead = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none"
    proc = shop_unstarted.process("catalog", DATABASE_URL=dead).start()
    try:
        deadline_ok = False
        for _ in range(100):
            try:
                response = httpx.get(f"{proc.url}/healthz", timeout=3)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert response.status_code == 503
            assert response.json()["status"] == "unavailable"
            deadline_ok = True
            break
        assert deadline_ok, proc.log_text()[-2000:]
        assert proc.get("/metrics").status_code == 200
        assert proc.get("/products").status_code == 503  # the database is unavailable
        assert proc.proc is not None and proc.proc.poll() is None
    finally:
        proc.stop()
