"""Deterministic and released artefacts (tokenizer, teacher, base student): the same config
trains the same weights in any process, a release is used instead of training and checked
file by file, and `study pretrain --force` rebuilds."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml

from tiny import tiny_config

from study import release
from study.cli import main
from study.config import PretrainConfig, load_config
from study.identity import artefact_config
from study.pretrain import (META, _check_meta, artefact_weights, artefacts_of, get_base, get_teacher,
                            pretrain_artefacts, study_configs)

ROOT = Path(__file__).resolve().parents[1]


def _yaml(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(json.loads(json.dumps(asdict(cfg)))))  # tuples as lists
    return path


def _weights(cache: Path) -> dict:
    return {p.name: json.loads((p / META).read_text())["weights_sha256"]
            for p in sorted(cache.iterdir()) if (p / META).exists()}


def test_the_thread_count_is_pinned_and_left_out_of_the_key_at_its_default():
    assert PretrainConfig().threads == 2
    assert "threads" not in artefact_config(PretrainConfig())  # every earlier key holds
    assert artefact_config(PretrainConfig(threads=1))["threads"] == 1
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        PretrainConfig(threads=0)


def test_later_material_fields_are_left_out_of_the_key_at_0():
    """other_task_traces and passes came after the artefact format: absent at 0, so earlier
    keys hold; set, they name the artefact."""
    assert not {"other_task_traces", "passes"} & set(artefact_config(PretrainConfig()))
    key = artefact_config(PretrainConfig(other_task_traces=10, passes=1))
    assert (key["other_task_traces"], key["passes"]) == (10, 1)
    assert "passes" not in artefact_config(PretrainConfig(other_task_traces=10))
    with pytest.raises(ValueError, match="passes must be an integer >= 0"):
        PretrainConfig(passes=-1)


def test_passes_fix_the_verification_of_every_pretraining_trace():
    """A base with ``passes`` 1 is pretrained on one-check traces, its own problems and the other
    task's alike, whatever the run corpus's counts; 0 keeps the corpus's."""
    from study.config import pretrain_corpus
    from study.data.synthetic import CorpusConfig
    from study.pretrain import pretraining_examples

    run_corpus = CorpusConfig(min_verify=1, max_verify=3)
    base = PretrainConfig(train_examples=40, one_op=True, other_task_traces=40, passes=1)
    traces = pretraining_examples(pretrain_corpus(run_corpus, base), base)
    assert len(traces) == 80 and sum(t.id.startswith("largest|") for t in traces) == 40
    assert {t.cot.count("\\boxed{") for t in traces} == {2}  # the derivation's and one check's
    kept = pretrain_corpus(run_corpus, PretrainConfig(train_examples=40, one_op=True))
    assert (kept.min_verify, kept.max_verify) == (1, 3)


# One process: the tokenizer and both artefacts of a tiny config, trained from scratch
# (the release not read), without scoring them; pinned to one thread (the default, 2, is
# tested in process by test_pretrain_force_rebuilds_the_same_weights; one is quicker on a
# busy machine), against OMP_NUM_THREADS 2 in one of the processes.
BUILD = """
import sys; sys.path.insert(0, "tests")
from dataclasses import replace
from tiny import tiny_config
from study.models import get_tokenizer
from study.pretrain import build_artefact
cfg = tiny_config(sys.argv[1])
cfg = replace(cfg, teacher=replace(cfg.teacher, threads=1), base=replace(cfg.base, threads=1))
get_tokenizer(cfg.tokenizer, cfg.cache_dir, use_release=False)
for role in ("teacher", "base"):
    build_artefact(role, cfg, getattr(cfg, role), use_release=False)
"""


def test_two_processes_train_the_same_weights(tmp_path):
    """Other PYTHONHASHSEED and OMP_NUM_THREADS (so another default thread count): the
    artefacts' own thread count is pinned, so the tokenizer file and the weights are equal."""
    procs = []
    for i, (seed, threads) in enumerate((("1", "1"), ("2", "2"))):
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        procs.append(subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path / f"cache{i}")], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    a, b = _weights(tmp_path / "cache0"), _weights(tmp_path / "cache1")
    assert len(a) == 2 and a == b
    for cache in ("cache0", "cache1"):
        for meta in (tmp_path / cache).glob(f"*/{META}"):
            assert json.loads(meta.read_text())["built"]["threads"] == 1
    tokenizers = [next((tmp_path / c).glob("tokenizer-*")) / "tokenizer.json" for c in ("cache0", "cache1")]
    assert tokenizers[0].read_bytes() == tokenizers[1].read_bytes()


@pytest.fixture
def tiny_release(tiny_cache, tmp_path, monkeypatch):
    """A release of the tiny config's artefacts in a temporary folder, read as the release."""
    folder = tmp_path / "artefacts"
    monkeypatch.setattr(release, "RELEASE_DIR", folder)
    cfg = tiny_config(tiny_cache)
    pretrain_artefacts(cfg, release_to=folder)
    return folder


