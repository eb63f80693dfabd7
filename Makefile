# Quick start: `make devnet` runs a local validator network, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VALIDATORS ?= 4
DEVNET_DIR ?= devnet
WEB_STAMP := web/dist/.built

.PHONY: devnet test lint bench attacks fuzz clean system-deps web

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The web app the node serves at / (web/): npm installs what web/package-lock.json pins,
# esbuild bundles it into web/dist.
$(WEB_STAMP): web/package.json web/package-lock.json web/build.mjs $(wildcard web/src/* web/src/*/*)
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

devnet: $(STAMP) $(WEB_STAMP)
	$(BIN)/liveledger devnet --dir $(DEVNET_DIR) --validators $(VALIDATORS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: system-deps lint $(WEB_STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

# System packages some tests need, as command:package (Debian/Ubuntu). A missing
# command's package is installed when we are root (CI runs .ci/run as root on a clean
# machine); otherwise nothing is installed and the tests that need it skip, saying
# why. ip (iproute2): the network namespace tests (tests/netns); chromium: the web app's
# browser tests (tests/e2e/test_web_app.py); node and npm: building the web app
# (make web, which make test needs) and tests/e2e/test_web_crypto.py (the @noble
# packages ask for Node.js 20.19 or later: older distributions' nodejs is too old).
SYSTEM_DEPS ?= ip:iproute2 chromium:chromium node:nodejs npm:npm

system-deps:
	@missing=""; \
	for dep in $(SYSTEM_DEPS); do \
		command -v "$${dep%%:*}" >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "system-deps: installing$$missing"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "system-deps: missing$$missing (not root or no apt-get); the tests needing them skip"; \
	fi

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
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis web/node_modules web/dist test-artifacts
