"""Per-example ROUGE and the aggregates of one model on one dataset.

ROUGE means with seeded 95% bootstrap intervals, overall and split by whether the reference is normal or
abnormal (by the labeler: a model that wins only on normal studies shows it); the clinical scores and
collapse indicators of eval/clinical.py. `python -m eval score --json` prints all of it.
"""

from __future__ import annotations

import numpy as np

from eval.clinical import clinical_scores, collapse_indicators, is_abnormal
from eval.rouge import ROUGE_KEYS, Rouge
from eval.stats import bootstrap_ci


def score_rows(rows: list[dict], rouge: Rouge) -> list[dict]:
    """Adds rouge1/rouge2/rougeL/rougeLsum to a copy of each row (empty predictions score 0, kept)."""
    return [{**r, **rouge.score(r["reference"], r["prediction"])} for r in rows]


def _rouge_means(rows: list[dict]) -> dict:
    out: dict = {"n": len(rows)}
    for k in ROUGE_KEYS:
        v = np.array([r[k] for r in rows], dtype=float)
        out[k] = {"mean": float(v.mean()), "ci95": list(bootstrap_ci(v))} if len(v) else None
    return out


def aggregate(scored: list[dict], rouge: Rouge) -> dict:
    references = [r["reference"] for r in scored]
    predictions = [r["prediction"] for r in scored]
    abnormal = [is_abnormal(t) for t in references]
    overall = _rouge_means(scored)
    return {
        "n": len(scored),
        "mode": rouge.mode,
        "empty_predictions": sum(1 for p in predictions if not p.strip()),
        **{k: overall[k] for k in ROUGE_KEYS},
        "rouge_by_reference": {
            "normal": _rouge_means([r for r, a in zip(scored, abnormal, strict=True) if not a]),
            "abnormal": _rouge_means([r for r, a in zip(scored, abnormal, strict=True) if a]),
        },
        "clinical": clinical_scores(references, predictions),
        "collapse": collapse_indicators(references, predictions),
    }
