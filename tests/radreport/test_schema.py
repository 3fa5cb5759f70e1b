import json

import pytest

from radreport.schema import DataError, Example, LoadReport, load_examples, write_examples

ROW = {"study_id": "1", "subject_id": "2", "findings": "Lungs are clear.", "impression": "Normal.", "background": ""}


def test_bundled_sample_loads(sample_dir):
    rows = load_examples(sample_dir / "train.json")
    assert len(rows) == 3000 and all(isinstance(r, Example) and r.findings and r.impression for r in rows)


def test_json_jsonl_csv_round_trip(tmp_path):
    write_examples(tmp_path / "a.json", [Example(**ROW)])
    write_examples(tmp_path / "a.jsonl", [Example(**ROW)])
    (tmp_path / "a.csv").write_text("findings,impression\nLungs are clear.,Normal.\n")
    assert load_examples(tmp_path / "a.json") == load_examples(tmp_path / "a.jsonl") == [Example(**ROW)]
    (csv_row,) = load_examples(tmp_path / "a.csv")
    assert (csv_row.findings, csv_row.impression, csv_row.study_id) == ("Lungs are clear.", "Normal.", "2")


@pytest.mark.parametrize("field", ["findings", "impression", "study_id"])
def test_missing_field_names_file_index_and_field(tmp_path, field):
    rows = [ROW, {k: v for k, v in ROW.items() if k != field}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=rf"d.json\[1\]: field '{field}' is missing"):
        load_examples(tmp_path / "d.json")


def test_empty_field_in_jsonl_names_line(tmp_path):
    lines = [json.dumps(ROW), json.dumps({**ROW, "impression": "   "})]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:2: field 'impression' is empty"):
        load_examples(tmp_path / "d.jsonl")


def test_malformed_line_and_non_utf8(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps(ROW) + "\n{not json\n")
    with pytest.raises(DataError, match=r"m.jsonl:2: malformed JSON line"):
        load_examples(tmp_path / "m.jsonl")
    (tmp_path / "b.json").write_bytes(b'[\n{"findings": "caf\xe9"}]')
    with pytest.raises(DataError, match=r"b.json:2: not UTF-8"):
        load_examples(tmp_path / "b.json")


def test_csv_without_columns(tmp_path):
    (tmp_path / "c.csv").write_text("text,summary\na,b\n")
    with pytest.raises(DataError, match=r"c.csv:1: CSV header lacks column\(s\) \['findings', 'impression'\]"):
        load_examples(tmp_path / "c.csv")


def test_skip_bad_counts_reasons(tmp_path):
    lines = [json.dumps(ROW), "{bad", json.dumps({**ROW, "findings": ""}), json.dumps({**ROW, "findings": ""})]
    (tmp_path / "s.jsonl").write_text("\n".join(lines))
    report = LoadReport(str(tmp_path / "s.jsonl"))
    rows = load_examples(tmp_path / "s.jsonl", skip_bad=True, report=report)
    assert len(rows) == 1 and report.kept == 1
    assert report.skipped == {"field 'findings' is empty": 2, "malformed JSON line": 1}
    assert "3 skipped" in report.summary()


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_examples(tmp_path / "nope.json")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown data format"):
        load_examples(tmp_path / "x.txt")


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_duplicate_study_ids_name_both_places(tmp_path, suffix):
    rows = [ROW, {**ROW, "study_id": "9"}, ROW]
    path = tmp_path / f"d{suffix}"
    text = json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text)
    where = (r"d.json\[2\]", r"d.json\[0\]") if suffix == ".json" else ("d.jsonl:3", "d.jsonl:1")
    with pytest.raises(DataError, match=rf"{where[0]}: duplicate study_id '1' \(first at .*{where[1]}\)"):
        load_examples(path)
    report = LoadReport(str(path))
    assert [r.study_id for r in load_examples(path, skip_bad=True, report=report)] == ["1", "9"]
    assert sum(report.skipped.values()) == 1


def test_boolean_text_fields_are_refused(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{**ROW, "impression": False}]))
    with pytest.raises(DataError, match=r"d.json\[0\]: field 'impression' must be a string, got false"):
        load_examples(tmp_path / "d.json")
