"""The paper's tables as pure functions of a records DataFrame, written as Markdown, LaTeX and CSV.

Six tables, each selecting its rows by variant (study/analysis.py), never by grid:

- ``supervision``: the six supervision conditions at lsp 1.0 (paper, Table 1);
- ``truncation``: lead-span proportion, accuracy, retention and cost (paper, Table 2);
- ``halves_controls``: left/middle/right 50% windows (paper, Table 3) and our controls
  (random mask, cut after </think>, token-budget match, late-answer corpus);
- ``ending``: our extension, a lead span that keeps its ending, beside the plain lead span
  per regime (the reference and any contrast, e.g. a base student that forgets how to stop),
  with how generations end (closing </think>, at the token limit, mean length);
- ``significance``: one row per claimed comparison, with the test behind it, accuracy by the
  paper's answer rule (``study/scoring.py``); ``significance_first_boxed``: the same by the
  first ``\\boxed{}``.

Two more for notebooks, outside the paper's set: ``ablation`` (any grid's variants against a
reference run: accuracy, the difference with its paired test, Holm-adjusted, retention and cost
ratios; notebooks/ablation.ipynb) and ``runs_table`` (one row per run, for browsing:
notebooks/explore.ipynb).

A table is a DataFrame of raw numbers (the CSV); confidence intervals are ``<name> CI low`` /
``<name> CI high`` columns that the Markdown and LaTeX merge into ``[lo, hi]``. Variants that
are absent from the records are skipped, so a partial study gives partial tables.

Statistics (study/analysis.py): accuracy, retention and difference intervals are 95% two-stage
bootstrap intervals over seeds and test problems, read from each run's lm-eval output, so they
lie inside [0, 1] for accuracies and include the variance over problems; comparisons are
paired by seed where both variants hold the same seeds (paired t-test, paired bootstrap), else
Welch's t-test (unpaired). Every table's note says how its intervals were computed, including
any variant whose per-problem outputs were missing (bootstrap over seeds only) and any pair left
out; the significance tables name each row's test and interval method.

    from study.tables import write_all, truncation_table
    write_all("results/runs", "paper_tables")      # 6 tables x (.md, .tex, .csv)
    truncation_table(load("results/runs"))         # the same numbers as a DataFrame
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .analysis import (BOOTSTRAP_REPLICATES, accuracy_ci, compare, flat_config, holm, label_variants, ratio_ci,
                       select, variant_label, variant_of)
from .config import RunConfig
from .records import atomic_write_text, load
from .sections import CONDITIONS

log = logging.getLogger(__name__)

# --- column names (units in the header) ------------------------------------------------------
SETTING = "setting"
ACC = "accuracy"
ACC_FIRST = r"accuracy (first \boxed{})"
N = "seeds"
SUPERVISED = "supervised tokens"
TOKENS = "tokens forwarded"
SECONDS = "train time (s)"
MEMORY = "peak memory (MB)"
FLOPS = "train FLOPs (profiled steps, extrapolated)"  # compute.flops_profiler: see FLOPS_NOTE
CLOSED = "closes </think>"  # share of generations (quality.*.closed_think)
AT_LIMIT = "at the token limit"  # share of generations (quality.*.hit_token_limit)
GENERATED = "generated tokens"  # mean per generation: the inference cost
# Teacher-forced on the gold test traces: the probability of </think> where the trace closes
# its reasoning (quality.*.ending_prior, evaluate.ending_prior); NaN in records before it.
PRIOR = "P(</think>) at the gold end"
RETENTION = "retention"
RETENTION_FIRST = r"retention (first \boxed{})"
LOW, HIGH = " CI low", " CI high"  # suffixes of the interval columns

COST_COLUMNS = {  # table column -> record column (means over seeds)
    SUPERVISED: "data.tokens_supervised",
    TOKENS: "data.tokens_forwarded",
    SECONDS: "compute.train_seconds",
    MEMORY: "compute.peak_memory_bytes",
    FLOPS: "compute.flops_profiler",
}
SCALE = {MEMORY: 1e-6}  # bytes -> MB (10^6 bytes)
STOPPING_COLUMNS = {  # table column -> record column (means over seeds): how generations end
    CLOSED: "quality.study_synthetic.closed_think",
    AT_LIMIT: "quality.study_synthetic.hit_token_limit",
    GENERATED: "quality.study_synthetic.mean_generated_tokens",
    PRIOR: "quality.study_synthetic.ending_prior.p_close_think",
}

TEACHER = "teacher"
BASE = "base student (no distillation)"
DIFF_METHOD = "CI method"  # significance tables: how the row's difference interval was computed

ACC_CI_NOTE = (f"Accuracy 95% CI: two-stage bootstrap over seeds and test problems ({BOOTSTRAP_REPLICATES} "
               "replicates, percentile interval; each replicate resamples the seeds and the problems with "
               "replacement, one problem draw for all seeds), inside [0, 1]; none for one seed.")
FLOPS_NOTE = ("Train FLOPs (compute.flops_profiler) are the student's forward and backward FLOPs counted by "
              "torch.profiler on {steps} optimiser steps of the run (compute.profiled_steps), extrapolated to "
              "the whole run by the analytic FLOPs ratio of all its steps to the profiled ones: measured on the "
              "profiled steps, extrapolated to the rest.")
MEMORY_SOURCES = {  # compute.peak_memory_source -> what it measures
    "cpu_profiler_step_allocations+parameters+adam_state":
        "CPU: torch.profiler's peak of live allocations during a profiled training step, plus the resident "
        "parameters and AdamW state (from tensor sizes), not the process's resident memory",
    "cuda_max_memory_allocated": "CUDA: the allocator's peak (torch.cuda.max_memory_allocated) over the training loop",
}

CAPTIONS = {
    "supervision": "Supervision allocation at lsp 1.0: accuracy by supervised sections "
                   "(mean and 95% CI over seeds and test problems).",
    "truncation": "Lead-span truncation: accuracy, retention (accuracy relative to lsp 1.0) "
                  "and training cost by lead-span proportion.",
    "halves_controls": "Which 50% window, and controls: random mask, cut after </think>, "
                       "token-budget match, late-answer corpus.",
    "ending": "A lead span that keeps its ending (our extension) beside the plain lead span, by regime: "
              "accuracy, retention, how generations end and what they cost.",
    "significance": "Tests behind the claimed comparisons (accuracy by the paper's answer rule; "
                    "paired t-test over seeds where the seeds pair, else Welch).",
    "significance_first_boxed": "The same tests with accuracy by the first \\boxed{} answer "
                                "(paired t-test over seeds where the seeds pair, else Welch).",
}


# --- helpers -----------------------------------------------------------------------------------

def _prepare(df: pd.DataFrame, reference: RunConfig | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Label the records' variants against ``reference``."""
    return label_variants(df, reference), flat_config(reference or RunConfig())


