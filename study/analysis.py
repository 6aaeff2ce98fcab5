"""From a records DataFrame to the study's comparisons: which variant each run is, and the
statistics the tables and figures report.

A run's *variant* is the set of semantic config keys on which it differs from a reference
config (the embedded default, or the base config of a grid run with other budgets), the seed
excepted: seeds are the replicates of a variant. Tables and figures select rows by variant,
never by grid, so a run shared by two grids (P+CoT+A at lsp 1.0 is both the supervision
grid's full condition and the truncation grid's lsp 1.0) is computed once and used by both.

    from study.records import load
    from study.analysis import label_variants, select, mean_ci
    df = label_variants(load("results/runs"))
    half = select(df, {"lsp": 0.5})              # the lead-span runs at lsp 0.5, all seeds
    mean_ci(half["accuracy"])                     # (mean, low, high, n)
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .config import NON_SEMANTIC, RunConfig
from .evaluate import TASK

REPLICATE_KEYS = ("seed",)  # differ between replicates of one variant
ACCURACY = f"quality.{TASK}.accuracy"
ACCURACY_FIRST = f"quality.{TASK}.accuracy_first_boxed"


def flat_config(cfg: RunConfig | Mapping) -> dict[str, Any]:
    """A config as ``{"lsp": 1.0, "corpus.layout": "early", ...}`` (dotted nested keys)."""
    data = asdict(cfg) if isinstance(cfg, RunConfig) else dict(cfg)
    return pd.json_normalize(data, sep=".").iloc[0].to_dict()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def variant_of(row: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """The semantic config keys (dotted) on which a record row differs from ``reference``."""
    out = {}
    for key, ref in reference.items():
        if key in REPLICATE_KEYS or key.split(".")[0] in NON_SEMANTIC:
            continue
        value = row.get(f"config.{key}", ref)
        if not _same(value, ref):
            out[key] = value.item() if hasattr(value, "item") else value
    return out


def variant_label(variant: Mapping[str, Any]) -> str:
    """``{}`` -> "reference"; ``{"lsp": 0.5, "window": "right"}`` -> "lsp=0.5, window=right"."""
    return ", ".join(f"{k}={v}" for k, v in sorted(variant.items())) or "reference"


def label_variants(df: pd.DataFrame, reference: RunConfig | None = None) -> pd.DataFrame:
    """A copy of ``df`` with columns ``variant`` (dict), ``variant_label`` (str) and the
    short names ``accuracy``, ``accuracy_first_boxed`` and ``seed``."""
    ref = flat_config(reference or RunConfig())
    out = df.copy()
    variants = [variant_of(row, ref) for row in out.to_dict("records")]
    out["variant"] = variants
    out["variant_label"] = [variant_label(v) for v in variants]
    out["accuracy"] = out[ACCURACY]
    out["accuracy_first_boxed"] = out[ACCURACY_FIRST]
    out["seed"] = out["config.seed"]
    return out


def select(df: pd.DataFrame, variant: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The rows of a labelled frame whose variant is exactly ``variant`` (keys dotted; ``None``
    or ``{}`` selects the reference config itself), one row per seed."""
    want = dict(variant or {})
    keep = [len(v) == len(want) and all(k in v and _same(v[k], x) for k, x in want.items())
            for v in df["variant"]]
    return df[keep]


# --- statistics over seeds ------------------------------------------------------------------------


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided Student-t confidence interval over replicates (seeds).
    One replicate gives an interval of NaN: a single run says nothing about its spread."""
    x = np.asarray(pd.Series(values).dropna(), dtype=float)
    n = len(x)
    if n == 0:
        return (math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if n < 2:
        return (m, math.nan, math.nan, n)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return (m, m - half, m + half, n)


def welch(a, b) -> tuple[float, float]:
    """Welch's two-sample t-test over seeds (unequal variances): (t, two-sided p). NaN when
    either side has fewer than two replicates or both have no spread."""
    a = np.asarray(pd.Series(a).dropna(), dtype=float)
    b = np.asarray(pd.Series(b).dropna(), dtype=float)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return (math.nan, math.nan)
    t, p = stats.ttest_ind(a, b, equal_var=False)
    return (float(t), float(p))


def ratio_ci(a: pd.DataFrame, b: pd.DataFrame, column: str = "accuracy",
             level: float = 0.95) -> tuple[float, float, float, int, str]:
    """Ratio of ``column`` between two variants' rows, a over b, with a confidence interval:
    retention = ratio_ci(select(df, {"lsp": 0.5}), select(df, {})) -> (mean, low, high, n, method).

    ``"paired"`` when both sides hold the same seeds (each seed shares the base student and the
    batch order across variants, so seed s at a is compared with seed s at b): the mean and
    Student-t interval of the per-seed ratios (pairs whose b is 0 are dropped, n counts the rest).
    ``"delta"`` otherwise: ratio of means with a delta-method standard error and a t quantile on
    min(n_a, n_b) - 1 degrees of freedom (conservative for few seeds)."""
    x = a[["seed", column]].dropna()
    y = b[["seed", column]].dropna()
    seeds_a, seeds_b = list(x["seed"]), list(y["seed"])
    if seeds_a and sorted(seeds_a) == sorted(seeds_b) and len(set(seeds_a)) == len(seeds_a):
        pairs = x.merge(y, on="seed", suffixes=("_a", "_b"))
        pairs = pairs[pairs[f"{column}_b"] != 0]
        ratios = pairs[f"{column}_a"] / pairs[f"{column}_b"]
        return (*mean_ci(ratios, level), "paired")
    na, nb = len(x), len(y)
    if na == 0 or nb == 0 or y[column].mean() == 0:
        return (math.nan, math.nan, math.nan, 0, "delta")
    ma, mb = x[column].mean(), y[column].mean()
    r = float(ma / mb)
    dof = min(na, nb) - 1
    if dof < 1:
        return (r, math.nan, math.nan, min(na, nb), "delta")
    # Var(ma/mb) ~ (Var(ma) + r^2 Var(mb)) / mb^2, the first-order Taylor expansion of the ratio.
    se = math.sqrt(x[column].var(ddof=1) / na + r * r * y[column].var(ddof=1) / nb) / abs(mb)
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return (r, r - half, r + half, min(na, nb), "delta")


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values for a family of tests (NaN stays NaN, not counted)."""
    p = np.asarray(pd.Series(pvalues, dtype=float), dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx])]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))  # adjusted p never decreases with rank
        out[i] = running
    return out
