"""The shop: six HTTP services in one package (see ../INTERFACE.md).

``SHOP_SERVICE`` picks the service a process runs (``python3 -m shop``): catalog, inventory,
orders, payments, shipping or notifications. Shared modules: :mod:`shop.web` (the HTTP
layer, health and metrics), :mod:`shop.db` (pool and schema), :mod:`shop.outbox`,
:mod:`shop.resilience` (timeouts, retries, circuit breakers), :mod:`shop.metrics`,
:mod:`shop.logs` (JSON logs with correlation ids).
"""
