"""The study's figures, drawn from a records DataFrame (and, for the two corpus figures, from the
corpus itself), saved as PNG and PDF.

Every accuracy error bar is the 95% two-stage bootstrap interval over seeds and test problems
from ``analysis.accuracy_ci`` (inside [0, 1]), so the figures agree with the tables; where a
variant's per-problem outputs are missing it falls back to the seeds alone and the figure's
note says so. Cost error bars (FLOPs, seconds, bytes: not proportions) are Student-t intervals
over seeds (``analysis.mean_ci``), labelled as such. Runs are picked by *variant*
(``analysis.select``), never by grid.

    from study.figures import write_all
    write_all("results/runs", "figures")                          # the four records figures
    write_all("results/runs", "figures", cfg=cfg, tokenizer=tok)  # plus the two corpus figures

    from study import figures
    fig = figures.accuracy_vs_lsp(df)          # df: records.load(...) (labelled or not)
    figures.save(fig, "accuracy_vs_lsp", "figures")

Figures are built as ``matplotlib.figure.Figure`` objects without pyplot, so a script needs no
display and a notebook shows a returned figure once, inline.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import matplotlib

if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # scripts and tests: no display; notebooks keep their inline backend

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FormatStrFormatter

from .analysis import accuracy_ci, flat_config, label_variants, mean_ci, select
from .config import RunConfig
from .evaluate import TASK
from .sections import CONDITIONS, Section, kept_positions

log = logging.getLogger(__name__)

NAMES = ("accuracy_vs_lsp", "compute_quality", "supervision", "halves", "first_answer_position",
         "example_sequence")
CI_NOTE = "error bars: 95% bootstrap CI over seeds and test problems"
FALLBACK_NOTE = "over seeds only where per-problem outputs are missing"
COST_CI_NOTE = "cost error bars: 95% Student-t CI over seeds"
ACCURACY_COLUMNS = ("accuracy", "accuracy_first_boxed")
ACC_LABEL = "test accuracy (fraction correct)"

# One look for every figure: seaborn's whitegrid style, applied per figure (not globally, so
# importing this module leaves a notebook's own settings alone).
_RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85),
       "axes.titleweight": "bold", "legend.framealpha": 0.9}
DEEP = sns.color_palette("deep")
PASTEL = sns.color_palette("pastel")
MAIN, SECOND, TEACHER, BASE = DEEP[0], DEEP[1], DEEP[2], DEEP[7]
SECTION_COLORS = {Section.PROMPT: 0, Section.COT: 1, Section.ANSWER: 2}  # index into the palettes
SECTION_LEGEND = {Section.PROMPT: "P: prompt (chat-formatted user turn)",
                  Section.COT: "CoT: <think> ... </think>",
                  Section.ANSWER: "A: answer after </think>"}


@contextmanager
def _style():
    with matplotlib.rc_context(_RC):
        yield


def _figure(w: float, h: float, constrained: bool = True) -> Figure:
    return Figure(figsize=(w, h), layout="constrained" if constrained else None)


# --- saving ---------------------------------------------------------------------------------------


# No creation time in the files, so the same records redraw the same bytes (``make paper``
# leaves the committed figures untouched); a PNG holds none by default.
STABLE_METADATA = {"png": {}, "pdf": {"CreationDate": None}}


def save(fig: Figure, name: str, out_dir: str | Path = "figures") -> list[Path]:
    """Write ``<out_dir>/<name>.png`` (150 dpi) and ``<name>.pdf`` atomically (temporary file,
    then ``os.replace``) and close the figure; the files carry no timestamp, so equal figures
    are equal bytes. Returns the two paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for ext in ("png", "pdf"):
            final = out / f"{name}.{ext}"
            tmp = out / f".{name}.{os.getpid()}.tmp.{ext}"
            try:
                fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", facecolor="white",
                            metadata=STABLE_METADATA[ext])
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            paths.append(final)
    finally:
        _close(fig)
    return paths


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (150 dpi), for ``IPython.display.Image(data)`` in a notebook that
    writes no file; closes the figure."""
    import io

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=150, bbox_inches="tight", facecolor="white")
    finally:
        _close(fig)
    return buf.getvalue()


def _close(fig: Figure) -> None:
    if "matplotlib.pyplot" in sys.modules:  # only pyplot keeps a reference to close
        sys.modules["matplotlib.pyplot"].close(fig)


# --- selecting data -------------------------------------------------------------------------------


def _labelled(df: pd.DataFrame, reference: RunConfig | None) -> pd.DataFrame:
    return df if "variant" in df.columns else label_variants(df, reference)


def _variant(changes: Mapping[str, Any], reference: RunConfig | None) -> dict[str, Any]:
    """The variant dict of a config that sets ``changes`` (dotted keys) on the reference: only
    the keys that differ from it, as ``label_variants`` records them."""
    ref = flat_config(reference or RunConfig())
    return {k: v for k, v in changes.items() if ref.get(k) != v}


def _stats(rows: pd.DataFrame, column: str) -> tuple[float, float, float, int, str]:
    """(mean, low, high, n, method): accuracies by ``analysis.accuracy_ci`` (bootstrap over seeds
    and problems), costs by ``analysis.mean_ci`` (Student-t over seeds)."""
    if column not in rows.columns:
        return (math.nan, math.nan, math.nan, 0, "no data")
    if column in ACCURACY_COLUMNS:
        est = accuracy_ci(rows, column)
        return (est.mean, est.low, est.high, est.n, est.method)
    return (*mean_ci(rows[column]), "Student-t over seeds")


def _yerr(means, lows, highs) -> np.ndarray:
    """Asymmetric error-bar lengths; a missing interval (one seed) draws no bar."""
    m, lo, hi = (np.asarray(a, dtype=float) for a in (means, lows, highs))
    return np.nan_to_num(np.vstack([m - lo, hi - m]), nan=0.0)


def _seed_note(ns, methods=()) -> str:
    """The error-bar note: the interval, the seeds per point, and whether any point's interval
    fell back to the seeds alone (``methods``: the points' ``accuracy_ci`` methods)."""
    fallback = f"; {FALLBACK_NOTE}" if any("seeds only" in m for m in methods) else ""
    ns = sorted({int(n) for n in ns if n})
    if not ns:
        return CI_NOTE + fallback
    text = f"n={ns[0]} seeds" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]} seeds"
    single = " (none where n=1)" if ns[0] == 1 else ""
    return f"{CI_NOTE} ({text}){single}{fallback}"


