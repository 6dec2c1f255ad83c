"""The outbox across a crash of its relay: no event lost, none stored twice."""

from __future__ import annotations

from tests.cluster.shop.harness import Shop


def test_relay_killed_mid_batch_loses_and_duplicates_nothing(shop_unstarted: Shop) -> None:
    shop = shop_unstarted
    for name in ("catalog", "inventory", "payments", "shipping", "notifications"):
        shop.process(name)
    notifications = shop["notifications"]
    for name in ("catalog", "inventory", "payments", "shipping"):
        shop[name].start().wait_ready()
    # orders publishes slowly (one event per 0.2 s, batches of 50); notifications is not up
    # yet, so the events of the orders placed now wait in the outbox
    orders = shop.process("orders", OUTBOX_PUBLISH_DELAY_SECONDS="0.2", OUTBOX_BATCH_SIZE="50")
    orders.start().wait_ready()
    placed = [shop.order(customer=f"Customer {i}").json() for i in range(20)]
    placed.append(shop.order(items=[{"sku": "KETTLE-005", "qty": 10}]).json())  # declined
    assert {o["state"] for o in placed} == {"CONFIRMED", "CANCELLED"}
    assert shop.query("orders", "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"
                      )[0]["n"] == 21

    def received() -> int:
        return int(shop.query("notifications", "SELECT count(*) AS n FROM notifications")[0]["n"])

    notifications.start().wait_ready()
    shop.wait_for(lambda: received() >= 5, message="the relay publishes")
    orders.kill()  # mid-batch: events posted, their sent_at not committed
    unsent = shop.query("orders", "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"
                        )[0]["n"]
    got = received()
    assert unsent == 21, "the batch's sent_at marks die with the relay's transaction"
    assert 5 <= got < 21

    orders.start(OUTBOX_PUBLISH_DELAY_SECONDS="0").wait_ready()
    shop.wait_for(lambda: shop.query("orders", "SELECT count(*) AS n FROM outbox"
                                     " WHERE sent_at IS NULL")[0]["n"] == 0,
                  message="the restarted relay publishes the rest")
    events = shop.query("orders", "SELECT event_id, type, order_id FROM outbox")
    stored = shop.query("notifications", "SELECT event_id, type, order_id, deliveries"
                        " FROM notifications")
    assert len(events) == 21
    assert sorted(str(e["event_id"]) for e in events) == sorted(
        str(s["event_id"]) for s in stored), "every event stored exactly once"
    assert {str(s["order_id"]) for s in stored} == {o["order_id"] for o in placed}
    redelivered = [s for s in stored if s["deliveries"] > 1]
    assert len(redelivered) >= got - 1, "the events posted before the crash came again"
    assert all(s["deliveries"] == 2 for s in redelivered)
    metrics = notifications.get("/metrics").text
    assert 'shop_events_received_total{duplicate="true"}' in metrics
