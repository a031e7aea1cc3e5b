# sdgraph — `make run` makes a picture with the bundled model; `make test` runs the test suite.
# Both create .venv and install what is needed on first use.
#
# torch is pinned to 2.13.0 (TORCH_SPEC); TORCH_INDEX picks a build, for example CUDA 12.8:
#   make run TORCH_INDEX="--extra-index-url https://download.pytorch.org/whl/cu128"
#
# spandrel (upscale models) is installed in a second call with --no-deps (pyproject's
# [tool.sdgraph] no-deps): it declares torchvision, which sdgraph does not need and which pip would
# otherwise add (and with it possibly another torch). Its small dependencies come with the first call.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sdgraph-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test bench eval screenshots docs lint clean-venv gpu-check gpu-pack

$(STAMP): pyproject.toml tools/deps.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_INDEX) $$($(PY) tools/deps.py dev)
	$(PY) -m pip install -q --no-deps $$($(PY) tools/deps.py no-deps)
	@touch $(STAMP)

run: $(STAMP)
	@if [ ! -f workflows/default.json ]; then \
		echo "workflows/default.json is not there yet: it arrives with the bundled model."; \
		echo "Run your own workflow with: $(PY) main.py run path/to/workflow.json"; exit 2; fi
	$(PY) main.py run workflows/default.json

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; QT_QPA_PLATFORM=offscreen $(PY) $$b || exit $$?; echo; done

eval: $(STAMP)
	$(PY) tools/eval_bundled_model.py

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) tools/screenshots.py --real --run

# The figures of docs/how-stable-diffusion-works.md: runs workflows/explain_*.json on the bundled model.
docs: $(STAMP)
	$(PY) tools/make_docs.py

# GPU tests + benchmark on a CUDA machine without internet (docs/performance.md). `make gpu-pack` here,
# online, puts the wheels such a machine lacks (diffusers, torchsde) in .gpu_check/wheels/; copy the repo
# with it, then `make gpu-check` there. It needs no .venv: without one it uses that machine's python3.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)

gpu-pack: $(STAMP)
	$(PY) tools/gpu_check.py pack

gpu-check:
	$(GPU_PY) tools/gpu_check.py run

lint: $(STAMP)
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
