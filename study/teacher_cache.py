"""One teacher pass per example for a whole grid: the teacher-output cache.

A causal teacher's outputs on a prefix are exactly the first outputs on the full sequence, so
one pass over each untruncated training sequence serves every lead-span proportion, the cut
after ``</think>``, random masking and every supervision condition: each run slices the rows
it needs. A middle or right window starts the sequence elsewhere, and a lead span that keeps
its ending (``keep_answer``) joins the ending to the cut, so the teacher sees another context
there; those runs get their own entry, keyed by the view, built from the run's sequences
(never from the full-sequence outputs).

    cache = get_or_build(cfg, teacher, teacher_meta["weights_sha256"], tokenizer, tok_key, encoded, device)
    items = cache.attach(items)      # every TrainItem carries a view of its teacher rows

Layout of ``cache_dir/teacher_outputs-<key>/`` (the key hashes the teacher's weights, the
attention implementation and thread count of its forward, the tokenizer, the corpus, the mode
and k, and the window; never a step or a batch position):

    meta.json            mode, k, vocabulary, examples, tokens, bytes, build time, FLOPs
    index.json           example id -> [first row, rows]
    ids.npy              int32 [tokens]: the token ids the rows were computed on (checked)
    logprobs.npy         exact: float32 [tokens, V] teacher log-probabilities
    topk_indices.npy     topk:  int32 [tokens, k]
    topk_logprobs.npy    topk:  float32 [tokens, k + 1], the last column is the tail mass

Arrays are memory-mapped when read, so a run pages in only what it touches. Rows are written
in float32: the cached loss matches a live teacher's to float32 rounding.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig, config_hash
from .identity import execution, resolved_threads
from .losses import topk_logprobs
from .models import build_once
from .profiling import analytic_flops
from .sections import truncate
from .train import torch_threads

EXACT_MAX_VOCAB = 4096  # "auto" stores full distributions up to this vocabulary size
BUILD_BATCH = 32


def cache_mode(cfg: RunConfig, vocab_size: int) -> tuple[str, int]:
    """(mode, k) for the run: k is 0 in exact mode."""
    mode = cfg.teacher_cache_mode
    if mode == "auto":
        mode = "exact" if vocab_size <= EXACT_MAX_VOCAB else "topk"
    return mode, (cfg.teacher_cache_topk if mode == "topk" else 0)


def view_of(cfg: RunConfig) -> dict | None:
    """None when the run's sequences are prefixes of the full sequences (served by the
    full-sequence entry); otherwise what determines the windowed sequences. A lead span that
    keeps its ending (``keep_answer``) joins the ending to the cut, so the teacher reads
    ``</think>`` in another context there: it is a view of its own too."""
    if cfg.lsp == 1.0 or (cfg.window == "left" and not cfg.keep_answer):
        return None  # every window of the whole sequence is the sequence; a lead span is a prefix
    return {"lsp": cfg.lsp, "window": cfg.window, "cut_after_think": cfg.cut_after_think,
            "keep_answer": cfg.keep_answer}


@dataclass
class TeacherCache:
    path: Path
    meta: dict
    index: dict[str, tuple[int, int]]
    ids: np.ndarray
    arrays: dict[str, np.ndarray]  # "logprobs" or "topk_indices" + "topk_logprobs"

    @classmethod
    def open(cls, path: Path) -> TeacherCache:
        meta = json.loads((path / "meta.json").read_text())
        index = {k: tuple(v) for k, v in json.loads((path / "index.json").read_text()).items()}
        names = ["logprobs"] if meta["mode"] == "exact" else ["topk_indices", "topk_logprobs"]
        # Copy-on-write maps: torch views of them need writable memory, and nothing writes.
        arrays = {n: np.load(path / f"{n}.npy", mmap_mode="c") for n in names}
        return cls(path, meta, index, np.load(path / "ids.npy", mmap_mode="c"), arrays)

    def rows(self, example_id: str, ids: list[int]) -> dict[str, torch.Tensor]:
        """Views of the teacher rows for a sequence that is a prefix of the cached one."""
        if example_id not in self.index:
            raise KeyError(f"example {example_id!r} is not in the teacher cache {self.path.name}")
        start, length = self.index[example_id]
        n = len(ids)
        cached = self.ids[start : start + min(n, length)]
        if n > length or not np.array_equal(cached, np.asarray(ids, dtype=np.int32)):
            raise ValueError(
                f"example {example_id!r}: its {n} tokens are not a prefix of the {length} the teacher "
                f"cache {self.path.name} was built on; delete that folder to rebuild it"
            )
        return {name: torch.from_numpy(arr[start : start + n]) for name, arr in self.arrays.items()}

    def attach(self, items: list) -> list:
        """The items with their teacher rows (zero-copy views) attached."""
        return [replace(it, teacher=self.rows(it.id, it.ids)) for it in items]

    def record(self, built: bool) -> dict:
        return {"id": self.path.name, "built_in_this_run": built, **self.meta}


def sequences_for(cfg: RunConfig, encoded) -> list[tuple[str, list[int]]]:
    """The sequences the teacher runs on: full ones, or the run's windows (see ``view_of``)."""
    if view_of(cfg) is None:
        return [(e.id, e.ids) for e in encoded]
    return [(e.id, truncate(e.ids, e.sections, cfg.lsp, cfg.window, cfg.cut_after_think,
                          cfg.keep_answer)[0]) for e in encoded]


