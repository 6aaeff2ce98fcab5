"""Tests for study.data.hub: the paper's five corpora read from local fixtures laid out as on
the hub (tests/fixtures/hub/README.md lists every row), rendered with a tiny Qwen3-style
tokenizer, filtered and split. Nothing is downloaded: snapshot_download is replaced by a
function that fails, except where a test replaces it by a fake hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from study.data import hub
from study.data.hub import HubCorpusConfig, encode, load_hub_corpus, split_indices
from study.sections import Section

FIXTURES = Path(__file__).parent / "fixtures" / "hub"
GEN = "<|im_start|>assistant\n"  # the generation prompt of the Qwen3 template

# A mimic of the Qwen3 hybrid template for [system?, user, assistant] conversations: the
# assistant's reasoning is split off at </think> and re-wrapped in a think block, which is
# empty when the response has no </think>; add_generation_prompt appends GEN (and an empty
# think block when enable_thinking is false).
QWEN3_LIKE_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' or m['role'] == 'user' -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{%- set content = m['content'] -%}"
    "{%- set reasoning = '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

TRAIN_TEXT = [
    "What is the answer? We add two and three, which gives five. The answer is $\\boxed{5}$.",
    "Let me think about this step by step. Nine minus four is five. Six divided by three is two.",
]


def qwen3_like_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (as study/data/tokenizer.py builds its own) with Qwen3's special tokens,
    <think>/</think> as non-special added tokens and the template above."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=QWEN3_LIKE_TEMPLATE)


@pytest.fixture(scope="module")
def tok():
    return qwen3_like_tokenizer()


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Local paths must never reach the hub."""
    def fail(*args, **kwargs):
        raise AssertionError(f"snapshot_download called for a local corpus: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)


def load(tok, source, train, val, **kw):
    cfg = HubCorpusConfig(source=source, path=str(FIXTURES / source), train_examples=train, val_examples=val, **kw)
    return load_hub_corpus(cfg, tok)


def everything(corpus):
    return {ex.id: ex for ex in corpus.val + corpus.train}


def counts(corpus):
    return {r: n for r, n in corpus.rejected.items() if n}


# --- rendering ------------------------------------------------------------------------------------


def test_openthoughts_renders_literally_and_rejects_by_reason(tok):
    corpus = load(tok, "openthoughts", train=2, val=1)
    assert corpus.files == ("data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet")
    assert (corpus.rows, corpus.kept) == (6, 3)
    assert counts(corpus) == {"unknown_role": 1, "no_assistant": 1, "no_cot": 1}
    assert corpus.rejected_ids == {"unknown_role": ["openthoughts-2"], "no_assistant": ["openthoughts-4"],
                                   "no_cot": ["openthoughts-5"]}
    assert set(corpus.rejected) == set(hub.REASONS)
    exs = everything(corpus)
    assert sorted(exs) == ["openthoughts-0", "openthoughts-1", "openthoughts-3"]
    ex = exs["openthoughts-0"]
    assert ex.prompt == "<|im_start|>user\nWhat is $2+3$?<|im_end|>\n<|im_start|>assistant\n"
    assert ex.completion == "<think>\nAdd 2 and 3 to get 5.\n</think>\n\nThe answer is $\\boxed{5}$.<|im_end|>\n"
    assert ex.cot == "<think>\nAdd 2 and 3 to get 5.\n</think>"
    assert ex.answer_text == "\n\nThe answer is $\\boxed{5}$.<|im_end|>\n"
    assert (ex.user, ex.gold, ex.index) == ("What is $2+3$?", None, 0)
    # the system turn (and the system column) is dropped; JSON-string conversations parse
    assert exs["openthoughts-1"].text == ("<|im_start|>user\nWhat is $4 \\times 2$?<|im_end|>\n<|im_start|>assistant\n"
                                          "<think>\nFour times two is eight.\n</think>\n\n$\\boxed{8}$<|im_end|>\n")
    assert exs["openthoughts-3"].completion == "<think>\nNine minus four is five.\n</think>\n\n$\\boxed{5}$<|im_end|>\n"


def test_generation_prompt_tail_is_cut(tok):
    """The authors' text (add_generation_prompt=True on the finished conversation) is ours plus
    the appended generation prompt, which we do not train on."""
    ex = everything(load(tok, "openthoughts", train=2, val=1))["openthoughts-0"]
    authors = tok.apply_chat_template(
        [{"role": "user", "content": ex.user},
         {"role": "assistant", "content": "<think>\nAdd 2 and 3 to get 5.\n</think>\n\nThe answer is $\\boxed{5}$."}],
        tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert authors == ex.text + GEN
    assert not ex.text.endswith(GEN)


def test_sky_t1_rows_without_blank_lines_before_closing_tags(tok):
    exs = everything(load(tok, "sky_t1", train=2, val=1))
    assert exs["sky_t1-0"].completion == "<think>\nSix divided by three is two.\n</think>\n\n$\\boxed{2}$<|im_end|>\n"
    assert exs["sky_t1-1"].completion == ("<think>\nFive times five is twenty-five.\n</think>\n\n"
                                          "The answer is $\\boxed{25}$.<|im_end|>\n")
    assert exs["sky_t1-2"].completion == "<think>\nEight minus eight is zero.\n</think>\n\n$\\boxed{0}$<|im_end|>\n"
    for ex in exs.values():
        assert "<|" not in ex.completion.replace("<|im_end|>", "")  # no literal solution/thought tag left


@pytest.mark.parametrize("value, expected", [
    ("<|begin_of_thought|>\n\nR\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\nS\n\n<|end_of_solution|>",
     "<think>\nR\n</think>\n\nS"),
    ("<|begin_of_thought|>R<|end_of_thought|><|begin_of_solution|>S<|end_of_solution|>", "<think>\nR\n</think>\n\nS"),
    ("<|begin_of_thought|>\nR\n<|end_of_thought|>\n<|begin_of_solution|>\nS\n<|end_of_solution|>\n",
     "<think>\nR\n</think>\n\nS"),
])
def test_convert_thought_tags_is_tolerant(value, expected):
    assert hub.convert_thought_tags(value) == expected


def test_synthetic1_math_only_gold_and_missing_think(tok):
    corpus = load(tok, "synthetic1", train=2, val=1)
    assert counts(corpus) == {"wrong_task_type": 1, "no_cot": 1}
    assert corpus.rejected_ids == {"wrong_task_type": ["synthetic1-2"], "no_cot": ["synthetic1-3"]}
    exs = everything(corpus)
    assert sorted(exs) == ["synthetic1-0", "synthetic1-1", "synthetic1-4"]
    # a response starting without <think> gets the same think block
    assert exs["synthetic1-1"].text == ("<|im_start|>user\nCompute $6/2$.<|im_end|>\n<|im_start|>assistant\n"
                                        "<think>\nWe need 6/2. That is 3.\n</think>\n\n$\\boxed{3}$<|im_end|>\n")
    # gold: verification_info's ground_truth, else gold_standard_solution
    assert {k: ex.gold for k, ex in exs.items()} == {"synthetic1-0": "2", "synthetic1-1": "3", "synthetic1-4": "1"}


def test_synthetic1_min_score(tok):
    corpus = load(tok, "synthetic1", train=1, val=0, min_score=0.5)
    # rows 1 and 3 score 0.0, row 4 has no score: the first reason that applies counts
    assert counts(corpus) == {"wrong_task_type": 1, "low_score": 3}
    assert [ex.id for ex in corpus.train] == ["synthetic1-0"]


def test_nemotron_math_split_only(tok):
    corpus = load(tok, "nemotron", train=1, val=1)
    assert corpus.files == ("SFT/math/math_v1.1.jsonl",)  # SFT/code is never read
    assert (corpus.rows, corpus.kept) == (4, 2)
    assert counts(corpus) == {"no_cot": 2}  # reasoning off; an empty think block
    assert corpus.rejected_ids == {"no_cot": ["nemotron-1", "nemotron-3"]}
    exs = everything(corpus)
    assert exs["nemotron-0"].text == ("<|im_start|>user\nWhat is $3^2$?<|im_end|>\n<|im_start|>assistant\n<think>\n"
                                      "Three squared is nine.\n</think>\n\nThe answer is $\\boxed{9}$.<|im_end|>\n")
    assert exs["nemotron-2"].prompt == "<|im_start|>user\nWhat is $10/2$?<|im_end|>\n<|im_start|>assistant\n"


def test_response_without_end_think_is_no_cot_though_the_template_adds_a_think_block(tok):
    """The pitfall of SCALE.md: the template gives such a response an empty think block, so the
    rendered text has both tags; the check must be on the response."""
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Integrate $x$."},
         {"role": "assistant", "content": "<think>\nThe integral of x is x^2/2, and then"}],
        tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert "<think>\n\n</think>\n\n" in rendered
    corpus = load(tok, "openthoughts", train=2, val=1)
    assert "openthoughts-5" in corpus.rejected_ids["no_cot"]


def test_extra_think_tags_and_unknown_roles(tok, tmp_path):
    rows = [
        {"input": [{"role": "user", "content": "Explain the tag </think> to me."}],
         "output": "<think>\nIt closes.\n</think>\n\nIt closes a thought.", "reasoning": "on"},
        {"input": [{"role": "user", "content": "Q"}],
         "output": "<think>\nA\n</think>\n\n<think>\nB\n</think>\n\nC", "reasoning": "on"},
        {"input": [{"role": "narrator", "content": "Q"}], "output": "<think>\nA\n</think>\n\nB", "reasoning": "on"},
        {"input": [], "output": "<think>\nA\n</think>\n\nB", "reasoning": "on"},
        {"input": [{"role": "user", "content": "What is $1+1$?"}], "output": "<think>\nTwo.\n</think>\n\n2",
         "reasoning": "on"},
    ]
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = load_hub_corpus(HubCorpusConfig(source="nemotron", path=str(path), train_examples=1, val_examples=0), tok)
    assert counts(corpus) == {"extra_think_tags": 2, "unknown_role": 1, "no_user": 1}
    assert [ex.id for ex in corpus.train] == ["nemotron-4"]


# --- encoding ---------------------------------------------------------------------------------------


def test_encode_labels_sections(tok):
    corpus = load(tok, "openthoughts", train=2, val=1)
    examples = corpus.val + corpus.train
    for ex, enc in zip(examples, encode(examples, tok)):
        assert enc.id == ex.id and len(enc.ids) == ex.n_tokens
        text = {s: tok.decode([i for i, sec in zip(enc.ids, enc.sections) if sec == s]) for s in Section}
        assert text[Section.PROMPT] == ex.prompt
        assert text[Section.COT] == ex.cot
        assert text[Section.ANSWER] == ex.answer_text
        assert text[Section.COT].startswith("<think>") and text[Section.COT].endswith("</think>")


# --- length filter ----------------------------------------------------------------------------------


def test_length_filter_drops_examples_of_at_least_max_tokens(tok):
    lengths = {ex.id: ex.n_tokens for ex in everything(load(tok, "sky_t1", train=2, val=1)).values()}
    assert len(set(lengths.values())) == 3  # distinct lengths, so the boundary is one row
    longest = max(lengths, key=lengths.get)
    n = lengths[longest]
    assert n == len(tok.encode(everything(load(tok, "sky_t1", train=2, val=1))[longest].text, add_special_tokens=False))
    at = load(tok, "sky_t1", train=1, val=1, max_tokens=n)
    assert counts(at) == {"too_long": 1} and at.rejected_ids == {"too_long": [longest]}
    assert longest not in everything(at)
    above = load(tok, "sky_t1", train=2, val=1, max_tokens=n + 1)
    assert counts(above) == {} and longest in everything(above)


def test_nothing_left_raises_naming_the_reasons(tok, tmp_path):
    path = tmp_path / "SFT" / "math" / "only_off.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"input": [{"role": "user", "content": "Q"}], "output": "4", "reasoning": "off"}) + "\n")
    with pytest.raises(ValueError, match=r"none of its 1 rows is usable; rejected by reason: no_cot 1"):
        load_hub_corpus(HubCorpusConfig(source="nemotron", path=str(tmp_path), train_examples=1, val_examples=0), tok)
    with pytest.raises(ValueError, match=r"too_long 2"):
        load(tok, "nemotron", train=1, val=0, max_tokens=2)


def test_too_few_rows_for_the_split_raises(tok):
    with pytest.raises(ValueError, match=r"3 of 6 rows kept \(rejected: unknown_role 1, no_assistant 1, no_cot 1\), "
                                         r"fewer than val_examples \+ train_examples = 4"):
        load(tok, "openthoughts", train=3, val=1)


# --- split ------------------------------------------------------------------------------------------


def test_split_indices_literal():
    assert np.random.default_rng(42).permutation(8).tolist() == [3, 4, 2, 7, 6, 1, 5, 0]
    assert split_indices(8, 2, 3, 42) == ([3, 4], [2, 7, 6])
    assert split_indices(10, 3, 7, 42) == ([5, 6, 0], [7, 3, 2, 4, 9, 1, 8])
    assert split_indices(10, 0, 2, 42) == ([], [5, 6])


def test_split_is_over_kept_rows(tok):
    """Bespoke-Stratos fixture: 9 rows, row 3 rejected; the permutation runs over the 8 kept
    rows (positions 3, 4 -> rows 4, 5), not over all 9 (whose first pick would be row 3)."""
    corpus = load(tok, "bespoke_stratos", train=3, val=2)
    assert counts(corpus) == {"no_cot": 1} and corpus.kept == 8
    assert [ex.index for ex in corpus.val] == [4, 5]
    assert [ex.id for ex in corpus.train] == ["bespoke_stratos-2", "bespoke_stratos-8", "bespoke_stratos-7"]
    # another seed, another split
    other = load(tok, "bespoke_stratos", train=3, val=2, split_seed=0)
    assert [ex.index for ex in other.val + other.train] != [4, 5, 2, 8, 7]


def test_split_matches_datasets_train_test_split():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"i": list(range(8))}).train_test_split(test_size=2, seed=42)
    val, train = split_indices(8, 2, 3, 42)
    assert ds["test"]["i"] == val and ds["train"]["i"][:3] == train