def _reference_lines(ax, rows: pd.DataFrame, horizontal: bool = True) -> None:
    """Teacher and base-student accuracies as labelled horizontal lines."""
    for column, label, color, style in (("teacher.accuracy", "teacher", TEACHER, "--"),
                                        ("student.base_accuracy", "base student (before distillation)",
                                         BASE, ":")):
        if column not in rows.columns:
            continue
        values = pd.to_numeric(rows[column], errors="coerce").dropna()
        if values.empty:
            continue
        v = float(values.mean())
        ax.axhline(v, color=color, ls=style, lw=1.5, label=f"{label}: {v:.2f}", zorder=1)


def lsp_series(df: pd.DataFrame, reference: RunConfig | None = None) -> pd.DataFrame:
    """One row per lead-span proportion present (the truncation grid: ``{"lsp": x}`` and the
    reference itself at its own lsp), with ``rows`` (the seeds' records) and the accuracy
    statistics of both answer rules."""
    df = _labelled(df, reference)
    ref = reference or RunConfig()
    levels = {float(v["lsp"]) for v in df["variant"] if set(v) == {"lsp"}}
    if len(select(df, {})):
        levels.add(float(ref.lsp))
    out = []
    for lsp in sorted(levels):
        rows = select(df, _variant({"lsp": lsp}, ref))
        if rows.empty:
            continue
        m, lo, hi, n, method = _stats(rows, "accuracy")
        fm, flo, fhi, fn, first_method = _stats(rows, "accuracy_first_boxed")
        out.append({"lsp": lsp, "rows": rows, "mean": m, "low": lo, "high": hi, "n": n, "method": method,
                    "first_mean": fm, "first_low": flo, "first_high": fhi, "first_n": fn,
                    "first_method": first_method})
    return pd.DataFrame(out)


def _fmt_lsp(x: float) -> str:
    return f"{x:.1f}" if float(x).is_integer() else f"{x:g}"


def _eval_n(rows: pd.DataFrame) -> str:
    col = f"quality.{TASK}.n"
    if col in rows.columns and rows[col].notna().any():
        ns = sorted({int(x) for x in rows[col].dropna()})
        return f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    return ""


def _acc_label(rows: pd.DataFrame) -> str:
    n = _eval_n(rows)
    return f"{ACC_LABEL}, {n} test problems" if n else ACC_LABEL


# --- 1. accuracy vs lsp ---------------------------------------------------------------------------


def accuracy_vs_lsp(df: pd.DataFrame, reference: RunConfig | None = None) -> Figure:
    """Mean accuracy against the lead-span proportion, scored by the paper's answer rule
    (study/scoring.py, solid) and by the first \\boxed{} (dashed), with teacher and base lines."""
    s = lsp_series(df, reference)
    if s.empty:
        raise ValueError("no truncation runs (variants {'lsp': x} or the reference) in the records")
    rows = pd.concat(list(s["rows"]))
    with _style():
        fig = _figure(7.5, 5.0)
        ax = fig.add_subplot()
        ax.errorbar(s["lsp"], s["mean"], yerr=_yerr(s["mean"], s["low"], s["high"]), fmt="o-", color=MAIN,
                    lw=2, ms=6, capsize=4, label="scored by the paper's rule (last closed \\boxed{})", zorder=3,
                    gid="accuracy-last-boxed")
        if s["first_mean"].notna().any():
            ax.errorbar(s["lsp"] + 0.008, s["first_mean"], yerr=_yerr(s["first_mean"], s["first_low"], s["first_high"]),
                        fmt="s--", color=SECOND, lw=1.6, ms=5, capsize=3, mfc="white",
                        label="scored by the first \\boxed{}", zorder=2, gid="accuracy-first-boxed")
        _reference_lines(ax, rows)
        ax.set_xticks(s["lsp"], [_fmt_lsp(x) for x in s["lsp"]])
        ax.set_xlim(min(s["lsp"]) - 0.05, max(s["lsp"]) + 0.05)
        ax.set_ylim(-0.02, 1.08)
        ax.set_xlabel("lead-span proportion lsp (fraction of each sequence's tokens kept, from the left)")
        ax.set_ylabel(_acc_label(rows))
        ax.set_title("Accuracy vs lead-span proportion")
        ax.text(0.99, 0.01, _seed_note(s["n"], [*s["method"], *s["first_method"]]), transform=ax.transAxes,
                ha="right", va="bottom", fontsize="x-small", color="0.35")
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: "scored" not in labels[i])
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper center",
                  bbox_to_anchor=(0.5, -0.13), ncols=2, fontsize="small")
    return fig


