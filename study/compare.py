"""Does a reproduction reproduce? ``study compare COMMITTED REPRODUCED`` pairs the runs of two
records folders and says, per variant, whether the reproduction is identical, within the seed
CI, or disagrees.

    study compare results/runs results/reproduced/runs        # exit 1 on a disagreement or a gap
    study compare results/runs results/reproduced             # the same: a folder with runs/ stands for it

    from study.compare import compare_folders
    report = compare_folders("results/runs", "results/reproduced/runs")
    report.table          # one row per variant: accuracies with CIs, difference, cost ratios, verdict
    report.ok             # no disagreement beyond the CI, nothing of the committed study missing

Which runs. The committed study is the runs its grid summaries (``<name>.grid.json``) name, when
the folder has any (so single runs kept beside a study, outside its grids, are not expected of
a reproduction); otherwise every record. ``every=True`` takes every record in either case.

Pairing. A reproduced run pairs with the committed run of the same run id (same config,
execution and artefact weights), else with the committed run of the same variant and seed
(a run id that differs: other thread counts or other artefacts). A run's *variant* is how its
config differs from the reference (study/analysis.py, seed and infrastructure fields aside); the
reference is given, or inferred from the committed runs as the config closest to all the others
(the medoid: the study's default run, from which every cell varies).

Verdicts, per variant of the committed study:
- ``identical``: every committed seed has a reproduced run whose record is equal apart from
  env, timings, cost measurements and paths (``records`` ignores the same fields when it checks
  two copies of one run);
- ``within CI``: the reproduced minus committed accuracy (the paper's answer rule) has a 95%
  bootstrap interval over seeds and test problems that contains 0 (``analysis.compare``, paired
  by seed where both sides hold the same seeds);
- ``disagrees``: that interval excludes 0;
- ``no CI``: not identical, and fewer than two seeds a side, so no interval over seeds (reported,
  not counted as a disagreement);
- ``missing``: the variant, or some of its seeds, is absent from the reproduction.
Variants only in the reproduction are listed as ``new`` and change nothing.

Cost ratios are each side's own: the variant's mean tokens forwarded, training FLOPs
(``compute.flops_profiler``) and training time over those of the reference variant (P+CoT+A at
lsp 1.0 in the default study) in the same folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from . import records
from .analysis import REPLICATE_KEYS, accuracy_ci, compare, flat_config, label_variants, select
from .config import NON_SEMANTIC, RunConfig
from .tables import LOW, HIGH, to_markdown

IDENTICAL, WITHIN, DISAGREES, NO_CI, MISSING, NEW = "identical", "within CI", "disagrees", "no CI", "missing", "new"
FAILING = (DISAGREES, MISSING)
COSTS = {"tokens": "data.tokens_forwarded", "FLOPs": "compute.flops_profiler", "train time": "compute.train_seconds"}
# Besides what records ignores between two copies of one run: the run id (it names the
# execution, e.g. the thread count) and where the student was saved.
_IGNORED = ("run_id", "student.saved")


@dataclass
class Report:
    """The comparison: ``table`` (one row per variant, raw numbers), the reference's variant
    config, and the runs left out of the committed study (not named by a grid summary)."""
    table: pd.DataFrame
    reference: dict[str, Any]
    committed: str
    reproduced: str
    left_out: list[str] = field(default_factory=list)
    # Pairs that share a run id but whose records differ: (run id, first differing field,
    # committed git commit, reproduced git commit). A run id names the config, the execution
    # and the artefacts' weights, not the code, so a change to the training arithmetic shows
    # here first.
    same_id_differ: list[tuple[str, str, str, str]] = field(default_factory=list)
    same_id_pairs: int = 0

    @property
    def failures(self) -> pd.DataFrame:
        return self.table[self.table["verdict"].isin(FAILING)]

    @property
    def ok(self) -> bool:
        return self.failures.empty

    def display(self) -> pd.DataFrame:
        """The table with its numbers formatted, pairs of sides in one cell (committed / reproduced)."""
        t = self.table

        def acc(name: str, row: dict) -> str:
            mean, low, high = row[name], row[name + LOW], row[name + HIGH]
            if _nan(mean):
                return "–"
            ci = "" if _nan(low) or _nan(high) else f" [{low:.3f}, {high:.3f}]"
            return f"{mean:.3f}{ci}"

        out = []
        for row in t.to_dict("records"):
            out.append({
                "variant": row["variant"],
                "seeds (c / r)": f"{row['seeds committed']} / {row['seeds reproduced']}",
                "committed accuracy [95% CI]": acc("committed accuracy", row),
                "reproduced accuracy [95% CI]": acc("reproduced accuracy", row),
                "difference [95% CI]": acc("difference", row).replace("0.000 [0.000, 0.000]", "0"),
                **{f"{name} ratio (c / r)": " / ".join("–" if _nan(row[f"{name} ratio ({side})"])
                                                      else f"{row[f'{name} ratio ({side})']:.3f}"
                                                      for side in ("committed", "reproduced"))
                   for name in COSTS},
                "verdict": row["verdict"] + (f" (seeds {row['missing seeds']})" if row["missing seeds"] else ""),
            })
        return pd.DataFrame(out)

    def text(self) -> str:
        """The table as Markdown, then one line per failing variant and a summary line."""
        lines = [to_markdown(self.display(), f"Reproduction {self.reproduced} against {self.committed}",
                             self.table.attrs.get("note"))]
        for row in self.failures.to_dict("records"):
            if row["verdict"] == MISSING:
                lines.append(f"missing in the reproduction: {row['variant']}"
                             + (f" (seeds {row['missing seeds']})" if row["missing seeds"] else ""))
            else:
                lines.append(f"disagrees beyond the CI: {row['variant']} (reproduced - committed "
                             f"{row['difference']:+.3f}, 95% CI [{row['difference' + LOW]:.3f}, "
                             f"{row['difference' + HIGH]:.3f}])")
        if self.same_id_differ:
            rid, first, c_git, r_git = self.same_id_differ[0]
            lines.append(
                f"{len(self.same_id_differ)} of {self.same_id_pairs} runs with a committed run id differ from it "
                f"(e.g. {rid}: {first}; committed at git {c_git[:7]}, reproduced at {r_git[:7]}). A run id names the "
                "config, the execution and the artefacts' weights, not the code: the training arithmetic changed "
                "between those commits, or the machine computes differently (env.torch, env.execution)")
        counts = self.table["verdict"].value_counts()
        summary = ", ".join(f"{int(counts[v])} {v}" for v in (IDENTICAL, WITHIN, NO_CI, DISAGREES, MISSING, NEW)
                            if v in counts)
        lines.append(f"{len(self.table)} variants: {summary}"
                     + (f"; {len(self.left_out)} committed runs outside the study's grid summaries not compared"
                        if self.left_out else "")
                     + (" -> reproduced" if self.ok else " -> NOT reproduced"))
        return "\n".join(lines) + "\n"


def study_run_ids(folder: str | Path) -> set[str] | None:
    """The run ids the grid summaries of ``folder`` name (cells that ran or were skipped), or
    None when the folder has no grid summary."""
    summaries = sorted(Path(folder).glob("*.grid.json"))
    if not summaries:
        return None
    ids = set()
    for path in summaries:
        try:
            runs = json.loads(path.read_text())["runs"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"grid summary {path} is unreadable ({type(e).__name__}); fix or move it") from None
        ids |= {r["run_id"] for r in runs if r.get("run_id") and r.get("status") in ("ran", "skipped")}
    return ids


def _semantic(row: Mapping[str, Any]) -> dict[str, Any]:
    """A record row's config without seed and infrastructure fields (dotted keys, NaN dropped)."""
    out = {}
    for key, value in row.items():
        if not key.startswith("config."):
            continue
        name = key[len("config."):]
        if name in REPLICATE_KEYS or name.split(".")[0] in NON_SEMANTIC:
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        out[name] = value
    return out


