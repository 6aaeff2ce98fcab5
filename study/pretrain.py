"""The cached teacher and base student: trained once per config, reused by every run.

Each lives under ``cache_dir/<role>-<hash>/`` in Hugging Face format (model, tokenizer) with
``study_meta.json`` (test accuracy, training time and size). The hash covers the pretraining
config, the corpus it was trained on and the tokenizer, so changing any of them trains a new
one and nothing is ever retrained per run.

    python -c "from study.config import RunConfig; from study.pretrain import get_teacher; \\
               print(get_teacher(RunConfig())[1])"
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path


import torch

from .config import PretrainConfig, RunConfig, config_hash
from .data.pipeline import encode, full_sequence_items
from .data.synthetic import CorpusConfig, make_splits
from .evaluate import evaluate, write_test_split
from .models import atomic_dir, build_model, get_tokenizer, load_model
from .train import LoopSettings, pick_device, train_loop

META = "study_meta.json"


def pretrain_corpus(run_corpus: CorpusConfig, p: PretrainConfig) -> CorpusConfig:
    if p.one_op:
        return replace(run_corpus, min_ops=1, max_ops=1, train_examples=p.train_examples,
                       val_examples=0, test_examples=0)
    return replace(run_corpus, train_examples=p.train_examples)


def corpus_dir(cfg: RunConfig, corpus: CorpusConfig, tok_key: str) -> Path:
    return Path(cfg.cache_dir) / f"corpus-{config_hash({'corpus': asdict(corpus), 'tokenizer': tok_key})}"


def test_file(cfg: RunConfig, corpus: CorpusConfig, tokenizer, tok_key: str, split: str = "test") -> Path:
    """The JSONL file lm-eval scores for ``corpus``'s split (written once, then reused)."""
    examples = make_splits(corpus)[split]
    return write_test_split(examples, tokenizer, corpus_dir(cfg, corpus, tok_key) / f"{split}.jsonl")


def _pretrain(role: str, cfg: RunConfig, p: PretrainConfig, tokenizer, tok_key: str, out: Path) -> None:
    device = pick_device(cfg.device)
    corpus = pretrain_corpus(cfg.corpus, p)
    splits = make_splits(corpus)
    items = full_sequence_items(encode(splits["train"], tokenizer), "CoT+A")
    torch.manual_seed(p.seed)  # the initial weights come from the config's seed, not from
    model = build_model(p.model, tokenizer, cfg.attn_implementation).to(device)  # what ran before
    settings = LoopSettings(steps=p.steps, batch_size=p.batch_size, lr=p.lr,
                            weight_decay=p.weight_decay, seed=p.seed, alpha=0.0)
    stats = train_loop(model, items, tokenizer.pad_token_id, settings, device, desc=f"pretrain {role}")
    # The teacher is scored on the run's test split; the base student on the one-step facts
    # it was trained on (a knowledge check) and on the run's test split (before distillation).
    checks = {"test": (cfg.corpus, "test")}
    if p.one_op:
        checks["one_op_facts"] = (corpus, "train")
    quality = {}
    for name, (corp, split) in checks.items():
        data = test_file(cfg, corp, tokenizer, tok_key, split)
        quality[name] = evaluate(model, tokenizer, data, n=min(p.eval_examples, len(make_splits(corp)[split])),
                                 max_gen_toks=cfg.max_gen_toks, batch_size=cfg.eval_batch_size)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {
        "role": role,
        "config": asdict(p),
        "corpus": asdict(corpus),
        "tokenizer": tok_key,
        "parameters": sum(t.numel() for t in model.parameters()),
        "train_seconds": stats["seconds"],
        "tokens": stats["tokens"],
        "tokens_per_second": stats["tokens"] / stats["seconds"],
        "final_loss": stats["curve"][-1]["loss"],
        "accuracy": quality["test"]["accuracy"],
        "quality": quality,
        "device": str(device),
    }
    (out / META).write_text(json.dumps(meta, indent=1))


def get_pretrained(role: str, cfg: RunConfig, p: PretrainConfig):
    """(model on the run's device, its meta) for ``role`` in {"teacher", "base"}."""
    tokenizer, tok_key = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    # "format" changes when the training code changes what a config produces (2: seeded init).
    key = config_hash({"format": 2, "config": asdict(p), "corpus": asdict(pretrain_corpus(cfg.corpus, p)), "tokenizer": tok_key})
    path = Path(cfg.cache_dir) / f"{role}-{key}"
    if not path.exists():
        atomic_dir(path, lambda tmp: _pretrain(role, cfg, p, tokenizer, tok_key, tmp))
    meta = json.loads((path / META).read_text())
    meta["id"] = path.name
    model = load_model(path, cfg.attn_implementation, pick_device(cfg.device))
    return model, meta


def get_teacher(cfg: RunConfig):
    model, meta = get_pretrained("teacher", cfg, cfg.teacher)
    model.requires_grad_(False).eval()
    return model, meta


def get_base(cfg: RunConfig):
    return get_pretrained("base", cfg, cfg.base)
