"""Peer benchmark: tokens/s of one distillation training step of ours against TRL's GKDTrainer.

    pip install -e '.[bench]'                       # TRL is a benchmark-only extra
    python benchmarks/trl_peer.py                   # 3 warm-up + 30 timed steps of 16 examples
    python benchmarks/trl_peer.py --steps 5 --warmup 1 --threads 1     # a quick look

Both sides train the same tiny random-init Qwen3 student (``ModelConfig()``) against the same
frozen teacher (the default teacher's size), on the same synthetic traces, in the same order
(sequential batches, last incomplete batch dropped), with the same loss: forward
KL(teacher || student) at temperature 1, averaged over the completion tokens (``<think>`` ...
``<|end|>``), no CE term. A step is everything between two optimiser steps: building the batch,
the forwards, the loss, backward, clipping at 1.0 and AdamW.

* TRL: ``trl.experimental.gkd.GKDTrainer`` with ``lmbda=0`` (never samples from the student:
  supervised traces only), ``beta=0`` (its generalised JSD is then forward KL), ``seq_kd=False``,
  float32, no gradient checkpointing, no logging, evaluation or saving. Its default collator
  (``DataCollatorForChatML``) renders and tokenises every example's ``messages`` at every step.
* ours, live teacher: ``study.train.loss_step`` on ``collate`` of pre-tokenised items (the
  corpus is tokenised once, before training), the teacher forwarded every step.
* ours, live, re-tokenise: the same, but each step renders and tokenises its examples again
  (``encode`` + ``prepare``), as TRL's collator does: the like-for-like data path.
* ours, cached teacher: teacher outputs from ``study.teacher_cache`` (exact log-probs, built once
  before timing, the build time reported apart), no teacher forward in the step.

Tokens are non-padding input tokens; every variant forwards the same tokens at each step (the
script checks TRL's tokenisation against ours first, and both losses on the first batch). The
per-step ms is the median over the timed steps; tokens/s is total tokens / total time, so a
background load spike shows in tokens/s more than in the median. On a machine shared with
other CPU jobs, threads compete (2 OpenMP threads on 2 busy cores can slow a step many times
over, unevenly between variants): the script warns when the load average says so; use
``--threads 1`` there, or rerun idle. Not a test: machines differ, compare the rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from study.config import ModelConfig, RunConfig, TokenizerConfig, default_teacher
from study.data.pipeline import collate, encode, prepare
from study.data.synthetic import CorpusConfig, make_splits
from study.models import build_model, get_tokenizer
from study.teacher_cache import TeacherCache, build
from study.train import LoopSettings, loss_step, make_optimizer, pick_device, supervised_targets

CONDITION = "CoT+A"  # the completion: what TRL's collator supervises (checked below)


# --- timing helpers ---------------------------------------------------------------------------


class Stopwatch:
    """Wall time of every call of a module's forward (pre/post hooks) or of a wrapped callable,
    kept as (end time, seconds) so a timed window can pick its own calls afterwards."""

    def __init__(self):
        self.calls: list[tuple[float, float]] = []
        self._start = 0.0

    def hook(self, module: torch.nn.Module) -> list:
        def pre(*_):
            self._start = time.perf_counter()

        def post(*_):
            end = time.perf_counter()
            self.calls.append((end, end - self._start))

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def wrap(self, fn):
        def timed(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            end = time.perf_counter()
            self.calls.append((end, end - start))
            return out

        return timed

    def within(self, lo: float, hi: float) -> float:
        return sum(d for end, d in self.calls if lo < end <= hi)


def summarise(name: str, step_ends: list[float], tokens: list[int], warmup: int, parts: dict) -> dict:
    """Step times from consecutive step-end times; the timed window is every step after warm-up."""
    lo, hi = step_ends[warmup - 1], step_ends[-1]
    times = [b - a for a, b in zip(step_ends[warmup - 1 : -1], step_ends[warmup:])]
    timed_tokens = sum(tokens[warmup:])
    n = len(times)
    return {
        "variant": name,
        "steps": n,
        "ms_per_step_median": 1e3 * statistics.median(times),
        "ms_per_step_mean": 1e3 * (hi - lo) / n,
        "tokens": timed_tokens,
        "tokens_per_step": timed_tokens / n,
        "tokens_per_second": timed_tokens / (hi - lo),
        # Mean ms per step of each measured part inside the timed window.
        "parts_ms_per_step": {k: 1e3 * w.within(lo, hi) / n for k, w in parts.items()},
    }


# --- data and models --------------------------------------------------------------------------


def step_indices(n_examples: int, batch_size: int, steps: int) -> list[list[int]]:
    """Sequential batches, epoch after epoch, the last incomplete batch of an epoch dropped:
    the order TRL's dataloader gives with ``train_sampling_strategy='sequential'``, ``drop_last``."""
    per_epoch = n_examples // batch_size
    if per_epoch == 0:
        raise SystemExit(f"--examples {n_examples} cannot fill one batch of {batch_size}")
    return [list(range((s % per_epoch) * batch_size, (s % per_epoch + 1) * batch_size)) for s in range(steps)]


