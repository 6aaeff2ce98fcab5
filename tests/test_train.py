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


def _peaked(model, std=0.3):
    """Redraw every parameter with a large spread, so the model's next-token distributions are
    far from uniform and a misaligned or mis-weighted KD term is not hidden by near-zero values."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


def reference_loss(model, batch, teacher_logits, alpha, temperature):
    """(1 - alpha) CE + alpha KL(teacher || student) from the full logits, written out here:
    logits[:, t] score labels[:, t + 1]; only targets with a label count; both terms are
    divided by the number of supervised targets; the KL is at ``temperature``, times T^2."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    n = mask.sum()
    s = logits[:, :-1][mask]  # [N, V]
    ce = -s.log_softmax(-1).gather(1, targets[mask][:, None]).sum() / n
    log_t = (teacher_logits[:, :-1][mask] / temperature).log_softmax(-1)
    log_s = (s / temperature).log_softmax(-1)
    kd = (log_t.exp() * (log_t - log_s)).sum() * temperature**2 / n
    return (1 - alpha) * ce + alpha * kd, ce, kd


@pytest.mark.parametrize("cached", [False, True], ids=["live-teacher", "cached-logprobs"])
@pytest.mark.parametrize("alpha,temperature", [(0.5, 1.0), (0.3, 2.0)])
def test_loss_step_equals_reference_on_full_logits(setup, tiny_cache, cached, alpha, temperature):
    tok, encoded = setup
    items = _items(encoded, tiny_cache, condition="CoT+A", random_mask=0.3)[:4]
    batch = collate(items, tok.pad_token_id)
    assert len({len(it.ids) for it in items}) > 1  # padding is part of the check
    torch.manual_seed(0)
    student = _peaked(build_model(TINY_MODEL, tok).double())
    teacher = _peaked(build_model(TINY_MODEL, tok).double()).eval()
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if cached:  # the exact cache: the teacher's log-probabilities ride in the batch
        batch, live = {**batch, "teacher_logprobs": teacher_logits.log_softmax(-1)}, None
    else:
        live = teacher
    s = LoopSettings(steps=1, batch_size=4, lr=1e-3, alpha=alpha, temperature=temperature)
    n = sum(sum(it.supervised.values()) for it in items)

    reference = copy.deepcopy(student)
    total, ce, kd = reference_loss(reference, batch, teacher_logits, alpha, temperature)
    total.backward()
    parts = loss_step(student, live, batch, s, n, torch.device("cpu"))

    assert kd.item() > 1e-2  # the KD term is not negligible
    assert parts.total.item() == pytest.approx(total.item(), rel=1e-10)
    assert parts.ce.item() == pytest.approx(ce.item(), rel=1e-10)
    assert parts.kd.item() == pytest.approx(kd.item(), rel=1e-10)
    for (name, p), (_, q) in zip(student.named_parameters(), reference.named_parameters()):
        assert q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-12, msg=name)


def test_train_loop_accumulation_equals_one_large_batch(setup, tiny_cache):
    """grad_accum = 4 micro-batches of 2 must take the same steps as batches of 8: the loss of a
    step is normalised by the supervised targets of the whole step, not of each micro-batch."""
    tok, encoded = setup
    items = _items(encoded, tiny_cache, condition="CoT+A", random_mask=0.3)
    steps, seed = 3, 5
    counts = [sum(it.supervised.values()) for it in items]
    for indices in batch_schedule(len(items), 8, steps, seed):  # micro-batches differ in size
        assert len({counts[i] + counts[j] for i, j in zip(indices[::2], indices[1::2])}) > 1
    torch.manual_seed(0)
    student = build_model(TINY_MODEL, tok).double()
    teacher = _peaked(build_model(TINY_MODEL, tok).double()).eval()
    runs = {}
    for accum in (1, 4):
        model = copy.deepcopy(student)
        s = LoopSettings(steps=steps, batch_size=8, lr=3e-3, grad_accum=accum, alpha=0.5, seed=seed)
        out = train_loop(model, items, tok.pad_token_id, s, torch.device("cpu"), teacher=teacher,
                         progress=False)
        runs[accum] = out, model
    (one, big), (acc, small) = runs[1], runs[4]
    assert len(one["curve"]) == len(acc["curve"]) == steps
    for a, b in zip(one["curve"], acc["curve"]):
        assert a["step"] == b["step"]
        for key in ("loss", "ce", "kd"):
            assert b[key] == pytest.approx(a[key], rel=1e-9), (a["step"], key)
    assert one["tokens"] == acc["tokens"]
    moved = False
    for (name, p), (_, q), (_, p0) in zip(big.named_parameters(), small.named_parameters(),
                                          student.named_parameters()):
        # AdamW divides by sqrt(v) + eps: a gradient at rounding level g (a token no batch holds)
        # moves a weight by lr * g / (|g| + eps) per step, whichever way the sums were ordered;
        # with g ~ 1e-14 (one thread sums in another order: 1.2e-9 measured) that is ~3e-9, far
        # below the ~lr = 3e-3 a wrong normalisation would move it.
        diff = (q - p).abs().max().item()
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-8, msg=lambda m: f"{name}: max |diff| {diff:.3g}")
        moved |= not torch.equal(p, p0)
    assert moved  # the steps did train


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
