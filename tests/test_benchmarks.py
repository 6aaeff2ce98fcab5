"""The paper's benchmarks through lm-eval, on local files in each benchmark's hub schema
(tests/fixtures/benchmarks/) with a tiny random student: the rows become the right prompts and
targets, n samples per problem are n different samples, every sample is scored, pass@1 is the
mean of the per-problem means with its stderr over problems, and the record says what was run."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from study import benchmarks, scoring
from study.benchmarks import BENCHMARKS, CHOICE_PROMPT, MATH_PROMPT, load_rows, question_and_target, shuffled_choices
from study.config import ModelConfig, config_from_dict
from study.evaluate import prepare_benchmarks, run_benchmarks

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
SAMPLES, MAX_GEN = 4, 12
STUDENT = ModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=16, intermediate_size=64, max_position_embeddings=1024)


# --- rows, prompts, targets --------------------------------------------------------------------


def test_fixtures_are_in_the_hub_schemas():
    aime = json.loads((FIXTURES / "aime24.jsonl").read_text().splitlines()[0])
    assert set(aime) == {"id", "problem", "solution", "answer", "url", "year"}  # HuggingFaceH4/aime_2024
    math500 = json.loads((FIXTURES / "math500.jsonl").read_text().splitlines()[0])
    assert set(math500) == {"problem", "solution", "answer", "subject", "level", "unique_id"}
    gpqa = json.loads((FIXTURES / "gpqa_diamond.jsonl").read_text().splitlines()[0])
    assert {"Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3",
            "Record ID", "Explanation", "Subdomain"} <= set(gpqa)


def test_math_rows_get_lightevals_prompt_and_answer():
    rows, source = load_rows("aime24", str(FIXTURES))
    question, target = question_and_target("aime24", rows[0])
    assert question.startswith("Solve the following math problem efficiently and clearly.  The last line")
    assert "'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it is correct'" in question
    assert question.endswith("Think step by step before answering.\n\n"
                             "Find the remainder when $2^{10}$ is divided by $1000$.")
    assert target == "24"
    assert source["rows"] == 3 and source["revision"] is None and len(source["sha256"]) == 64
    rows, _ = load_rows("math500", str(FIXTURES))
    assert question_and_target("math500", rows[0])[1] == "\\frac{3}{4}"


def test_gpqa_choices_are_shuffled_per_row_and_the_letter_is_the_target():
    rows, _ = load_rows("gpqa_diamond", str(FIXTURES))
    letters = []
    for row in rows:
        choices, letter = shuffled_choices(row)
        assert sorted(choices) == sorted([row["Correct Answer"], row["Incorrect Answer 1"],
                                          row["Incorrect Answer 2"], row["Incorrect Answer 3"]])
        assert choices["ABCD".index(letter)] == row["Correct Answer"]
        assert shuffled_choices(dict(reversed(list(row.items())))) == (choices, letter)  # the row decides
        letters.append(letter)
        question, target = question_and_target("gpqa_diamond", row)
        assert target == letter and f"{letter}) {row['Correct Answer']}\n" in question + "\n"
    # Literal: a change of the shuffle (seed, key) would silently move every target.
    assert letters == ["D", "D", "B", "A"]


def test_a_row_in_the_wrong_schema_names_the_column(tmp_path):
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"Problem": "x", "Answer": "1"}) + "\n")  # lm-eval's AIME
    with pytest.raises(ValueError, match="aime24 row 0 .* lacks column\\(s\\) problem, answer"):
        load_rows("aime24", str(tmp_path))


def test_every_benchmark_has_its_shipped_task():
    for b in BENCHMARKS.values():
        text = b.yaml_path.read_text()
        assert f"task: {b.name}\n" in text and "take_first_k" in text and "do_sample: true" in text
    assert "{problem}" in MATH_PROMPT and "{question}" in CHOICE_PROMPT


# --- the boxed letter ----------------------------------------------------------------------------


@pytest.mark.parametrize("generation, letter, expected", [
    (r"Therefore, the final answer is: $\boxed{B}$. I hope it is correct", "B", True),
    (r"\boxed{A} wait, no: \boxed{(C)}", "C", True),
    (r"\boxed{\text{D}}", "D", True),
    (r"\boxed{B} then \boxed{C", "B", True),  # an unclosed last box: the previous closed one
    ("The answer is B", "B", False),  # no box: never read from plain text
    (r"\boxed{Photon}", "A", False),
])
def test_boxed_choice_letter(generation, letter, expected):
    assert scoring.correct_choice(generation, letter) is expected
    assert scoring.score(generation, letter, "choice") is expected


# --- through lm-eval with a tiny student ---------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tokenizer, tmp_path_factory):
    from study.models import build_model

    torch.manual_seed(0)
    model = build_model(STUDENT, tokenizer)
    tmp = tmp_path_factory.mktemp("bench")
    prepared = prepare_benchmarks(list(BENCHMARKS), str(FIXTURES), tokenizer, tmp / "data",
                                  STUDENT.max_position_embeddings, MAX_GEN)
    raw = tmp / "raw.json"
    quality = run_benchmarks(model, tokenizer, prepared, SAMPLES, 0.6, 0.95, MAX_GEN, batch_size=8,
                             seed=1, raw_path=raw)
    return quality, json.loads(raw.read_text()), prepared


def test_n_samples_are_n_different_samples(evaluated):
    quality, raw, _ = evaluated
    for name in BENCHMARKS:
        for doc in raw["samples"][name]:
            assert len(doc["generations"]) == SAMPLES
            assert len(set(doc["generations"])) == SAMPLES, (name, doc["generations"])
        assert quality[name]["distinct_samples"] == 1.0


def test_every_sample_is_scored_and_pass1_is_the_mean_of_problem_means(evaluated):
    quality, raw, _ = evaluated
    for name, b in BENCHMARKS.items():
        docs = raw["samples"][name]
        assert len(docs) == quality[name]["n_problems"] == len(load_rows(name, str(FIXTURES))[0])
        for doc in docs:  # the rule of the benchmark, on each of the n samples
            assert doc["correct"] == [scoring.score(g, doc["target"], b.schema) for g in doc["generations"]]
        means = [sum(d["correct"]) / SAMPLES for d in docs]
        q = quality[name]
        assert q["pass@1"] == pytest.approx(sum(means) / len(means))
        assert q["stderr"] == pytest.approx(statistics.stdev(means) / math.sqrt(len(means)), nan_ok=True)
        # lm-eval's aggregate of tasks/metrics.py's per-problem scores agrees
        assert q["pass@1_lm_eval"] == pytest.approx(q["pass@1"])


def test_pass1_counts_a_problem_by_its_share_of_correct_samples(tokenizer, tmp_path, monkeypatch):
    """A scorer that marks known samples correct: one problem 1 of 4 (the second sample, so a
    first-sample-only score would give 0), the other 4 of 4; pass@1 = (1/4 + 1) / 2."""
    from study.models import build_model

    torch.manual_seed(0)
    model = build_model(STUDENT, tokenizer)
    prepared = prepare_benchmarks(["aime25"], str(FIXTURES), tokenizer, tmp_path, 1024, 6)
    calls = []

    def fake(generation, gold, kind="math"):  # problem "9": 1 of 4 correct (the 2nd); "2025": all
        calls.append(gold)
        return gold == "2025" or (gold == "9" and calls.count("9") % 4 == 2)

    monkeypatch.setattr(scoring, "score", fake)
    q = run_benchmarks(model, tokenizer, prepared, 4, 1.0, 1.0, 6, batch_size=8, seed=0)["aime25"]
    assert q["pass@1"] == pytest.approx((0.25 + 1.0) / 2)
    assert q["stderr"] == pytest.approx(statistics.stdev([0.25, 1.0]) / math.sqrt(2))


def test_the_record_says_what_was_run(evaluated):
    quality, _, prepared = evaluated
    q = quality["aime24"]
    assert q["task"] == "aime24" and q["yaml"] == "study/tasks/aime24.yaml" and len(q["yaml_sha256"]) == 64
    assert q["dataset"]["sha256"] == benchmarks.file_sha256(FIXTURES / "aime24.jsonl")
    assert q["dataset"]["revision"] is None and q["dataset"]["rows"] == 3
    assert (q["samples"], q["temperature"], q["top_p"], q["max_gen_toks"], q["backend"]) == (SAMPLES, 0.6, 0.95,
                                                                                             MAX_GEN, "hf")
    assert q["do_sample"] is True and q["scorer"] == scoring.scorer_name()
    assert quality["gpqa_diamond"]["scorer"].startswith("boxed choice letter")
    for name in BENCHMARKS:
        d = quality[name]
        assert 0 <= d["closed_think"] <= 1 and 0 <= d["hit_token_limit"] <= 1
        assert 0 < d["mean_generated_tokens"] <= MAX_GEN
    # the prompt lm-eval saw is the row's prompt through the student's chat template
    doc = json.loads(prepared["aime24"][0].read_text().splitlines()[0])
    assert doc["prompt"].startswith("<|user|>Solve the following") and doc["prompt"].endswith("<|assistant|>")


def test_a_prompt_that_leaves_no_room_to_generate_fails_before_any_work(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="aime24 problem 60: its prompt .* exceed the student's context of 300"):
        prepare_benchmarks(["aime24"], str(FIXTURES), tokenizer, tmp_path, 300, 200)


def test_missing_benchmark_file_and_missing_vllm_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks .*math500.jsonl"):
        benchmarks.check_files(["math500"], str(tmp_path))
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ValueError, match="eval_backend=vllm but the vllm package is not installed"):
            benchmarks.check_backend("vllm")
    benchmarks.check_backend("hf")


def test_config_validation():
    for data, message in [
        ({"benchmarks": ["aime23"]}, "unknown benchmark 'aime23'; valid: aime24, aime25, math500, gpqa_diamond"),
        ({"benchmarks": "aime24"}, "benchmarks must be a list"),
        ({"benchmarks": ["aime24", "aime24"]}, "twice"),
        ({"samples": 0}, "samples must be an integer >= 1"),
        ({"eval_top_p": 0}, "eval_top_p must be in (0, 1]"),
        ({"eval_temperature": -0.1}, "eval_temperature must be a number >= 0"),
        ({"eval_backend": "tgi"}, "eval_backend must be one of hf, vllm"),
        ({"benchmark_dir": "x"}, "benchmarks is empty"),
        ({"benchmarks": ["aime24"], "samples": 64, "eval_temperature": 0}, "greedy decoding"),
        ({"samples": 4}, "greedy decoding"),  # the synthetic split is decoded by the same keys
    ]:
        with pytest.raises(ValueError) as e:
            config_from_dict(data)
        assert message in str(e.value)
    cfg = config_from_dict({"benchmarks": ["aime24", "gpqa_diamond"]})
    assert cfg.benchmarks == ("aime24", "gpqa_diamond") and cfg == config_from_dict({"benchmarks": ("aime24", "gpqa_diamond")})


def test_greedy_repeats_are_one_generation_and_the_record_shows_it(tokenizer, tmp_path):
    """The negative control of the distinct-samples check: without sampling lm-eval's n repeats
    are one generation n times (config validation refuses it; run_benchmarks reports it)."""
    from study.models import build_model

    torch.manual_seed(0)
    model = build_model(STUDENT, tokenizer)
    prepared = prepare_benchmarks(["aime25"], str(FIXTURES), tokenizer, tmp_path, 1024, 6)
    q = run_benchmarks(model, tokenizer, prepared, 3, 0.0, 1.0, 6, batch_size=8, seed=0)["aime25"]
    assert q["do_sample"] is False and q["distinct_samples"] == pytest.approx(1 / 3)


# --- in a run --------------------------------------------------------------------------------------


def test_a_run_with_benchmarks_records_them_and_keeps_the_synthetic_headline(tiny_cache, tmp_path):
    from tiny import tiny_config

    from study.identity import run_id
    from study.run import run

    # A scratch student takes only the base's architecture: a longer context without a new base.
    cfg = tiny_config(tiny_cache, init="scratch", base={"model": {**vars(STUDENT), "max_position_embeddings": 512}},
                      benchmarks=["aime24", "gpqa_diamond"], benchmark_dir=str(FIXTURES), samples=2,
                      eval_temperature=0.6, save_student=False)
    rec = run(cfg, tmp_path, progress=False)
    assert set(rec["quality"]) == {"study_synthetic"}  # the headline stays the synthetic split's
    assert list(rec["benchmarks"]) == ["aime24", "gpqa_diamond"]
    for name, q in rec["benchmarks"].items():
        assert q["task"] == name and q["samples"] == 2 and q["n_problems"] == len(load_rows(name, str(FIXTURES))[0])
        assert q["dataset"]["sha256"] == benchmarks.file_sha256(FIXTURES / f"{name}.jsonl")
        assert {"pass@1", "stderr", "yaml_sha256", "temperature", "top_p", "max_gen_toks", "mean_generated_tokens",
                "closed_think", "hit_token_limit", "distinct_samples"} <= set(q)
    assert rec["compute"]["benchmark_seconds"] > 0
    raw = json.loads((tmp_path / f"{rec['run_id']}.benchmarks.lm_eval.json").read_text())
    assert all(len(d["generations"]) == 2 for d in raw["samples"]["aime24"])
    # the id follows the benchmark files' content, not the folder that holds them
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for name in cfg.benchmarks:
        (moved / f"{name}.jsonl").write_bytes((FIXTURES / f"{name}.jsonl").read_bytes())
    weights = {"teacher": rec["teacher"]["weights_sha256"], "base": None}
    same = config_from_dict({**rec["config"], "benchmark_dir": str(moved)})
    assert run_id(same, weights) == rec["run_id"]
    (moved / "aime24.jsonl").write_text((FIXTURES / "aime24.jsonl").read_text().replace('"24"', '"25"'))
    assert run_id(same, weights) != rec["run_id"]


def test_a_missing_benchmark_file_fails_before_any_model(tmp_path):
    from tiny import tiny_config

    from study.run import run

    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="lacks .*aime25.jsonl"):
        run(tiny_config(cache, benchmarks=["aime25"], benchmark_dir=str(tmp_path)), tmp_path / "out", progress=False)
    assert not cache.exists()


def test_analysis_sees_records_without_or_with_empty_benchmarks_as_the_reference():
    from study.analysis import flat_config, variant_of
    from study.config import RunConfig

    ref = flat_config(RunConfig())
    row = {f"config.{k}": v for k, v in ref.items()}
    older = {**row, "config.benchmarks": math.nan, "config.samples": math.nan}  # written before the keys
    assert variant_of({**row, "config.benchmarks": []}, ref) == {} and variant_of(older, ref) == {}
    assert variant_of({**row, "config.benchmarks": ["aime24"]}, ref) == {"benchmarks": ["aime24"]}
