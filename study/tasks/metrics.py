"""process_results of the paper's benchmark tasks (aime24.yaml, ...): every one of a problem's n
samples is scored by its benchmark's rule (study.scoring.score), and the problem's score is
their mean, so lm-eval's ``mean`` aggregation gives pass@1 averaged over the n samples, with its
stderr over problems."""

from study.scoring import score


def process_results(doc: dict, results: list) -> dict:
    """``results`` is ``[[s1, ..., sn]]``: one request per problem, its n samples kept by the
    task's take_first_k filter (lm-eval's default take_first would keep only s1)."""
    (samples,) = results
    scores = [score(s, str(doc["answer"]), doc.get("kind", "math")) for s in samples]  # synthetic: math
    return {"pass@1": sum(scores) / len(scores)}
