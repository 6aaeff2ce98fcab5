"""The notebooks: stored without outputs, one literal `parameters` cell each that papermill parses
cleanly, and every one runs through papermill in quick mode (tiny real models), leaving records,
tables and figures. What a user runs by default writes nothing committed: `make quick` and
`make reproduce` write under their folders, and `make paper` redraws the committed tables and
figures byte for byte."""

import ast
import json
import logging
import re
import shlex
import subprocess
from dataclasses import asdict
from pathlib import Path

import nbformat
import pytest
import yaml

from study import records
from tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
GRID_NOTEBOOKS = ["supervision", "truncation", "halves_controls"]


# What each notebook's parameters cell must define (besides its own extras).
REQUIRED = {**{name: {"quick", "quick_grid", "base", "overrides", "out", "jobs"} for name in GRID_NOTEBOOKS},
            "paper": {"quick", "quick_grid", "base", "overrides", "out", "tables_dir", "figures_dir"},
            "ablation": {"grid", "out", "reference", "quick", "quick_grid", "base", "overrides", "jobs",
                         "tables_dir", "figures_dir"},
            "explore": {"records_dir", "filters", "reference", "run", "curves", "example_config", "example_set",
                        "widgets"}}


def test_every_notebook_is_known():
    assert {p.stem for p in NOTEBOOKS} == set(REQUIRED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_without_outputs_with_one_literal_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear outputs before committing"
    for cell in code:  # a syntax error would otherwise surface only after a grid has run
        ast.parse(cell.source)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    tree = ast.parse(params[0].source)
    names = set()
    for stmt in tree.body:  # papermill injects a new cell after this one: defaults must be literals
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
        ast.literal_eval(stmt.value)
        names.add(stmt.targets[0].id)
    assert REQUIRED[path.stem] <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_infers_every_parameter_with_its_type(path, caplog):
    """papermill --help-notebook (and its injection) reads every line of the parameters cell:
    a second "=" on a line (a "key=value" in a comment) makes it skip the parameter."""
    import papermill as pm

    nb = nbformat.read(path, as_version=4)
    source = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = [stmt.targets[0].id for stmt in ast.parse(source).body]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        inferred = pm.inspect_notebook(str(path))
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert list(inferred) == names
    for name, param in inferred.items():
        assert param["inferred_type_name"] != "None", f"{path.stem}: {name} has no type comment"
        assert ast.literal_eval(param["default"]) == ast.literal_eval(
            next(stmt.value for stmt in ast.parse(source).body if stmt.targets[0].id == name))


def _papermill_calls(target: str) -> list[tuple[str, str, dict]]:
    """What ``make TARGET`` runs through papermill (read from ``make -n``, nothing is run):
    (notebook, executed copy, parameters: the notebook's defaults updated by its -p values)."""
    import papermill as pm

    script = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=REPO, capture_output=True, text=True, check=True).stdout
    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        loop = re.search(r"for nb in ([\w ]+); do (.*?)\|\| exit 1; done", line)
        for command in ([loop.group(2).replace("$nb", nb) for nb in loop.group(1).split()] if loop else [line]):
            words = shlex.split(command)
            if not words or not words[0].endswith("papermill"):
                continue
            positional, given, i = [], {}, 1
            while i < len(words):
                if words[i] == "-p":
                    given[words[i + 1]] = words[i + 2]
                    i += 3
                elif words[i] in ("--cwd", "-k"):
                    i += 2
                else:
                    positional.append(words[i])
                    i += 1
            notebook, executed = positional
            params = {name: ast.literal_eval(p["default"]) for name, p in pm.inspect_notebook(str(REPO / notebook)).items()}
            calls.append((notebook, executed, {**params, **given}))
    return calls


PATH_PARAMETERS = ("out", "tables_dir", "figures_dir")  # what a notebook writes to (besides the cache)


