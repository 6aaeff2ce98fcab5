# The two set-up commands of the README. Each creates .venv and installs what it needs.
#   make reproduce   train/reuse the teacher and base student, distil one student, write its record
#   make test        run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install reproduce test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# CPU set-up: torch==2.13.0 first (the CPU wheel), so the unpinned `torch` of the package's
# dependencies is already satisfied and no CUDA wheels are pulled.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/study run --config configs/default.yaml --out results/runs

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) cache
