"""Tests for study.config: YAML loading, overrides, validation and run ids."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path

import pytest

from study.config import (
    CorpusConfig,
    ModelConfig,
    PretrainConfig,
    RunConfig,
    TokenizerConfig,
    config_from_dict,
    config_hash,
    default_base,
    default_teacher,
    load_config,
    parse_override,
)
from study.identity import run_id as _run_id

YAML = """\
condition: CoT+A
corpus:
  layout: late
teacher:
  steps: 7
"""


@pytest.fixture
def yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML)
    return path


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- loading -------------------------------------------------------------------------------


def test_load_config_with_overrides_gives_typed_values(yaml_file):
    cfg = load_config(yaml_file, ["lsp=0.5", "corpus.max_ops=4", "cut_after_think=true"])
    assert isinstance(cfg, RunConfig)
    assert cfg.condition == "CoT+A"
    assert cfg.lsp == 0.5 and isinstance(cfg.lsp, float)
    assert cfg.cut_after_think is True
    assert isinstance(cfg.corpus, CorpusConfig)
    assert cfg.corpus.layout == "late"
    assert cfg.corpus.max_ops == 4 and isinstance(cfg.corpus.max_ops, int)
    # Unmentioned nested fields keep their defaults.
    assert cfg.corpus.min_ops == 2
    assert cfg.corpus.train_examples == 3200
    # A partial nested mapping merges into the non-trivial default teacher.
    assert cfg.teacher.steps == 7
    assert cfg.teacher.model.hidden_size == 128
    assert cfg.teacher.model.num_hidden_layers == 4
    assert cfg.base == default_base()
    assert cfg.window == "left"


def test_override_wins_over_file(yaml_file):
    cfg = load_config(yaml_file, ["corpus.layout=early", "condition=A"])
    assert cfg.corpus.layout == "early"
    assert cfg.condition == "A"


def test_later_override_wins(yaml_file):
    assert load_config(yaml_file, ["lsp=0.5", "lsp=0.25"]).lsp == 0.25


def test_deep_override_keeps_siblings(yaml_file):
    cfg = load_config(yaml_file, ["teacher.model.num_hidden_layers=2"])
    assert cfg.teacher.model.num_hidden_layers == 2
    assert cfg.teacher.model.hidden_size == 128  # default_teacher's, not ModelConfig's 64
    assert cfg.teacher.steps == 7


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == RunConfig()


def test_config_from_dict_defaults():
    cfg = config_from_dict({})
    assert cfg == RunConfig()
    assert cfg.teacher == default_teacher()
    assert cfg.base == default_base()


def test_parse_override():
    assert parse_override("lsp=0.5") == (["lsp"], 0.5)
    assert parse_override("corpus.layout=late") == (["corpus", "layout"], "late")
    assert parse_override("cut_after_think=true") == (["cut_after_think"], True)
    assert parse_override("x=[1, 2]") == (["x"], [1, 2])
    assert parse_override("a=b=c") == (["a"], "b=c")  # only the first '=' splits


# --- run ids (both directions for every field: tests/test_identity.py) ----------------------


def run_id(cfg):
    return _run_id(cfg, {"teacher": "t" * 64, "base": "b" * 64})


def test_run_id_stable(yaml_file):
    a = load_config(yaml_file, ["lsp=0.5"])
    b = load_config(yaml_file, ["lsp=0.5"])
    assert run_id(a) == run_id(b)
    assert len(run_id(a)) == 12
    assert run_id(a) == run_id(dataclasses.replace(a))


def test_run_id_changes_with_semantic_fields(yaml_file):
    base = load_config(yaml_file, ["lsp=0.5"])
    assert run_id(load_config(yaml_file, ["lsp=0.25"])) != run_id(base)
    assert run_id(load_config(yaml_file, ["lsp=0.5", "corpus.seed=7"])) != run_id(base)
    assert run_id(load_config(yaml_file, ["lsp=0.5", "teacher.model.hidden_size=64"])) != run_id(base)


def test_run_id_ignores_device_and_cache_dir(yaml_file):
    base = load_config(yaml_file, ["lsp=0.5"])
    other = load_config(yaml_file, ["lsp=0.5", "device=cpu", "cache_dir=/elsewhere"])
    assert (other.device, other.cache_dir) == ("cpu", "/elsewhere")
    assert run_id(other) == run_id(base)


def test_config_hash_order_independent():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        # An unknown key names itself and lists the valid ones, at any depth, in the YAML
        # file or in a --set override.
        ("lps: 0.5\n", [], ["lps", "lsp", "condition"]),
        (YAML, ["conditon=A"], ["conditon", "condition"]),
        ("corpus:\n  foo: 1\n", [], ["corpus.foo", "under corpus", "layout", "max_ops"]),
        (YAML, ["teacher.model.width=3"], ["teacher.model.width", "hidden_size"]),
    ],
)
def test_unknown_key_is_named_with_the_valid_ones(tmp_path, text, overrides, expected):
    with pytest.raises(ValueError) as err:
        load_config(write(tmp_path, text), overrides)
    msg = str(err.value)
    for part in expected:
        assert part in msg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("condition=B", ["'B'", "P+CoT+A", "CoT+A"]),
        ("loss=mse", ["'mse'", "forward_kl"]),
        ("lsp=0", ["(0, 1]", "0"]),
        ("lsp=1.5", ["(0, 1]", "1.5"]),
        ("window=top", ["'top'", "left", "middle", "right"]),
        ("random_mask=1", ["random_mask", "[0, 1)"]),
        ("alpha=1.5", ["alpha", "[0, 1]"]),
        ("init=random", ["'random'", "base", "scratch"]),
        ("batch_size=10", ["batch_size 10", "grad_accum 3"]),
        ("eval_examples=500", ["eval_examples 500", "test_examples 200"]),
        ("corpus.layout=middle", ["'middle'", "early", "late"]),
        ("attn_implementation=flash", ["eager", "sdpa"]),
    ],
)
def test_invalid_values_name_problem_and_options(yaml_file, override, expected):
    overrides = [override] + (["grad_accum=3"] if override.startswith("batch_size") else [])
    with pytest.raises(ValueError) as err:
        load_config(yaml_file, overrides)
    msg = str(err.value)
    for fragment in expected:
        assert fragment in msg, (fragment, msg)


def test_batch_size_multiple_of_grad_accum_ok(yaml_file):
    cfg = load_config(yaml_file, ["batch_size=12", "grad_accum=3"])
    assert (cfg.batch_size, cfg.grad_accum) == (12, 3)


def test_malformed_yaml_file(tmp_path):
    path = write(tmp_path, "lsp: [0.5\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "not valid YAML" in str(err.value)


def test_override_without_equals(yaml_file):
    with pytest.raises(ValueError) as err:
        load_config(yaml_file, ["lsp0.5"])
    msg = str(err.value)
    assert "'lsp0.5'" in msg and "key=value" in msg


def test_override_with_malformed_yaml_value(yaml_file):
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(yaml_file, ["lsp=[0.5"])


def test_override_into_scalar_rejected(yaml_file):
    with pytest.raises(ValueError, match="lsp is not a mapping"):
        load_config(yaml_file, ["lsp=0.5", "lsp.x=1"])


def test_dotted_override_into_unset_scalar_rejected(yaml_file):
    with pytest.raises(ValueError, match="lsp"):
        load_config(yaml_file, ["lsp.x=1"])


def test_wrong_type_value_rejected_with_name(yaml_file):
    with pytest.raises(ValueError, match="lsp"):
        load_config(yaml_file, ["lsp=abc"])


def test_nested_section_must_be_mapping(tmp_path):
    with pytest.raises(ValueError, match="corpus must be a mapping"):
        load_config(write(tmp_path, "corpus: late\n"))


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ValueError, match="must be a mapping"):
        load_config(write(tmp_path, "- lsp\n- 0.5\n"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_exponent_without_dot_is_a_float(yaml_file):
    # YAML 1.1 reads "8e-3" as a string; a researcher typing --set lr=8e-3 means a float.
    assert load_config(yaml_file, ["lr=8e-3"]).lr == pytest.approx(0.008)
    with pytest.raises(ValueError, match="lr must be a number"):
        load_config(yaml_file, ["lr=fast"])


# --- canonical types and validation of every field ---------------------------------------------


def test_int_for_a_float_field_is_canonicalised():
    """Run ids hash asdict(cfg): lsp=1 and lsp=1.0 must be one config, one hash."""
    a, b = RunConfig(lsp=1, lr=1, warmup=0), RunConfig(lsp=1.0, lr=1.0, warmup=0.0)
    assert a == b and isinstance(a.lsp, float) and isinstance(a.lr, float)
    assert dataclasses.asdict(a) == dataclasses.asdict(b)
    assert json.dumps(dataclasses.asdict(a)) == json.dumps(dataclasses.asdict(b))
    assert config_hash(a) == config_hash(b)
    assert config_from_dict({"lsp": 1}) == RunConfig() and config_from_dict({"lsp": 1}).lsp.is_integer()
    assert PretrainConfig(lr=1) == PretrainConfig(lr=1.0)
    assert json.dumps(dataclasses.asdict(load_config_text("lsp: 1\nalpha: 0\n"))) == \
        json.dumps(dataclasses.asdict(RunConfig(alpha=0.0)))


def load_config_text(text):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(text)
        return load_config(path)


@pytest.mark.parametrize("kwargs, message", [
    ({"lsp": "0.5"}, "lsp must be a number, got '0.5' (str)"),
    ({"lsp": True}, "lsp must be a number, got True (bool)"),
    ({"epochs": True}, "epochs must be an integer, got True (bool)"),
    ({"batch_size": 2.0}, "batch_size must be an integer, got 2.0 (float)"),
    ({"cut_after_think": 1}, "cut_after_think must be true or false, got 1 (int)"),
    ({"condition": 5}, "condition must be a string, got 5 (int)"),
    ({"corpus": {"layout": "late"}}, "corpus must be a CorpusConfig"),
    ({"lr": float("nan")}, "lr must be a finite number"),
])
def test_python_construction_is_type_checked(kwargs, message):
    with pytest.raises(ValueError) as err:
        RunConfig(**kwargs)
    assert message in str(err.value)


def _wrong_value(kind):
    if isinstance(kind, types.UnionType):  # float | None: wrong for its non-None type
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    return {int: "x", float: "x", str: 5, bool: 1}.get(kind, 5)


@pytest.mark.parametrize("cls", [RunConfig, PretrainConfig, ModelConfig, TokenizerConfig, CorpusConfig])
def test_every_field_is_type_checked_and_named(cls):
    """Each field of each config (fields added later included) rejects a value of the wrong
    type with a message that starts with the field's name."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        with pytest.raises(ValueError) as err:
            cls(**{f.name: _wrong_value(hints[f.name])})
        assert str(err.value).startswith(f"{f.name} must be"), (f.name, str(err.value))