# --- 2. compute vs quality ------------------------------------------------------------------------

_FLOP_UNITS = ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1.0, "FLOP"))


def _flop_unit(values) -> tuple[float, str]:
    top = np.nanmax(np.asarray(values, dtype=float)) if len(values) else 1.0
    return next(((s, u) for s, u in _FLOP_UNITS if top >= s), (1.0, "FLOP"))


def compute_quality(df: pd.DataFrame, reference: RunConfig | None = None) -> Figure:
    """Accuracy against training FLOPs, training time and peak memory, one point per lsp (mean
    over seeds with 95% CIs on both axes: accuracy by the bootstrap over seeds and problems,
    costs Student-t over seeds), points labelled with their lsp. The FLOPs are the profiler's
    count on the profiled steps extrapolated to the run (``compute.flops_profiler``); the
    memory axis names the records' ``compute.peak_memory_source``."""
    s = lsp_series(df, reference)
    if s.empty:
        raise ValueError("no truncation runs (variants {'lsp': x} or the reference) in the records")
    rows = pd.concat(list(s["rows"]))
    flop_scale, flop_unit = _flop_unit(rows.get("compute.flops_profiler", pd.Series(dtype=float)).dropna())
    sources = sorted(set(rows.get("compute.peak_memory_source", pd.Series(dtype=object)).dropna()))
    memory_note = "" if not sources else "\n(" + "; ".join(src.replace("_", " ").replace("+", " + ")
                                                          for src in sources) + ")"
    panels = [
        ("compute.flops_profiler", flop_scale,
         f"student training compute ({flop_unit})\n(profiler count on the profiled steps, extrapolated to the run)",
         "Training FLOPs"),
        ("compute.train_seconds", 1.0, "training time (s)", "Training time"),
        ("compute.peak_memory_bytes", 1e6, f"peak memory (MB){memory_note}", "Peak memory"),
    ]
    with _style():
        fig = _figure(15, 4.8)
        axes = fig.subplots(1, 3, sharey=True)
        for ax, (column, scale, xlabel, title) in zip(axes, panels):
            xs = [_stats(r, column) for r in s["rows"]]
            xm = np.array([x[0] for x in xs]) / scale
            xerr = _yerr(xm, np.array([x[1] for x in xs]) / scale, np.array([x[2] for x in xs]) / scale)
            ok = ~np.isnan(xm)
            if not ok.any():
                ax.text(0.5, 0.5, f"no {column} in the records", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.errorbar(xm[ok], s["mean"][ok], xerr=xerr[:, ok],
                            yerr=_yerr(s["mean"], s["low"], s["high"])[:, ok],
                            fmt="o-", color=MAIN, lw=1.8, ms=6, capsize=3, gid="lsp-points")
                for x, y, lsp in zip(xm[ok], s["mean"][ok], s["lsp"][ok]):
                    ax.annotate(_fmt_lsp(lsp), (x, y), xytext=(5, -12), textcoords="offset points",
                                fontsize="x-small", color="0.25")
                ax.set_xlim(0, None)
            _reference_lines(ax, rows)
            ax.set_xlabel(xlabel)
            ax.set_title(title)
        axes[0].set_ylabel(_acc_label(rows))
        axes[0].set_ylim(-0.02, 1.08)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small")
        fig.suptitle(f"Accuracy vs training cost, one point per lead-span proportion (labels: lsp)\n"
                     f"accuracy {_seed_note(s['n'], s['method'])}; {COST_CI_NOTE}", fontsize="medium")
    return fig


# --- 3. supervision allocation --------------------------------------------------------------------


def supervision_series(df: pd.DataFrame, reference: RunConfig | None = None) -> pd.DataFrame:
    """One row per supervision condition present, in the paper's order (at the reference lsp)."""
    df = _labelled(df, reference)
    out = []
    for cond in CONDITIONS:
        rows = select(df, _variant({"condition": cond}, reference))
        if rows.empty:
            continue
        m, lo, hi, n, method = _stats(rows, "accuracy")
        out.append({"condition": cond, "rows": rows, "mean": m, "low": lo, "high": hi, "n": n, "method": method})
    return pd.DataFrame(out)


def _seed_points(ax, x: float, values, width: float = 0.5, **kw) -> None:
    values = np.asarray(pd.Series(values).dropna(), dtype=float)
    offsets = np.linspace(-width / 4, width / 4, len(values)) if len(values) > 1 else np.zeros(len(values))
    ax.scatter(x + offsets, values, s=22, color="0.15", zorder=4, edgecolor="white", linewidth=0.6, **kw)


def supervision_bars(df: pd.DataFrame, reference: RunConfig | None = None) -> Figure:
    """Accuracy of the six supervision-allocation conditions (paper order), bars = mean over
    seeds with 95% CIs, dots = the seeds; conditions with CoT tokens in one colour."""
    s = supervision_series(df, reference)
    if s.empty:
        raise ValueError("no supervision-allocation runs in the records")
    rows = pd.concat(list(s["rows"]))
    with_cot = ["CoT" in c for c in s["condition"]]
    colors = [PASTEL[0] if c else PASTEL[7] for c in with_cot]
    x = np.arange(len(s))
    with _style():
        fig = _figure(8, 5.0)
        ax = fig.add_subplot()
        bars = ax.bar(x, s["mean"], width=0.6, color=colors, edgecolor="0.3", zorder=2,
                      yerr=_yerr(s["mean"], s["low"], s["high"]), capsize=5, error_kw={"zorder": 3, "lw": 1.4})
        for bar in bars:
            bar.set_gid("supervision-bar")
        for xi, r in zip(x, s["rows"]):
            _seed_points(ax, xi, r["accuracy"])
        for xi, m in zip(x, s["mean"]):
            ax.annotate(f"{m:.2f}", (xi, 0.02), ha="center", va="bottom", fontsize="small", color="0.2")
        _reference_lines(ax, rows)
        ax.set_xticks(x, list(s["condition"]))
        ax.set_xlabel("supervised sections (P = prompt, CoT = chain of thought, A = answer); "
                      "all are in the forward pass")
        ax.set_ylabel(_acc_label(rows))
        ax.set_ylim(0, 1.12)
        ax.set_title("Supervision allocation: which sections the loss sees")
        handles, labels = ax.get_legend_handles_labels()
        handles = [Patch(fc=PASTEL[0], ec="0.3"), Patch(fc=PASTEL[7], ec="0.3"),
                   Line2D([], [], ls="", marker="o", color="0.15", mec="white", ms=5), *handles]
        labels = ["conditions with CoT", "conditions without CoT", "one seed", *labels]
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small", ncols=3)
        ax.text(0.99, 0.99, _seed_note(s["n"], s["method"]), transform=ax.transAxes, ha="right", va="top",
                fontsize="x-small", color="0.35")
    return fig


# --- 4. which half --------------------------------------------------------------------------------

HALF_WINDOWS = ("left", "middle", "right")


def halves_series(df: pd.DataFrame, reference: RunConfig | None = None, lsp: float = 0.5) -> pd.DataFrame:
    """The full-sequence reference and the left/middle/right windows at ``lsp``, those present."""
    df = _labelled(df, reference)
    ref = reference or RunConfig()
    wanted = [("full sequence\n(lsp 1.0)", _variant({"lsp": 1.0, "window": ref.window}, ref))]
    wanted += [(f"{w} window\n(lsp {lsp:g})", _variant({"lsp": lsp, "window": w}, ref))
               for w in HALF_WINDOWS]
    out = []
    for (label, variant), key in zip(wanted, ("full", *HALF_WINDOWS)):
        rows = select(df, variant)
        if rows.empty:
            continue
        m, lo, hi, n, method = _stats(rows, "accuracy")
        out.append({"key": key, "label": label, "rows": rows, "mean": m, "low": lo, "high": hi, "n": n,
                    "method": method})
    return pd.DataFrame(out)


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    return y if k <= 1 else pd.Series(y).rolling(k, center=True, min_periods=1).mean().to_numpy()


def _curves(rows: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for curve in rows.get("curve", pd.Series(dtype=object)):
        if not isinstance(curve, list) or not curve:
            continue
        c = pd.DataFrame(curve)
        if {"step", "loss"} <= set(c.columns):
            c = c.dropna(subset=["step", "loss"]).sort_values("step")
            out.append((c["step"].to_numpy(float), c["loss"].to_numpy(float)))
    return out


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]], k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of (smoothed) loss curves, each interpolated onto the union of their
    steps within the range every curve covers."""
    if not curves:
        return np.array([]), np.array([])
    lo = max(s[0] for s, _ in curves)
    hi = min(s[-1] for s, _ in curves)
    grid = np.unique(np.concatenate([s for s, _ in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if grid.size == 0:
        return grid, grid
    return grid, np.mean([np.interp(grid, s, _smooth(y, k)) for s, y in curves], axis=0)


def halves(df: pd.DataFrame, reference: RunConfig | None = None, lsp: float = 0.5) -> Figure:
    """Left: accuracy of training on the left, middle or right ``lsp`` of every sequence, with
    the full-sequence reference. Right: their training-loss curves (mean over seeds, light
    lines per seed)."""
    s = halves_series(df, reference, lsp)
    if s.empty:
        raise ValueError("no window runs (lsp 0.5 left/middle/right) in the records")
    rows = pd.concat(list(s["rows"]))
    palette = {"full": DEEP[7], "left": DEEP[0], "middle": DEEP[4], "right": DEEP[3]}
    dashes = {"full": "-", "left": "-", "middle": "--", "right": "-."}
    x = np.arange(len(s))
    with _style():
        fig = _figure(14, 5.2)
        ax, axl = fig.subplots(1, 2, width_ratios=[1, 1.25])
        bars = ax.bar(x, s["mean"], width=0.6, color=[palette[k] for k in s["key"]], alpha=0.8, edgecolor="0.3",
                      yerr=_yerr(s["mean"], s["low"], s["high"]), capsize=5, zorder=2,
                      error_kw={"zorder": 3, "lw": 1.4})
        for bar, key in zip(bars, s["key"]):
            bar.set_gid("reference-bar" if key == "full" else "window-bar")
            if key == "full":
                bar.set_hatch("//")
        for xi, r, m in zip(x, s["rows"], s["mean"]):
            _seed_points(ax, xi, r["accuracy"])
            ax.annotate(f"{m:.2f}", (xi, 0.02), ha="center", va="bottom", fontsize="small", color="0.1")
        _reference_lines(ax, rows)
        ax.set_xticks(x, list(s["label"]), fontsize="small")
        ax.set_ylim(0, 1.12)
        ax.set_ylabel(_acc_label(rows))
        ax.set_xlabel("span of each sequence kept for training")
        ax.set_title(f"Which {lsp:g} of the sequence to keep")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend([Line2D([], [], ls="", marker="o", color="0.15", mec="white", ms=5), *handles],
                  ["one seed", *labels], loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize="small", ncols=2)
        ax.text(0.01, 0.99, _seed_note(s["n"], s["method"]), transform=ax.transAxes, ha="left", va="top",
                fontsize="x-small", color="0.35")

        longest = max((len(c[0]) for r in s["rows"] for c in _curves(r)), default=0)
        k = max(1, longest // 40) if longest > 100 else 1
        drawn = False
        for key, label, r in zip(s["key"], s["label"], s["rows"]):
            curves = _curves(r)
            for steps, loss in curves:
                axl.plot(steps, _smooth(loss, k), color=palette[key], alpha=0.25, lw=0.8, gid="seed-curve")
            grid, mean = mean_curve(curves, k)
            if grid.size:
                axl.plot(grid, mean, color=palette[key], lw=2.2, ls=dashes[key],
                         label=f"{label.replace(chr(10), ' ')}: mean of {len(curves)} seeds", gid="mean-curve")
                drawn = True
        if drawn:
            axl.set_yscale("log")
            axl.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            axl.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            axl.tick_params(axis="y", which="minor", labelsize="x-small")
            axl.legend(loc="upper right", fontsize="small")
        else:
            axl.text(0.5, 0.5, "no loss curves in the records", ha="center", va="center", transform=axl.transAxes)
        axl.set_xlabel("optimiser step")
        axl.set_ylabel("training loss (nats per supervised token, log scale)")
        smooth = f", moving average over {k} steps" if k > 1 else ""
        axl.set_title("Training loss (0.5 CE + 0.5 KD)")
        axl.text(0.01, 0.01, f"thin lines: single seeds{smooth}", transform=axl.transAxes, fontsize="x-small",
                 color="0.35", va="bottom")
    return fig


# --- 5. where the first answer sits ---------------------------------------------------------------

LAYOUT_LABELS = {"early": "default corpus (layout early)", "late": "late-answer corpus (layout late)"}


def corpus_position_stats(cfg: RunConfig, tokenizer, n: int | None = None) -> dict[str, pd.DataFrame]:
    """``corpus_stats`` of the first ``n`` training examples (all if None) of the run's corpus
    in both layouts: ``{"early": df, "late": df}``; for a hub corpus (rendered with
    ``tokenizer``, the student's), ``{source: answer_stats(...)}``."""
    from .data.pipeline import corpus_stats
    from .data.synthetic import make_splits

    if cfg.corpus.source != "synthetic":
        from .data.corpus import answer_stats, load_corpus

        train = load_corpus(cfg.corpus, tokenizer).train
        return {cfg.corpus.source: answer_stats(train[:n] if n else train, tokenizer)}
    out = {}
    for layout in ("early", "late"):
        train = make_splits(replace(cfg.corpus, layout=layout))["train"]
        out[layout] = corpus_stats(train[:n] if n else train, tokenizer)
    return out


def lsp_cut_in_completion(stats: pd.DataFrame, lsp: float = 0.5) -> pd.Series:
    """Per example, the fraction of the completion that a left window of ``lsp`` keeps: lsp
    counts the whole sequence (prompt included), so the cut lands at
    (max(1, int(tokens * lsp)) - tokens_P) / tokens_completion of the completion."""
    keep = np.maximum(1, np.floor(stats["tokens"] * lsp + 1e-9))
    return (keep - stats["tokens_P"]) / stats["tokens_completion"]


def first_answer_kept(stats: pd.DataFrame, lsp: float = 0.5) -> pd.Series:
    """Per example, whether a left window of ``lsp`` still contains the whole first \\boxed{}."""
    keep = np.maximum(1, np.floor(stats["tokens"] * lsp + 1e-9))
    end = stats["tokens_P"] + np.round(stats["first_answer_in_completion"] * stats["tokens_completion"])
    return end <= keep


def first_answer_positions(stats_by_layout: Mapping[str, pd.DataFrame], lsp: float = 0.5) -> Figure:
    """Histogram of where the first \\boxed{} answer ends (fraction of the completion) in each
    corpus, with its median and the point a left window of ``lsp`` cuts (median over examples).
    Any corpus's statistics fit (``corpus_stats`` or a hub corpus's ``answer_stats``): examples
    whose CoT never states the answer (NaN) are counted in the legend, and count as not kept."""
    if not stats_by_layout:
        raise ValueError("no corpus statistics given")
    bins = np.linspace(0, 1, 81)
    with _style():
        fig = _figure(9, 4.8)
        ax = fig.add_subplot()
        for i, (layout, st) in enumerate(stats_by_layout.items()):
            color = DEEP[i % len(DEEP)]
            everything = st["first_answer_in_completion"].to_numpy(float)
            values = everything[~np.isnan(everything)]
            if not len(values):
                raise ValueError(f"corpus {layout!r}: no example states its answer in the CoT; nothing to plot")
            missing = len(everything) - len(values)
            label = LAYOUT_LABELS.get(layout, layout)
            kept = first_answer_kept(st, lsp).mean()
            ax.hist(values, bins=bins, color=color, alpha=0.55, edgecolor=color,
                    weights=np.full(len(values), 100 / len(everything)),
                    label=f"{label}: {len(everything)} examples"
                          + (f" ({missing} without the answer in the CoT)" if missing else ""),
                    gid=f"hist-{layout}")
            ax.axvline(np.median(values), color=color, lw=1.8, gid=f"median-{layout}",
                       label=f"median first-answer position: {np.median(values):.2f}")
            cut = float(np.median(lsp_cut_in_completion(st, lsp)))
            ax.axvline(cut, color=color, lw=1.8, ls="--", gid=f"cut-{layout}",
                       label=f"end of a left lsp {lsp:g} window: {cut:.2f} (median); "
                             f"first answer survives in {kept:.0%} of examples")
        ax.set_xlim(0, 1)
        ax.set_xlabel("where the first \\boxed{} answer ends (fraction of the completion, <think> to end)")
        ax.set_ylabel("examples (% of the corpus per bin of 0.0125)")
        ax.set_title("Position of the first answer in the training traces")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize="small", ncols=1,
                  title=f"lsp counts the prompt too, so a window of lsp {lsp:g} ends before {lsp:g} of the completion",
                  title_fontsize="small")
    return fig


