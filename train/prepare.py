"""Turn raw report collections into MEDIQA-form data files.

python -m train.prepare mimic --zip mimic-cxr-reports.zip --split mimic_split_train_dev.csv --out DIR
    one `{split}.json` per split named in the CSV (MEDIQA 2021: train.json 91,544, dev.json 2,000),
    rows in CSV order, as the MEDIQA `make_mimic_data.py` builds them.
python -m train.prepare openi --xml-dir DIR --out FILE
    Open-i `ecgen-radiology` XML -> rows with both findings and impression; XXXX -> ____.
python -m train.prepare split --data FILE --val-fraction 0.05 --seed 0 --out DIR
    train.json + val.json, every findings text on one side only (templates repeat in radiology,
    and a text on both sides would leak the answer into validation).
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import re
import sys
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

from radreport.cli import run
from radreport.schema import DataError, Example, load_examples, write_examples
from radreport.sections import background_of, findings_and_impression, parse_openi_xml, parse_report_sections


def read_split_csv(path: Path) -> list[tuple[str, str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: split CSV not found")
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    missing = {"study_id", "subject_id", "split"} - set(reader.fieldnames or [])
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {sorted(missing)}")
    rows = []
    for row in reader:
        for name in ("study_id", "subject_id", "split"):
            if not (row.get(name) or "").strip():
                raise DataError(f"{path}:{reader.line_num}: field '{name}' is empty")
        rows.append((row["study_id"].strip().lstrip("s"), row["subject_id"].strip().lstrip("p"), row["split"].strip()))
    return rows


def prepare_mimic(zip_path: Path, split_csv: Path, out: Path, skip_bad: bool = False) -> dict[str, int]:
    rows = read_split_csv(split_csv)
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: reports zip not found")
    by_split: dict[str, list[Example]] = defaultdict(list)
    skipped: Counter = Counter()
    with zipfile.ZipFile(zip_path) as z:
        # The zip holds files/pXX/pSUBJECT/sSTUDY.txt; index by study id, not by full path, so
        # both the `files/` layout and a flattened one work.
        index = {Path(n).stem.lstrip("s"): n for n in z.namelist() if n.endswith(".txt")}
        for study, subject, split in rows:
            name = index.get(study)
            problem = None
            if name is None:
                problem = "report not in zip"
            else:
                try:
                    text = z.read(name).decode("utf-8")
                except UnicodeDecodeError:
                    problem = "report not UTF-8"
                else:
                    sections = parse_report_sections(text)
                    findings, impression = findings_and_impression(sections)
                    if not findings:
                        problem = "no FINDINGS section"
                    elif not impression:
                        problem = "no IMPRESSION section"
            if problem:
                if not skip_bad:
                    raise DataError(f"{zip_path}:{name or '?'}: study {study} ({split_csv}): {problem}")
                skipped[problem] += 1
                continue
            by_split[split].append(Example(study, subject, findings, impression, background_of(sections)))
    counts = {}
    for split, examples in by_split.items():
        write_examples(out / f"{split}.json", examples)
        counts[split] = len(examples)
    for why, n in skipped.items():
        counts[f"skipped ({why})"] = n
    return counts


def prepare_openi(xml_dir: Path, out: Path) -> dict[str, int]:
    if not xml_dir.is_dir():
        raise DataError(f"{xml_dir}: not a directory")
    files = sorted(xml_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DataError(f"{xml_dir}: no .xml files")
    examples, skipped = [], Counter()
    for f in files:
        try:
            rec = parse_openi_xml(f)
        except ValueError as e:
            raise DataError(str(e)) from None
        findings, impression = rec.get("findings", ""), rec.get("impression", "")
        if not findings or not impression:
            skipped["no findings" if not findings else "no impression"] += 1
            continue
        deid = lambda s: s.replace("XXXX", "____")  # noqa: E731  (the MEDIQA convention)
        background = f"Indication: {deid(rec.get('indication', ''))} Comparison: {deid(rec.get('comparison', ''))}"
        study_id = re.sub(r"^CXR", "", rec["uid"])
        examples.append(Example(study_id, "", deid(findings), deid(impression), background))
    if not examples:
        raise DataError(f"{xml_dir}: no report has both findings and impression")
    write_examples(out, examples)
    return {"written": len(examples), **{f"skipped ({k})": v for k, v in skipped.items()}}


def findings_key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def split_holdout(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out about `val_fraction` of rows; rows sharing a findings text stay on one side."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        groups[findings_key(e.findings)].append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    target = round(val_fraction * len(examples))
    val_idx: set[int] = set()
    for k in keys:
        if len(val_idx) >= target:
            break
        val_idx.update(groups[k])
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val


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
    s.add_argument("--val-fraction", type=float, default=0.05)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--skip-bad", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "mimic":
        counts = prepare_mimic(args.zip, args.split, args.out, args.skip_bad)
    elif args.cmd == "openi":
        counts = prepare_openi(args.xml_dir, args.out)
    else:
        train, val = split_holdout(load_examples(args.data, skip_bad=args.skip_bad), args.val_fraction, args.seed)
        write_examples(args.out / "train.json", train)
        write_examples(args.out / "val.json", val)
        counts = {"train": len(train), "val": len(val)}
    for k, v in counts.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
