"""The evaluator's commands on real files: predict (resumable), score, baselines, report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.__main__ import main as eval_main
from eval.stats import bootstrap_ci, paired_bootstrap
from radreport.cli import run

ROOT = Path(__file__).resolve().parents[2]


def main(argv):
    """`python -m eval ARGV` in-process: its exit status, errors printed as the command prints them."""
    return run(eval_main, argv)


def write_preds(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(model, preds, dataset="dev2"):
    refs = ["No acute cardiopulmonary process.", "Small left pleural effusion.", "Mild cardiomegaly."]
    return [
        {
            "id": str(i),
            "dataset": dataset,
            "model": model,
            "findings": f"Finding {i}. Last sentence {i}.",
            "reference": r,
            "prediction": p,
        }
        for i, (r, p) in enumerate(zip(refs, preds, strict=False))  # a shorter `preds` keeps its prefix of refs
    ]


def test_bootstrap_is_deterministic():
    import numpy as np

    v = np.random.default_rng(3).random(200)
    assert bootstrap_ci(v) == bootstrap_ci(v)
    assert paired_bootstrap(v, v * 0.9) == paired_bootstrap(v, v * 0.9)
    assert paired_bootstrap(v, v * 0.9)["p"] < 0.05


def test_score_json(tmp_path, capsys):
    f = write_preds(tmp_path / "p.jsonl", rows("m", ["No acute process.", "", "Mild cardiomegaly."]))
    assert main(["score", "--predictions", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and out["empty_predictions"] == 1
    assert set(out) >= {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert out["rouge1"]["ci95"][0] <= out["rouge1"]["mean"] <= out["rouge1"]["ci95"][1]


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"id": "1"}\n', "p.jsonl:1: field 'dataset' is missing"),
        ("not json\n", "p.jsonl:1: unreadable line"),
        (
            json.dumps(rows("m", ["a"])[0]) + "\n" + json.dumps(rows("m", ["a"])[0]) + "\n",
            "p.jsonl:2: duplicate id '0'",
        ),
    ],
)
def test_bad_prediction_files_name_file_and_line(tmp_path, capsys, content, message):
    (tmp_path / "p.jsonl").write_text(content)
    assert main(["score", "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert message in capsys.readouterr().err


def test_report_mismatched_ids(tmp_path, capsys):
    a = write_preds(tmp_path / "a.jsonl", rows("a", ["x", "y", "z"]))
    b = write_preds(tmp_path / "b.jsonl", rows("b", ["x", "y", "z"])[:2])
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "r")]) == 2
    assert "do not match" in capsys.readouterr().err


def test_report_is_byte_identical_when_regenerated(tmp_path, sample_dir):
    a = write_preds(tmp_path / "a.jsonl", rows("pretrained", ["Normal.", "No effusion.", "Heart normal."]))
    b = write_preds(
        tmp_path / "b.jsonl", rows("finetuned", ["No acute process.", "Small left effusion.", "Mild cardiomegaly."])
    )
    args = [str(a), str(b), "--train", str(sample_dir / "train.json")]
    assert main(["report", *args, "--out", str(tmp_path / "r1")]) == 0
    assert main(["report", *args, "--out", str(tmp_path / "r2")]) == 0
    files = sorted(p.name for p in (tmp_path / "r1").iterdir())
    assert {"report.md", "report.html", "scores.csv", "examples.csv", "boxplot-dev2.png"} <= set(files)
    for name in files:
        assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes(), name
    md = (tmp_path / "r1/report.md").read_text()
    assert "baseline-most-frequent" in md and "baseline-last-sentence" in md  # baselines always beside
    assert "Paired bootstrap" in md and "CheXpert" in md and "Worst" in md
    assert "data:image/png;base64," in (tmp_path / "r1/report.html").read_text()


def test_baselines(tmp_path, sample_dir):
    assert (
        main(
            [
                "baselines",
                "--train",
                str(sample_dir / "train.json"),
                "--data",
                str(sample_dir / "dev2.json"),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    most = [json.loads(x) for x in (tmp_path / "baseline-most-frequent-dev2.jsonl").read_text().splitlines()]
    assert len({r["prediction"] for r in most}) == 1 and len(most) == 300
    last = [json.loads(x) for x in (tmp_path / "baseline-last-sentence-dev2.jsonl").read_text().splitlines()]
    assert all(r["findings"].endswith(r["prediction"]) for r in last)


def test_predict_resumes_an_interrupted_file(tmp_path, tiny_model_dir, sample_dir):
    from radreport.schema import load_examples, write_examples

    data = tmp_path / "d.json"
    write_examples(data, load_examples(sample_dir / "dev1.json")[:12])
    out = tmp_path / "p.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "eval",
        "predict",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--out",
        str(out),
        "--num-beams",
        "2",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "4",
    ]
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    full = out.read_text()
    # simulate an interruption: 5 complete lines and a torn sixth in the partial file
    lines = full.splitlines(keepends=True)
    out.unlink()
    (tmp_path / "p.jsonl.partial").write_text("".join(lines[:5]) + lines[5][:20])
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    assert out.read_text() == full and not (tmp_path / "p.jsonl.partial").exists()