# --- 6. one training sequence ---------------------------------------------------------------------


def _token_text(text: str) -> str:
    """A token's text with whitespace made visible: space as '·', newline '⏎', tab '→'."""
    shown = text.replace(" ", "·").replace("\n", "⏎").replace("\t", "→").replace("\r", "␍")
    return shown or "∅"


def sequence_view(cfg: RunConfig, tokenizer, index: int = 0) -> dict:
    """What a run does to training example ``index``: every token of the full sequence with its
    text, section and status: "supervised" (in the forward pass and the loss), "unsupervised"
    (in the forward pass only) or "dropped" (cut by truncation, never forwarded)."""
    from .data.pipeline import example_view
    from .data.synthetic import make_splits

    train = make_splits(cfg.corpus)["train"]
    enc, ids, _, mask = example_view(train, index, tokenizer, cfg)
    kept = kept_positions(enc.sections, cfg.lsp, cfg.window, cfg.cut_after_think, cfg.keep_answer)
    assert [enc.ids[i] for i in kept] == list(ids), "kept tokens not found in the sequence"
    supervised = {pos: m for pos, m in zip(kept, mask)}
    special = set(tokenizer.get_added_vocab())
    tokens = []
    for i, (tid, sec) in enumerate(zip(enc.ids, enc.sections)):
        status = ("supervised" if supervised[i] else "unsupervised") if i in supervised else "dropped"
        raw = tokenizer.decode([tid])
        tokens.append({"text": raw, "shown": _token_text(raw), "section": sec, "status": status,
                       "template": raw in special})
    return {"id": enc.id, "question": train[index].question, "tokens": tokens, "kept": len(ids), "total": len(enc.ids),
            "supervised": int(sum(mask))}


