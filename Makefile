# One virtualenv in the checkout; every target creates or reuses it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
# Ray and DeepSpeed settings for a local CPU machine (see docs/cpu.md).
export DS_ACCELERATOR ?= cpu
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# The venv first on PATH: DeepSpeed JIT-builds ops with the first `ninja` found, and a different ninja in
# another process invalidates the cached build (see t2l_ray/train/engine.py: pin_build_tools).
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install demo test test-fast gpu-check clean

install: $(STAMP)

# torch goes in first and alone: installing deepspeed or peft without it pulls a CUDA build.
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[test]'
	$(PY) -c "from deepspeed.accelerator import get_accelerator as g; g().create_op_builder('ShareMemCommBuilder').load()" >/dev/null 2>&1 || true
	touch $(STAMP)

demo: $(STAMP)
	bash jobs/demo.sh $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -ra --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -ra -m "not slow"

# One NVIDIA GPU, no network, no install step (docs/gpu.md): GPU_CHECK_ARGS="--deps DIR" names carried packages.
gpu-check:
	bash bench/gpu_check.sh $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
