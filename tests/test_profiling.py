"""FLOPs from torch.profiler against the analytic count, and the CPU peak-memory measure."""

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
    measured = _measure(model, 4, seq)["flops"]
    assert measured == pytest.approx(analytic_flops(model.config, [(4, seq)]), rel=0.05)


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
        assert out["flops"] == pytest.approx(expected, rel=0.05), name
        measured[name] = out["flops"]
    assert measured["tail"] < measured["all"]