def example_sequence(cfg: RunConfig, tokenizer, index: int = 0, width: int = 105, max_rows: int = 40) -> Figure:
    """Training example ``index`` drawn as wrapped token boxes coloured by section (P, CoT, A):
    solid boxes are supervised, hatched boxes are in the forward pass but not the loss, grey
    boxes were dropped by truncation. Chat-template and think tags are in bold."""
    view = sequence_view(cfg, tokenizer, index)
    gap, pad, row_h, box_h = 0.35, 0.3, 2.6, 2.0  # in character widths
    placed, x, row = [], 0.0, 0
    for tok in view["tokens"]:
        w = len(tok["shown"]) + 2 * pad
        if x > 0 and x + w > width:
            x, row = 0.0, row + 1
        placed.append((x, row, w, tok))
        x += w + gap
    rows = row + 1
    hidden = 0
    if rows > max_rows:
        hidden = sum(1 for p in placed if p[1] >= max_rows)
        placed = [p for p in placed if p[1] < max_rows]
        rows = max_rows

    fig_w, margin = 13.0, 0.35
    unit = (fig_w - 2 * margin) / width  # inches per character width
    font = unit * 72 / 0.602 * 0.9  # DejaVu Sans Mono: a character is 0.602 em wide
    top_in, legend_in = 0.85, 1.05
    body_in = rows * row_h * unit
    fig_h = top_in + body_in + legend_in
    with _style():
        fig = _figure(fig_w, fig_h, constrained=False)
        ax = fig.add_axes((margin / fig_w, legend_in / fig_h, (fig_w - 2 * margin) / fig_w, body_in / fig_h))
        ax.set_xlim(0, width)
        ax.set_ylim(-rows * row_h, 0)
        ax.axis("off")
        for x, r, w, tok in placed:
            c = SECTION_COLORS[tok["section"]]
            y = -(r + 1) * row_h + (row_h - box_h) / 2
            status = tok["status"]
            if status == "supervised":
                rect = Rectangle((x, y), w, box_h, fc=PASTEL[c], ec=DEEP[c], lw=1.0)
                color = "black"
            elif status == "unsupervised":
                rect = Rectangle((x, y), w, box_h, fc="white", ec=DEEP[c], lw=1.0, hatch="////")
                rect.set_alpha(None)
                color = "black"
            else:
                rect = Rectangle((x, y), w, box_h, fc="0.93", ec="0.75", lw=0.6, ls=(0, (2, 2)))
                color = "0.55"
            rect.set_gid(status)
            ax.add_patch(rect)
            txt = ax.text(x + w / 2, y + box_h / 2, tok["shown"], ha="center", va="center_baseline",
                          family="monospace", fontsize=font, color=color,
                          weight="bold" if tok["template"] else "normal", gid=f"token-{status}")
            if status == "unsupervised":
                txt.set_bbox({"fc": "white", "ec": "none", "pad": 0.4, "alpha": 0.85})
        if hidden:
            ax.text(width, -rows * row_h, f"... {hidden} more tokens not shown", ha="right", va="top",
                    fontsize="small", color="0.35")
        window = (f"window {cfg.window}" + (", cut after </think>" if cfg.cut_after_think else "")
                  + (", ending kept" if cfg.keep_answer else ""))
        extra = f", random mask {cfg.random_mask:g}" if cfg.random_mask else ""
        fig.suptitle(f"Training example {index} (\"{view['question']}\"): condition {cfg.condition}, "
                     f"lsp {_fmt_lsp(cfg.lsp)}, {window}{extra}\n"
                     f"{view['kept']} of {view['total']} tokens kept in the forward pass, "
                     f"{view['supervised']} supervised",
                     y=1 - 0.12 / fig_h, va="top", fontsize="large", fontweight="bold")
        handles = [Patch(fc=PASTEL[SECTION_COLORS[s]], ec=DEEP[SECTION_COLORS[s]], label=SECTION_LEGEND[s])
                   for s in Section]
        handles += [Patch(fc="0.8", ec="0.4", label="solid: supervised (in the loss)"),
                    Patch(fc="white", ec="0.4", hatch="////", label="hatched: forwarded, not supervised"),
                    Patch(fc="0.93", ec="0.75", ls=(0, (2, 2)), label="grey: dropped by truncation")]
        fig.legend(handles=handles, loc="lower center", ncols=3, fontsize="small",
                   bbox_to_anchor=(0.5, 0.28 / fig_h), frameon=False)
        fig.text(0.5, 0.08 / fig_h, "bold: chat-template and <think> tags; '·' is a space. The first token is "
                 "never a target (nothing precedes it).", ha="center", va="bottom", fontsize="x-small",
                 color="0.3")
    return fig


