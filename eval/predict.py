"""Batched beam search over a dataset, resumable, written atomically.

Lines are appended to `OUT.partial` as batches finish; an interrupted run picks up after the last
complete line; the finished file replaces OUT in one rename. `OUT.partial.json` records what produced
the partial file (model directory and its files' sizes and times, the data file's SHA-256, the
generation settings, the prompt template, dtype, names): a rerun with anything else refuses to resume
into it, naming what differs, instead of mixing two runs' predictions in one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from eval.prediction_file import dumps
from radreport.errors import InputError
from radreport.generation import generate, params_from_model
from radreport.io import atomic_write_json, atomic_write_text
from radreport.modeling import load_model, load_tokenizer, read_meta, resolve_device, resolve_dtype
from radreport.paths import not_an_input
from radreport.schema import load_examples


def check_device(device: str) -> str:
    """--device: auto, cpu, cuda or cuda:N, and a CUDA device must be there."""
    if not re.fullmatch(r"auto|cpu|cuda(?::\d+)?", device):
        raise InputError(f"--device: {device!r} is not one of auto, cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device: {device} requested but no CUDA device is visible")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device: {device} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return resolve_device(device)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(model_dir: str, data: Path, params, meta, dtype: torch.dtype, dataset: str, model_name: str) -> dict:
    """What makes predictions what they are. Model files by size and modification time (hashing 11 GB of
    weights would cost a minute per run); the data file by content."""
    d = Path(model_dir)
    files = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(d.iterdir()) if f.is_file()}
    return {
        "model": str(d.resolve()) if d.is_dir() else str(model_dir),
        "model_files": files if d.is_dir() else {},
        "data": str(data.resolve()),
        "data_sha256": _sha256(data),
        "generation": asdict(params),
        "prompt_template": meta.prompt_template,
        "max_source_tokens": meta.max_source_tokens,
        "dtype": str(dtype).replace("torch.", ""),
        "dataset": dataset,
        "model_name": model_name,
    }


def work_files(out: Path) -> tuple[Path, Path]:
    """The partial predictions file and the record of what produced it, beside OUT."""
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")


def check_out_is_not_an_input(out: Path, data: Path, model_dir: str) -> None:
    """OUT, its partial file and their record replace whatever they name: never the data being predicted
    (`--data X.json --out X.json` would have replaced the dataset with its predictions), nor a file of the model."""
    inputs: dict[str, Path] = {"--data": data}
    if Path(model_dir).is_dir():
        inputs.update({f"--model directory's {f.name}": f for f in sorted(Path(model_dir).iterdir()) if f.is_file()})
    partial, record = work_files(out)
    not_an_input(out, f"--out: {out}", inputs)
    not_an_input(partial, f"--out: {out} (its partial file {partial.name})", inputs)
    not_an_input(record, f"--out: {out} (its record {record.name})", inputs)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def check_resumable(partial: Path, record: Path, now: dict) -> None:
    """A partial file may be resumed only by the run that started it."""
    if not partial.exists():
        return
    try:
        before = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        before = None
    if not isinstance(before, dict):
        raise InputError(
            f"{partial}: no readable record of what produced it ({record.name}); delete it to predict from the start"
        )
    changed = []
    for k in sorted(set(before) | set(now)):
        old, new = before.get(k), now.get(k)
        if isinstance(old, dict) and isinstance(new, dict):  # name the entry that differs, not the whole dict
            changed += [(f"{k}.{sub}", old.get(sub), new.get(sub)) for sub in sorted(set(old) | set(new))]
        else:
            changed.append((k, old, new))
    changed = [(k, old, new) for k, old, new in changed if old != new]
    if changed:
        what = "; ".join(f"{k}: {_short(old)} -> {_short(new)}" for k, old, new in changed)
        raise InputError(
            f"{partial}: was written by another run ({what}); delete it, or use another --out, to predict anew"
        )


def _done_ids(partial: Path) -> set[str]:
    """Ids of complete lines; a torn last line is cut off."""
    if not partial.exists():
        return set()
    data = partial.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        partial.write_bytes(keep)
    return {json.loads(line)["id"] for line in keep.decode("utf-8").splitlines() if line.strip()}


def predict(
    model_dir: str,
    data: str | Path,
    out: Path,
    dataset: str,
    model_name: str = "",
    batch_size: int = 16,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> int:
    data = Path(data)
    check_out_is_not_an_input(out, data, model_dir)
    examples = load_examples(data)  # names file and lines of a bad row or a duplicate study_id
    dev = check_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        tokenizer = load_tokenizer(model_dir)  # refuses a directory without its tokenizer, or with another model's
        meta = read_meta(model_dir)
        model = load_model(model_dir, torch_dtype, dev)
    except OSError as e:  # a hub id the hub cannot provide (offline machines: always)
        raise InputError(f"--model: {model_dir}: not a local model directory, and not on the hub ({e})") from None
    params = params_from_model(model, num_beams=num_beams, max_new_tokens=max_new_tokens)
    problems = params.check()
    if problems:
        raise InputError(f"{model_dir}: generation settings: {'; '.join(problems)}")
    model_name = model_name or Path(model_dir).name
    partial, record = work_files(out)
    now = provenance(model_dir, data, params, meta, torch_dtype, dataset, model_name)
    check_resumable(partial, record, now)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not partial.exists():
        atomic_write_json(record, now)
    done = _done_ids(partial)
    todo = [e for e in examples if e.study_id not in done]
    todo.sort(key=lambda e: len(e.findings))  # similar lengths per batch: less padding
    with open(partial, "a", encoding="utf-8") as f, tqdm(total=len(examples), initial=len(done), desc=dataset) as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            outs = generate(model, tokenizer, meta, [e.findings for e in batch], params, [e.background for e in batch])
            for e, g in zip(batch, outs, strict=True):
                row = {
                    "id": e.study_id,
                    "dataset": dataset,
                    "model": model_name,
                    "findings": e.findings,
                    "reference": e.impression,
                    "prediction": g.candidates[0][0],
                }
                f.write(dumps(row))
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
    # back to the dataset's order, then one rename
    by_id = {json.loads(line)["id"]: line for line in partial.read_text(encoding="utf-8").splitlines() if line.strip()}
    atomic_write_text(out, "".join(by_id[e.study_id] + "\n" for e in examples))
    partial.unlink()
    record.unlink(missing_ok=True)
    return len(examples)
