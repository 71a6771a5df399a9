# Emergify — the two commands are `make up` and `make test`; they install what they need.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_LINK_MODE := copy

.PHONY: up test test-slow audit lint format bench soak bootstrap sync clean

bootstrap:  ## uv (from PyPI) and a Java runtime for Spark, if missing
	@bash deploy/bootstrap.sh

sync: bootstrap
	@$(UV) sync --frozen --all-groups

up: sync  ## the whole system on embedded defaults; Ctrl-C stops it (SPARK=cluster: a Spark standalone cluster)
	@$(if $(filter cluster,$(SPARK)),EMERGIFY_SPARK_CLUSTER=1 )$(UV) run --frozen emergify up

audit: sync  ## known vulnerabilities in the locked dependencies (pip-audit + PyPI data)
	@$(UV) run --frozen python deploy/audit.py

test: sync audit  ## audit, lint, then the test suite but its slow whole-stack kill/fault tests (real broker, Spark, SQLite, PostgreSQL)
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen pytest -m "not slow"

test-slow: sync  ## the slow whole-stack kill, fault and multi-host tests (~35 min; CI runs them after make test)
	@$(UV) run --frozen pytest -m slow

bench: sync  ## benchmarks in bench/ (print their figures)
	@$(UV) run --frozen python bench/run_all.py

soak: sync  ## long fault + load runs (~30 min; SOAK_ARGS=--quick: ~8 min); bench/results/soak.json
	@$(UV) run --frozen --group soak python bench/soak/run.py $(SOAK_ARGS)

lint:
	@$(UV) run --frozen ruff check .

format:
	@$(UV) run --frozen ruff format .
	@$(UV) run --frozen ruff check --fix .

clean:  ## forget local data (feature table, lake, checkpoints, models)
	rm -rf var
