"""The notebooks: stored without outputs, one literal `parameters` cell each, and every one runs
through papermill in quick mode (tiny real models), leaving records, tables and figures."""

import ast
import json
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


def test_every_notebook_is_known():
    assert {p.stem for p in NOTEBOOKS} == {*GRID_NOTEBOOKS, "paper"}


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
    assert {"quick", "quick_grid", "base", "overrides", "out"} <= names


def _run(name: str, workdir: Path, **parameters) -> None:
    import papermill as pm

    pm.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(workdir / f"{name}.ipynb"),
                        parameters=parameters, cwd=str(REPO), kernel_name="python3", progress_bar=False)


@pytest.mark.slow
def test_notebooks_run_in_quick_mode_and_regenerate_tables_and_figures(tiny_cache, tmp_path):
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
