"""Peak memory of one KD loss step at a real vocabulary: the plain loss on full logits against
the chunked loss the training step uses (study.losses.chunked_distillation_loss).

    python benchmarks/kd_loss_memory.py                       # V = 151,936, 1,024-4,096 tokens
    python benchmarks/kd_loss_memory.py --tokens 2048 --vocab 32000

Each measurement runs in a fresh subprocess: the step's inputs (student and teacher final
hidden states [T, d] and output heads [V, d], tiny d) are allocated first, then one step runs:
the output heads, (1 - alpha) CE + alpha forward KL over every position, and backward. The
reported peak is the process's maximum resident size during the step minus its resident size
just before it, i.e. what the step itself needed. A subprocess that would exceed ``--limit-gb``
of address space fails with MemoryError instead of taking the machine down; that is reported
as "did not fit". Not a test: machines differ, so compare the two numbers of one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch
from study.losses import HeadTeacher, chunked_distillation_loss, distillation_loss
mode, tokens, vocab, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
torch.set_num_threads(2)
h = torch.randn(tokens, hidden, requires_grad=True)
w = (torch.randn(vocab, hidden) * 0.05).requires_grad_()
th, tw = torch.randn(tokens, hidden), torch.randn(vocab, hidden) * 0.05
y = torch.randint(0, vocab, (tokens,))
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
before = rss()
if mode == "plain":
    logits = (h @ w.T)[None]
    with torch.no_grad():
        t_logits = (th @ tw.T)[None]
    labels = torch.cat([torch.tensor([-100]), y[:-1]])[None]   # every position but the first
    out = distillation_loss(logits, labels, t_logits, alpha=0.5)
else:
    out = chunked_distillation_loss(h, w, y, HeadTeacher(th, tw), alpha=0.5)
out.total.backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"loss": out.total.item(), "peak_step_bytes": peak - before}))
"""


def measure(mode: str, tokens: int, vocab: int, hidden: int, limit_gb: float) -> dict:
    def limit():
        cap = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(tokens), str(vocab), str(hidden)],
                          capture_output=True, text=True, preexec_fn=limit)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"mode": mode, "tokens": tokens, "fits": False, "error": last[:160]}
    return {"mode": mode, "tokens": tokens, "fits": True, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--limit-gb", type=float, default=20.0, help="address-space cap per measurement")
    args = ap.parse_args()
    logits_gb = lambda t: t * args.vocab * 4 / 2**30  # noqa: E731
    print(f"vocab {args.vocab}, hidden {args.hidden}; one float32 [tokens, vocab] tensor is "
          f"{', '.join(f'{logits_gb(t):.2f} GB at {t}' for t in args.tokens)}")
    rows = []
    for t in args.tokens:
        pair = {m: measure(m, t, args.vocab, args.hidden, args.limit_gb) for m in ("plain", "chunked")}
        rows.append(pair)
        for m, r in pair.items():
            if r["fits"]:
                print(f"{t:>6} tokens  {m:<8} peak {r['peak_step_bytes'] / 2**30:7.2f} GB "
                      f"({r['peak_step_bytes'] / 2**30 / logits_gb(t):5.2f} logits-sized tensors)  loss {r['loss']:.6f}")
            else:
                print(f"{t:>6} tokens  {m:<8} did not fit in {args.limit_gb:g} GB of address space: {r['error']}")
        if all(r["fits"] for r in pair.values()):
            ratio = pair["chunked"]["peak_step_bytes"] / pair["plain"]["peak_step_bytes"]
            same = abs(pair["chunked"]["loss"] - pair["plain"]["loss"]) <= 1e-4 * abs(pair["plain"]["loss"])
            print(f"{t:>6} tokens  chunked / plain = {ratio:.3f}   losses agree: {same}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
