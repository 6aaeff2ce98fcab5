"""Models and the artefact cache: tokenizer, teacher and base student, each built once per
config hash under ``cache_dir`` and reused by every run.

    tok, tok_key = get_tokenizer(TokenizerConfig(), "cache")
    model = build_model(ModelConfig(), tok)            # a Qwen3ForCausalLM from a config

Every artefact is written to a temporary folder and renamed into place, so an interrupted
build never leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

from .config import ModelConfig, TokenizerConfig, config_hash
from .data.synthetic import CorpusConfig, make_splits
from .data.tokenizer import train_tokenizer


def tokenizer_texts(cfg: TokenizerConfig) -> list[str]:
    """A fixed mix of every corpus variant (both layouts, 1-6 operations, with and without
    exploration), so the one vocabulary covers the default, the late-answer and the
    base-student corpora."""
    texts = []
    for layout in ("early", "late"):
        for ops in range(1, 7):
            corpus = CorpusConfig(min_ops=ops, max_ops=ops, min_verify=0, max_verify=3, min_explore=0,
                                  max_explore=3, layout=layout, train_examples=200, val_examples=0,
                                  test_examples=0, seed=cfg.seed)
            texts += [f"{e.question} {e.completion}" for e in make_splits(corpus)["train"]]
    random.Random(cfg.seed).shuffle(texts)
    return texts


def atomic_dir(final: Path, build) -> Path:
    """Build into a temporary sibling folder with ``build(tmp)``, then rename into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if final.is_dir() and any(final.iterdir()):
            return final  # another process built the same artefact first: theirs is as good
        raise
    return final


# Bumped when ``tokenizer_texts`` changes, so a cached tokenizer trained on other texts is
# never taken for this one (2: exploration steps and verify counts from 0).
TOKENIZER_TEXTS = 2


def tokenizer_key(cfg: TokenizerConfig) -> str:
    return f"tokenizer-{config_hash({'config': asdict(cfg), 'texts': TOKENIZER_TEXTS})}"


def get_tokenizer(cfg: TokenizerConfig, cache_dir: str | Path):
    """The cached tokenizer for ``cfg`` (trained on first use). Returns (tokenizer, key)."""
    key = tokenizer_key(cfg)
    path = Path(cache_dir) / key
    if not path.exists():
        atomic_dir(path, lambda tmp: train_tokenizer(tokenizer_texts(cfg), cfg.vocab_size).save_pretrained(tmp))
    return AutoTokenizer.from_pretrained(path), key


def build_model(cfg: ModelConfig, tokenizer, attn_implementation: str = "eager"):
    """A Qwen3 causal LM: from the hub when ``cfg.pretrained`` names a checkpoint, else a
    fresh one sized by ``cfg`` with the tokenizer's vocabulary."""
    if cfg.pretrained:
        return AutoModelForCausalLM.from_pretrained(cfg.pretrained, attn_implementation=attn_implementation)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        attn_implementation=attn_implementation,
    )
    return Qwen3ForCausalLM(config)


def load_model(path: str | Path, attn_implementation: str, device) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation)
    return model.to(device)


def check_compatible(teacher, student, teacher_tok, student_tok) -> None:
    """Token-level KD compares distributions over one vocabulary: refuse anything else."""
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise ValueError(
            "teacher and student tokenizers differ; token-level KD needs one shared vocabulary "
            "(use the teacher's tokenizer for the student, as the paper's Qwen3 pairs do)"
        )
    tv, sv = teacher.get_output_embeddings().out_features, student.get_output_embeddings().out_features
    if tv != sv:
        raise ValueError(
            f"teacher vocabulary {tv} != student vocabulary {sv}; resize the student's embeddings "
            "to the teacher's vocabulary"
        )
