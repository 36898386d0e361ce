# oom-killer: `make up` runs it on your current kube context, `make test` runs the tests.
# Python runs from ./venv, the virtualenv Pulumi.yaml names, made here from the requirements files.

PYTHON ?= python3
VENV ?= venv
BIN := $(VENV)/bin
CHECKOV_VENV ?= venv-checkov
STACK ?= dev
# The goal that needs the CLI, by name (make up, make destroy), in the one line that says where to get it.
GOAL = $(or $(firstword $(MAKECMDGOALS)),up)

.PHONY: up demo verify destroy base-image test lint pytest e2e dashboard-screenshots soak bench mutation clean pulumi-cli

# Checked before anything is installed or run: without the Pulumi CLI, make up and make destroy stop in one line.
pulumi-cli:
	@command -v pulumi >/dev/null || \
	  { echo "make $(GOAL) needs the Pulumi CLI: https://www.pulumi.com/docs/install/" >&2; exit 1; }

# The program's own dependencies, all `make up` needs, in the virtualenv Pulumi.yaml names (after the CLI check:
# order-only, so that it comes first even under make -j, and never makes the virtualenv out of date).
$(BIN)/.program-installed: requirements.txt | pulumi-cli
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

# setuptools' notice on every editable install ("be careful with folders ... with the same name as your package": these
# folders are the package) is ten lines of noise on a newcomer's first `make demo`; only that warning is silenced.
EDITABLE = PYTHONWARNINGS=ignore::UserWarning:setuptools.command.editable_wheel $(BIN)/python -m pip install --quiet -e .

# The tools' own, all `make demo` and `make verify` need: the project itself, editable (the oom-killer command runs
# this checkout's code), with its dependencies (pyproject.toml: requirements.txt and requirements-tools.txt).
$(BIN)/.tools-installed: requirements.txt requirements-tools.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(EDITABLE)
	touch $@

# The test and lint tools on top (requirements-dev.txt includes the other two): a superset of both sets above.
$(BIN)/.installed: requirements.txt requirements-tools.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(EDITABLE)
	touch $(BIN)/.program-installed $(BIN)/.tools-installed $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

## up: build the image and deploy the stack on the current kube context (needs the Pulumi CLI, Docker, kubectl)
up: $(BIN)/.program-installed
	@command -v kubectl >/dev/null && echo "kube context: $$(kubectl config current-context)" || true
	@# A local state backend (~/.pulumi) only where no backend was ever chosen (no PULUMI_BACKEND_URL, and no
	@# credentials file: no `pulumi login` ever ran). One that was chosen and does not answer (an expired token, no
	@# network, a logout) stops here with Pulumi's message: never a silent move to a second, empty stack elsewhere.
	@if [ -z "$$PULUMI_BACKEND_URL" ] && [ ! -e "$${PULUMI_HOME:-$$HOME/.pulumi}/credentials.json" ]; then \
	  pulumi login --local; \
	elif ! error=$$(pulumi whoami --non-interactive 2>&1 >/dev/null); then \
	  echo "$$error" >&2; \
	  echo "make up: the Pulumi backend you chose does not answer (above). Log in to it again (pulumi login)," \
	    "or choose another (pulumi login --local keeps state in ~/.pulumi), then run make up again." >&2; \
	  exit 1; \
	fi
	pulumi stack select --create $(STACK)
	pulumi up --stack $(STACK)

# make demo and make verify run the oom-killer command, which carries the exit codes (make's own is 2 on any
# failure; its message shows the command's: `make: *** [Makefile:<line>: demo] Error 4`).

## demo: no cluster needed: build the image and run the container as the dev stack declares it on Docker,
## until the kernel OOM-kills it (honours DOCKER_HOST and BASE_IMAGE; ARGS="--set memoryLimitMb=64" to vary)
demo: $(BIN)/.tools-installed
	$(BIN)/oom-killer demo --stack $(STACK) $(ARGS)