def _key(value: Any) -> str:
    return json.dumps(value.tolist() if hasattr(value, "tolist") else value, sort_keys=True, default=str)


def infer_reference(df: pd.DataFrame) -> dict[str, Any]:
    """The flat config (dotted keys) of the committed runs' medoid: the distinct config (seed
    aside) that differs from all the others' configs in the fewest keys, ties broken by the
    most seeds, then by the fewest keys differing from the package's defaults (``RunConfig()``,
    the paper's P+CoT+A at lsp 1.0), then the order of the records."""
    groups: dict[str, tuple[dict, int]] = {}
    for row in df.to_dict("records"):
        sem = _semantic(row)
        key = _key({k: _key(v) for k, v in sorted(sem.items())})
        cfg, n = groups.get(key, (sem, 0))
        groups[key] = (cfg, n + 1)
    configs = list(groups.values())

    def distance(a: dict, b: dict) -> int:
        return sum(_key(a.get(k)) != _key(b.get(k)) for k in set(a) | set(b))

    defaults = {k: v for k, v in flat_config(RunConfig()).items()
                if k not in REPLICATE_KEYS and k.split(".")[0] not in NON_SEMANTIC}

    def from_defaults(cfg: dict) -> int:
        return sum(_key(cfg.get(k, v)) != _key(v) for k, v in defaults.items())

    best = min(range(len(configs)), key=lambda i: (sum(distance(configs[i][0], c) for c, _ in configs),
                                                   -configs[i][1], from_defaults(configs[i][0]), i))
    return configs[best][0]


