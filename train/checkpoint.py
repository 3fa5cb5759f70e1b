"""Resumable checkpoints and the one final export.

A checkpoint is `accelerator.save_state` (under DeepSpeed: the engine's ZeRO shards, optimizer and
RNG states of every rank) plus `trainer_state.json`, written into a temporary directory `.tmp-NAME`,
then `manifest.json`, written LAST: it lists every file with its size (trainer_state.json, which the epoch
end rewrites atomically after validation, is checked by reading its step instead) and the run's fingerprint
(train/fingerprint.py). Only then is the directory renamed into place. A checkpoint counts only when
its manifest is there and every file it lists is present with that size: SageMaker uploads the
checkpoint directory to S3 file by file, asynchronously, and restores it the same way, so after a
spot interruption a directory can hold a manifest and a truncated shard, or miss a file. Such a
checkpoint is skipped and the newest one that checks is resumed (train/rundir.py).

The export gathers the ZeRO-3 shards into one state dict (DeepSpeed's
stage3_gather_16bit_weights_on_model_save; weights keep the training dtype), writes a normal Hugging
Face directory, reloads it on CPU and compares every tensor before it replaces the last good export.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from radreport.generation import GenerationParams
from radreport.io import atomic_write_json, replace_dir
from radreport.modeling import ModelMeta, write_meta

STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
TMP_PREFIX = ".tmp-"


@dataclass
class TrainerState:
    global_step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0
    """Epochs completed."""
    batches_done: int = 0
    """Micro-batches of the current epoch already consumed (per process)."""
    best_metric: float | None = None
    best_epoch: int = 0
    best_checkpoint: str = ""
    history: list = field(default_factory=list)

    @classmethod
    def read(cls, ckpt: Path) -> TrainerState:
        return cls(**json.loads((ckpt / STATE_FILE).read_text()))


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def write_manifest(ckpt: Path, global_step: int, fingerprint: dict) -> None:
    """List every file of `ckpt` with its size, after flushing each to disk, then write the manifest."""
    files = {}
    # trainer_state.json is left out of the size list: the epoch end rewrites it (atomically) once validation
    # has run, after the checkpoint is published; it is checked by reading it instead (checkpoint_problem).
    for p in sorted(x for x in ckpt.rglob("*") if x.is_file() and x.name not in (MANIFEST, STATE_FILE)):
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        files[p.relative_to(ckpt).as_posix()] = p.stat().st_size
    manifest = {"format": MANIFEST_FORMAT, "global_step": global_step, "files": files, "fingerprint": fingerprint}
    atomic_write_json(ckpt / MANIFEST, manifest)


def read_manifest(ckpt: Path) -> dict:
    return json.loads((ckpt / MANIFEST).read_text())


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why `ckpt` does not count as a checkpoint, or None when its manifest checks."""
    try:
        manifest = read_manifest(ckpt)
        files, step = manifest["files"], int(manifest["global_step"])
    except FileNotFoundError:
        return f"no {MANIFEST} (an interrupted save or upload, or written before manifests existed)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} unreadable ({type(e).__name__}: {e})"
    try:
        state_step = int(json.loads((ckpt / STATE_FILE).read_text())["global_step"])
    except FileNotFoundError:
        return f"{STATE_FILE} is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{STATE_FILE} unreadable ({type(e).__name__})"
    if state_step != step:
        return f"{STATE_FILE} is of step {state_step}, the manifest of step {step}"
    for rel, size in files.items():
        p = ckpt / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != size:
            return f"{rel} is {p.stat().st_size} bytes, the manifest says {size}"
    return None


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Every checkpoint directory, complete or not (temporary `.tmp-*` ones excluded)."""
    d = checkpoints_dir(output_dir)
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints whose manifest checks, oldest first (by optimizer step)."""
    done = [p for p in checkpoint_dirs(output_dir) if checkpoint_problem(p) is None]
    return sorted(done, key=lambda p: (read_manifest(p)["global_step"], p.name))


def save_checkpoint(accelerator, run, state: TrainerState, name: str) -> Path:
    """Collective: every rank writes its shards, then each node's local main completes and publishes its copy.

    `run` is the RunDir from train/rundir.py: it supplies the output directory, the fingerprint for
    the manifest and `keep_last`, and is told once the checkpoint is complete on every node (the
    first one of a new run is when train_config.json is written).
    """
    d = checkpoints_dir(run.output_dir)
    tmp, final = d / f"{TMP_PREFIX}{name}", d / name
    if accelerator.is_local_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_local_main_process and tmp.exists():  # on a shared filesystem another node may have moved it
        atomic_write_json(tmp / STATE_FILE, asdict(state))
        write_manifest(tmp, state.global_step, run.fingerprint)
        if final.exists():  # an incomplete leftover, or this step saved before: replaced only now
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()  # complete on every node
    run.checkpoint_complete(accelerator)
    if accelerator.is_local_main_process:
        rotate(run.output_dir, run.keep_last, protect=state.best_checkpoint)
    accelerator.wait_for_everyone()
    return final


