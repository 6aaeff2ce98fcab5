"""The teacher-output cache: one pass over full sequences serves every prefix, condition and
mask with the live teacher's loss and gradients; windows get their own entry; keys invalidate."""

import copy
from dataclasses import replace

import pytest
import torch

from study import teacher_cache
from study.data.pipeline import collate, encode, prepare
from study.data.synthetic import CorpusConfig, make_splits
from study.models import build_model
from study.sections import CONDITIONS
from study.train import LoopSettings, loss_step
from tiny import TINY_MODEL, tiny_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def world(tokenizer, tmp_path_factory):
    """Random tiny teacher and student in float64 (so tolerances are tight), 12 sequences."""
    encoded = encode(make_splits(CorpusConfig(train_examples=12, val_examples=0, test_examples=0))["train"],
                     tokenizer)
    torch.manual_seed(0)
    teacher = build_model(TINY_MODEL, tokenizer).double().eval().requires_grad_(False)
    student = build_model(TINY_MODEL, tokenizer).double()
    return tokenizer, encoded, teacher, student, tmp_path_factory.mktemp("tc")


def _cache(world, cfg):
    tok, encoded, teacher, _, cache_dir = world
    cfg = replace(cfg, cache_dir=str(cache_dir))
    return teacher_cache.get_or_build(cfg, teacher, "teacher-test", tok, "tok-test", encoded, CPU)


def _loss_and_grads(world, items, teacher):
    tok, _, _, student, _ = world
    model = copy.deepcopy(student)
    batch = collate(items, tok.pad_token_id)
    n = int((batch["labels"][:, 1:] != -100).sum())
    s = LoopSettings(steps=1, batch_size=len(items), lr=1e-3, alpha=0.5)
    out = loss_step(model, teacher, batch, s, n, CPU)
    return out, [p.grad for p in model.parameters()]


def _check_same(world, cfg, cache):
    tok, encoded, teacher, _, _ = world
    items, _ = prepare(encoded, cfg)
    live, live_g = _loss_and_grads(world, items, teacher)
    cached, cached_g = _loss_and_grads(world, cache.attach(items), None)
    # Rows are stored in float32, so agreement is to float32 rounding of the log-probs.
    for a, b in [(cached.total, live.total), (cached.kd, live.kd), (cached.ce, live.ce)]:
        assert a.item() == pytest.approx(b.item(), rel=1e-6, abs=1e-7)
    for a, b in zip(cached_g, live_g):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    return live


@pytest.mark.parametrize("kw", [
    {"lsp": 1.0}, {"lsp": 0.5}, {"lsp": 0.3, "cut_after_think": True}, {"cut_after_think": True},
    {"random_mask": 0.5}, *({"condition": c} for c in CONDITIONS),
])
def test_exact_cache_matches_live_teacher(world, kw):
    cfg = tiny_config(world[4], **kw)
    cache, _ = _cache(world, cfg)
    assert cache.meta["mode"] == "exact" and cache.meta["examples"] == 12
    live = _check_same(world, cfg, cache)
    assert live.kd.item() > 0  # a real divergence is being compared


def test_one_full_sequence_entry_serves_every_prefix_run(world):
    first, built = _cache(world, tiny_config(world[4], lsp=1.0))
    again, built_again = _cache(world, tiny_config(world[4], lsp=0.2, condition="CoT", random_mask=0.3, seed=7))
    assert again.path == first.path and not built_again


# Middle and right windows start the sequence elsewhere; a lead span that keeps its ending
# joins the ending to the cut: each is the teacher in another context.
@pytest.mark.parametrize("view", [{"window": "middle"}, {"window": "right"}, {"keep_answer": True}],
                         ids=["middle", "right", "keep_answer"])
