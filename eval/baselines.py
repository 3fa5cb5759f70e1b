"""Trivial baselines that every report shows beside the models.

most-frequent   the most frequent impression of the training set, for every study
last-sentence   the last sentence of the findings (radiologists often end on the summary)
On Indiana dev2 a constant "No acute cardiopulmonary abnormality." already scores ROUGE-1 ~0.475,
above the reference's fine-tuned 0.466: ROUGE alone does not show clinical quality.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from eval.prediction_file import dumps
from eval.rouge import split_sentences
from radreport.io import atomic_write_text
from radreport.schema import Example

BASELINES = ("most-frequent", "last-sentence")


def most_frequent_impression(train: list[Example]) -> str:
    counts = Counter(e.impression for e in train)
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # ties broken by text: deterministic


def last_sentence(findings: str) -> str:
    sentences = split_sentences(findings)
    return sentences[-1] if sentences else ""


def baseline_rows(name: str, data: list[Example], dataset: str, constant: str = "") -> list[dict]:
    pred = (lambda e: constant) if name == "most-frequent" else (lambda e: last_sentence(e.findings))
    return [
        {
            "id": e.study_id,
            "dataset": dataset,
            "model": f"baseline-{name}",
            "findings": e.findings,
            "reference": e.impression,
            "prediction": pred(e),
        }
        for e in data
    ]


def write_baselines(train: list[Example], data: list[Example], dataset: str, out_dir: Path) -> list[Path]:
    constant = most_frequent_impression(train)
    paths = []
    for name in BASELINES:
        path = out_dir / f"baseline-{name}-{dataset}.jsonl"
        atomic_write_text(path, "".join(dumps(r) for r in baseline_rows(name, data, dataset, constant)))
        paths.append(path)
    return paths
