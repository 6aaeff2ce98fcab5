"""Run ids in both directions: every change that can change a run's results changes its id,
and no inert one does. The list of cases covers every config field, so a new field must be
classified here before it can land."""

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from study.config import RunConfig, config_from_dict
from study.identity import config_key, run_id, semantic_config, weights_sha256

WEIGHTS = {"teacher": "t" * 64, "base": "b" * 64}
BENCH_DIR = str(Path(__file__).parent / "fixtures" / "benchmarks")
REF = RunConfig()


def _id(cfg: RunConfig, weights=WEIGHTS) -> str:
    return run_id(cfg, weights)


def _with(**dotted) -> RunConfig:
    """The default config with dotted overrides (``corpus.seed=5``)."""
    return config_from_dict({}, [f"{k}={v}" for k, v in dotted.items()])


BENCH = {"benchmarks": "[aime24]", "samples": 64, "eval_temperature": 0.6}  # the paper's decoding
# (what changes, a config with it changed) for every field that can change a run's results.
SEMANTIC = {
    "condition": _with(condition="CoT"),
    "lsp": _with(lsp=0.5),
    "window": _with(lsp=0.5, window="right"),
    "cut_after_think": _with(cut_after_think=True),
    "keep_answer": _with(lsp=0.5, keep_answer=True),
    "random_mask": _with(random_mask=0.25),
    "alpha": _with(alpha=0.3),
    "loss": _with(loss="reverse_kl"),
    "temperature": _with(temperature=2.0, teacher_cache_mode="exact"),
    "beta": _with(loss="jsd", beta=0.2),
    "lr": _with(lr=1e-3),
    "weight_decay": _with(weight_decay=0.1),
    "warmup": _with(warmup=0.2),
    "grad_clip": _with(grad_clip=0.5),
    "cycle_momentum": _with(cycle_momentum=False),
    "lr_div_factor": _with(lr_div_factor=10.0),
    "lr_final_div_factor": _with(lr_final_div_factor=100.0),
    "decay_norms_and_embeddings": _with(decay_norms_and_embeddings=False),
    "batch_size": _with(batch_size=16),
    "grad_accum": _with(grad_accum=2),
    "epochs": _with(epochs=2),
    "seed": _with(seed=43),
    "init": _with(init="scratch"),
    "teacher_cache": _with(teacher_cache=False),
    "teacher_cache_mode": _with(teacher_cache_mode="topk"),
    "teacher_cache_topk": _with(teacher_cache_mode="topk", teacher_cache_topk=16),
    "eval_examples": _with(eval_examples=100),
    "max_gen_toks": _with(max_gen_toks=128),
    "eval_batch_size": _with(eval_batch_size=10),
    "attn_implementation": _with(attn_implementation="sdpa"),
    # The benchmark settings, each against a run that scores benchmarks with the paper's
    # decoding (BENCH_REF, below).
    "benchmarks": _with(**{**BENCH, "benchmarks": "[aime24, math500]"}),
    "benchmark_dir": _with(**BENCH, benchmark_dir=BENCH_DIR),
    "samples": _with(**{**BENCH, "samples": 8}),
    "eval_temperature": _with(**{**BENCH, "eval_temperature": 1.0}),
    "eval_top_p": _with(**{**BENCH, "eval_top_p": 0.9}),
    "eval_backend": _with(**BENCH, eval_backend="vllm"),
    # The synthetic split's decoding, against the greedy default.
    "samples (synthetic split)": _with(samples=8, eval_temperature=0.6),
    "eval_temperature (synthetic split)": _with(eval_temperature=0.6),
    "threads": _with(threads=max(1, torch.get_num_threads()) + 1),
    # Processes: the shares and the reduction over ranks change the summation order (one
    # process keeps the ids it had before the field).
    "nproc": _with(nproc=2),
}
NESTED_SEMANTIC = {  # one representative change per nested config, plus every corpus knob
    **{f"corpus.{k}": v for k, v in {
        "min_ops": 3, "max_ops": 5, "min_verify": 1, "max_verify": 4, "min_explore": 1, "max_explore": 2,
        "modulus": 9, "layout": "late",
        "train_examples": 1600, "val_examples": 50, "test_examples": 300, "seed": 5}.items()},
    "tokenizer.vocab_size": 256,
    "tokenizer.texts": 2,
    "tokenizer.seed": 1,
    "teacher.steps": 100,
    "teacher.model.hidden_size": 96,
    "base.lr": 1e-3,
    "base.model.num_hidden_layers": 3,
}
# Fields that never change results: kept in the record's config, left out of the hash. Each
# case is compared with the default config, or with the config of the same name in LIVE.
LIVE = _with(teacher_cache=False)
INERT = {
    "device": _with(device="cpu"),  # "auto" resolves to the cpu here: the execution is the same
    "cache_dir": _with(cache_dir="elsewhere"),
    "save_student": _with(save_student=False),
    "profile_steps": _with(profile_steps=7),
    "activation_checkpointing": _with(activation_checkpointing=True),  # recomputes the same activations
    "beta (forward KL)": _with(beta=0.1),
    "window (lsp 1.0)": _with(window="middle"),
    "keep_answer (lsp 1.0)": _with(keep_answer=True),
    "teacher_cache_topk (exact cache)": _with(teacher_cache_topk=8),
    "teacher_cache_mode (auto = exact at V 194)": _with(teacher_cache_mode="exact"),
    "teacher_cache_mode (live teacher)": _with(teacher_cache=False, teacher_cache_mode="topk"),
    "teacher_cache_topk (live teacher)": _with(teacher_cache=False, teacher_cache_mode="topk", teacher_cache_topk=8),
    "teacher.eval_examples": _with(**{"teacher.eval_examples": 50}),
    "teacher.eval_max_gen_toks": _with(**{"teacher.eval_max_gen_toks": 128}),
    "base.eval_batch_size": _with(**{"base.eval_batch_size": 10}),
    "lsp=1 (int)": RunConfig(lsp=1),
    # Nothing reads the benchmark backend of a run without benchmarks, nor top_p of a greedy
    # one (every earlier id holds).
    "eval_top_p (greedy, no benchmarks)": _with(eval_top_p=0.5),
    "eval_backend (no benchmarks)": _with(eval_backend="vllm"),
}
BENCH_REF = _with(**BENCH)
# A run on a hub corpus (it needs pretrained models and benchmarks); the hub-only corpus fields
# change its id, and are no part of a synthetic corpus's (test_synthetic_default_id_unchanged).
HUB = {"corpus.source": "bespoke_stratos", "corpus.train_examples": 7, "corpus.val_examples": 1,
       "batch_size": 2, "benchmarks": "[aime24]", "teacher.model.pretrained": "Qwen/Qwen3-8B",
       "base.model.pretrained": "Qwen/Qwen3-1.7B-Base"}
