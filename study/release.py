"""Released artefacts: the default tokenizer, teachers and base students, shipped in the
repository under ``artefacts/<name>/`` (``<name>`` is the cache folder's: ``teacher-<key>``,
with the same key), so a fresh clone distils at once instead of training them.

A folder holds the artefact's files as the cache has them (safetensors weights, config,
tokenizer, ``study_meta.json`` with the weights hash and how it was built, ``evaluations/``
with its scores) and ``SHA256SUMS`` (``sha256sum -c`` reads it) over every other file. When a
run needs an artefact that is not in its cache and the release has one of that name, every
file is checked against ``SHA256SUMS`` and the folder is copied into the cache; a file that
differs is refused, naming it and the fix. The weights hash in the meta is checked again
when the cached copy is loaded (study/pretrain.py).

    study pretrain                     # the study's artefacts: from the release, else trained
    study pretrain --force --release   # retrain them all and write them into artefacts/
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

# The repository's release (an editable install reads it in place; elsewhere it is absent and
# every artefact is trained on first use).
RELEASE_DIR = Path(__file__).resolve().parents[1] / "artefacts"
SUMS = "SHA256SUMS"


class TamperedArtefact(ValueError):
    """A released or cached artefact's file is not the one its hashes name."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artefact_files(folder: Path) -> list[Path]:
    """Every file of an artefact folder (relative, sorted) but the checksum list itself."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name != SUMS)


def write_sums(folder: Path) -> None:
    lines = [f"{file_sha256(folder / rel)}  {rel.as_posix()}" for rel in artefact_files(folder)]
    (folder / SUMS).write_text("\n".join(lines) + "\n")


def read_sums(folder: Path) -> dict[str, str]:
    sums = {}
    for line in (folder / SUMS).read_text().splitlines():
        if line.strip():
            digest, name = line.split(None, 1)
            sums[name.strip().lstrip("*")] = digest
    return sums


def refit_hint(name: str) -> str:
    return (f"restore it (git checkout -- {RELEASE_DIR.name}/{name}) or retrain it with "
            f"`study pretrain --config CONFIG --force` (CONFIG: the run config that needs it)")


def verify(folder: Path) -> None:
    """Every file of a released artefact as ``SHA256SUMS`` names it; raises TamperedArtefact
    naming the first file that is missing, changed or unlisted."""
    if not (folder / SUMS).is_file():
        raise TamperedArtefact(f"{folder}: no {SUMS}, so its files cannot be checked; {refit_hint(folder.name)}")
    sums = read_sums(folder)
    present = {rel.as_posix() for rel in artefact_files(folder)}
    for name, digest in sorted(sums.items()):
        path = folder / name
        if name not in present:
            raise TamperedArtefact(f"{path}: listed in {SUMS} but missing; {refit_hint(folder.name)}")
        actual = file_sha256(path)
        if actual != digest:
            raise TamperedArtefact(f"{path}: its SHA-256 {actual[:12]} differs from the released {digest[:12]} "
                                   f"({folder / SUMS}); the file was changed: {refit_hint(folder.name)}")
    extra = sorted(present - set(sums))
    if extra:
        raise TamperedArtefact(f"{folder / extra[0]}: not part of the release ({folder / SUMS} does not list it); "
                               f"remove it or {refit_hint(folder.name)}")


def released(name: str, release_dir: Path | None = None) -> Path | None:
    """The released folder of artefact ``name`` (``teacher-<key>``), or None."""
    folder = Path(release_dir or RELEASE_DIR) / name
    return folder if folder.is_dir() else None


def take(final: Path, release_dir: Path | None = None) -> bool:
    """Copy the released artefact named like ``final`` into the cache at ``final``, after
    checking every file; False when the release has none of that name."""
    from .models import atomic_dir

    src = released(final.name, release_dir)
    if src is None:
        return False
    verify(src)

    def copy(tmp: Path) -> None:
        for rel in artefact_files(src):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, tmp / rel)

    atomic_dir(final, copy)
    log.info("%s: taken from the release %s (no training)", final.name, src)
    return True


def publish(cached: Path, release_dir: Path | None = None) -> Path:
    """Write the cached artefact folder ``cached`` into the release (replacing the released one
    of that name) with its ``SHA256SUMS``. Returns the released folder."""
    release_dir = Path(release_dir or RELEASE_DIR)
    dest = release_dir / cached.name
    tmp = release_dir / f".{cached.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cached, tmp, ignore=shutil.ignore_patterns(SUMS, ".*"))
    write_sums(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest
