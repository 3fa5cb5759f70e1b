import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from radreport.cli import run
from radreport.schema import Example, load_examples, write_examples
from train.prepare import findings_key, prepare_mimic, read_split_csv, split_holdout
from train.prepare import main as prepare_main
from train.synthetic import SAMPLE_COUNTS

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"  # as tests/conftest.py: public data, used only when present


def main(argv):
    """`python -m train.prepare ARGV` in-process: its exit status, errors printed as the command prints them."""
    return run(prepare_main, [str(a) for a in argv])


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones too), to show a refused command changed nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def mimic(sample_dir):
    return sample_dir / "mimic/mimic-cxr-reports.zip", sample_dir / "mimic/mimic_split_train_dev.csv"


@pytest.fixture
def prepared(mimic, tmp_path, capsys):
    """A finished `prepare mimic` run in tmp_path/out; returns (out, its files)."""
    out = tmp_path / "out"
    assert main(["mimic", "--zip", mimic[0], "--split", mimic[1], "--out", out]) == 0
    capsys.readouterr()
    return out, snapshot(tmp_path)


def one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_mimic_zip_gives_expected_counts_and_mediqa_text(mimic, prepared):
    out, _ = prepared
    train, dev = load_examples(out / "train.json"), load_examples(out / "dev.json")
    assert (len(train), len(dev)) == (SAMPLE_COUNTS["zip_train"], SAMPLE_COUNTS["zip_dev"])
    split_rows = mimic[1].read_text().splitlines()[1:]
    assert [e.study_id for e in train + dev] == [r.split(",")[0] for r in split_rows]
    with zipfile.ZipFile(mimic[0]) as z:
        reports = {Path(n).stem[1:]: z.read(n).decode() for n in z.namelist()}
    numbered = 0
    for e in train + dev:
        report = reports[e.study_id]
        assert "\n" not in e.findings + e.impression + e.background and "  " not in e.findings + e.impression
        assert not re.search(r"(^|\s)[0-9]\.\s", e.impression), e.impression  # list numbers removed
        body = report.split("IMPRESSION:" if "IMPRESSION:" in report else "CONCLUSION:")[1].split("NOTIFICATION:")[0]
        if "\n 1. " in body:
            numbered += 1
            # the items, in order, without their numbers: "1. A.\n 2. B." -> "A. B."
            assert e.impression == " ".join(re.sub(r"\n [0-9]\. ", "\n", "\n" + body).split())
        assert e.background.startswith(("EXAMINATION: CHEST (PA AND LAT)", "WET READ:"))
        assert "FINDINGS" not in e.background and "COMPARISON: " in e.background
    assert numbered >= 5
    wet = [e for e in train + dev if e.background.startswith("WET READ")]
    assert wet and all(" FINAL REPORT EXAMINATION: " in e.background for e in wet)  # kept after a wet read


@pytest.mark.skipif(not (SHARED_DATA / "mediqa2021/mimic_split_train_dev.csv").is_file(), reason="no shared data")
def test_the_real_mediqa_split_csv_reads_as_91544_train_and_2000_dev():
    rows = read_split_csv(SHARED_DATA / "mediqa2021/mimic_split_train_dev.csv")
    counts = {s: sum(r.split == s for r in rows) for s in {r.split for r in rows}}
    assert counts == {"train": 91544, "dev": 2000}
    assert len({r.study_id for r in rows}) == len(rows) == 93544
    assert rows[0].study_id == "58832226" and rows[0].subject_id == "11148901" and rows[0].line == 2


