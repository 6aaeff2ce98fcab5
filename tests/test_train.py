"""The training core on a real (tiny) Qwen3 model: accumulation, determinism, step counts."""

import copy

import pytest
import torch

from study.config import TokenizerConfig
from study.data.pipeline import collate, encode, prepare
from study.data.synthetic import CorpusConfig, make_splits
from study.models import build_model, get_tokenizer
from study.run import loop_settings
from study.train import LoopSettings, batch_schedule, loss_step, train_loop
from tiny import TINY_MODEL, tiny_config


@pytest.fixture(scope="module")
def setup(tiny_cache):
    tok, _ = get_tokenizer(TokenizerConfig(), tiny_cache)
    examples = make_splits(CorpusConfig(train_examples=32, val_examples=0, test_examples=0))["train"]
    encoded = encode(examples, tok)
    return tok, encoded


def _items(encoded, cache, **kw):
    return prepare(encoded, tiny_config(cache, **kw))[0]


def test_batch_of_8_equals_8_accumulated_micro_batches(setup, tiny_cache):
    tok, encoded = setup
    items = _items(encoded, tiny_cache)[:8]
    torch.manual_seed(0)
    student = build_model(TINY_MODEL, tok).double()
    teacher = build_model(TINY_MODEL, tok).double().eval()
    s = LoopSettings(steps=1, batch_size=8, lr=1e-3, alpha=0.5)
    device = torch.device("cpu")

    one = copy.deepcopy(student)
    big = collate(items, tok.pad_token_id)
    n = int((big["labels"][:, 1:] != -100).sum())
    loss_big = loss_step(one, teacher, big, s, n, device).total.item()

    acc = copy.deepcopy(student)
    loss_acc = 0.0
    for it in items:
        loss_acc += loss_step(acc, teacher, collate([it], tok.pad_token_id), s, n, device).total.item()

    assert loss_acc == pytest.approx(loss_big, rel=1e-9)
    for (name, p1), (_, p2) in zip(one.named_parameters(), acc.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-7, atol=1e-10, msg=name)


def test_same_config_same_loss_curve(setup, tiny_cache):
    tok, encoded = setup
    items = _items(encoded, tiny_cache)
    s = LoopSettings(steps=4, batch_size=8, lr=3e-3, alpha=0.0, seed=3)
    curves = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(TINY_MODEL, tok)
        curves.append(train_loop(model, items, tok.pad_token_id, s, torch.device("cpu"), progress=False)["curve"])
    assert curves[0] == curves[1]
    s2 = LoopSettings(steps=4, batch_size=8, lr=3e-3, alpha=0.0, seed=4)
    torch.manual_seed(0)
    other = train_loop(build_model(TINY_MODEL, tok), items, tok.pad_token_id, s2, torch.device("cpu"), progress=False)
    assert other["curve"] != curves[0]  # the seed drives the batch order


def test_truncation_changes_tokens_not_steps(setup, tiny_cache):
    tok, encoded = setup
    full = _items(encoded, tiny_cache, lsp=1.0)
    half = _items(encoded, tiny_cache, lsp=0.5)
    cfg_full, cfg_half = tiny_config(tiny_cache, lsp=1.0), tiny_config(tiny_cache, lsp=0.5)
    assert loop_settings(cfg_full, len(full)).steps == loop_settings(cfg_half, len(half)).steps
    tokens_full = sum(len(it.ids) for it in full)
    tokens_half = sum(len(it.ids) for it in half)
    assert tokens_half == sum(max(1, int(len(e.ids) * 0.5)) for e in encoded)
    assert 0.45 < tokens_half / tokens_full <= 0.5


def test_batch_schedule_counts_examples_and_reshuffles():
    sched = batch_schedule(10, 4, steps=5, seed=1)
    assert [len(b) for b in sched] == [4] * 5
    assert len(set(sched[0] + sched[1])) == 8  # an epoch never repeats an example
    assert sched[:2] != sched[2:4]  # each epoch has its own order
    with pytest.raises(ValueError, match="cannot fill one batch"):
        batch_schedule(3, 4, steps=1, seed=0)