def _reference_config(reference: RunConfig | Mapping | None, committed: pd.DataFrame) -> dict[str, Any]:
    """The reference as a flat config: given, or inferred from the committed runs, with the keys
    those records lack (written before the key existed, so run as its default: the convention of
    ``analysis.variant_of``) at the package's defaults, so a reproduced run that sets such a key
    (``keep_answer: true``) is its own variant."""
    if reference is not None:
        return flat_config(reference)
    defaults = {k: v for k, v in flat_config(RunConfig()).items()
                if k not in REPLICATE_KEYS and k.split(".")[0] not in NON_SEMANTIC}
    return {**defaults, **infer_reference(committed)}


def _merged(defaults: dict, given: dict) -> dict:
    return {**defaults, **{k: _merged(defaults[k], v) if isinstance(v, dict) and isinstance(defaults.get(k), dict)
                           else v for k, v in given.items()}}


def _comparable(path: str) -> dict:
    """A record as the identity check sees it: config keys it lacks (written before they
    existed) at their defaults, without run id and saved-student path."""
    from dataclasses import asdict

    rec = records.read(path)
    if isinstance(rec.get("config"), dict):
        rec["config"] = _merged(json.loads(json.dumps(asdict(RunConfig()))), rec["config"])
    for key in _IGNORED:
        parts = key.split(".")
        target = rec
        for p in parts[:-1]:
            target = target.get(p, {}) if isinstance(target, dict) else {}
        if isinstance(target, dict):
            target.pop(parts[-1], None)
    return rec


def _pair(committed: pd.DataFrame, reproduced: pd.DataFrame) -> dict[Any, Any]:
    """committed index -> reproduced index: by run id, then by variant and seed."""
    pairs, used = {}, set()
    by_id = {rid: i for i, rid in zip(reproduced.index, reproduced["run_id"])}
    for i, rid in zip(committed.index, committed["run_id"]):
        if rid in by_id:
            pairs[i] = by_id[rid]
            used.add(by_id[rid])
    by_cell = {(label, seed): i for i, label, seed in
               zip(reproduced.index, reproduced["variant_label"], reproduced["seed"]) if i not in used}
    for i, label, seed in zip(committed.index, committed["variant_label"], committed["seed"]):
        if i not in pairs and (label, seed) in by_cell:
            pairs[i] = by_cell.pop((label, seed))
    return pairs


def _ratios(rows: pd.DataFrame, ref_rows: pd.DataFrame) -> dict[str, float]:
    out = {}
    for name, column in COSTS.items():
        if column not in rows or column not in ref_rows or rows.empty or ref_rows.empty:
            out[name] = math.nan
            continue
        num, den = pd.to_numeric(rows[column], errors="coerce").mean(), pd.to_numeric(ref_rows[column], errors="coerce").mean()
        out[name] = float(num / den) if den else math.nan
    return out


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _seeds(values) -> str:
    return ", ".join(str(int(s)) for s in sorted(values))


def records_folder(folder: str | Path) -> Path:
    """``folder``, or its ``runs/`` when it holds no record itself but that does (a reproduction's
    top folder, ``results/reproduced``, holds runs/, notebooks/, tables and figures)."""
    folder = Path(folder)
    if (folder / "runs").is_dir() and folder.is_dir() and not any(
            records.is_record_name(p.name) for p in folder.iterdir() if p.is_file()):
        return folder / "runs"
    return folder


