"""Turn raw report collections into MEDIQA-form data files.

python -m train.prepare mimic --zip mimic-cxr-reports.zip --split mimic_split_train_dev.csv --out DIR
    one `{split}.json` per split named in the CSV (MEDIQA 2021: train.json 91,544, dev.json 2,000),
    rows in CSV order, with exactly the text MEDIQA's `make_mimic_data.py` gives (radreport.sections).
python -m train.prepare openi --xml-dir DIR --out FILE
    Open-i `ecgen-radiology` XML -> rows with both findings and impression; XXXX -> ____.
python -m train.prepare split --data FILE --val-fraction 0.05 --seed 0 --out DIR
    train.json + val.json, every findings text on one side only (templates repeat in radiology,
    and a text on both sides would leak the answer into validation).

Bad input is refused with one line naming the file, line and field (exit 2) before anything is
written: paths are checked before any input is read, every report is parsed before the first output
is written, and a command's outputs appear together (each is staged beside its target and renamed
into place only once all are written). A split name from the CSV becomes a file name only through
`radreport.paths.safe_name`, so nothing is written outside --out.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import re
import sys
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from radreport.cli import fraction, run
from radreport.paths import existing_dir, existing_file, output_dir, output_file, safe_name
from radreport.schema import DataError, Example, load_examples, write_examples
from radreport.sections import MissingSection, mediqa_text, parse_openi_xml

SPLIT_COLUMNS = ("study_id", "subject_id", "split")


@dataclass(frozen=True)
class SplitRow:
    study_id: str
    subject_id: str
    split: str
    line: int  # line in the split CSV, for messages


def read_split_csv(path: Path) -> list[SplitRow]:
    """The MEDIQA split CSV (`study_id,subject_id,split`), every row checked: ids are MIMIC numbers (an
    `s`/`p` prefix is accepted), the split name can be a file name, and no study is listed twice."""
    path = existing_file(path, "--split")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x})") from None
    reader = csv.DictReader(io.StringIO(text))
    rows: list[SplitRow] = []
    first_line: dict[str, int] = {}
    try:
        missing = [c for c in SPLIT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {missing} (expected {','.join(SPLIT_COLUMNS)})")
        for row in reader:
            line = reader.line_num
            values = {}
            for name, prefix in (("study_id", "s"), ("subject_id", "p"), ("split", "")):
                value = (row.get(name) or "").strip()
                if not value:
                    raise DataError(f"{path}:{line}: field '{name}' is empty")
                if prefix:
                    value = value.removeprefix(prefix)
                    if not value.isascii() or not value.isdigit():
                        raise DataError(f"{path}:{line}: field '{name}' is not a MIMIC id: {row[name]!r}")
                values[name] = value
            safe_name(values["split"], f"{path}:{line}: field 'split'")
            study = values["study_id"]
            if study in first_line:
                raise DataError(f"{path}:{line}: duplicate study_id {study} (first at line {first_line[study]})")
            first_line[study] = line
            rows.append(SplitRow(study, values["subject_id"], values["split"], line))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def _check_targets(targets: list[Path]) -> None:
    """Output files we are about to replace must not be directories (checked before any input is read)."""
    for target in targets:
        if target.is_dir():
            raise DataError(f"--out: {target} is an existing directory, expected a file name")


def write_all(outputs: dict[Path, list[Example]]) -> None:
    """Write every output or none: each is written to a hidden file beside its target, and the targets
    are replaced only once all of them are on disk."""
    staged: list[tuple[Path, Path]] = []
    try:
        for target, examples in outputs.items():
            tmp = target.with_name(f".{target.stem}.staged-{os.getpid()}{target.suffix}")
            write_examples(tmp, examples)
            staged.append((tmp, target))
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


class _Skip(Exception):
    """A study that has no MEDIQA row: refused, or counted with --skip-bad."""

    def __init__(self, why: str, name: str):
        super().__init__(why)
        self.why, self.name = why, name


class _ReportZip:
    """The MIMIC-CXR reports zip, read by study id.

    The release lays reports out as files/pXX/pSUBJECT/sSTUDY.txt (the path MEDIQA's script opens);
    a re-rooted or flattened copy works too, as long as each study appears once and, where a
    pSUBJECT folder is present, it is the subject the split CSV names."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
            names = self.zip.namelist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
            raise DataError(f"--zip: {path}: not a readable zip file ({e})") from None
        self.names = set(names)
        self.by_study: dict[str, list[str]] = defaultdict(list)
        for name in names:
            member = PurePosixPath(name)
            if member.suffix == ".txt" and re.fullmatch(r"s[0-9]+", member.stem):
                self.by_study[member.stem[1:]].append(name)

    def report(self, row: SplitRow) -> tuple[str, str]:
        """(member name, report text). Raises _Skip when the study has no usable report, DataError when
        the zip itself is damaged."""
        name = f"files/p{row.subject_id[:2]}/p{row.subject_id}/s{row.study_id}.txt"
        if name not in self.names:
            candidates = self.by_study.get(row.study_id, [])
            if not candidates:
                raise _Skip("report not in zip", name)
            if len(candidates) > 1:
                raise DataError(
                    f"{self.path}: study {row.study_id} is in the zip {len(candidates)} times: {candidates}"
                )
            name = candidates[0]
            subjects = [p[1:] for p in PurePosixPath(name).parts[:-1] if re.fullmatch(r"p[0-9]{3,}", p)]
            if subjects and subjects[-1] != row.subject_id:
                raise _Skip(f"report is filed under subject {subjects[-1]}, not {row.subject_id}", name)
        try:
            data = self.zip.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
            raise DataError(f"{self.path}:{name}: cannot read this member, the zip is damaged ({e})") from None
        try:
            return name, data.decode("utf-8")  # as the reference reads it: no newline translation, no BOM removal
        except UnicodeDecodeError:
            raise _Skip("report not UTF-8", name) from None


def prepare_mimic(zip_path: Path, split_csv: Path, out: Path, skip_bad: bool = False) -> dict[str, int]:
    out = output_dir(out)
    zip_path = existing_file(zip_path, "--zip")
    rows = read_split_csv(split_csv)
    by_split: dict[str, list[Example]] = {row.split: [] for row in rows}  # CSV order of first appearance
    _check_targets([out / f"{split}.json" for split in by_split])
    skipped: dict[str, Counter] = defaultdict(Counter)
    reports = _ReportZip(zip_path)
    with reports.zip:
        for row in rows:
            try:
                name, text = reports.report(row)
                try:
                    t = mediqa_text(text)
                except MissingSection as e:
                    raise _Skip(str(e), name) from None
            except _Skip as e:
                if not skip_bad:
                    raise DataError(
                        f"{split_csv}:{row.line}: study {row.study_id} ({zip_path}:{e.name}): {e.why}"
                        " (--skip-bad leaves such studies out and counts them)"
                    ) from None
                skipped[row.split][e.why] += 1
                continue
            by_split[row.split].append(Example(row.study_id, row.subject_id, t.findings, t.impression, t.background))
    for split, examples in by_split.items():
        if not examples:
            reasons = ", ".join(f"{n} {why}" for why, n in skipped[split].most_common())
            raise DataError(f"{split_csv}: split {split!r}: every study was skipped ({reasons}); nothing to write")
    write_all({out / f"{split}.json": examples for split, examples in by_split.items()})
    counts = {split: len(examples) for split, examples in by_split.items()}
    for split, reasons in skipped.items():
        for why, n in reasons.items():
            counts[f"{split} skipped ({why})"] = n
    return counts


def _deid(text: str) -> str:
    return text.replace("XXXX", "____")  # the MEDIQA convention for Open-i's de-identified spans


def prepare_openi(xml_dir: Path, out: Path) -> dict[str, int]:
    """Every record with both findings and impression. `study_id` is the record's `<uId id="CXRn">`
    without "CXR"; a record without one, or two records with the same, is refused naming the files."""
    out = output_file(out)
    xml_dir = existing_dir(xml_dir, "--xml-dir")
    if not os.access(xml_dir, os.R_OK | os.X_OK):
        raise DataError(f"--xml-dir: {xml_dir}: not readable")
    files = sorted(xml_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DataError(f"--xml-dir: {xml_dir}: no .xml files")
    examples, skipped, first_file = [], Counter(), {}
    for f in files:
        try:
            rec = parse_openi_xml(f)
        except ValueError as e:
            raise DataError(str(e)) from None
        except OSError as e:
            raise DataError(f"{f}: cannot read ({e.strerror or e})") from None
        study_id = rec["uid"].removeprefix("CXR").strip()
        if not study_id:
            raise DataError(f"{f}: <uId id=...> is missing or empty: no study_id for this record")
        if study_id in first_file:
            raise DataError(f"{f}: duplicate study_id {study_id!r} (<uId id=...>; first in {first_file[study_id]})")
        first_file[study_id] = f
        findings, impression = rec.get("findings", ""), rec.get("impression", "")
        if not findings or not impression:
            skipped["no findings" if not findings else "no impression"] += 1
            continue
        background = f"Indication: {_deid(rec.get('indication', ''))} Comparison: {_deid(rec.get('comparison', ''))}"
        examples.append(Example(study_id, "", _deid(findings), _deid(impression), background))
    if not examples:
        raise DataError(f"--xml-dir: {xml_dir}: no report has both findings and impression")
    write_examples(out, examples)
    return {"written": len(examples), **{f"skipped ({k})": v for k, v in skipped.items()}}


def findings_key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def split_holdout(
    examples: list[Example], val_fraction: float, seed: int, source: str = "data"
) -> tuple[list[Example], list[Example]]:
    """Hold out about `val_fraction` of rows (at least one); rows sharing a findings text stay on one side.

    Refuses (DataError naming `source`) when either side would be empty."""
    if not 0 < val_fraction < 1:  # also refuses nan
        raise DataError(f"{source}: the validation fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        groups[findings_key(e.findings)].append(i)
    if len(groups) < 2:
        raise DataError(
            f"{source}: all {len(examples)} rows share one findings text: no findings-disjoint split is possible"
            if examples
            else f"{source}: no rows to split"
        )
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    target = max(1, round(val_fraction * len(examples)))
    val_idx: set[int] = set()
    for k in keys:
        if len(val_idx) >= target:
            break
        val_idx.update(groups[k])
    if len(val_idx) == len(examples):
        raise DataError(
            f"{source}: a validation fraction of {val_fraction} takes every findings text ({len(groups)} distinct "
            f"in {len(examples)} rows): nothing left to train on"
        )
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val


def prepare_split(data: Path, out: Path, val_fraction: float, seed: int, skip_bad: bool = False) -> dict[str, int]:
    out = output_dir(out)
    data = existing_file(data, "--data")
    targets = {"train": out / "train.json", "val": out / "val.json"}
    _check_targets(list(targets.values()))
    for target in targets.values():
        if target.exists() and target.resolve() == data.resolve():
            raise DataError(f"--out: {out} would overwrite the --data file {data}; choose another directory")
    train, val = split_holdout(load_examples(data, skip_bad=skip_bad), val_fraction, seed, source=str(data))
    write_all({targets["train"]: train, targets["val"]: val})
    return {"train": len(train), "val": len(val)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.prepare", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mimic", help="MIMIC-CXR reports zip + MEDIQA split CSV -> train.json, dev.json")
    m.add_argument("--zip", type=Path, required=True)
    m.add_argument("--split", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--skip-bad", action="store_true", help="skip studies without both sections, and count them")
    o = sub.add_parser("openi", help="Open-i XML directory -> one MEDIQA JSON file")
    o.add_argument("--xml-dir", type=Path, required=True)
    o.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("split", help="hold out a validation set with no findings text on both sides")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--val-fraction", type=fraction, default=0.05)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--skip-bad", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "mimic":
        counts = prepare_mimic(args.zip, args.split, args.out, args.skip_bad)
    elif args.cmd == "openi":
        counts = prepare_openi(args.xml_dir, args.out)
    else:
        counts = prepare_split(args.data, args.out, args.val_fraction, args.seed, args.skip_bad)
    for k, v in counts.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
