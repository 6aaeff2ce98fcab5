"""The cached teacher and base student: trained once per config, reused by every run.

Each lives under ``cache_dir/<role>-<hash>/`` in Hugging Face format (model, tokenizer) with
``study_meta.json`` (weights hash, training time and size, how it was built). The hash covers
what determines the weights: the pretraining config (less its evaluation settings), the corpus
it was trained on and the tokenizer, so changing any of them trains a new one and nothing is
ever retrained per run. Its scores are kept beside it under ``evaluations/``, one file per
test split and evaluation settings, so an evaluation setting never retrains an artefact.

    python -c "from study.config import RunConfig; from study.pretrain import get_teacher; \\
               print(get_teacher(RunConfig())[1])"
"""

from __future__ import annotations

import json
import time
from pathlib import Path


import torch

from .config import PretrainConfig, RunConfig, config_hash, pretrain_corpus
from .data.pipeline import encode, full_sequence_items
from .data.synthetic import CorpusConfig, make_splits, other_task_examples
from .evaluate import evaluate, write_test_split
from .identity import artefact_config, weights_sha256
from .models import build_model, build_once, get_tokenizer, load_model, load_pretrained
from .records import atomic_write_text
from .scoring import scorer_name
from .train import LoopSettings, pick_device, train_loop

META = "study_meta.json"


def corpus_dir(cfg: RunConfig, corpus: CorpusConfig, tok_key: str) -> Path:
    return Path(cfg.cache_dir) / f"corpus-{config_hash({'corpus': corpus.identity(), 'tokenizer': tok_key})}"


def test_file(cfg: RunConfig, corpus: CorpusConfig, tokenizer, tok_key: str, split: str = "test") -> Path:
    """The JSONL file lm-eval scores for ``corpus``'s split (written once, then reused)."""
    examples = make_splits(corpus)[split]
    return write_test_split(examples, tokenizer, corpus_dir(cfg, corpus, tok_key) / f"{split}.jsonl")


