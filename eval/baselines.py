"""Baselines that every report shows beside the models.

most-frequent   the most frequent impression of the training set, for every study
last-sentence   the last sentence of the findings (radiologists often end on the summary)
retrieval       the impression of the training study whose findings are most alike (eval/retrieval.py)
On Indiana dev2 a constant "No acute cardiopulmonary abnormality." already scores ROUGE-1 ~0.475,
above the reference's fine-tuned 0.466: ROUGE alone does not show clinical quality, and the constant
scores 0 abnormal F1. Retrieval is the bar (docs/quality.md): it beats both the constant and our tiny
model on ROUGE-L and names abnormal findings.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from eval.prediction_file import dumps
from eval.retrieval import Retriever
from eval.rouge import split_sentences
from radreport.io import atomic_write_text
from radreport.schema import Example

BASELINES = ("most-frequent", "last-sentence", "retrieval")
NEEDS_TRAIN = ("most-frequent", "retrieval")


def most_frequent_impression(train: list[Example]) -> str:
    counts = Counter(e.impression for e in train)
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # ties broken by text: deterministic


def last_sentence(findings: str) -> str:
    sentences = split_sentences(findings)
    return sentences[-1] if sentences else ""


def baseline_predictions(name: str, data: list[Example], train: list[Example] | None = None) -> list[str]:
    """The baseline's impression for each example of `data` (most-frequent and retrieval need `train`)."""
    if name in NEEDS_TRAIN and not train:
        raise ValueError(f"baseline {name!r} needs training data")
    if name == "most-frequent":
        return [most_frequent_impression(train)] * len(data)
    if name == "last-sentence":
        return [last_sentence(e.findings) for e in data]
    if name == "retrieval":
        return Retriever(train).predict([e.findings for e in data])
    raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")


def baseline_rows(name: str, data: list[Example], dataset: str, train: list[Example] | None = None) -> list[dict]:
    predictions = baseline_predictions(name, data, train)
    return [
        {
            "id": e.study_id,
            "dataset": dataset,
            "model": f"baseline-{name}",
            "findings": e.findings,
            "reference": e.impression,
            "prediction": p,
        }
        for e, p in zip(data, predictions, strict=True)
    ]


def baseline_paths(out_dir: Path, dataset: str) -> dict[str, Path]:
    """Where each baseline's predictions go: `baseline-NAME-DATASET.jsonl` in out_dir (dataset: a checked safe name)."""
    return {name: out_dir / f"baseline-{name}-{dataset}.jsonl" for name in BASELINES}


def write_baselines(train: list[Example], data: list[Example], dataset: str, out_dir: Path) -> list[Path]:
    """One prediction file per baseline (baseline_paths)."""
    rows = {name: baseline_rows(name, data, dataset, train) for name in BASELINES}  # all computed before any write
    paths = baseline_paths(out_dir, dataset)
    for name in BASELINES:
        atomic_write_text(paths[name], "".join(dumps(r) for r in rows[name]))
    return list(paths.values())