HUB_SEMANTIC = {"corpus.source": "sky_t1", "corpus.path": "/data/Bespoke-Stratos-17k", "corpus.revision": "abc123",
                "corpus.max_tokens": 2048, "corpus.train_examples": 6, "corpus.val_examples": 2,
                "corpus.split_seed": 0, "corpus.max_rows": 100}


def test_cases_cover_every_config_field():
    """A new config field fails here until it is classified as semantic or inert."""
    flat = set(pd.json_normalize(asdict(REF), sep=".").columns)
    top_level_nested = {"corpus", "tokenizer", "teacher", "base"}
    covered = set(SEMANTIC) | {k.split(" ")[0] for k in INERT}
    covered |= {k for k in flat if k.split(".")[0] in top_level_nested}  # nested: see below
    assert flat - covered == set()
    corpus_fields = {k for k in flat if k.startswith("corpus.")}
    assert corpus_fields == ({k for k in NESTED_SEMANTIC if k.startswith("corpus.")} | set(HUB_SEMANTIC)
                             | {"corpus.min_score"})  # min_score: synthetic1 only, below


# A pretrained teacher or base is its checkpoint: which one (and its revision) changes the id,
# its pretraining settings (nothing is pretrained) and architecture fields (the checkpoint has
# its own) do not.
HUB_MODEL_SEMANTIC = {"teacher.model.pretrained": "Qwen/Qwen3-4B", "teacher.model.revision": "abc123",
                      "base.model.pretrained": "Qwen/Qwen3-0.6B-Base", "base.model.revision": "abc123"}
