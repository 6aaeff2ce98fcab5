"""From a records DataFrame to the study's comparisons: which variant each run is, and the
statistics the tables and figures report.

A run's *variant* is the set of semantic config keys on which it differs from a reference
config (the embedded default, or the base config of a grid run with other budgets), the seed
excepted: seeds are the replicates of a variant. Tables and figures select rows by variant,
never by grid, so a run shared by two grids (P+CoT+A at lsp 1.0 is both the supervision
grid's full condition and the truncation grid's lsp 1.0) is computed once and used by both.

Statistics. All seeds of a study score the same test problems, and each run keeps its raw
lm-eval output beside its record (``<run_id>.lm_eval.json``, every generation), so a variant's
runs give a [seeds x problems] 0/1 matrix of correctness (``problem_correctness``, scored by the
last or the first ``\\boxed{}``). Seeds and problems are crossed random factors, and the
intervals come from a two-stage bootstrap over both, the pigeonhole bootstrap for crossed
designs (Owen 2007, Ann. Appl. Stat. 1:386): each replicate resamples the seeds with
replacement and the problems with replacement, one problem draw for all seeds (they score the
same problems), and takes the mean; the 95% interval is the percentile interval of
``BOOTSTRAP_REPLICATES`` replicates drawn by a numpy Generator with a fixed seed, so tables are
byte-stable. Being means of 0/1 scores, accuracy intervals lie inside [0, 1] by construction.

- ``accuracy_ci``: a variant's accuracy.
- ``compare``: a - b. Where both sides hold the same seeds (seed s shares its base student and
  batch order across variants), a paired design: the paired t-test over the per-seed
  differences (``scipy.stats.ttest_rel``) and a paired bootstrap CI of the difference (the same
  seed and problem draws on both sides). Otherwise Welch's t-test, labelled unpaired, and a
  bootstrap that draws each side's seeds separately.
- ``ratio_ci``: a / b (retention), the ratio of means under the same draws (>= 0); it reports
  every pair and replicate it leaves out.

Where a run's per-problem output is missing, unreadable, or disagrees with its record's accuracy,
these fall back to the seeds alone (the bootstrap over seeds of the per-run accuracies), and the
result's ``method`` says so. Every result carries a ``method`` string. ``mean_ci`` (Student-t over
seeds, unbounded) remains for costs (seconds, bytes, FLOPs), which are not proportions.

Small-sample caveat: with 3 seeds the seed stage has 10 distinct resamples and, like any
bootstrap, understates the between-seed variance by (n - 1) / n; the t-tests (t quantiles on
n - 1 degrees of freedom) are the inference behind claimed comparisons, the intervals show the
spread over seeds and problems. The t-tests treat the test problems as fixed; the bootstrap
intervals resample them.

    from study.records import load
    from study.analysis import label_variants, select, accuracy_ci, compare, ratio_ci
    df = label_variants(load("results/runs"))
    half = select(df, {"lsp": 0.5})              # the lead-span runs at lsp 0.5, all seeds
    accuracy_ci(half)                            # Estimate(mean, low, high, n, method, dropped)
    compare(half, select(df, {}))                # Comparison(difference, low, high, t, p, test, ...)
    ratio_ci(half, select(df, {}))               # retention: Estimate(...)

For browsing (notebooks/explore.ipynb): ``filter_runs`` (rows whose config has given values),
``generations`` (a run's generations beside the gold answer, with the answer each rule reads),
``variants_of`` (the distinct variants of some configs, e.g. a grid's cells, in order).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from .config import NON_SEMANTIC, RunConfig
from .data.synthetic import first_boxed, last_boxed
from .evaluate import TASK

REPLICATE_KEYS = ("seed",)  # differ between replicates of one variant
ACCURACY = f"quality.{TASK}.accuracy"
ACCURACY_FIRST = f"quality.{TASK}.accuracy_first_boxed"


def flat_config(cfg: RunConfig | Mapping) -> dict[str, Any]:
    """A config as ``{"lsp": 1.0, "corpus.layout": "early", ...}`` (dotted nested keys)."""
    data = asdict(cfg) if isinstance(cfg, RunConfig) else dict(cfg)
    return pd.json_normalize(data, sep=".").iloc[0].to_dict()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):  # JSON lists, config tuples
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and tuple(a) == tuple(b)
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
        # A record written before a key existed lacks it (NaN beside newer records; a config
        # value is never NaN): it ran as the key's default, which keeps the earlier behaviour.
        if isinstance(value, float) and math.isnan(value):
            value = ref
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
    # One variant and seed is one replicate: two records of it (run at other thread counts or
    # on other artefacts: other run ids) would count as two seeds and narrow every interval.
    twice = out[out.duplicated(["variant_label", "seed"], keep=False)]
    if len(twice):
        label, seed = twice.iloc[0][["variant_label", "seed"]]
        paths = twice[(twice["variant_label"] == label) & (twice["seed"] == seed)].get("path", twice["run_id"])
        raise ValueError(f"{len(twice)} records repeat a variant and seed, e.g. {label} seed {seed}: "
                         f"{', '.join(map(str, paths))}; they would count as separate seeds. Keep one record "
                         "per variant and seed in the folders analysed (e.g. load one records folder)")
    return out


def select(df: pd.DataFrame, variant: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The rows of a labelled frame whose variant is exactly ``variant`` (keys dotted; ``None``
    or ``{}`` selects the reference config itself), one row per seed."""
    want = dict(variant or {})
    keep = [len(v) == len(want) and all(k in v and _same(v[k], x) for k, x in want.items())
            for v in df["variant"]]
    return df[keep]


