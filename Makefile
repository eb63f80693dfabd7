# Quick start: `make devnet` runs a local validator network, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VALIDATORS ?= 4
DEVNET_DIR ?= devnet

.PHONY: devnet test lint bench attacks fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

devnet: $(STAMP)
	$(BIN)/liveledger devnet --dir $(DEVNET_DIR) --validators $(VALIDATORS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benches.throughput --validators $(VALIDATORS)

# Honest transfers on a four-validator devnet under each attack of issue 10 (about
# 3 minutes): latency per attack, the attackers' refusals, and nothing lost.
attacks: $(STAMP)
	$(BIN)/python -m benches.attacks

# The long fuzzing campaigns (issue 10): over a million inputs in all; each prints
# inputs tried, time and crashes, and fails on a crash. HTTP: every route's inputs
# driven from the OpenAPI document against a live node (benches/fuzz_http.py).
FUZZ_HTTP_EXAMPLES ?= 2000

fuzz: $(STAMP)
	$(BIN)/python -m benches.fuzz_codec --inputs 1000000
	$(BIN)/python -m benches.fuzz_p2p --inputs 100000
	$(BIN)/python -m benches.fuzz_http --examples $(FUZZ_HTTP_EXAMPLES)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