HUB_MODEL_INERT = {"teacher.steps": 5, "teacher.lr": 0.1, "teacher.model.hidden_size": 8, "base.train_examples": 50,
                   "base.one_op": True, "base.model.num_hidden_layers": 7}


@pytest.mark.parametrize("dotted", sorted(HUB_MODEL_SEMANTIC))
def test_every_pretrained_model_change_changes_the_id(dotted):
    assert _id(_with(**{**HUB, dotted: HUB_MODEL_SEMANTIC[dotted]})) != _id(_with(**HUB))


@pytest.mark.parametrize("dotted", sorted(HUB_MODEL_INERT))
def test_pretraining_settings_of_a_pretrained_model_are_inert(dotted):
    assert _id(_with(**{**HUB, dotted: HUB_MODEL_INERT[dotted]})) == _id(_with(**HUB))


@pytest.mark.parametrize("dotted", sorted(HUB_SEMANTIC))
def test_every_hub_corpus_change_changes_the_id(dotted):
    assert _id(_with(**{**HUB, dotted: HUB_SEMANTIC[dotted]})) != _id(_with(**HUB))


def test_min_score_changes_the_id_of_a_synthetic1_run():
    ref = {**HUB, "corpus.source": "synthetic1"}
    assert _id(_with(**ref, **{"corpus.min_score": 0.5})) != _id(_with(**ref)) != _id(_with(**HUB))


def test_synthetic_default_id_unchanged():
    """The default config, its artefacts and its teacher cache keep the keys of the committed
    study (issue 10): the fields added since (hub corpus, benchmarks, pretrained models,
    exploration, keep_answer, tokenizer texts) are left out of the hashes at their defaults."""
    from study.pretrain import artefact_path, corpus_dir
    from study.teacher_cache import cache_key

    assert config_key(replace(REF, threads=2)) == "070188392439"  # threads pinned: any machine
    assert artefact_path("teacher", REF, REF.teacher, "tok").name == "teacher-5287e0db8369"
    assert artefact_path("base", REF, REF.base, "tok").name == "base-9d993854b827"
    assert corpus_dir(REF, REF.corpus, "tok").name == "corpus-9b6c8f5b79b8"
    assert cache_key(REF, "w", "tok", "exact", 64, 2) == "8d6bf95c4f8b"
    assert "source" not in semantic_config(REF)["corpus"]


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_every_semantic_change_changes_the_id(name):
    assert _id(SEMANTIC[name]) != _id(REF)


@pytest.mark.parametrize("dotted", sorted(NESTED_SEMANTIC))
def test_every_nested_semantic_change_changes_the_id(dotted):
    # A smaller modulus has fewer one-operation problems than the base's default 300.
    ref = {"corpus.modulus": {"base.train_examples": 200},
           "corpus.min_explore": {"corpus.max_explore": 2}}.get(dotted, {})  # else invalid alone
    assert _id(_with(**ref, **{dotted: NESTED_SEMANTIC[dotted]})) != _id(_with(**ref))


@pytest.mark.parametrize("name", sorted(INERT))
def test_no_inert_change_changes_the_id(name):
    assert _id(INERT[name]) == _id(LIVE if "live teacher" in name else REF)


@pytest.mark.parametrize("name", ["benchmarks", "benchmark_dir", "samples", "eval_temperature", "eval_top_p",
                                  "eval_backend"])
def test_every_benchmark_setting_changes_the_id_of_a_run_with_benchmarks(name):
    assert _id(SEMANTIC[name]) != _id(BENCH_REF) != _id(REF)


