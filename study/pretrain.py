"""The cached teacher and base student: trained once per config, reused by every run.

Each lives under ``cache_dir/<role>-<hash>/`` in Hugging Face format (model, tokenizer) with
``study_meta.json`` (weights hash, training time and size, how it was built). The hash covers
what determines the weights: the pretraining config (less its evaluation settings), the corpus
it was trained on and the tokenizer, so changing any of them trains a new one and nothing is
ever retrained per run. Its scores are kept beside it under ``evaluations/``, one file per
test split and evaluation settings, so an evaluation setting never retrains an artefact.
A missing artefact is taken from the release (``artefacts/``, study/release.py) when it has
one of that name, else trained, with the thread count its config pins (``threads``): the
same config gives the same weights in every process and on any number of cores.
``study pretrain`` builds (``--force``: retrains) and ``--release`` releases them.

    python -c "from study.config import RunConfig; from study.pretrain import get_teacher; \\
               print(get_teacher(RunConfig())[1])"
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
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
from . import release
from .scoring import scorer_name
from .train import LoopSettings, pick_device, torch_threads, train_loop

META = "study_meta.json"
log = logging.getLogger(__name__)


def corpus_dir(cfg: RunConfig, corpus: CorpusConfig, tok_key: str) -> Path:
    return Path(cfg.cache_dir) / f"corpus-{config_hash({'corpus': corpus.identity(), 'tokenizer': tok_key})}"


def test_file(cfg: RunConfig, corpus: CorpusConfig, tokenizer, tok_key: str, split: str = "test") -> Path:
    """The JSONL file lm-eval scores for ``corpus``'s split (written once, then reused)."""
    examples = make_splits(corpus)[split]
    return write_test_split(examples, tokenizer, corpus_dir(cfg, corpus, tok_key) / f"{split}.jsonl")


@contextlib.contextmanager
def pinned(threads: int, device):
    """Train an artefact as every machine trains it: ``threads`` torch threads whatever the
    cores (the thread count sets the order of each reduction, so the last bits of the weights:
    results/LOG.md, 2026-12-02), and on CUDA the deterministic kernels (atomics in the
    embedding backward otherwise reorder sums from run to run). Restores both after."""
    before = torch.are_deterministic_algorithms_enabled()
    with torch_threads(threads):
        if device.type == "cuda":
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before)


def pretraining_examples(corpus: CorpusConfig, p: PretrainConfig) -> list:
    """What an artefact is trained on: the training split of its pretraining corpus
    (``config.pretrain_corpus``) and ``p.other_task_traces`` traces of another task, both with
    that corpus's verification counts (``p.passes``, when set)."""
    return make_splits(corpus)["train"] + other_task_examples(corpus, p.other_task_traces, p.seed)


def _pretrain(role: str, cfg: RunConfig, p: PretrainConfig, tokenizer, tok_key: str, out: Path) -> None:
    device = pick_device(cfg.device)
    with pinned(p.threads, device):
        _train_artefact(role, cfg, p, tokenizer, tok_key, out, device)


