# RecOps: `make run` for the whole pipeline, `make test` for the tests. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
# DVC stages call `python`: make it the project's interpreter
export PATH := $(BIN):$(PATH)
# no telemetry or update checks: this machine reaches package registries only
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# the BentoML model store and Bentos live inside the project, so a clone is self-contained
export BENTOML_HOME := $(abspath .bentoml)
export BENTOML_DO_NOT_TRACK := True

STAMP := $(VENV)/.installed

help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so pip takes the local CPU wheel here and never a CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	@touch $@

install: $(STAMP) ## create .venv with the locked dependencies (only if missing or stale)

lock: ## re-resolve dependencies and rewrite constraints.txt
	$(BIN)/python -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+.*/torch==\1/' > constraints.txt

# PROFILE=shop: `make run` on the synthetic shop log of docs/own-data.md instead of MovieLens
PROFILE ?=
# e.g. INGEST_ARGS=--new-key when data/ was written with another key (MovieLens's demo key)
INGEST_ARGS ?=

ingest: $(STAMP) ## obtain MovieLens-100K (or the source params.yaml names), validate it, record it in data.dvc
	$(BIN)/python -m pipelines.stages.ingest $(INGEST_ARGS)
	$(BIN)/dvc add --quiet data

# the first step of `make run PROFILE=<name>`: profiles/<name>.args into params.yaml (comments
# kept; `git checkout params.yaml` undoes it); PROFILE=shop first writes the shop log
profile: $(STAMP)
	@test -n "$(PROFILE)" || { echo "make profile: say which, e.g. make profile PROFILE=shop" >&2; exit 2; }
	$(if $(filter shop,$(PROFILE)),$(BIN)/python bench/shop_log.py --out .cache/shop --hostile)
	$(BIN)/python -m pipelines.stages.profile profiles/$(PROFILE).args

repro: $(STAMP) ## run the DVC pipeline (only stale stages)
	$(BIN)/dvc repro

leaderboard: ## print the leaderboards (validation, test, fairness, cold start) and the winner
	@cat artifacts/eval/leaderboard.md artifacts/coldstart/coldstart.md
	@echo; echo "### selection (chosen on validation NDCG@10; test reported, never used)"; echo
	@cat artifacts/selection/leaderboard.md

run: $(STAMP) ## set up, ingest, run the whole pipeline and print the leaderboard (PROFILE=shop: the shop log)
	@time ( $(MAKE) --no-print-directory $(if $(PROFILE),profile) ingest repro leaderboard )

run-gpu: $(STAMP) ## like run, with the larger search budget of profiles/gpu.args (a DVC experiment)
	$(MAKE) --no-print-directory ingest
	$(BIN)/dvc exp run $$(cat profiles/gpu.args)
	$(MAKE) --no-print-directory leaderboard

serve: $(STAMP) ## serve the blessed champion on localhost (prints URL, Swagger page and token)
	$(BIN)/python -m services.serve --port $${PORT:-3000}

bench-serve: $(STAMP) ## throughput/latency table of the served champion (+ 5-min soak, quantisation)
	$(BIN)/python bench/serve.py --soak 300 --quantize

AIRFLOW_PORT ?= 8080
airflow: $(STAMP) ## Airflow 3 standalone with this project's DAGs on 127.0.0.1 (prints the URL and login)
	$(BIN)/python dags/standalone.py --home airflow_home --port $(AIRFLOW_PORT)

# Debian's PostgreSQL and Redis for airflow-celery and test-celery (as root, once)
services:
	@{ command -v redis-server >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null; } \
	  || echo "make: postgresql or redis-server missing and not root: airflow-celery will fail" >&2

airflow-celery: $(STAMP) services ## Airflow 3 on Celery: PostgreSQL, Redis, 2 workers on 127.0.0.1 (prints URL, login)
	$(BIN)/python dags/celery_stack.py --home airflow_home/celery --port $(AIRFLOW_PORT)

STREAM ?= artifacts/stream/workspace
stream: $(STAMP) ## a stream workspace the DAGs watch (week 0 landed), and Airflow on it; then make land
	$(BIN)/python -m pipelines.stages.replay stream --workspace $(STREAM)
	RECOPS_WORKSPACE=$(abspath $(STREAM)) $(BIN)/python dags/standalone.py --home airflow_home/stream --port $(AIRFLOW_PORT) --unpaused

land: $(STAMP) ## land the next replayed week into $$RECOPS_WORKSPACE (default: the stream workspace)
	RECOPS_WORKSPACE=$${RECOPS_WORKSPACE:-$(abspath $(STREAM))} $(BIN)/python -m pipelines.stages.replay land $(LAND_ARGS)

REPLAY_ARGS ?= --weeks 8 --corrupt 4
replay: $(STAMP) ## replay MovieLens weeks 0-8 through ingest, monitor, retrain, deploy (no UI); the table
	@time $(BIN)/python -m pipelines.stages.replay run $(REPLAY_ARGS)

releases: ## list the BentoML models and Bentos in .bentoml/
	$(BIN)/bentoml models list; $(BIN)/bentoml list

browser: ## install Debian's headless Chromium for the browser tests (as root, once)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
	  && apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "make: chromium missing and not root: the browser tests will fail" >&2

# Debian's redis-server for the live-state tests (as root, once; the tests start it on
# loopback). Not in `make help` until the README names `make redis` (tests/code/test_docs.py)
redis:
	@command -v redis-server >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
	  && apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; } \
	  || echo "make: redis-server missing and not root: the redis tests will fail" >&2

test: $(STAMP) browser redis ## run the default test suite (skips slow tests; GPU tests run where CUDA is)
	$(BIN)/python -m pytest -m "not slow"

test-celery: $(STAMP) services ## the loop on two Celery workers (PostgreSQL, Redis), one killed mid-task (~5 min)
	RECOPS_CELERY_REQUIRED=1 $(BIN)/python -m pytest -m celery tests/dags/test_celery.py

test-all: $(STAMP) ## run every test, slow ones included
	$(BIN)/python -m pytest

mutate: $(STAMP) ## mutation score of the core modules (mutmut; a benchmark, ~1 h on 2 cores)
	$(BIN)/python bench/mutate.py $(ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean: ## remove pipeline outputs (keeps data/ and .venv)
	rm -rf artifacts quarantine

.PHONY: help install lock profile ingest repro leaderboard run run-gpu serve bench-serve airflow services airflow-celery stream land replay releases browser redis test test-celery test-all mutate lint clean
