"""Evaluation: a thin layer over ``lm_eval.simple_evaluate`` with the in-memory model.

The synthetic test split is written as JSONL (id, prompt, answer) and scored by the task
``study_synthetic`` shipped in ``study/tasks`` (greedy ``generate_until``, exact match). Two
answer rules are scored from the same generations: the paper's (last ``\\boxed{}``) and the
first ``\\boxed{}``. The raw lm-eval output, with every generation, is kept beside the record.

Paper scale uses the same function with lm-eval's own tasks (aime24, minerva_math500, ...).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from .data.tokenizer import END_THINK, render_prompt
from .records import atomic_write_text

TASK = "study_synthetic"
TASKS_DIR = Path(__file__).parent / "tasks"


def write_test_split(examples, tokenizer, path: Path) -> Path:
    """The lm-eval dataset file: rendered prompt and gold answer per test problem."""
    if path.exists():
        return path
    lines = [json.dumps({"id": ex.id, "prompt": render_prompt(tokenizer, ex.question), "answer": ex.answer})
             for ex in examples]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


@functools.lru_cache(maxsize=8)
def task_manager(data_file: str) -> TaskManager:
    """One TaskManager per test file and process. Only our task folder is indexed; lm-eval's
    ~15k built-in tasks take ~15 s to index and are not needed here."""
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_files": data_file})


def evaluate(model, tokenizer, data_file: Path, n: int, max_gen_toks: int, batch_size: int,
             raw_path: Path | None = None, seed: int = 0) -> dict:
    """Greedy generation on the first ``n`` test problems. Returns accuracy by both answer
    rules with lm-eval's stderr, plus how the generations ended."""
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
              max_length=model.config.max_position_embeddings)
    out = simple_evaluate(
        model=lm,
        tasks=[TASK],
        task_manager=task_manager(str(Path(data_file).resolve())),
        limit=n,
        gen_kwargs={"max_gen_toks": max_gen_toks},
        log_samples=True,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
    )
    res = out["results"][TASK]
    # lm-eval logs one sample per (document, filter); the generations are shared.
    samples = [s for s in out["samples"][TASK] if s["filter"] == "last_boxed"]
    gens = [s["resps"][0][0] for s in samples]
    lengths = [len(tokenizer.encode(g, add_special_tokens=False)) for g in gens]
    quality = {
        "accuracy": float(res["exact_match,last_boxed"]),
        "stderr": res["exact_match_stderr,last_boxed"],
        "n": len(samples),
        "accuracy_first_boxed": float(res["exact_match,first_boxed"]),
        "stderr_first_boxed": res["exact_match_stderr,first_boxed"],
        # Students trained on a lead span never see </think> or eos and may not stop.
        "closed_think": sum(END_THINK in g for g in gens) / len(gens),
        "hit_token_limit": sum(n_tok >= max_gen_toks for n_tok in lengths) / len(gens),
        "mean_generated_tokens": sum(lengths) / len(lengths),
        "max_gen_toks": max_gen_toks,
    }
    if raw_path is not None:
        raw = {k: out[k] for k in ("results", "configs", "versions", "n-samples") if k in out}
        raw["samples"] = [
            {"id": s["doc"]["id"], "prompt": s["doc"]["prompt"], "target": s["target"],
             "generation": s["resps"][0][0], "last_boxed": s["filtered_resps"][0]}
            for s in samples
        ]
        atomic_write_text(raw_path, json.dumps(raw, indent=1, default=str))
    return quality