def setup(args):
    tok, _ = get_tokenizer(TokenizerConfig(), args.cache_dir)
    corpus = CorpusConfig(train_examples=args.examples, val_examples=0, test_examples=0)
    examples = make_splits(corpus)["train"]
    cfg = RunConfig(condition=CONDITION, lsp=1.0, alpha=1.0, temperature=1.0, corpus=corpus, eval_examples=0)
    encoded = encode(examples, tok)
    items, empty = prepare(encoded, cfg)
    if empty:
        raise SystemExit(f"{len(empty)} examples have no supervised token under {CONDITION}")
    torch.manual_seed(0)
    teacher = build_model(default_teacher().model, tok, args.attn).eval().requires_grad_(False)
    student = build_model(ModelConfig(), tok, args.attn)
    return tok, cfg, examples, encoded, items, teacher, student.state_dict()


def fresh_student(tok, state, attn):
    model = build_model(ModelConfig(), tok, attn)
    model.load_state_dict(state)
    return model.train()


# --- ours -------------------------------------------------------------------------------------


def run_ours(name, tok, cfg, examples, items, teacher, state, schedule, s: LoopSettings, args,
             retokenise: bool = False) -> dict:
    device = pick_device("cpu")
    model = fresh_student(tok, state, args.attn)
    opt, sched = make_optimizer(model, s)
    parts = {"teacher_forward": Stopwatch(), "student_forward": Stopwatch(), "collate": Stopwatch()}
    handles = parts["student_forward"].hook(model.model)
    if teacher is not None:
        handles += parts["teacher_forward"].hook(teacher.model)

    def batch_of(indices):
        if retokenise:  # render + tokenise + sections + mask every step, like TRL's collator
            step_items, _ = prepare(encode([examples[i] for i in indices], tok), cfg)
        else:
            step_items = [items[i] for i in indices]
        return collate(step_items, tok.pad_token_id)

    make_batch = parts["collate"].wrap(batch_of)
    step_ends, tokens, first = [time.perf_counter()], [], None
    for indices in schedule:
        batch = make_batch(indices)
        out = loss_step(model, teacher, batch, s, supervised_targets(batch), device)
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step_ends.append(time.perf_counter())
        tokens.append(int(batch["attention_mask"].sum()))
        first = first if first is not None else out.total.item()
    for h in handles:
        h.remove()
    if teacher is None:
        parts.pop("teacher_forward")
    return {**summarise(name, step_ends[1:], tokens, args.warmup, parts), "first_loss": first}


# --- TRL --------------------------------------------------------------------------------------


def trl_messages(examples) -> list[dict]:
    return [{"messages": [{"role": "user", "content": e.question},
                          {"role": "assistant", "content": e.completion}]} for e in examples]