def _train_artefact(role: str, cfg: RunConfig, p: PretrainConfig, tokenizer, tok_key: str, out: Path, device) -> None:
    corpus = pretrain_corpus(cfg.corpus, p)
    examples = pretraining_examples(corpus, p)
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
        # what names the artefact in a run id). The weights are a function of the config, the
        # thread count (pinned: PretrainConfig.threads), the CPU's kernels (cpu_capability:
        # AVX512 and AVX2 sum in other orders) and the torch version.
        "built": {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                  "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
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
    """The weight hashes of the run's teacher and base student if they are built or released
    (the release's meta: a fresh clone's dry run knows the run ids), else None for that role
    (nothing is built, copied or loaded: a grid's dry run calls this)."""
    from .models import tokenizer_key

    tok_key = tokenizer_key(cfg.tokenizer)
    out = {}
    for role, p in (("teacher", cfg.teacher), ("base", cfg.base)):
        if p.model.pretrained:  # known once loaded (a hub download): the dry run does not load it
            out[role] = None
            continue
        path = artefact_path(role, cfg, p, tok_key)
        meta = path / META if path.exists() else (release.released(path.name) or path) / META
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


def build_artefact(role: str, cfg: RunConfig, p: PretrainConfig, use_release: bool = True) -> Path:
    """The cache folder of ``role``'s artefact, made if missing: copied from the release
    (``artefacts/``, checked file by file; not with ``use_release`` false), else trained.
    Nothing is loaded or scored here."""
    tokenizer, tok_key = get_tokenizer(cfg.tokenizer, cfg.cache_dir, use_release=use_release)
    path = artefact_path(role, cfg, p, tok_key)
    if not path.exists() and not (use_release and release.take(path)):
        build_once(path, lambda tmp: _pretrain(role, cfg, p, tokenizer, tok_key, tmp))
    return path


def get_pretrained(role: str, cfg: RunConfig, p: PretrainConfig, use_release: bool = True):
    """(model on the run's device, its meta) for ``role`` in {"teacher", "base"}: from the
    cache, else from the release (``artefacts/``, checked file by file), else trained (with
    ``use_release`` false, never from the release). The meta's ``quality`` holds the
    artefact's scores for this run's test split (and, for the base student, the one-step
    facts it was trained on), by the artefact's evaluation settings."""
    tokenizer, tok_key = get_tokenizer(cfg.tokenizer, cfg.cache_dir, use_release=use_release)
    path = build_artefact(role, cfg, p, use_release)
    meta = json.loads((path / META).read_text())
    meta["id"] = path.name
    model = load_model(path, cfg.attn_implementation, pick_device(cfg.device))
    digest = weights_sha256(model)
    if meta.get("weights_sha256") not in (None, digest):
        raise release.TamperedArtefact(
            f"{path / 'model.safetensors'}: its weights hash {digest[:12]} differs from the "
            f"{meta['weights_sha256'][:12]} recorded when it was built ({path / META}); the files were changed: "
            f"retrain it with `study pretrain --config CONFIG --force` (or delete {path}: the release, or a "
            "training, replaces it)")
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


# --- study pretrain: build, rebuild and release the artefacts of configs -----------------------


def artefacts_of(cfg: RunConfig) -> list[tuple[str, PretrainConfig | None, Path]]:
    """(role, pretraining config, cache folder) of every artefact ``cfg`` trains here: its
    tokenizer, teacher and (``init: base``) base student; none for pretrained models."""
    from .models import tokenizer_key

    if cfg.teacher.model.pretrained:
        return []
    tok_key = tokenizer_key(cfg.tokenizer)
    out = [("tokenizer", None, Path(cfg.cache_dir) / tok_key),
           ("teacher", cfg.teacher, artefact_path("teacher", cfg, cfg.teacher, tok_key))]
    if cfg.init == "base":
        out.append(("base", cfg.base, artefact_path("base", cfg, cfg.base, tok_key)))
    return out


def study_configs(grids_dir: str | Path = "configs/grids") -> list[RunConfig]:
    """One config per distinct set of artefacts among the cells of every grid in ``grids_dir``
    (the default study: the default corpus, the controls grid's late-answer one and the
    light-touch contrast's base student)."""
    from .grid import load_grid

    seen: dict[tuple, RunConfig] = {}
    for path in sorted(Path(grids_dir).glob("*.yaml")):
        for cell in load_grid(path).cells:
            seen.setdefault(tuple(str(p) for _, _, p in artefacts_of(cell.config)), cell.config)
    return list(seen.values())


def _check_meta(path: Path, cfg: RunConfig, p: PretrainConfig, tok_key: str) -> None:
    """A folder about to be released holds what its name says: the meta's config, corpus and
    tokenizer are the ones the current code derives from ``cfg``."""
    meta = json.loads((path / META).read_text())
    want = {"config": artefact_config(p), "corpus": pretrain_corpus(cfg.corpus, p).identity(), "tokenizer": tok_key}
    for key, value in want.items():
        if meta.get(key) != value:
            raise ValueError(f"{path / META}: its {key} is not the one the current config gives ({value}); "
                             f"retrain it with `study pretrain --force` before releasing it")


def pretrain_artefacts(cfg: RunConfig, force: bool = False, release_to: str | Path | None = None,
                       rebuilt: set[Path] | None = None) -> list[dict]:
    """Build the artefacts of ``cfg`` (``artefacts_of``) and score them: from the cache, else the
    release, else trained; with ``force``, each is trained again from scratch (its cached
    folder replaced, the release not read). ``release_to``: then write each into that release
    folder (``artefacts/``). Returns one row per artefact: role, name, weights (or tokenizer
    file) hash, where it came from (cached, released or trained) and how it compares with the
    release. ``rebuilt``: folders this command already retrained (for several configs), which
    are not retrained twice."""
    from .models import tokenizer_key

    rows, rebuilt = [], set() if rebuilt is None else rebuilt
    for role, p, path in artefacts_of(cfg):
        if force and path.exists() and path not in rebuilt:
            log.info("%s: retraining (--force); the cached copy is removed", path)
            shutil.rmtree(path)
        rebuilt.add(path)
        source = ("cached" if path.exists() else "trained" if force or release.released(path.name) is None
                  else "released")
        if role == "tokenizer":
            get_tokenizer(cfg.tokenizer, cfg.cache_dir, use_release=not force)
            digest = release.file_sha256(path / "tokenizer.json")
        else:
            _, meta = get_pretrained(role, cfg, p, use_release=not force)
            digest = meta["weights_sha256"]
        rel = release.released(path.name)
        if rel is None:
            vs = "not released"
        else:
            name = "tokenizer.json" if role == "tokenizer" else META
            theirs = (release.file_sha256(rel / name) if role == "tokenizer"
                      else json.loads((rel / META).read_text())["weights_sha256"])
            vs = "same as the release" if theirs == digest else f"DIFFERS from the release ({theirs[:12]})"
        row = {"role": role, "name": path.name, "sha256": digest, "source": source, "release": vs,
               "threads": None if p is None else p.threads}
        if release_to is not None:
            if p is not None:
                _check_meta(path, cfg, p, tokenizer_key(cfg.tokenizer))
            row["released_to"] = str(release.publish(path, release_to))
        rows.append(row)
    return rows
