"""Time of scoring and reporting 2,000 predictions with everything on (target: under 30 s on 2 cores).

    python bench/eval_scoring.py [--n 2000] [--out bench/results/eval_scoring.json]

Predictions are the bundled dev rows' findings' last sentences against their impressions (realistic
lengths); two models, so the paired bootstrap and every table run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.baselines import last_sentence  # noqa: E402
from eval.prediction_file import dumps, read_predictions  # noqa: E402
from eval.report import build_report  # noqa: E402
from eval.rouge import Rouge  # noqa: E402
from eval.score import aggregate, score_rows  # noqa: E402
from radreport.io import atomic_write_json  # noqa: E402
from radreport.schema import load_examples  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
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
    result = {
        "command": " ".join(["python", *sys.argv]),
        "n": a.n,
        "score_one_file_s": t_score,
        "report_two_models_plus_baselines_s": t_report,
        "rouge1": agg["rouge1"]["mean"],
    }
    print(f"{'step':<44} {'seconds':>8}")
    print(f"{'score ' + str(a.n) + ' predictions (ROUGE, CI, labels)':<44} {t_score:>8.2f}")
    print(f"{'report: 2 models + 2 baselines x ' + str(a.n):<44} {t_report:>8.2f}")
    atomic_write_json(a.out, result)


if __name__ == "__main__":
    main()