@pytest.mark.parametrize("target, folder", [("quick", "results/quick"), ("reproduce", "results/reproduced")])
def test_make_quick_and_reproduce_write_only_under_their_folder(target, folder):
    calls = _papermill_calls(target)
    assert {Path(nb).stem for nb, _, _ in calls} == {*GRID_NOTEBOOKS, "paper"}
    for notebook, executed, params in calls:
        for where in [executed, *(params[p] for p in PATH_PARAMETERS if p in params)]:
            assert Path(where).is_relative_to(folder), f"make {target}: {notebook} writes to {where}"
    assert subprocess.run(["git", "check-ignore", "-q", f"{folder}/run.json"], cwd=REPO).returncode == 0
    if target == "reproduce":  # and it ends by comparing the reproduction with the committed study
        script = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=REPO, capture_output=True,
                                text=True).stdout  # under `make test` a nested make would name its directory
        lines = [line for line in script.strip().splitlines() if not line.startswith("make")]
        assert lines[-1].endswith("study compare results/runs results/reproduced/runs")


def test_grid_notebooks_by_default_write_no_committed_folder():
    for nb, default in ((nb, ast.literal_eval(p["default"])) for nb in GRID_NOTEBOOKS
                        for name, p in __import__("papermill").inspect_notebook(
                            str(REPO / "notebooks" / f"{nb}.ipynb")).items() if name == "out"):
        assert subprocess.run(["git", "check-ignore", "-q", f"{default}/run.json"], cwd=REPO).returncode == 0, (nb, default)


def test_make_paper_writes_the_committed_tables_and_figures_and_an_ignored_notebook():
    [(notebook, executed, params)] = _papermill_calls("paper")
    assert notebook == "notebooks/paper.ipynb" and params["out"] == "results/runs"
    assert (params["tables_dir"], params["figures_dir"]) == ("paper_tables", "figures")
    assert subprocess.run(["git", "check-ignore", "-q", executed], cwd=REPO).returncode == 0


def test_the_fast_path_redraws_the_committed_tables_and_figures_byte_for_byte(tiny_cache, tokenizer, tmp_path):
    """`make paper` on the committed records leaves `git status` clean: the same tables, and
    figures without timestamps. (The tokenizer is trained afresh in the session's cache, as in
    a fresh clone; it is deterministic.)"""
    tables, figures = tmp_path / "paper_tables", tmp_path / "figures"
    _run("paper", tmp_path, out=str(REPO / "results" / "runs"), overrides=[f"cache_dir={tiny_cache}"],
         tables_dir=str(tables), figures_dir=str(figures))
    for drawn, committed in ((tables, "paper_tables"), (figures, "figures")):
        tracked = subprocess.run(["git", "ls-files", committed], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.split()
        assert sorted(p.name for p in drawn.iterdir()) == sorted(Path(t).name for t in tracked)
        for name in tracked:
            assert (drawn / Path(name).name).read_bytes() == (REPO / name).read_bytes(), (
                f"{name} is not what the committed records draw now: run `make paper` and commit the result")


def _run(name: str, workdir: Path, **parameters) -> None:
    import papermill as pm

    pm.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(workdir / f"{name}.ipynb"),
                        parameters=parameters, cwd=str(REPO), kernel_name="python3", progress_bar=False)


@pytest.mark.slow
def test_notebooks_run_in_quick_mode_and_regenerate_tables_and_figures(tiny_cache, tmp_path):
    before = _git_status()  # what make quick does, on tiny models: it writes nothing committed
    base = asdict(tiny_config(tiny_cache))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(base))
    # The quick grid for tiny models: one seed, the tiny budget unchanged.
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump({"name": "quick", "seeds": [1], "set": {}}))
    common = {"quick": True, "quick_grid": str(tmp_path / "quick.yaml"), "base": str(tmp_path / "tiny.yaml"),
              "out": str(tmp_path / "runs")}
    for name in GRID_NOTEBOOKS:
        _run(name, tmp_path, **common)
    df = records.load(tmp_path / "runs")
    # supervision, truncation (lsp 1.0 shared) with its three lead spans + ending, halves (left
    # shared), controls
    assert len(df) == 6 + 9 + 3 + 2 + 5
    for name in ("supervision", "truncation", "halves", "controls"):
        summary = json.loads((tmp_path / "runs" / f"{name}.grid.json").read_text())
        assert summary["failed"] == 0

    _run("paper", tmp_path, **common, tables_dir=str(tmp_path / "tables"), figures_dir=str(tmp_path / "figures"))
    for table in ("supervision", "truncation", "halves_controls", "ending", "significance", "significance_first_boxed"):
        for ext in ("md", "tex", "csv"):
            assert (tmp_path / "tables" / f"{table}.{ext}").stat().st_size > 0
    for fig in ("accuracy_vs_lsp", "compute_quality", "supervision", "halves", "first_answer_position",
                "example_sequence"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "figures" / f"{fig}.{ext}").stat().st_size > 0
    executed = nbformat.read(tmp_path / "paper.ipynb", as_version=4)
    assert any(o.get("output_type") == "display_data" for c in executed.cells if c.cell_type == "code"
               for o in c.outputs)

    # A second run of a grid notebook finds every record and trains nothing.
    _run("supervision", tmp_path, **common)
    summary = json.loads((tmp_path / "runs" / "supervision.grid.json").read_text())
    assert summary["ran"] == 0 and summary["skipped"] == 6
    assert _git_status() == before


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout


