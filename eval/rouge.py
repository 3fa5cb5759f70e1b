"""ROUGE, on rouge-score, in two modes.

default          stemming on; rougeLsum splits sentences with the rule-based splitter below
aws_compatible   the reference's settings (HF `evaluate` defaults): no stemming, no sentence split,
                 so rougeLsum equals rougeL on single-line text

rouge-score's rougeLsum only splits on newlines, and nothing here downloads (no nltk punkt).
Scores are F-measures per example; empty predictions score 0 and are kept.
"""

from __future__ import annotations

import re

from rouge_score import rouge_scorer

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Abbreviations that end with a dot inside a radiology sentence.
_ABBREV = ("dr", "e.g", "i.e", "vs", "approx", "no", "st", "mr", "mrs", "ms", "fig", "etc", "cf")
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'_])")


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence split: a period, ! or ? then space then a capital/digit, abbreviations excepted."""
    parts, start = [], 0
    for m in _BOUNDARY.finditer(text):
        before = text[start : m.start()].rstrip(".!?").rsplit(None, 1)
        last_word = before[-1].lower() if before else ""
        segment = text[start : m.start()].strip()
        # keep abbreviations, initials and list numbers ("1.") with what follows them
        if last_word in _ABBREV or re.fullmatch(r"[A-Za-z]", last_word or "xx") or re.fullmatch(r"\d+[.)]", segment):
            continue
        parts.append(text[start : m.start()].strip())
        start = m.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


class Rouge:
    def __init__(self, aws_compatible: bool = False):
        self.aws_compatible = aws_compatible
        self._scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=not aws_compatible)

    @property
    def mode(self) -> str:
        return (
            "aws-compatible (no stemming, no sentence splitting; HF evaluate defaults)"
            if self.aws_compatible
            else "default (Porter stemming; rougeLsum over rule-based sentence splits)"
        )

    def score(self, reference: str, prediction: str) -> dict[str, float]:
        if not prediction.strip():
            return {k: 0.0 for k in ROUGE_KEYS}
        if not self.aws_compatible:
            reference = "\n".join(split_sentences(reference))
            prediction = "\n".join(split_sentences(prediction))
        return {k: v.fmeasure for k, v in self._scorer.score(reference, prediction).items()}

    def score_all(self, references: list[str], predictions: list[str]) -> list[dict[str, float]]:
        if len(references) != len(predictions):
            raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
        return [self.score(r, p) for r, p in zip(references, predictions, strict=True)]


def mean_scores(per_example: list[dict[str, float]]) -> dict[str, float]:
    n = max(len(per_example), 1)
    return {k: sum(s[k] for s in per_example) / n for k in ROUGE_KEYS}
