"""What a training run is: its resolved config, the content of its data files and of its starting model.

A checkpoint records the fingerprint of the run that wrote it (in its manifest). A run that finds a
checkpoint written under a different fingerprint refuses to continue it and names every key that
differs: resuming optimizer states and a data order built for another config mixes two runs.

Keys that may change between a run and its resumption (they change neither the data order, the
model, the optimizer nor the schedule) are left out; see RESUMABLE_CHANGES. Paths are left out too:
a data file or model directory is compared by its content, so the same file under another path (a
SageMaker channel, a pre-staged model channel instead of the hub) is the same run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from radreport.config import flatten, to_dict
from train.config import TrainConfig

# Dotted config keys (or prefixes ending in ".") that may change when a run is resumed.
RESUMABLE_CHANGES = (
    "log_every_steps",  # how often a line is printed
    "interrupt_after_steps",  # drills
    "inject_nonfinite_at_step",
    "checkpoint.",  # how often and how many checkpoints are kept
    "generation.",  # decoding defaults written into the export only
    "batch.eval_per_device",  # evaluation batch size: same examples, same metrics
    "data.train",  # paths: their content is compared below
    "data.validation",
    "model.name",
    "model.tiny_spec",
)
CHUNK = 1 << 24
MODEL_SUFFIXES = (".json", ".model", ".safetensors")


def _resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_CHANGES)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def model_sha256(source: str | Path) -> str:
    """Content hash of a model directory: the name and sha256 of every file the loop reads (config,
    tokenizer and weights: *.json, *.model, *.safetensors; a README or a .bin copy does not count).

    A file in the Hugging Face cache is a link to a blob named by its sha256 (for large, LFS-stored
    files), so the 11 GB of flan-t5-xl weights are not read again; any other file is hashed.
    """
    d = Path(source)
    h = hashlib.sha256()
    for p in sorted(x for x in d.rglob("*") if x.is_file() and x.suffix in MODEL_SUFFIXES):
        blob = p.resolve().name
        digest = blob if p.is_symlink() and len(blob) == 64 and all(c in "0123456789abcdef" for c in blob) else None
        h.update(f"{p.relative_to(d)}\0{digest or file_sha256(p)}\n".encode())
    return h.hexdigest()


def resolve_model_dir(cfg: TrainConfig, source: str) -> Path | None:
    """The directory the model is loaded from (a hub id resolves to its snapshot in the local cache)."""
    if Path(source).is_dir():
        return Path(source)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not cached: the fingerprint falls back to the hub id
        return None


def run_fingerprint(cfg: TrainConfig, source: str, processes: int) -> dict:
    """The fingerprint of a run: config keys that define it, data and model content, process count.

    `source` is what the loop loads (a directory or a hub id). The tiny model is built at start from
    its spec and the training data, so the spec's content stands for it.
    """
    config = {k: v for k, v in flatten(to_dict(cfg)).items() if not _resumable(k)}
    data = {"data.train content": file_sha256(cfg.data.train)}
    if cfg.data.validation:
        data["data.validation content"] = file_sha256(cfg.data.validation)
    if cfg.model.tiny_spec:
        model = "tiny spec " + file_sha256(cfg.model.tiny_spec)
    else:
        model_dir = resolve_model_dir(cfg, source)
        model = model_sha256(model_dir) if model_dir else f"hub id {source}"
    return {**config, **data, "model content": model, "processes": processes}


def differences(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every key that differs (keys only one side has included)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if _resumable(key):  # a fingerprint from an older version may still carry such a key
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 40 else s[:32] + "..."
