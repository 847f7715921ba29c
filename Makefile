# vlfront — two commands on a fresh machine: `make export` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CACHE  := build/cache
RANKS  := $(CACHE)/qwen.tiktoken
TRITON_ENV   := build/triton-env
TRITON_STAMP := $(TRITON_ENV)/.installed

.PHONY: setup export test bench bench-triton cpp cpp-test cpp-asan cpp-fuzz bench-hostile gpu-setup gpu-check calibrate engines clean

setup: $(STAMP) $(RANKS) $(TRITON_STAMP)

# A virtual environment with pinned dependencies; torch==2.13.0 is the CPU build.
$(STAMP): pyproject.toml constraints.txt
	@echo "[setup] creating $(VENV) with pinned dependencies (torch 2.13.0 CPU)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[export,dev,bench,serve]'
	@touch $@

# Triton + Redis (docs/triton.md): redis-server (apt), the nvidia-pytriton wheel + tritonclient, and the
# python-backend stub env (numpy<2). A step that cannot be done is reported; those tests then skip.
$(TRITON_STAMP): $(STAMP) runtime/triton/install_deps.sh runtime/triton/stub-requirements.txt
	@runtime/triton/install_deps.sh $(BIN)/python $(TRITON_ENV)

# Triton vs the Starlette example server, and two Triton replicas sharing one Redis (docs/triton.md).
bench-triton: setup
	$(BIN)/python -m vlfront.runtime.triton.bench --bundle build/default --out build/bench-triton --shm
	$(BIN)/python -m vlfront.runtime.triton.bench --bundle build/default --out build/bench-triton-3mp --parts replicas \
	  --photo-mp 3 --images-input tensor --shm

# The Qwen BPE ranks, taken out of the dashscope wheel (sha256-verified).
$(RANKS): $(STAMP)
	$(BIN)/python -m vlfront.export.tokenizer_asset fetch --out $@

export: setup
	$(BIN)/vlfront export --preset default --out build/default --ranks $(RANKS)

test: setup
	-@$(MAKE) --no-print-directory cpp  # first, so tests/cpp can drive it; a failure here fails cpp-test below
	$(BIN)/python -m pytest -q -ra
	@$(MAKE) --no-print-directory cpp-test
	@$(MAKE) --no-print-directory cpp-fuzz

# Also camera-size photos (0.3-12 MP JPEG, a 3 MP PNG), exact and fast decoding, Python and C++ (docs/images.md).
bench: setup
	-@$(MAKE) --no-print-directory cpp  # the C++ rows need the build; without it they are skipped, saying so
	$(BIN)/vlfront bench --bundle build/default --out build/bench --precision fp32,int8

calibrate: setup
	$(BIN)/vlfront calibrate --bundle build/default

engines: setup
	$(BIN)/vlfront engines --bundle build/default

# TensorRT where a CUDA GPU is (docs/calibration.md): the pinned tensorrt-cu12 (pyproject [gpu]) and torch 2.13.0's
# CUDA build in place of the CPU one (the TensorRT runner allocates GPU memory through torch.cuda), other pins kept.
# Run `make gpu-setup` again after anything reinstalls the CPU torch (a changed pyproject.toml re-runs setup).
# GPU_TORCH_ARGS: extra pip arguments for that torch, e.g. the --index-url of a CUDA 12 wheel index.
TENSORRT_PIN   := tensorrt-cu12==10.13.3.9
GPU_TORCH_ARGS ?=
gpu-setup: setup
	@grep -v '^torch==' constraints.txt > build/gpu-constraints.txt
	$(BIN)/python -m pip uninstall -q -y torch
	$(BIN)/python -m pip install -q --disable-pip-version-check -c build/gpu-constraints.txt 'torch==2.13.0' \
	  '$(TENSORRT_PIN)' $(GPU_TORCH_ARGS)
	$(BIN)/python -c "import tensorrt, torch; print('[gpu-setup] TensorRT', tensorrt.__version__, '| torch', \
	  torch.__version__, 'CUDA', torch.version.cuda, '| torch sees a GPU:', torch.cuda.is_available())"

# Fails (exit 2) where a GPU is visible but TensorRT is not usable; skips (exit 0) only where no GPU is.
gpu-check: setup
	$(BIN)/python -m vlfront.calibration.gpu_check --bundle build/default

