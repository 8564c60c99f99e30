# Switchboard — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## create .venv and install Switchboard with its test tools

.PHONY: run
run: $(STAMP) ## run the embedded mode: one process, no broker, sandbox senders, http://127.0.0.1:8080
	$(BIN)/switchboard run

.PHONY: test
test: $(STAMP) ## all test tiers: unit, contract, integration (RabbitMQ + PostgreSQL), end to end
	$(PYTEST) tests/unit tests/contract tests/integration tests/e2e

.PHONY: test-unit
test-unit: $(STAMP) ## pure logic, no I/O
	$(PYTEST) tests/unit

.PHONY: test-contract
test-contract: $(STAMP) ## provider fixtures in, exact normalised messages out; the web edge
	$(PYTEST) tests/contract

.PHONY: test-integration
test-integration: $(STAMP) ## against this machine's RabbitMQ and PostgreSQL (fresh vhost and database)
	$(PYTEST) tests/integration

.PHONY: test-e2e
test-e2e: $(STAMP) ## the three services as separate processes, a fake Bot API
	$(PYTEST) tests/e2e

.PHONY: test-fuzz
test-fuzz: $(STAMP) ## property-based tests on every parser and signature check, schemathesis on both OpenAPI documents (FUZZ_SEED=n replays, FUZZ_SCALE=10 runs longer)
	$(PYTEST) tests/fuzz

.PHONY: test-browser
test-browser: $(STAMP) ## the inbox and dashboard in Debian's chromium via Playwright (apt-get install chromium when missing); screenshots in test-artifacts/
	$(PYTEST) tests/browser

.PHONY: test-deploy
test-deploy: $(STAMP) ## deployment tier: images built with buildah and started; compose, Kubernetes and Dockerfile checks
	$(PYTEST) tests/deploy

.PHONY: bench
bench: $(STAMP) ## figures in services mode: throughput vs the RabbitMQ ceiling, CPU ms per message by process, p99 at 100/s and 20/s with PASS/FAIL per target, router growth, memory (SOAK_MINUTES=10 for the long soak; BENCH_QUICK=1: the pipeline only, fewer messages) → var/bench/latest.json
	$(BIN)/python -m tests.bench.bench --soak-minutes $${SOAK_MINUTES:-1}

.PHONY: classifier-model
classifier-model: $(STAMP) ## refit the categoriser on classifier_data/train (settings by cross-validation) → classifier_data/model.json.gz
	$(BIN)/pip install --quiet -e '.[train]'
	$(BIN)/python -m services.router.classifier_train --cv --write

.PHONY: chaos
chaos: $(STAMP) ## fault suite: kill -9, broker/database outages, provider 500/429 under a message stream → var/chaos/latest.json
	$(BIN)/python -m tests.bench.chaos

.PHONY: audit
audit: $(STAMP) ## pip-audit of deploy/requirements.lock: fails on a known vulnerability, and on a package it could not look up unless AUDIT_UNREACHABLE_OK=1
	$(BIN)/python deploy/audit.py

.PHONY: lint
lint: $(STAMP) ## ruff on everything, mypy on shared/ and services/ (pyproject's [tool.mypy])
	$(BIN)/ruff check shared services tests
	$(BIN)/mypy shared services

.PHONY: services
services: $(STAMP) ## services mode on this machine: gateway :8080, router :8081, notifier :8082 (needs RabbitMQ, PostgreSQL)
	@trap 'kill 0' EXIT INT TERM; \
	BROKER_URL=$${BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//} \
	DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/switchboard} ; \
	export BROKER_URL DATABASE_URL; \
	psql "$${DATABASE_URL}" -c 'select 1' >/dev/null 2>&1 || createdb -h 127.0.0.1 -U postgres switchboard; \
	$(BIN)/python -m services.router & $(BIN)/python -m services.notifier & $(BIN)/python -m services.gateway & wait

.PHONY: cluster-up
cluster-up: ## a 3-node RabbitMQ cluster on this machine (Debian's rabbitmq-server, AMQP 5681-5683, data in var/cluster); idempotent
	bash deploy/local-cluster.sh up

.PHONY: cluster-down
cluster-down: ## stop the local cluster and remove var/cluster (the machine's broker on 5672 is never touched)
	bash deploy/local-cluster.sh down


.PHONY: images
images: ## build the gateway, router, notifier, RabbitMQ and PostgreSQL images with buildah (no Docker engine or registry needed), tag dev
	bash deploy/images.sh

.PHONY: lock
lock: $(STAMP) ## pin the production dependencies the images install (deploy/requirements.lock)
	$(BIN)/python deploy/lock.py

.PHONY: up
up: ## docker compose (the plugin or docker-compose 1.29): images built here and loaded into the engine (dockerd started when none answers), RabbitMQ (management :15672), PostgreSQL, router x2, notifier x2, gateway :8080; waits until all are healthy
	bash deploy/compose.sh up

.PHONY: down
down: ## stop the compose stack (SIGTERM, 30 s to finish work in hand); volumes are kept (DOWN_VOLUMES=1 drops them)
	bash deploy/compose.sh down

.PHONY: logs
logs: ## follow the compose stack's JSON logs
	bash deploy/compose.sh logs

.PHONY: clean
clean: ## remove the venv and local state (var/)
	rm -rf $(VENV) var .pytest_cache