def test_mimic_study_without_findings_is_named(mimic, tmp_path, capsys):
    split = tmp_path / "split.csv"
    with zipfile.ZipFile(mimic[0]) as z:
        last = z.namelist()[-1]  # one of the incomplete reports, not in the real split
    study, subject = last.rsplit("/s", 1)[1][:-4], last.split("/")[2][1:]
    split.write_text(f"study_id,subject_id,split\n{study},{subject},train\n")
    assert main(["mimic", "--zip", mimic[0], "--split", split, "--out", tmp_path / "o"]) == 2
    one_error_line(capsys, f"split.csv:2: study {study}", last, "no FINDINGS section", "--skip-bad")
    assert not (tmp_path / "o").exists()
    # with --skip-bad it is counted; a split left with nothing is still refused
    assert main(["mimic", "--zip", mimic[0], "--split", split, "--out", tmp_path / "o", "--skip-bad"]) == 2
    one_error_line(capsys, "split 'train': every study was skipped (1 no FINDINGS section)")
    good = mimic[1].read_text().splitlines()[1]
    split.write_text(f"study_id,subject_id,split\n{good}\n{study},{subject},train\n")
    counts = prepare_mimic(mimic[0], split, tmp_path / "o", skip_bad=True)
    assert counts == {"train": 1, "train skipped (no FINDINGS section)": 1}


def test_a_failing_split_writes_no_split(mimic, prepared, capsys):
    """All outputs of one run or none: a bad dev study leaves the earlier train.json and dev.json as they were."""
    out, before = prepared
    with zipfile.ZipFile(mimic[0]) as z:
        incomplete = z.namelist()[-1]
    study, subject = incomplete.rsplit("/s", 1)[1][:-4], incomplete.split("/")[2][1:]
    rows = mimic[1].read_text().splitlines()
    split = out.parent / "split.csv"
    split.write_text("\n".join(rows[:5] + [f"{study},{subject},dev"]) + "\n")
    assert main(["mimic", "--zip", mimic[0], "--split", split, "--out", out]) == 2
    one_error_line(capsys, "split.csv:6", study)
    assert snapshot(out) == {k.removeprefix("out/"): v for k, v in before.items() if k.startswith("out/")}


@pytest.mark.parametrize(
    "csv_text, needles",
    [
        ("study_id,subject_id,split\n1,2,train\n3,,dev\n", ["split.csv:3: field 'subject_id' is empty"]),
        ("study_id,split\n1,train\n", ["split.csv:1: header lacks column(s) ['subject_id']"]),
        ("study_id,subject_id,split\n1,2,train\nx9,2,dev\n", ["split.csv:3: field 'study_id' is not a MIMIC id: 'x9'"]),
        ("study_id,subject_id,split\n", ["split.csv: no rows after the header"]),
        # a split name is a file name: never a path out of --out
        ("study_id,subject_id,split\n1,2,train\n3,4,../victim\n", ["split.csv:3: field 'split'", "'../victim'"]),
        ("study_id,subject_id,split\n1,2,/tmp/victim\n", ["split.csv:2: field 'split'", "'/tmp/victim'"]),
        ("study_id,subject_id,split\n1,2,.hidden\n", ["split.csv:2: field 'split'"]),
        # a study listed twice would be two rows with one study_id
        (
            "study_id,subject_id,split\n5,2,train\n6,2,train\ns5,2,dev\n",
            ["split.csv:4: duplicate study_id 5 (first at line 2)"],
        ),
        (b"study_id,subject_id,split\n1,2,tr\xe9in\n", ["split.csv:2: not UTF-8"]),
    ],
)
def test_bad_split_csv_is_refused_naming_line_and_field(mimic, prepared, capsys, csv_text, needles):
    out, before = prepared
    split = out.parent / "split.csv"
    split.write_bytes(csv_text if isinstance(csv_text, bytes) else csv_text.encode())
    assert main(["mimic", "--zip", mimic[0], "--split", split, "--out", out]) == 2
    one_error_line(capsys, *needles)
    after = snapshot(out.parent)
    after.pop("split.csv")
    assert after == before  # nothing beside --out (no victim.json), nothing in it changed


