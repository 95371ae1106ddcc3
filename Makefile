# Two commands on a fresh machine: `make run` (the embedded demo) and `make test` (everything CI
# checks). Both build a local virtual environment in .venv first; no root needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/deerflow_protos/*.proto)

.PHONY: run test venv protos check-protos lint typecheck unit integration bench clean

run: $(STAMP)
	$(BIN)/deerflow demo

test: $(STAMP) check-protos lint typecheck
	$(BIN)/pytest -q tests

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Regenerate the committed stubs from the .proto files.
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=protos --pyi_out=protos --grpc_python_out=protos $(PROTOS)

# Fails when the committed stubs differ from what the .proto files generate.
check-protos: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	for f in $$tmp/deerflow_protos/*; do \
	  if ! cmp -s $$f protos/deerflow_protos/$$(basename $$f); then \
	    echo "stale generated stub: protos/deerflow_protos/$$(basename $$f); run 'make protos'"; \
	    rm -rf $$tmp; exit 1; \
	  fi; \
	done; rm -rf $$tmp; echo "generated stubs are up to date"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy controller/deerflow_controller agent/deerflow_agent common/deerflow_common \
	  simulator/deerflow_simulator tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/deerflow bench noop --tasks 20000 --agents 2 --json
	$(BIN)/deerflow bench io --tasks 5000 --agents 2 --slots 64 --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
