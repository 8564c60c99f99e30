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
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

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

.PHONY: lint
lint: $(STAMP) ## ruff on everything, mypy on shared/
	$(BIN)/ruff check shared services tests
	$(BIN)/mypy shared

.PHONY: services
services: $(STAMP) ## services mode on this machine: gateway :8080, router :8081, notifier :8082 (needs RabbitMQ, PostgreSQL)
	@trap 'kill 0' EXIT INT TERM; \
	BROKER_URL=$${BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//} \
	DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/switchboard} ; \
	export BROKER_URL DATABASE_URL; \
	psql "$${DATABASE_URL}" -c 'select 1' >/dev/null 2>&1 || createdb -h 127.0.0.1 -U postgres switchboard; \
	$(BIN)/python -m services.router & $(BIN)/python -m services.notifier & $(BIN)/python -m services.gateway & wait

.PHONY: clean
clean: ## remove the venv and local state (var/)
	rm -rf $(VENV) var .pytest_cache