def _outputs(path: Path) -> list[dict]:
    executed = nbformat.read(path, as_version=4)
    return [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]


def test_explore_notebook_browses_runs_generations_curves_and_an_example(fixture_records_dir, tiny_cache, tokenizer,
                                                                         tmp_path):
    """Through papermill on the fixture records (no ipywidgets there: plain tables)."""
    before = _git_status()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(asdict(tiny_config(tiny_cache))))
    _run("explore", tmp_path, records_dir=str(fixture_records_dir), filters={"lsp": [0.5, 1.0]},
         example_config=str(tmp_path / "tiny.yaml"), example_set={"lsp": 0.5, "condition": "CoT"}, generations=3)
    outputs = _outputs(tmp_path / "explore.ipynb")
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    markdown = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    html = "".join(o["data"].get("text/html", "") for o in outputs if "data" in o)
    # lsp 0.5 (three windows, the token-budget and late-answer variants, keep_answer) and lsp 1.0 runs
    assert "pass the filters" in text and "lsp=0.5, window=right" in markdown and "lsp=0.1" not in markdown
    assert "answer (paper)" in html and "right (first box)" in html  # the generations beside the gold answer
    assert "condition=CoT lsp=0.5" in text and "supervised: P" in text  # study show's rendering
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # loss curves, the example
    assert _git_status() == before


@pytest.mark.slow
def test_ablation_notebook_runs_any_grid_with_its_reference_and_draws_it(tiny_cache, tmp_path):
    """A grid the package has never seen (the KD temperature at 2), in quick mode on tiny models with
    two seeds: the notebook adds the reference run, tabulates, tests and draws, and writes only
    where it is told."""
    before = _git_status()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(asdict(tiny_config(tiny_cache))))
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump({"name": "quick", "seeds": [1, 2], "set": {}}))
    (tmp_path / "temperature.yaml").write_text(yaml.safe_dump(
        {"name": "temperature", "description": "KD temperature", "base": "tiny.yaml", "seeds": [1],
         "axes": {"temperature": [2.0]}}))
    params = {"grid": str(tmp_path / "temperature.yaml"), "out": str(tmp_path / "runs"), "quick": True,
              "quick_grid": str(tmp_path / "quick.yaml"), "tables_dir": str(tmp_path / "tables"),
              "figures_dir": str(tmp_path / "figures")}
    _run("ablation", tmp_path, **params)
    df = records.load(tmp_path / "runs")
    assert sorted(zip(df["config.temperature"], df["config.seed"])) == [(1.0, 1), (1.0, 2), (2.0, 1), (2.0, 2)]
    table = (tmp_path / "tables" / "ablation_temperature.csv").read_text()
    assert table.splitlines()[1].startswith("reference,") and table.splitlines()[2].startswith("temperature=2.0,")
    assert "paired t-test over seeds" in table
    for ext in ("png", "pdf", ):
        assert (tmp_path / "figures" / f"ablation_temperature.{ext}").stat().st_size > 0
    assert any("image/png" in o.get("data", {}) for o in _outputs(tmp_path / "ablation.ipynb"))
    summary = json.loads((tmp_path / "runs" / "temperature.grid.json").read_text())
    assert summary["ran"] == 4 and summary["failed"] == 0
    assert _git_status() == before