def example_text(cfg: RunConfig, index: int = 0, color: bool = False, tokenizer=None) -> tuple[str, bool]:
    """Training example ``index`` as ``study show`` prints it: a header line (config key,
    condition, lsp, window, tokens kept) and the kept tokens with their sections and the
    supervised ones marked (``sections.render``). Returns the text and whether any token is
    supervised. The synthetic corpus only."""
    from .data.pipeline import example_view
    from .data.synthetic import make_splits
    from .identity import config_key
    from .models import get_tokenizer
    from .sections import render

    if cfg.corpus.source != "synthetic":
        raise ValueError(f"study show draws from the synthetic corpus only; corpus.source is {cfg.corpus.source!r} "
                         "(study corpus-stats reads a hub corpus)")
    if not 0 <= index < cfg.corpus.train_examples:  # before the tokenizer is built
        raise ValueError(f"--index {index} is outside the training split: give 0 .. {cfg.corpus.train_examples - 1} "
                         "(corpus.train_examples)")
    if tokenizer is None:
        tokenizer, _ = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    enc, ids, secs, mask = example_view(make_splits(cfg.corpus)["train"], index, tokenizer, cfg)
    header = (f"config {config_key(cfg)}: condition={cfg.condition} lsp={cfg.lsp} window={cfg.window} "
              f"cut_after_think={cfg.cut_after_think} keep_answer={cfg.keep_answer} "
              f"({len(ids)}/{len(enc.ids)} tokens kept)")
    return header + "\n" + render([tokenizer.decode([i]) for i in ids], secs, mask, color=color), any(mask)


