"""A fixture set of run records in the real schema, with every variant of the default grids and
three seeds each, for table and figure tests that must not train anything.

The accuracies are chosen so that the comparisons have known answers (CoT-inclusive
conditions near 0.9, A and P+A near 0.3, left above right, accuracy rising with lsp); costs
scale with the kept tokens as they do in real runs. ``write_fixture_records(folder)`` writes
them as ``<run_id>.json`` through the package's own record writer, each with its raw lm-eval
output beside it (``<run_id>.lm_eval.json``, the schema ``study.evaluate`` writes): one sample
per test problem of the run's corpus, whose generation holds a first and a last ``\\boxed{}``
answer, right on exactly as many problems as the record's accuracy by each rule says.
``write_run`` writes one run from its per-problem correctness, for tests that need their own.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from dataclasses import replace

from study import records
from study.config import RunConfig, config_from_dict
from study.identity import run_id

FIXTURE_WEIGHTS = {"teacher": "0" * 64, "base": "1" * 64}  # no real artefacts behind the fixture
from study.data.synthetic import make_splits
from study.evaluate import TASK

SEEDS = (42, 43, 44)
JITTER = (-0.02, 0.0, 0.02)  # per seed: a spread, so confidence intervals have width
_ORDERS = list(itertools.permutations(range(len(SEEDS))))


def jitter(index: int) -> tuple[float, ...]:
    """Variant ``index``'s per-seed offsets: a permutation of JITTER, doubled for every other
    block of six variants. The offsets sum to 0 (the variant's mean is its accuracy) and differ
    between the variants the tables compare, so per-seed differences have a spread (a paired
    t-test of offsets shared by both sides would have none)."""
    scale = 1 + (index // len(_ORDERS)) % 2
    return tuple(round(scale * JITTER[k], 3) for k in _ORDERS[index % len(_ORDERS)])

# variant overrides -> (accuracy, accuracy by first \boxed{}, fraction of tokens kept)
VARIANTS: list[tuple[dict, float, float, float]] = [
    ({"condition": "A"}, 0.30, 0.30, 1.0),
    ({"condition": "P+A"}, 0.32, 0.32, 1.0),
    ({"condition": "CoT"}, 0.88, 0.90, 1.0),
    ({"condition": "CoT+A"}, 0.90, 0.91, 1.0),
    ({"condition": "P+CoT"}, 0.87, 0.88, 1.0),
    ({}, 0.90, 0.90, 1.0),  # P+CoT+A, lsp 1.0: the reference run
    *[({"lsp": lsp}, round(0.2 + 0.7 * min(1.0, lsp / 0.7), 3), round(0.3 + 0.6 * min(1.0, lsp / 0.5), 3), lsp)
      for lsp in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)],
    ({"lsp": 0.5, "window": "middle"}, 0.60, 0.62, 0.5),
    ({"lsp": 0.5, "window": "right"}, 0.40, 0.41, 0.5),
    ({"random_mask": 0.506}, 0.85, 0.86, 1.0),
    ({"cut_after_think": True}, 0.84, 0.85, 0.93),
    ({"lsp": 0.5, "corpus": {"train_examples": 6400}}, 0.80, 0.90, 1.0),
    ({"corpus": {"layout": "late"}}, 0.86, 0.86, 1.0),
    ({"corpus": {"layout": "late"}, "lsp": 0.5}, 0.25, 0.30, 0.5),
    # Our extension: lead spans that keep their ending (same budget, students that stop).
    *[({"lsp": lsp, "keep_answer": True}, acc, acc, lsp) for lsp, acc in ((0.3, 0.8), (0.5, 0.88), (0.7, 0.9))],
]

FULL_TOKENS = 1_256_223  # tokens forwarded by the default run (3 epochs of the default corpus)
FULL_SECONDS = 23.0
FULL_FLOPS = 1.3e12
FULL_PEAK = 31_822_944


def _stopping(cfg: RunConfig) -> dict:
    """How generations end: plain lead spans never see the end and loop to the limit more often;
    a lead span that keeps its ending stops early."""
    looping = cfg.lsp < 1 and not cfg.keep_answer
    return {"closed_think": 0.4 if looping else 1.0, "hit_token_limit": 0.6 if looping else 0.0,
            "mean_generated_tokens": 210.0 if looping else 48.0 if cfg.keep_answer else 110.0}


def _record(cfg: RunConfig, acc: float, acc_first: float, kept: float, n: int | None = None) -> dict:
    examples = cfg.corpus.train_examples
    tokens = int(FULL_TOKENS * kept * examples / 3200)
    steps = cfg.epochs * (examples // cfg.batch_size)
    curve = [{"step": s, "loss": 3.0 * (1 - kept / 2) / s ** 0.3, "ce": 3.2 / s ** 0.3, "kd": 2.8 / s ** 0.3}
             for s in range(1, steps + 1, max(1, steps // 60))]
    n = n or cfg.eval_examples
    return {
        "run_id": run_id(cfg, FIXTURE_WEIGHTS),
        "config": copy.deepcopy(__import__("dataclasses").asdict(cfg)),
        "env": {"study": "fixture", "torch": "2.13.0+cpu", "transformers": "5", "python": "3.11",
                "device": "cpu", "threads": 2, "git_commit": None, "git_dirty": None},
        "teacher": {"id": "teacher-fixture", "accuracy": 1.0, "parameters": 878208, "train_seconds": 560.0,
                    "cached": True, "cache": None},
        "student": {"init": "base", "base_id": "base-fixture", "base_accuracy": 0.11,
                    "base_one_op_accuracy": 1.0, "parameters": 119296},
        "data": {"examples": examples, "empty_examples": 0, "empty_example_ids": [], "steps": steps,
                 "tokens_forwarded": tokens, "tokens_padded": int(tokens * 1.1),
                 "tokens_full_sequences": int(FULL_TOKENS * examples / 3200), "tokens_supervised": int(tokens * 0.99),
                 "supervised_by_section": {"P": int(tokens * 0.13), "CoT": int(tokens * 0.79), "A": int(tokens * 0.07)}},
        "compute": {"train_seconds": FULL_SECONDS * (0.15 + 0.85 * kept) * examples / 3200,
                    "eval_seconds": 2.0, "wall_seconds": 30.0 * kept + 5,
                    "tokens_per_second": tokens / (FULL_SECONDS * (0.15 + 0.85 * kept)),
                    "peak_memory_bytes": int(FULL_PEAK * (0.3 + 0.7 * kept)),
                    "peak_memory_source": "cpu_profiler_step_allocations+parameters+adam_state",
                    "flops_profiler": FULL_FLOPS * kept * examples / 3200 * 0.99,
                    "flops_analytic": FULL_FLOPS * kept * examples / 3200, "flops_ratio": 0.99,
                    "flops_teacher_profiler": 0.0, "flops_teacher_analytic": 0.0, "flops_teacher_ratio": None,
                    "flops_teacher_live_analytic": 2.2 * FULL_FLOPS * kept, "profiled_steps": 3,
                    "attention": "eager", "dtype": "float32"},
        "quality": {"study_synthetic": {"accuracy": acc, "stderr": (acc * (1 - acc) / n) ** 0.5, "n": n,
                                        "accuracy_first_boxed": acc_first, **_stopping(cfg),
                                        "max_gen_toks": cfg.max_gen_toks}},
        "curve": curve,
    }


def fixture_configs() -> list[tuple[RunConfig, float, float, float]]:
    out = []
    for index, (overrides, acc, acc_first, kept) in enumerate(VARIANTS):
        base = config_from_dict(copy.deepcopy(overrides))
        for seed, offset in zip(SEEDS, jitter(index)):
            out.append((replace(base, seed=seed), round(acc + offset, 3), round(acc_first + offset, 3), kept))
    return out


@functools.lru_cache(maxsize=8)
def problems_of(corpus) -> list:
    """The test split of a corpus config, the problems every run of that corpus scores."""
    return make_splits(corpus)["test"]


def leading(n: int, accuracy: float) -> list[int]:
    """0/1 correctness on ``n`` problems: the first round(accuracy * n) right. The fixture's
    runs share this order (problem 0 the easiest), as real runs find the same problems easy."""
    k = round(accuracy * n)
    assert abs(k / n - accuracy) < 1e-9, f"accuracy {accuracy} is not a multiple of 1/{n}"
    return [1] * k + [0] * (n - k)


def lm_eval_output(cfg: RunConfig, correct_last, correct_first) -> dict:
    """The raw lm-eval output of a run that is right on problem j by the last \\boxed{} iff
    ``correct_last[j]`` and by the first iff ``correct_first[j]``; problems: the first n of the
    run's test split, n = len(correct_last)."""
    n = len(correct_last)
    problems = problems_of(cfg.corpus)[:n]
    assert len(problems) == n == len(correct_first)
    samples = []
    for ex, last_ok, first_ok in zip(problems, correct_last, correct_first):
        wrong = str((int(ex.answer) + 1) % cfg.corpus.modulus)
        first, last = (ex.answer if ok else wrong for ok in (first_ok, last_ok))
        generation = (f"<think>We need {ex.question[len('Compute '):-1]}. So \\boxed{{{first}}}. Wait, let me "
                      f"double-check. Yes, \\boxed{{{last}}}.</think>The answer is \\boxed{{{last}}}.")
        samples.append({"id": ex.id, "prompt": f"<|user|>{ex.question}<|assistant|>", "target": ex.answer,
                        "generation": generation, "last_boxed": last})
    acc, acc_first = sum(correct_last) / n, sum(correct_first) / n
    results = {"name": TASK, "alias": TASK, "sample_len": n,
               "exact_match,last_boxed": acc, "exact_match_stderr,last_boxed": (acc * (1 - acc) / (n - 1)) ** 0.5,
               "exact_match,first_boxed": acc_first,
               "exact_match_stderr,first_boxed": (acc_first * (1 - acc_first) / (n - 1)) ** 0.5}
    return {"results": {TASK: results}, "configs": {TASK: {"task": TASK, "output_type": "generate_until"}},
            "versions": {TASK: 1.0}, "n-samples": {TASK: {"original": n, "effective": n}}, "samples": samples}


def write_run(folder, cfg: RunConfig, correct_last, correct_first=None, kept: float = 1.0):
    """Write one run (record and lm-eval output) from its per-problem correctness (0/1 per test
    problem; the first-\\boxed{} correctness defaults to the last's). Returns the record path."""
    correct_first = list(correct_last if correct_first is None else correct_first)
    n = len(correct_last)
    record = _record(cfg, sum(correct_last) / n, sum(correct_first) / n, kept, n=n)
    path = records.write(record, folder)
    records.atomic_write_text(path.with_name(f"{record['run_id']}.lm_eval.json"),
                              json.dumps(lm_eval_output(cfg, list(correct_last), correct_first), indent=1))
    return path


def write_fixture_records(folder) -> list:
    """Write the fixture records (22 variants x 3 seeds) and their lm-eval outputs under
    ``folder``; returns the record paths."""
    return [write_run(folder, cfg, leading(cfg.eval_examples, acc), leading(cfg.eval_examples, first), kept)
            for cfg, acc, first, kept in fixture_configs()]