def _variant(ref: dict[str, Any], **overrides) -> dict[str, Any]:
    """The variant dict of a config given as overrides of the reference (``corpus__layout`` ->
    ``corpus.layout``); overrides equal to the reference drop out, as label_variants does."""
    row = {f"config.{k.replace('__', '.')}": v for k, v in overrides.items()}
    return variant_of(row, ref)


def _present(df: pd.DataFrame, keys: set[str]) -> list[dict[str, Any]]:
    """Distinct variants in ``df`` whose keys are a subset of ``keys``."""
    out: list[dict[str, Any]] = []
    for v in df["variant"]:
        if set(v) <= keys and v not in out:
            out.append(v)
    return out


def _stopping(rows: pd.DataFrame, names=tuple(STOPPING_COLUMNS)) -> dict[str, str]:
    """The stopping columns of ``names`` the records hold: the ending prior only where some run
    measured it (records before it have none, and an empty column says nothing)."""
    return {name: STOPPING_COLUMNS[name] for name in names
            if name != PRIOR or (STOPPING_COLUMNS[PRIOR] in rows and rows[STOPPING_COLUMNS[PRIOR]].notna().any())}


def _mean(rows: pd.DataFrame, column: str) -> float:
    return float(rows[column].mean()) if column in rows and len(rows) else math.nan


def _summary(rows: pd.DataFrame, costs: tuple[str, ...], methods: dict[str, str], setting: str) -> dict[str, Any]:
    """A variant's row: accuracy with its bootstrap CI (analysis.accuracy_ci; its method is
    kept in ``methods[setting]`` for the table note), seeds, first-\\boxed{} accuracy, costs."""
    est = accuracy_ci(rows, ACC)
    methods[setting] = est.method
    out = {ACC: est.mean, ACC + LOW: est.low, ACC + HIGH: est.high, N: est.n,
           ACC_FIRST: _mean(rows, "accuracy_first_boxed")}
    for name in costs:
        out[name] = _mean(rows, COST_COLUMNS[name]) * SCALE.get(name, 1.0)
    return out


def _ci_note(methods: dict[str, str]) -> str:
    """The accuracy-interval sentence of a table note, naming every setting whose interval fell
    back to the seeds alone (and why)."""
    note = ACC_CI_NOTE
    exact = [setting for setting, method in methods.items() if method.startswith("exact")]
    if exact:
        note += (" Where every run scores every problem alike (all 0 or all 1), the bootstrap has no spread and "
                 "the CI is the exact (Clopper-Pearson) binomial interval over the test problems: "
                 + ", ".join(exact) + ".")
    fallback = [f"{setting}: {method}" for setting, method in methods.items() if "seeds only" in method]
    if fallback:
        note += " Bootstrap over seeds only, without the problems, for " + "; ".join(fallback) + "."
    return note


def _flops_note(rows: pd.DataFrame) -> str:
    col = "compute.profiled_steps"
    steps = sorted({int(x) for x in rows[col].dropna()}) if col in rows else []
    text = "the profiled" if not steps else " or ".join(str(x) for x in steps)
    return FLOPS_NOTE.format(steps=text)