def test_windows_use_their_own_teacher_pass(world, view):
    cfg = tiny_config(world[4], lsp=0.5, **view)
    cache, _ = _cache(world, cfg)
    full, _ = _cache(world, tiny_config(world[4]))
    assert cache.path != full.path
    _check_same(world, cfg, cache)
    # The full-sequence rows would be the teacher's outputs in another context: refused.
    items, _ = prepare(world[1], cfg)
    with pytest.raises(ValueError, match="not a prefix"):
        full.attach(items)


def test_a_lead_span_that_keeps_its_ending_at_lsp_1_is_the_sequence(world):
    assert teacher_cache.view_of(tiny_config(world[4], keep_answer=True)) is None


def test_key_changes_with_what_determines_the_outputs(world):
    cache_dir = world[4]
    base = tiny_config(cache_dir)
    key = teacher_cache.cache_key(base, "weights-a", "tok", "exact", 0, 2)
    assert key == teacher_cache.cache_key(replace(base, lsp=0.3, seed=9, condition="CoT"), "weights-a", "tok",
                                          "exact", 0, 2)
    others = [
        teacher_cache.cache_key(base, "weights-b", "tok", "exact", 0, 2),  # the teacher's weights
        teacher_cache.cache_key(base, "weights-a", "tok2", "exact", 0, 2),
        teacher_cache.cache_key(replace(base, corpus=replace(base.corpus, seed=5)), "weights-a", "tok", "exact", 0, 2),
        teacher_cache.cache_key(base, "weights-a", "tok", "topk", 8, 2),
        teacher_cache.cache_key(replace(base, window="right", lsp=0.5), "weights-a", "tok", "exact", 0, 2),
        teacher_cache.cache_key(replace(base, attn_implementation="sdpa"), "weights-a", "tok", "exact", 0, 2),
        teacher_cache.cache_key(base, "weights-a", "tok", "exact", 0, 1),  # threads of its forward
    ]
    assert key not in others and len(set(others)) == len(others)


def test_topk_cache_stores_k_plus_tail_and_approaches_exact(world):
    cfg = tiny_config(world[4], lsp=0.6)
    exact, _ = _cache(world, cfg)
    items, _ = prepare(world[1], cfg)
    live, _ = _loss_and_grads(world, exact.attach(items), None)
    errors = []
    for k in (2, 16, 128):
        topk, _ = _cache(world, replace(cfg, teacher_cache_mode="topk", teacher_cache_topk=k))
        assert topk.meta["bytes_per_token"] == pytest.approx(4 * k + 4 * (k + 1), rel=0.01)
        out, _ = _loss_and_grads(world, topk.attach(items), None)
        errors.append(abs(out.kd.item() - live.kd.item()))
    assert errors[-1] < errors[0]
    assert exact.meta["bytes_per_token"] == pytest.approx(4 * world[2].config.vocab_size, rel=0.01)


def test_cache_refuses_changed_sequences(world):
    cache, _ = _cache(world, tiny_config(world[4]))
    enc = world[1][0]
    with pytest.raises(ValueError, match="delete that folder"):
        cache.rows(enc.id, [enc.ids[0] + 1, *enc.ids[1:]])
    with pytest.raises(KeyError, match="not in the teacher cache"):
        cache.rows("no-such-example", enc.ids)


def test_artefact_built_twice_at_once_keeps_the_first(tmp_path):
    """Two processes building the same artefact: the second rename fails, and it uses the
    first one's folder instead of failing (or leaving its temporary folder behind)."""
    from study.models import atomic_dir

    final = tmp_path / "teacher_outputs-x"

    def build(tmp):
        (tmp / "meta.json").write_text("second")
        final.mkdir()  # meanwhile the other process finished
        (final / "meta.json").write_text("first")

    assert atomic_dir(final, build) == final
    assert (final / "meta.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["teacher_outputs-x"]

    def broken(tmp):
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        atomic_dir(tmp_path / "other", broken)
    assert not (tmp_path / "other").exists() and len(list(tmp_path.iterdir())) == 1