# --- files and the hub --------------------------------------------------------------------------------


def test_single_local_file(tok):
    path = FIXTURES / "openthoughts" / "data" / "train-00001-of-00002.parquet"
    corpus = load_hub_corpus(HubCorpusConfig(source="openthoughts", path=str(path), train_examples=1,
                                             val_examples=0), tok)
    assert corpus.files == ("train-00001-of-00002.parquet",) and corpus.revision is None
    assert [ex.id for ex in corpus.train] == ["openthoughts-0"]  # row indices count within what is read
    assert corpus.train[0].user == "What is $9-4$?"


def test_hub_id_downloads_only_the_split(tok, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "snapshots" / commit
    shutil.copytree(FIXTURES / "nemotron", snapshot)
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    corpus = load_hub_corpus(HubCorpusConfig(source="nemotron", revision="v1.1", train_examples=1, val_examples=1), tok)
    assert calls == [{"repo_id": "nvidia/Llama-Nemotron-Post-Training-Dataset", "repo_type": "dataset",
                      "revision": "v1.1", "allow_patterns": ["SFT/math/*.jsonl"]}]
    assert corpus.location == "nvidia/Llama-Nemotron-Post-Training-Dataset" and corpus.revision == commit
    assert corpus.files == ("SFT/math/math_v1.1.jsonl",) and corpus.kept == 2


@pytest.mark.parametrize("source, patterns", [
    ("openthoughts", ["data/train-*.parquet"]), ("bespoke_stratos", ["data/train-*.parquet"]),
    ("sky_t1", ["Sky-T1_data_17k.json"]), ("synthetic1", ["data/train-*.parquet"]),
])
def test_hub_patterns(tok, tmp_path, monkeypatch, source, patterns):
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return str(FIXTURES / source)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    load_hub_corpus(HubCorpusConfig(source=source, train_examples=1, val_examples=0), tok)
    assert calls == [{"repo_id": hub.DEFAULT_PATHS[source], "repo_type": "dataset", "revision": None,
                      "allow_patterns": patterns}]


def test_missing_columns_and_layout_errors(tok, tmp_path):
    # the metadata config has other columns: read as a file of the default config, it is refused
    bad = FIXTURES / "openthoughts" / "metadata" / "train-00000-of-00001.parquet"
    with pytest.raises(ValueError, match=r"need the columns system, conversations; missing system, conversations"):
        load_hub_corpus(HubCorpusConfig(source="openthoughts", path=str(bad), train_examples=1, val_examples=0), tok)
    with pytest.raises(ValueError, match=r"no sky_t1 data files under .* matching Sky-T1_data_17k.json"):
        load_hub_corpus(HubCorpusConfig(source="sky_t1", path=str(tmp_path), train_examples=1, val_examples=0), tok)
    with pytest.raises(ValueError, match=r"must end in \.jsonl"):
        load_hub_corpus(HubCorpusConfig(source="nemotron", path=str(bad), train_examples=1, val_examples=0), tok)
    with pytest.raises(ValueError, match=r"neither an existing local folder or file nor a hub id"):
        load_hub_corpus(HubCorpusConfig(source="sky_t1", path=str(tmp_path / "nope"), train_examples=1,
                                        val_examples=0), tok)


# --- config -------------------------------------------------------------------------------------------


def test_config_defaults():
    cfg = HubCorpusConfig()
    assert (cfg.source, cfg.max_tokens, cfg.train_examples, cfg.val_examples, cfg.split_seed, cfg.min_score) == \
        ("bespoke_stratos", 4096, 8000, 1000, 42, None)
    assert cfg.location == "bespokelabs/Bespoke-Stratos-17k"
    assert HubCorpusConfig(source="synthetic1", min_score=1).min_score == 1.0
    assert hub.PAPER_SPLITS["openthoughts"] == (40_000, 1_000)


@pytest.mark.parametrize("kwargs, message", [
    ({"source": "gsm8k"}, r"source must be one of openthoughts, bespoke_stratos, sky_t1, synthetic1, nemotron"),
    ({"max_tokens": 1}, r"max_tokens must be an integer >= 2"),
    ({"max_tokens": 4096.0}, r"max_tokens must be an integer, got 4096.0"),
    ({"train_examples": 0}, r"train_examples must be an integer >= 1"),
    ({"val_examples": -1}, r"val_examples must be an integer >= 0"),
    ({"split_seed": True}, r"split_seed must be an integer, got True"),
    ({"path": None}, r"path must be a string"),
    ({"min_score": 0.5}, r"min_score only applies to source synthetic1"),
    ({"source": "synthetic1", "min_score": float("nan")}, r"min_score must be a finite number or null"),
    ({"source": "synthetic1", "min_score": "high"}, r"min_score must be a finite number or null"),
    ({"max_rows": 10}, r"max_rows 10 is below train_examples \+ val_examples 9000"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HubCorpusConfig(**kwargs)


def test_max_rows_reads_a_prefix(tok):
    corpus = load(tok, "bespoke_stratos", train=2, val=1, max_rows=4)
    assert corpus.rows == 4 and corpus.kept == 3 and counts(corpus) == {"no_cot": 1}


def test_summary_names_reasons_and_ids(tok):
    s = load(tok, "openthoughts", train=2, val=1).summary()
    assert s == ("openthoughts: 6 rows read, 3 kept, 3 rejected: unknown_role 1 (e.g. openthoughts-2); "
                 "no_assistant 1 (e.g. openthoughts-4); no_cot 1 (e.g. openthoughts-5)")