def make_trl(tok, examples, teacher, state, s: LoopSettings, args, max_length: int, out_dir: str):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we know GKD lives in trl.experimental
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_train_begin(self, *_, **__):
            self.ends = [time.perf_counter()]

        def on_step_end(self, *_, **__):
            self.ends.append(time.perf_counter())

    class CountingGKD(GKDTrainer):
        """Records the non-padding tokens of each step's batch; nothing else changes."""

        step_tokens: list[int] = []
        first_loss: float | None = None

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.step_tokens.append(int(inputs["attention_mask"].sum()))
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self.first_loss is None:
                self.first_loss = loss.item()
            return loss

    config = GKDConfig(
        output_dir=out_dir,
        # the loss: forward KL(teacher || student) on the given traces, temperature 1
        lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False, max_length=max_length,
        # GKDConfig defaults to bf16 and gradient checkpointing: the same float32 step as ours
        # (activation_checkpointing is transformers 5's name; the deprecated alias must agree)
        bf16=False, fp16=False, activation_checkpointing=False, gradient_checkpointing=False, use_cpu=True,
        per_device_train_batch_size=s.batch_size, gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps, learning_rate=s.lr, weight_decay=s.weight_decay,
        max_grad_norm=s.grad_clip, optim="adamw_torch", warmup_steps=0, seed=s.seed,
        train_sampling_strategy="sequential", dataloader_drop_last=True,
        dataloader_num_workers=0, dataloader_pin_memory=False,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=True, include_num_input_tokens_seen="no",
    )
    clock = StepClock()
    trainer = CountingGKD(
        model=fresh_student(tok, state, args.attn), teacher_model=teacher, args=config,
        train_dataset=Dataset.from_list(trl_messages(examples)), processing_class=tok,
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)  # prints the end-of-training metrics dict
    model = trainer.model
    settings = {"bf16": trainer.args.bf16, "activation_checkpointing": trainer.args.activation_checkpointing,
                "checkpointing_on_model": getattr(model, "is_activation_checkpointing", False),
                "dtype": str(next(model.parameters()).dtype), "lmbda": trainer.lmbda, "beta": trainer.beta,
                "seq_kd": trainer.seq_kd, "device": str(trainer.args.device)}
    expected = {"bf16": False, "activation_checkpointing": False, "checkpointing_on_model": False,
                "dtype": "torch.float32", "lmbda": 0.0, "beta": 0.0, "seq_kd": False, "device": "cpu"}
    if settings != expected:
        raise RuntimeError(f"GKDTrainer is not set up as intended: {settings} != {expected}")
    return trainer, clock


def run_trl(trainer, clock, teacher, args) -> dict:
    parts = {"teacher_forward": Stopwatch(), "student_forward": Stopwatch(), "collate": Stopwatch(),
             "fetch": Stopwatch()}
    handles = parts["teacher_forward"].hook(teacher.model) + parts["student_forward"].hook(trainer.model.model)
    trainer.data_collator = parts["collate"].wrap(trainer.data_collator)
    # The dataloader reads each batch's rows from the Arrow table (datasets' __getitems__,
    # looked up on the instance by torch's fetcher) before the collator sees them.
    dataset = trainer.train_dataset
    dataset.__getitems__ = parts["fetch"].wrap(dataset.__getitems__)
    trainer.step_tokens = []
    trainer.train()
    for h in handles:
        h.remove()
    del dataset.__getitems__
    if not parts["fetch"].calls:
        parts.pop("fetch")  # another datasets/torch version fetched rows another way
    if len(clock.ends) != args.warmup + args.steps + 1:
        raise RuntimeError(f"TRL ran {len(clock.ends) - 1} steps, expected {args.warmup + args.steps}")
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    return {**summarise("TRL GKDTrainer (lmbda=0, beta=0)", clock.ends[1:], trainer.step_tokens, args.warmup, parts),
            "first_loss": trainer.first_loss, "optimizer": type(opt).__name__,
            "scheduler": type(trainer.lr_scheduler).__name__}


