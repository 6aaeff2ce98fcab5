"""End to end on tiny real models: config -> cached teacher/base -> distil -> lm-eval -> record
-> DataFrame, and the CLI's handling of bad input."""

import json

import pytest
import yaml

from study import records
from study.cli import main
from study.config import TokenizerConfig, run_id
from study.data.synthetic import last_boxed
from study.evaluate import TASK
from study.models import build_model, check_compatible, get_tokenizer
from study.run import run
from tiny import TINY_MODEL, tiny_config


@pytest.fixture(scope="module")
def two_runs(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    full = run(tiny_config(tiny_cache), out, progress=False)
    half = run(tiny_config(tiny_cache, lsp=0.5), out, progress=False)
    return out, full, half


def test_record_contract(two_runs):
    out, full, _ = two_runs
    rec = records.read(out / f"{full['run_id']}.json")
    assert rec["run_id"] == run_id(tiny_config(rec["config"]["cache_dir"]))
    for key in ("study", "torch", "transformers", "python", "device", "git_commit", "git_dirty"):
        assert key in rec["env"]
    assert set(rec["teacher"]) >= {"id", "accuracy"}
    assert rec["student"]["init"] == "base" and rec["student"]["base_id"].startswith("base-")
    data, compute = rec["data"], rec["compute"]
    assert set(data["supervised_by_section"]) == {"P", "CoT", "A"}
    assert data["tokens_supervised"] == sum(data["supervised_by_section"].values())
    assert data["tokens_forwarded"] == data["tokens_full_sequences"]  # lsp 1 forwards everything
    assert data["steps"] == len(rec["curve"]) == 64 // 8
    for key in ("train_seconds", "tokens_per_second", "peak_memory_bytes", "flops_profiler", "flops_analytic",
                "eval_seconds"):
        assert compute[key] > 0
    assert compute["wall_seconds"] > compute["train_seconds"] + compute["eval_seconds"]
    assert compute["peak_memory_source"].startswith("cpu_profiler")
    assert compute["attention"] == "eager"
    assert compute["flops_profiler"] == pytest.approx(compute["flops_analytic"], rel=0.10)
    q = rec["quality"][TASK]
    assert q["n"] == 8 and 0 <= q["accuracy"] <= 1 and "stderr" in q and "accuracy_first_boxed" in q
    assert {"step", "loss", "ce", "kd"} <= set(rec["curve"][0])
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_raw_lm_eval_output_is_kept_and_consistent(two_runs):
    out, full, _ = two_runs
    raw = json.loads((out / f"{full['run_id']}.lm_eval.json").read_text())
    samples = raw["samples"]
    assert len(samples) == 8
    # The accuracy in the record is the paper's rule applied to the kept generations.
    rescored = sum(last_boxed(s["generation"]) == s["target"] for s in samples) / len(samples)
    assert full["quality"][TASK]["accuracy"] == pytest.approx(rescored)


def test_lead_span_halves_tokens_and_flops(two_runs):
    _, full, half = two_runs
    assert half["data"]["steps"] == full["data"]["steps"]
    ratio_tokens = half["data"]["tokens_forwarded"] / full["data"]["tokens_forwarded"]
    assert 0.45 < ratio_tokens <= 0.5
    assert half["compute"]["flops_analytic"] / full["compute"]["flops_analytic"] <= 0.5
    assert half["compute"]["flops_profiler"] / full["compute"]["flops_profiler"] <= 0.52
    assert half["data"]["supervised_by_section"]["A"] == 0  # the answer sits in the cut half


def test_cached_and_live_teacher_runs_agree(two_runs, tiny_cache):
    out, full, _ = two_runs
    live = run(tiny_config(tiny_cache, teacher_cache=False), out, progress=False)
    cached = full
    assert cached["teacher"]["cached"] and not live["teacher"]["cached"] and live["teacher"]["cache"] is None
    cache = cached["teacher"]["cache"]
    assert cache["mode"] == "exact" and cache["examples"] == 64 and cache["bytes"] > 0
    assert cache["build_seconds"] > 0 and cache["build_flops_analytic"] > 0
    # Same steps, same targets to float32 rounding: the loss curves coincide.
    for a, b in zip(cached["curve"], live["curve"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    # The teacher's FLOPs move out of the steps into the one-off cache build.
    assert cached["compute"]["flops_teacher_analytic"] == 0 == cached["compute"]["flops_teacher_profiler"]
    assert live["compute"]["flops_teacher_profiler"] == pytest.approx(live["compute"]["flops_teacher_analytic"], rel=0.10)
    assert live["compute"]["flops_teacher_live_analytic"] == cached["compute"]["flops_teacher_live_analytic"]
    assert live["compute"]["flops_profiler"] == pytest.approx(cached["compute"]["flops_profiler"], rel=0.02)


def test_records_load_flattens(two_runs):
    out, full, half = two_runs
    df = records.load(out)
    assert len(df) >= 2
    assert set(df["config.lsp"]) == {1.0, 0.5}
    assert "teacher.cache.bytes_per_token" in df.columns
    assert f"quality.{TASK}.accuracy" in df.columns and "compute.flops_profiler" in df.columns
    assert isinstance(df["curve"].iloc[0], list)


def test_cli_run_writes_record(tiny_cache, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"condition": "CoT"}))
    base = tiny_config(tiny_cache)
    sets = [f"cache_dir={tiny_cache}", "corpus.train_examples=64", "corpus.val_examples=8",
            "corpus.test_examples=16", "batch_size=8", "epochs=1", "eval_examples=8", "max_gen_toks=24",
            f"teacher={json.dumps(_asdict(base.teacher))}", f"base={json.dumps(_asdict(base.base))}"]
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--no-progress",
                 *sum((["--set", s] for s in sets), [])]) == 0
    recs = list((tmp_path / "out").glob("*[!l].json"))
    assert len(recs) == 1 and records.read(recs[0])["config"]["condition"] == "CoT"
    assert records.read(recs[0])["data"]["supervised_by_section"]["P"] == 0


