# The two commands a fresh machine needs: `make up` and `make test`.
# Only python3, pip and make are assumed; uv is installed from PyPI into .tools/.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := .tools/bin/uv
RUN := $(UV) run --locked --all-extras

.PHONY: up test lint typecheck imports unit bench migrate ps env clean

$(UV):
	python3 -m pip install --quiet --disable-pip-version-check --target .tools "uv==$(UV_VERSION)"

env: $(UV)
	$(UV) sync --locked --all-extras

up: env
	$(RUN) chat4all up

ps: env
	$(RUN) chat4all ps

migrate: env
	$(RUN) chat4all migrate

lint: env
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: env
	$(RUN) mypy

imports: env
	$(RUN) lint-imports

test: lint typecheck imports
	$(RUN) pytest -q

bench: env
	$(RUN) python benchmarks/accept.py

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache .hypothesis
