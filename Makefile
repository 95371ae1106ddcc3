# Two commands on a fresh machine: `make run` (the embedded demo) and `make test` (everything CI
# checks). Both build a local virtual environment in .venv from the lock (uv.lock) first; no root
# needed. uv itself is bootstrapped into .venv by pip from a hash-pinned requirements file.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(wildcard protos/deerflow_protos/*.proto)
# uv uses the interpreter of .venv, never downloads one, and installs exactly what uv.lock says
# (--locked fails when pyproject.toml and uv.lock disagree: run `make lock`).
UV      := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv
# --compile-bytecode: installed packages are compiled once, as pip does (uv does not by default),
# and so are the project's own packages (installed editable, so read from here): a daemon then
# starts without compiling every module it imports, which is about half of its start-up CPU
# where PYTHONDONTWRITEBYTECODE is set (docs/BENCHMARKS.md, issue #19 start-up).
UV_SYNC := $(UV) sync --quiet --locked --inexact --compile-bytecode --python $(BIN)/python
OWN_CODE := controller agent common bench protos dropins simulator
COMPILE_OWN := $(BIN)/python -m compileall -q -j 0 $(OWN_CODE) >/dev/null
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
EXAMPLE_STAMP := $(VENV)/.installed-example

.PHONY: run example test venv lock protos check-protos docs lint typecheck unit integration bench clean

run: $(RUN_STAMP)
	$(BIN)/deerflow demo

# The DeerFlow-shaped example (docs/DEERFLOW.md): the demo's machinery plus the drop-ins, whose
# sub-agents need langchain-core (the deerflow extra).
example: $(EXAMPLE_STAMP)
	$(BIN)/deerflow demo --deerflow

# Three test workers on two cores: most of a test's time is spent waiting on real leases, streams
# and daemons, so three keep both cores busy (about half the wall time of one worker).
TEST_WORKERS ?= 3

test: $(DEV_STAMP) check-protos lint typecheck
	$(BIN)/pytest -q -n $(TEST_WORKERS) tests

venv: $(DEV_STAMP)

$(BIN)/uv: tools/bootstrap-requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r tools/bootstrap-requirements.txt
	touch $(BIN)/uv

# What the demo needs: the runtime dependencies and the bench extra (bench/: the demo's DAG builder
# and the local-cluster launcher live there, beside the benchmarks).
$(RUN_STAMP): $(BIN)/uv pyproject.toml bench/pyproject.toml uv.lock
	$(UV_SYNC) --extra bench
	$(COMPILE_OWN)
	touch $@

$(EXAMPLE_STAMP): $(BIN)/uv pyproject.toml bench/pyproject.toml uv.lock
	$(UV_SYNC) --extra bench --extra deerflow
	$(COMPILE_OWN)
	touch $@ $(RUN_STAMP)

# What CI needs: the runtime dependencies and the dev extra (the pinned stub generator and the
# bench package among them).
$(DEV_STAMP): $(BIN)/uv pyproject.toml bench/pyproject.toml uv.lock
	$(UV_SYNC) --extra dev
	$(COMPILE_OWN)
	touch $@ $(RUN_STAMP) $(EXAMPLE_STAMP)

# Re-resolve every dependency to its newest allowed release and rewrite uv.lock; then run
# `make protos` (the generator is locked too) and `make test` before committing the new lock.
lock: $(BIN)/uv
	$(UV) lock --upgrade

# Regenerate the committed stubs from the .proto files.
protos: $(DEV_STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=protos --pyi_out=protos --grpc_python_out=protos $(PROTOS)

# Fails when the committed stubs differ from what the .proto files generate.
check-protos: $(DEV_STAMP)
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	for f in $$tmp/deerflow_protos/*; do \
	  if ! cmp -s $$f protos/deerflow_protos/$$(basename $$f); then \
	    echo "stale generated stub: protos/deerflow_protos/$$(basename $$f); run 'make protos'"; \
	    rm -rf $$tmp; exit 1; \
	  fi; \
	done; rm -rf $$tmp; echo "generated stubs are up to date"

# Regenerate docs/CONFIGURATION.md from the click commands (tests/test_configuration_doc.py fails
# when it is out of date).
docs: $(DEV_STAMP)
	$(BIN)/python tools/gen_config_docs.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy controller/deerflow_controller agent/deerflow_agent common/deerflow_common \
	  simulator/deerflow_simulator bench/deerflow_bench dropins/deerflow_dropins tests
	MYPYPATH=examples/handler-plugin/src $(BIN)/mypy examples/handler-plugin/src/deerflow_example_handlers \
	  examples/handler-plugin/tests

unit: $(DEV_STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(DEV_STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(DEV_STAMP)
	$(BIN)/deerflow bench noop --tasks 20000 --agents 2 --json
	$(BIN)/deerflow bench io --tasks 5000 --agents 2 --slots 64 --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info bench/build bench/*.egg-info
