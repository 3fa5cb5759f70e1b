"""Dataset rows in the MEDIQA 2021 Task 3 form, and their loading.

Accepted files:
  *.json   a JSON list of {study_id, subject_id, findings, impression, background}
  *.jsonl  one such object a line
  *.csv    at least `findings` and `impression` columns (ids are made from the row number)

Every problem is reported with the file, the line (JSON lists: the index) and the field. With
`skip_bad=True` bad rows are dropped instead and counted by reason.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from radreport.errors import InputError
from radreport.io import atomic_write_text

REQUIRED_TEXT = ("findings", "impression")
FIELDS = ("study_id", "subject_id", "findings", "impression", "background")
IDS = ("study_id", "subject_id")  # MEDIQA-style files may hold ids as JSON numbers; text fields must be text
# Python's csv module refuses fields over 128 KiB (its default limit). A findings text is a few KB; a field of
# 16 Mi characters is a broken file (an unclosed quote swallowing the rest), named by line rather than
# read into memory whole.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
JSON_TYPES = {int: "a number", float: "a number", list: "a list", dict: "an object"}


@dataclass(frozen=True)
class Example:
    study_id: str
    subject_id: str
    findings: str
    impression: str
    background: str = ""

    def to_json(self) -> dict:
        return asdict(self)


class DataError(InputError):
    """A data file is unreadable or a row breaks the schema; the message names where."""


@dataclass
class LoadReport:
    """What `load_examples(..., skip_bad=True)` left out, by reason."""

    path: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.path}: {self.kept} rows"
        reasons = ", ".join(f"{n} {why}" for why, n in self.skipped.most_common())
        return f"{self.path}: {self.kept} rows kept, {sum(self.skipped.values())} skipped ({reasons})"


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return next((name for tp, name in JSON_TYPES.items() if isinstance(value, tp)), type(value).__name__)


def text_problem(value: str) -> str | None:
    """What keeps a text from being written or used as report text, or None: a lone surrogate, a NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON's "\ud800" escape decodes to a lone surrogate, which no file can hold
        return f"holds a lone surrogate (\\u{ord(value[e.start]):04x} at character {e.start}): not valid Unicode"
    nul = value.find("\0")
    if nul >= 0:  # no report text holds a NUL: it means a binary or broken file, and C-based tools stop at it
        return f"holds a NUL character (at character {nul})"
    return None


class _Object(dict):
    """A JSON object that remembers the keys it was given twice (json keeps the last one silently)."""

    def __init__(self, pairs):
        super().__init__(pairs)
        seen, self.repeated = set(), []
        for key, _ in pairs:
            if key in seen:
                self.repeated.append(key)
            seen.add(key)


def _loads(text: str):
    return json.loads(text, object_pairs_hook=_Object)


