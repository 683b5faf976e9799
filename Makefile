# Two entry points for a newcomer: `make quickstart` (set up, then a small campaign) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A GPU user pre-installs their own torch into .venv; otherwise this machine's CPU build is taken.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test test-slow quickstart clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

test: venv
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

# The main job: cache build + evolution + held-out report on the shared CIFAR-10 data.
quickstart: venv
	rm -rf runs/quickstart
	$(BIN)/zcp evolve experiments/configs/quickstart.toml --out runs/quickstart

clean:
	rm -rf $(VENV) build *.egg-info
