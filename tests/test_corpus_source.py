"""corpus.source: the run's data from the synthetic generator or a hub corpus (study/data/corpus.py),
read from the local fixtures (tests/fixtures/hub/README.md) with the tiny Qwen3-style tokenizer of
tests/test_hub_corpora.py; nothing is downloaded. The run's data preparation is tested on
its own (``run.training_data``) and ``study corpus-stats`` through the CLI; a whole hub run, with
tiny local checkpoints, is in tests/test_hub_models.py."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import yaml

from study.cli import main
from study.config import RunConfig, config_from_dict
from study.data.corpus import answer_stats, final_answer, last_boxed, load_corpus
from study.data.synthetic import CorpusConfig, make_splits
from study.run import run, training_data
from test_hub_corpora import FIXTURES, no_download, qwen3_like_tokenizer  # noqa: F401 (autouse fixture)

PRETRAINED = {"teacher": {"model": {"pretrained": "Qwen/Qwen3-8B"}},
              "base": {"model": {"pretrained": "Qwen/Qwen3-1.7B-Base"}}}


@pytest.fixture(scope="module")
def tok():
    return qwen3_like_tokenizer()


def hub_cfg(source="bespoke_stratos", train=7, val=1, **top) -> RunConfig:
    corpus = {"source": source, "path": str(FIXTURES / source), "train_examples": train, "val_examples": val}
    return config_from_dict({"corpus": corpus, "benchmarks": ["aime24"], "batch_size": 1, **PRETRAINED, **top})


# --- config --------------------------------------------------------------------------------------


def test_default_is_synthetic_and_trains_on_the_same_examples(tok):
    assert RunConfig().corpus.source == "synthetic"
    small = CorpusConfig(train_examples=20, val_examples=5, test_examples=5)
    corpus = load_corpus(small, tok)
    assert corpus.train == make_splits(small)["train"] and corpus.val == make_splits(small)["val"]
    assert (corpus.rejected, corpus.info) == ({}, {})


@pytest.mark.parametrize("data, message", [
    ({"corpus": {"source": "gsm8k"}}, "corpus.source must be one of synthetic, openthoughts, bespoke_stratos"),
    ({"corpus": {"path": "/data/x"}}, "corpus.path only applies to the hub sources, not to source 'synthetic'"),
    ({"corpus": {"max_tokens": 2048}}, "corpus.max_tokens only applies to the hub sources"),
    ({"corpus": {"split_seed": 1}}, "corpus.split_seed only applies to the hub sources"),
    ({"corpus": {"source": "sky_t1", "layout": "late", "train_examples": 8}, "benchmarks": ["aime24"], **PRETRAINED},
     "corpus.layout only applies to source synthetic, not to source 'sky_t1'"),
    ({"corpus": {"source": "sky_t1", "test_examples": 10, "train_examples": 8}, "benchmarks": ["aime24"], **PRETRAINED},
     "corpus.test_examples only applies to source synthetic"),
    ({"corpus": {"source": "sky_t1", "min_score": 0.5, "train_examples": 8}, "benchmarks": ["aime24"], **PRETRAINED},
     "corpus.min_score only applies to source synthetic1"),
    ({"corpus": {"source": "sky_t1", "max_tokens": 1, "train_examples": 8}, "benchmarks": ["aime24"], **PRETRAINED},
     "corpus.max_tokens must be an integer >= 2"),
    ({"corpus": {"source": "sky_t1", "train_examples": 8}, "benchmarks": ["aime24"]},
     "needs a pretrained teacher and student .* set teacher.model.pretrained and base.model.pretrained"),
    ({"corpus": {"source": "sky_t1", "train_examples": 8}, **PRETRAINED},
     r"no synthetic test split to score: name the paper's benchmarks, e.g. --set benchmarks=\[aime24\]"),
])
def test_config_validation(data, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(data)


def test_hub_config_takes_the_hub_fields():
    cfg = config_from_dict({"corpus": {"source": "synthetic1", "min_score": 1, "revision": "abc", "max_tokens": 1024,
                                       "train_examples": 40, "val_examples": 10, "split_seed": 7, "max_rows": 100},
                            "benchmarks": ["aime24"], **PRETRAINED})
    hc = cfg.corpus.hub_config()
    assert (hc.source, hc.location, hc.revision, hc.max_tokens, hc.train_examples, hc.val_examples, hc.split_seed,
            hc.min_score, hc.max_rows) == ("synthetic1", "PrimeIntellect/SYNTHETIC-1", "abc", 1024, 40, 10, 7, 1.0, 100)
    assert set(cfg.corpus.identity()) == {"source", "path", "revision", "max_tokens", "train_examples",
                                          "val_examples", "split_seed", "min_score", "max_rows"}


# --- the run's data ------------------------------------------------------------------------------


@pytest.mark.parametrize("source, train, rejected", [
    ("bespoke_stratos", 7, {"no_cot": 1}),
    ("openthoughts", 2, {"unknown_role": 1, "no_assistant": 1, "no_cot": 1}),
    ("sky_t1", 2, {}),
    ("synthetic1", 2, {"wrong_task_type": 1, "no_cot": 1}),
    ("nemotron", 1, {"no_cot": 2}),
])
def test_training_data_from_every_hub_source(tok, caplog, source, train, rejected):
    cfg = hub_cfg(source, train=train)
    with caplog.at_level(logging.WARNING, logger="study.data.corpus"):
        corpus, encoded, items, empty = training_data(cfg, tok)
    assert corpus.rejected == rejected  # the record's data.rejected
    for reason, n in rejected.items():
        assert f"{reason} {n}" in caplog.text
    if not rejected:
        assert not caplog.text
    assert [e.id for e in encoded] == [ex.id for ex in corpus.train] and len(items) == train and empty == []
    assert corpus.info["location"] == str(FIXTURES / source) and corpus.info["revision"] is None
    item = items[0]
    assert item.ids == tok.encode(corpus.train[0].text, add_special_tokens=False)
    assert sum(item.supervised.values()) == len(item.ids) - 1  # P+CoT+A: every target but position 0


def test_split_is_the_authors_permutation(tok):
    corpus, *_ = training_data(hub_cfg(train=7, val=1), tok)
    perm = np.random.default_rng(42).permutation(8)  # over the 8 kept rows 0, 1, 2, 4, ..., 8
    kept = [0, 1, 2, 4, 5, 6, 7, 8]
    assert [ex.index for ex in corpus.val] == [kept[perm[0]]]
    assert [ex.index for ex in corpus.train] == [kept[i] for i in perm[1:]]


def test_truncation_applies_to_hub_examples(tok):
    *_, full, _ = training_data(hub_cfg(), tok)
    *_, half, _ = training_data(hub_cfg(lsp=0.5, condition="CoT"), tok)
    assert [len(it.ids) for it in half] == [max(1, int(len(it.ids) * 0.5)) for it in full]
    assert all(it.supervised["P"] == it.supervised["A"] == 0 for it in half)


def test_nothing_left_fails_clearly(tok, tmp_path):
    row = {"input": [{"role": "user", "content": "What is $2+2$?"}], "output": "The answer is $\\boxed{4}$.",
           "reasoning": "off"}
    (tmp_path / "math.jsonl").write_text(json.dumps(row) + "\n")
    cfg = config_from_dict({"corpus": {"source": "nemotron", "path": str(tmp_path / "math.jsonl"),
                                       "train_examples": 1, "val_examples": 0},
                            "benchmarks": ["aime24"], "batch_size": 1, **PRETRAINED})
    with pytest.raises(ValueError, match="none of its 1 rows is usable; rejected by reason: no_cot 1"):
        training_data(cfg, tok)


def test_a_hub_run_with_unloadable_models_fails_before_any_work(tmp_path):
    """Pretrained folders that do not exist (and are no hub id): the run fails at the first
    tokenizer it loads, before any corpus, model or record (tests/test_hub_models.py runs
    a hub corpus to a record with local checkpoints)."""
    cfg = hub_cfg(cache_dir=str(tmp_path / "cache"),
                  teacher={"model": {"pretrained": str(tmp_path / "no_teacher")}},
                  base={"model": {"pretrained": str(tmp_path / "no_base")}})
    with pytest.raises(ValueError, match=r"base.model.pretrained '.*no_base': cannot load its tokenizer"):
        run(cfg, tmp_path / "out")
    assert not (tmp_path / "cache").exists()


# --- corpus statistics ---------------------------------------------------------------------------


def test_last_boxed_is_brace_balanced():
    assert last_boxed(r"so \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{3} and \boxed{4") == "3" and last_boxed("none") is None


def test_answer_stats_positions_and_missing_answers(tok):
    corpus, *_ = training_data(hub_cfg("synthetic1", train=2, val=1), tok)
    table = answer_stats(corpus.train + corpus.val, tok)
    exs = {ex.id: ex for ex in corpus.train + corpus.val}
    assert final_answer(exs["synthetic1-0"]) == "2"  # the gold answer, not the box
    # "Subtract 1: x = 2." states 2 (not inside another number) in the CoT; "One times one is
    # one." never writes the gold "1": counted, with no position, not dropped.
    assert table.loc["synthetic1-4", "answer"] == "not_in_cot"
    assert np.isnan(table.loc["synthetic1-4", "first_answer_in_cot"])
    row = table.loc["synthetic1-0"]
    assert row["answer"] == "in_cot" and 0 < row["first_answer_in_cot"] <= 1
    assert row["tokens"] == row["tokens_P"] + row["tokens_CoT"] + row["tokens_A"]
    ex = exs["synthetic1-0"]
    ids = tok(ex.text, add_special_tokens=False, return_offsets_mapping=True)
    end = ex.text.index("x = 2") + len("x = 2")
    last = next(i for i, (_, e) in enumerate(ids["offset_mapping"]) if e >= end)
    assert row["first_answer_in_cot"] == (last + 1 - row["tokens_P"]) / row["tokens_CoT"]


def test_corpus_stats_cli_on_a_fixture_folder(tok, tmp_path, capsys):
    tok.save_pretrained(tmp_path / "student")
    config = {"corpus": {"source": "openthoughts", "path": str(FIXTURES / "openthoughts"), "train_examples": 2,
                         "val_examples": 1},
              "benchmarks": ["aime24"], "batch_size": 1,
              "teacher": {"model": {"pretrained": str(tmp_path / "student")}},
              "base": {"model": {"pretrained": str(tmp_path / "student")}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["corpus-stats", "--config", str(tmp_path / "run.yaml")]) == 0
    out = capsys.readouterr().out
    assert "2 training examples of corpus openthoughts" in out
    assert "rows: 6 read, 3 kept, 3 rejected (unknown_role 1, no_assistant 1, no_cot 1); split: 2 train, 1 validation" in out
    assert "in_cot" in out and "not_in_cot" in out and "no_answer 0" in out
    header = next(line for line in out.splitlines() if "median" in line).split()
    assert header == ["mean", "std", "min", "q1", "median", "q3", "max"]
    for column in ("tokens_P", "tokens_CoT", "tokens_A", "first_answer_in_cot"):
        assert any(line.startswith(column) for line in out.splitlines())


def test_first_answer_figure_accepts_a_hub_corpus(tok):
    from study import figures

    cfg = hub_cfg("synthetic1", train=2, val=1)
    stats = figures.corpus_position_stats(cfg, tok)
    assert list(stats) == ["synthetic1"]
    fig = figures.first_answer_positions(stats)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("synthetic1: 2 examples" in t for t in labels)
