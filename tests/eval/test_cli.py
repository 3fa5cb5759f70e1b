"""The evaluator's commands on real files: score, report, baselines (predict: test_predict.py)."""

import csv
import io
import json
import re

import pytest

from eval.__main__ import main as eval_main
from eval.stats import bootstrap_ci, paired_bootstrap
from radreport.cli import run

REFS = ["No acute cardiopulmonary process.", "Small left pleural effusion.", "Mild cardiomegaly."]


def main(argv):
    """`python -m eval ARGV` in-process: its exit status, errors printed as the command prints them."""
    return run(eval_main, argv)


def write_preds(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(model, preds, dataset="dev2"):
    return [
        {
            "id": str(i),
            "dataset": dataset,
            "model": model,
            "findings": f"Finding {i}. Last sentence {i}.",
            "reference": r,
            "prediction": p,
        }
        for i, (r, p) in enumerate(zip(REFS, preds, strict=False))  # a shorter `preds` keeps its prefix of refs
    ]


def md_table(md: str, first_header: str) -> list[dict]:
    """The Markdown table whose header row starts with `| first_header |`, as dicts."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    out = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        out.append(dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True)))
    return out


def test_bootstrap_is_deterministic():
    import numpy as np

    v = np.random.default_rng(3).random(200)
    assert bootstrap_ci(v) == bootstrap_ci(v)
    assert paired_bootstrap(v, v * 0.9) == paired_bootstrap(v, v * 0.9)
    assert paired_bootstrap(v, v * 0.9)["p"] < 0.05


def test_score_json_carries_every_metric(tmp_path, capsys):
    preds = ["No acute cardiopulmonary process.", "", "Mild cardiomegaly."]
    f = write_preds(tmp_path / "p.jsonl", rows("m", preds))
    assert main(["score", "--predictions", str(f), "--json", "--aws-compatible"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["empty_predictions"]) == (3, 1)
    # two exact answers and an empty one: every ROUGE is 2/3 on average
    assert [out[k]["mean"] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")] == [pytest.approx(2 / 3)] * 4
    assert out["rouge1"]["ci95"][0] <= 2 / 3 <= out["rouge1"]["ci95"][1]
    # the normal reference is answered exactly; of the two abnormal ones, one exactly and one with nothing
    by_ref = out["rouge_by_reference"]
    assert (by_ref["normal"]["n"], by_ref["normal"]["rougeL"]["mean"]) == (1, pytest.approx(1.0))
    assert (by_ref["abnormal"]["n"], by_ref["abnormal"]["rougeL"]["mean"]) == (2, pytest.approx(0.5))
    c = out["clinical"]
    # cardiomegaly found, effusion missed: tp 1, fn 1
    assert c["micro_f1_abnormal"] == pytest.approx(2 / 3) and c["micro_f1_standard_five"] == pytest.approx(2 / 3)
    assert c["per_label"]["Pleural Effusion"]["recall"] == 0.0 and c["per_label"]["Cardiomegaly"]["f1"] == 1.0
    assert c["no_finding"]["f1"] == pytest.approx(1.0)
    assert out["collapse"] == {
        "distinct_predictions": 3,
        "top_prediction": "",
        "top_prediction_share": pytest.approx(1 / 3),
        "abnormal_references": 2,
        "abnormal_answered_normal": pytest.approx(0.5),
    }


def test_score_text_names_the_headline_numbers(tmp_path, capsys):
    f = write_preds(tmp_path / "p.jsonl", rows("m", ["No acute disease."] * 3))
    assert main(["score", "--predictions", str(f)]) == 0
    text = capsys.readouterr().out
    assert "CheXpert micro-F1: abnormal 0.0000, standard-5 0.0000" in text
    assert "collapse: 1 distinct predictions, top one 1.0000 of all, abnormal references answered normal 1.0000" in text


def test_report_mismatched_ids(tmp_path, capsys):
    a = write_preds(tmp_path / "a.jsonl", rows("a", ["x", "y", "z"]))
    b = write_preds(tmp_path / "b.jsonl", rows("b", ["x", "y", "z"])[:2])
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{b}: ids of 'b' on 'dev2' do not match those in {a}" in err
    assert not (tmp_path / "r").exists()


def test_report_is_byte_identical_when_regenerated(tmp_path, sample_dir):
    a = write_preds(tmp_path / "a.jsonl", rows("pretrained", ["Normal.", "No effusion.", "Heart normal."]))
    b = write_preds(
        tmp_path / "b.jsonl", rows("finetuned", ["No acute process.", "Small left effusion.", "Mild cardiomegaly."])
    )
    args = [str(a), str(b), "--train", str(sample_dir / "train.json")]
    assert main(["report", *args, "--out", str(tmp_path / "r1")]) == 0
    assert main(["report", *args, "--out", str(tmp_path / "r2")]) == 0
    files = sorted(p.name for p in (tmp_path / "r1").iterdir())
    assert files == ["boxplot-dev2.png", "examples.csv", "report.html", "report.md", "scores.csv"]
    for name in files:
        assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes(), name
    md = (tmp_path / "r1/report.md").read_text()
    headline = md_table(md, "dataset")
    assert [r["model"] for r in headline] == [
        "baseline-last-sentence",
        "baseline-most-frequent",
        "baseline-retrieval",
        "finetuned",
        "pretrained",
    ]
    finetuned = next(r for r in headline if r["model"] == "finetuned")
    # effusion and cardiomegaly both found: abnormal F1 1; 3 distinct predictions; no abnormal answered normal
    assert (finetuned["abnormal F1"], finetuned["standard-5 F1"], finetuned["distinct predictions"]) == (
        "1.0000",
        "1.0000",
        "3",
    )
    assert finetuned["abnormal answered normal"] == "0.0000"
    assert "data:image/png;base64," in (tmp_path / "r1/report.html").read_text()


def test_a_constant_prediction_scores_zero_abnormal_f1_in_the_report(tmp_path, sample_dir):
    a = write_preds(tmp_path / "a.jsonl", rows("constant", ["No acute cardiopulmonary process."] * 3))
    assert main(["report", str(a), "--train", str(sample_dir / "train.json"), "--out", str(tmp_path / "r")]) == 0
    row = next(r for r in md_table((tmp_path / "r/report.md").read_text(), "dataset") if r["model"] == "constant")
    assert row["abnormal F1"] == "0.0000" and row["standard-5 F1"] == "0.0000"
    assert (row["distinct predictions"], row["top prediction share"], row["abnormal answered normal"]) == (
        "1",
        "1.0000",
        "1.0000",
    )
    assert row["ROUGE-L normal refs"] == "1.0000" and row["ROUGE-L abnormal refs"] == "0.0000"
    scores = list(csv.DictReader(io.StringIO((tmp_path / "r/scores.csv").read_text())))
    value = {(r["model"], r["metric"]): r["value"] for r in scores}
    assert value[("constant", "micro_f1_abnormal")] == "0.0000"
    assert value[("constant", "f1:Cardiomegaly")] == "0.0000"


def test_report_without_train_has_only_the_last_sentence_baseline(tmp_path):
    a = write_preds(tmp_path / "a.jsonl", rows("m", REFS))
    assert main(["report", str(a), "--out", str(tmp_path / "r")]) == 0
    models = [r["model"] for r in md_table((tmp_path / "r/report.md").read_text(), "dataset")]
    assert models == ["baseline-last-sentence", "m"]


def test_report_replaces_a_previous_report_whole(tmp_path, sample_dir):
    a = write_preds(tmp_path / "a.jsonl", rows("m", REFS, dataset="one"))
    b = write_preds(tmp_path / "b.jsonl", rows("m", REFS, dataset="two"))
    out = tmp_path / "r"
    assert main(["report", str(a), "--out", str(out)]) == 0
    assert main(["report", str(b), "--out", str(out)]) == 0
    # the first run's box plot does not linger beside the second run's report
    assert sorted(p.name for p in out.iterdir()) == [
        "boxplot-two.png",
        "examples.csv",
        "report.html",
        "report.md",
        "scores.csv",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failure_midway_leaves_the_previous_report_byte_identical(tmp_path, monkeypatch, capsys):
    import eval.report

    a = write_preds(tmp_path / "a.jsonl", rows("m", REFS))
    out = tmp_path / "r"
    assert main(["report", str(a), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_plot(*args):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(eval.report, "boxplot_png", broken_plot)
    b = write_preds(tmp_path / "b.jsonl", rows("other", ["x", "y", "z"]))
    with pytest.raises(RuntimeError, match="plotting failed"):
        main(["report", str(a), str(b), "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half-built directory left


def test_baselines(tmp_path, sample_dir):
    argv = ["baselines", "--train", str(sample_dir / "train.json"), "--data", str(sample_dir / "dev2.json")]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "baseline-last-sentence-dev2.jsonl",
        "baseline-most-frequent-dev2.jsonl",
        "baseline-retrieval-dev2.jsonl",
    ]

    def read(name):
        return [json.loads(x) for x in (tmp_path / f"baseline-{name}-dev2.jsonl").read_text().splitlines()]

    most, last, retrieval = read("most-frequent"), read("last-sentence"), read("retrieval")
    assert len(most) == len(last) == len(retrieval) == 300
    assert len({r["prediction"] for r in most}) == 1
    assert all(r["findings"].endswith(r["prediction"]) for r in last)
    train = json.loads((sample_dir / "train.json").read_text())
    train_impressions = {r["impression"] for r in train}
    assert all(r["prediction"] in train_impressions for r in retrieval)
    # a study whose findings text is in the training set gets that study's impression back
    first_by_findings = {}
    for r in train:
        first_by_findings.setdefault(r["findings"], r["impression"])
    seen = [r for r in retrieval if r["findings"] in first_by_findings]
    assert all(r["prediction"] == first_by_findings[r["findings"]] for r in seen)


def test_report_with_retrieval_beats_a_constant_on_abnormal_f1(tmp_path, sample_dir):
    """On the synthetic sample, retrieval names abnormal findings; the most frequent impression cannot."""
    argv = ["baselines", "--train", str(sample_dir / "train.json"), "--data", str(sample_dir / "dev1.json")]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 0
    files = sorted(str(p) for p in (tmp_path / "p").iterdir())
    assert main(["report", *files, "--out", str(tmp_path / "r")]) == 0
    headline = {r["model"]: r for r in md_table((tmp_path / "r/report.md").read_text(), "dataset")}
    assert float(headline["baseline-retrieval"]["abnormal F1"]) > 0.5
    assert headline["baseline-most-frequent"]["abnormal F1"] in ("0.0000", "n/a")


def test_score_refuses_a_file_with_several_models(tmp_path, capsys):
    f = write_preds(tmp_path / "p.jsonl", rows("a", REFS) + rows("b", REFS))
    assert main(["score", "--predictions", str(f)]) == 2
    assert f"{f}: holds several models or datasets" in capsys.readouterr().err


def test_no_tracebacks_in_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        eval_main(["score"])
    assert e.value.code == 2 and re.search(r"--predictions", capsys.readouterr().err)


HOSTILE_MODEL = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://example.com/x","click")'


def test_report_text_from_prediction_files_is_text_not_markup_or_formulas(tmp_path):
    """A model name is HTML-escaped in report.md (Markdown renderers pass raw HTML through); a cell that a
    spreadsheet would run as a formula is written with a leading quote; the report is still byte-identical."""
    preds = [FORMULA, "-1+1 effusion", "@SUM(A1) & more\nsecond line | cell"]
    a = write_preds(tmp_path / "a.jsonl", rows(HOSTILE_MODEL, preds))
    assert main(["report", str(a), "--out", str(tmp_path / "r1")]) == 0
    assert main(["report", str(a), "--out", str(tmp_path / "r2")]) == 0
    for name in ("report.md", "examples.csv", "scores.csv"):
        assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes(), name
    md = (tmp_path / "r1/report.md").read_text()
    assert "<script" not in md
    assert "@SUM(A1) &amp; more second line \\| cell" in md  # one table row: no line break, `|` escaped
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert {r["model"] for r in md_table(md, "dataset")} == {"baseline-last-sentence", escaped}
    examples = list(csv.DictReader(io.StringIO((tmp_path / "r1/examples.csv").read_text())))
    ours = {r["id"]: r for r in examples if r["model"] == HOSTILE_MODEL}  # no formula character: as written
    assert [ours[str(i)]["prediction"] for i in range(3)] == ["'" + p for p in preds]
    assert all(not r[k].startswith("'") for r in examples for k in ("rouge1", "rougeL", "reference"))
    html = (tmp_path / "r1/report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_carriage_return_in_a_text_cannot_start_a_csv_row(tmp_path):
    """A lone "\\r" is a row break to spreadsheets and csv readers; unquoted, the text after it would start a row
    of its own, formula and all. Line breaks in a cell are written as "\\n", which the csv module quotes."""
    preds = ["mid cell\r=1+1", "\r=cr", "x\r\n@SUM(1)"]
    a = write_preds(tmp_path / "a.jsonl", rows(HOSTILE_MODEL, preds))
    assert main(["report", str(a), "--out", str(tmp_path / "r")]) == 0
    with open(tmp_path / "r/examples.csv", newline="") as f:
        table = list(csv.reader(f))
    header, body = table[0], table[1:]
    assert all(len(r) == len(header) for r in body)  # no row was split
    ours = {r[header.index("id")]: r[header.index("prediction")] for r in body if r[1] == HOSTILE_MODEL}
    assert ours == {"0": "mid cell\n=1+1", "1": "\n=cr", "2": "x\n@SUM(1)"}
    assert not any(c.startswith(("=", "+", "@")) for r in body for c in r)


def test_report_out_that_is_a_link_or_the_current_directory_is_refused(tmp_path, monkeypatch, capsys):
    """The report replaces --out whole, by renaming: a link would be replaced by the report (the old report left
    behind as a dangling `.old`), and `.` would be the directory the user stands in."""
    a = write_preds(tmp_path / "a.jsonl", rows("m", REFS))
    assert main(["report", str(a), "--out", str(tmp_path / "rep")]) == 0
    (tmp_path / "link").symlink_to(tmp_path / "rep")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["report", str(a), "--out", str(tmp_path / "link")]) == 2
    assert f"--out: {tmp_path / 'link'} is a symbolic link; name the directory itself" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path / "rep")
    for out in (".", ".."):
        assert main(["report", str(a), "--out", out]) == 2
        assert "is the current directory or above it; the report replaces --out whole" in capsys.readouterr().err
    with pytest.raises(SystemExit) as empty:
        main(["report", str(a), "--out", ""])
    assert empty.value.code == 2 and "argument --out: an empty path" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "link").is_symlink()