def test_bad_zip_and_bad_paths_are_refused_before_writing(mimic, prepared, capsys):
    out, before = prepared
    tmp = out.parent
    not_zip = tmp / "reports.zip"
    not_zip.write_text("this is no zip\n")
    truncated = tmp / "truncated.zip"
    truncated.write_bytes(mimic[0].read_bytes()[:-200])
    damaged = tmp / "damaged.zip"  # a flipped byte inside the first member's compressed data: CRC/inflate error
    data = bytearray(mimic[0].read_bytes())
    with zipfile.ZipFile(mimic[0]) as z:
        first = z.infolist()[0]
        first_study = Path(first.filename).stem[1:]
    start = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra)
    data[start + 10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    one_row = tmp / "one.csv"
    subject = first.filename.split("/")[2][1:]
    one_row.write_text(f"study_id,subject_id,split\n{first_study},{subject},train\n")
    cases = [
        (["--zip", not_zip, "--split", mimic[1]], ["--zip", "reports.zip", "not a readable zip file"]),
        (["--zip", truncated, "--split", mimic[1]], ["--zip", "truncated.zip", "not a readable zip file"]),
        (["--zip", damaged, "--split", one_row], ["damaged.zip:" + first.filename, "the zip is damaged"]),
        (["--zip", tmp / "missing.zip", "--split", mimic[1]], ["--zip", "missing.zip: file not found"]),
        (["--zip", tmp, "--split", mimic[1]], ["--zip", "is a directory"]),
        (["--zip", mimic[0], "--split", tmp / "nope.csv"], ["--split", "nope.csv: file not found"]),
    ]
    for args, needles in cases:
        assert main(["mimic", *args, "--out", out]) == 2, args
        one_error_line(capsys, *needles)
    # --out is checked first: an existing file is refused even though the zip is missing too
    assert main(["mimic", "--zip", tmp / "missing.zip", "--split", mimic[1], "--out", out / "train.json"]) == 2
    one_error_line(capsys, "--out", "train.json is an existing file")
    expected = snapshot(tmp)
    for name in ("reports.zip", "truncated.zip", "damaged.zip", "one.csv"):
        expected.pop(name)
    assert expected == before


def test_bad_input_prints_one_line_not_a_traceback(tmp_path):
    """The real command line, as a user runs it."""
    bad = tmp_path / "reports.zip"
    bad.write_text("not a zip")
    split = tmp_path / "split.csv"
    split.write_text("study_id,subject_id,split\n1,2,train\n")
    r = subprocess.run(
        [sys.executable, "-m", "train.prepare", "mimic", "--zip", bad, "--split", split, "--out", tmp_path / "o"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: --zip: ") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "o").exists()


def test_openi(sample_dir, tmp_path, capsys):
    assert main(["openi", "--xml-dir", sample_dir / "openi", "--out", tmp_path / "o.json"]) == 0
    rows = load_examples(tmp_path / "o.json")
    assert len(rows) == SAMPLE_COUNTS["openi"] - SAMPLE_COUNTS["openi_without_findings"]
    text = json.dumps([r.to_json() for r in rows])
    assert "XXXX" not in text and rows[0].background.startswith("Indication:")
    assert [r.study_id for r in rows] == [str(i) for i in range(3, 11)]


def test_openi_refuses_records_without_a_usable_study_id(sample_dir, tmp_path, capsys):
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    for f in (sample_dir / "openi").glob("*.xml"):
        (xml_dir / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "o.json"
    assert main(["openi", "--xml-dir", xml_dir, "--out", out]) == 0
    before = out.read_bytes()
    original = (xml_dir / "5.xml").read_text()
    for uid, needles in [
        ('<uId id=""/>', ["5.xml: <uId id=...> is missing or empty"]),
        ('<uId id="CXR"/>', ["5.xml: <uId id=...> is missing or empty"]),
        ("", ["5.xml: <uId id=...> is missing or empty"]),
        ('<uId id="CXR4"/>', ["5.xml: duplicate study_id '4'", "4.xml"]),
    ]:
        (xml_dir / "5.xml").write_text(original.replace('<uId id="CXR5"/>', uid))
        assert main(["openi", "--xml-dir", xml_dir, "--out", out]) == 2
        one_error_line(capsys, *needles)
        assert out.read_bytes() == before
    (xml_dir / "5.xml").write_text(original)
    assert main(["openi", "--xml-dir", xml_dir / "5.xml", "--out", out]) == 2
    one_error_line(capsys, "--xml-dir", "not a directory")
    assert main(["openi", "--xml-dir", xml_dir, "--out", tmp_path]) == 2
    one_error_line(capsys, "--out", "is an existing directory")
    assert out.read_bytes() == before


def test_split_keeps_each_findings_text_on_one_side(sample_dir, tmp_path, capsys):
    assert main(["split", "--data", sample_dir / "train.json", "--val-fraction", "0.05", "--out", tmp_path]) == 0
    assert "val: " in capsys.readouterr().out
    train, val = load_examples(tmp_path / "train.json"), load_examples(tmp_path / "val.json")
    assert len(train) + len(val) == 3000 and 140 <= len(val) <= 200
    assert not {findings_key(e.findings) for e in train} & {findings_key(e.findings) for e in val}
    again = split_holdout(load_examples(sample_dir / "train.json"), 0.05, 0)
    assert again[1] == val  # same seed, same split
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json", "val.json"]  # no staging files left


def rows(*findings: str) -> list[Example]:
    return [Example(str(i), "", f, "Normal.") for i, f in enumerate(findings)]


def test_split_refuses_an_empty_side(sample_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["split", "--data", sample_dir / "train.json", "--out", out]) == 0
    before = snapshot(out)
    cases = [
        (rows(*["Clear lungs."] * 5), ["same.json: all 5 rows share one findings text: no findings-disjoint split"]),
        (rows("Clear lungs."), ["same.json: all 1 rows share one findings text"]),
        (rows("A.", "B.", "C."), ["same.json: a validation fraction of 0.9 takes every findings text"]),
    ]
    for examples, needles in cases:
        write_examples(tmp_path / "same.json", examples)
        assert main(["split", "--data", tmp_path / "same.json", "--val-fraction", "0.9", "--out", out]) == 2
        one_error_line(capsys, *needles)
        assert snapshot(out) == before
    # one row of two distinct texts is enough for each side, whatever the fraction rounds to
    train, val = split_holdout(rows("A.", "B."), 0.05, 0)
    assert len(train) == len(val) == 1


@pytest.mark.parametrize("value", ["2", "nan", "0", "-0.1", "inf", "x"])
def test_split_refuses_a_bad_fraction(sample_dir, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["split", "--data", sample_dir / "train.json", "--val-fraction", value, "--out", tmp_path / "o"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --val-fraction" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_split_refuses_to_overwrite_its_input_or_a_file_out(tmp_path, sample_dir, capsys):
    data = tmp_path / "train.json"
    data.write_bytes((sample_dir / "train.json").read_bytes())
    assert main(["split", "--data", data, "--out", tmp_path]) == 2
    one_error_line(capsys, "--out", "would overwrite the --data file")
    assert main(["split", "--data", data, "--out", data]) == 2
    one_error_line(capsys, "--out", "is an existing file")
    assert data.read_bytes() == (sample_dir / "train.json").read_bytes()
    (tmp_path / "o" / "val.json").mkdir(parents=True)
    assert main(["split", "--data", data, "--out", tmp_path / "o"]) == 2
    one_error_line(capsys, "--out", "val.json is an existing directory")
    assert not (tmp_path / "o" / "train.json").exists()


def test_a_rerooted_zip_gives_the_same_rows_and_a_wrong_subject_is_refused(mimic, prepared, capsys):
    out, _ = prepared
    rerooted = out.parent / "rerooted.zip"
    with zipfile.ZipFile(mimic[0]) as src, zipfile.ZipFile(rerooted, "w") as dst:
        for info in src.infolist():
            dst.writestr("mimic-cxr-reports/" + info.filename, src.read(info))
    assert main(["mimic", "--zip", rerooted, "--split", mimic[1], "--out", out.parent / "again"]) == 0
    assert snapshot(out.parent / "again") == snapshot(out)
    first = mimic[1].read_text().splitlines()[1].split(",")
    split = out.parent / "split.csv"
    split.write_text(f"study_id,subject_id,split\n{first[0]},19999999,train\n")
    assert main(["mimic", "--zip", rerooted, "--split", split, "--out", out.parent / "o"]) == 2
    one_error_line(capsys, "split.csv:2", f"report is filed under subject {first[1]}, not 19999999")
    split.write_text("study_id,subject_id,split\n50000000,19999999,train\n")
    assert main(["mimic", "--zip", rerooted, "--split", split, "--out", out.parent / "o"]) == 2
    one_error_line(capsys, "split.csv:2: study 50000000", "files/p19/p19999999/s50000000.txt", "report not in zip")
    assert not (out.parent / "o").exists()