def test_greedy_decoding_ignores_top_p():
    greedy = {"benchmarks": "[aime24]", "samples": 1, "eval_temperature": 0}
    assert _id(_with(**greedy, eval_top_p=0.5)) == _id(_with(**greedy))
    n_greedy = {"samples": 1, "eval_temperature": 0}  # the synthetic split, sampled at 0 is refused
    assert _id(_with(**n_greedy, eval_top_p=0.5)) == _id(_with(**n_greedy)) == _id(REF)


def test_benchmark_dir_counts_by_content(tmp_path):
    for name in ("aime24", "math500"):
        (tmp_path / f"{name}.jsonl").write_bytes((Path(BENCH_DIR) / f"{name}.jsonl").read_bytes())
    same = _with(benchmarks="[aime24, math500]", benchmark_dir=tmp_path)
    assert _id(same) == _id(_with(benchmarks="[aime24, math500]", benchmark_dir=BENCH_DIR))
    assert semantic_config(same)["benchmark_dir"]["aime24"] != semantic_config(same)["benchmark_dir"]["math500"]


def test_threads_0_is_the_process_default():
    assert _id(_with(threads=torch.get_num_threads())) == _id(REF)


def test_the_weights_are_part_of_the_id():
    assert _id(REF, {**WEIGHTS, "teacher": "x" * 64}) != _id(REF)
    assert _id(REF, {**WEIGHTS, "base": "x" * 64}) != _id(REF)
    scratch = _with(init="scratch")
    assert _id(scratch, {**WEIGHTS, "base": None}) == _id(scratch, {**WEIGHTS, "base": "x" * 64})
    with pytest.raises(ValueError, match="weight hashes"):
        run_id(REF, {"teacher": WEIGHTS["teacher"], "base": None})


def test_a_scratch_student_keeps_only_the_base_architecture():
    scratch = _with(init="scratch")
    assert _id(replace(scratch, base=replace(scratch.base, steps=5, lr=1e-2))) == _id(scratch)
    assert "steps" not in semantic_config(scratch)["base"]


def test_config_key_ignores_weights_and_inert_fields():
    assert config_key(INERT["profile_steps"]) == config_key(REF) != config_key(SEMANTIC["lsp"])


def test_ids_do_not_depend_on_python_types():
    assert _id(RunConfig(lsp=1, alpha=1, temperature=1)) == _id(RunConfig(alpha=1.0))
    assert _id(config_from_dict({"lsp": 1, "lr": "4e-3"})) == _id(REF)


def test_weights_hash_sees_every_tensor_byte(tokenizer):
    from study.config import ModelConfig
    from study.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=1, head_dim=8, intermediate_size=32), tokenizer)
    digest = weights_sha256(model)
    assert digest == weights_sha256(model) and len(digest) == 64
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-7
    assert weights_sha256(model) != digest


def test_weights_hash_definition_is_fixed():
    """Artefact metas and released hashes store this digest: changing how it is computed (the
    shape of a tensor went in flattened once, and every stored hash stopped matching) must
    fail here first."""
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    assert weights_sha256(model) == "71c1df47b0ac100236fb625a352f2f9408575a00c2a7878a5b88d7bfbed8d7cf"


def test_the_committed_records_keep_their_ids():
    """Every record of the committed study is found again by the current code: its config (the
    fields it lacks at their defaults) and its weight hashes give its own run id. A new config
    field that enters the hash at its default would break this (and make every grid rerun
    every cell); fields added since are left out at their neutral value."""
    import json
    from pathlib import Path

    runs = Path(__file__).resolve().parents[1] / "results" / "runs"
    paths = [p for p in sorted(runs.glob("*.json")) if not p.name.endswith((".lm_eval.json", ".grid.json"))]
    assert len(paths) >= 60
    for path in paths:
        record = json.loads(path.read_text())
        weights = {"teacher": record["teacher"]["weights_sha256"], "base": record["student"]["base_weights_sha256"]}
        assert run_id(config_from_dict(record["config"]), weights) == record["run_id"], path.name
