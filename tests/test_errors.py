"""Bad input on the command line: every case ends with exit status 2 and one line on stderr
that names the key (or flag, or file) and what is valid, with no traceback, and the
config-level ones fail before any work: neither the cache folder nor the output folder is
created. The checks that need the run itself (device, output folder, nothing supervised, an
existing record) are in a second test and must still come before any training."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from study.cli import main
from tiny import tiny_config

RUN = "run.yaml"


def R(id, *sets, expect, command="run", index=None):
    """A `study <command>` of the default config (nothing in the file) with --set overrides."""
    argv = [command, "--config", "{tmp}/" + RUN]
    if command == "run":
        argv += ["--out", "{out}"]
    if index is not None:
        argv += ["--index", str(index)]
    argv += ["--set", "cache_dir={cache}"]
    for s in sets:
        argv += ["--set", s]
    return pytest.param(argv, {RUN: ""}, expect, id=id)


def F(id, text, *sets, expect, command="run"):
    """`study <command>` of a config file with ``text`` (None: no file; "/": a folder)."""
    files = {} if text is None else {RUN: text}
    argv = [command, "--config", "{tmp}/" + RUN] + (["--out", "{out}"] if command == "run" else [])
    for s in sets:
        argv += ["--set", s]
    return pytest.param(argv, files, expect, id=id)


def G(id, spec, *args, expect, base="{}\n", quick=None):
    """`study grid` of a grid file (a mapping, dumped with base: base.yaml, or raw text)."""
    text = spec if isinstance(spec, str) else yaml.safe_dump({"base": "base.yaml", **spec}, sort_keys=False)
    files = {"g.yaml": text, "base.yaml": base}
    if quick is not None:
        files["quick.yaml"] = quick
    argv = ["grid", "{tmp}/g.yaml", "--out", "{out}", "--set", "cache_dir={cache}", *args]
    return pytest.param(argv, files, expect, id=id)


def A(id, argv, *, expect, files=None):
    """Raw arguments (argparse-level mistakes)."""
    return pytest.param(list(argv), files or {RUN: ""}, expect, id=id)


AXES = {"axes": {"lsp": [0.5]}}

BAD_INPUTS = [
    # --- what the paper varies
    R("lsp-zero", "lsp=0", expect=["lsp", "(0, 1]"]),
    R("lsp-above-one", "lsp=1.5", expect=["lsp", "(0, 1]", "1.5"]),
    R("lsp-negative", "lsp=-0.1", expect=["lsp", "(0, 1]"]),
    R("lsp-not-a-number", "lsp=abc", expect=["lsp must be a number", "'abc'"]),
    R("lsp-bool", "lsp=true", expect=["lsp must be a number", "True"]),
    R("lsp-nan", "lsp=.nan", expect=["lsp", "finite"]),
    R("condition-unknown", "condition=B", expect=["condition", "'B'", "P+CoT+A"]),
    R("window-unknown", "window=top", expect=["window", "left, middle, right"]),
    R("cut-after-think-int", "cut_after_think=2", expect=["cut_after_think must be true or false"]),
    R("keep-answer-right-window", "keep_answer=true", "window=right",
      expect=["keep_answer keeps the ending of a lead span", "window left"]),
    R("keep-answer-with-cut", "keep_answer=true", "cut_after_think=true",
      expect=["keep_answer", "cut_after_think false"]),
    R("random-mask-one", "random_mask=1", expect=["random_mask", "[0, 1)"]),
    R("random-mask-negative", "random_mask=-0.1", expect=["random_mask", "[0, 1)"]),
    # --- loss
    R("alpha-above-one", "alpha=1.5", expect=["alpha", "[0, 1]"]),
    R("alpha-negative", "alpha=-1", expect=["alpha", "[0, 1]"]),
    R("loss-unknown", "loss=mse", expect=["loss", "'mse'", "forward_kl"]),
    R("temperature-zero", "temperature=0", expect=["temperature", "> 0"]),
    R("temperature-negative", "temperature=-1", expect=["temperature", "> 0"]),
    R("beta-zero", "beta=0", expect=["beta", "(0, 1)"]),
    R("beta-one", "beta=1", expect=["beta", "(0, 1)"]),
    # --- optimiser
    R("lr-zero", "lr=0", expect=["lr", "> 0"]),
    R("lr-negative", "lr=-1e-3", expect=["lr", "> 0"]),
    R("lr-word", "lr=fast", expect=["lr must be a number", "'fast'"]),
    R("lr-infinite", "lr=.inf", expect=["lr", "finite"]),
    R("weight-decay-negative", "weight_decay=-0.1", expect=["weight_decay", ">= 0"]),
    R("warmup-one", "warmup=1", expect=["warmup", "[0, 1)"]),
    R("warmup-negative", "warmup=-0.1", expect=["warmup", "[0, 1)"]),
    R("grad-clip-zero", "grad_clip=0", expect=["grad_clip", "> 0"]),
    R("lr-div-factor-zero", "lr_div_factor=0", expect=["lr_div_factor", "> 0"]),
    R("cycle-momentum-word", "cycle_momentum=sometimes", expect=["cycle_momentum must be true or false"]),
    R("batch-size-zero", "batch_size=0", expect=["batch_size must be an integer >= 1, got 0"]),
    R("batch-size-float", "batch_size=2.5", expect=["batch_size must be an integer", "2.5"]),
    R("batch-size-not-multiple", "batch_size=10", "grad_accum=3", expect=["batch_size 10", "grad_accum 3"]),
    R("batch-size-above-corpus", "batch_size=4000", expect=["batch_size 4000", "corpus.train_examples"]),
    R("grad-accum-zero", "grad_accum=0", expect=["grad_accum must be an integer >= 1, got 0"]),
    R("epochs-zero", "epochs=0", expect=["epochs must be an integer >= 1, got 0"]),
    R("epochs-bool", "epochs=true", expect=["epochs must be an integer", "True"]),
    R("seed-negative", "seed=-1", expect=["seed", "[0, 2**32 - 1]"]),
    R("seed-too-large", "seed=4294967296", expect=["seed", "[0, 2**32 - 1]"]),
    R("seed-word", "seed=abc", expect=["seed must be an integer"]),
    # --- data and models
    R("init-unknown", "init=random", expect=["init", "'random'", "base, scratch"]),
    R("corpus-train-examples-zero", "corpus.train_examples=0", expect=["corpus.train_examples", ">= 1"]),
    R("corpus-test-examples-negative", "corpus.test_examples=-1", expect=["corpus.test_examples", ">= 0"]),
    R("corpus-too-many-problems", "corpus.max_ops=2", "corpus.train_examples=30000",
      expect=["corpus.train_examples", "lower train_examples or raise max_ops"]),
    R("corpus-layout-unknown", "corpus.layout=middle", expect=["corpus.layout", "early, late"]),
    R("corpus-min-ops-zero", "corpus.min_ops=0", expect=["corpus.min_ops", "1 <= min_ops <= max_ops"]),
    R("corpus-min-above-max-ops", "corpus.min_ops=4", "corpus.max_ops=3", expect=["corpus.min_ops", "<= max_ops"]),
    R("corpus-min-above-max-verify", "corpus.min_verify=4", expect=["corpus.min_verify", "<= max_verify"]),
    R("corpus-min-above-max-explore", "corpus.min_explore=4", expect=["corpus.min_explore", "<= max_explore"]),
    R("corpus-negative-explore", "corpus.min_explore=-1", expect=["corpus.min_explore", "0 <= min_explore"]),
    R("corpus-modulus", "corpus.modulus=11", expect=["corpus.modulus", "[2, 10]"]),
    R("corpus-seed-word", "corpus.seed=x", expect=["corpus.seed must be an integer"]),
    R("corpus-seed-negative", "corpus.seed=-1", expect=["corpus.seed", ">= 0"]),
    R("corpus-unknown-key", "corpus.foo=1", expect=["corpus.foo", "valid keys under corpus"]),
    R("corpus-source-unknown", "corpus.source=gsm8k", expect=["corpus.source", "'gsm8k'", "synthetic, openthoughts"]),
    R("corpus-path-on-synthetic", "corpus.path=/data/x", expect=["corpus.path only applies to the hub sources"]),
    R("corpus-hub-without-pretrained", "corpus.source=sky_t1", "benchmarks=[aime24]",
      expect=["corpus.source 'sky_t1'", "teacher.model.pretrained and base.model.pretrained"]),
    R("corpus-hub-without-benchmarks", "corpus.source=sky_t1", "teacher.model.pretrained=Qwen/Qwen3-8B",
      "base.model.pretrained=Qwen/Qwen3-1.7B-Base", expect=["no synthetic test split", "--set benchmarks=[aime24]"]),
    R("corpus-hub-with-synthetic-knob", "corpus.source=sky_t1", "corpus.layout=late", "benchmarks=[aime24]",
      "teacher.model.pretrained=Qwen/Qwen3-8B", "base.model.pretrained=Qwen/Qwen3-1.7B-Base",
      expect=["corpus.layout only applies to source synthetic"]),
    R("pretrained-teacher-only", "corpus.source=sky_t1", "benchmarks=[aime24]", "teacher.model.pretrained=Qwen/Qwen3-8B",
      expect=["teacher.model.pretrained is set but base.model.pretrained is not", "set both or neither"]),
    R("pretrained-on-synthetic", "teacher.model.pretrained=Qwen/Qwen3-8B", "base.model.pretrained=Qwen/Qwen3-1.7B-Base",
      expect=["need a hub corpus (corpus.source"]),
    R("revision-without-pretrained", "base.model.revision=main",
      expect=["base.model.revision 'main' only applies to a pretrained model"]),
    R("pretrained-folder-missing", "corpus.source=sky_t1", "corpus.path={tmp}", "benchmarks=[aime24]",
      "teacher.model.pretrained={tmp}/no_teacher", "base.model.pretrained={tmp}/no_base",
      expect=["base.model.pretrained", "no_base': cannot load its tokenizer"]),
    R("corpus-not-a-mapping", "corpus=late", expect=["corpus must be a mapping"]),
    R("tokenizer-vocab-small", "tokenizer.vocab_size=50", expect=["tokenizer.vocab_size", ">= 100"]),
    R("tokenizer-vocab-word", "tokenizer.vocab_size=big", expect=["tokenizer.vocab_size must be an integer"]),
    R("teacher-steps-zero", "teacher.steps=0", expect=["teacher.steps must be an integer >= 1, got 0"]),
    R("teacher-batch-size-zero", "teacher.batch_size=0", expect=["teacher.batch_size", ">= 1"]),
    R("teacher-lr-zero", "teacher.lr=0", expect=["teacher.lr", "> 0"]),
    R("teacher-eval-examples-zero", "teacher.eval_examples=0", expect=["teacher.eval_examples", ">= 1"]),
    R("teacher-eval-max-gen-toks-zero", "teacher.eval_max_gen_toks=0", expect=["teacher.eval_max_gen_toks"]),
    R("teacher-one-op-word", "teacher.one_op=1", expect=["teacher.one_op must be true or false"]),
    R("teacher-heads-not-multiple", "teacher.model.num_attention_heads=3", "teacher.model.num_key_value_heads=2",
      expect=["teacher.model.num_attention_heads 3", "num_key_value_heads 2"]),
    R("teacher-head-dim-odd", "teacher.model.head_dim=15", expect=["teacher.model.head_dim", "even"]),
    R("teacher-hidden-size-zero", "teacher.model.hidden_size=0", expect=["teacher.model.hidden_size", ">= 1"]),
    R("teacher-not-a-mapping", "teacher=5", expect=["teacher must be a mapping"]),
    R("teacher-model-unknown-key", "teacher.model.width=3", expect=["teacher.model.width", "hidden_size"]),
    R("base-too-many-one-op-problems", "base.train_examples=1000", expect=["base.train_examples 1000", "300"]),
    R("base-batch-above-examples", "base.batch_size=400", expect=["base.batch_size 400", "train_examples 300"]),
    R("base-max-position-small", "base.model.max_position_embeddings=100",
      expect=["base.eval_max_gen_toks 256", "max_position_embeddings 100"]),
    R("teacher-cache-word", "teacher_cache=maybe", expect=["teacher_cache must be true or false"]),
    R("teacher-cache-mode-unknown", "teacher_cache_mode=fast", expect=["teacher_cache_mode", "auto, exact, topk"]),
    R("teacher-cache-topk-zero", "teacher_cache_topk=0", expect=["teacher_cache_topk", ">= 1"]),
    # --- evaluation, measurement, infrastructure
    R("eval-examples-zero", "eval_examples=0", expect=["eval_examples must be an integer >= 1, got 0"]),
    R("eval-examples-negative", "eval_examples=-3", expect=["eval_examples", ">= 1", "-3"]),
    R("eval-examples-above-test-split", "eval_examples=500", expect=["eval_examples 500", "corpus.test_examples 200"]),
    R("max-gen-toks-zero", "max_gen_toks=0", expect=["max_gen_toks must be an integer >= 1, got 0"]),
    R("max-gen-toks-above-context", "max_gen_toks=600", expect=["max_gen_toks 600", "max_position_embeddings 512"]),
    R("eval-batch-size-zero", "eval_batch_size=0", expect=["eval_batch_size", ">= 1"]),
    R("benchmarks-unknown", "benchmarks=[aime23]", expect=["benchmarks", "'aime23'", "aime24, aime25, math500, gpqa_diamond"]),
    R("benchmarks-not-a-list", "benchmarks=aime24", expect=["benchmarks must be a list", "'aime24'"]),
    R("benchmarks-twice", "benchmarks=[aime24, aime24]", expect=["benchmarks", "twice"]),
    R("benchmark-dir-without-benchmarks", "benchmark_dir=/data/bench", expect=["benchmark_dir", "benchmarks is empty"]),
    R("samples-zero", "samples=0", expect=["samples must be an integer >= 1, got 0"]),
    R("samples-greedy", "samples=8", expect=["samples 8", "eval_temperature 0"]),  # n copies of one greedy generation
    R("eval-temperature-negative", "eval_temperature=-0.5", expect=["eval_temperature", ">= 0"]),
    R("eval-top-p-zero", "eval_top_p=0", expect=["eval_top_p", "(0, 1]"]),
    R("eval-top-p-above-one", "eval_top_p=1.5", expect=["eval_top_p", "(0, 1]", "1.5"]),
    R("eval-backend-unknown", "eval_backend=tgi", expect=["eval_backend", "'tgi'", "hf, vllm"]),
    R("profile-steps-zero", "profile_steps=0", expect=["profile_steps must be an integer >= 1, got 0"]),
    R("attn-implementation-unknown", "attn_implementation=flash", expect=["attn_implementation", "eager, sdpa"]),
    R("device-unknown", "device=gpu", expect=["device", "'gpu'", "auto, cpu, cuda, cuda:N"]),
    R("device-bad-index", "device=cuda:x", expect=["device", "cuda:N"]),
    R("threads-negative", "threads=-1", expect=["threads", ">= 0"]),
    R("save-student-int", "save_student=2", expect=["save_student must be true or false"]),
    R("cache-dir-empty", 'cache_dir=""', expect=["cache_dir", "empty"]),
    # --- the --set syntax
    R("unknown-key", "lps=0.5", expect=["lps", "did you mean lsp"]),
    R("set-without-equals", "lsp0.5", expect=["'lsp0.5'", "key=value"]),
    R("set-empty-key", "=0.5", expect=["'=0.5'", "config key"]),
    R("set-malformed-yaml", "lsp=[0.5", expect=["lsp=[0.5", "not valid YAML"]),
    R("set-into-scalar", "lsp.x=1", expect=["lsp"]),
    # --- show and corpus-stats
    R("show-nothing-in-corpus", "corpus.train_examples=0", command="show", expect=["corpus.train_examples"]),
    R("show-index-negative", command="show", index=-1, expect=["--index -1", "0 .. 3199"]),
    R("show-index-beyond-split", command="show", index=5000, expect=["--index 5000", "corpus.train_examples"]),
    R("corpus-stats-nothing-in-corpus", "corpus.train_examples=0", command="corpus-stats",
      expect=["corpus.train_examples", ">= 1"]),
    R("corpus-stats-bad-layout", "corpus.layout=x", command="corpus-stats", expect=["corpus.layout"]),
    # --- config files
    F("config-missing", None, expect=["run.yaml", "does not exist"]),
    F("config-is-a-list", "- lsp\n- 0.5\n", expect=["run.yaml", "must be a mapping", "list"]),
    F("config-is-a-scalar", "hello\n", expect=["run.yaml", "must be a mapping", "str"]),
    F("config-malformed-yaml", "lsp: [0.5\n", expect=["run.yaml", "not valid YAML", "line"]),
    F("config-unknown-key", "lsp: 0.5\nfoo: 1\n", expect=["foo", "valid keys"]),
    F("config-bad-value", "lsp: 2\n", expect=["lsp", "(0, 1]"]),
    F("config-nested-not-a-mapping", "corpus: late\n", expect=["corpus must be a mapping"]),
    F("corpus-stats-config-missing", None, command="corpus-stats", expect=["run.yaml", "does not exist"]),
    # --- argparse
    A("run-without-config", ["run", "--out", "{out}"], expect=["study run", "--config"]),
    A("run-without-out", ["run", "--config", "{tmp}/run.yaml"], expect=["study run", "--out"]),
    A("run-unknown-flag", ["run", "--config", "{tmp}/run.yaml", "--out", "{out}", "--fast"],
      expect=["unrecognized arguments", "--fast"]),
    A("unknown-command", ["train"], expect=["invalid choice", "'train'"]),
    A("show-index-word", ["show", "--config", "{tmp}/run.yaml", "--index", "two"], expect=["--index", "'two'"]),
    A("grid-jobs-word", ["grid", "{tmp}/g.yaml", "--out", "{out}", "--jobs", "two"], expect=["--jobs", "'two'"]),
    # --- grids
    G("grid-jobs-zero", AXES, "--jobs", "0", expect=["--jobs", "at least 1"]),
    G("grid-seeds-scalar", {**AXES, "seeds": 42}, expect=["seeds must be a non-empty list of integers", "42"]),
    G("grid-seeds-empty", {**AXES, "seeds": []}, expect=["seeds must be a non-empty list"]),
    G("grid-seeds-word", {**AXES, "seeds": [1, "a"]}, expect=["seeds must be a non-empty list of integers"]),
    G("grid-seed-negative", {**AXES, "seeds": [-1]}, expect=["seeds must be a non-empty list of integers in [0, 2**32 - 1]", "[-1]"]),
    G("grid-base-is-a-list", AXES, base="- lsp\n- 0.5\n", expect=["base.yaml", "must be a run config", "list"]),
    G("grid-base-missing", {"base": "nope.yaml", **AXES}, expect=["nope.yaml", "does not exist"]),
    G("grid-base-bad-value", AXES, base="epochs: 0\n", expect=["base.yaml (the base config", "epochs must be an integer >= 1"]),
    G("grid-file-is-a-list", "- lsp\n", expect=["g.yaml", "a grid file is a mapping"]),
    G("grid-file-malformed", "axes: [\n", expect=["g.yaml", "not valid YAML"]),
    G("grid-unknown-key", {**AXES, "sets": {}}, expect=["unknown grid key(s) sets"]),
    G("grid-axis-not-a-list", {"axes": {"lsp": 0.5}}, expect=["axis lsp", "non-empty list"]),
    G("grid-cell-bad-value", {"axes": {"lsp": [0.5, 1.5]}}, expect=["cell 'lsp=1.5'", "lsp must be in (0, 1]"]),
    G("grid-cell-not-a-mapping", {"cells": [{"lsp": 0.5}]}, expect=["cell 1", "label, set"]),
    G("grid-cell-unknown-key", {"cells": [{"set": {"colour": 1}}]}, expect=["colour"]),
    G("grid-no-cells", {}, expect=["the grid has no cells"]),
    G("grid-set-bad", AXES, "--set", "lsp=2", expect=["--set", "lsp must be in (0, 1]"]),
    G("grid-set-not-a-mapping", {**AXES, "set": [1]}, expect=["set must be a mapping"]),
    G("grid-name-with-slash", {**AXES, "name": "../x"}, expect=["name '../x'", "no '/'"]),
    G("grid-quick-is-a-list", AXES, "--quick", quick="- 1\n", expect=["quick.yaml", "a grid file is a mapping"]),
    G("grid-is-a-run-config", "lsp: 0.5\n", expect=["looks like a run config", "study run --config"]),
    A("grid-missing", ["grid", "{tmp}/nope.yaml", "--out", "{out}"], expect=["grid file", "nope.yaml"]),
    # --- evaluate
    A("evaluate-without-run", ["evaluate", "--runs", "{tmp}"], expect=["study evaluate", "--run"]),
    A("evaluate-unknown-run", ["evaluate", "--run", "nope", "--runs", "{tmp}"], expect=["nope.json", "--runs"]),
]


def _fill(argv: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)).replace("{out}", str(tmp / "out")).replace("{cache}", str(tmp / "cache"))
            for a in argv]


def _write(tmp: Path, files: dict) -> None:
    for name, text in files.items():
        (tmp / name).write_text(text)


def test_enough_bad_inputs():
    assert len(BAD_INPUTS) >= 62


@pytest.mark.parametrize("argv, files, expect", BAD_INPUTS)
def test_bad_input_is_one_clear_line_before_any_work(tmp_path, capsys, argv, files, expect):
    _write(tmp_path, files)
    code = main(_fill(argv, tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("study") and ": error: " in lines[0], err
    for fragment in expect:
        assert fragment in lines[0], (fragment, lines[0])
    # Nothing was built or written: no tokenizer, teacher or base student, no output folder.
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    ["run", "--config", "{tmp}/nope.yaml", "--out", "{out}"],
    ["run", "--config", "{tmp}/run.yaml", "--out", "{out}", "--set", "grad_accum=0"],
    ["grid", "{tmp}/g.yaml", "--out", "{out}", "--jobs", "two"],
])
def test_real_process_exits_2_with_one_line(tmp_path, argv):
    (tmp_path / RUN).write_text("")
    proc = subprocess.run([sys.executable, "-m", "study.cli", *_fill(argv, tmp_path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_show_warns_when_nothing_is_supervised(tiny_cache, tmp_path, capsys):
    (tmp_path / RUN).write_text("")
    argv = ["show", "--config", str(tmp_path / RUN), "--index", "3", "--set", f"cache_dir={tiny_cache}",
            "--set", "condition=A", "--set", "cut_after_think=true"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "warning: this config supervises no token of example 3" in captured.err
    assert "condition=A" in captured.out  # the sequence is still shown
    # A config that supervises something prints no warning.
    assert main(argv[:-4]) == 0
    assert "warning" not in capsys.readouterr().err


# --- checks that need the run: wired in study/run.py, before any training --------------------------


def _tiny_yaml(tmp: Path, cache: Path) -> Path:
    data = asdict(tiny_config(cache))
    data.pop("device")
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _built(cache: Path) -> list[str]:
    """Models (teacher, base student) and teacher-output caches in ``cache``."""
    return sorted(p.name for p in cache.glob("*") if p.name.startswith(("teacher", "base")))


RUNTIME = [
    pytest.param(["--set", "device=cuda"], None, ["device=cuda", "CUDA"], id="device-cuda-on-a-cpu-build",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    pytest.param(["--set", "device=cuda:7"], None, ["cuda:7"], id="device-cuda-index-not-visible"),
    pytest.param([], "file", ["is a file", "--out"], id="out-is-a-file"),
    pytest.param([], "below-a-file", ["--out", "cannot be created"], id="out-below-a-file"),
    pytest.param([], "read-only", ["--out", "not writable"], id="out-not-writable",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")),
    pytest.param(["--set", "condition=A", "--set", "cut_after_think=true"], None, ["no supervised token"],
                 id="nothing-supervised"),
    pytest.param(["--set", "benchmarks=[aime24]", "--set", "benchmark_dir=/nonexistent/benchmarks"], None,
                 ["benchmark_dir", "/nonexistent/benchmarks/aime24.jsonl"], id="benchmark-file-missing"),
    pytest.param(["--set", "benchmarks=[aime24]", "--set", "eval_backend=vllm"], None,
                 ["eval_backend=vllm", "not installed"], id="vllm-not-installed",
                 marks=pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")),
]


@pytest.mark.parametrize("sets, out_kind, expect", RUNTIME)
def test_runtime_errors_come_before_any_model(tmp_path, capsys, sets, out_kind, expect):
    cache = tmp_path / "cache"
    cfg = _tiny_yaml(tmp_path, cache)
    out = tmp_path / "out"
    if out_kind == "file":
        out.write_text("not a folder")
    elif out_kind == "below-a-file":
        (tmp_path / "blocker").write_text("")
        out = tmp_path / "blocker" / "out"
    elif out_kind == "read-only":
        out.mkdir()
        out.chmod(0o500)
    code = main(["run", "--config", str(cfg), "--out", str(out), "--no-progress", *sets])
    err = capsys.readouterr().err
    assert code == 2, err
    error_lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(error_lines) == 1 and "Traceback" not in err, err
    for fragment in expect:
        assert fragment in error_lines[0], (fragment, error_lines[0])
    assert _built(cache) == []  # no teacher, base student or teacher-output cache was built


def test_existing_record_is_refused_unless_overwrite(tiny_cache, tmp_path, capsys):
    cfg = _tiny_yaml(tmp_path, tiny_cache)
    out = tmp_path / "out"
    argv = ["run", "--config", str(cfg), "--out", str(out), "--no-progress", "--set", "save_student=false"]
    assert main(argv) == 0
    capsys.readouterr()
    (record,) = [p for p in out.glob("*.json") if not p.name.endswith(".lm_eval.json")]
    raw = record.with_name(record.stem + ".lm_eval.json")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (record, raw)}

    assert main(argv) == 2  # refused before training: the record and its raw output untouched
    err = capsys.readouterr().err
    assert str(record) in err and "--overwrite" in err and "Traceback" not in err
    assert before == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (record, raw)}

    assert main(argv + ["--overwrite"]) == 0  # replaced; the old record kept under .replaced/
    kept = list((out / ".replaced").rglob(record.name))
    assert len(kept) == 1 and kept[0].read_bytes() == before[record][0]
    # ... with its raw lm-eval output (run() must set the old pair aside before evaluating).
    kept_raw = list((out / ".replaced").rglob(raw.name))
    assert len(kept_raw) == 1 and kept_raw[0].read_bytes() == before[raw][0]
    assert kept_raw[0].parent == kept[0].parent
    assert json.loads(record.read_text())["run_id"] == record.stem
