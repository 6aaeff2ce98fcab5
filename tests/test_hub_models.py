"""teacher.model.pretrained and base.model.pretrained (issue 12, item 2): tiny randomly initialised
Qwen3 checkpoints saved to local folders stand for the hub's, with the Qwen3-like tokenizer of
tests/test_hub_corpora.py and heads padded past it to different sizes (the teacher's by 7 rows,
the student's by 3; Qwen3's real heads carry 267). Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from study import records
from study.config import config_from_dict
from study.losses import IGNORE_INDEX, distillation_loss
from study.models import check_heads, check_tokenizers, load_pretrained, load_pretrained_tokenizer, run_tokenizer
from study.run import run
from study.train import LoopSettings, loss_step, output_head, teacher_rows
from test_hub_corpora import FIXTURES, no_download, qwen3_like_tokenizer  # noqa: F401 (autouse fixture)

BENCH_DIR = str(Path(__file__).parent / "fixtures" / "benchmarks")
TEACHER_PAD, STUDENT_PAD = 7, 3


def tiny_qwen3(tok, pad_rows: int, seed: int, tied: bool, layers: int = 1) -> Qwen3ForCausalLM:
    """A random Qwen3 whose head has ``pad_rows`` rows past the tokenizer, set large so that a
    loss that let them in would differ visibly (real padded rows are small, not zero)."""
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tok) + pad_rows, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         max_position_embeddings=512, tie_word_embeddings=tied,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        model.get_output_embeddings().weight[len(tok):] = 3.0
    return model


@pytest.fixture(scope="module")
def tok():
    return qwen3_like_tokenizer()


@pytest.fixture(scope="module")
def checkpoints(tok, tmp_path_factory):
    """Local "hub" folders: teacher (untied, 2 layers, head + 7) and base student (tied, head + 3)."""
    root = tmp_path_factory.mktemp("hub_models")
    for name, pad, seed, tied, layers in (("teacher", TEACHER_PAD, 1, False, 2), ("base", STUDENT_PAD, 2, True, 1)):
        tiny_qwen3(tok, pad, seed, tied, layers).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def hub_run_cfg(checkpoints, cache_dir, **top):
    data = {"corpus": {"source": "bespoke_stratos", "path": str(FIXTURES / "bespoke_stratos"), "train_examples": 6,
                       "val_examples": 1},
            "teacher": {"model": {"pretrained": str(checkpoints / "teacher")}},
            "base": {"model": {"pretrained": str(checkpoints / "base")}},
            "benchmarks": ["aime24"], "benchmark_dir": BENCH_DIR, "samples": 2, "eval_temperature": 0.6, "max_gen_toks": 8,
            "eval_batch_size": 4, "batch_size": 3, "epochs": 1, "profile_steps": 1, "cache_dir": str(cache_dir)}
    data.update(top)
    return config_from_dict(data)


def batch(tok, n: int = 2, length: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, len(tok), (n, length), generator=g)
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


# --- padded heads --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "tvd"])
def test_padded_slots_get_no_mass_on_either_side(tok, kind):
    """The training loss (chunked, from hidden states, live teacher) equals the plain loss on the
    real-token slice of both models' logits; with the padded slots in, it would not."""
    n = len(tok)
    teacher, student = tiny_qwen3(tok, TEACHER_PAD, 1, False), tiny_qwen3(tok, STUDENT_PAD, 2, True)
    b = batch(tok)
    s = LoopSettings(steps=1, batch_size=2, lr=1e-3, alpha=0.5, loss=kind, vocab=n)
    parts = loss_step(student, teacher, b, s, num_supervised=None, device=torch.device("cpu"))
    with torch.no_grad():
        t_logits = teacher(input_ids=b["input_ids"]).logits
        s_logits = student(input_ids=b["input_ids"]).logits
    ref = distillation_loss(s_logits[..., :n].double(), b["labels"], t_logits[..., :n].double(), alpha=0.5, kind=kind)
    assert parts.ce.item() == pytest.approx(ref.ce.item(), rel=1e-5)
    assert parts.kd.item() == pytest.approx(ref.kd.item(), rel=1e-5, abs=1e-7)
    # Control: over the padded heads (cut to a common size) the slots would take mass.
    common = n + min(TEACHER_PAD, STUDENT_PAD)
    padded = distillation_loss(s_logits[..., :common].double(), b["labels"], t_logits[..., :common].double(),
                               alpha=0.5, kind=kind)
    assert abs(padded.ce.item() - ref.ce.item()) > 1e-3
    # The padded rows of the student's head learn nothing (the tied embedding rows neither).
    grad = student.get_output_embeddings().weight.grad
    assert grad[n:].abs().max().item() == 0.0 and grad[:n].abs().max().item() > 0


