"""Offline evaluation.

python -m eval predict --model DIR --data FILE --out PRED.jsonl [--dataset dev2 --num-beams 10 --max-new-tokens 80]
python -m eval score --predictions PRED.jsonl [--json] [--aws-compatible]
python -m eval report PRED.jsonl [PRED2.jsonl ...] --out DIR [--train FILE] [--aws-compatible]
python -m eval baselines --train FILE --data FILE --out DIR [--dataset NAME]

Every path and name is checked before any work: a bad one is one line, `error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from radreport.cli import path_arg, positive_int, run
from radreport.errors import InputError
from radreport.paths import existing_file, not_an_input, output_dir, output_file, safe_name
from radreport.schema import load_examples


def _dataset_name(given: str | None, data: Path) -> str:
    """--dataset, or the data file's stem; it becomes part of file names (baselines, report plots)."""
    if given:
        return safe_name(given, "--dataset")
    return safe_name(data.stem, f"--data: {data} (name the dataset with --dataset): its stem")


def _score_text(path: Path, agg: dict) -> str:
    c, col = agg["clinical"], agg["collapse"]
    lines = [f"{path}: n={agg['n']} ({agg['mode']})"]
    for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        lines.append(f"  {k:<10} {agg[k]['mean']:.4f}  95% CI [{agg[k]['ci95'][0]:.4f}, {agg[k]['ci95'][1]:.4f}]")
    for group in ("normal", "abnormal"):
        g = agg["rouge_by_reference"][group]
        value = "n/a" if g["rougeL"] is None else f"{g['rougeL']['mean']:.4f}"
        lines.append(f"  rougeL on {group} references (n={g['n']}): {value}")

    def f(x):
        return "n/a" if x is None else f"{x:.4f}"

    lines.append(
        f"  CheXpert micro-F1: abnormal {f(c['micro_f1_abnormal'])}, standard-5 {f(c['micro_f1_standard_five'])}; "
        f"No Finding F1 {f(c['no_finding']['f1'])}"
    )
    lines.append(
        f"  collapse: {col['distinct_predictions']} distinct predictions, top one {f(col['top_prediction_share'])} "
        f"of all, abnormal references answered normal {f(col['abnormal_answered_normal'])}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("predict", help="batched beam search over a dataset (resumable)")
    pr.add_argument("--model", required=True)
    pr.add_argument("--data", required=True, type=Path)
    pr.add_argument("--out", required=True, type=path_arg)
    pr.add_argument("--dataset", help="name in the report (default: the data file's stem)")
    pr.add_argument("--model-name", default="", help="name in the report (default: the model directory's name)")
    pr.add_argument("--num-beams", type=positive_int)
    pr.add_argument("--max-new-tokens", type=positive_int)
    pr.add_argument("--batch-size", type=positive_int, default=16)
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    pr.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    sc = sub.add_parser("score", help="aggregate metrics of one predictions file")
    sc.add_argument("--predictions", required=True, type=Path)
    sc.add_argument("--json", action="store_true")
    sc.add_argument("--aws-compatible", action="store_true", help="the reference's ROUGE settings")
    rp = sub.add_parser("report", help="tables, box plots, CSVs from predictions alone")
    rp.add_argument("predictions", nargs="+", type=Path)
    rp.add_argument("--out", required=True, type=path_arg)
    rp.add_argument("--train", type=Path, help="training data, for the most-frequent and retrieval baselines")
    rp.add_argument("--aws-compatible", action="store_true")
    bl = sub.add_parser("baselines", help="prediction files of the baselines (most-frequent, last-sentence, retrieval)")
    bl.add_argument("--train", required=True, type=Path)
    bl.add_argument("--data", required=True, type=Path)
    bl.add_argument("--dataset")
    bl.add_argument("--out", required=True, type=path_arg)
    a = p.parse_args(argv)
    if a.cmd == "predict":
        from eval.predict import predict

        existing_file(a.data, "--data")
        dataset = _dataset_name(a.dataset, a.data)
        output_file(a.out, "--out")  # and predict() refuses an --out that names an input, before any work
        n = predict(
            a.model,
            a.data,
            a.out,
            dataset,
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

        existing_file(a.predictions, "--predictions")
        rows = read_predictions(a.predictions)
        if len({(r["dataset"], r["model"]) for r in rows}) > 1:
            raise InputError(f"{a.predictions}: holds several models or datasets; `score` takes one of each")
        rouge = Rouge(a.aws_compatible)
        agg = aggregate(score_rows(rows, rouge), rouge)
        print(json.dumps(agg, sort_keys=True) if a.json else _score_text(a.predictions, agg))
    elif a.cmd == "report":
        from eval.report import build_report, check_report_dir

        seen: dict[Path, Path] = {}
        for f in a.predictions:
            existing_file(f, "predictions")
            if f.resolve() in seen:
                raise InputError(f"predictions: {f} is given twice (also as {seen[f.resolve()]})")
            seen[f.resolve()] = f
        if a.train:
            existing_file(a.train, "--train")
        check_report_dir(a.out, [*(("predictions", f) for f in a.predictions), ("--train", a.train)])
        train = load_examples(a.train) if a.train else None
        out = build_report(a.predictions, a.out, train, a.aws_compatible)
        print(f"wrote {out}/report.md, report.html, scores.csv, examples.csv and box plots")
    else:
        from eval.baselines import baseline_paths, write_baselines

        existing_file(a.train, "--train")
        existing_file(a.data, "--data")
        dataset = _dataset_name(a.dataset, a.data)
        out = output_dir(a.out, "--out")
        for path in baseline_paths(out, dataset).values():  # e.g. --data preds/baseline-retrieval-dev1.jsonl
            not_an_input(path, f"--out: {path}", {"--train": a.train, "--data": a.data})
        paths = write_baselines(load_examples(a.train), load_examples(a.data), dataset, out)
        print("\n".join(str(x) for x in paths))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
