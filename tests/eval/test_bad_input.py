"""Bad input to `eval score|report|baselines`: one line naming the file and field (or flag), exit 2, no
traceback, and what an earlier run wrote stays byte-identical. (`eval predict`: test_predict.py.)"""

import json
from pathlib import Path

import pytest

from eval.__main__ import main as eval_main
from radreport.cli import run

GOOD = {
    "id": "1",
    "dataset": "dev2",
    "model": "m",
    "findings": "F.",
    "reference": "No acute disease.",
    "prediction": "P.",
}


def line(**change):
    return json.dumps({**GOOD, **change}) + "\n"


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def ws(tmp_path, sample_dir):
    """A workspace after good runs: predictions, a report of them, baseline files. Refusals must leave the
    whole of tmp_path (the workspace and what lies beside it) as it was."""
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    (tmp_path / "good.jsonl").write_text(line() + line(id="2", reference="Small left effusion."))
    assert run(eval_main, ["report", str(tmp_path / "good.jsonl"), "--out", str(tmp_path / "report")]) == 0
    train, dev = sample_dir / "train.json", sample_dir / "dev2.json"
    argv = ["baselines", "--train", str(train), "--data", str(dev), "--out", str(tmp_path / "baselines")]
    assert run(eval_main, argv) == 0
    return tmp_path


def refused(capsys, ws: Path, argv: list[str], *needles: str) -> str:
    before = snapshot(ws.parent)
    try:
        code = run(eval_main, argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
    for needle in needles:
        assert needle in err, err
    assert snapshot(ws.parent) == before  # nothing written, nothing replaced, anywhere around
    return err


# predictions files: each class of bad content, refused by score and by report
PREDICTION_CASES = [
    ("missing.jsonl", None, "missing.jsonl: file not found"),
    ("notjson.jsonl", "not json\n", "notjson.jsonl:1: unreadable line (JSONDecodeError)"),
    ("latin1.jsonl", b"\xe9\xe9\n", "latin1.jsonl:1: unreadable line (UnicodeDecodeError)"),
    ("list.jsonl", "[1, 2]\n", "list.jsonl:1: expected a JSON object"),
    ("nofield.jsonl", '{"id": "1"}\n', "nofield.jsonl:1: field 'dataset' is missing or not a string"),
    ("number.jsonl", line(prediction=3), "number.jsonl:1: field 'prediction' is missing or not a string"),
    ("emptyref.jsonl", line(reference=" "), "emptyref.jsonl:1: field 'reference' is empty"),
    ("dup.jsonl", line() + line(), "dup.jsonl:2: duplicate id '1' (first on line 1)"),
    ("empty.jsonl", "\n", "empty.jsonl: no predictions"),
    ("escape.jsonl", line(dataset="x/../../victim"), "escape.jsonl:1: field 'dataset': 'x/../../victim' cannot be"),
    ("dot.jsonl", line(dataset=".."), "dot.jsonl:1: field 'dataset': '..' cannot be used in a file name"),
    # JSON's \ud800 escape: text no report file can hold (it failed at write time, after the scoring)
    ("surrogate.jsonl", line(prediction="P \ud800"), "surrogate.jsonl:1: field 'prediction' holds a lone surrogate"),
]


def _write_case(ws: Path, name: str, content) -> Path:
    path = ws / "in" / name
    path.parent.mkdir(exist_ok=True)
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name,content,message", PREDICTION_CASES)
def test_score_refuses_bad_predictions(capsys, ws, name, content, message):
    path = _write_case(ws, name, content)
    refused(capsys, ws, ["score", "--predictions", str(path)], message)


@pytest.mark.parametrize("name,content,message", PREDICTION_CASES)
def test_report_refuses_bad_predictions_and_keeps_the_previous_report(capsys, ws, name, content, message):
    path = _write_case(ws, name, content)
    refused(capsys, ws, ["report", str(ws / "good.jsonl"), str(path), "--out", str(ws / "report")], message)


def test_nothing_is_written_outside_the_report_directory(capsys, ws):
    """The hostile dataset name of issue 14: `x/../../victim` would have put a box plot two levels up."""
    path = _write_case(ws, "hostile.jsonl", line(dataset="x/../../victim"))
    refused(capsys, ws, ["report", str(path), "--out", str(ws / "report")], "field 'dataset'")
    assert not list(ws.parent.rglob("*victim*"))


def test_predictions_given_as_a_directory(capsys, ws):
    refused(capsys, ws, ["score", "--predictions", str(ws)], f"--predictions: {ws} is a directory, expected a file")


def test_report_refuses_one_model_in_two_files(capsys, ws):
    copy = _write_case(ws, "copy.jsonl", (ws / "good.jsonl").read_text())
    refused(
        capsys,
        ws,
        ["report", str(ws / "good.jsonl"), str(copy), "--out", str(ws / "report")],
        f"{copy}: model 'm' on 'dev2' also in {ws / 'good.jsonl'}",
    )


def test_report_out_is_a_file(capsys, ws):
    refused(
        capsys,
        ws,
        ["report", str(ws / "good.jsonl"), "--out", str(ws / "good.jsonl")],
        f"--out: {ws / 'good.jsonl'} is an existing file, expected a directory",
    )


def test_report_out_holds_other_files(capsys, ws):
    """`--out` naming the predictions' own directory would have replaced (deleted) the predictions."""
    refused(
        capsys,
        ws,
        ["report", str(ws / "good.jsonl"), "--out", str(ws)],
        f"--out: {ws} holds files that are not part of a report (baselines, good.jsonl, report)",
    )


def test_report_bad_train(capsys, ws, tmp_path):
    bad = _write_case(ws, "train.json", json.dumps([{"study_id": "1", "findings": "F."}]))
    refused(
        capsys,
        ws,
        ["report", str(ws / "good.jsonl"), "--train", str(bad), "--out", str(ws / "report")],
        f"{bad}[0]: field 'impression' is missing",
    )
    refused(
        capsys,
        ws,
        ["report", str(ws / "good.jsonl"), "--train", str(ws / "none.json"), "--out", str(ws / "report")],
        "--train: ",
        "none.json: file not found",
    )


def _baselines(ws, train, data, *extra):
    return ["baselines", "--train", str(train), "--data", str(data), "--out", str(ws / "baselines"), *extra]


def test_baselines_refuse_duplicate_study_ids(capsys, ws, sample_dir):
    rows = json.loads((sample_dir / "dev2.json").read_text())[:3]
    rows.append(dict(rows[0]))
    data = _write_case(ws, "dev2.json", json.dumps(rows))
    refused(
        capsys,
        ws,
        _baselines(ws, sample_dir / "train.json", data),
        f"{data}[3]: duplicate study_id '{rows[0]['study_id']}' (first at {data}[0])",
    )


def test_baselines_refuse_a_bad_training_row(capsys, ws, sample_dir):
    rows = json.loads((sample_dir / "train.json").read_text())[:3]
    rows[2]["impression"] = False
    train = _write_case(ws, "train.json", json.dumps(rows))
    refused(
        capsys,
        ws,
        _baselines(ws, train, sample_dir / "dev2.json"),
        f"{train}[2]: field 'impression' must be a string, got false",
    )


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dataset", "../victim"], "--dataset: '../victim' cannot be used in a file name"),
        (["--dataset", "a/b"], "--dataset: 'a/b' cannot be used in a file name"),
    ],
)
def test_baselines_refuse_unsafe_dataset_names(capsys, ws, sample_dir, extra, message):
    refused(capsys, ws, _baselines(ws, sample_dir / "train.json", sample_dir / "dev2.json", *extra), message)


