# Developer entry points; .ci/run calls `make lint` and `make test`.
.DEFAULT_GOAL := help
PYTHON ?= python3

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## build the extension (release) and install zerohop with test and dev tools
	$(PYTHON) -m pip install --quiet '.[test,dev]'

develop: ## fast debug build into the current environment
	maturin develop --quiet --extras test,dev

test: ## the whole test suite: Rust unit tests, then pytest across real processes
	cargo test --quiet
	$(PYTHON) -m pytest -q

lint: ## formatters, linters, type checks, stub check
	cargo fmt --check
	cargo clippy --quiet --all-targets -- -D warnings
	cargo clippy --quiet --all-targets --features python -- -D warnings
	! grep -rn pyo3 rust/frame.rs rust/error.rs rust/ipc rust/grpc
	ruff format --check python tests benches examples
	ruff check python tests benches examples
	mypy python/zerohop
	$(PYTHON) -m mypy.stubtest zerohop._native --allowlist .ci/stubtest-allowlist.txt

bench: ## IPC benchmarks (Rust criterion + Python vs peers)
	cargo bench --bench ipc_latency
	$(PYTHON) benches/ipc.py

.PHONY: help install develop test lint bench