def compare_folders(committed: str | Path, reproduced: str | Path, reference: RunConfig | Mapping | None = None,
                    every: bool = False, level: float = 0.95) -> Report:
    """Compare the runs of ``reproduced`` with those of ``committed`` (module docstring); a
    folder holding ``runs/`` and no record stands for its ``runs/``."""
    committed, reproduced = records_folder(committed), records_folder(reproduced)
    c_all = records.load(committed)
    r_all = records.load(reproduced)
    left_out: list[str] = []
    named = None if every else study_run_ids(committed)
    if named is not None:
        keep = c_all["run_id"].isin(named)
        left_out = sorted(c_all.loc[~keep, "run_id"])
        c_all = c_all[keep]
        if c_all.empty:
            raise ValueError(f"the grid summaries in {committed} name none of its records; pass every=True (--all) "
                             "to compare every record")
    ref = _reference_config(reference, c_all)
    c = label_variants(c_all.reset_index(drop=True), ref)
    r = label_variants(r_all.reset_index(drop=True), ref)
    pairs = _pair(c, r)
    ref_c, ref_r = select(c, {}), select(r, {})
    same_id = [(i, j) for i, j in pairs.items() if c.at[i, "run_id"] == r.at[j, "run_id"]]
    differences = {i: records._differences(_comparable(c.at[i, "path"]), _comparable(r.at[j, "path"]))
                   for i, j in pairs.items()}

    def commit(df: pd.DataFrame, i) -> str:
        return str(df.at[i, "env.git_commit"]) if "env.git_commit" in df else "unknown"

    same_id_differ = [(c.at[i, "run_id"], _first_difference(differences[i]), commit(c, i), commit(r, j))
                      for i, j in same_id if differences[i]]

    rows = []
    labels = list(dict.fromkeys(c.sort_values("variant_label")["variant_label"]))
    labels += [lab for lab in dict.fromkeys(r.sort_values("variant_label")["variant_label"]) if lab not in labels]
    for label in labels:
        cv, rv_all = c[c["variant_label"] == label], r[r["variant_label"] == label]
        paired = [pairs[i] for i in cv.index if i in pairs]
        missing = sorted(set(cv.loc[[i for i in cv.index if i not in pairs], "seed"]))
        rv = r.loc[paired] if paired else rv_all.iloc[0:0]
        # The reproduction's estimate uses the runs that pair (the committed design), so extra
        # seeds of a newer grid do not change the verdict; a variant new in the reproduction
        # shows every run.
        shown = rv if len(cv) else rv_all
        acc_c, acc_r = accuracy_ci(cv, level=level), accuracy_ci(shown, level=level)
        diff = math.nan, math.nan, math.nan
        if cv.empty:
            verdict = NEW
        elif missing:
            verdict = MISSING
        elif all(not differences[i] for i in cv.index):
            verdict = IDENTICAL
            diff = (0.0, 0.0, 0.0)
        else:
            cmp = compare(rv, cv, level=level)
            diff = (cmp.difference, cmp.low, cmp.high)
            if math.isnan(cmp.low) or math.isnan(cmp.high):
                verdict = NO_CI
            else:
                verdict = WITHIN if cmp.low <= 0 <= cmp.high else DISAGREES
        if verdict in (MISSING,) and not rv.empty:
            cmp = compare(rv, cv.loc[[i for i in cv.index if i in pairs]], level=level)
            diff = (cmp.difference, cmp.low, cmp.high)
        ratios_c, ratios_r = _ratios(cv, ref_c), _ratios(shown, ref_r)
        rows.append({
            "variant": label,
            "seeds committed": len(cv), "seeds reproduced": len(shown),
            "committed accuracy": acc_c.mean, "committed accuracy" + LOW: acc_c.low,
            "committed accuracy" + HIGH: acc_c.high,
            "reproduced accuracy": acc_r.mean, "reproduced accuracy" + LOW: acc_r.low,
            "reproduced accuracy" + HIGH: acc_r.high,
            "difference": diff[0], "difference" + LOW: diff[1], "difference" + HIGH: diff[2],
            **{f"{name} ratio (committed)": ratios_c[name] for name in COSTS},
            **{f"{name} ratio (reproduced)": ratios_r[name] for name in COSTS},
            "verdict": verdict,
            "missing seeds": _seeds(missing),
        })
    table = pd.DataFrame(rows)
    for col in ("seeds committed", "seeds reproduced"):
        table[col] = table[col].astype(int)
    table.attrs["note"] = (
        "Accuracy by the paper's answer rule, mean over seeds with its 95% two-stage bootstrap CI over seeds and "
        "test problems; difference = reproduced - committed over the runs that pair (by run id, else by variant "
        "and seed), paired by seed; identical = records equal apart from env, timings, costs and paths. Cost "
        "ratios: the variant's mean over the reference variant's (P+CoT+A, lsp 1.0 in the default study) in the "
        "same folder: tokens forwarded, training FLOPs (compute.flops_profiler), training time.")
    return Report(table, ref, str(committed), str(reproduced), left_out, same_id_differ, len(same_id))


def _first_difference(fields: list[str]) -> str:
    """What a reader should look at first among a pair's differing fields: the loss curve (the
    training itself), else the accuracy, else the first field."""
    for name in ("curve", "quality.study_synthetic.accuracy"):
        if name in fields:
            return f"{name} differs"
    return f"{fields[0]} differs" + (f" (and {len(fields) - 1} more fields)" if len(fields) > 1 else "")


def column(report_table: pd.DataFrame, name: str) -> pd.Series:
    """A column of a report table indexed by variant (for tests and notebooks)."""
    return report_table.set_index("variant")[name]
