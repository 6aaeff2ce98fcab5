"""End to end on tiny real models: config -> cached teacher/base -> distil -> lm-eval -> record
-> DataFrame, and the CLI's handling of bad input."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from study import records
from study.cli import main
from study.config import TokenizerConfig
from study.identity import run_id, weights_sha256
from study.data.synthetic import last_boxed
from study.evaluate import TASK
from study.models import build_model, check_compatible, get_tokenizer
from study.run import run
from study.scoring import correct
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
    weights = {"teacher": rec["teacher"]["weights_sha256"], "base": rec["student"]["base_weights_sha256"]}
    assert rec["run_id"] == run_id(tiny_config(rec["config"]["cache_dir"]), weights)
    for key in ("time", "study", "torch", "transformers", "tokenizers", "lm_eval", "python", "device",
                "git_commit", "git_dirty"):
        assert key in rec["env"]
    assert rec["env"]["execution"] == {"device": "cpu", "dtype": "float32", "threads": torch.get_num_threads()}
    assert set(rec["teacher"]) >= {"id", "accuracy", "weights_sha256", "quality"}
    assert len(rec["teacher"]["weights_sha256"]) == 64 and len(rec["student"]["weights_sha256"]) == 64
    assert rec["student"]["init"] == "base" and rec["student"]["base_id"].startswith("base-")
    # How each artefact was built, with its pinned thread count (PretrainConfig.threads).
    assert rec["teacher"]["built"]["threads"] == rec["student"]["base_built"]["threads"] == 2
    assert rec["student"]["base_built"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    data, compute = rec["data"], rec["compute"]
    assert set(data["supervised_by_section"]) == {"P", "CoT", "A"}
    assert data["rejected"] == {} and "corpus" not in data  # the synthetic corpus rejects no row
    assert data["tokens_supervised"] == sum(data["supervised_by_section"].values())
    assert data["tokens_forwarded"] == data["tokens_full_sequences"]  # lsp 1 forwards everything
    assert data["steps"] == len(rec["curve"]) == 64 // 8
    for key in ("train_seconds", "tokens_per_second", "peak_memory_bytes", "flops_profiler", "flops_analytic",
                "eval_seconds"):
        assert compute[key] > 0
    assert compute["wall_seconds"] > compute["train_seconds"] + compute["eval_seconds"]
    assert compute["peak_memory_source"].startswith("cpu_profiler")
    assert compute["attention"] == "eager"
    # Matmul FLOPs measured on the profiled steps agree with the formula to rounding; the run's
    # total is that count extrapolated by the analytic ratio, and says so.
    assert compute["flops_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert compute["flops_profiler"] == pytest.approx(compute["flops_analytic"], rel=1e-3)
    assert compute["flops_profiler_measured"] < compute["flops_profiler"]
    assert "2 profiled steps" in compute["flops_profiler_method"]
    assert compute["flops_uncounted_ops"] == [] and compute["profiled_steps"] == 2
    assert "teacher freed" in compute["peak_memory_scope"]
    q = rec["quality"][TASK]
    assert q["n"] == 8 and 0 <= q["accuracy"] <= 1 and "stderr" in q and "accuracy_first_boxed" in q
    assert (q["samples"], q["temperature"]) == (1, 0.0)  # greedy, one generation per problem
    for prior in (q["ending_prior"], rec["teacher"]["ending_prior"], rec["student"]["base_ending_prior"]):
        assert prior["n"] == 8 and 0 <= prior["p_close_think"] <= 1 and 0 <= prior["p_end_token"] <= 1
    assert {"step", "loss", "ce", "kd"} <= set(rec["curve"][0])
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_raw_lm_eval_output_is_kept_and_consistent(two_runs):
    out, full, _ = two_runs
    raw = json.loads((out / f"{full['run_id']}.lm_eval.json").read_text())
    samples = raw["samples"]
    assert len(samples) == 8
    # The accuracy in the record is the paper's rule applied to the kept generations, and the
    # last-box diagnostic is lm-eval's exact match through the task's filter.
    q = full["quality"][TASK]
    assert q["accuracy"] == pytest.approx(sum(correct(s["generation"], s["target"]) for s in samples) / 8)
    assert q["accuracy"] == pytest.approx(sum(s["correct"]["paper"] for s in samples) / 8)
    assert q["accuracy_last_boxed"] == pytest.approx(sum(last_boxed(s["generation"]) == s["target"]
                                                         for s in samples) / 8)
    assert "math-verify 0.5.2" in q["scorer"]
    assert q["ended_eos"] + q["hit_token_limit"] == pytest.approx(1.0)
    assert 0 <= q["fallback_share"] <= 1 and 0 <= q["closed_think"] <= 1


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
    assert live["compute"]["flops_teacher_profiler"] == pytest.approx(live["compute"]["flops_teacher_analytic"], rel=1e-3)
    assert "live teacher resident" in live["compute"]["peak_memory_scope"]
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


def test_an_existing_record_is_refused_before_training_and_kept_on_overwrite(two_runs, tiny_cache):
    out, full, _ = two_runs
    path = out / f"{full['run_id']}.json"
    before = path.read_text()
    with pytest.raises(records.RecordExists, match="--overwrite"):
        run(tiny_config(tiny_cache), out, progress=False)
    assert path.read_text() == before
    again = run(tiny_config(tiny_cache), out, progress=False, overwrite=True)
    assert again["run_id"] == full["run_id"] and again["curve"] == full["curve"]  # deterministic
    kept = list((out / records.REPLACED).glob(f"*/{full['run_id']}.json"))
    assert len(kept) == 1 and kept[0].read_text() == before


def test_saved_student_is_the_trained_one_and_can_be_rescored(two_runs, tiny_cache):
    from study.models import load_model
    from study.run import rescore, student_path

    out, full, _ = two_runs
    record_text = (out / f"{full['run_id']}.json").read_text()
    folder = student_path(out, full["run_id"])
    assert folder.is_dir() and full["student"]["saved"] == folder.name
    student = load_model(folder, "eager", torch.device("cpu"))
    assert weights_sha256(student) == full["student"]["weights_sha256"]
    same = rescore(out, full["run_id"])  # the run's own settings give the run's own score
    assert same["quality"][TASK]["accuracy"] == full["quality"][TASK]["accuracy"]
    short = rescore(out, full["run_id"], ["max_gen_toks=4", "eval_examples=4"])
    assert short["settings"] == {"eval_examples": 4, "max_gen_toks": 4, "eval_batch_size": 8}
    assert short["quality"][TASK]["n"] == 4 and short["quality"][TASK]["max_gen_toks"] == 4
    assert len(list((folder / "evaluations").glob("*[!l].json"))) == 2
    with pytest.raises(ValueError, match="evaluation settings only"):
        rescore(out, full["run_id"], ["lr=0.1"])
    assert (out / f"{full['run_id']}.json").read_text() == record_text  # the record is never changed


def test_cli_evaluate(two_runs, capsys):
    out, full, _ = two_runs
    assert main(["evaluate", "--run", full["run_id"], "--runs", str(out), "--set", "max_gen_toks=6"]) == 0
    assert full["run_id"] in capsys.readouterr().out
    assert main(["evaluate", "--run", "000000000000", "--runs", str(out)]) == 2
    assert "no record" in capsys.readouterr().err


def test_run_with_accumulation_equals_one_batch(tiny_cache, tmp_path):
    one = run(tiny_config(tiny_cache, save_student=False), tmp_path / "a", progress=False)
    acc = run(tiny_config(tiny_cache, grad_accum=4, save_student=False), tmp_path / "b", progress=False)
    assert acc["run_id"] != one["run_id"]
    for a, b in zip(one["curve"], acc["curve"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_artefacts_are_keyed_by_their_weights_and_scored_by_their_own_settings(tiny_cache):
    from dataclasses import replace

    from study.pretrain import get_base, get_teacher

    cfg = tiny_config(tiny_cache)
    _, meta = get_teacher(cfg)
    # An evaluation setting re-scores the same artefact; it never trains another.
    _, more = get_teacher(replace(cfg, teacher=replace(cfg.teacher, eval_examples=4)))
    assert more["id"] == meta["id"] and more["weights_sha256"] == meta["weights_sha256"]
    assert more["quality"]["test"]["n"] == 4 and meta["quality"]["test"]["n"] == 8
    # The base's accuracy before distillation is on the run's own test split.
    _, base = get_base(cfg)
    other = replace(cfg, corpus=replace(cfg.corpus, test_examples=12), eval_examples=8)
    _, base_other = get_base(other)
    assert base_other["id"] == base["id"]
    assert len(list((Path(tiny_cache) / base["id"] / "evaluations").glob("*.json"))) >= 3


def test_a_changed_artefact_is_refused(tiny_cache, tmp_path):
    import shutil

    from study.pretrain import get_teacher

    cfg = tiny_config(tiny_cache)
    _, meta = get_teacher(cfg)
    copy_dir = tmp_path / "cache"
    shutil.copytree(tiny_cache, copy_dir)
    from safetensors.torch import load_file, save_file

    weights = copy_dir / meta["id"] / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="weights hash"):
        get_teacher(tiny_config(copy_dir))


def test_the_paper_sampled_decoding_scores_each_problem_by_its_share_of_correct_samples(two_runs, tiny_cache):
    """With samples, the synthetic split is decoded as the paper decodes its benchmarks: n
    distinct samples per problem, each scored by the paper's rule, pass@1 = the mean over
    problems of each problem's share; the tables' per-problem matrix reads those shares."""
    import pandas as pd

    from study.analysis import problem_correctness
    from study.run import rescore, student_path

    out, full, _ = two_runs
    sampled = rescore(out, full["run_id"], ["samples=3", "eval_temperature=1.0", "eval_examples=6"])
    q = sampled["quality"][TASK]
    assert (q["samples"], q["temperature"], q["top_p"], q["n"]) == (3, 1.0, 0.95, 6)
    raws = list((student_path(out, full["run_id"]) / "evaluations").glob("*.lm_eval.json"))
    raw = next(json.loads(p.read_text()) for p in raws if len(json.loads(p.read_text())["samples"]) == 6)
    shares = []
    for doc in raw["samples"]:
        gens = doc["generations"]
        assert len(gens) == 3
        scored = [correct(g, str(doc["target"])) for g in gens]  # each sample, by the paper's rule
        assert doc["correct_samples"]["paper"] == scored and doc["correct"]["paper"] == sum(scored) / 3
        shares.append(sum(scored) / 3)
    assert q["accuracy"] == pytest.approx(sum(shares) / 6) and q["accuracy_lm_eval"] == pytest.approx(q["accuracy"])
    assert q["distinct_samples"] > 1 / 3  # sampling on: a greedy decoder repeats one generation
    # the greedy record is untouched and its re-score keyed as before
    assert rescore(out, full["run_id"])["quality"][TASK]["accuracy"] == full["quality"][TASK]["accuracy"]
    with pytest.raises(ValueError, match="greedy decoding"):
        rescore(out, full["run_id"], ["samples=3"])  # n copies of one greedy generation
    # the per-problem matrix of the tables takes each problem's share
    path = next(p for p in raws if len(json.loads(p.read_text())["samples"]) == 6)
    record = path.with_name(path.name.removesuffix(".lm_eval.json") + ".json")
    rows = pd.DataFrame({"path": [str(record)], "accuracy": [q["accuracy"]]})
    matrix, reason = problem_correctness(rows)
    assert reason == "" and sorted(matrix.iloc[0].tolist()) == sorted(shares)


def test_a_sampled_run_is_another_run_and_a_greedy_one_keeps_its_id(tiny_cache):
    from dataclasses import asdict, replace

    weights = {"teacher": "t", "base": "b"}
    greedy = tiny_config(tiny_cache)
    explicit = asdict(greedy)  # a record's config: every key written out
    assert "samples" in explicit and run_id(greedy, weights) == run_id(replace(greedy, samples=1), weights)
    sampled = replace(greedy, samples=4, eval_temperature=0.6)
    assert run_id(sampled, weights) != run_id(greedy, weights)
    assert run_id(replace(sampled, eval_top_p=0.5), weights) != run_id(sampled, weights)
    assert run_id(replace(greedy, eval_top_p=0.5), weights) == run_id(greedy, weights)  # greedy never reads it


def test_the_ending_prior_is_each_gold_trace_s_probability_of_closing_and_ending(tiny_cache, tokenizer):
    """Batched with right padding, it equals the probability of </think> and of the end token
    at their gold positions, read one example at a time; a model that was never trained gives
    them about 1/V."""
    from study.data.pipeline import encode
    from study.data.synthetic import make_splits
    from study.evaluate import ending_prior
    from study.pretrain import get_teacher

    cfg = tiny_config(tiny_cache)
    examples = make_splits(cfg.corpus)["test"][:5]
    teacher, _ = get_teacher(cfg)
    got = ending_prior(teacher, tokenizer, examples, batch_size=2)
    end_think = tokenizer.convert_tokens_to_ids("</think>")
    close, end = [], []
    for e in encode(examples, tokenizer):
        with torch.no_grad():
            probs = teacher(input_ids=torch.tensor([e.ids])).logits[0].softmax(-1)
        at = e.ids.index(end_think)
        close.append(probs[at - 1, end_think].item())
        end.append(probs[-2, tokenizer.eos_token_id].item())
    assert got["n"] == 5
    assert got["p_close_think"] == pytest.approx(sum(close) / 5, abs=1e-6)
    assert got["p_end_token"] == pytest.approx(sum(end) / 5, abs=1e-6)
    torch.manual_seed(0)  # an untrained model's distribution is close to uniform: about 1/V each
    untrained = ending_prior(build_model(TINY_MODEL, tokenizer), tokenizer, examples)
    for key in ("p_close_think", "p_end_token"):
        assert 0.25 / len(tokenizer) < untrained[key] < 4 / len(tokenizer)
