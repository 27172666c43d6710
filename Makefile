# The two commands a fresh machine needs: `make up` and `make test`.
# Only python3, pip and make are assumed; uv is installed from PyPI into .tools/.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := .tools/bin/uv
RUN := $(UV) run --locked --all-extras

.PHONY: up test lint typecheck imports unit bench migrate ps env clean proto proto-check

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

test: proto-check lint typecheck imports
	$(RUN) pytest -q

# gRPC: the .proto is the contract; the betterproto2 code generated from it is checked in.
PROTO_SRC := proto/chat4all/v1/chat4all.proto
PROTO_OUT := entrypoints/grpc/_generated
PROTOC = $(RUN) python -m grpc_tools.protoc -I proto --python_betterproto2_out=$(1) \
	--python_betterproto2_opt=client_generation=async,server_generation=async,google_protobuf_descriptors $(PROTO_SRC)

proto: env
	rm -rf $(PROTO_OUT) && mkdir -p $(PROTO_OUT)
	$(call PROTOC,$(PROTO_OUT))

# Fails when the checked-in code is not what `make proto` generates from the .proto.
proto-check: env
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && mkdir "$$tmp/out" && \
	{ $(call PROTOC,$$tmp/out) 2>"$$tmp/log" || { cat "$$tmp/log" >&2; exit 1; }; } && \
	if diff -r --exclude=__pycache__ "$$tmp/out" $(PROTO_OUT); then echo "proto: generated code is up to date"; \
	else echo "proto: $(PROTO_OUT) is not what $(PROTO_SRC) generates; run 'make proto'" >&2; exit 1; fi

bench: env
	$(RUN) python benchmarks/accept.py

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache .hypothesis