@torch.no_grad()
def build(teacher, sequences: list[tuple[str, list[int]]], mode: str, k: int, out: Path, pad_id: int,
          device, vocab: int = 0) -> None:
    """Run the teacher once over every sequence and write the cache files into ``out``: its
    distributions over the first ``vocab`` tokens (0: the whole head), so the rows of a head
    padded past the tokenizer get no mass."""
    if len({sid for sid, _ in sequences}) != len(sequences):  # before the teacher pass, not after
        raise ValueError("example ids must be unique to key the teacher cache")
    start_time = time.perf_counter()
    vocab = vocab or teacher.config.vocab_size
    lengths = [len(ids) for _, ids in sequences]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    ids_out = np.lib.format.open_memmap(out / "ids.npy", mode="w+", dtype=np.int32, shape=(total,))
    if mode == "exact":
        arrays = {"logprobs": np.lib.format.open_memmap(out / "logprobs.npy", mode="w+", dtype=np.float32,
                                                        shape=(total, vocab))}
    else:
        arrays = {
            "topk_indices": np.lib.format.open_memmap(out / "topk_indices.npy", mode="w+", dtype=np.int32,
                                                      shape=(total, k)),
            "topk_logprobs": np.lib.format.open_memmap(out / "topk_logprobs.npy", mode="w+",
                                                       dtype=np.float32, shape=(total, k + 1)),
        }
    # Length-sorted batches waste little padding; right padding leaves real positions exact.
    order = sorted(range(len(sequences)), key=lambda i: lengths[i])
    shapes = []
    for b in range(0, len(order), BUILD_BATCH):
        chunk = order[b : b + BUILD_BATCH]
        width = max(lengths[i] for i in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            input_ids[row, : lengths[i]] = torch.tensor(sequences[i][1])
            attention[row, : lengths[i]] = 1
        shapes.append((len(chunk), width))
        logits = teacher(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits[..., :vocab].float()
        for row, i in enumerate(chunk):
            lo, hi = offsets[i], offsets[i + 1]
            ids_out[lo:hi] = np.asarray(sequences[i][1], dtype=np.int32)
            z = logits[row, : lengths[i]]
            if mode == "exact":
                arrays["logprobs"][lo:hi] = torch.log_softmax(z, dim=-1).cpu().numpy()
            else:
                idx, lp = topk_logprobs(z, k)
                arrays["topk_indices"][lo:hi] = idx.cpu().numpy()
                arrays["topk_logprobs"][lo:hi] = lp.cpu().numpy()
    for arr in [ids_out, *arrays.values()]:
        arr.flush()
    nbytes = sum((out / f"{n}.npy").stat().st_size for n in arrays)
    meta = {
        "mode": mode,
        "k": k,
        "vocab_size": vocab,
        "examples": len(sequences),
        "tokens": total,
        "bytes": nbytes,
        "bytes_per_token": nbytes / max(total, 1),
        "build_seconds": time.perf_counter() - start_time,
        "build_flops_analytic": analytic_flops(teacher.config, shapes, backward=False),
    }
    index = {sid: [int(offsets[i]), lengths[i]] for i, (sid, _) in enumerate(sequences)}
    (out / "index.json").write_text(json.dumps(index))
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def cache_key(cfg: RunConfig, teacher_weights: str, tok_key: str, mode: str, k: int, threads: int) -> str:
    """What determines the cached rows: the teacher's weights (their hash, not its config),
    the device type, attention implementation and thread count its forward ran with, the
    tokenizer, the corpus, the mode and k, and the window."""
    return config_hash({"format": 2, "teacher_weights": teacher_weights, "tokenizer": tok_key,
                        "device": execution(cfg)["device"],
                        "attn_implementation": cfg.attn_implementation, "threads": threads,
                        "corpus": cfg.corpus.identity(), "mode": mode, "k": k, "view": view_of(cfg)})


def get_or_build(cfg: RunConfig, teacher, teacher_weights: str, tokenizer, tok_key: str, encoded,
                 device) -> tuple[TeacherCache, bool]:
    """The run's teacher cache, built on first use with the run's thread count (so a grid that
    builds it for its cells computes the rows they would). Returns (cache, built_in_this_call)."""
    vocab = len(tokenizer)  # the real tokens: a padded head's extra rows are never cached
    mode, k = cache_mode(cfg, vocab)
    threads = resolved_threads(cfg)
    path = Path(cfg.cache_dir) / f"teacher_outputs-{cache_key(cfg, teacher_weights, tok_key, mode, k, threads)}"
    def make(tmp):
        with torch_threads(threads):
            build(teacher, sequences_for(cfg, encoded), mode, k, tmp, tokenizer.pad_token_id, device, vocab)

    built = build_once(path, make)
    return TeacherCache.open(path), built