# --- per-problem correctness (the raw lm-eval output beside each record) ---------------------------

# Answer rules: "last" is the headline rule, the record's ``accuracy`` (the paper's scorer,
# study/scoring.py; the last \boxed{} alone in records written before it), "first" the first box.
RULES = {"last": last_boxed, "first": first_boxed}
SAMPLE_KEY = {"last": "paper", "first": "first_boxed"}  # where an lm-eval output holds each
RULE_OF_COLUMN = {"accuracy": "last", ACCURACY: "last",
                  "accuracy_first_boxed": "first", ACCURACY_FIRST: "first"}


def lm_eval_path(record_path: str | Path) -> Path:
    """``<dir>/<run_id>.lm_eval.json``, the raw lm-eval output beside ``<dir>/<run_id>.json``."""
    path = Path(record_path)
    return path.with_name(path.name.removesuffix(".json") + ".lm_eval.json")


@functools.lru_cache(maxsize=4096)
def _scored_file(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, ...], dict[str, np.ndarray]] | str:
    """Problem ids (sorted) and per-rule 0/1 correctness of one lm-eval output, or why not.
    Cached by path, modification time and size: a rewritten file is read again."""
    try:
        samples = json.loads(Path(path).read_text())["samples"]
        ids = [str(s["id"]) for s in samples]
        if all("correct" in s for s in samples):  # scored at evaluation, by the record's own scorer
            scored = {rule: np.array([s["correct"][SAMPLE_KEY[rule]] for s in samples], dtype=float)
                      for rule in RULES}
        else:  # records from before study/scoring.py: the headline rule was the last box alone
            scored = {rule: np.array([answer(s["generation"]) == str(s["target"]) for s in samples], dtype=float)
                      for rule, answer in RULES.items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable ({type(err).__name__})"
    if not ids:
        return "no samples"
    if len(set(ids)) != len(ids):
        return "duplicate problem ids"
    order = np.argsort(np.array(ids, dtype=object), kind="stable")
    for values in scored.values():
        values.setflags(write=False)
    return tuple(ids[i] for i in order), {rule: v[order] for rule, v in scored.items()}


def problem_correctness(rows: pd.DataFrame, rule: str = "last") -> tuple[pd.DataFrame | None, str]:
    """Per-problem correctness of each row's run by an answer ``rule`` ("last" \\boxed{}, the
    paper's, or "first"): a [runs x problems] 0/1 DataFrame indexed like ``rows``, columns the
    problem ids (sorted: every run's column j is the same problem), read from the lm-eval output
    beside each record (``rows["path"]``, as ``records.load`` gives it).

    Returns ``(matrix, "")``, or ``(None, reason)`` when any run's output is missing or
    unreadable, the runs scored different problems, or a run's per-problem mean disagrees with
    the accuracy column of its row (for that rule); callers then fall back to seed-level
    statistics and put the reason in their method string."""
    if rule not in RULES:
        raise ValueError(f"unknown answer rule {rule!r}; valid: {', '.join(RULES)}")
    if rows.empty:
        return None, "no runs"
    if "path" not in rows.columns or rows["path"].isna().any():
        return None, "no record paths, so no per-problem outputs"
    missing, unreadable, scored = [], [], []
    for record in rows["path"]:
        path = lm_eval_path(record)
        try:
            st = path.stat()
        except OSError:
            missing.append(path.name)
            continue
        got = _scored_file(str(path), st.st_mtime_ns, st.st_size)
        if isinstance(got, str):
            unreadable.append(f"{path.name}: {got}")
        else:
            scored.append(got)
    n = len(rows)
    if missing:
        return None, f"per-problem outputs missing for {len(missing)} of {n} runs ({', '.join(missing)})"
    if unreadable:
        return None, f"per-problem outputs unreadable for {len(unreadable)} of {n} runs ({'; '.join(unreadable)})"
    ids = scored[0][0]
    if any(other != ids for other, _ in scored[1:]):
        return None, "the runs scored different test problems"
    matrix = pd.DataFrame(np.vstack([by_rule[rule] for _, by_rule in scored]), index=rows.index, columns=list(ids))
    column = {"last": "accuracy", "first": "accuracy_first_boxed"}[rule]
    column = column if column in rows.columns else {"last": ACCURACY, "first": ACCURACY_FIRST}[rule]
    if column in rows.columns:
        recorded = pd.to_numeric(rows[column], errors="coerce").to_numpy(float)
        off = int((np.abs(matrix.to_numpy().mean(axis=1) - recorded) > 1e-9).sum())  # NaN counts as off
        if off:
            return None, f"per-problem scores disagree with the recorded {column} for {off} of {n} runs"
    return matrix, ""


# --- the bootstrap ----------------------------------------------------------------------------------

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 2512_21002  # fixed: the same records always give the same intervals
# Independent draw streams: the seeds of side a (and of both sides when paired), the seeds of
# side b when unpaired, the problems (shared by both sides when they score the same problems),
# and the problems of side b when they differ.
SEEDS_A, SEEDS_B, PROBLEMS, PROBLEMS_B = range(4)


class Estimate(NamedTuple):
    """A point estimate with its interval. ``n``: seeds (pairs, for a paired ratio);
    ``method``: how the interval was computed, including any fallback and anything left out;
    ``dropped``: the pairs left out, one line each."""
    mean: float
    low: float
    high: float
    n: int
    method: str
    dropped: tuple[str, ...] = ()


class Comparison(NamedTuple):
    """a - b with its interval and test. ``test`` names the test behind t and p ("paired
    t-test over seeds" or "Welch t-test over seeds (unpaired)"); ``interval`` how the CI was
    computed; ``dropped`` the pairs left out."""
    mean_a: float
    mean_b: float
    difference: float
    low: float
    high: float
    t: float
    p: float
    n_a: int
    n_b: int
    test: str
    interval: str
    dropped: tuple[str, ...] = ()


PAIRED_T = "paired t-test over seeds"
WELCH_T = "Welch t-test over seeds (unpaired)"


@functools.lru_cache(maxsize=256)
def _counts(n: int, stream: int, replicates: int) -> np.ndarray:
    """How often each of ``n`` units is drawn in each replicate: [replicates x n], rows summing
    to n (resampling with replacement). Deterministic per (n, stream, replicates), so two calls
    with the same shape see the same draws (a paired comparison, a byte-stable table)."""
    rng = np.random.default_rng([BOOTSTRAP_SEED, stream, n])
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(np.int64)
    counts.setflags(write=False)
    return counts


def _replicate_means(x: np.ndarray, seeds: np.ndarray, problems: np.ndarray | None) -> np.ndarray:
    """Mean of ``x`` [seeds x problems] in every replicate: sum_s sum_p c_s x_sp d_p / (S P),
    with seed counts c (``seeds``, [B x S]) and problem counts d (``problems``, [B x P]; None
    for seed-level data, x [S x 1]). Per-problem scores are 0/1, so the sums are integer
    products, exact and free of BLAS threads (which crawl on a busy machine)."""
    if problems is None:
        return (seeds * x[:, 0]).sum(axis=1) / x.shape[0]
    per_seed = problems @ np.ascontiguousarray(x.T, dtype=np.int64)  # [B x S]: sums over the drawn problems
    return (per_seed * seeds).sum(axis=1) / (x.shape[0] * x.shape[1])


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval; +inf replicates (a ratio over a zero denominator) stay +inf."""
    if values.size == 0:
        return (math.nan, math.nan)
    big = np.finfo(float).max / 4
    low, high = np.quantile(np.where(np.isinf(values), big, values), [(1 - level) / 2, (1 + level) / 2])
    return tuple(math.inf if v > big / 2 else float(v) for v in (low, high))


def _data(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, tuple[str, ...] | None, str]:
    """What to resample for ``rows`` (rows with a value in ``column``, in the wanted seed order):
    the per-problem matrix [runs x problems] with its problem ids, or, when that is unavailable,
    the per-run values as [runs x 1], ids None and the reason."""
    values = pd.to_numeric(rows[column], errors="coerce").to_numpy(float)[:, None]
    rule = RULE_OF_COLUMN.get(column)
    if rule is None:
        return values, None, f"{column} has no per-problem scores"
    matrix, reason = problem_correctness(rows, rule)
    if matrix is None:
        return values, None, reason
    return matrix.to_numpy(float), tuple(matrix.columns), ""


def _describe(kind: str, seeds: int, problems: int | None, reason: str) -> str:
    """The method string of a bootstrap interval."""
    if problems is None:
        return f"{kind}bootstrap over {seeds} seeds only ({reason})"
    return f"{kind}two-stage bootstrap over {seeds} seeds x {problems} problems"


def _valid(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows with a value in ``column``, in seed order (so the draws, and the result, do
    not depend on the order of the frame's rows)."""
    if column not in rows.columns:
        return rows.iloc[0:0]
    rows = rows.sort_values("seed", kind="stable") if "seed" in rows.columns else rows
    return rows[pd.to_numeric(rows[column], errors="coerce").notna()]


def _mean(rows: pd.DataFrame, column: str) -> float:
    """Mean of a column, exactly rounded (``math.fsum``): independent of the row order."""
    values = pd.to_numeric(rows[column], errors="coerce").to_numpy(float)
    return math.fsum(values) / len(values) if len(values) else math.nan


def accuracy_ci(rows: pd.DataFrame, column: str = "accuracy", level: float = 0.95,
                replicates: int = BOOTSTRAP_REPLICATES) -> Estimate:
    """A variant's mean ``column`` (one row per seed) with its two-stage bootstrap interval over
    seeds and test problems (module docstring), inside [0, 1] for an accuracy. ``method`` says
    whether problems were resampled or, their outputs missing, the seeds only. One seed gives an
    interval of NaN: one run says nothing about the spread over seeds.

    Where every run scores every problem alike (all 0 or all 1), no resample can differ and
    the bootstrap interval would be the point [0, 0] or [1, 1], which no reviewer should accept
    for 0 of 200; the interval is then the exact (Clopper-Pearson) binomial interval over the
    P problems, e.g. [0, 1 - 0.025^(1/P)], counting each problem once (the seeds agree on it)."""
    x = _valid(rows, column)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "no runs")
    mean = _mean(x, column)
    if n < 2:
        return Estimate(mean, math.nan, math.nan, 1, "one seed: no interval")
    data, ids, reason = _data(x, column)
    if ids is not None and (data.min() == data.max()):
        k, p = (len(ids) if data.min() == 1 else 0), len(ids)
        low, high = clopper_pearson(k, p, level)
        return Estimate(mean, low, high, n, f"exact (Clopper-Pearson) interval over {p} problems: every run "
                        f"scores {int(data.min())} on every problem, so the bootstrap has no spread")
    problems = None if ids is None else _counts(len(ids), PROBLEMS, replicates)
    means = _replicate_means(data, _counts(n, SEEDS_A, replicates), problems)
    low, high = _percentile(means, level)
    return Estimate(mean, low, high, n, _describe("", n, None if ids is None else len(ids), reason))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval for k successes in n trials (Clopper and Pearson 1934)."""
    alpha = 1 - level
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (low, high)


def _pairs(a: pd.DataFrame, b: pd.DataFrame, column: str) -> tuple[bool, pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """Whether a and b are paired by seed (both sides hold the same seeds, once each), then the
    rows to use and the pairs left out. Paired: the seeds with a value on both sides, in seed
    order on both; a seed without a value on one side is a dropped pair. Unpaired: every row
    with a value."""
    seeds_a, seeds_b = list(a["seed"]), list(b["seed"])
    if not seeds_a or sorted(seeds_a) != sorted(seeds_b) or len(set(seeds_a)) != len(seeds_a):
        return False, _valid(a, column), _valid(b, column), ()
    a, b = a.sort_values("seed", kind="stable"), b.sort_values("seed", kind="stable")
    has_a = pd.to_numeric(a[column], errors="coerce").notna().to_numpy()
    has_b = pd.to_numeric(b[column], errors="coerce").notna().to_numpy()
    dropped = tuple(f"seed {s}: no {column} at {'a and b' if not (ha or hb) else 'a' if not ha else 'b'}"
                    for s, ha, hb in zip(a["seed"], has_a, has_b) if not (ha and hb))
    keep = has_a & has_b
    return True, a[keep], b[keep], dropped


def _dropped_text(dropped: tuple[str, ...]) -> str:
    if not dropped:
        return ""
    return f", {len(dropped)} pair{'s' if len(dropped) > 1 else ''} dropped ({'; '.join(dropped)})"


def _two_sided(xa: pd.DataFrame, xb: pd.DataFrame, column: str, paired: bool, replicates: int):
    """Replicate means of both sides under the design's draws, and the interval's description:
    paired, the same seed draw on both sides; problems, one draw for both when they score the
    same problems. Seed-level data on either side makes both seed-level."""
    da, ids_a, reason_a = _data(xa, column)
    db, ids_b, reason_b = _data(xb, column)
    if ids_a is None or ids_b is None:  # both sides at seed level, so they stay comparable
        da = pd.to_numeric(xa[column]).to_numpy(float)[:, None]
        db = pd.to_numeric(xb[column]).to_numpy(float)[:, None]
        reasons = {side: r for side, r in (("a", reason_a), ("b", reason_b)) if r}
        reason = (reason_a if len(reasons) == 2 and reason_a == reason_b  # say it once, for both sides
                  else "; ".join(f"{side}: {r}" for side, r in reasons.items()))
        pa = pb = None
        problems_text = None
    else:
        pa = _counts(len(ids_a), PROBLEMS, replicates)
        pb = pa if ids_a == ids_b else _counts(len(ids_b), PROBLEMS_B, replicates)
        reason = ""
        problems_text = len(ids_a) if ids_a == ids_b else None
    sa = _counts(len(xa), SEEDS_A, replicates)
    sb = sa if paired else _counts(len(xb), SEEDS_B, replicates)
    ma, mb = _replicate_means(da, sa, pa), _replicate_means(db, sb, pb)
    kind = "paired " if paired else "unpaired "
    if pa is None:
        text = f"{kind}bootstrap over seeds only ({reason})"
    elif problems_text is None:
        text = f"{kind}two-stage bootstrap over seeds and problems (different problems, drawn separately)"
    else:
        text = f"{kind}two-stage bootstrap over seeds x {problems_text} problems"
    if not paired:
        text += ", seeds drawn separately per side"
    return ma, mb, text


def _no_spread(values: np.ndarray, ma: np.ndarray, mb: np.ndarray) -> str:
    """A warning for a degenerate interval: the statistic (``values``) the same in every
    replicate (e.g. every run scores every problem 0 on one side), unless the two sides are
    identical (a variant against itself)."""
    finite = values[np.isfinite(values)]
    if finite.size and np.ptp(finite) == 0 and not np.array_equal(ma, mb):
        return "; no spread in any replicate (every run scores every problem alike): the interval is a point"
    return ""


def compare(a: pd.DataFrame, b: pd.DataFrame, column: str = "accuracy", level: float = 0.95,
            replicates: int = BOOTSTRAP_REPLICATES) -> Comparison:
    """a - b of ``column`` between two variants' rows (one per seed), with a test and a CI.

    Paired when both hold the same seeds: ``scipy.stats.ttest_rel`` over the per-seed
    differences, and the percentile interval of the difference of means under the same seed
    and problem draws on both sides. Otherwise unpaired: Welch's t-test, and each side's seeds
    drawn separately (problems still shared when both score the same ones). t and p are NaN
    with fewer than two seeds (pairs) a side or no spread at all (``welch``, ``paired_t``)."""
    paired, xa, xb, dropped = _pairs(a, b, column)
    va, vb = (pd.to_numeric(x[column], errors="coerce").to_numpy(float) for x in (xa, xb))
    mean_a, mean_b = _mean(xa, column), _mean(xb, column)
    t, p = paired_t(va, vb) if paired else welch(va, vb)
    test = (PAIRED_T if paired else WELCH_T) + _dropped_text(dropped)
    low = high = math.nan
    if min(len(va), len(vb)) < 2:
        interval = "fewer than two seeds a side: no interval"
    else:
        ma, mb, interval = _two_sided(xa, xb, column, paired, replicates)
        low, high = _percentile(ma - mb, level)
        interval += _no_spread(ma - mb, ma, mb)
    return Comparison(mean_a, mean_b, mean_a - mean_b, low, high, t, p, len(va), len(vb), test, interval, dropped)


def ratio_ci(a: pd.DataFrame, b: pd.DataFrame, column: str = "accuracy", level: float = 0.95,
             replicates: int = BOOTSTRAP_REPLICATES) -> Estimate:
    """Ratio of means of ``column``, a over b (retention: ``ratio_ci(select(df, {"lsp": 0.5}),
    select(df, {}))``), with the percentile interval of the ratio of replicate means, >= 0.

    Paired by seed when both sides hold the same seeds (each seed shares the base student and
    batch order across variants): the same seed and problem draws on both sides; a seed
    without a value on one side is a dropped pair, named in ``dropped`` and ``method``, and n
    counts the pairs kept. Otherwise unpaired: every run, each side's seeds drawn separately.
    A replicate whose denominator is 0 gives +inf (a numerator > 0) or is left out (0 / 0, also
    counted in ``method``); a denominator mean of 0 gives NaN."""
    paired, xa, xb, dropped = _pairs(a, b, column)
    kind = "paired by seed" if paired else "unpaired (seeds do not pair)"
    n = min(len(xa), len(xb))
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, f"{kind}: no runs{_dropped_text(dropped)}", dropped)
    mean_a, mean_b = _mean(xa, column), _mean(xb, column)
    if mean_b == 0:
        return Estimate(math.nan, math.nan, math.nan, n, f"{kind}: undefined, the mean of b is 0"
                        f"{_dropped_text(dropped)}", dropped)
    ratio = mean_a / mean_b
    if n < 2:
        return Estimate(ratio, math.nan, math.nan, n, f"{kind}: one seed, no interval{_dropped_text(dropped)}", dropped)
    ma, mb, interval = _two_sided(xa, xb, column, paired, replicates)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(mb > 0, ma / np.where(mb > 0, mb, 1.0), np.where(ma > 0, np.inf, np.nan))
    undefined = int(np.isnan(ratios).sum())
    low, high = _percentile(ratios[~np.isnan(ratios)], level)
    method = f"{interval}{_dropped_text(dropped)}{_no_spread(ratios, ma, mb)}"
    if undefined:
        method += f", {undefined} of {replicates} replicates left out (0 / 0)"
    return Estimate(ratio, low, high, n, method, dropped)


# --- seed-level helpers ------------------------------------------------------------------------------


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided Student-t confidence interval over replicates (seeds). Unbounded (it
    can leave [0, 1] for an accuracy near 0 or 1) and blind to the test problems: the tables and
    figures use it only for costs (seconds, bytes, FLOPs); accuracies get ``accuracy_ci``.
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


def paired_t(a, b) -> tuple[float, float]:
    """Paired t-test over seeds (``scipy.stats.ttest_rel``) of a[i] - b[i], the arrays in the
    same seed order: (t, two-sided p). NaN with fewer than two pairs or differences without
    spread (t undefined; differences equal to 1e-9, the rounding of accuracies computed as
    fractions, count as equal: a float residue would give an enormous t)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if len(d) < 2 or np.ptp(d) <= 1e-9:
        return (math.nan, math.nan)
    t, p = stats.ttest_rel(a[keep], b[keep])
    return (float(t), float(p))


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