def rotate(output_dir: Path, keep_last: int, protect: str) -> list[Path]:
    """Keep the newest `keep_last` complete checkpoints and the best epoch's; delete older ones and incomplete
    leftovers (called only once a newer checkpoint is complete)."""
    done = complete_checkpoints(output_dir)
    keep = {p.name for p in done[-keep_last:]} | {protect}
    removed = [p for p in checkpoint_dirs(output_dir) if p.name not in keep]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


class SaveClock:
    """`checkpoint.every_minutes`: the main process reads its clock and every rank follows its decision, so all
    ranks enter the collective save together (clocks of different hosts need not agree)."""

    def __init__(self, every_steps: int, every_minutes: float):
        self.every_steps, self.every_s = every_steps, every_minutes * 60
        self.last = time.monotonic()

    def due(self, accelerator, global_step: int) -> bool:
        by_steps = bool(self.every_steps) and global_step % self.every_steps == 0
        if not self.every_s:
            return by_steps
        from accelerate.utils import broadcast

        late = time.monotonic() - self.last >= self.every_s if accelerator.is_main_process else False
        flag = torch.tensor([1 if late else 0], device=accelerator.device)
        return by_steps or bool(broadcast(flag, from_process=0).item())

    def saved(self) -> None:
        self.last = time.monotonic()


def export_model(accelerator, model, tokenizer, out_dir: Path, meta: ModelMeta, generation: GenerationParams) -> Path:
    """Collective gather of the full weights, then the main process writes, verifies and swaps in."""
    state_dict = accelerator.get_state_dict(model)  # every rank must call this under ZeRO-3
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        tmp = out_dir.with_name(f".{out_dir.name}.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        unwrapped.config.use_cache = True
        gen_cfg = unwrapped.generation_config
        generation.write_into(gen_cfg)
        gen_cfg.decoder_start_token_id = unwrapped.config.decoder_start_token_id
        gen_cfg.eos_token_id = tokenizer.eos_token_id
        gen_cfg.pad_token_id = tokenizer.pad_token_id
        unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_meta(tmp, meta)
        verify_export(tmp, state_dict, expected_weights(unwrapped))
        replace_dir(tmp, out_dir)
    accelerator.wait_for_everyone()
    return out_dir


class ExportError(RuntimeError):
    pass


def expected_weights(model) -> list[list[str]]:
    """The weights a model of this config needs, as groups of names for one tensor (tied names share a group:
    T5's encoder and decoder embeddings are `shared`, and so is lm_head when the head is tied).

    Read from the module itself, so it holds under ZeRO-3, where the parameters are empty partitions."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    named = {n for names in groups.values() for n in names}
    buffers = [[k] for k in model.state_dict(keep_vars=True) if k not in named]  # persistent buffers
    return list(groups.values()) + buffers


def verify_export(model_dir: Path, state_dict: dict, expected: list[list[str]]) -> None:
    """Read back every saved tensor and compare: an empty or partial save never replaces a good one.

    `expected` (from `expected_weights`) is what the model needs: every group must be in the files, so a head
    the gathered dict lacks (or one save_pretrained dropped) is an error, not a silently tied model on reload.
    Reads the safetensors files directly: `from_pretrained` on one rank would enter ZeRO-3's partitioned init,
    which needs every rank.
    """
    from safetensors.torch import load_file

    if not state_dict:
        raise ExportError(f"{model_dir}: gathered state dict is empty (ZeRO-3 weights were not gathered)")
    saved: dict = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        saved.update(load_file(f))
    for names in expected:
        stored = [n for n in names if n in saved]
        if not stored:
            raise ExportError(f"{model_dir}: {' / '.join(names)} missing from the saved files (the model needs it)")
        gathered = next((state_dict[n] for n in names if n in state_dict), None)
        if gathered is None:
            raise ExportError(f"{model_dir}: {names[0]} missing from the gathered state dict")
        if gathered.numel() == 0:
            raise ExportError(f"{model_dir}: {names[0]} is empty: ZeRO-3 shards were not gathered")
        for n in stored:
            if saved[n].shape != gathered.shape or not torch.equal(saved[n].to(gathered.dtype), gathered.cpu()):
                raise ExportError(f"{model_dir}: {n} differs after reading it back")


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def epoch_name(epoch: int) -> str:
    return f"epoch-{epoch:03d}"
