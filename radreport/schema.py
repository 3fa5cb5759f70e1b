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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from radreport.errors import InputError
from radreport.io import atomic_write_text

REQUIRED_TEXT = ("findings", "impression")
FIELDS = ("study_id", "subject_id", "findings", "impression", "background")


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


def _row_to_example(row: object, where: str, require_ids: bool) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with fields {list(FIELDS)}, got {type(row).__name__}")
    values = {}
    for name in FIELDS:
        value = row.get(name)
        if isinstance(value, bool):  # JSON true/false is no text: `impression: false` must not train on "False"
            raise DataError(f"{where}: field '{name}' must be a string, got {str(value).lower()}")
        if name in REQUIRED_TEXT or (require_ids and name == "study_id"):
            if value is None:
                raise DataError(f"{where}: field '{name}' is missing")
            if not isinstance(value, (str, int)) or not str(value).strip():
                raise DataError(f"{where}: field '{name}' is empty")
        if value is not None and not isinstance(value, (str, int)):
            raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
        values[name] = "" if value is None else str(value).strip()
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
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            yield f"{path}[{i}]", row
    elif suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{path}:{lineno}", DataError(f"{path}:{lineno}: malformed JSON line ({e.msg})")
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in REQUIRED_TEXT if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}:1: CSV header lacks column(s) {missing}")
        for row in reader:
            lineno = reader.line_num
            row = {k: v for k, v in row.items() if k is not None}
            row.setdefault("study_id", str(lineno))
            if not row.get("study_id"):
                row["study_id"] = str(lineno)
            yield f"{path}:{lineno}", row
    else:
        raise DataError(f"{path}: unknown data format '{suffix}' (use .json, .jsonl or .csv)")


def load_examples(path: str | Path, skip_bad: bool = False, report: LoadReport | None = None) -> list[Example]:
    """Read and validate a data file. Raises DataError naming file, line/index and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    text = _decode(path)
    report = report if report is not None else LoadReport(str(path))
    out: list[Example] = []
    first_seen: dict[str, str] = {}  # study_id -> where it first appeared
    for where, row in _iter_rows(path, text):
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
