"""Offline evaluation.

python -m eval predict --model DIR --data FILE --out PRED.jsonl [--dataset dev2 --num-beams 10 --max-new-tokens 80]
python -m eval score --predictions PRED.jsonl [--json] [--aws-compatible]
python -m eval report PRED.jsonl [PRED2.jsonl ...] --out DIR [--train FILE] [--aws-compatible]
python -m eval baselines --train FILE --data FILE --out DIR [--dataset NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from radreport.cli import run
from radreport.schema import load_examples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("predict", help="batched beam search over a dataset (resumable)")
    pr.add_argument("--model", required=True)
    pr.add_argument("--data", required=True)
    pr.add_argument("--out", required=True, type=Path)
    pr.add_argument("--dataset", help="name in the report (default: the data file's stem)")
    pr.add_argument("--model-name", default="", help="name in the report (default: the model directory's name)")
    pr.add_argument("--num-beams", type=int)
    pr.add_argument("--max-new-tokens", type=int)
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument("--device", default="auto")
    pr.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    sc = sub.add_parser("score", help="aggregate metrics of one predictions file")
    sc.add_argument("--predictions", required=True, type=Path)
    sc.add_argument("--json", action="store_true")
    sc.add_argument("--aws-compatible", action="store_true", help="the reference's ROUGE settings")
    rp = sub.add_parser("report", help="tables, box plots, CSVs from predictions alone")
    rp.add_argument("predictions", nargs="+", type=Path)
    rp.add_argument("--out", required=True, type=Path)
    rp.add_argument("--train", help="training data, for the most-frequent-impression baseline")
    rp.add_argument("--aws-compatible", action="store_true")
    bl = sub.add_parser("baselines", help="prediction files of the trivial baselines")
    bl.add_argument("--train", required=True)
    bl.add_argument("--data", required=True)
    bl.add_argument("--dataset")
    bl.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    if a.cmd == "predict":
        from eval.predict import predict

        n = predict(
            a.model,
            a.data,
            a.out,
            a.dataset or Path(a.data).stem,
            a.model_name,
            a.batch_size,
            a.num_beams,
            a.max_new_tokens,
            a.device,
            a.dtype,
        )
        print(f"{a.out}: {n} predictions")
    elif a.cmd == "score":
        from eval.prediction_file import read_predictions
        from eval.rouge import Rouge
        from eval.score import aggregate, score_rows

        rouge = Rouge(a.aws_compatible)
        agg = aggregate(score_rows(read_predictions(a.predictions), rouge), rouge)
        if a.json:
            print(json.dumps(agg, sort_keys=True))
        else:
            print(f"{a.predictions}: n={agg['n']} ({agg['mode']})")
            for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
                print(f"  {k:<10} {agg[k]['mean']:.4f}  95% CI [{agg[k]['ci95'][0]:.4f}, {agg[k]['ci95'][1]:.4f}]")
            print(f"  CheXpert-label F1: micro {agg['chexpert_micro_f1']:.4f}, macro {agg['chexpert_macro_f1']:.4f}")
    elif a.cmd == "report":
        from eval.report import build_report

        train = load_examples(a.train) if a.train else None
        out = build_report(a.predictions, a.out, train, a.aws_compatible)
        print(f"wrote {out}/report.md, report.html, scores.csv, examples.csv and box plots")
    else:
        from eval.baselines import write_baselines

        paths = write_baselines(load_examples(a.train), load_examples(a.data), a.dataset or Path(a.data).stem, a.out)
        print("\n".join(str(x) for x in paths))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
