# make test: create/refresh .venv from requirements.lock (+ this package, editable), then run the tests.
# make demo: the same set-up, then the whole pipeline on the embedded MNIST digits into runs/demo/.
# make gpu-check: the same set-up, then eval/gpu_check.py (a few minutes on a CUDA GPU; "no CUDA: skipped" without).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ddsm-installed

export HF_HUB_OFFLINE = 1

.PHONY: venv test demo gpu-check clean-venv

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

clean-venv:
	rm -rf $(VENV)
