#!/usr/bin/env bash
# GPU smoke test of the paper-scale model path (issue 12, item 2), for a person with one CUDA GPU
# of 40 GB or more (the teacher-cache build forms a batch's full [16, 2048, 151936] logits) and
# internet access (or a hub cache holding the files). Not run in CI; never run by its author.
#
#   bash benchmarks/gpu_smoke_qwen3.sh [OUT_DIR]        # ~5-15 min, most of it downloads
#
# Distils Qwen/Qwen3-0.6B (teacher, frozen in bfloat16) into Qwen/Qwen3-0.6B-Base (student,
# float32 weights, bf16 autocast) on a tiny slice of Bespoke-Stratos-17k (the first 200 rows,
# 16 training examples under 2,048 tokens), 4 optimiser steps, then scores AIME24 (hub data,
# 2 samples per problem, 512 new tokens) and checks the record: the teacher ran in bfloat16, both
# revisions resolved to hub commits, the chat template hash is there and the headline quality
# is the benchmark's. Both Qwen3 heads have 151,936 rows for 151,669 tokens: the losses read the
# 151,669 only. If the two repos' chat templates differ the run stops before any model with
# "chat templates differ": that is the check working; copy the teacher's tokenizer files into a
# local copy of the student and point base.model.pretrained at it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/study_gpu_smoke}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" -m study.cli run --config configs/default.yaml --out "$OUT/runs" --overwrite \
  --set device=cuda --set cache_dir="$OUT/cache" --set save_student=false --set profile_steps=1 \
  --set teacher.model.pretrained=Qwen/Qwen3-0.6B --set base.model.pretrained=Qwen/Qwen3-0.6B-Base \
  --set corpus.source=bespoke_stratos --set corpus.max_rows=200 --set corpus.max_tokens=2048 \
  --set corpus.train_examples=16 --set corpus.val_examples=4 \
  --set batch_size=4 --set epochs=1 --set lr=4e-6 \
  --set benchmarks=[aime24] --set samples=2 --set max_gen_toks=512 --set eval_batch_size=16
"$PY" - "$OUT/runs" <<'PYEOF'
import json, re, sys
from pathlib import Path

recs = [json.loads(p.read_text()) for p in Path(sys.argv[1]).glob("*.json")]
rec = max(recs, key=lambda r: r["env"]["time"])
t, s, tok = rec["teacher"], rec["student"], rec["data"]["tokenizer"]
checks = {
    "teacher ran in bfloat16": t["dtype"] == "bfloat16",
    "teacher revision is a hub commit": bool(re.fullmatch(r"[0-9a-f]{40}", t["resolved_revision"] or "")),
    "student revision is a hub commit": bool(re.fullmatch(r"[0-9a-f]{40}", s["base_resolved_revision"] or "")),
    "padded heads (151,936 rows) over 151,669 tokens": (t["vocab_rows"], s["base_vocab_rows"], tok["size"])
    == (151936, 151936, 151669),
    "teacher cache over the real tokens": t["cache"] is None or t["cache"]["vocab_size"] == tok["size"],
    "chat template hashed": bool(tok["chat_template_sha256"]),
    "quality is the benchmarks'": rec["quality"] == rec["benchmarks"] and "aime24" in rec["quality"],
    "finite losses": all(c["loss"] == c["loss"] for c in rec["curve"]),
}
for name, ok in checks.items():
    print(f"{'ok  ' if ok else 'FAIL'} {name}")
q = rec["quality"]["aime24"]
print(f"run {rec['run_id']}: aime24 pass@1 {q['pass@1']:.3f} over {q['n_problems']} problems x {q['samples']}; "
      f"peak memory {rec['compute']['peak_memory_bytes'] / 2**30:.1f} GiB; train {rec['compute']['train_seconds']:.0f} s")
sys.exit(0 if all(checks.values()) else 1)
PYEOF
