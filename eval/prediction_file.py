"""Prediction files: JSONL, one `{"id", "dataset", "model", "findings", "reference", "prediction"}` a line.

`dataset` names files of the report (its box plots), so it must be a safe file name (radreport.paths.safe_name):
a file's contents never choose where anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from radreport.errors import InputError
from radreport.paths import safe_name
from radreport.schema import text_problem

FIELDS = ("id", "dataset", "model", "findings", "reference", "prediction")


class PredictionError(InputError):
    """A predictions file is unreadable or a line breaks the format; the message names file, line and field."""


def read_predictions(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise PredictionError(f"{path}: predictions file not found")
    rows, seen = [], {}
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PredictionError(f"{path}:{lineno}: unreadable line ({type(e).__name__})") from None
        if not isinstance(row, dict):
            raise PredictionError(f"{path}:{lineno}: expected a JSON object")
        for f in FIELDS:
            if f not in row or not isinstance(row[f], str):
                raise PredictionError(f"{path}:{lineno}: field '{f}' is missing or not a string")
        for f in FIELDS:  # written back into the report's files: a lone surrogate would fail there, after the work
            problem = text_problem(row[f])
            if problem:
                raise PredictionError(f"{path}:{lineno}: field '{f}' {problem}")
        for f in ("id", "dataset", "model", "reference"):
            if not row[f].strip():
                raise PredictionError(f"{path}:{lineno}: field '{f}' is empty")
        try:
            safe_name(row["dataset"], f"{path}:{lineno}: field 'dataset'")
        except InputError as e:
            raise PredictionError(str(e)) from None
        key = (row["dataset"], row["model"], row["id"])
        if key in seen:
            raise PredictionError(f"{path}:{lineno}: duplicate id {row['id']!r} (first on line {seen[key]})")
        seen[key] = lineno
        rows.append(row)
    if not rows:
        raise PredictionError(f"{path}: no predictions")
    return rows


def dumps(row: dict) -> str:
    return json.dumps({f: row[f] for f in FIELDS}, ensure_ascii=False) + "\n"
