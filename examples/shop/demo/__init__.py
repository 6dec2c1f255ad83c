"""The shop demo: `make demo` (hack/demo.sh runs ``python -m examples.shop.demo``).

It starts the local cluster, the shop's PostgreSQL, cluster DNS, Prometheus and the
operator, deploys the shop (examples/shop/*.yaml), sends customers' orders, and tells a
release story as a timeline: a healthy payments release promoted, a failing one rolled back
by the operator on its own, orders' schema change expanded before its canary and contracted
after an approval, then an integrity check of every order by SQL over the services'
databases, and an HTML report with charts (``.state/demo/report.html``).

Modules: ``infra`` (servers and the operator), ``timeline`` (what is printed, and the
samples behind the charts), ``customers`` (the traffic), ``shop`` (manifests and releases),
``story`` (the steps, shared with tests/e2e/test_demo.py), ``integrity`` (the SQL checks),
``report`` (the HTML).
"""
