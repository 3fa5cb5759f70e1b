"""Clinical scores of predictions against references that a normal template cannot game.

Both texts go through the CheXpert labeler (eval/labeler.py); uncertain counts as positive.
- Headline: micro-F1 over the 12 abnormal observations (No Finding and Support Devices excluded) and
  micro-F1 over the 5 standard ones. A constant "No acute disease." predicts no abnormal observation,
  so it scores 0 here however often the references are normal.
- Per-observation precision/recall/F1 beside them; No Finding apart (precision, recall, F1, agreement).
- Collapse indicators: how many distinct predictions, the share of the single most common one, and the
  share of abnormal references answered with a normal impression.
A reference is abnormal when the labeler finds any of the 12 abnormal observations in it (positive or
uncertain); a prediction is normal when it finds none.
"""

from __future__ import annotations

from collections import Counter

from eval.labeler import ABNORMAL, OBSERVATIONS, STANDARD_FIVE, is_positive, label

SCORED = tuple(o for o in OBSERVATIONS if o != "No Finding")


def is_abnormal(text: str) -> bool:
    states = label(text)
    return any(is_positive(states[o]) for o in ABNORMAL)


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn, "predicted": tp + fp}


def clinical_scores(references: list[str], predictions: list[str]) -> dict:
    """Per-observation P/R/F1, micro-F1 over the abnormal and the standard five, No Finding apart.

    A micro-F1 is None when neither references nor predictions hold any of its observations (nothing to
    score), and 0.0 when the references hold some and the predictions none of them."""
    counts = {o: [0, 0, 0] for o in OBSERVATIONS}  # tp, fp, fn
    agree_nf = 0
    for ref, pred in zip(references, predictions, strict=True):
        r, p = label(ref), label(pred)
        for o in OBSERVATIONS:
            a, b = (
                (r[o] == "positive", p[o] == "positive")
                if o == "No Finding"
                else (is_positive(r[o]), is_positive(p[o]))
            )
            counts[o][0] += a and b
            counts[o][1] += b and not a
            counts[o][2] += a and not b
            if o == "No Finding":
                agree_nf += a == b

    def micro(observations) -> float | None:
        tp, fp, fn = (sum(counts[o][i] for o in observations) for i in range(3))
        return _prf(tp, fp, fn)["f1"] if tp + fp + fn else None

    per_label = {o: _prf(*counts[o]) for o in SCORED}
    with_support = [o for o in ABNORMAL if per_label[o]["support"]]
    return {
        "micro_f1_abnormal": micro(ABNORMAL),
        "micro_f1_standard_five": micro(STANDARD_FIVE),
        "macro_f1_abnormal": (
            sum(per_label[o]["f1"] for o in with_support) / len(with_support) if with_support else None
        ),
        "per_label": per_label,
        "no_finding": {**_prf(*counts["No Finding"]), "agreement": agree_nf / len(references) if references else 0.0},
    }


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def collapse_indicators(references: list[str], predictions: list[str]) -> dict:
    """Does a model say the same thing whatever it is shown?"""
    n = len(predictions)
    counts = Counter(_normalise(p) for p in predictions)
    top, top_n = min(counts.items(), key=lambda kv: (-kv[1], kv[0])) if counts else ("", 0)
    abnormal = [i for i, r in enumerate(references) if is_abnormal(r)]
    answered_normal = sum(1 for i in abnormal if not is_abnormal(predictions[i]))
    return {
        "distinct_predictions": len(counts),
        "top_prediction": top,
        "top_prediction_share": top_n / n if n else 0.0,
        "abnormal_references": len(abnormal),
        "abnormal_answered_normal": answered_normal / len(abnormal) if abnormal else None,
    }
