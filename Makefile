# make test: create/refresh .venv from requirements.lock (+ this package, editable), then run the tests.
# make demo: the same set-up, then the whole pipeline on the embedded MNIST digits into runs/demo/.
# make gpu-check: the same set-up, then eval/gpu_check.py (a few minutes on a CUDA GPU; "no CUDA: skipped" without).
# make fashion-data: Fashion-MNIST from Debian's dataset-fashion-mnist package, installed when its files are missing.
# make fashion: the same set-up and data, then train -> search -> frontier on configs/fashion.yaml into runs/fashion/.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ddsm-installed

export HF_HUB_OFFLINE = 1

.PHONY: venv test demo gpu-check fashion-data fashion clean-venv

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# FORCE=1 redoes every stage; otherwise finished stages are reused and interrupted ones resume.
demo: $(STAMP)
	$(PY) eval/demo.py $(if $(FORCE),--force)

gpu-check: $(STAMP)
	$(PY) eval/gpu_check.py

# Fashion-MNIST: the four IDX files (.gz or plain) that Debian's dataset-fashion-mnist package installs. Installed
# with apt-get when missing: directly as root, else through `sudo -n` (never a password prompt); when neither works,
# a message says what to run (or how to point data.root at your own copy) and the target fails.
FASHION_DATA  ?= /usr/share/datasets/fashion-mnist
FASHION_FILES := train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
APT_GET       ?= apt-get
FASHION_FOUND := for f in $(FASHION_FILES); do test -f "$(FASHION_DATA)/$$f.gz" || test -f "$(FASHION_DATA)/$$f" \
                 || exit 1; done

fashion-data:
	@if ($(FASHION_FOUND)); then echo "fashion-data: Fashion-MNIST found in $(FASHION_DATA)"; exit 0; fi; \
	if ! command -v $(firstword $(APT_GET)) >/dev/null 2>&1; then \
	  echo "fashion-data: Fashion-MNIST is not in $(FASHION_DATA) and there is no $(APT_GET) to install Debian's" \
	  "dataset-fashion-mnist; put the four IDX files (.gz or plain) in a folder and set data.root in" \
	  "configs/fashion.yaml" >&2; exit 1; fi; \
	if [ "$$(id -u)" = 0 ]; then as=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as="sudo -n"; \
	else echo "fashion-data: Fashion-MNIST is not in $(FASHION_DATA), and installing it needs root: run" \
	  "'sudo apt-get install -y dataset-fashion-mnist', or put the four IDX files in a folder and set data.root" \
	  "in configs/fashion.yaml (FASHION_DATA=<folder> for this target)" >&2; exit 1; fi; \
	echo "fashion-data: not in $(FASHION_DATA); installing it:" \
	  "$${as:+$$as }$(APT_GET) install -y dataset-fashion-mnist"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$as $(APT_GET) install -y dataset-fashion-mnist \
	  || { $$as $(APT_GET) update && $$as $(APT_GET) install -y dataset-fashion-mnist; } \
	  || { echo "fashion-data: '$(APT_GET) install -y dataset-fashion-mnist' failed (no such package here:" \
	       "not Debian/Ubuntu, or no network?); put the four IDX files (.gz or plain) in a folder and set" \
	       "data.root in configs/fashion.yaml" >&2; exit 1; }; \
	if ($(FASHION_FOUND)); then echo "fashion-data: Fashion-MNIST installed in $(FASHION_DATA)"; \
	else echo "fashion-data: the package is installed but $(FASHION_DATA) lacks some of $(FASHION_FILES)" \
	  "(.gz or plain)" >&2; exit 1; fi

# The pipeline on configs/fashion.yaml, stage by stage into $(FASHION_DIR): train/ (the supernet), search/
# (schedule.json at the config's budget), frontier/ (eval/frontier.py: every peer method and DDSM widths only /
# widths + skips at FASHION_STEPS x FASHION_BUDGETS on FASHION_SAMPLES held-out seeds, Inception FID on
# FASHION_INCEPTION; the searches it needs run inside it and are kept). A stage whose output exists is reused, an
# interrupted one resumes; FORCE=1 deletes $(FASHION_DIR) and starts again. FASHION_SMALL_DENSE=<model dir>
# (configs/fashion_small_dense.yaml) adds the dense T-Stitch ramp; the *_ARGS variables pass extra flags to each
# stage (e.g. FASHION_FRONTIER_ARGS=--no-inception); with data elsewhere, set data.root in the config and
# FASHION_DATA=<that folder>. On 2 CPU cores this is many hours (about 40 minutes of training, then 24 searches and
# 3 benchmarks); shrink it with FASHION_STEPS / FASHION_BUDGETS / FASHION_SAMPLES.
FASHION_DIR       ?= runs/fashion
FASHION_CONFIG    ?= configs/fashion.yaml
FASHION_STEPS     ?= 10 25 50
FASHION_BUDGETS   ?= 0.25 0.35 0.5 0.7
FASHION_SAMPLES   ?= 1000
FASHION_INCEPTION ?= 1000
FASHION_TRAIN_ARGS    ?=
FASHION_SEARCH_ARGS   ?=
FASHION_FRONTIER_ARGS ?=

fashion: $(STAMP) fashion-data
	$(if $(FORCE),rm -rf $(FASHION_DIR))
	@if [ -f $(FASHION_DIR)/train/model/config.json ]; then \
	  echo "[fashion] train: done before, reused (FORCE=1 redoes it)"; else \
	  echo "[fashion] train ..." && $(PY) train/train_slimmable.py --config $(FASHION_CONFIG) \
	    --output-dir $(FASHION_DIR)/train --resume $(FASHION_TRAIN_ARGS); fi
	@if [ -f $(FASHION_DIR)/search/schedule.json ]; then \
	  echo "[fashion] search: done before, reused (FORCE=1 redoes it)"; else \
	  echo "[fashion] search ..." && $(PY) search/evolve.py --model $(FASHION_DIR)/train/model \
	    --config $(FASHION_CONFIG) --output $(FASHION_DIR)/search/schedule.json --resume $(FASHION_SEARCH_ARGS); fi
	@echo "[fashion] frontier ..." && $(PY) eval/frontier.py --model $(FASHION_DIR)/train/model \
	    --config $(FASHION_CONFIG) --steps $(FASHION_STEPS) --budgets $(FASHION_BUDGETS) \
	    --num-samples $(FASHION_SAMPLES) --inception-samples $(FASHION_INCEPTION) \
	    $(if $(FASHION_SMALL_DENSE),--small-dense $(FASHION_SMALL_DENSE)) \
	    --output-dir $(FASHION_DIR)/frontier $(FASHION_FRONTIER_ARGS)
	@echo "[fashion] done: $(FASHION_DIR)/frontier/frontier.md"

clean-venv:
	rm -rf $(VENV)