def test_teacher_rows_and_cache_cover_the_real_tokens_only(tok, tmp_path):
    from study.teacher_cache import TeacherCache, build

    n = len(tok)
    teacher = tiny_qwen3(tok, TEACHER_PAD, 1, False)
    b = batch(tok, n=1)
    mask = b["labels"][:, 1:] != IGNORE_INDEX
    rows = teacher_rows(teacher, b, mask, vocab=n)
    assert rows.weight.shape[0] == n and output_head(teacher).shape[0] == n + TEACHER_PAD
    build(teacher, [("x", b["input_ids"][0].tolist())], "exact", 0, tmp_path, tok.pad_token_id, torch.device("cpu"),
          vocab=n)
    cache = TeacherCache.open(tmp_path)
    lp = cache.rows("x", b["input_ids"][0].tolist())["logprobs"]
    assert lp.shape == (12, n) and cache.meta["vocab_size"] == n
    with torch.no_grad():
        want = torch.log_softmax(teacher(input_ids=b["input_ids"]).logits[0, :, :n].float(), -1)
    torch.testing.assert_close(lp, want)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(12))


def test_a_head_smaller_than_the_tokenizer_is_refused(tok):
    small = tiny_qwen3(tok, 0, 3, True)
    small.resize_token_embeddings(len(tok) - 2)
    with pytest.raises(ValueError, match=r"student vocabulary \d+ is smaller than the tokenizer's"):
        check_heads(tiny_qwen3(tok, TEACHER_PAD, 1, False), small, len(tok))


# --- one tokenizer and chat template ----------------------------------------------------------