## base-image: no registry (or no Docker Hub)? A Python base image from Debian packages (root and debootstrap, about
## a minute), then: make demo BASE_IMAGE=oom-killer-base:bookworm. BASE_IMAGE_TAG=... names it otherwise.
BASE_IMAGE_TAG ?= oom-killer-base:bookworm
base-image:
	$(PYTHON) -m oomtools.base_image $(BASE_IMAGE_TAG)

## verify: watch a deployed stack through the Kubernetes API (your kube context) and say whether what its settings
## predict happened; with --prometheus URL, whether the alerts fired and resolved. ARGS="--timeout 10m"
verify: $(BIN)/.tools-installed
	$(BIN)/oom-killer verify --stack $(STACK) $(ARGS)

## destroy: delete everything the stack created (the namespace and all in it)
destroy: pulumi-cli
	pulumi destroy --stack $(STACK)

## test: lint, types and every test but the cluster's (the README's test command; CI runs it, then make e2e)
test: lint pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

pytest: $(BIN)/.installed $(CHECKOV_VENV)/.installed
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(BIN)/python -m pytest -m "not e2e"

## e2e: the real thing: a Kubernetes cluster built from the upstream release's Go modules (once per machine),
## the stack's objects applied to it and its pod OOM-killed by a real kubelet, and your own Pulumi commands run on
## it with the CLI and plugins built the same way (root, Linux, Go, Docker engine).
## E2E_KEEP=1 leaves the cluster running and prints its kubeconfig and the command that stops it.
e2e: $(BIN)/.installed
	bash tests/e2e/builds/build.sh
	$(BIN)/python -m pytest -m e2e tests/e2e

## dashboard-screenshots: docs/headlamp-*.png again, from a run of make e2e's watching tests (a real cluster, the
## hog's kill, Headlamp in chromium: about 4 minutes; what make e2e needs).
dashboard-screenshots: $(BIN)/.installed
	bash tests/e2e/builds/build.sh
	OOM_KILLER_SCREENSHOTS=docs $(BIN)/python -m pytest -m e2e tests/e2e/test_watching.py

# make soak's runs per group (each group one pytest session with pytest-repeat's --count=N).
SOAK_RUNS ?= 25
SOAK_RUNS_V1 ?= $(SOAK_RUNS)
SOAK_RUNS_CONTAINER ?= $(SOAK_RUNS)
SOAK_RUNS_V2 ?= 10
SOAK_RUNS_E2E ?= 10
SOAK_ONLY ?=

## soak: every test whose verdict rests on the kernel's accounting or on timing, run many times with the page cache
## dropped before each run and the rest of the suite running beside for load, then a table of runs, passes and
## failures per test; exit 1 on any failure (root, and what make test and make e2e need). Runs per group:
## SOAK_RUNS=25 (v1 kernel and containers), SOAK_RUNS_V2=10 (VM boots), SOAK_RUNS_E2E=10; SOAK_ONLY=v2 for one group
soak: $(BIN)/.installed $(CHECKOV_VENV)/.installed
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(BIN)/python -m tests.soak --runs-v1 $(SOAK_RUNS_V1) \
	  --runs-v2 $(SOAK_RUNS_V2) --runs-container $(SOAK_RUNS_CONTAINER) --runs-e2e $(SOAK_RUNS_E2E) \
	  $(if $(SOAK_ONLY),--only $(SOAK_ONLY)) $(ARGS)

## bench: time to the OOM kill against stress-ng and MAP_POPULATE, baseline RSS, CPU while holding (root, Linux)
bench: $(BIN)/.installed
	$(BIN)/python bench/oom_bench.py

## mutation: mutmut plants faults in each judge and prediction and runs their tests against each; prints every
## module's score and survivors, exit 1 under 90% (minutes a module; docs/development.md lists what survives and why)
mutation: $(BIN)/.installed
	$(BIN)/python -m tests.mutation $(ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis oom_killer.egg-info
