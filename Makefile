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

# `make run` always uses the embedded defaults, whatever the shell exports.
EMBEDDED := env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL -u PRESENCE_STORE

.PHONY: run test check fmt lint types migrations-check install clean help

help:
	@echo "make run    - install, migrate, create demo users, serve http://$(HOST):$(PORT) (embedded defaults)"
	@echo "make test   - the whole suite against PostgreSQL and Redis"
	@echo "make check  - ruff, mypy, import contracts, makemigrations --check, tests"
	@echo "make fmt    - rewrite the code with ruff (format and safe fixes)"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt -c constraints.txt
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(EMBEDDED) $(PY) manage.py migrate --noinput
	$(EMBEDDED) $(PY) manage.py seed_demo
	$(EMBEDDED) $(PY) manage.py runserver $(HOST):$(PORT)

test: $(STAMP)
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	REDIS_URL="$${REDIS_URL:-$(TEST_REDIS_URL)}" \
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: $(STAMP)
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

migrations-check: $(STAMP)
	$(EMBEDDED) $(PY) manage.py makemigrations --check --dry-run

check: lint types migrations-check test

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
