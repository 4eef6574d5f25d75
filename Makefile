# berth — the two commands of the quick start are `make demo` and `make test`.
# Both install what they need (Debian packages, a Python venv for the aws CLI/boto3).

SHELL := /bin/bash
CARGO ?= cargo
VENV ?= $(CURDIR)/.venv
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BERTH_BIN ?= $(TARGET_DIR)/debug/berth
export VENV BERTH_BIN

.PHONY: all build release deps test test-rust test-integration lint demo down bench clean

all: build

build:
	$(CARGO) build --bin berth

release:
	$(CARGO) build --release --bin berth

deps:
	bash scripts/test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) test --workspace

test-integration: build
	$(VENV)/bin/pytest -q -ra tests

# The whole suite: lint, unit tests, integration tests with real clients.
test: deps lint test-rust test-integration

# The forum example running (see README); `make down` stops and removes it.
demo: deps build
	bash scripts/demo.sh

down:
	bash scripts/down.sh

bench: deps release
	BERTH_BIN=$(TARGET_DIR)/release/berth bash bench/run.sh

clean:
	$(CARGO) clean
	rm -rf $(VENV)
