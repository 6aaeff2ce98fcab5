"""configs/paper/: the paper's run configs and grids build and hold the paper's values, offline.

Nothing here downloads: building a config never touches the hub (pretrained models are only
named), and HF_HUB_OFFLINE is set so that any attempt would fail instead of fetching."""

import subprocess
import sys
from pathlib import Path

import pytest

from study.config import load_config
from study.grid import load_grid

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
HEADLINE = PAPER / "qwen3-8b_to_qwen3-4b-base.yaml"
TEACHERS = {"qwen3-8b": "Qwen/Qwen3-8B", "qwen3-32b": "Qwen/Qwen3-32B"}
STUDENTS = {"qwen3-8b-base": "Qwen/Qwen3-8B-Base", "qwen3-4b-base": "Qwen/Qwen3-4B-Base",
            "qwen3-1.7b": "Qwen/Qwen3-1.7B", "qwen3-0.6b-base": "Qwen/Qwen3-0.6B-Base"}
PAIRS = sorted(PAPER.glob("*.yaml"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_one_config_per_pair():
    assert {p.name for p in PAIRS} == {f"{t}_to_{s}.yaml" for t in TEACHERS for s in STUDENTS}
    assert HEADLINE in PAIRS


@pytest.mark.parametrize("path", PAIRS, ids=lambda p: p.stem)
def test_pair_config_holds_the_paper_values(path):
    cfg = load_config(path)  # validates every field; unknown keys fail
    teacher, student = path.stem.split("_to_")
    assert cfg.teacher.model.pretrained == TEACHERS[teacher]
    assert cfg.base.model.pretrained == STUDENTS[student]
    assert cfg.init == "base"
    # optimiser (paper: AdamW lr 4e-6, wd 0.05, one-cycle 10% warm-up, 2 epochs, batch 16, clip 1.0)
    assert cfg.lr == 4e-6
    assert cfg.weight_decay == 0.05
    assert cfg.warmup == 0.1
    assert cfg.epochs == 2
    assert cfg.batch_size == 16  # examples per optimiser step, whatever grad_accum splits it into
    assert cfg.batch_size % cfg.grad_accum == 0
    assert cfg.grad_clip == 1.0
    assert cfg.cycle_momentum and cfg.lr_div_factor == 25.0 and cfg.lr_final_div_factor == 1e4  # torch's defaults
    # loss (paper: 0.5 CE + 0.5 forward KL, temperature 1), full sequences under P+CoT+A
    assert (cfg.alpha, cfg.loss, cfg.temperature) == (0.5, "forward_kl", 1.0)
    assert (cfg.condition, cfg.lsp, cfg.window, cfg.seed) == ("P+CoT+A", 1.0, "left", 42)
    # corpus: Bespoke-Stratos at the paper's split, rows under 4,096 tokens
    assert cfg.corpus.source == "bespoke_stratos"
    assert (cfg.corpus.train_examples, cfg.corpus.val_examples) == (8000, 1000)
    assert (cfg.corpus.max_tokens, cfg.corpus.split_seed) == (4096, 42)
    # evaluation: AIME24 and AIME25, 64 samples at temperature 0.6, top_p 0.95, 32,768 new tokens
    assert cfg.benchmarks == ("aime24", "aime25")
    assert (cfg.samples, cfg.eval_temperature, cfg.eval_top_p, cfg.max_gen_toks) == (64, 0.6, 0.95, 32768)
    assert cfg.device == "auto"  # cuda where there is one: a fixed cuda would refuse to load here


def test_the_pair_configs_differ_only_in_their_models():
    texts = {p: p.read_text().splitlines() for p in PAIRS}
    strip = lambda lines: [l for l in lines if "Qwen/" not in l and not l.startswith("# Paper scale:")]
    first = strip(texts[HEADLINE])
    assert all(strip(t) == first for t in texts.values())


def test_corpus_switch_documented_in_the_configs_builds():
    cfg = load_config(HEADLINE, ["corpus.source=openthoughts", "corpus.train_examples=40000"])
    assert (cfg.corpus.source, cfg.corpus.train_examples, cfg.corpus.val_examples) == ("openthoughts", 40000, 1000)


@pytest.mark.parametrize("name, cells", [("supervision", 6), ("truncation", 13)])
def test_paper_grids_expand_on_the_headline_pair(name, cells):
    grid = load_grid(PAPER / "grids" / f"{name}.yaml")
    assert len(grid.cells) == cells
    assert {c.seed for c in grid.cells} == {42}  # the paper ran one seed
    for cell in grid.cells:
        assert cell.config.teacher.model.pretrained == "Qwen/Qwen3-8B"
        assert cell.config.base.model.pretrained == "Qwen/Qwen3-4B-Base"
        assert cell.config.lr == 4e-6 and cell.config.batch_size == 16
    if name == "supervision":
        assert sorted(c.config.condition for c in grid.cells) == sorted(["A", "P+A", "CoT", "CoT+A", "P+CoT", "P+CoT+A"])
    else:
        plain = sorted(c.config.lsp for c in grid.cells if not c.config.keep_answer)
        assert plain == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.mark.parametrize("name", ["supervision", "truncation"])
def test_notebook_grids_take_the_paper_base(name):
    # What the notebooks do with `-p base configs/paper/...`: the study's grid on the paper's pair.
    grid = load_grid(ROOT / "configs" / "grids" / f"{name}.yaml", base=HEADLINE)
    assert all(c.config.base.model.pretrained == "Qwen/Qwen3-4B-Base" for c in grid.cells)
    assert all(c.config.corpus.source == "bespoke_stratos" for c in grid.cells)


def test_dry_run_lists_the_paper_grid_offline(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-m", "study.cli", "grid", str(PAPER / "grids" / "truncation.yaml"),
                          "--out", str(tmp_path / "runs"), "--dry-run"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 13 and all("pending" in line for line in lines)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # reads only
    assert not (tmp_path / "hf").exists()  # nothing fetched
