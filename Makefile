# The two commands a newcomer needs: `make run` and `make test`.
# Both install what is missing (Debian packages, the virtualenv, the local stack).
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
ENERGY := $(BIN)/energy
PYTEST_ARGS ?=

.PHONY: run test setup stop status lint typecheck bench-quick clean-stack

run: setup
	$(ENERGY) stack up
	$(ENERGY) db migrate
	$(ENERGY) seed
	$(ENERGY) run

test: setup
	$(ENERGY) stack up
	$(ENERGY) db migrate
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup:
	@bash scripts/bootstrap.sh

stop:
	-$(ENERGY) stop
	$(ENERGY) stack down

status:
	$(ENERGY) stack status
	$(ENERGY) status

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

bench-quick: setup
	$(ENERGY) stack up
	for b in ingest aggregate api forecast dr; do $(BIN)/python -m bench.$$b --quick || exit 1; done

clean-stack:
	$(ENERGY) stack reset
