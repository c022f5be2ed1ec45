# Every command a person runs. `make run` starts the local stack, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test chaos lint fmt infra-up infra-down manifest-tools deploy-check chat clean lock \
	bench bench-smoke

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# Regenerate the pinned versions CI installs (after changing pyproject.toml).
lock: venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

infra-up:
	bash infra/local-infra.sh up

infra-down:
	bash infra/local-infra.sh down

# kustomize and the custom resource schemas the deployment's tests render and validate with.
manifest-tools:
	bash infra/manifest-tools.sh install

lint: venv
	$(BIN)/ruff check services shared sandbox cli bench tests
	$(BIN)/ruff format --check services shared sandbox cli bench tests
	$(BIN)/mypy services shared sandbox cli bench

fmt: venv
	$(BIN)/ruff format services shared sandbox cli bench tests
	$(BIN)/ruff check --fix services shared sandbox cli bench tests

test: venv lint infra-up manifest-tools
	$(BIN)/pytest
	$(MAKE) bench-smoke

# The long chaos run: thousands of lead messages while services are killed, the broker and
# the store restarted (private ones) and Gupshup fails, at random (`make test` runs a short one).
chaos: venv infra-up
	CHAOS_LEADS=$${CHAOS_LEADS:-200} CHAOS_MESSAGES=$${CHAOS_MESSAGES:-10} \
	CHAOS_KILL_EVERY=$${CHAOS_KILL_EVERY:-2} CHAOS_BROKER_RESTARTS=$${CHAOS_BROKER_RESTARTS:-3} \
	CHAOS_STORE_RESTARTS=$${CHAOS_STORE_RESTARTS:-3} CHAOS_OUTAGE_EVERY=$${CHAOS_OUTAGE_EVERY:-10} \
	$(BIN)/pytest -s -rx tests/e2e/test_chaos.py

# Benchmarks against a private local stack: bench/results/*.json and bench/RESULTS.md.
# Run on a quiet machine; NAMES="ingress brain" runs some of them.
bench: venv infra-up
	$(BIN)/python -m bench $(NAMES)

# Every benchmark at a tiny size (seconds), to keep the harness working; asserts no speed.
bench-smoke: venv infra-up
	$(BIN)/python -m bench --smoke $(NAMES)

# The deployment's offline checks alone (Dockerfile, manifests, alerts, dashboard).
deploy-check: venv manifest-tools
	$(BIN)/pytest tests/deploy

run: venv
	$(BIN)/realtybot run

chat: venv
	$(BIN)/realtybot chat

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