def _row_to_example(row: object, where: str, require_ids: bool) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with fields {list(FIELDS)}, got {_json_type(row)}")
    repeated = [k for k in getattr(row, "repeated", ()) if k in FIELDS]
    if repeated:  # two findings (or ids) in one row: which one the writer meant is not ours to guess
        raise DataError(f"{where}: field '{repeated[0]}' is given twice")
    values = {}
    for name in FIELDS:
        value = row.get(name)
        required = name in REQUIRED_TEXT or (require_ids and name == "study_id")
        if value is None:
            if required:
                raise DataError(
                    f"{where}: field '{name}' {'is missing' if name not in row else 'must be a string, got null'}"
                )
            values[name] = ""
            continue
        # The type first: `impression: false` must not train on "False", nor `findings: 5.5` pass as "is empty"
        is_id = name in IDS and isinstance(value, int) and not isinstance(value, bool)
        if not isinstance(value, str) and not is_id:
            if name in IDS:  # an id may be a JSON integer; 1.5 or 1e3 is no id
                got = f"a number ({json.dumps(value)})" if isinstance(value, float) else _json_type(value)
                raise DataError(f"{where}: field '{name}' must be a string or a whole number, got {got}")
            raise DataError(f"{where}: field '{name}' must be a string, got {_json_type(value)}")
        text = str(value)
        problem = text_problem(text)
        if problem:
            raise DataError(f"{where}: field '{name}' {problem}")
        if required and not text.strip():
            raise DataError(f"{where}: field '{name}' is empty")
        values[name] = text.strip()
    return Example(**values)


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def _iter_rows(path: Path, text: str):
    """Yield (where, row-or-exception) in file order."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            rows = _loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # nesting deeper than Python's stack, a number of 4,300+ digits
            raise DataError(f"{path}: unreadable JSON ({_json_failure(e)})") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of rows, got {_json_type(rows)}")
        for i, row in enumerate(rows):
            yield f"{path}[{i}]", row
    elif suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = _loads(line)
            except json.JSONDecodeError as e:
                row = DataError(f"{path}:{lineno}: malformed JSON line ({e.msg})")
            except (ValueError, RecursionError) as e:
                row = DataError(f"{path}:{lineno}: unreadable JSON line ({_json_failure(e)})")
            yield f"{path}:{lineno}", row
    elif suffix == ".csv":
        yield from _iter_csv(path, text)
    else:
        raise DataError(f"{path}: unknown data format '{suffix}' (use .json, .jsonl or .csv)")


def _json_failure(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e).split(";")[0]  # int's digit limit names a Python setting the user cannot pass us


def _check_quotes_close(path: Path, text: str) -> None:
    """A quote opened and never closed makes one field of the rest of the file, and the row then lacks its
    other columns: name the line where that row starts instead. Only that: the reader stays lenient about the
    rest (`"a" ,b` reads as `a `), as spreadsheets are."""
    reader = csv.reader(io.StringIO(text), strict=True)
    start = 1  # the line the next record starts on (csv.reader yields blank lines as [] too)
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise DataError(f"{path}:{start}: a quoted field of this row is never closed") from None
        if "field larger than field limit" in str(e):
            return  # named by the reading itself, with its line
        # another strict complaint (text after a closing quote): lenient reading decides; an unclosed quote later
        # in such a file is read as before (a short row)


def _iter_csv(path: Path, text: str):
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)  # process-wide: set for this read only
    try:
        _check_quotes_close(path, text)
        reader = csv.DictReader(io.StringIO(text))
        try:
            header = reader.fieldnames or []
        except csv.Error as e:
            raise DataError(f"{path}:1: unreadable CSV header ({e})") from None
        twice = sorted({c for c in header if header.count(c) > 1 and c in FIELDS})
        if twice:  # DictReader would keep the last column of the name silently
            raise DataError(f"{path}:1: CSV header names column '{twice[0]}' more than once")
        missing = [c for c in REQUIRED_TEXT if c not in header]
        if missing:
            raise DataError(f"{path}:1: CSV header lacks column(s) {missing}")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # the rest of the file cannot be split into rows: stop, skip_bad or not
                line = reader.reader.line_num  # DictReader's own line_num moves only after a row is complete
                if "field larger than field limit" in str(e):
                    raise DataError(
                        f"{path}:{line}: CSV field longer than {CSV_FIELD_LIMIT:,} characters (an unclosed quote?)"
                    ) from None
                raise DataError(f"{path}:{line}: unreadable CSV ({e})") from None
            lineno = reader.line_num
            row = {k: v for k, v in row.items() if k is not None}
            row.setdefault("study_id", str(lineno))
            if not row.get("study_id"):
                row["study_id"] = str(lineno)
            yield f"{path}:{lineno}", row
    finally:
        csv.field_size_limit(previous)


def load_examples(path: str | Path, skip_bad: bool = False, report: LoadReport | None = None) -> list[Example]:
    """Read and validate a data file. Raises DataError naming file, line/index and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    text = _decode(path)
    report = report if report is not None else LoadReport(str(path))
    out: list[Example] = []
    first_seen: dict[str, str] = {}  # study_id -> where it first appeared
    rows = _iter_rows(path, text)
    with closing(rows):  # on a refusal too: the CSV reader restores the process-wide field limit
        for where, row in rows:
            try:
                if isinstance(row, Exception):
                    raise row
                example = _row_to_example(row, where, require_ids=path.suffix.lower() != ".csv")
                if example.study_id in first_seen:
                    raise DataError(
                        f"{where}: duplicate study_id {example.study_id!r} (first at {first_seen[example.study_id]})"
                    )
                first_seen[example.study_id] = where
                out.append(example)
            except DataError as e:
                if not skip_bad:
                    raise
                reason = str(e).split(": ", 1)[1]
                report.skipped[reason.split(" (")[0]] += 1
                if len(report.first_errors) < 5:
                    report.first_errors.append(str(e))
    if not out:
        raise DataError(f"{path}: no usable rows")
    report.kept = len(out)
    return out


def write_examples(path: str | Path, examples: list[Example]) -> None:
    """Write the MEDIQA JSON list form (or JSONL by suffix), atomically."""
    path = Path(path)
    rows = [e.to_json() for e in examples]
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    atomic_write_text(path, text)