def _asdict(x):
    from dataclasses import asdict

    return asdict(x)


@pytest.mark.parametrize("text, sets, message", [
    ("lsp: 2\n", [], "(0, 1]"),
    ("lsp: 0.5\nfoo: 1\n", [], "valid keys"),
    ("condition: Q\n", [], "P+CoT+A"),
    ("loss: l2\n", [], "forward_kl"),
    ("lsp: [0.5\n", [], "not valid YAML"),
    ("lsp: 0.5\n", ["window=top"], "left, middle, right"),
    ("lsp: 0.5\n", ["lsp"], "key=value"),
])
def test_cli_rejects_bad_input(tmp_path, capsys, text, sets, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    code = main(["run", "--config", str(cfg), "--out", str(tmp_path / "out"), *sum((["--set", s] for s in sets), [])])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_run_with_nothing_supervised_fails_naming_examples(tiny_cache, tmp_path):
    cfg = tiny_config(tiny_cache, condition="A", cut_after_think=True)
    with pytest.raises(ValueError, match=r"64 of 64 training sequences have no supervised token.*\(e\.g\. "):
        run(cfg, tmp_path, progress=False)
    assert not list(tmp_path.glob("*.json"))


def test_partly_empty_run_counts_empty_examples(tiny_cache, tmp_path):
    # A is the last 9 tokens of sequences of 112-149 tokens: lsp 0.93 keeps part of A in the
    # shorter sequences only (keep > len - 9 <=> len < 9 / 0.07 = 128.6).
    rec = run(tiny_config(tiny_cache, condition="A", lsp=0.93), tmp_path, progress=False)
    assert 0 < rec["data"]["empty_examples"] < 64
    assert rec["data"]["examples"] + rec["data"]["empty_examples"] == 64
    assert len(rec["data"]["empty_example_ids"]) == min(20, rec["data"]["empty_examples"])


def test_teacher_and_student_vocabularies_must_match(tiny_cache):
    tok_a, _ = get_tokenizer(TokenizerConfig(), tiny_cache)
    tok_b, _ = get_tokenizer(TokenizerConfig(vocab_size=160), tiny_cache)
    a, b = build_model(TINY_MODEL, tok_a), build_model(TINY_MODEL, tok_b)
    with pytest.raises(ValueError, match="tokenizers differ"):
        check_compatible(a, b, tok_a, tok_b)
    with pytest.raises(ValueError, match="vocabulary"):
        check_compatible(a, b, tok_a, tok_a)
