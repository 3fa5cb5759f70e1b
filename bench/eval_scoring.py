"""Time of scoring, reporting and the retrieval baseline (targets: scoring 2,000 predictions with everything
on in under 30 s; retrieval over 100,000 training studies for 2,000 queries in seconds; 2 cores).

    python bench/eval_scoring.py [--n 2000] [--train-rows 100000] [--out bench/results/eval_scoring.json]

Predictions are the bundled sample rows' findings' last sentences and a constant, against their impressions
(realistic lengths); two models, so the paired bootstrap and every table run; the report gets the training
rows, so it builds the most-frequent and retrieval baselines too. Retrieval is timed twice on synthetic
studies (train.synthetic): as generated (templates repeat, as in radiology: many identical findings), and
with every findings text distinct (two studies' findings joined: twice as long, no repeats).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.baselines import last_sentence  # noqa: E402
from eval.prediction_file import dumps, read_predictions  # noqa: E402
from eval.report import build_report  # noqa: E402
from eval.retrieval import Retriever  # noqa: E402
from eval.rouge import Rouge  # noqa: E402
from eval.score import aggregate, score_rows  # noqa: E402
from radreport.io import atomic_write_json  # noqa: E402
from radreport.schema import Example, load_examples  # noqa: E402
from train.synthetic import make_study, to_example  # noqa: E402


def time_retrieval(train: list[Example], queries: list[str]) -> dict:
    t0 = time.perf_counter()
    retriever = Retriever(train)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    retriever.nearest(queries)
    t_query = time.perf_counter() - t0
    return {
        "train_rows": len(train),
        "distinct_findings": len(retriever.train_index),
        "queries": len(queries),
        "fit_s": t_fit,
        "query_s": t_query,
        "total_s": t_fit + t_query,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--train-rows", type=int, default=100_000)
    p.add_argument("--out", default=str(ROOT / "bench/results/eval_scoring.json"))
    a = p.parse_args()
    rows = load_examples(ROOT / "data/sample/train.json")[: a.n]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for model, pred in (
            ("last-sentence", lambda e: last_sentence(e.findings)),
            ("constant", lambda e: "No acute cardiopulmonary process."),
        ):
            f = Path(tmp) / f"{model}.jsonl"
            f.write_text(
                "".join(
                    dumps(
                        {
                            "id": e.study_id,
                            "dataset": "dev",
                            "model": model,
                            "findings": e.findings,
                            "reference": e.impression,
                            "prediction": pred(e),
                        }
                    )
                    for e in rows
                )
            )
            files.append(f)
        t0 = time.perf_counter()
        rouge = Rouge()
        agg = aggregate(score_rows(read_predictions(files[0]), rouge), rouge)
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_report(files, Path(tmp) / "report", train=rows)
        t_report = time.perf_counter() - t0

    r = random.Random(0)
    studies = [make_study(r) for _ in range(a.train_rows * 2 + 2000)]
    queries = [" ".join(s.findings) for s in studies[-2000:]]
    templated = [to_example(s, str(i), "") for i, s in enumerate(studies[: a.train_rows])]
    distinct = [
        Example(str(i), "", f"{templated[i].findings} {' '.join(studies[a.train_rows + i].findings)}", "x")
        for i in range(a.train_rows)
    ]
    retrieval = {"templated": time_retrieval(templated, queries), "distinct": time_retrieval(distinct, queries)}

    result = {
        "command": " ".join(["python", *sys.argv]),
        "n": a.n,
        "score_one_file_s": t_score,
        "report_two_models_plus_baselines_s": t_report,
        "rouge1": agg["rouge1"]["mean"],
        "retrieval": retrieval,
    }
    print(f"{'step':<64} {'seconds':>8}")
    print(f"{'score ' + str(a.n) + ' predictions (ROUGE, CIs, labels, collapse)':<64} {t_score:>8.2f}")
    print(
        f"{'report: 2 models + 3 baselines x ' + str(a.n) + ' (retrieval over ' + str(a.n) + ')':<64} {t_report:>8.2f}"
    )
    for name, t in retrieval.items():
        what = f"retrieval {name}: {t['train_rows']:,} train ({t['distinct_findings']:,} distinct) x {t['queries']:,}"
        print(f"{what:<64} {t['total_s']:>8.2f}  (fit {t['fit_s']:.2f}, query {t['query_s']:.2f})")
    atomic_write_json(a.out, result)


if __name__ == "__main__":
    main()
