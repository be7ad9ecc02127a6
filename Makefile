# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create the virtualenv and install everything on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The CPU build of PyTorch where there is no NVIDIA GPU (pip takes it from a local wheel or
# from the index named by PIP_EXTRA_INDEX_URL); the default CUDA build where there is one.
CPU_TORCH ?= torch==2.13.0 triton==3.6.0
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: demo test lint install clean bench

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
ifeq ($(HAS_GPU),1)
	$(PY) -m pip install -q torch
else
	$(PY) -m pip install -q $(CPU_TORCH)
endif
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/mlafleet demo

test: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/lint.sh
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/test.sh

lint: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/lint.sh

# the kernel benchmarks of docs/PERFORMANCE.md on this machine's GPU (CUDA): decode over the
# shapes of ANCHORS.md with bf16 and fp8 caches (one record per shape, as in
# bench/results/h200.json), then prefill against torch SDPA; results in out/bench/
bench: $(STAMP)
	mkdir -p out/bench
	$(PY) bench/bench_decode.py --shapes anchors --fp8 all --out out/bench/decode_rows.json \
		--summary out/bench/decode.json
	$(PY) bench/bench_prefill.py --out out/bench/prefill.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