# --- checks -----------------------------------------------------------------------------------


def check_tokenisation(trainer, examples, items) -> dict:
    """TRL's collator on every example against our items: ids and supervised positions."""
    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[i] for i in range(len(examples))])
    same_ids = same_labels = 0
    length_diff = []
    for row, it in enumerate(items):
        keep = batch["attention_mask"][row].bool()  # TRL pads on the left
        ids, labels = batch["input_ids"][row][keep].tolist(), batch["labels"][row][keep].tolist()
        length_diff.append(len(ids) - len(it.ids))
        same_ids += ids == it.ids
        same_labels += labels == it.labels
    n = len(items)
    return {
        "examples": n,
        "same_ids": same_ids,
        "same_supervised_positions": same_labels,
        "tokens_trl": int(batch["attention_mask"].sum()),
        "tokens_ours": sum(len(it.ids) for it in items),
        "max_length_difference": max(length_diff, key=abs),
        "supervised_trl": int((batch["labels"][:, 1:] != -100).sum()),
        "supervised_ours": sum(sum(l != -100 for l in it.labels[1:]) for it in items),
        "padding_side_trl": "left",
    }


def check_losses(trainer, tok, items, teacher, state, s, schedule, args) -> dict:
    """Both losses on the first batch with the initial weights (no optimiser step)."""
    first = schedule[0]
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in first])
    model = fresh_student(tok, state, args.attn)
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, inputs).item()
    batch = collate([items[i] for i in first], tok.pad_token_id)
    ours = loss_step(fresh_student(tok, state, args.attn), teacher, batch, s, supervised_targets(batch),
                     pick_device("cpu"))
    return {"trl": trl_loss, "ours_live": ours.total.item(), "ours_kd": ours.kd.item(),
            "abs_diff": abs(trl_loss - ours.total.item()),
            "rel_diff": abs(trl_loss - ours.total.item()) / abs(trl_loss)}


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed optimiser steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them (>= 1)")
    ap.add_argument("--batch-size", type=int, default=16, help="examples per step")
    ap.add_argument("--examples", type=int, default=None,
                    help="training examples (default: enough that no step repeats one)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    ap.add_argument("--cache-dir", default="cache", help="where the tokenizer is cached")
    args = ap.parse_args()
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be >= 1")
    try:
        import trl
    except ImportError:
        raise SystemExit("TRL is not installed: pip install -e '.[bench]'") from None
    import transformers

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    total_steps = args.warmup + args.steps
    args.examples = args.examples or args.batch_size * total_steps
    tok, cfg, examples, encoded, items, teacher, state = setup(args)
    schedule = step_indices(len(items), args.batch_size, total_steps)
    s = LoopSettings(steps=total_steps, batch_size=args.batch_size, lr=args.lr, grad_clip=1.0,
                     alpha=1.0, loss="forward_kl", temperature=1.0)
    max_length = max(len(it.ids) for it in items)

    with tempfile.TemporaryDirectory() as tmp:
        trainer, clock = make_trl(tok, examples, teacher, state, s, args, max_length, tmp)
        tok_check = check_tokenisation(trainer, examples, items)
        loss_check = check_losses(trainer, tok, items, teacher, state, s, schedule, args)

        # The teacher cache: one pass over the full sequences, exact log-probabilities.
        cache_dir = Path(tmp) / "teacher_outputs"
        cache_dir.mkdir()
        start = time.perf_counter()
        build(teacher, [(e.id, e.ids) for e in encoded], "exact", 0, cache_dir, tok.pad_token_id, pick_device("cpu"))
        cache_seconds = time.perf_counter() - start
        cached_items = TeacherCache.open(cache_dir).attach(items)

        rows = [run_trl(trainer, clock, teacher, args)]
        rows.append(run_ours("ours: live teacher", tok, cfg, examples, items, teacher, state, schedule, s, args))
        rows.append(run_ours("ours: live teacher, re-tokenise each step", tok, cfg, examples, items, teacher,
                             state, schedule, s, args, retokenise=True))
        rows.append(run_ours("ours: cached teacher (exact)", tok, cfg, examples, cached_items, None, state,
                             schedule, s, args))
        del cached_items

    load = {"cpus": os.cpu_count(), "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}
    ref = rows[0]["tokens_per_second"]
    for r in rows:
        r["ratio_to_trl"] = r["tokens_per_second"] / ref
    if len({r["tokens"] for r in rows}) != 1:
        print(f"WARNING: the variants forwarded different tokens: {[r['tokens'] for r in rows]}")

    print(f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{args.threads} thread(s), batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{rows[0]['tokens_per_step']:.0f} tokens/step (max length {max_length}), V = {len(tok)}")
    print(f"tokenisation: TRL ids equal ours for {tok_check['same_ids']}/{tok_check['examples']} examples, "
          f"supervised positions for {tok_check['same_supervised_positions']}/{tok_check['examples']} "
          f"(supervised targets: TRL {tok_check['supervised_trl']}, ours {tok_check['supervised_ours']})")
    print(f"first-batch loss (forward KL, initial weights): TRL {loss_check['trl']:.7f}, ours "
          f"{loss_check['ours_live']:.7f}, |diff| {loss_check['abs_diff']:.2e} (rel {loss_check['rel_diff']:.1e})")
    for r in rows:
        r["first_loss_vs_trl_check"] = r["first_loss"] - loss_check["trl"]
    print("first training step's loss minus that check: "
          + ", ".join(f"{r['variant'].split(' (')[0]} {r['first_loss_vs_trl_check']:+.1e}" for r in rows))
    print(f"teacher cache build (once, not in the steps): {cache_seconds:.2f} s for {len(encoded)} sequences")
    if load_before + args.threads > load["cpus"]:
        print(f"WARNING: the 1-minute load average was {load_before:.2f} before this run on {load['cpus']} CPUs: "
              f"other processes compete with its {args.threads} thread(s), so the timings include contention "
              "(oversubscribed OpenMP threads can slow a step many times over); compare medians, or rerun idle")
    print()
    header = (f"{'variant':<44} {'ms/step':>8} {'tokens/s':>9} {'vs TRL':>7}   "
              "mean ms/step: fetch  collate  teacher fwd  student fwd  rest")
    print(header)
    print("-" * len(header))
    for r in rows:
        p = r["parts_ms_per_step"]
        rest = r["ms_per_step_mean"] - sum(p.values())
        print(f"{r['variant']:<44} {r['ms_per_step_median']:8.1f} {r['tokens_per_second']:9.0f} "
              f"{r['ratio_to_trl']:6.2f}x   {'':13}{p.get('fetch', 0.0):5.1f}  {p['collate']:7.1f}  "
              f"{p.get('teacher_forward', 0.0):11.1f}  {p['student_forward']:11.1f}  {rest:5.1f}")
    print("ms/step: median; tokens/s: total over the timed steps; parts: means over the timed steps. fetch: "
          "reading the batch's rows from the datasets table (TRL); collate: building the batch tensors (TRL and "
          "re-tokenise: rendering + tokenising too); fwd: transformer body, hooks on model.model; rest: output "
          "heads, loss, backward, clipping, AdamW, framework")
    record = {
        "benchmark": "trl_peer", "trl": trl.__version__, "transformers": transformers.__version__,
        "torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "examples": args.examples,
        "condition": CONDITION, "attn_implementation": args.attn, "vocab_size": len(tok),
        "machine_load": load, "teacher_cache_build_seconds": cache_seconds, "tokenisation": tok_check, "first_batch_loss": loss_check,
        "variants": rows,
    }
    print(json.dumps(record))


if __name__ == "__main__":
    sys.exit(main())