def test_a_release_is_used_instead_of_training(tiny_release, tiny_cache, tmp_path, monkeypatch):
    import study.models
    import study.pretrain

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the release has it")

    monkeypatch.setattr(study.pretrain, "_pretrain", no_training)
    monkeypatch.setattr(study.models, "train_tokenizer", no_training)
    fresh = tiny_config(tmp_path / "fresh")
    # A dry run knows the run ids from the release's metas, copying nothing.
    known = artefact_weights(fresh)
    assert not (tmp_path / "fresh").exists()
    _, teacher = get_teacher(fresh)
    _, base = get_base(fresh)
    built = _weights(tiny_cache)
    assert _weights(tmp_path / "fresh") == {teacher["id"]: built[teacher["id"]], base["id"]: built[base["id"]]}
    assert teacher["weights_sha256"] == built[teacher["id"]]
    assert known == {"teacher": teacher["weights_sha256"], "base": base["weights_sha256"]}
    # The copies hold every released file; the release lists them in SHA256SUMS.
    for name in (teacher["id"], base["id"]):
        assert set(release.read_sums(tiny_release / name)) <= {
            p.relative_to(tmp_path / "fresh" / name).as_posix() for p in (tmp_path / "fresh" / name).rglob("*")}


def test_a_tampered_release_is_refused_naming_the_file_and_the_fix(tiny_release, tmp_path, capsys):
    cfg = tiny_config(tmp_path / "fresh")
    name = artefacts_of(cfg)[1][2].name  # the teacher
    weights = tiny_release / name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    data[-1] ^= 1
    with pytest.raises(release.TamperedArtefact, match=r"model\.safetensors: its SHA-256 .*`study pretrain"):
        get_teacher(cfg)
    assert not (tmp_path / "fresh" / name).exists()  # nothing of it reached the cache
    config = _yaml(cfg, tmp_path / "tiny.yaml")
    assert main(["pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "--force" in err and len(err.strip().splitlines()) == 1
    # A file added to a released folder is refused too.
    weights.write_bytes(bytes(data))
    release.verify(tiny_release / name)
    shutil.copy(tiny_release / name / META, tiny_release / name / "extra.json")
    with pytest.raises(release.TamperedArtefact, match="extra.json: not part of the release"):
        release.verify(tiny_release / name)


def test_pretrain_force_rebuilds_the_same_weights(tiny_cache, tmp_path, monkeypatch, capsys):
    import study.pretrain

    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache, cache)
    cfg = tiny_config(cache)
    config = _yaml(cfg, tmp_path / "tiny.yaml")
    before = _weights(cache)
    trained = []
    real = study.pretrain._pretrain
    monkeypatch.setattr(study.pretrain, "_pretrain", lambda role, *a: (trained.append(role), real(role, *a)))
    monkeypatch.setattr(release, "RELEASE_DIR", tmp_path / "no-release")
    assert main(["pretrain", "--config", str(config)]) == 0  # all cached: nothing trains
    assert trained == []
    assert main(["pretrain", "--config", str(config), "--force"]) == 0
    assert trained == ["teacher", "base"]
    out = capsys.readouterr().out
    assert out.count("trained, 2 threads") == 2 and "tokenizer-" in out
    assert _weights(cache) == before  # deterministic: the rebuild is bit for bit the old one
    # --release writes them with their checksums; the meta must match the current config.
    assert main(["pretrain", "--config", str(config), "--release"]) == 0
    for _, p, path in artefacts_of(cfg):
        release.verify(tmp_path / "no-release" / path.name)
    changed = replace(cfg, teacher=replace(cfg.teacher, lr=cfg.teacher.lr * 2))
    with pytest.raises(ValueError, match="retrain it with `study pretrain --force`"):
        _check_meta(artefacts_of(cfg)[1][2], changed, changed.teacher, artefacts_of(cfg)[0][2].name)


def test_the_repository_release_holds_the_study_artefacts():
    """artefacts/ has the tokenizer, teachers and base students of every grid of the default
    study (the default and the late-answer corpus, and the light-touch contrast's base student),
    intact and named by the current keys."""
    configs = study_configs(ROOT / "configs" / "grids")
    layouts = sorted({c.corpus.layout for c in configs})
    assert layouts == ["early", "late"]
    names = set()
    for cfg in configs:
        for role, p, path in artefacts_of(cfg):
            folder = ROOT / "artefacts" / path.name
            release.verify(folder)
            if p is not None:
                _check_meta(folder, cfg, p, artefacts_of(cfg)[0][2].name)
                assert (folder / "model.safetensors").exists() and not list(folder.glob("*.bin"))
            names.add(path.name)
    assert len(names) == 6  # one tokenizer, two teachers, three base students
    default = load_config(ROOT / "configs" / "default.yaml")
    assert {p.name for _, _, p in artefacts_of(default)} <= names
