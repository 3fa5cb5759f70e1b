"""Per-example ROUGE and the aggregates: mean, seeded 95% bootstrap CI, CheXpert-label agreement."""

from __future__ import annotations

import numpy as np

from eval.labeler import agreement
from eval.rouge import ROUGE_KEYS, Rouge
from eval.stats import bootstrap_ci


def score_rows(rows: list[dict], rouge: Rouge) -> list[dict]:
    """Adds rouge1/rouge2/rougeL/rougeLsum to a copy of each row (empty predictions score 0, kept)."""
    return [{**r, **rouge.score(r["reference"], r["prediction"])} for r in rows]


def aggregate(scored: list[dict], rouge: Rouge) -> dict:
    out: dict = {
        "n": len(scored),
        "mode": rouge.mode,
        "empty_predictions": sum(1 for r in scored if not r["prediction"].strip()),
    }
    for k in ROUGE_KEYS:
        v = np.array([r[k] for r in scored])
        lo, hi = bootstrap_ci(v)
        out[k] = {"mean": float(v.mean()), "ci95": [lo, hi]}
    labels = agreement([r["reference"] for r in scored], [r["prediction"] for r in scored])
    out["chexpert_micro_f1"] = labels["micro_f1"]
    out["chexpert_macro_f1"] = labels["macro_f1"]
    return out
