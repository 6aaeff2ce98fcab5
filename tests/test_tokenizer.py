"""Tests for study.data.tokenizer and the tokenizer cache in study.models."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import study.models
from study.config import TokenizerConfig, config_hash
from study.data.synthetic import CorpusConfig, make_splits
from study.data.tokenizer import render_prompt, render_sequence, think_ids
from study.models import get_tokenizer, tokenizer_key

EXPR = "((3+4)*2)-5"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # One shared cache folder per session: every test module reuses the trained tokenizer.
    path = tmp_path_factory.getbasetemp() / "shared-tokenizer-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def tok_and_key(cache):
    return get_tokenizer(TokenizerConfig(), cache)


@pytest.fixture(scope="module")
def tokenizer(tok_and_key):
    return tok_and_key[0]


@pytest.fixture(scope="module")
def examples():
    out = []
    for layout in ("early", "late"):
        cfg = CorpusConfig(min_ops=1, max_ops=4, min_verify=0, max_verify=3, layout=layout,
                           train_examples=10, val_examples=0, test_examples=0, seed=99)
        out += make_splits(cfg)["train"]
    return out


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


# --- vocabulary ----------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["<think>", "</think>"])
def test_think_tags_are_single_non_special_tokens(tokenizer, tag):
    ids = encode(tokenizer, f"x{tag}y")
    assert tokenizer.convert_tokens_to_ids(tag) in ids
    assert len(encode(tokenizer, tag)) == 1
    assert tag not in tokenizer.all_special_tokens


def test_skip_special_tokens_keeps_think_tags_but_drops_eos(tokenizer, examples):
    ex = examples[0]
    ids = encode(tokenizer, render_sequence(tokenizer, ex.question, ex.completion))
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert "<think>" in text and "</think>" in text
    assert "<|end|>" not in text  # the flag really does remove special tokens
    assert text.endswith(ex.answer_text)


def test_think_ids_match_vocab(tokenizer):
    t, e = think_ids(tokenizer)
    assert t != e
    assert tokenizer.convert_ids_to_tokens([t, e]) == ["<think>", "</think>"]


def test_eos_and_pad(tokenizer):
    assert tokenizer.eos_token == "<|end|>"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    assert encode(tokenizer, "<|end|>") == [tokenizer.eos_token_id]
    assert encode(tokenizer, "<|pad|>") == [tokenizer.pad_token_id]
    assert tokenizer.padding_side == "right"


def test_vocab_size(tokenizer):
    # 192 trained entries (specials included) + the two added think tags.
    assert len(tokenizer) == 194


def test_expression_is_one_token_per_character(tokenizer):
    ids = encode(tokenizer, EXPR)
    assert len(ids) == len(EXPR) == 11
    assert [tokenizer.decode([i]) for i in ids] == list(EXPR)


@pytest.mark.parametrize("context", ["{}", " {} ", "a{}b", "x={}.", "({})", "{}{}"])
def test_digits_and_symbols_are_single_tokens_in_context(tokenizer, context):
    for ch in "0123456789()+-*=":
        alone = encode(tokenizer, ch)
        assert len(alone) == 1, ch
        assert alone[0] in encode(tokenizer, context.format(ch, ch)), (ch, context)


def test_digit_runs_split_per_digit(tokenizer):
    ids = encode(tokenizer, "0123456789")
    assert len(ids) == 10
    assert len(set(ids)) == 10
    assert len(encode(tokenizer, "()+-*=")) == 6
    # The modulus "10" is two tokens, "1" and "0".
    assert encode(tokenizer, " mod 10.")[-3:-1] == encode(tokenizer, "1") + encode(tokenizer, "0")


def test_round_trip_of_rendered_sequences(tokenizer, examples):
    for ex in examples:
        text = render_sequence(tokenizer, ex.question, ex.completion)
        ids = encode(tokenizer, text)
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_unseen_ascii_text_round_trips(tokenizer):
    text = "Quartz & jinx {vow} ~ [#@!] ^ %?`|"  # characters absent from the corpus
    ids = encode(tokenizer, text)
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


# --- chat template -------------------------------------------------------------------------


def test_render_prompt_literal(tokenizer):
    assert render_prompt(tokenizer, "Compute 1+2 mod 10.") == (
        "<|user|>Compute 1+2 mod 10.<|assistant|>"
    )


def test_render_sequence_literal(tokenizer):
    assert render_sequence(tokenizer, "Q?", "<think>c</think>a") == (
        "<|user|>Q?<|assistant|><think>c</think>a<|end|>"
    )


def test_prompt_is_prefix_of_sequence_and_sequence_ends_with_eos(tokenizer, examples):
    for ex in examples:
        prompt = render_prompt(tokenizer, ex.question)
        seq = render_sequence(tokenizer, ex.question, ex.completion)
        assert prompt.endswith("<|assistant|>")
        assert seq.startswith(prompt)
        assert seq == prompt + ex.completion + "<|end|>"
        assert seq.endswith(tokenizer.eos_token)
        # Token level too: the prompt's ids are a prefix of the sequence's ids.
        p_ids, s_ids = encode(tokenizer, prompt), encode(tokenizer, seq)
        assert s_ids[: len(p_ids)] == p_ids
        assert s_ids[-1] == tokenizer.eos_token_id


# --- save / load ---------------------------------------------------------------------------


def test_save_pretrained_round_trip(tokenizer, examples, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert think_ids(loaded) == think_ids(tokenizer)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.eos_token, loaded.pad_token) == ("<|end|>", "<|pad|>")
    for ex in examples:
        assert render_sequence(loaded, ex.question, ex.completion) == render_sequence(
            tokenizer, ex.question, ex.completion
        )
        text = render_sequence(tokenizer, ex.question, ex.completion)
        assert encode(loaded, text) == encode(tokenizer, text)
    # Non-special status of the think tags survives saving.
    ids = encode(loaded, "<think>1</think>")
    assert loaded.decode(ids, skip_special_tokens=True) == "<think>1</think>"


def _word_level(vocab, unk=None):
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk)


def test_think_ids_rejects_tokenizer_without_tags_unk():
    tok = _word_level({"[UNK]": 0, "a": 1, "b": 2}, unk="[UNK]")
    with pytest.raises(ValueError, match="no single token for <think>"):
        think_ids(tok)


def test_think_ids_rejects_tokenizer_without_tags_no_unk():
    tok = _word_level({"a": 0, "b": 1})
    with pytest.raises(ValueError, match="<think>"):
        think_ids(tok)


def test_think_ids_rejects_tags_that_encoding_splits():
    # The tags are in the vocabulary, but the pre-tokenizer splits "<think>" into pieces.
    tok = _word_level({"[UNK]": 0, "<think>": 1, "</think>": 2, "think": 3}, unk="[UNK]")
    assert tok.convert_tokens_to_ids("<think>") == 1
    with pytest.raises(ValueError, match="add it as a \\(non-special\\) added token"):
        think_ids(tok)


def test_think_ids_rejects_missing_end_tag_only():
    tok = _word_level({"[UNK]": 0, "a": 1}, unk="[UNK]")
    tok.add_tokens(["<think>"])
    with pytest.raises(ValueError, match="</think>"):
        think_ids(tok)


# --- cache ---------------------------------------------------------------------------------


def test_get_tokenizer_cache_is_reused(tok_and_key, cache, monkeypatch):
    tok, key = tok_and_key
    assert key == tokenizer_key(TokenizerConfig())
    folder = cache / key
    mtime = folder.stat().st_mtime_ns
    contents = sorted(p.name for p in folder.iterdir())

    def no_training(*args, **kwargs):
        raise AssertionError("get_tokenizer retrained a cached tokenizer")

    monkeypatch.setattr(study.models, "train_tokenizer", no_training)
    again, key2 = get_tokenizer(TokenizerConfig(), cache)
    assert key2 == key
    assert again.get_vocab() == tok.get_vocab()
    assert folder.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in folder.iterdir()) == contents
    assert [p.name for p in cache.iterdir() if p.name.startswith("tokenizer-")] == [key]
    # No leftover temporary build folders.
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_get_tokenizer_key_depends_on_config_and_texts(monkeypatch):
    a = tokenizer_key(TokenizerConfig())
    b = tokenizer_key(TokenizerConfig(vocab_size=200))
    c = tokenizer_key(TokenizerConfig(seed=1))
    d = tokenizer_key(TokenizerConfig(texts=2))  # trained on other texts: never the cached one
    assert len({a, b, c, d}) == 4
    # The first mix hashes as before the texts field existed (the committed study's tokenizer).
    assert a == f"tokenizer-{config_hash({'vocab_size': 192, 'seed': 0})}" == "tokenizer-8292a5433f02"


def test_spread_texts_train_a_tokenizer_with_room_for_their_words(tmp_path):
    tok, _ = get_tokenizer(TokenizerConfig(vocab_size=256, texts=2), tmp_path)
    # 224 trained entries (vocab_size is an upper bound: the BPE stops when every word of its
    # texts is one token) + the two think tags; the verification cue is words, not letters.
    assert len(tok) == 226
    assert len(tok.encode("Wait, let me double-check.", add_special_tokens=False)) == 9
    assert len(tok.encode("Maybe 4*2 first? No, the brackets come first.", add_special_tokens=False)) == 15


def test_failed_build_leaves_no_folder(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(study.models, "train_tokenizer", broken)
    with pytest.raises(RuntimeError, match="boom"):
        get_tokenizer(TokenizerConfig(vocab_size=200), tmp_path)
    assert list(tmp_path.iterdir()) == []