def _pretrain(role: str, cfg: RunConfig, p: PretrainConfig, tokenizer, tok_key: str, out: Path) -> None:
    device = pick_device(cfg.device)
    corpus = pretrain_corpus(cfg.corpus, p)
    examples = make_splits(corpus)["train"] + other_task_examples(corpus, p.other_task_traces, p.seed)
    items = full_sequence_items(encode(examples, tokenizer), "CoT+A")
    torch.manual_seed(p.seed)  # the initial weights come from the config's seed, not from
    model = build_model(p.model, tokenizer, cfg.attn_implementation).to(device)  # what ran before
    settings = LoopSettings(steps=p.steps, batch_size=p.batch_size, lr=p.lr,
                            weight_decay=p.weight_decay, seed=p.seed, alpha=0.0)
    stats = train_loop(model, items, tokenizer.pad_token_id, settings, device, desc=f"pretrain {role}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {
        "role": role,
        "config": artefact_config(p),
        "corpus": corpus.identity(),
        "tokenizer": tok_key,
        "parameters": sum(t.numel() for t in model.parameters()),
        "weights_sha256": weights_sha256(model),
        "train_seconds": stats["seconds"],
        "tokens": stats["tokens"],
        "tokens_per_second": stats["tokens"] / stats["seconds"],
        "final_loss": stats["curve"][-1]["loss"],
        # How it was built: results depend on these, so they are kept (the weights hash is
        # what names the artefact in a run id).
        "built": {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "attn_implementation": cfg.attn_implementation,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    (out / META).write_text(json.dumps(meta, indent=1))


def artefact_path(role: str, cfg: RunConfig, p: PretrainConfig, tok_key: str) -> Path:
    """Where the artefact for ``role`` lives: keyed by what determines its weights (training
    config, corpus, tokenizer), never by how it is scored afterwards."""
    # "format" changes when the training code changes what a config produces (2: seeded
    # init; 3: evaluation settings left out of the key).
    key = config_hash({"format": 3, "config": artefact_config(p), "corpus": pretrain_corpus(cfg.corpus, p).identity(),
                       "tokenizer": tok_key})
    return Path(cfg.cache_dir) / f"{role}-{key}"


def artefact_weights(cfg: RunConfig) -> dict[str, str | None]:
    """The weight hashes of the run's teacher and base student if they are built, else None
    for that role (nothing is built or loaded: a grid's dry run calls this)."""
    from .models import tokenizer_key

    tok_key = tokenizer_key(cfg.tokenizer)
    out = {}
    for role, p in (("teacher", cfg.teacher), ("base", cfg.base)):
        if p.model.pretrained:  # known once loaded (a hub download): the dry run does not load it
            out[role] = None
            continue
        meta = artefact_path(role, cfg, p, tok_key) / META
        out[role] = json.loads(meta.read_text()).get("weights_sha256") if meta.exists() else None
    if cfg.init != "base":
        out["base"] = None  # a scratch student does not start from it
    return out


def evaluation(role: str, path: Path, model, cfg: RunConfig, p: PretrainConfig, tokenizer, tok_key: str,
               corpus: CorpusConfig, split: str) -> dict:
    """The artefact's accuracy on ``corpus``'s ``split`` with the artefact's own evaluation
    settings, computed once and kept in ``<artefact>/evaluations/<key>.json``, keyed by the
    settings and the test data, so every run gets the same figure whoever asked first."""
    n = min(p.eval_examples, len(make_splits(corpus)[split]))
    settings = {"examples": n, "max_gen_toks": p.eval_max_gen_toks, "batch_size": p.eval_batch_size,
                "scorer": scorer_name(),
                "corpus": corpus.identity(), "split": split, "tokenizer": tok_key}
    file = path / "evaluations" / f"{config_hash(settings)}.json"
    if file.exists():
        return json.loads(file.read_text())["quality"]
    data = test_file(cfg, corpus, tokenizer, tok_key, split)
    quality = evaluate(model, tokenizer, data, n=n, max_gen_toks=p.eval_max_gen_toks, batch_size=p.eval_batch_size)
    atomic_write_text(file, json.dumps({"role": role, "settings": settings, "quality": quality}, indent=1))
    return quality


def get_pretrained(role: str, cfg: RunConfig, p: PretrainConfig):
    """(model on the run's device, its meta) for ``role`` in {"teacher", "base"}. The meta's
    ``quality`` holds the artefact's scores for this run's test split (and, for the base
    student, the one-step facts it was trained on), by the artefact's evaluation settings."""
    tokenizer, tok_key = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    path = artefact_path(role, cfg, p, tok_key)
    build_once(path, lambda tmp: _pretrain(role, cfg, p, tokenizer, tok_key, tmp))
    meta = json.loads((path / META).read_text())
    meta["id"] = path.name
    model = load_model(path, cfg.attn_implementation, pick_device(cfg.device))
    digest = weights_sha256(model)
    if meta.get("weights_sha256") not in (None, digest):
        raise ValueError(f"{path}: its weights hash {digest[:12]} differs from the {meta['weights_sha256'][:12]} "
                         f"recorded when it was built; the files were changed: delete {path} to retrain it")
    meta["weights_sha256"] = digest
    checks = {"test": (cfg.corpus, "test")}
    if p.one_op:  # the base student's knowledge check is in-sample by design
        checks["one_op_facts"] = (pretrain_corpus(cfg.corpus, p), "train")
    meta["quality"] = {name: evaluation(role, path, model, cfg, p, tokenizer, tok_key, corp, split)
                       for name, (corp, split) in checks.items()}
    meta["accuracy"] = meta["quality"]["test"]["accuracy"]
    return model, meta


def from_checkpoint(role: str, cfg: RunConfig, p: PretrainConfig):
    """(model on the run's device, its meta) for a pretrained ``role`` (``p.model.pretrained``:
    a hub id or a local folder): nothing is trained or scored here (a hub corpus has no
    synthetic test split), so the meta's accuracy and quality are None. The teacher is frozen
    (bfloat16 on CUDA: ``models.load_pretrained``)."""
    model, source = load_pretrained(p.model, cfg.attn_implementation, pick_device(cfg.device),
                                    frozen=role == "teacher")
    meta = {"id": p.model.pretrained, **source, "weights_sha256": weights_sha256(model),
            "parameters": sum(t.numel() for t in model.parameters()),
            "vocab_rows": model.get_output_embeddings().out_features,
            "accuracy": None, "quality": None, "train_seconds": None, "built": None}
    return model, meta


def get_teacher(cfg: RunConfig):
    if cfg.teacher.model.pretrained:
        model, meta = from_checkpoint("teacher", cfg, cfg.teacher)
    else:
        model, meta = get_pretrained("teacher", cfg, cfg.teacher)
    model.requires_grad_(False).eval()
    return model, meta


def get_base(cfg: RunConfig):
    if cfg.base.model.pretrained:
        return from_checkpoint("base", cfg, cfg.base)
    return get_pretrained("base", cfg, cfg.base)
