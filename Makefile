# Pilotboat. `make demo` and `make test` are all a newcomer needs; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.state/bin:$(PATH)

.PHONY: help venv deps cluster cluster-down images node node-down crds crds-check lint unit test bench demo clean

help:
	@echo "make demo          the whole story on the embedded local cluster"
	@echo "make test          lint + every test (core, cluster, e2e), installing what it needs"
	@echo "make unit          the pure core tests only (seconds)"
	@echo "make cluster       start the local control plane and its real node"
	@echo "make cluster-down  stop everything this checkout started: the demo and operators,"
	@echo "                   Prometheus, cluster DNS, PostgreSQL, metrics-server, the node,"
	@echo "                   the control plane"
	@echo "make clean         make cluster-down, then delete .state and PostgreSQL's data"
	@echo "make images        build the local container images (no registry needed)"
	@echo "make bench         benchmarks, printed as JSON lines"
	@echo "make crds          regenerate crds/ from the API models"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

deps:
	hack/deps.sh

cluster: venv deps
	hack/cluster.sh up

# Everything this checkout started, one line per thing stopped (hack/cluster.sh down).
cluster-down:
	hack/cluster.sh down

images:
	hack/images.sh

node: cluster

node-down:
	hack/node.sh down

crds: venv
	$(VENV)/bin/pilotboat crds generate

crds-check: venv
	$(VENV)/bin/pilotboat crds check

lint: venv
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: venv
	$(PYTEST) -m core

test: venv deps lint cluster
	PILOTBOAT_STRICT=1 $(PYTEST) -m "core or cluster or e2e" -p no:cacheprovider

bench: venv deps cluster
	$(PY) -m bench

demo: venv deps cluster
	hack/demo.sh

clean: cluster-down
	hack/postgres.sh purge
	rm -rf .state