def swapped_ids(tok, a: str, b: str) -> PreTrainedTokenizerFast:
    """``tok`` with the ids of tokens ``a`` and ``b`` exchanged: same size, another map."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=tok.eos_token,
                                   pad_token=tok.pad_token, chat_template=tok.chat_template)


def test_equal_sizes_with_another_token_to_id_map_are_refused(tok):
    other = swapped_ids(tok, "a", "b")
    assert len(other) == len(tok) and other.get_vocab() != tok.get_vocab()
    with pytest.raises(ValueError, match=r"tokenizers differ .*token 'a' is \d+ in the teacher's and \d+ in the student's"):
        check_tokenizers(tok, other)
    check_tokenizers(tok, qwen3_like_tokenizer())  # the same tokenizer built again passes


def test_another_chat_template_is_refused(tok):
    other = qwen3_like_tokenizer()
    other.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    with pytest.raises(ValueError, match="chat templates differ"):
        check_tokenizers(tok, other)


def test_a_run_with_another_teacher_template_stops_before_any_model(tok, checkpoints, tmp_path):
    other = qwen3_like_tokenizer()
    other.chat_template = tok.chat_template + "{{- '' -}}"
    folder = tmp_path / "teacher"
    tiny_qwen3(tok, TEACHER_PAD, 1, False).save_pretrained(folder)
    other.save_pretrained(folder)
    cfg = hub_run_cfg(checkpoints, tmp_path / "cache", teacher={"model": {"pretrained": str(folder)}})
    with pytest.raises(ValueError, match="chat templates differ"):
        run(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


# --- loading -------------------------------------------------------------------------------------


def test_local_checkpoint_loads_in_float32_on_cpu_with_no_resolved_revision(checkpoints):
    cfg = config_from_dict({"corpus": {"source": "bespoke_stratos", "path": "x", "train_examples": 6},
                            "benchmarks": ["aime24"], "batch_size": 2,
                            "teacher": {"model": {"pretrained": str(checkpoints / "teacher")}},
                            "base": {"model": {"pretrained": str(checkpoints / "base")}}})
    model, source = load_pretrained(cfg.teacher.model, "eager", torch.device("cpu"), frozen=True)
    assert next(model.parameters()).dtype == torch.float32  # bfloat16 on CUDA only
    assert source == {"pretrained": str(checkpoints / "teacher"), "revision": None, "resolved_revision": None,
                      "dtype": "float32"}
    tokenizer, key = run_tokenizer(cfg)  # the student's
    assert tokenizer.get_vocab() == load_pretrained_tokenizer(cfg.teacher.model, "teacher").get_vocab()
    assert key.startswith("tokenizer-") and run_tokenizer(cfg)[1] == key


# --- config (identity: tests/test_identity.py) -------------------------------------------------------------------------

HUB = {"corpus": {"source": "bespoke_stratos", "path": "/data/bs", "train_examples": 6}, "benchmarks": ["aime24"],
       "batch_size": 2,
       "teacher": {"model": {"pretrained": "Qwen/Qwen3-8B"}}, "base": {"model": {"pretrained": "Qwen/Qwen3-1.7B-Base"}}}


@pytest.mark.parametrize("data, message", [
    ({**HUB, "base": {}}, "teacher.model.pretrained is set but base.model.pretrained is not"),
    ({**HUB, "teacher": {}}, "base.model.pretrained is set but teacher.model.pretrained is not"),
    ({k: v for k, v in HUB.items() if k not in ("corpus", "benchmarks", "batch_size")}, "need a hub corpus"),
    ({**HUB, "init": "scratch"}, "init 'scratch' with base.model.pretrained"),
    ({"teacher": {"model": {"revision": "main"}}}, "teacher.model.revision 'main' only applies to a pretrained model"),
])
def test_config_validation(data, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(data)


# --- one run, end to end -------------------------------------------------------------------------


def test_hub_corpus_run_to_a_record(tok, checkpoints, tmp_path):
    """Bespoke-Stratos fixture, local teacher and base folders, aime24 fixture: the record names
    the checkpoints and the template, and its headline quality is the benchmarks'."""
    cfg = hub_run_cfg(checkpoints, tmp_path / "cache")
    rec = run(cfg, tmp_path / "out", progress=False)
    assert rec["quality"] == rec["benchmarks"] and set(rec["quality"]) == {"aime24"}
    q = rec["quality"]["aime24"]
    assert q["n_problems"] == 3 and q["samples"] == 2 and 0 <= q["pass@1"] <= 1
    assert rec["compute"]["eval_seconds"] == 0.0  # no synthetic test split was scored
    assert not (tmp_path / "out" / f"{rec['run_id']}.lm_eval.json").exists()
    assert (tmp_path / "out" / f"{rec['run_id']}{records.BENCHMARKS_RAW}").exists()
    t, s = rec["teacher"], rec["student"]
    assert (t["id"], t["pretrained"], t["revision"], t["resolved_revision"], t["dtype"], t["vocab_rows"]) == (
        str(checkpoints / "teacher"), str(checkpoints / "teacher"), None, None, "float32", len(tok) + TEACHER_PAD)
    assert t["accuracy"] is None and t["quality"] is None and t["cached"]
    assert t["cache"]["vocab_size"] == len(tok) and t["cache"]["mode"] == "exact"
    assert (s["base_pretrained"], s["base_revision"], s["base_resolved_revision"], s["base_vocab_rows"]) == (
        str(checkpoints / "base"), None, None, len(tok) + STUDENT_PAD)
    assert s["base_accuracy"] is None and s["weights_sha256"] != s["base_weights_sha256"]  # it trained
    template = hashlib.sha256(tok.chat_template.encode()).hexdigest()
    assert rec["data"]["tokenizer"]["chat_template_sha256"] == template
    assert rec["data"]["tokenizer"]["size"] == len(tok) and rec["data"]["tokenizer"]["source"] == str(checkpoints / "base")
    assert rec["data"]["examples"] == 6 and rec["data"]["rejected"] == {"no_cot": 1}
    assert rec["data"]["corpus"]["location"] == str(FIXTURES / "bespoke_stratos")
    assert len(rec["curve"]) == 2 and all(c["kd"] > 0 for c in rec["curve"])
    df = records.load(tmp_path / "out")
    assert list(df["run_id"]) == [rec["run_id"]] and df["quality.aime24.pass@1"].iloc[0] == q["pass@1"]
