# The two commands a fresh machine needs: `make up` and `make test`.
# Only python3, pip, make and Node.js (npm, for the web app) are assumed; uv is installed from PyPI into .tools/,
# and `make test` installs Debian's chromium for the browser tests when it is missing (as root, with apt).
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := .tools/bin/uv
RUN := $(UV) run --locked --all-extras

.PHONY: up test lint typecheck imports unit bench migrate ps env clean proto proto-check web browser screenshots

$(UV):
	python3 -m pip install --quiet --disable-pip-version-check --target .tools "uv==$(UV_VERSION)"

env: $(UV)
	$(UV) sync --locked --all-extras

up: env web
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

# The browser tests run as a pytest session of their own, after the rest: their stack (with the sandbox) then
# runs alone instead of beside the e2e stacks for the whole session.
test: proto-check lint typecheck imports web browser
	cd web && npm test
	$(RUN) pytest -q --ignore=tests/browser
	$(RUN) pytest -q tests/browser

# The web app (web/): built into web/dist, which the HTTP API serves at /. Each step runs only when its inputs
# changed: `npm ci` when the lock file is newer than node_modules, `vite build` when anything it reads is newer
# than the build (directories are listed too, so a deleted or renamed source counts).
WEB_INPUTS := $(shell find web/src web/public 2>/dev/null) \
	$(wildcard web/index.html web/vite.config.js web/package.json) web/package-lock.json

web: web/dist/index.html

web/node_modules: web/package-lock.json
	@command -v npm >/dev/null || { echo "web: npm is missing; install Node.js 20.19 or newer" >&2; exit 1; }
	cd web && npm ci --no-audit --no-fund
	touch $@

# node_modules is order-only: tools write caches into it, which must not make the build look stale.
web/dist/index.html: $(WEB_INPUTS) | web/node_modules
	cd web && npm run build
	touch $@

# The browser tests (tests/browser) drive Debian's Chromium through Playwright; `playwright install` is never run.
CHROMIUM := /usr/bin/chromium

browser: $(CHROMIUM)

$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then \
		echo "browser: $@ is missing; install Debian's chromium package as root" \
			"(apt-get install --no-install-recommends chromium), or run make as root" >&2; exit 1; fi
	@command -v apt-get >/dev/null || { echo "browser: $@ is missing and there is no apt-get to install it" >&2; exit 1; }
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

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

# docs/screenshots/: the web app's main screens, as the browser tests see them.
screenshots: env web browser
	CHAT4ALL_SCREENSHOTS=docs/screenshots $(RUN) pytest -q -p no:randomly tests/browser/test_web_app.py

bench: env
	$(RUN) python benchmarks/accept.py

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache .hypothesis web/node_modules web/dist
