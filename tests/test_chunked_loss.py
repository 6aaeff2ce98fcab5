"""The chunked loss the training step uses agrees with the plain definition, in value and in
gradients, for every divergence, teacher form, chunk size and alpha."""

import pytest
import torch
import torch.nn.functional as F

from study.losses import (
    LOSSES,
    DenseTeacher,
    HeadTeacher,
    TopKTeacher,
    bucket_student,
    chunked_distillation_loss,
    distillation_loss,
    token_divergence,
    topk_logprobs,
)

N, D, V = 23, 8, 37


def _rows(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g, dtype=dtype)
    w = torch.randn(V, D, generator=g, dtype=dtype) * 0.7
    th = torch.randn(N, D, generator=g, dtype=dtype)
    tw = torch.randn(V, D, generator=g, dtype=dtype) * 0.7
    y = torch.randint(0, V, (N,), generator=g)
    return h, w, th, tw, y


def _plain(h, w, y, t_logits, **kw):
    """distillation_loss on full logits: rows as a [1, N + 1, V] sequence whose labels are y."""
    logits = torch.cat([h @ w.T, torch.zeros(1, V, dtype=h.dtype)])[None]
    labels = torch.cat([torch.tensor([-100]), y])[None]
    teacher = None if t_logits is None else torch.cat([t_logits, torch.zeros(1, V, dtype=h.dtype)])[None]
    return distillation_loss(logits, labels, teacher, **kw)


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize("chunk", [1, 5, N, 100])
@pytest.mark.parametrize("form", ["dense", "head"])
def test_chunked_matches_plain_value_and_gradients(kind, chunk, form):
    h, w, th, tw, y = _rows(0)
    h.requires_grad_()
    w.requires_grad_()
    kw = dict(alpha=0.3, kind=kind, temperature=1.5, beta=0.4)
    teacher = DenseTeacher(th @ tw.T) if form == "dense" else HeadTeacher(th, tw)
    ref = _plain(h, w, y, th @ tw.T, **kw)
    out = chunked_distillation_loss(h, w, y, teacher, chunk_tokens=chunk, **kw)
    for a, b in [(out.total, ref.total), (out.ce, ref.ce), (out.kd, ref.kd)]:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(_grads(out.total, h, w), _grads(ref.total, h, w)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_chunked_normaliser_and_alpha_zero_without_teacher():
    h, w, _, _, y = _rows(1)
    h.requires_grad_()
    out = chunked_distillation_loss(h, w, y, None, alpha=0.0, num_supervised=2 * N, chunk_tokens=4)
    ref = F.cross_entropy(h @ w.T, y, reduction="sum") / (2 * N)
    torch.testing.assert_close(out.total, ref)
    torch.testing.assert_close(_grads(out.total, h)[0], _grads(ref, h)[0])
    assert out.kd.item() == 0.0


def test_chunked_float32_inputs_match_float64_reference():
    h, w, th, tw, y = _rows(2)
    out = chunked_distillation_loss(h.float(), w.float(), y, HeadTeacher(th.float(), tw.float()))
    ref = chunked_distillation_loss(h, w, y, HeadTeacher(th, tw))
    assert out.total.dtype == torch.float32
    assert out.total.item() == pytest.approx(ref.total.item(), rel=1e-5)


def test_no_supervised_rows_is_zero_and_backward_able():
    h = torch.zeros(0, D, requires_grad=True)
    w = torch.randn(V, D, requires_grad=True)
    out = chunked_distillation_loss(h, w, torch.zeros(0, dtype=torch.long), DenseTeacher(torch.zeros(0, V)))
    out.total.backward()
    assert out.total.item() == 0.0 and w.grad.abs().sum() == 0


def test_bad_arguments_are_named():
    h, w, th, tw, y = _rows(3)
    with pytest.raises(ValueError, match="a teacher is needed"):
        chunked_distillation_loss(h, w, y, None, alpha=0.5)
    with pytest.raises(ValueError, match="same rows"):
        chunked_distillation_loss(h, w, y[:-1], HeadTeacher(th, tw))
    with pytest.raises(ValueError, match="accumulation group"):
        chunked_distillation_loss(h, w, y, HeadTeacher(th, tw), num_supervised=N - 1)
    idx, lp = topk_logprobs(th @ tw.T, 5)
    with pytest.raises(ValueError, match="temperature 1"):
        chunked_distillation_loss(h, w, y, TopKTeacher(idx, lp), temperature=2.0)
    with pytest.raises(ValueError, match="0 < k < vocabulary"):
        topk_logprobs(th @ tw.T, V)


# ---------------------------------------------------------------- top-k


def test_topk_buckets_are_proper_distributions():
    _, _, th, tw, _ = _rows(4)
    idx, lp = topk_logprobs(th @ tw.T, 6)
    assert idx.shape == (N, 6) and lp.shape == (N, 7)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(N), rtol=0, atol=1e-5)
    # The top-k are the teacher's most likely tokens, in order.
    full = F.log_softmax((th @ tw.T).float(), -1)
    torch.testing.assert_close(lp[:, :6], full.topk(6, -1).values)
    bucketed = bucket_student(full, idx)
    torch.testing.assert_close(bucketed, lp)  # bucketing the teacher itself reproduces its cache


@pytest.mark.parametrize("kind", LOSSES)
def test_topk_loss_is_the_bucketed_divergence_and_approaches_exact(kind):
    h, w, th, tw, y = _rows(5)
    t = th @ tw.T
    exact = chunked_distillation_loss(h, w, y, DenseTeacher(t), alpha=1.0, kind=kind).kd.item()
    errors = []
    for k in (1, 4, 16, V - 1):
        idx, lp = topk_logprobs(t, k)
        out = chunked_distillation_loss(h, w, y, TopKTeacher(idx, lp.double()), alpha=1.0, kind=kind, chunk_tokens=7)
        ref = token_divergence(bucket_student(F.log_softmax(h @ w.T, -1), idx), lp.double(), kind).sum() / N
        assert out.kd.item() == pytest.approx(ref.item(), rel=1e-9)
        assert out.kd.item() >= -1e-9  # still a divergence
        errors.append(abs(out.kd.item() - exact))
    # k = V - 1 leaves one token in the tail bucket: exact up to float32 storage of log-probs.
    assert errors[-1] < 1e-5 * max(1.0, exact)
    assert errors[-1] < errors[0]


def test_topk_gradients_match_autograd_of_bucketed_loss():
    h, w, th, tw, y = _rows(6)
    h.requires_grad_()
    w.requires_grad_()
    idx, lp = topk_logprobs(th @ tw.T, 5)
    lp = lp.double()
    out = chunked_distillation_loss(h, w, y, TopKTeacher(idx, lp), alpha=0.5, chunk_tokens=3)
    log_s = F.log_softmax(h @ w.T, -1)
    ref = 0.5 * F.nll_loss(log_s, y, reduction="sum") / N + 0.5 * token_divergence(
        bucket_student(log_s, idx), lp).sum() / N
    torch.testing.assert_close(out.total, ref)
    for a, b in zip(_grads(out.total, h, w), _grads(ref, h, w)):
        torch.testing.assert_close(a, b)
