import json
import re

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


@pytest.mark.parametrize(
    "value,words",
    [
        (5.5, "must be a string, got a number"),
        (["Lungs clear."], "must be a string, got a list"),
        ({"text": "Lungs clear."}, "must be a string, got an object"),
        (True, "must be a string, got true"),
        (None, "must be a string, got null"),
        (7, "must be a string, got a number"),  # a number may be an id, never a findings text
    ],
)
def test_a_text_field_of_another_type_says_so(tmp_path, value, words):
    (tmp_path / "d.json").write_text(json.dumps([{**ROW, "findings": value}]))
    with pytest.raises(DataError, match=rf"d.json\[0\]: field 'findings' {words}"):
        load_examples(tmp_path / "d.json")


def test_numeric_ids_still_load(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{**ROW, "study_id": 12, "subject_id": 34}]))
    (row,) = load_examples(tmp_path / "d.json")
    assert (row.study_id, row.subject_id) == ("12", "34")


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_lone_surrogate_is_refused_at_load_naming_row_and_field(tmp_path, suffix):
    """JSON's \\ud800 escape decodes to text no file can hold: it used to fail at write time, after the work."""
    row = json.dumps({**ROW, "findings": "Heart \ud800 normal."})  # json.dumps writes the escape, as a file would
    assert "\\ud800" in row
    path = tmp_path / f"d{suffix}"
    path.write_text(f"[{row}]" if suffix == ".json" else f"{json.dumps(ROW)}\n{row}\n")
    where = r"d.json\[0\]" if suffix == ".json" else "d.jsonl:2"
    with pytest.raises(
        DataError, match=rf"{where}: field 'findings' holds a lone surrogate \(\\ud800 at character 6\)"
    ):
        load_examples(path)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_nul_in_a_text_field_is_refused(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps([{**ROW, "impression": "Nor\x00mal."}]))
    else:
        path.write_text("findings,impression\nLungs are clear.,Nor\x00mal.\n")
    where = r"d.json\[0\]" if suffix == ".json" else "d.csv:2"
    with pytest.raises(DataError, match=rf"{where}: field 'impression' holds a NUL character \(at character 3\)"):
        load_examples(path)


def test_deeply_nested_json_is_a_data_error_naming_the_file(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(DataError, match=r"deep.json: unreadable JSON \(nested too deeply\)"):
        load_examples(tmp_path / "deep.json")
    (tmp_path / "deep.jsonl").write_text(json.dumps(ROW) + "\n" + "[" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"deep.jsonl:2: unreadable JSON line \(nested too deeply\)"):
        load_examples(tmp_path / "deep.jsonl")


def test_a_number_too_long_to_convert_is_a_data_error(tmp_path):
    (tmp_path / "n.json").write_text('[{"study_id": ' + "9" * 5000 + "}]")
    with pytest.raises(DataError, match=r"n.json: unreadable JSON \(Exceeds the limit"):
        load_examples(tmp_path / "n.json")


def test_long_csv_fields_load_up_to_the_limit_and_are_refused_beyond_it_naming_the_line(tmp_path):
    import csv

    from radreport.schema import CSV_FIELD_LIMIT

    long = "Lungs are clear. " * 10_000  # 170,000 characters: over the csv module's default 131,072
    (tmp_path / "long.csv").write_text(f"findings,impression\nShort.,Normal.\n{long},Normal.\n")
    assert load_examples(tmp_path / "long.csv")[1].findings == long.strip()
    limit_before = csv.field_size_limit()
    huge = "x" * (CSV_FIELD_LIMIT + 1)
    (tmp_path / "huge.csv").write_text(f'findings,impression\nShort.,Normal.\n"{huge},Normal.\n')  # unclosed quote
    with pytest.raises(DataError, match=r"huge.csv:3: CSV field longer than 16,777,216 characters"):
        load_examples(tmp_path / "huge.csv", skip_bad=True)  # the rest of the file cannot be read: no skipping
    assert csv.field_size_limit() == limit_before  # the process-wide limit is set only while reading


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "twice.json",
            '[{"study_id": "1", "findings": "a", "findings": "b", "impression": "c"}]',
            "twice.json[0]: field 'findings' is given twice",
        ),
        (
            "twice.jsonl",
            '{"study_id": "1", "findings": "a", "impression": "c"}\n'
            '{"study_id": "2", "study_id": "3", "findings": "a", "impression": "c"}\n',
            "twice.jsonl:2: field 'study_id' is given twice",
        ),
        (
            "float.jsonl",
            '{"study_id": 1.5, "findings": "a", "impression": "c"}\n',
            "float.jsonl:1: field 'study_id' must be a string or a whole number, got a number (1.5)",
        ),
        (
            "list.jsonl",
            '{"study_id": [1], "findings": "a", "impression": "c"}\n',
            "list.jsonl:1: field 'study_id' must be a string or a whole number, got a list",
        ),
        (
            "open.csv",
            'findings,impression\nLungs clear.,Normal.\n"Lungs clear.,Normal.\nx,y\n',
            "open.csv:3: a quoted field of this row is never closed",
        ),
        (
            "header.csv",
            "findings,impression,findings\na,b,c\n",
            "header.csv:1: CSV header names column 'findings' more than once",
        ),
    ],
)
def test_rows_that_say_two_things_or_never_end_are_refused_by_place(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as e:
        load_examples(tmp_path / name)
    assert str(e.value) == f"{tmp_path}/{message}"


def test_a_repeated_key_outside_the_schema_is_not_our_business(tmp_path):
    (tmp_path / "extra.jsonl").write_text('{"study_id": "1", "findings": "a", "impression": "c", "x": 1, "x": 2}\n')
    assert load_examples(tmp_path / "extra.jsonl")[0].findings == "a"


def test_csv_stays_lenient_where_spreadsheets_are_and_names_the_line_an_open_quote_starts_on(tmp_path):
    (tmp_path / "space.csv").write_text('findings,impression\n"Lungs clear." ,Normal.\n"a ""quoted"" word",b\n')
    assert [e.findings for e in load_examples(tmp_path / "space.csv")] == ["Lungs clear.", 'a "quoted" word']
    (tmp_path / "gap.csv").write_text('findings,impression\na,b\n\n\n"never closed,d\ne,f\n')
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'gap.csv'}:5: a quoted field of this row is never")):
        load_examples(tmp_path / "gap.csv")


@pytest.mark.parametrize(
    "text, got", [('{"rows": []}', "expected a JSON list of rows, got an object"), ("[[1]]", "got a list")]
)
def test_json_of_another_shape_is_named_in_json_words(tmp_path, text, got):
    (tmp_path / "d.json").write_text(text)
    with pytest.raises(DataError, match=re.escape(got)):
        load_examples(tmp_path / "d.json")


def test_skipped_float_ids_are_counted_as_one_reason(tmp_path):
    rows = [{"study_id": i + 0.5, "findings": "a", "impression": "b"} for i in range(3)]
    rows.append({"study_id": "ok", "findings": "a", "impression": "b"})
    (tmp_path / "d.json").write_text(json.dumps(rows))
    report = LoadReport(str(tmp_path / "d.json"))
    assert len(load_examples(tmp_path / "d.json", skip_bad=True, report=report)) == 1
    assert report.skipped == {"field 'study_id' must be a string or a whole number, got a number": 3}