# --- 7. for notebooks: loss curves of chosen runs, any ablation ----------------------------------


def loss_curves(rows: pd.DataFrame, label: str = "variant_label", smooth: int = 5, column: str = "loss") -> Figure:
    """The loss curves (``curve``: per optimiser step) of the given record rows overlaid, one
    line per run, labelled by ``label`` and the seed (``column``: loss, ce or kd; ``smooth``: a
    centred rolling mean over that many logged steps)."""
    rows = rows[[isinstance(c, list) and bool(c) for c in rows.get("curve", pd.Series(dtype=object))]]
    if rows.empty:
        raise ValueError("none of these runs has a loss curve (record key `curve`)")
    with _style():
        fig = _figure(8, 4.5)
        ax = fig.add_subplot()
        for i, (_, row) in enumerate(rows.iterrows()):
            c = pd.DataFrame(row["curve"])
            if column not in c.columns:
                raise ValueError(f"curve column {column!r} not in run {row.get('run_id')}'s curve; valid: "
                                 f"{', '.join(k for k in c.columns if k != 'step')}")
            c = c.dropna(subset=["step", column]).sort_values("step")
            name = str(row[label]) if label in row and not pd.isna(row[label]) else str(row.get("run_id"))
            seed = f", seed {int(row['config.seed'])}" if "config.seed" in row and not pd.isna(row["config.seed"]) else ""
            ax.plot(c["step"], _smooth(c[column].to_numpy(float), smooth), lw=1.4,
                    color=DEEP[i % len(DEEP)], label=f"{name}{seed} ({row.get('run_id')})")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(f"training {column}" + (f" (rolling mean of {smooth} logged steps)" if smooth > 1 else ""))
        ax.set_title("Loss curves")
        ax.legend(fontsize="x-small", loc="upper right")
    return fig


