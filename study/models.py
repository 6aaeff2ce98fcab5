"""Models and the artefact cache: tokenizer, teacher and base student, each built once per
config hash under ``cache_dir`` and reused by every run; or, at paper scale, pretrained
checkpoints from the hub (or local folders) with the student's tokenizer.

    tok, tok_key = get_tokenizer(TokenizerConfig(), "cache")
    model = build_model(ModelConfig(), tok)            # a Qwen3ForCausalLM from a config
    tok, tok_key = run_tokenizer(cfg)                  # the run's: embedded, or the student's
    model, source = load_pretrained(cfg.teacher.model, "eager", device, frozen=True)

A pretrained pair shares one tokenizer (the same token-to-id map and chat template:
``check_tokenizers``) but its heads may be padded past it to different sizes (Qwen3:
``config.vocab_size`` 151,936 rows for 151,669 tokens). The losses read only the first
``len(tokenizer)`` rows of either head (``train.output_head``), so padded slots get no
probability mass on either side (``check_heads``).

Every artefact is written to a temporary folder and renamed into place, so an interrupted
build never leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import hashlib
import fcntl
import json
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
    """A fixed mix of every corpus variant (both layouts, 1-6 operations; with ``texts`` 2 also
    exploration steps and 0-3 verification passes), so the one vocabulary covers the default,
    the late-answer and the base-student corpora (and the spread corpus)."""
    texts = []
    knobs = {"min_verify": 1, "max_verify": 3} if cfg.texts == 1 else \
        {"min_verify": 0, "max_verify": 3, "min_explore": 0, "max_explore": 3}
    for layout in ("early", "late"):
        for ops in range(1, 7):
            corpus = CorpusConfig(min_ops=ops, max_ops=ops, **knobs, layout=layout, train_examples=200,
                                  val_examples=0, test_examples=0, seed=cfg.seed)
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


def build_once(final: Path, build) -> bool:
    """Build ``final`` with ``atomic_dir`` unless it exists; returns whether this call built it.
    Processes that need it at once (a grid's jobs) wait for the first builder (an exclusive
    lock on a file beside it) instead of building it again."""
    if final.exists():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the holder ends, however it ends
        if final.exists():
            return False
        atomic_dir(final, build)
        return True


def tokenizer_key(cfg: TokenizerConfig) -> str:
    return f"tokenizer-{config_hash(tokenizer_fields(cfg))}"


def tokenizer_fields(cfg: TokenizerConfig) -> dict:
    """The tokenizer config for hashes: the first mix of texts hashes as it did before the
    ``texts`` field existed, so its cached tokenizer and every id built on it hold."""
    d = asdict(cfg)
    if d["texts"] == 1:
        d.pop("texts")
    return d


def get_tokenizer(cfg: TokenizerConfig, cache_dir: str | Path, use_release: bool = True):
    """The cached tokenizer for ``cfg``: on first use taken from the release (``artefacts/``,
    checked file by file; not with ``use_release`` false) or trained. Returns (tokenizer, key)."""
    from . import release

    key = tokenizer_key(cfg)
    path = Path(cache_dir) / key
    if not path.exists() and not (use_release and release.take(path)):
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


# --- pretrained checkpoints (teacher.model.pretrained, base.model.pretrained) -------------------


def load_pretrained_tokenizer(m: ModelConfig, role: str):
    """The tokenizer (with its chat template) of checkpoint ``m`` (``role``'s: teacher or base):
    a hub id or a local folder; one that cannot be loaded is a ValueError naming the key."""
    try:
        return AutoTokenizer.from_pretrained(m.pretrained, revision=m.revision or None)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{role}.model.pretrained {m.pretrained!r}: cannot load its tokenizer ({first}); give a hub "
                         "id (Qwen/Qwen3-8B, downloaded or in the local hub cache) or a folder with a saved "
                         "checkpoint and tokenizer") from None


def tokenizer_identity(tokenizer) -> dict:
    """What a run needs to know of a pretrained tokenizer: its size, the SHA-256 of its
    token-to-id map and of its chat template (None without one)."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]), ensure_ascii=False)
    template = tokenizer.chat_template
    return {"size": len(tokenizer), "vocab_sha256": hashlib.sha256(vocab.encode()).hexdigest(),
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None}


def run_tokenizer(cfg):
    """The run's tokenizer and its key: the embedded BPE (cached under ``cache_dir``), or with
    pretrained models the student's (``base.model.pretrained``), which renders the corpus; its
    key hashes its vocabulary and chat template, so a teacher cache is never read through another."""
    if not cfg.base.model.pretrained:
        return get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    tokenizer = load_pretrained_tokenizer(cfg.base.model, "base")
    ident = tokenizer_identity(tokenizer)
    return tokenizer, f"tokenizer-{config_hash(ident)}"


def load_pretrained(m: ModelConfig, attn_implementation: str, device, frozen: bool = False):
    """(model on ``device``, its source) for checkpoint ``m``. A frozen model (the teacher) is
    loaded in bfloat16 on CUDA (it only runs forward; the losses promote its rows to float32),
    in float32 elsewhere; a trained one (the student) in float32 (CUDA training autocasts).
    ``source``: the id or folder, the revision asked for and the one resolved (the hub commit;
    None for a local folder, whose weights the record names by their hash)."""
    dtype = torch.bfloat16 if frozen and torch.device(device).type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(m.pretrained, revision=m.revision or None, dtype=dtype,
                                                 attn_implementation=attn_implementation)
    # transformers keeps the commit a hub checkpoint resolved to; a plain local folder has none.
    resolved = None if Path(m.pretrained).is_dir() else getattr(model.config, "_commit_hash", None)
    source = {"pretrained": m.pretrained, "revision": m.revision or None, "resolved_revision": resolved,
              "dtype": str(dtype).removeprefix("torch.")}
    return model.to(device), source


def _first_difference(a: dict, b: dict) -> str:
    for token in sorted(set(a) | set(b)):
        if a.get(token) != b.get(token):
            return f"{token!r} is {a.get(token)} in the teacher's and {b.get(token)} in the student's"
    return ""


def check_tokenizers(teacher_tok, student_tok) -> None:
    """Token-level KD compares distributions over one vocabulary and the student renders every
    example with its chat template: both must be the teacher's. The vocabularies are compared
    as token-to-id maps (equal sizes are not enough), then the chat templates."""
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    if tv != sv:
        raise ValueError(
            f"teacher and student tokenizers differ ({len(tv)} and {len(sv)} tokens; e.g. token "
            f"{_first_difference(tv, sv)}); token-level KD needs one shared vocabulary (use the teacher's "
            "tokenizer for the student, as the paper's Qwen3 pairs do)"
        )
    if teacher_tok.chat_template != student_tok.chat_template:
        raise ValueError(
            "teacher and student chat templates differ; the corpus is rendered with the student's template and the "
            "teacher must read the same text: use a pair whose tokenizers ship one template (e.g. copy the teacher's "
            "tokenizer files into the student's folder)"
        )


def check_heads(teacher, student, n_tokens: int) -> None:
    """Each head needs a row for every token; rows past ``n_tokens`` (padding) are never read."""
    for role, model in (("teacher", teacher), ("student", student)):
        rows = model.get_output_embeddings().out_features
        if rows < n_tokens:
            raise ValueError(
                f"{role} vocabulary {rows} is smaller than the tokenizer's {n_tokens} tokens; resize its "
                "embeddings to the tokenizer (model.resize_token_embeddings)"
            )


def check_compatible(teacher, student, teacher_tok, student_tok) -> None:
    """One vocabulary and chat template (``check_tokenizers``), heads covering it (``check_heads``)."""
    check_tokenizers(teacher_tok, student_tok)
    check_heads(teacher, student, len(student_tok))