def test_baselines_data_file_name_that_cannot_be_a_dataset_name(capsys, ws, sample_dir):
    data = _write_case(ws, "dev 2.json", (sample_dir / "dev2.json").read_text())
    refused(
        capsys,
        ws,
        _baselines(ws, sample_dir / "train.json", data),
        f"--data: {data} (name the dataset with --dataset): its stem: 'dev 2' cannot be used in a file name",
    )


def test_baselines_out_is_a_file(capsys, ws, sample_dir):
    argv = _baselines(ws, sample_dir / "train.json", sample_dir / "dev2.json")
    argv[argv.index("--out") + 1] = str(ws / "good.jsonl")
    refused(capsys, ws, argv, f"--out: {ws / 'good.jsonl'} is an existing file, expected a directory")


def test_baselines_unknown_data_format(capsys, ws, sample_dir):
    data = _write_case(ws, "dev2.txt", "findings")
    refused(capsys, ws, _baselines(ws, sample_dir / "train.json", data), f"{data}: unknown data format '.txt'")


def test_report_refuses_a_file_given_twice(capsys, ws):
    good = str(ws / "good.jsonl")
    refused(capsys, ws, ["report", good, good, "--out", str(ws / "report")], f"predictions: {good} is given twice")


def test_baselines_refuse_training_findings_without_words(capsys, ws, sample_dir):
    rows = [{"study_id": str(i), "findings": "...", "impression": "No acute disease."} for i in range(3)]
    train = _write_case(ws, "train.json", json.dumps(rows))
    refused(
        capsys, ws, _baselines(ws, train, sample_dir / "dev2.json"), "training data: no word to index in any findings"
    )


@pytest.mark.parametrize("flag", ["--data", "--train"])
def test_baselines_refuse_an_out_file_that_is_an_input(capsys, ws, sample_dir, flag):
    """With --dataset dev2, --out DIR writes DIR/baseline-NAME-dev2.jsonl: an input of that name was replaced."""
    name = "baseline-retrieval-dev2.jsonl" if flag == "--data" else "baseline-most-frequent-dev2.jsonl"
    rows = json.loads((sample_dir / "dev2.json").read_text())[:5]
    victim = ws / "baselines" / name
    victim.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, data = (sample_dir / "train.json", victim) if flag == "--data" else (victim, sample_dir / "dev2.json")
    refused(
        capsys, ws, _baselines(ws, train, data, "--dataset", "dev2"), f"--out: {victim} would overwrite the {flag} file"
    )


def test_report_refuses_an_out_directory_holding_its_input(capsys, ws):
    """The report replaces --out whole: predictions saved under a report file's name inside it were deleted."""
    inside = ws / "report" / "scores.csv"
    inside.write_text((ws / "good.jsonl").read_text())
    refused(
        capsys,
        ws,
        ["report", str(inside), "--out", str(ws / "report")],
        f"--out: {ws / 'report'} holds the predictions file {inside}; the report replaces its directory whole",
    )
