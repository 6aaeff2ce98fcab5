"""study: reproduction package for "Distilling the Essence: Efficient Reasoning
Distillation via Sequence Truncation" (arXiv 2512.21002).

Entry points: ``study run --config configs/quick.yaml --out results/runs`` (CLI) or
``study.train.run(RunConfig(...))`` (Python)."""

__version__ = "0.1.0"
