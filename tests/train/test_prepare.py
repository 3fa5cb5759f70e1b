import json

from radreport.cli import run
from radreport.schema import load_examples
from train.prepare import findings_key, prepare_mimic, split_holdout
from train.prepare import main as prepare_main
from train.synthetic import SAMPLE_COUNTS


def main(argv):
    """`python -m train.prepare ARGV` in-process: its exit status, errors printed as the command prints them."""
    return run(prepare_main, argv)


def test_mimic_zip_gives_expected_counts(sample_dir, tmp_path, capsys):
    rc = main(
        [
            "mimic",
            "--zip",
            str(sample_dir / "mimic/mimic-cxr-reports.zip"),
            "--split",
            str(sample_dir / "mimic/mimic_split_train_dev.csv"),
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    train, dev = load_examples(tmp_path / "train.json"), load_examples(tmp_path / "dev.json")
    assert (len(train), len(dev)) == (SAMPLE_COUNTS["zip_train"], SAMPLE_COUNTS["zip_dev"])
    split_rows = (sample_dir / "mimic/mimic_split_train_dev.csv").read_text().splitlines()[1:]
    assert [e.study_id for e in train + dev] == [r.split(",")[0] for r in split_rows]
    assert all("FINDINGS" not in e.findings and e.background.startswith(("INDICATION", "TECHNIQUE")) for e in train)


def test_mimic_study_without_impression_is_named(sample_dir, tmp_path, capsys):
    split = tmp_path / "split.csv"
    import zipfile

    with zipfile.ZipFile(sample_dir / "mimic/mimic-cxr-reports.zip") as z:
        last = z.namelist()[-1]  # one of the incomplete reports, not in the real split
    study, subject = last.rsplit("/s", 1)[1][:-4], last.split("/")[2][1:]
    split.write_text(f"study_id,subject_id,split\n{study},{subject},train\n")
    rc = main(
        [
            "mimic",
            "--zip",
            str(sample_dir / "mimic/mimic-cxr-reports.zip"),
            "--split",
            str(split),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and f"study {study}" in capsys.readouterr().err
    counts = prepare_mimic(sample_dir / "mimic/mimic-cxr-reports.zip", split, tmp_path / "o", skip_bad=True)
    assert sum(v for k, v in counts.items() if k.startswith("skipped")) == 1


def test_bad_split_csv_names_line(tmp_path, sample_dir, capsys):
    split = tmp_path / "split.csv"
    split.write_text("study_id,subject_id,split\n1,2,train\n3,,dev\n")
    assert (
        main(
            [
                "mimic",
                "--zip",
                str(sample_dir / "mimic/mimic-cxr-reports.zip"),
                "--split",
                str(split),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "split.csv:3: field 'subject_id' is empty" in capsys.readouterr().err


def test_openi(sample_dir, tmp_path, capsys):
    assert main(["openi", "--xml-dir", str(sample_dir / "openi"), "--out", str(tmp_path / "o.json")]) == 0
    rows = load_examples(tmp_path / "o.json")
    assert len(rows) == SAMPLE_COUNTS["openi"] - SAMPLE_COUNTS["openi_without_findings"]
    text = json.dumps([r.to_json() for r in rows])
    assert "XXXX" not in text and rows[0].background.startswith("Indication:")


def test_split_keeps_each_findings_text_on_one_side(sample_dir, tmp_path, capsys):
    assert (
        main(["split", "--data", str(sample_dir / "train.json"), "--val-fraction", "0.05", "--out", str(tmp_path)]) == 0
    )
    assert "val: " in capsys.readouterr().out
    train, val = load_examples(tmp_path / "train.json"), load_examples(tmp_path / "val.json")
    assert len(train) + len(val) == 3000 and 140 <= len(val) <= 200
    assert not {findings_key(e.findings) for e in train} & {findings_key(e.findings) for e in val}
    again = split_holdout(load_examples(sample_dir / "train.json"), 0.05, 0)
    assert again[1] == val  # same seed, same split
