"""Closed-form and equivalence tests for study.losses."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from study.losses import LOSSES, LossParts, distillation_loss, token_divergence

B, T, V = 3, 7, 11


def _logits(seed, shape=(B, T, V), scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=dtype) * scale)


def _labels(seed, shape=(B, T), p_masked=0.3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, shape, generator=g)
    masked = torch.rand(shape, generator=g) < p_masked
    labels[masked] = -100
    labels[:, 0] = -100  # a prompt token; never a target anyway after the shift
    return labels


def _shifted_supervised(logits, labels):
    mask = labels[:, 1:] != -100
    return logits[:, :-1][mask], labels[:, 1:][mask]


# ---------------------------------------------------------------- token_divergence


@pytest.mark.parametrize("kind", LOSSES)
def test_identical_logits_give_zero_kd(kind):
    s = _logits(0)
    labels = _labels(1)
    out = distillation_loss(s, labels, s.clone(), alpha=0.5, kind=kind)
    assert isinstance(out, LossParts)
    assert out.kd.abs().item() < 1e-12
    torch.testing.assert_close(out.total, 0.5 * out.ce, rtol=0, atol=1e-12)
    assert out.ce.item() > 0


def test_forward_kl_matches_kl_div_teacher_to_student():
    s, t = _logits(0, (20, V)), _logits(1, (20, V))
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    # kl_div(input, target) = KL(target || exp(input)); target = teacher.
    ref_fwd = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)
    ref_rev = F.kl_div(log_t, log_s, log_target=True, reduction="none").sum(-1)
    fwd = token_divergence(s, t, "forward_kl")
    rev = token_divergence(s, t, "reverse_kl")
    torch.testing.assert_close(fwd, ref_fwd, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rev, ref_rev, rtol=1e-12, atol=1e-12)
    # Direction matters on asymmetric logits.
    assert (fwd - rev).abs().max().item() > 1e-3


def test_forward_kl_loss_matches_kl_div_batchmean():
    s, t, labels = _logits(0), _logits(1), _labels(2)
    out = distillation_loss(s, labels, t, alpha=0.5, kind="forward_kl")
    ss, _ = _shifted_supervised(s, labels)
    tt, _ = _shifted_supervised(t, labels)
    ref = F.kl_div(F.log_softmax(ss, -1), F.log_softmax(tt, -1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(out.kd, ref, rtol=1e-12, atol=1e-12)
    rev = distillation_loss(s, labels, t, alpha=0.5, kind="reverse_kl")
    ref_rev = F.kl_div(F.log_softmax(tt, -1), F.log_softmax(ss, -1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(rev.kd, ref_rev, rtol=1e-12, atol=1e-12)
    assert abs(out.kd.item() - rev.kd.item()) > 1e-3


def test_jsd_symmetric_bounded_zero_on_identical():
    s, t = _logits(0, (50, V), scale=5.0), _logits(1, (50, V), scale=5.0)
    a = token_divergence(s, t, "jsd", beta=0.5)
    b = token_divergence(t, s, "jsd", beta=0.5)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert (a >= 0).all() and (a <= math.log(2) + 1e-12).all()
    assert token_divergence(s, s, "jsd").abs().max().item() < 1e-12
    # Disjoint one-hot-like distributions reach the log 2 bound.
    far = torch.full((1, V), -1e4, dtype=torch.float64)
    p, q = far.clone(), far.clone()
    p[0, 0], q[0, 1] = 0.0, 0.0
    torch.testing.assert_close(token_divergence(p, q, "jsd"), torch.tensor([math.log(2)], dtype=torch.float64))


def test_jsd_matches_direct_formula_for_asymmetric_beta():
    s, t = _logits(0, (10, V)), _logits(1, (10, V))
    beta = 0.2
    ps, pt = F.softmax(s, -1), F.softmax(t, -1)
    m = beta * pt + (1 - beta) * ps
    ref = beta * (pt * (pt / m).log()).sum(-1) + (1 - beta) * (ps * (ps / m).log()).sum(-1)
    torch.testing.assert_close(token_divergence(s, t, "jsd", beta=beta), ref, rtol=1e-10, atol=1e-12)


def test_tvd_hand_example_and_bounds():
    p_t = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    p_s = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    # 0.5 * (|0.3| + 0 + |0.3|) = 0.3; log-probs are valid logits.
    out = token_divergence(p_s.log(), p_t.log(), "tvd")
    torch.testing.assert_close(out, torch.tensor([0.3], dtype=torch.float64), rtol=0, atol=1e-12)
    s, t = _logits(0, (50, V), scale=5.0), _logits(1, (50, V), scale=5.0)
    d = token_divergence(s, t, "tvd")
    assert (d >= 0).all() and (d <= 1).all()


@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize("temp", [0.5, 2.0, 3.7])
def test_temperature_scaling(kind, temp):
    s, t = _logits(0, (9, V)), _logits(1, (9, V))
    got = token_divergence(s, t, kind, temperature=temp)
    ref = temp**2 * token_divergence(s / temp, t / temp, kind, temperature=1.0)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", LOSSES)
def test_teacher_log_probs_equal_teacher_logits(kind):
    s, t = _logits(0, (9, V)), _logits(1, (9, V))
    torch.testing.assert_close(
        token_divergence(s, F.log_softmax(t, -1), kind), token_divergence(s, t, kind), rtol=1e-12, atol=1e-12
    )


def test_bf16_inputs_computed_in_float32():
    s = _logits(0, (5, V), dtype=torch.float32)
    t = _logits(1, (5, V), dtype=torch.float32)
    out = token_divergence(s.bfloat16(), t.bfloat16(), "forward_kl")
    assert out.dtype == torch.float32
    ref = token_divergence(s.bfloat16().float(), t.bfloat16().float(), "forward_kl")
    torch.testing.assert_close(out, ref)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 30.0),
    kind=st.sampled_from(LOSSES),
)
def test_divergences_nonnegative_and_finite(seed, scale, kind):
    s, t = _logits(seed, (4, V), scale=scale), _logits(seed + 1, (4, V), scale=scale)
    d = token_divergence(s, t, kind)
    assert torch.isfinite(d).all()
    assert (d >= -1e-12).all()


# ---------------------------------------------------------------- distillation_loss


def test_alpha_zero_is_plain_fine_tuning_value_and_grad():
    labels = _labels(2)
    s1 = _logits(0).requires_grad_()
    s2 = s1.detach().clone().requires_grad_()
    out = distillation_loss(s1, labels, _logits(1), alpha=0.0)
    ref = F.cross_entropy(s2[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert out.total.item() == out.ce.item()
    torch.testing.assert_close(out.total, ref, rtol=1e-12, atol=1e-12)
    out.total.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-12, atol=1e-12)
    # No teacher is fine with alpha == 0, and kd is reported as 0.
    no_teacher = distillation_loss(s1.detach(), labels, None, alpha=0.0)
    assert no_teacher.kd.item() == 0.0
    torch.testing.assert_close(no_teacher.total, ref.detach(), rtol=1e-12, atol=1e-12)


def test_mix_is_weighted_sum():
    s, t, labels = _logits(0), _logits(1), _labels(2)
    for alpha in (0.0, 0.25, 0.5, 1.0):
        out = distillation_loss(s, labels, t, alpha=alpha)
        torch.testing.assert_close(out.total, (1 - alpha) * out.ce + alpha * out.kd, rtol=1e-12, atol=1e-12)
    assert distillation_loss(s, labels, t, alpha=1.0).total.item() == pytest.approx(out.kd.item(), abs=1e-12)


@pytest.mark.parametrize("kind", LOSSES)
def test_no_supervised_token_gives_finite_zeros(kind):
    s = _logits(0).requires_grad_()
    labels = torch.full((B, T), -100)
    out = distillation_loss(s, labels, _logits(1), alpha=0.5, kind=kind)
    assert out.n_supervised == 0
    for v in (out.total, out.ce, out.kd):
        assert torch.isfinite(v) and v.item() == 0.0
    out.total.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and (s.grad == 0).all()


def test_gradient_accumulation_matches_full_batch():
    torch.manual_seed(0)
    n_seq, H = 8, 5
    x = torch.randn(n_seq, T, H, dtype=torch.float64)
    teacher = _logits(1, (n_seq, T, V))
    labels = torch.randint(0, V, (n_seq, T))
    # Very different supervised counts per sequence (prompt lengths 1..7).
    for i in range(n_seq):
        labels[i, : 1 + (i % T)] = -100
    total_sup = int((labels[:, 1:] != -100).sum())

    def make_model():
        torch.manual_seed(123)
        return torch.nn.Linear(H, V).double()

    full_model = make_model()
    full = distillation_loss(full_model(x), labels, teacher, alpha=0.5)
    full.total.backward()
    assert full.n_supervised == total_sup

    acc_model = make_model()
    summed = 0.0
    naive = 0.0
    for i in range(n_seq):
        part = distillation_loss(
            acc_model(x[i : i + 1]), labels[i : i + 1], teacher[i : i + 1], alpha=0.5, num_supervised=total_sup
        )
        part.total.backward()
        summed += part.total.item()
        naive += distillation_loss(
            acc_model(x[i : i + 1]).detach(), labels[i : i + 1], teacher[i : i + 1], alpha=0.5
        ).total.item() / n_seq

    assert summed == pytest.approx(full.total.item(), rel=1e-12, abs=1e-12)
    for p_full, p_acc in zip(full_model.parameters(), acc_model.parameters()):
        torch.testing.assert_close(p_acc.grad, p_full.grad, rtol=1e-10, atol=1e-12)
    # Averaging per-micro-batch means weights short sequences too heavily.
    assert abs(naive - full.total.item()) > 1e-3


def test_gradient_accumulation_on_leaf_logits():
    n_seq = 8
    s_full = _logits(0, (n_seq, T, V)).requires_grad_()
    teacher = _logits(1, (n_seq, T, V))
    labels = _labels(2, (n_seq, T), p_masked=0.5)
    total_sup = int((labels[:, 1:] != -100).sum())
    distillation_loss(s_full, labels, teacher, kind="jsd").total.backward()
    grads = []
    for i in range(n_seq):
        s_i = s_full.detach()[i : i + 1].clone().requires_grad_()
        distillation_loss(s_i, labels[i : i + 1], teacher[i : i + 1], kind="jsd", num_supervised=total_sup).total.backward()
        grads.append(s_i.grad)
    torch.testing.assert_close(torch.cat(grads), s_full.grad, rtol=1e-12, atol=1e-14)


def test_only_supervised_positions_contribute():
    s, t, labels = _logits(0), _logits(1), _labels(2, p_masked=0.5)
    base = distillation_loss(s, labels, t)
    # Logits at t are irrelevant when labels[t + 1] is masked, and the last position
    # never predicts anything.
    irrelevant = torch.zeros(B, T, dtype=torch.bool)
    irrelevant[:, :-1] = labels[:, 1:] == -100
    irrelevant[:, -1] = True
    assert irrelevant.any() and not irrelevant.all()
    s2, t2 = s.clone(), t.clone()
    s2[irrelevant] = _logits(3, (int(irrelevant.sum()), V), scale=50.0)
    t2[irrelevant] = _logits(4, (int(irrelevant.sum()), V), scale=50.0)
    out = distillation_loss(s2, labels, t2)
    assert out.total.item() == base.total.item()
    assert out.n_supervised == base.n_supervised == int((labels[:, 1:] != -100).sum())
    # And changing a supervised position does change it.
    s3 = s.clone()
    s3[~irrelevant] += _logits(5, (int((~irrelevant).sum()), V))
    assert distillation_loss(s3, labels, t).total.item() != base.total.item()


def test_labels_are_shifted_inside():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = ids.clone()
    labels[:, :2] = -100  # prompt
    shifted = torch.zeros(B, T, V, dtype=torch.float64)
    unshifted = torch.zeros(B, T, V, dtype=torch.float64)
    for b in range(B):
        for pos in range(T - 1):
            shifted[b, pos, ids[b, pos + 1]] = 50.0  # next token
        for pos in range(T):
            unshifted[b, pos, ids[b, pos]] = 50.0  # current token (the wrong convention)
    good = distillation_loss(shifted, labels, None, alpha=0.0)
    assert good.ce.item() < 1e-10
    assert good.n_supervised == B * (T - 2)
    assert distillation_loss(unshifted, labels, None, alpha=0.0).ce.item() > 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="kl"), "forward_kl"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(temperature=0.0), "temperature"),
        (dict(kind="jsd", beta=1.0), "beta"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    s, t, labels = _logits(0), _logits(1), _labels(2)
    with pytest.raises(ValueError, match=match):
        distillation_loss(s, labels, t, **kwargs)


def test_bad_inputs_raise_more():
    s, t, labels = _logits(0), _logits(1), _labels(2)
    with pytest.raises(ValueError, match="teacher"):
        distillation_loss(s, labels, None, alpha=0.5)
    with pytest.raises(ValueError, match="forward_kl"):
        token_divergence(s[0], t[0], kind="bogus")
    with pytest.raises(ValueError, match="temperature"):
        token_divergence(s[0], t[0], temperature=-1.0)
    with pytest.raises(ValueError, match="shape"):
        distillation_loss(s, labels, t[..., :-1])
    with pytest.raises(ValueError, match="num_supervised"):
        distillation_loss(s, labels, t, num_supervised=0)
