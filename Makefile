# mini-iaas: `make up` sets up everything on a fresh Debian 12 machine (as root) and starts the stack;
# `make test` does the same set-up and then runs the whole test suite. `make help` lists the rest.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

RUN_DIR ?= $(CURDIR)/.run
VENV ?= $(CURDIR)/.venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TINY_IMAGE := $(CURDIR)/images/tiny.qcow2
STAMP_VENV := $(VENV)/.installed
LOCK := $(CURDIR)/requirements.lock
LOCK_UPGRADE ?= --upgrade
LOCK_PYTHON ?= /usr/bin/python3
LOCK_VENV := $(RUN_DIR)/lock-venv
# The generated passwords (scripts/ensure-secrets.sh), read by every process (common/secrets.py), and
# the unprivileged user the API, beat and Flower run as (scripts/ensure-service-user.sh).
IAAS_SECRETS_DIR ?= $(RUN_DIR)/secrets
IAAS_SERVICE_USER ?= mini-iaas
export RUN_DIR VENV IAAS_SECRETS_DIR IAAS_SERVICE_USER

# Detected once (scripts/detect-domain-type.sh) unless you set IAAS_DOMAIN_TYPE yourself.
DOMAIN_TYPE_FILE := $(RUN_DIR)/domain-type
IAAS_DOMAIN_TYPE ?= $(shell cat $(DOMAIN_TYPE_FILE) 2>/dev/null)
ifneq ($(IAAS_DOMAIN_TYPE),)
export IAAS_DOMAIN_TYPE
endif

.PHONY: help access up down status logs test lint docs migrate deps secrets compose-secrets services venv lock check-install image unit clean _stack-up _pytest

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## Install the missing Debian packages (PostgreSQL, Redis, libvirt, qemu, build headers)
	@scripts/install-deps.sh

secrets: deps ## Create the service user and generate the passwords once, into .run/secrets
	@scripts/ensure-service-user.sh
	@scripts/ensure-secrets.sh

compose-secrets: ## Generate docker-compose.yml's passwords once, into .run/compose-secrets (docs/deploy.md)
	@IAAS_SECRETS_DIR=$(RUN_DIR)/compose-secrets scripts/ensure-secrets.sh --compose

services: deps secrets ## Start PostgreSQL, Redis (with its password), virtlogd and libvirtd when they are down
	@scripts/start-services.sh

# The venv installs the exact versions (and hashes) of $(LOCK), never "whatever is newest".
# pip, setuptools, wheel and packaging come first, at their locked versions, because the packages
# that PyPI has only as source (psycopg2, libvirt-python) and mini-iaas itself are then built with
# them, without build isolation (which would fetch the newest setuptools instead). The lock holds the
# `dev` and `worker` extras: this venv runs every process. (An API-only install, `pip install .`,
# needs no libvirt headers: Dockerfile's api image, scripts/check-install.sh.)
$(STAMP_VENV): pyproject.toml $(LOCK)
	@echo "==> creating $(VENV) and installing mini-iaas with the versions pinned in $(notdir $(LOCK))"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@awk '/^[a-z]/ { keep = $$1 ~ /^(pip|setuptools|wheel|packaging)==/ } keep' $(LOCK) > $(VENV)/build-tools.txt
	@$(VENV)/bin/pip install -q --require-hashes --no-deps -r $(VENV)/build-tools.txt
	@$(VENV)/bin/pip install -q --require-hashes --no-build-isolation -r $(LOCK)
	@$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e '.[dev,worker]'
	@$(VENV)/bin/pip check >/dev/null || $(VENV)/bin/pip check
	@touch $@

venv: deps $(STAMP_VENV) ## Create .venv with mini-iaas and the exact dependency versions of requirements.lock