def ablation(df: pd.DataFrame, reference: RunConfig | None = None, variants: list[dict[str, Any]] | None = None,
             title: str = "Ablation against the reference run") -> Figure:
    """Any grid's variants against the reference run: accuracy (paper's rule) per variant with
    its 95% CI over seeds and problems (``analysis.accuracy_ci``) and the seeds as dots, the
    reference as a band (its CI) and a line, and each variant's paired test against it
    (``analysis.compare``: difference and p)."""
    from .analysis import compare, variant_label

    df = _labelled(df, reference)
    full = select(df, {})
    wanted = variants if variants is not None else [v for v in dict((variant_label(v), v) for v in df["variant"]).values()]
    points = []
    for v in wanted:
        if not v:
            continue
        rows = select(df, v)
        if rows.empty:
            continue
        m, lo, hi, n, method = _stats(rows, "accuracy")
        cmp = compare(rows, full) if len(full) else None
        points.append({"label": variant_label(v), "rows": rows, "mean": m, "low": lo, "high": hi, "n": n,
                       "method": method, "cmp": cmp})
    if not points:
        raise ValueError("none of the ablation's variants is in the records")
    x = np.arange(len(points))
    with _style():
        fig = _figure(max(6.0, 1.3 * len(points) + 2), 4.8)
        ax = fig.add_subplot()
        if len(full):
            rm, rlo, rhi, rn, rmethod = _stats(full, "accuracy")
            if not (math.isnan(rlo) or math.isnan(rhi)):
                ax.axhspan(rlo, rhi, color=PASTEL[7], alpha=0.5, zorder=1, label="reference 95% CI")
            ax.axhline(rm, color=BASE, lw=1.5, zorder=2, label=f"reference ({rm:.2f}, n={rn})")
        means = [p["mean"] for p in points]
        ax.errorbar(x, means, yerr=_yerr(means, [p["low"] for p in points], [p["high"] for p in points]),
                    fmt="o", ms=8, color=MAIN, capsize=5, lw=1.4, zorder=3, label="variant (mean, 95% CI)")
        for xi, p in zip(x, points):
            _seed_points(ax, xi + 0.18, p["rows"]["accuracy"], width=0.2)
            c = p["cmp"]
            if c is not None and not math.isnan(c.difference):
                ptext = "" if math.isnan(c.p) else (f", p={c.p:.1e}" if c.p < 1e-3 else f", p={c.p:.3f}")
                ax.annotate(f"{c.difference:+.2f}{ptext}", (xi, 1.04), ha="center", va="bottom",
                            fontsize="x-small", color="0.2")
        ax.set_xticks(x, [p["label"].replace(", ", "\n") for p in points])
        ax.set_ylabel(_acc_label(pd.concat([p["rows"] for p in points])))
        ax.set_ylim(0, 1.12)
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 70)))
        note = (_seed_note([p["n"] for p in points], [p["method"] for p in points])
                + "; above each variant: its difference from the reference and the test's p")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", ncols=3,
                  title="\n".join(textwrap.wrap(note, 90)), title_fontsize="x-small")
    return fig


# --- everything -----------------------------------------------------------------------------------


def write_all(df_or_folder: pd.DataFrame | str | Path, out_dir: str | Path = "figures", cfg: RunConfig | None = None,
              tokenizer=None, reference: RunConfig | None = None, n_corpus: int | None = None) -> list[Path]:
    """Draw and save every figure whose data exists; returns the written files. A figure whose
    runs are missing is skipped with a log message; the corpus figures need ``cfg`` and
    ``tokenizer`` (``n_corpus`` caps the examples measured per layout)."""
    if isinstance(df_or_folder, pd.DataFrame):
        df = df_or_folder
    else:
        from .records import load

        df = load(df_or_folder)
    written: list[Path] = []
    if df.empty:
        log.info("no run records: skipping the records figures")
    else:
        df = _labelled(df, reference)
        lsp = lsp_series(df, reference)
        if len(lsp) >= 2:
            written += save(accuracy_vs_lsp(df, reference), "accuracy_vs_lsp", out_dir)
            written += save(compute_quality(df, reference), "compute_quality", out_dir)
        else:
            log.info("fewer than two lsp levels in the records: skipping accuracy_vs_lsp and compute_quality")
        if len(supervision_series(df, reference)) >= 2:
            written += save(supervision_bars(df, reference), "supervision", out_dir)
        else:
            log.info("fewer than two supervision conditions in the records: skipping supervision")
        h = halves_series(df, reference)
        if len(set(h.get("key", [])) & set(HALF_WINDOWS)) >= 2:
            written += save(halves(df, reference), "halves", out_dir)
        else:
            log.info("fewer than two of the lsp 0.5 windows (left/middle/right) in the records: skipping halves")
    if cfg is not None and tokenizer is not None:
        written += save(first_answer_positions(corpus_position_stats(cfg, tokenizer, n_corpus)),
                        "first_answer_position", out_dir)
        # At lsp 0.5 the example shows all three states: supervised, forwarded only, dropped.
        if cfg.corpus.source == "synthetic":
            written += save(example_sequence(replace(cfg, lsp=0.5), tokenizer), "example_sequence", out_dir)
        else:
            log.info("example_sequence draws from the synthetic corpus only: skipped for corpus %s", cfg.corpus.source)
    else:
        log.info("no cfg and tokenizer given: skipping the corpus figures")
    return written
