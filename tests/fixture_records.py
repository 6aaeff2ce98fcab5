"""A fixture set of run records in the real schema, with every variant of the default grids and
three seeds each, for table and figure tests that must not train anything.

The accuracies are chosen so that the comparisons have known answers (CoT-inclusive
conditions near 0.9, A and P+A near 0.3, left above right, accuracy rising with lsp); costs
scale with the kept tokens as they do in real runs. ``write_fixture_records(folder)`` writes
them as ``<run_id>.json`` through the package's own record writer.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from study import records
from study.config import RunConfig, config_from_dict, run_id

SEEDS = (42, 43, 44)
JITTER = (-0.02, 0.0, 0.02)  # per seed: a spread, so confidence intervals have width

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
]

FULL_TOKENS = 1_256_223  # tokens forwarded by the default run (3 epochs of the default corpus)
FULL_SECONDS = 23.0
FULL_FLOPS = 1.3e12
FULL_PEAK = 31_822_944


def _record(cfg: RunConfig, acc: float, acc_first: float, kept: float) -> dict:
    examples = cfg.corpus.train_examples
    tokens = int(FULL_TOKENS * kept * examples / 3200)
    steps = cfg.epochs * (examples // cfg.batch_size)
    curve = [{"step": s, "loss": 3.0 * (1 - kept / 2) / s ** 0.3, "ce": 3.2 / s ** 0.3, "kd": 2.8 / s ** 0.3}
             for s in range(1, steps + 1, max(1, steps // 60))]
    n = cfg.eval_examples
    return {
        "run_id": run_id(cfg),
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
                                        "accuracy_first_boxed": acc_first, "closed_think": 1.0,
                                        "hit_token_limit": 0.0, "mean_generated_tokens": 110.0,
                                        "max_gen_toks": cfg.max_gen_toks}},
        "curve": curve,
    }


def fixture_configs() -> list[tuple[RunConfig, float, float, float]]:
    out = []
    for overrides, acc, acc_first, kept in VARIANTS:
        base = config_from_dict(copy.deepcopy(overrides))
        for seed, jitter in zip(SEEDS, JITTER):
            out.append((replace(base, seed=seed), round(acc + jitter, 3), round(acc_first + jitter, 3), kept))
    return out


def write_fixture_records(folder) -> list:
    """Write the fixture records (22 variants x 3 seeds) under ``folder``; returns the paths."""
    return [records.write(_record(cfg, acc, first, kept), folder) for cfg, acc, first, kept in fixture_configs()]