# The lock is resolved by Debian 12's own Python (3.11.2), the one a fresh install runs: some
# dependencies depend on the patch release (redis needs async-timeout only before 3.11.3), so a lock
# resolved on a newer 3.11 would miss them; the other way round, pip merely installs one package
# more. pip-compile runs in a venv of its own (.run/lock-venv) with the pip-tools version of the lock.
# LOCK_UPGRADE= (empty) keeps the current pins where pyproject.toml still allows them;
# LOCK_UPGRADE='--upgrade-package ruff' moves just one package.
lock: ## Re-resolve requirements.lock to the newest versions pyproject.toml allows (commit the diff)
	@$(LOCK_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
		|| { echo "make lock: $(LOCK_PYTHON) is not Python 3.11 (Debian 12's); set LOCK_PYTHON" >&2; exit 1; }
	@test -x $(LOCK_VENV)/bin/python || $(LOCK_PYTHON) -m venv $(LOCK_VENV)
	@{ grep -E '^[a-z0-9]' $(LOCK) 2>/dev/null || true; } | cut -d' ' -f1 > $(LOCK_VENV)/constraints.txt
	@$(LOCK_VENV)/bin/pip install -q -c $(LOCK_VENV)/constraints.txt pip "pip-tools>=7.4,<8"
	@echo "==> resolving pyproject.toml (dev and worker extras, build requirements) with Python $$($(LOCK_PYTHON) -V | cut -d' ' -f2) into $(notdir $(LOCK))"
	@CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q $(LOCK_UPGRADE) --extra dev --extra worker --all-build-deps \
		--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file $(LOCK) pyproject.toml
	@echo "==> done: review 'git diff $(notdir $(LOCK))', run 'make venv' and the tests, then commit it"

check-install: ## `make deps venv` in a fresh minimal Debian 12 chroot, as a new user would (minutes)
	@scripts/check-install.sh

migrate: services venv ## Create the database if missing and apply the migrations
	@scripts/ensure-database.sh
	@$(VENV)/bin/alembic upgrade head

# Rebuilt when its script changes (the script alone leaves an existing file be, hence --force).
$(TINY_IMAGE): scripts/build-tiny-image.sh
	@scripts/build-tiny-image.sh --force $@

$(DOMAIN_TYPE_FILE): | $(TINY_IMAGE)
	@mkdir -p $(RUN_DIR)
	@echo "==> checking whether KVM can run guests here (a 20 s boot test, done once)"
	@scripts/detect-domain-type.sh $(TINY_IMAGE) > $@.tmp && mv $@.tmp $@
	@echo "    domain type: $$(cat $@)"

image: migrate $(TINY_IMAGE) ## Build the tiny test image and register it as image `tiny` (a rebuilt one replaces it)
	@$(VENV)/bin/iaas-admin image import --replace tiny $(TINY_IMAGE)

ADMIN_TOKEN := $(IAAS_SECRETS_DIR)/admin-token

# An `admin` project and an admin token for the README walk-through (kept while it stays valid).
access: migrate ## Make sure the admin project exists and .run/secrets/admin-token holds a valid admin token
	@$(VENV)/bin/iaas-admin bootstrap --token-file $(ADMIN_TOKEN)

up: image access $(DOMAIN_TYPE_FILE) ## Set up everything and start the API, worker, beat, Flower and the event listener
	@$(MAKE) --no-print-directory _stack-up

API_BIND = $(or $(IAAS_API_BIND),127.0.0.1:8080)
FLOWER_PORT = $(or $(IAAS_FLOWER_PORT),5555)
_stack-up:
	@scripts/stack.sh up
	@echo
	@echo "mini-iaas is up (domain type $(IAAS_DOMAIN_TYPE)):"
	@echo "  API     http://$(API_BIND)   (try: curl -s -H \"Authorization: Bearer \$$(cat $(ADMIN_TOKEN))\" http://$(API_BIND)/v1/images)"
	@echo "  Token   $(ADMIN_TOKEN)   (an admin token; make others with 'iaas-admin token create')"
	@echo "  Flower  http://127.0.0.1:$(FLOWER_PORT)   (queues, workers, tasks; user:password in $(IAAS_SECRETS_DIR)/flower)"
	@echo "  Next:   the walk-through in README.md; 'make status', 'make logs', 'make down'"

down: ## Stop the processes `make up` started (PostgreSQL, Redis and libvirtd stay up)
	@scripts/stack.sh down

status: ## Show which mini-iaas processes run and whether the API is ready
	@scripts/stack.sh status

logs: ## Follow the logs of the API, worker, beat, Flower and the event listener
	@tail -n 50 -F $(RUN_DIR)/log/*.log

test: up ## Set up everything, then run the whole test suite (unit, integration, e2e)
	@$(MAKE) --no-print-directory _pytest

# A sub-make, so that IAAS_DOMAIN_TYPE is read after `up` detected it on a fresh machine.
_pytest:
	@$(VENV)/bin/pytest

unit: venv ## Run only the unit tests (no services needed)
	@$(VENV)/bin/pytest -m unit

lint: venv ## Run ruff and mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

docs: venv ## Regenerate docs/configuration.md from the settings' descriptions in common/config.py
	@$(VENV)/bin/python -m common.config_reference

clean: down ## Stop the stack and remove the run folder and the venv (the database stays)
	rm -rf $(RUN_DIR) $(VENV)
