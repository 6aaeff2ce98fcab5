"""FLOPs from torch.profiler against the analytic count, and the CPU peak-memory measure."""

import gc

import pytest
import torch

from study.config import ModelConfig, TokenizerConfig
from study.models import build_model, get_tokenizer
from study.profiling import analytic_flops, matmul_params, profile_step

MODEL = ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=16, intermediate_size=128, max_position_embeddings=256)


@pytest.fixture(scope="module")
def tok(tiny_cache):
    return get_tokenizer(TokenizerConfig(), tiny_cache)[0]


def _measure(model, batch, seq):
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))

    def step(_):
        model(input_ids=ids).logits.float().logsumexp(-1).sum().backward()

    out = profile_step(step, 1, torch.device("cpu"))
    model.zero_grad(set_to_none=True)
    return out


def test_matmul_params_counts_linear_weights(tok):
    model = build_model(MODEL, tok)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmul_params(model.config) == linear  # lm_head is tied but still a matmul


@pytest.mark.parametrize("seq", [32, 128])
def test_profiler_matches_analytic_under_eager(tok, seq):
    model = build_model(MODEL, tok, attn_implementation="eager")
    out = _measure(model, 4, seq)
    # Matmuls only, as the formula counts: equal to float rounding (a missing matmul such as an
    # in-place addmm_, which the profiler counts as 0, would show as several per cent).
    assert out["flops"] == pytest.approx(analytic_flops(model.config, [(4, seq)]), rel=1e-3)
    assert out["flops_other"] > 0 and out["uncounted_ops"] == []


def test_profiler_misses_attention_under_sdpa(tok):
    """Why we profile eager: fused SDPA kernels are invisible to the FLOP counter."""
    model = build_model(MODEL, tok, attn_implementation="sdpa")
    measured = _measure(model, 4, 128)["flops"]
    full = analytic_flops(model.config, [(4, 128)])
    dense_only = 6.0 * matmul_params(model.config) * 4 * 128
    assert measured < 0.97 * full
    assert measured == pytest.approx(dense_only, rel=0.05)


def test_half_sequence_halves_flops_and_step_memory(tok):
    model = build_model(MODEL, tok)
    full, half = _measure(model, 8, 128), _measure(model, 8, 64)
    assert half["flops"] / full["flops"] < 0.5  # linear terms halve, attention quarters
    assert half["step_peak_bytes"] / full["step_peak_bytes"] < 0.6
    assert full["step_peak_bytes"] > 8 * 128 * model.config.vocab_size * 4  # at least the logits


def test_training_step_heads_run_on_supervised_rows_only(tok):
    """The chunked loss forms logits only where the next token is supervised; the analytic
    count with head_tokens matches the profiler, and fewer targets mean fewer FLOPs."""
    from study.train import LoopSettings, loss_step

    torch.manual_seed(0)
    model = build_model(MODEL, tok, attn_implementation="eager")
    teacher = build_model(MODEL, tok, attn_implementation="eager").eval().requires_grad_(False)
    ids = torch.randint(0, model.config.vocab_size, (4, 64))
    s = LoopSettings(steps=1, batch_size=4, lr=1e-3, alpha=0.5)
    measured = {}
    for name, supervised_from in [("all", 1), ("tail", 48)]:
        labels = ids.clone()
        labels[:, :supervised_from] = -100
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        n = int((labels[:, 1:] != -100).sum())
        out = profile_step(lambda _: loss_step(model, teacher, batch, s, n, torch.device("cpu")), 1,
                           torch.device("cpu"))
        model.zero_grad(set_to_none=True)
        expected = (analytic_flops(model.config, [(4, 64)], head_tokens=n)
                    + analytic_flops(teacher.config, [(4, 64)], backward=False, head_tokens=n))
        assert out["flops"] == pytest.approx(expected, rel=1e-3), name
        assert out["uncounted_ops"] == [], name
        measured[name] = out["flops"]
    assert measured["tail"] < measured["all"]


def test_profiler_counts_no_flops_for_in_place_addmm():
    """The blind spot that hid a third of the output head's backward: why the chunked loss
    accumulates with ``+= a @ b`` and ``profile_step`` reports in-place matmuls."""
    a, b = torch.randn(64, 32), torch.randn(32, 48)
    acc = torch.zeros(64, 48)
    in_place = profile_step(lambda _: acc.addmm_(a, b), 1, torch.device("cpu"))
    out_of_place = profile_step(lambda _: acc.add_(a @ b), 1, torch.device("cpu"))
    assert in_place["flops"] == 0 and in_place["uncounted_ops"] == ["aten::addmm_"]
    assert out_of_place["flops"] == 2 * 64 * 32 * 48 and out_of_place["uncounted_ops"] == []


@pytest.fixture(scope="module")
def steps(tok):
    from study.data.pipeline import encode, prepare
    from study.data.synthetic import CorpusConfig, make_splits
    from study.run import loop_settings
    from study.train import batch_schedule
    from tiny import tiny_config

    cfg = tiny_config("unused", batch_size=4, alpha=0.0)
    encoded = encode(make_splits(CorpusConfig(train_examples=16, val_examples=0, test_examples=0))["train"], tok)
    items = prepare(encoded, cfg)[0]
    s = loop_settings(cfg, len(items))
    return items, batch_schedule(len(items), s.batch_size, s.steps, s.seed), s


def _rows(items, vocab):
    """The items with exact teacher rows attached, as a cached run's items carry them."""
    from dataclasses import replace

    g = torch.Generator().manual_seed(0)
    return [replace(it, teacher={"logprobs": torch.randn(len(it.ids), vocab, generator=g).log_softmax(-1)})
            for it in items]


def test_measure_counts_the_step_as_training_runs_it(tok, steps):
    """The CPU peak covers the collated batch with its cached teacher rows and AdamW's state
    (allocated by the first step), and measuring leaves the student as it was."""
    from study.run import measure
    from study.train import micro_batches

    items, schedule, s = steps
    torch.manual_seed(0)
    model = build_model(MODEL, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    gc.collect()
    optimisers = sum(isinstance(o, torch.optim.Optimizer) for o in gc.get_objects())
    gc.disable()  # only measure's own collection may free its throwaway optimiser
    try:
        plain = measure(model, None, items, schedule, [0], s, tok.pad_token_id, torch.device("cpu"))
        assert sum(isinstance(o, torch.optim.Optimizer) for o in gc.get_objects()) <= optimisers
    finally:
        gc.enable()
    cached = measure(model, None, _rows(items, model.config.vocab_size), schedule, [0], s, tok.pad_token_id,
                     torch.device("cpu"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.lm_head.weight.grad is None
    assert plain["step_peak_bytes"] > 3 * params  # gradients and AdamW's two moments
    rows = micro_batches(_rows(items, model.config.vocab_size), schedule[0], s.grad_accum,
                         tok.pad_token_id)[0]["teacher_logprobs"]
    assert cached["step_peak_bytes"] - plain["step_peak_bytes"] >= rows.numel() * rows.element_size()


def test_profiled_steps_include_the_largest():
    from study.run import profiled_steps

    assert profiled_steps([5, 9, 7, 3], 2) == [0, 1]
    assert profiled_steps([5, 6, 7, 30, 3], 3) == [0, 1, 3]
    assert profiled_steps([5, 6, 30], 5) == [0, 1, 2]
    assert profiled_steps([5, 6, 30], 1) == [2]
