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
export RUN_DIR VENV

# Detected once (scripts/detect-domain-type.sh) unless you set IAAS_DOMAIN_TYPE yourself.
DOMAIN_TYPE_FILE := $(RUN_DIR)/domain-type
IAAS_DOMAIN_TYPE ?= $(shell cat $(DOMAIN_TYPE_FILE) 2>/dev/null)
ifneq ($(IAAS_DOMAIN_TYPE),)
export IAAS_DOMAIN_TYPE
endif

.PHONY: help up down status logs test lint migrate deps services venv image unit clean _stack-up _pytest

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## Install the missing Debian packages (PostgreSQL, Redis, libvirt, qemu, build headers)
	@scripts/install-deps.sh

services: deps ## Start PostgreSQL, Redis, virtlogd and libvirtd when they are down
	@scripts/start-services.sh

$(STAMP_VENV): pyproject.toml
	@echo "==> creating $(VENV) and installing mini-iaas with its dependencies"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --upgrade pip
	@$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

venv: deps $(STAMP_VENV) ## Create .venv with mini-iaas and its dependencies

migrate: services venv ## Create the database if missing and apply the migrations
	@scripts/ensure-database.sh
	@$(VENV)/bin/alembic upgrade head

$(TINY_IMAGE):
	@scripts/build-tiny-image.sh $@

$(DOMAIN_TYPE_FILE): | $(TINY_IMAGE)
	@mkdir -p $(RUN_DIR)
	@echo "==> checking whether KVM can run guests here (a 20 s boot test, done once)"
	@scripts/detect-domain-type.sh $(TINY_IMAGE) > $@.tmp && mv $@.tmp $@
	@echo "    domain type: $$(cat $@)"

image: migrate $(TINY_IMAGE) ## Build the tiny test image and register it as image `tiny`
	@$(VENV)/bin/iaas-admin image import --skip-existing tiny $(TINY_IMAGE)

up: image $(DOMAIN_TYPE_FILE) ## Set up everything and start the API, worker, beat, Flower and the event listener
	@$(MAKE) --no-print-directory _stack-up

_stack-up:
	@scripts/stack.sh up
	@echo
	@echo "mini-iaas is up (domain type $(IAAS_DOMAIN_TYPE)):"
	@echo "  API     http://127.0.0.1:8080   (try: curl -s http://127.0.0.1:8080/v1/images)"
	@echo "  Flower  http://127.0.0.1:5555   (queues, workers, tasks)"
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

.PHONY: docs
docs: venv ## Regenerate docs/configuration.md from the settings' descriptions in common/config.py
	@$(VENV)/bin/python -m common.config_reference

clean: down ## Stop the stack and remove the run folder and the venv (the database stays)
	rm -rf $(RUN_DIR) $(VENV)
