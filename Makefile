# The single entry point: make run | test | check | fmt | serve | bench
# On a fresh machine `make run` and `make test` install everything they need.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

# `make test` runs against the machine's PostgreSQL and Redis unless told otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

# `make test` deals the suite's test files out to TEST_SHARDS pytest processes that run
# side by side (tests/shards.py; logs in test-artifacts/shards/). PYTEST_ARGS=... runs
# one pytest process with those arguments instead, e.g. PYTEST_ARGS=tests/api.
TEST_SHARDS ?= 2
PYTEST_ARGS ?=

# While the suite ends, `make test` runs the message tests again on the partitioned
# message table (`manage.py partition_messages`, docs/scaling.md): tests/conftest.py
# converts the fresh test database's table when CHAT_PARTITIONED_MESSAGES=1 (each run has
# a test database of its own). PARTITIONED_TESTS= (empty) leaves that run out.
PARTITIONED_TESTS ?= tests/messaging/test_services.py tests/messaging/test_selectors.py \
	tests/messaging/test_reactions.py tests/messaging/test_replies.py tests/messaging/test_retention.py \
	tests/messaging/test_send_concurrency.py tests/messaging/test_consumers.py \
	tests/messaging/test_admin.py tests/api/test_messages.py tests/api/test_search.py \
	tests/api/test_attachments.py tests/notifications/test_decide.py tests/test_query_budgets.py

# `make run` always uses the embedded defaults, whatever the shell exports.
EMBEDDED := env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL -u PRESENCE_STORE

# `make serve`: two gateway processes, a Celery worker, a thumbnail worker and beat on the real services
# (PostgreSQL, Redis; the broker is another Redis database).
SERVE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chat
SERVE_REDIS_URL ?= redis://127.0.0.1:6379/0
SERVE_BROKER_URL ?= redis://127.0.0.1:6379/1
# Production settings: debug off, a secret generated once into a git-ignored file,
# static files collected (whitenoise serves them). Plain HTTP, as it listens on loopback
# only; behind a TLS load balancer drop DJANGO_HTTPS=0 (docs/operations.md).
SECRET_FILE := .secret_key
SERVE_HOSTS ?= $(HOST),localhost
SERVE_ENV = DATABASE_URL=$(SERVE_DATABASE_URL) REDIS_URL=$(SERVE_REDIS_URL) CELERY_BROKER_URL=$(SERVE_BROKER_URL) \
	DJANGO_DEBUG=0 DJANGO_SECRET_KEY="$$(cat $(SECRET_FILE))" DJANGO_ALLOWED_HOSTS=$(SERVE_HOSTS) DJANGO_HTTPS=0
# SERVE_DEMO=1 also seeds the demo users and conversations (known passwords: never on a
# machine others can reach).
SERVE_DEMO ?= 0
GATEWAY_PORTS ?= 8001 8002
# The notification worker (offline pushes and emails) and the one beat that rings for it.
WORKER = $(PY) -m celery -A chatsite worker --loglevel=INFO --concurrency=2 --without-mingle --without-gossip
# The thumbnail worker: the only consumer of the `thumbnails` queue. --concurrency bounds
# the images decoded at once on this host (each up to CHAT_MAX_IMAGE_DECODE_BYTES, about
# twice that at its peak); a child past 512 MiB resident is replaced after its task.
THUMBNAILER = $(PY) -m celery -A chatsite worker --loglevel=INFO --queues=thumbnails --concurrency=2 --max-memory-per-child=524288 -n thumbnails@%h --without-mingle --without-gossip
BEAT = $(PY) -m celery -A chatsite beat --loglevel=INFO -s $(VENV)/celerybeat-schedule
# One gateway process. --ws-max-size enforces the 1.25 MiB frame limit (close 1009);
# pings are the protocol's own (`ping` frames, heartbeat timeout), not the server's.
GATEWAY = $(PY) -m uvicorn chatsite.asgi:application --host $(HOST) \
	--http chatsite.gateway:H11WithHandshakeDeadline --no-proxy-headers \
	--ws chatsite.gateway:FlowControlledWebSocket --ws-max-size 1310720 --ws-ping-interval 86400 \
	--no-access-log --lifespan off --log-level warning

# Browser tests (tests/e2e/test_browser.py) drive Debian's chromium; Playwright cannot
# download its own browsers here. Installed once, when missing (CI runs as root).
CHROMIUM := /usr/bin/chromium
# The nginx test (tests/e2e/test_nginx.py) runs Debian's nginx with its own config, pid
# file and ports; the packaged service must not keep running beside it (it would hold
# port 80 and serve the default site), so the install stops it if the package started it.
NGINX := /usr/sbin/nginx
# The accessibility tests (tests/e2e/test_accessibility.py) inject axe-core, pinned by
# tests/e2e/package-lock.json and installed with npm (Debian's node and npm, installed
# once when missing); reinstalled when the lock file changes.
AXE := tests/e2e/node_modules/axe-core/axe.min.js

