"""Batched beam search over a dataset, resumable, written atomically.

Lines are appended to `OUT.partial` as batches finish; an interrupted run picks up after the last
complete line; the finished file replaces OUT in one rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from eval.prediction_file import dumps
from radreport.generation import generate, params_from_model
from radreport.modeling import load_model, load_tokenizer, read_meta, resolve_device, resolve_dtype
from radreport.schema import load_examples


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
    data: str,
    out: Path,
    dataset: str,
    model_name: str = "",
    batch_size: int = 16,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> int:
    examples = load_examples(data)
    dev = resolve_device(device)
    model = load_model(model_dir, resolve_dtype(dtype, dev), dev)
    tokenizer, meta = load_tokenizer(model_dir), read_meta(model_dir)
    params = params_from_model(model, num_beams=num_beams, max_new_tokens=max_new_tokens)
    model_name = model_name or Path(model_dir).name
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    done = _done_ids(partial)
    todo = [e for e in examples if e.study_id not in done]
    todo.sort(key=lambda e: len(e.findings))  # similar lengths per batch: less padding
    with open(partial, "a", encoding="utf-8") as f, tqdm(total=len(examples), initial=len(done), desc=dataset) as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            outs = generate(model, tokenizer, meta, [e.findings for e in batch], params, [e.background for e in batch])
            for e, g in zip(batch, outs, strict=True):
                f.write(
                    dumps(
                        {
                            "id": e.study_id,
                            "dataset": dataset,
                            "model": model_name,
                            "findings": e.findings,
                            "reference": e.impression,
                            "prediction": g.candidates[0][0],
                        }
                    )
                )
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
    # back to the dataset's order, then one rename
    by_id = {json.loads(line)["id"]: line for line in partial.read_text(encoding="utf-8").splitlines() if line.strip()}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(by_id[e.study_id] + "\n" for e in examples), encoding="utf-8")
    os.replace(tmp, out)
    partial.unlink()
    return len(examples)