# --- C++ runtime (runtime/cpp; docs/cpp.md) ---------------------------------------------------
# Debian packages (installed when missing, as root), ONNX Runtime headers from Debian 13's
# libonnxruntime-dev (private apt config under build/cpp-deps), the library of the onnxruntime
# wheel in .venv. Pass your own SDK with CPP_CMAKE_ARGS=-DONNXRUNTIME_ROOT=/path/to/sdk.
CPP_BUILD      := build/cpp
CPP_DEPS       := build/cpp-deps
CPP_CMAKE_ARGS ?=
CPP_ORT_LIB     = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*))
CPP_CONFIGURE   = cmake -S runtime/cpp -DONNXRUNTIME_INCLUDE_DIR=$(abspath $(CPP_DEPS)/ort/include) \
                  -DONNXRUNTIME_LIBRARY=$(abspath $(CPP_ORT_LIB)) $(CPP_CMAKE_ARGS)

cpp: $(STAMP)
	@runtime/cpp/scripts/install_deps.sh
	@runtime/cpp/scripts/fetch_ort_headers.sh $(CPP_DEPS)/ort
	@$(CPP_CONFIGURE) -B $(CPP_BUILD) > $(CPP_DEPS)/configure.log || { cat $(CPP_DEPS)/configure.log; exit 1; }
	cmake --build $(CPP_BUILD) -j2

cpp-test: cpp
	ctest --test-dir $(CPP_BUILD) --output-on-failure -j2

# The unit tests under AddressSanitizer + UBSan (a separate build tree).
cpp-asan: cpp
	@$(CPP_CONFIGURE) -B $(CPP_BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DVLFRONT_SANITIZE=address,undefined \
	  -DVLFRONT_BUILD_EXAMPLES=OFF > $(CPP_DEPS)/configure-asan.log || { cat $(CPP_DEPS)/configure-asan.log; exit 1; }
	cmake --build $(CPP_BUILD)-asan -j2
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir $(CPP_BUILD)-asan --output-on-failure -j2
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" ASAN_OPTIONS=detect_leaks=0 \
	  VLFRONT_CPP_BUILD=$(CPP_BUILD)-asan $(BIN)/python -m pytest -q tests/cpp/test_image_parity.py tests/cpp/test_runtime_parity.py

# Both example servers under a mixed hostile load: good-request p50/p99 clean vs mixed, RSS (docs/runtime.md).
bench-hostile: setup cpp
	$(BIN)/python runtime/cpp/tools/hostile_load.py --bundle build/default \
	  --cpp-server $(CPP_BUILD)/examples/vlfront-http-server --out build/bench-hostile.json

# libFuzzer targets (runtime/cpp/fuzz) under ASan + UBSan, built with Debian's clang in their own
# tree, each run CPP_FUZZ_SECONDS from seeds made here (6 targets: under 60 s in all); a finding fails.
CPP_FUZZ_SECONDS ?= 8
cpp-fuzz: $(STAMP)
	@runtime/cpp/scripts/install_deps.sh
	@runtime/cpp/fuzz/install_clang.sh
	@runtime/cpp/scripts/fetch_ort_headers.sh $(CPP_DEPS)/ort
	@CC=clang CXX=clang++ $(CPP_CONFIGURE) -B $(CPP_BUILD)-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DVLFRONT_SANITIZE=address,undefined -DVLFRONT_BUILD_FUZZERS=ON -DVLFRONT_BUILD_TESTS=OFF \
	  -DVLFRONT_BUILD_EXAMPLES=OFF > $(CPP_DEPS)/configure-fuzz.log || { cat $(CPP_DEPS)/configure-fuzz.log; exit 1; }
	cmake --build $(CPP_BUILD)-fuzz -j2 --target vlfront-fuzzers
	$(BIN)/python runtime/cpp/fuzz/make_seeds.py $(CPP_BUILD)-fuzz/fuzz-seeds
	runtime/cpp/fuzz/run.sh $(CPP_BUILD)-fuzz $(CPP_BUILD)-fuzz/fuzz-seeds $(CPP_FUZZ_SECONDS)

clean:
	rm -rf build