# `make bench`: the load benchmark (bench/cli.py); BENCH_ARGS="--smoke" for a quick one.
BENCH_ARGS ?=

.PHONY: run serve test bench check fmt lint types migrations-check hooks install clean help

help:
	@echo "make run    - install, migrate, create demo users, serve http://$(HOST):$(PORT) (embedded defaults)"
	@echo "make serve  - two gateways (ports $(GATEWAY_PORTS)), a Celery worker, a thumbnail worker and beat on the local PostgreSQL and Redis"
	@echo "make test   - the whole suite against PostgreSQL and Redis, then the message tests on a partitioned message table"
	@echo "make bench  - the load benchmark on its own PostgreSQL, Redis, Celery and gateways, beside baseline servers (~22 min)"
	@echo "make check  - ruff, mypy, import contracts, makemigrations --check, tests"
	@echo "make fmt    - rewrite the code with ruff (format and safe fixes)"
	@echo "make hooks  - run the fast checks (lint, types, contracts, migrations) before each commit"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt -c constraints.txt
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(EMBEDDED) $(PY) manage.py migrate --noinput
	$(EMBEDDED) $(PY) manage.py seed_demo --url http://$(HOST):$(PORT)
	$(EMBEDDED) $(PY) manage.py runserver $(HOST):$(PORT)

$(SECRET_FILE):
	@umask 077 && $(PY) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@
	@echo "Generated a secret key in $@ (git-ignored; keep it: sessions and tokens are signed with it)"

serve: $(STAMP) $(SECRET_FILE)
	@psql "$(dir $(SERVE_DATABASE_URL))postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$(notdir $(SERVE_DATABASE_URL))'" | grep -q 1 \
		|| psql "$(dir $(SERVE_DATABASE_URL))postgres" -c "CREATE DATABASE $(notdir $(SERVE_DATABASE_URL))"
	$(SERVE_ENV) $(PY) manage.py migrate --noinput
	$(SERVE_ENV) $(PY) manage.py collectstatic --noinput -v 0
	@if [ "$(SERVE_DEMO)" = 1 ]; then $(SERVE_ENV) $(PY) manage.py seed_demo; fi
	@echo "Gateways on $(foreach p,$(GATEWAY_PORTS),ws://$(HOST):$(p)/ws/v1/), a worker, a thumbnail worker and beat - Ctrl-C stops all"
	@trap 'kill 0' INT TERM; \
	for port in $(GATEWAY_PORTS); do \
		$(SERVE_ENV) $(GATEWAY) --port $$port & \
	done; \
	$(SERVE_ENV) $(WORKER) & \
	$(SERVE_ENV) $(THUMBNAILER) & \
	$(SERVE_ENV) $(BEAT) & \
	wait

$(CHROMIUM):
	apt-get update && apt-get install -y chromium

$(NGINX):
	apt-get update && apt-get install -y nginx
	if [ -d /run/systemd/system ]; then systemctl disable --now nginx; \
	elif [ -x /etc/init.d/nginx ]; then /etc/init.d/nginx stop; fi

/usr/bin/npm:
	apt-get update && apt-get install -y nodejs npm

$(AXE): tests/e2e/package.json tests/e2e/package-lock.json | /usr/bin/npm
	npm ci --prefix tests/e2e --no-audit --no-fund
	@touch $@

test: $(STAMP) $(CHROMIUM) $(NGINX) $(AXE)
ifeq ($(strip $(PYTEST_ARGS)),)
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	REDIS_URL="$${REDIS_URL:-$(TEST_REDIS_URL)}" \
	$(PY) -m tests.shards --shards $(TEST_SHARDS) --partitioned $(PARTITIONED_TESTS)
else
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	REDIS_URL="$${REDIS_URL:-$(TEST_REDIS_URL)}" \
	$(PY) -m pytest $(PYTEST_ARGS)
	@if [ -n "$(strip $(PARTITIONED_TESTS))" ]; then \
		echo "The message tests on the partitioned message table (CHAT_PARTITIONED_MESSAGES=1):"; \
		DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
		REDIS_URL="$${REDIS_URL:-$(TEST_REDIS_URL)}" \
		CHAT_PARTITIONED_MESSAGES=1 $(PY) -m pytest -q $(PARTITIONED_TESTS); \
	fi
endif

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: $(STAMP)
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

migrations-check: $(STAMP)
	$(EMBEDDED) $(PY) manage.py makemigrations --check --dry-run

check: lint types migrations-check test

# Run the fast checks of `make check` before every commit (.pre-commit-config.yaml).
hooks: $(STAMP)
	$(VENV)/bin/pre-commit install

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
