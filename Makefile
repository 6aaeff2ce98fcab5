# The two set-up commands of the README. Each creates .venv and installs what it needs.
#   make reproduce   the whole default study through the notebooks, into results/reproduced/
#                    (records in runs/, grid summaries, executed notebooks, tables, figures),
#                    then `study compare results/runs $(OUT)/runs`: per variant, identical,
#                    within the seed CI or not (exit status 1 on a disagreement or a missing
#                    variant). Nothing committed is touched. It resumes: cells whose record is
#                    there are skipped.
#   make test        run the test suite
# Also: make quick (every notebook on the quick grid's small budget, into results/quick/),
#       make reproduce JOBS=N (N cells at once; default 2. Every study cell runs on one thread,
#       set in its grid file, so JOBS changes the wall time, never a run id),
#       make reproduce OUT=DIR (another folder),
#       make paper (redraw the tables and figures from the committed records in results/runs,
#       in about 20 s: byte-stable, so the committed paper_tables/ and figures/ stay as they are
#       unless the records or the code changed; the executed notebook goes to results/paper/).
#       make release (retrain the released tokenizer, teachers and base students and write them
#       into artefacts/: `study pretrain --force --release`, about 22 min on 2 cores, plus about
#       50 min for the light-touch contrast's base student).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install reproduce paper quick release test clean

JOBS  ?= 2
OUT   ?= results/reproduced
GRID_NOTEBOOKS := supervision truncation halves_controls
PAPERMILL = $(BIN)/papermill --cwd . -k python3

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# CPU set-up: torch==2.13.0 first (the CPU wheel), so the unpinned `torch` of the package's
# dependencies is already satisfied and no CUDA wheels are pulled.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Each grid notebook runs its grids (cells whose record exists are skipped, so an interrupted
# reproduce resumes), then `paper` regenerates every table and figure from the records.
reproduce: $(STAMP)
	mkdir -p $(OUT)/notebooks
	for nb in $(GRID_NOTEBOOKS); do \
	  $(PAPERMILL) notebooks/$$nb.ipynb $(OUT)/notebooks/$$nb.ipynb -p jobs $(JOBS) -p out $(OUT)/runs || exit 1; done
	$(PAPERMILL) notebooks/paper.ipynb $(OUT)/notebooks/paper.ipynb -p out $(OUT)/runs \
	  -p tables_dir $(OUT)/paper_tables -p figures_dir $(OUT)/figures
	$(BIN)/study compare results/runs $(OUT)/runs

paper: $(STAMP)
	mkdir -p results/paper
	$(PAPERMILL) notebooks/paper.ipynb results/paper/paper.ipynb -p out results/runs \
	  -p tables_dir paper_tables -p figures_dir figures

quick: $(STAMP)
	mkdir -p results/quick/notebooks
	for nb in $(GRID_NOTEBOOKS); do \
	  $(PAPERMILL) notebooks/$$nb.ipynb results/quick/notebooks/$$nb.ipynb -p quick True \
	    -p out results/quick/runs -p jobs $(JOBS) || exit 1; done
	$(PAPERMILL) notebooks/paper.ipynb results/quick/notebooks/paper.ipynb -p quick True \
	  -p out results/quick/runs -p tables_dir results/quick/paper_tables -p figures_dir results/quick/figures

# The study's artefacts (every config of configs/grids: default and late-answer corpus, the
# light-touch base), retrained with their pinned thread count and released with their
# SHA256SUMS; commit artefacts/ after.
release: $(STAMP)
	$(BIN)/study pretrain --force --release

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) cache