# --- browsing ------------------------------------------------------------------------------------


def filter_runs(df: pd.DataFrame, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The rows whose config has every value in ``filters`` (dotted keys, ``{"lsp": 0.5,
    "corpus.layout": "late"}``; a list of values admits any of them, so a list-valued key is
    given as ``[[...]]``). An unknown key raises, naming the valid ones."""
    out = df
    for key, want in (filters or {}).items():
        column = f"config.{key}"
        if column not in df.columns:
            valid = sorted(c[len("config."):] for c in df.columns if c.startswith("config."))
            raise ValueError(f"filter key {key!r} is not a config key of these records; valid: {', '.join(valid)}")
        wanted = list(want) if isinstance(want, (list, tuple)) else [want]
        out = out[[any(_same(v, w) for w in wanted) for v in out[column]]]
    return out


def variants_of(configs, reference: RunConfig | Mapping) -> list[dict[str, Any]]:
    """The distinct variants (``variant_of``) of ``configs`` against ``reference``, in order of
    first appearance: a grid's cells, say, as the rows of its table."""
    ref = flat_config(reference)
    out: list[dict[str, Any]] = []
    for cfg in configs:
        row = {f"config.{k}": v for k, v in flat_config(cfg).items()}
        v = variant_of(row, ref)
        if v not in out:
            out.append(v)
    return out


def generations(record_path: str | Path, n: int | None = 5, only: str | None = None) -> pd.DataFrame:
    """A run's generations (its raw lm-eval output beside the record) next to the gold answer,
    with the answer each rule reads and whether it is right: one row per test problem (the
    first ``n``; None: all). ``only``: "right" or "wrong" by the paper's rule."""
    from . import scoring

    path = lm_eval_path(record_path)
    if not path.exists():
        raise FileNotFoundError(f"no lm-eval output beside {record_path} ({path.name}): the run kept no generations")
    samples = json.loads(path.read_text())["samples"]
    rows = []
    for s in samples:
        gen, gold = s["generation"], str(s["target"])
        scored = s.get("correct") or {"paper": scoring.correct(gen, gold),
                                      "first_boxed": first_boxed(gen) == gold, "last_boxed": last_boxed(gen) == gold}
        row = {"problem": s["id"], "gold": gold,
               "answer (paper)": scoring.extract(gen), "right (paper)": bool(scored.get("paper")),
               "answer (first box)": first_boxed(gen), "right (first box)": bool(scored.get("first_boxed")),
               "answer (last box)": last_boxed(gen), "right (last box)": bool(scored.get("last_boxed")),
               "generation": gen}
        if only is None or (only == "right") == row["right (paper)"]:
            rows.append(row)
        if n is not None and len(rows) >= n:
            break
    if only not in (None, "right", "wrong"):
        raise ValueError(f"only must be None, 'right' or 'wrong', got {only!r}")
    return pd.DataFrame(rows)
