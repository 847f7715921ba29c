# vlfront — two commands on a fresh machine: `make export` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CACHE  := build/cache
RANKS  := $(CACHE)/qwen.tiktoken

.PHONY: setup export test bench cpp gpu-check calibrate engines clean

setup: $(STAMP) $(RANKS)

# A virtual environment with pinned dependencies; torch==2.13.0 is the CPU build.
$(STAMP): pyproject.toml constraints.txt
	@echo "[setup] creating $(VENV) with pinned dependencies (torch 2.13.0 CPU)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[export,dev,bench,serve]'
	@touch $@

# The Qwen BPE ranks, taken out of the dashscope wheel (sha256-verified).
$(RANKS): $(STAMP)
	$(BIN)/python -m vlfront.export.tokenizer_asset fetch --out $@

export: setup
	$(BIN)/vlfront export --preset default --out build/default --ranks $(RANKS)

test: setup
	$(BIN)/python -m pytest -q -ra

bench: setup
	$(BIN)/vlfront bench --bundle build/default --out build/bench

calibrate: setup
	$(BIN)/vlfront calibrate --bundle build/default

engines: setup
	$(BIN)/vlfront engines --bundle build/default

gpu-check: setup
	$(BIN)/python -m vlfront.calibration.gpu_check --bundle build/default

clean:
	rm -rf build