def _memory_note(rows: pd.DataFrame) -> str:
    """What peak memory measures, from the records' own compute.peak_memory_source."""
    col = "compute.peak_memory_source"
    sources = sorted(set(rows[col].dropna())) if col in rows else []
    if not sources:
        return "Peak memory: no compute.peak_memory_source in the records."
    return ("Peak memory is compute.peak_memory_source: "
            + "; ".join(f"{src} ({MEMORY_SOURCES.get(src, 'as recorded')})" for src in sources) + ".")


def _reference_rows(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Teacher and base student rows for the runs in a table: single models, so an accuracy
    and no seed interval. A corpus variant (the late-answer corpus) has its own teacher and base
    student; each distinct model gets a row, named by the corpus keys all its runs share."""
    out = []
    for id_col, name, acc_col in (("teacher.id", TEACHER, "teacher.accuracy"),
                                  ("student.base_id", BASE, "student.base_accuracy")):
        if acc_col not in rows or rows[acc_col].isna().all():
            continue
        keyed = rows.assign(_model=rows[id_col] if id_col in rows else "")
        for _, group in keyed.groupby("_model", sort=False, dropna=False):
            if group[acc_col].isna().all():
                continue  # e.g. runs from scratch record no base student
            shared = set.intersection(*({(k, str(v)) for k, v in var.items() if k.startswith("corpus.")}
                                        for var in group["variant"]))
            label = name + (f" ({', '.join(f'{k}={v}' for k, v in sorted(shared))})" if shared else "")
            out.append({SETTING: label, ACC: float(group[acc_col].dropna().iloc[0])})
    return out


def _frame(reference_rows: list[dict], rows: list[dict], note: str | None = None) -> pd.DataFrame:
    """A table from its rows; empty (no reference rows either) when no variant was present."""
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(reference_rows + rows, columns=list(rows[0]))  # column order: a data row's
    if N in table:
        table[N] = table[N].astype("Int64")  # seeds are counts; reference models have none
    if note:
        table.attrs["note"] = note
    return table


# --- tables ------------------------------------------------------------------------------------

def supervision_table(df: pd.DataFrame, reference: RunConfig | None = None) -> pd.DataFrame:
    """Teacher and base student, then the six conditions (paper order) at the reference lsp:
    accuracy mean and 95% CI (bootstrap over seeds and test problems), seeds, first-\\boxed{}
    accuracy, supervised tokens and train time (means). The note says how the intervals were
    computed."""
    if df.empty:
        return pd.DataFrame()
    df, ref = _prepare(df, reference)
    rows, used, methods = [], [], {}
    for condition in CONDITIONS:
        sel = select(df, _variant(ref, condition=condition))
        if len(sel):
            rows.append({SETTING: condition, **_summary(sel, (SUPERVISED, SECONDS), methods, condition)})
            used.append(sel)
    if not rows:
        return pd.DataFrame()
    return _frame(_reference_rows(pd.concat(used)), rows, _ci_note(methods))


def _retention(sel: pd.DataFrame, full: pd.DataFrame, column: str, name: str, setting: str,
               methods: dict[tuple[str, str], str]) -> dict[str, float]:
    """Retention columns ``name`` (mean, CI) of ``sel`` against the lsp 1.0 rows ``full`` by
    ``column`` (analysis.ratio_ci), its method kept in ``methods[(setting, name)]``; NaN
    without lsp 1.0 rows."""
    if not len(full):
        return {name: math.nan, name + LOW: math.nan, name + HIGH: math.nan}
    est = ratio_ci(sel, full, column)
    methods[(setting, name)] = est.method
    return {name: est.mean, name + LOW: est.low, name + HIGH: est.high}


def truncation_table(df: pd.DataFrame, reference: RunConfig | None = None) -> pd.DataFrame:
    """Per lead-span proportion present (sorted): accuracy (mean, CI), retention = acc(lsp) /
    acc(lsp 1.0) with a 95% CI, by the paper's answer rule and by the first \\boxed{}, and
    the costs (tokens forwarded, train time, peak memory, train FLOPs: the profiler's count on
    the profiled steps extrapolated to the run) as means and as ratios of means to lsp 1.0.

    Retention is the ratio of mean accuracies (analysis.ratio_ci), its interval the percentile
    interval of that ratio over bootstrap replicates of seeds and test problems: paired by seed
    where the seeds match (seed s at lsp x against seed s at lsp 1.0: same base student, same
    batch order; the same seed and problem draws on both sides), else unpaired. The note says
    which, names any pair or replicate left out, and says what the FLOPs and peak-memory
    columns measure and what they extrapolate (the memory source read from the records)."""
    if df.empty:
        return pd.DataFrame()
    df, ref = _prepare(df, reference)
    full = select(df, {})
    costs = (TOKENS, SECONDS, MEMORY, FLOPS)
    full_costs = {name: _mean(full, COST_COLUMNS[name]) * SCALE.get(name, 1.0) for name in costs}
    rows, used, methods, retention_methods = [], [], {}, {}
    lsps = sorted(v.get("lsp", ref["lsp"]) for v in _present(df, {"lsp"}))
    for lsp in lsps:
        sel = select(df, _variant(ref, lsp=lsp))
        setting = f"lsp {_proportion(lsp)}"
        row = {SETTING: setting, "lsp": lsp, **_summary(sel, costs, methods, setting)}
        for name, column in ((RETENTION, ACC), (RETENTION_FIRST, "accuracy_first_boxed")):
            row.update(_retention(sel, full, column, name, setting, retention_methods))
        for name, column in _stopping(df, (CLOSED, GENERATED, PRIOR)).items():  # do its students still end traces?
            row[name] = _mean(sel, column)
        for name in costs:  # ratio of means: costs barely vary over seeds
            denominator = full_costs[name]
            row[f"{name.split(' (')[0]} ratio"] = row[name] / denominator if denominator else math.nan
        rows.append(row)
        used.append(sel)
    if not rows:
        return pd.DataFrame()
    runs = pd.concat(used)
    return _frame(_reference_rows(runs), rows, _truncation_note(methods, retention_methods, full.empty, runs))


def _truncation_note(methods: dict[str, str], retention: dict[tuple[str, str], str], no_full: bool,
                     runs: pd.DataFrame) -> str:
    if no_full:
        how = "not available (no lsp 1.0 runs)"
    else:
        unpaired = sorted({setting for (setting, _), m in retention.items() if m.startswith("unpaired")})
        how = ("the percentile interval of the same ratio in each bootstrap replicate (seeds and test "
               "problems resampled as for accuracy), paired by seed: the same seed and problem draws at lsp x "
               "and at lsp 1.0")
        if unpaired:
            how += f"; unpaired (seeds drawn separately) at {', '.join(unpaired)}, whose seeds do not pair"
        special: dict[str, list[str]] = {}  # method -> the retentions it applies to, said once
        for (setting, name), m in retention.items():
            if any(w in m for w in ("seeds only", "dropped", "left out", "undefined", "no spread")):
                special.setdefault(m, []).append(setting + (" (first \\boxed{})" if name == RETENTION_FIRST else ""))
        if special:
            how += ". Exceptions: " + "; ".join(f"{', '.join(where)}: {m}" for m, where in special.items())
    return (f"{_ci_note(methods)} Retention = mean accuracy / mean accuracy at lsp 1.0 (>= 0); its 95% CI is "
            f"{how}. Cost ratios are ratios of means to lsp 1.0. {_flops_note(runs)} {_memory_note(runs)} "
            f"Accuracy is by {RULE_TEXT}; the first-\\boxed{{}} columns count the first box.")


def _halves_controls_variants(df: pd.DataFrame, ref: dict[str, Any]) -> list[tuple[str, dict]]:
    half = 0.5
    out = [("full sequence (lsp 1.0)", {}),
           ("left 50% (lead span, lsp 0.5)", _variant(ref, lsp=half)),
           ("middle 50%", _variant(ref, lsp=half, window="middle")),
           ("right 50%", _variant(ref, lsp=half, window="right"))]
    # Random masks: whichever fractions were run (the grid matches lsp 0.5's dropped tokens).
    masks = sorted(v["random_mask"] for v in _present(df, {"random_mask"}) if v)
    out += [(f"random mask {m:g}", _variant(ref, random_mask=m)) for m in masks]
    budget = 2 * ref["corpus.train_examples"]
    out += [("cut after </think>", _variant(ref, cut_after_think=True)),
            (f"token budget (lsp 0.5, {budget} examples)",
             _variant(ref, lsp=half, corpus__train_examples=budget)),
            ("late answer, lsp 1.0", _variant(ref, corpus__layout="late")),
            ("late answer, lsp 0.5", _variant(ref, corpus__layout="late", lsp=half))]
    return out


def halves_controls_table(df: pd.DataFrame, reference: RunConfig | None = None) -> pd.DataFrame:
    """Full sequence, left/middle/right 50% windows and the controls that are present, plus
    teacher and base-student rows (one per corpus): accuracy (mean, CI), seeds, first-\\boxed{}
    accuracy, tokens forwarded, train time, and FLOPs as a ratio to the full-sequence run. The
    note says how the intervals were computed and what the FLOPs column measures."""
    if df.empty:
        return pd.DataFrame()
    df, ref = _prepare(df, reference)
    full_flops = _mean(select(df, {}), COST_COLUMNS[FLOPS])
    rows, used, methods = [], [], {}
    for label, variant in _halves_controls_variants(df, ref):
        sel = select(df, variant)
        if len(sel):
            row = {SETTING: label, **_summary(sel, (TOKENS, SECONDS, FLOPS), methods, label)}
            row["FLOPs ratio"] = row[FLOPS] / full_flops if full_flops else math.nan
            rows.append(row)
            used.append(sel)
    if not rows:
        return pd.DataFrame()
    runs = pd.concat(used)
    note = (f"{_ci_note(methods)} FLOPs ratio is to the full-sequence run on the default corpus (lsp 1.0). "
            f"{_flops_note(runs)}")
    return _frame(_reference_rows(runs), rows, note)


TRUNCATION_KEYS = ("lsp", "keep_answer")
# What a regime may change: the base student and how lightly it is fine-tuned (a contrast such
# as a base student that forgets how to stop), never the task, the teacher or the implementation.
REGIME_KEYS = ("base.", "lr", "epochs", "batch_size", "weight_decay", "warmup")


def regime_of(variant: dict[str, Any]) -> dict[str, Any]:
    """A variant without its truncation keys: the regime it runs under ({} for the reference)."""
    return {k: x for k, x in variant.items() if k not in TRUNCATION_KEYS}


def is_regime(regime: dict[str, Any]) -> bool:
    """Whether every key of ``regime`` is one a regime may change (``REGIME_KEYS``)."""
    return all(k.startswith(REGIME_KEYS[0]) or k in REGIME_KEYS[1:] for k in regime)


def _regimes(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The regimes in the records: the reference ({}) and every set of other overrides (a
    contrast, e.g. another base student and learning rate) under which some run keeps its
    ending, in order of appearance."""
    out: list[dict[str, Any]] = []
    for v in df["variant"]:
        regime = regime_of(v)
        if v.get("keep_answer") and regime not in out and is_regime(regime):
            out.append(regime)
    return sorted(out, key=len)  # the reference first


def ending_table(df: pd.DataFrame, reference: RunConfig | None = None) -> pd.DataFrame:
    """Per regime (the reference, then each contrast with a run that keeps its ending): the full
    sequence, then at each lsp where a lead span keeps its ending (``keep_answer``) the plain
    lead span and that one: accuracy (mean, CI), retention against the regime's lsp
    1.0 (CI as in the truncation table), first-\boxed{} accuracy, how generations end (share
    closing </think>, share at the token limit, mean generated tokens: the inference cost) and
    the training cost as ratios to lsp 1.0 (tokens forwarded, FLOPs). Shown only when some run
    keeps its ending."""
    if df.empty:
        return pd.DataFrame()
    df, ref = _prepare(df, reference)
    if not any(v.get("keep_answer") for v in df["variant"]):
        return pd.DataFrame()
    rows, used, methods, retention_methods = [], [], {}, {}
    for regime in _regimes(df):
        name = variant_label(regime) if regime else "reference"
        full = select(df, regime)
        lsps = sorted({v["lsp"] for v in df["variant"]  # where the regime has a lead span + ending
                       if v.get("keep_answer") and regime_of(v) == regime})
        settings = [("full sequence (lsp 1.0)", regime)]
        for lsp in lsps:
            settings += [(f"lead span, lsp {_proportion(lsp)}", {**regime, "lsp": lsp}),
                         (f"lead span + ending, lsp {_proportion(lsp)}", {**regime, "lsp": lsp, "keep_answer": True})]
        for label, variant in settings:
            sel = select(df, variant)
            if not len(sel):
                continue
            setting = f"{name}: {label}"
            row = {"regime": name, SETTING: label, **_summary(sel, (), methods, setting)}
            row.update(_retention(sel, full, ACC, RETENTION, setting, retention_methods))
            for column, source in _stopping(df).items():
                row[column] = _mean(sel, source)
            for cost in (TOKENS, FLOPS):
                denominator = _mean(full, COST_COLUMNS[cost])
                row[f"{cost.split(' (')[0]} ratio"] = (_mean(sel, COST_COLUMNS[cost]) / denominator
                                                       if denominator else math.nan)
            rows.append(row)
            used.append(sel)
    if not rows:
        return pd.DataFrame()
    runs = pd.concat(used)
    note = (f"{_truncation_note(methods, retention_methods, False, runs)} Retention is against the regime's own "
            f"lsp 1.0. {CLOSED}, {AT_LIMIT}: shares of the test generations; {GENERATED}: their mean length "
            "in tokens (what inference costs). A lead span + ending keeps max(1, int(len * lsp)) tokens, as "
            "the plain lead span: the lead span shortened by the ending, then </think>, the answer and the "
            "end token (sections.kept_positions).")
    return _frame([], rows, note)


def _comparisons(df: pd.DataFrame, ref: dict[str, Any]) -> list[tuple[str, dict, dict, str]]:
    cond = {c: _variant(ref, condition=c) for c in CONDITIONS}
    out = [("CoT vs P+CoT+A", cond["CoT"], cond["P+CoT+A"],
            "about equal: P+CoT+A does not reliably beat CoT")]
    # Per condition, not pooled: the paper claims that *every* CoT-inclusive condition beats
    # A and P+A, and a pooled test could hide one that does not.
    out += [(f"{c} vs {base}", cond[c], cond[base], "CoT-inclusive beats it by a wide margin")
            for c in ("CoT", "CoT+A", "P+CoT", "P+CoT+A") for base in ("A", "P+A")]
    half, left, full = 0.5, _variant(ref, lsp=0.5), {}
    out += [("left 50% vs right 50%", left, _variant(ref, lsp=half, window="right"),
             "left clearly better"),
            ("lsp 0.5 vs lsp 1.0", left, full, "lsp 0.5 keeps about 91% of full accuracy")]
    ending = _variant(ref, lsp=half, keep_answer=True)
    out += [("lead span + ending (lsp 0.5) vs lead span (lsp 0.5)", ending, left,
             "not tested (our extension: is the lost accuracy the lost ending?)"),
            ("lead span + ending (lsp 0.5) vs lsp 1.0", ending, full, "not tested (our extension)")]
    masks = sorted(v["random_mask"] for v in _present(df, {"random_mask"}) if v)
    out += [(f"lsp 0.5 (lead span) vs random mask {m:g}", left, _variant(ref, random_mask=m),
             "not tested (our control: which tokens, or how many)") for m in masks]
    budget = _variant(ref, lsp=half, corpus__train_examples=2 * ref["corpus.train_examples"])
    out += [("token budget (lsp 0.5, 2x examples) vs lsp 1.0", budget, full,
             "open question (no token-budget-matched control)"),
            ("late answer: lsp 0.5 vs lsp 1.0", _variant(ref, corpus__layout="late", lsp=half),
             _variant(ref, corpus__layout="late"), "not tested (our control: answer placement)")]
    return out


RULE_TEXT = ("the paper's answer rule (study/scoring.py: the last closed \\boxed{} with lighteval's fallbacks; "
             "the last \\boxed{} alone in records scored before it)")
ANSWER_RULES = {"last": ("accuracy", RULE_TEXT),
                "first": ("accuracy_first_boxed", "the first \\boxed{}")}


def significance_table(df: pd.DataFrame, reference: RunConfig | None = None, rule: str = "last") -> pd.DataFrame:
    """One row per claimed comparison whose two variants are both present (analysis.compare):
    means, difference (a - b) with its 95% bootstrap CI over seeds and test problems, seeds,
    the test (t, two-sided p), the Holm-adjusted p over the table's comparisons as one family,
    how the CI was computed, and the paper's claim. The test is the paired t-test over the
    per-seed differences where both variants hold the same seeds (the design pairs them: seed s
    shares its base student and batch order), else Welch's t-test, labelled unpaired; the
    ``test`` column names it per row, with any pair left out. ``rule`` picks the accuracy:
    "last" (the headline: the paper's answer rule) or "first" \\boxed{} (students that never learn to stop, after
    truncation or without A, differ most between the two)."""
    if rule not in ANSWER_RULES:
        raise ValueError(f"unknown answer rule {rule!r}; valid: {', '.join(ANSWER_RULES)}")
    column, rule_text = ANSWER_RULES[rule]
    if df.empty:
        return pd.DataFrame()
    df, ref = _prepare(df, reference)
    rows = []
    for label, va, vb, claim in _comparisons(df, ref):
        a, b = select(df, va), select(df, vb)
        if len(a) == 0 or len(b) == 0:
            continue
        c = compare(a, b, column)
        rows.append({"comparison": label, "mean a": c.mean_a, "mean b": c.mean_b, "difference": c.difference,
                     "difference" + LOW: c.low, "difference" + HIGH: c.high, "n a": c.n_a, "n b": c.n_b,
                     "test": c.test, "t": c.t, "p": c.p, DIFF_METHOD: c.interval, "paper's claim": claim})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    table.insert(table.columns.get_loc("p") + 1, "p (Holm)", holm(table["p"]))
    table.attrs["note"] = (
        "a - b; its 95% CI is the percentile interval of the difference of means over "
        f"{BOOTSTRAP_REPLICATES} bootstrap replicates of seeds and test problems (per row: {DIFF_METHOD}; "
        "paired: the same seed and problem draws on both sides). p is two-sided, from the row's test: the "
        "paired t-test over per-seed differences where both variants have the same seeds, else Welch's "
        "t-test (unpaired); both treat the test problems as fixed, and t and p are blank where the "
        "per-seed differences (or, for Welch, both sides) have no spread. n a, n b: seeds (pairs when "
        f"paired). p (Holm) adjusts for all comparisons in this table. Accuracy by {rule_text}.")
    return table


# --- formatting and writing --------------------------------------------------------------------

def _proportion(value: float) -> str:
    text = f"{value:g}"  # 0.25 stays 0.25, 1.0 reads "1.0" as in the paper
    return text if "." in text or "e" in text else text + ".0"


def _number(column: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in (N, "n a", "n b", "seed"):
        return f"{int(value)}"
    if column in (TOKENS, SUPERVISED):
        return f"{value:,.0f}"
    if column in (SECONDS, MEMORY, GENERATED):
        return f"{value:.1f}"
    if column == FLOPS:
        return f"{value:.2e}"
    if column in ("p", "p (Holm)"):
        return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"
    if column == "t":
        return f"{value:.2f}"
    if column == "lsp":
        return _proportion(value)
    return f"{value:.3f}"  # accuracies, retentions, ratios, differences


def _numeric_columns(table: pd.DataFrame) -> list[bool]:
    """Per displayed column (intervals merged): whether it shows numbers (right-aligned)."""
    return [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns if not c.endswith(HIGH)]


def _display(table: pd.DataFrame, na: str) -> pd.DataFrame:
    """Cells as strings; each low/high pair merged into one "<name> 95% CI" column "[lo, hi]"."""
    out = {}
    for column in table.columns:
        if column.endswith(HIGH):
            continue
        if column.endswith(LOW):
            name = column[: -len(LOW)]
            out[f"{name} 95% CI"] = [
                na if pd.isna(lo) or pd.isna(hi) else f"[{_number(name, lo)}, {_number(name, hi)}]"
                for lo, hi in zip(table[column], table[name + HIGH])]
        else:
            out[column] = [_number(column, v) or na for v in table[column]]
    return pd.DataFrame(out)


def _latex_escape(text: str) -> str:
    # One pass, so the braces of an inserted \textbackslash{} are not escaped again.
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "<": r"\textless{}", ">": r"\textgreater{}"}  # < and > print as other glyphs in OT1
    return "".join(special.get(ch, ch) for ch in text)


def _markdown_escape(text: str) -> str:
    # "</think>" would be read as an HTML tag and vanish; "|" would split the cell.
    return text.replace("|", r"\|").replace("<", r"\<").replace(">", r"\>")


def to_markdown(table: pd.DataFrame, caption: str = "", note: str | None = None) -> str:
    """The table as Markdown; ``note`` defaults to the table's own (``table.attrs["note"]``)."""
    note = note if note is not None else table.attrs.get("note")
    shown = _display(table, na="–")
    shown = shown.map(_markdown_escape).rename(columns=_markdown_escape)
    parts = [f"**{_markdown_escape(caption)}**"] if caption else []
    # The cells are already formatted: no re-parsing ("1.000" would print as "1").
    align = ["right" if numeric else "left" for numeric in _numeric_columns(table)]
    parts.append(shown.to_markdown(index=False, disable_numparse=True, colalign=align))
    if note:
        parts.append(f"Note: {_markdown_escape(note)}")
    return "\n\n".join(parts) + "\n"


def to_latex(table: pd.DataFrame, name: str, caption: str = "", note: str | None = None) -> str:
    """A table float labelled ``tab:<name>`` with booktabs rules, shrunk to the line width when
    wider (needs ``\\usepackage{booktabs, graphicx}``)."""
    shown = _display(table, na="--")
    shown = shown.map(_latex_escape).rename(columns=_latex_escape)
    spec = "".join("r" if numeric else "l" for numeric in _numeric_columns(table))
    tex = shown.style.hide(axis="index").to_latex(
        hrules=True, caption=_latex_escape(caption) or None, label=f"tab:{name}",
        position="htbp", position_float="centering", column_format=spec)
    # Wide tables (truncation has 17 columns) would run off the page; narrow ones keep their size.
    shrink = "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{"
    tex = tex.replace("\\begin{tabular}", shrink + "\\begin{tabular}")
    tex = tex.replace("\\end{tabular}", "\\end{tabular}}")
    if note:
        tex = tex.replace("\\end{table}", f"\\par\\smallskip{{\\footnotesize Note: {_latex_escape(note)}}}\n"
                                          "\\end{table}")
    return tex


def write_table(table: pd.DataFrame, name: str, out_dir: str | Path, caption: str = "",
                note: str | None = None) -> list[Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` (raw numbers, intervals as two
    columns) under ``out_dir``; ``note`` defaults to the table's own (``table.attrs["note"]``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    note = note if note is not None else table.attrs.get("note")
    return [atomic_write_text(out / f"{name}.md", to_markdown(table, caption, note)),
            atomic_write_text(out / f"{name}.tex", to_latex(table, name, caption, note)),
            atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))]


TABLES: dict[str, Callable[[pd.DataFrame, RunConfig | None], pd.DataFrame]] = {
    "supervision": supervision_table,
    "truncation": truncation_table,
    "halves_controls": halves_controls_table,
    "ending": ending_table,
    "significance": significance_table,
    "significance_first_boxed": functools.partial(significance_table, rule="first"),
}


def write_all(df_or_folder: pd.DataFrame | str | Path, out_dir: str | Path = "paper_tables",
              reference: RunConfig | None = None) -> list[Path]:
    """Build and write every table from a records DataFrame or a records folder; a table none
    of whose variants is in the records is skipped (logged), not written empty."""
    df = df_or_folder if isinstance(df_or_folder, pd.DataFrame) else load(df_or_folder)
    paths: list[Path] = []
    for name, build in TABLES.items():
        table = build(df, reference)
        if table.empty:
            log.info("table %s skipped: none of its variants is in the records", name)
            continue
        paths += write_table(table, name, out_dir, caption=CAPTIONS[name])
    return paths


# --- notebooks: any ablation, every run -----------------------------------------------------------

CAPTIONS["ablation"] = ("An ablation against its reference run: accuracy (paper's rule) with its 95% CI over seeds "
                        "and test problems, the difference from the reference with its test (Holm-adjusted over the "
                        "table's variants), retention and cost ratios.")
RATIO_COLUMNS = {"tokens ratio": "data.tokens_forwarded", "train FLOPs ratio": "compute.flops_profiler",
                 "train time ratio": "compute.train_seconds"}


def ablation_table(df: pd.DataFrame, reference: RunConfig | None = None,
                   variants: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Any grid's variants against ``reference`` (the reference run's config): one row per
    variant (``variants``, e.g. ``analysis.variants_of(grid configs, reference)``; default: every
    variant in the records), the reference first: seeds, accuracy (paper's rule) and by the first
    ``\\boxed{}``, the difference from the reference with its CI and test (paired by seed where
    the seeds pair, else Welch; p Holm-adjusted over the rows), retention, how generations end,
    and the cost ratios (tokens forwarded, training FLOPs, training time) to the reference."""
    df, ref = _prepare(df, reference)
    full = select(df, {})
    wanted = [v for v in (variants if variants is not None else _present(df, set().union(*df["variant"])))
              if v]  # the reference is its own row
    rows, methods, tests = [], {}, []
    for v in [{}, *wanted]:
        sel = select(df, v)
        if sel.empty:
            continue
        setting = variant_label(v)
        row = {SETTING: setting, **_summary(sel, (), methods, setting)}
        if v:
            cmp = compare(sel, full)
            ret = ratio_ci(sel, full) if len(full) else None
            row.update({"difference": cmp.difference, "difference" + LOW: cmp.low, "difference" + HIGH: cmp.high,
                        "t": cmp.t, "p": cmp.p, "test": cmp.test,
                        RETENTION: ret.mean if ret else math.nan, RETENTION + LOW: ret.low if ret else math.nan,
                        RETENTION + HIGH: ret.high if ret else math.nan})
            tests.append(len(rows))
        else:
            row.update({"difference": 0.0, "difference" + LOW: math.nan, "difference" + HIGH: math.nan,
                        "t": math.nan, "p": math.nan, "test": "reference", RETENTION: 1.0,
                        RETENTION + LOW: math.nan, RETENTION + HIGH: math.nan})
        for name, column in STOPPING_COLUMNS.items():
            row[name] = _mean(sel, column)
        for name, column in RATIO_COLUMNS.items():
            base = _mean(full, column)
            row[name] = _mean(sel, column) / base if base and not math.isnan(base) else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table[N] = table[N].astype("Int64")
    table.insert(table.columns.get_loc("test"), "p (Holm)", math.nan)
    if tests:
        table.loc[tests, "p (Holm)"] = holm(table.loc[tests, "p"])
    note = _ci_note(methods)
    if full.empty:
        note += " The reference run is not in the records: no differences, retention or ratios."
    table.attrs["note"] = note
    return table


RUN_COLUMNS = {  # runs_table column -> record column
    "run id": "run_id", "variant": "variant_label", "seed": "seed", ACC: "accuracy", ACC_FIRST: "accuracy_first_boxed",
    CLOSED: STOPPING_COLUMNS[CLOSED], AT_LIMIT: STOPPING_COLUMNS[AT_LIMIT], GENERATED: STOPPING_COLUMNS[GENERATED],
    TOKENS: COST_COLUMNS[TOKENS], SECONDS: COST_COLUMNS[SECONDS], MEMORY: COST_COLUMNS[MEMORY], FLOPS: COST_COLUMNS[FLOPS],
}


def runs_table(df: pd.DataFrame, reference: RunConfig | None = None) -> pd.DataFrame:
    """Every run as a row, sorted by variant and seed: its id, variant, seed, accuracy by both
    rules, how its generations end and what it cost (for browsing; no statistics)."""
    df = df if "variant_label" in df.columns else label_variants(df, reference)
    out = pd.DataFrame({name: df[column] if column in df.columns else math.nan for name, column in RUN_COLUMNS.items()})
    out[MEMORY] = out[MEMORY] * SCALE[MEMORY]
    return out.sort_values(["variant", "seed"], kind="stable").reset_index(drop=True)


def runs_browser(df: pd.DataFrame, reference: RunConfig | None = None):
    """``runs_table`` with a dropdown per config key the runs vary in (ipywidgets), the table
    redrawn on every choice; None where ipywidgets is not installed (``pip install ipywidgets``,
    or the package's ``explore`` extra): callers show the plain table then."""
    try:
        import ipywidgets as widgets
        from IPython.display import Markdown, display
    except ImportError:
        return None
    df = df if "variant_label" in df.columns else label_variants(df, reference)
    table = runs_table(df, reference)
    rows = df.sort_values(["variant_label", "seed"], kind="stable").reset_index(drop=True)
    keys = sorted({k for v in df["variant"] for k in v})
    choose = {k: widgets.Dropdown(options=["(any)", *sorted({str(x) for x in rows[f"config.{k}"]})], description=k,
                                  style={"description_width": "initial"}) for k in keys}
    out = widgets.Output()

    def redraw(_=None):
        keep = pd.Series(True, index=rows.index)
        for k, box in choose.items():
            if box.value != "(any)":
                keep &= rows[f"config.{k}"].astype(str) == box.value
        with out:
            out.clear_output()
            display(Markdown(to_markdown(table[keep.to_numpy()], f"{int(keep.sum())} of {len(table)} runs")))

    for box in choose.values():
        box.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox(list(choose.values())), out])