@pytest.mark.parametrize("cls", [RunConfig, PretrainConfig, ModelConfig, TokenizerConfig, CorpusConfig])
def test_every_integer_field_has_a_lower_bound(cls):
    """No integer field of a config takes -1 (a size, a count, a seed): each says its range."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if hints[f.name] is int:
            with pytest.raises(ValueError) as err:
                cls(**{f.name: -1})
            assert f.name in str(err.value) and "-1" in str(err.value), (f.name, str(err.value))


def test_nested_errors_name_the_full_path(yaml_file):
    for override, path in [("teacher.steps=0", "teacher.steps must be an integer >= 1, got 0"),
                           ("base.model.head_dim=3", "base.model.head_dim must be an even integer"),
                           ("corpus.train_examples=0", "corpus.train_examples must be an integer >= 1"),
                           ("tokenizer.seed=-2", "tokenizer.seed must be an integer in [0, 2**32 - 1]")]:
        with pytest.raises(ValueError) as err:
            load_config(yaml_file, [override])
        assert str(err.value).startswith(path), (override, str(err.value))


def test_a_string_of_overrides_is_rejected(yaml_file):
    with pytest.raises(ValueError, match=r"overrides must be a list of 'key=value' strings.*\['lsp=0.5'\]"):
        load_config(yaml_file, "lsp=0.5")
    with pytest.raises(ValueError, match="overrides must be a list"):
        config_from_dict({}, "lsp=0.5")
    with pytest.raises(ValueError, match="an override must be a 'key=value' string"):
        config_from_dict({}, [("lsp", 0.5)])


@pytest.mark.parametrize("text, kind", [("- lsp\n- 0.5\n", "list"), ("hello\n", "str"), ("3\n", "int")])
def test_a_config_file_that_is_not_a_mapping_names_the_file(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: a run config must be a mapping") and kind in str(err.value)


def test_yaml_errors_are_one_line(tmp_path, yaml_file):
    for call in (lambda: load_config(write(tmp_path, "lsp: [0.5\nx: {\n")), lambda: load_config(yaml_file, ["lsp=[0.5"])):
        with pytest.raises(ValueError) as err:
            call()
        assert "\n" not in str(err.value) and "line" in str(err.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices(device):
    assert RunConfig(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "mps", ""])
def test_invalid_devices(device):
    with pytest.raises(ValueError, match=r"device must be one of auto, cpu, cuda, cuda:N"):
        RunConfig(device=device)


def test_pretraining_corpus_check_accepts_what_can_be_built():
    """RunConfig accepts a teacher or base student exactly when its pretraining corpus can be
    built (around the 300 one-operation problems that exist mod 10)."""
    from study.config import pretrain_corpus

    for train in (299, 300, 301, 20000):
        for p in (dataclasses.replace(default_base(), train_examples=train, batch_size=8),
                  dataclasses.replace(default_teacher(), train_examples=train, batch_size=8)):
            try:
                pretrain_corpus(CorpusConfig(), p)
                builds = True
            except ValueError:
                builds = False
            role = "base" if p.one_op else "teacher"
            try:
                RunConfig(**{role: p})
                accepted = True
            except ValueError as e:
                accepted = False
                assert f"{role}.train_examples {train}" in str(e)
            assert accepted == builds, (role, train)
    # A scratch student never trains the base, so its pretraining corpus is not checked.
    big = dataclasses.replace(default_base(), train_examples=1000)
    assert RunConfig(init="scratch", base=big).base.train_examples == 1000


def test_shipped_configs_are_valid():
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        assert isinstance(load_config(path), RunConfig)
