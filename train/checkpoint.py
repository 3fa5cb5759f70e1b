"""Resumable checkpoints and the one final export.

A checkpoint is `accelerator.save_state` (under DeepSpeed: the engine's ZeRO shards, optimizer and
RNG states of every rank) plus `trainer_state.json`, written last, into a temporary directory that
is renamed into place only when complete. A directory without trainer_state.json is ignored.

The export gathers the ZeRO-3 shards into one state dict (DeepSpeed's
stage3_gather_16bit_weights_on_model_save; weights keep the training dtype), writes a normal Hugging
Face directory, reloads it on CPU and compares every tensor before it replaces the last good export.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from radreport.generation import GenerationParams
from radreport.io import atomic_write_json, replace_dir
from radreport.modeling import ModelMeta, write_meta

STATE_FILE = "trainer_state.json"


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


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (by optimizer step)."""
    d = checkpoints_dir(output_dir)
    if not d.is_dir():
        return []
    done = [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: (TrainerState.read(p).global_step, p.name))


def save_checkpoint(accelerator, output_dir: Path, state: TrainerState, name: str, keep_last: int) -> Path:
    """Collective: every rank writes its shards, then each node's local main makes it visible."""
    d = checkpoints_dir(output_dir)
    tmp, final = d / f".tmp-{name}", d / name
    if accelerator.is_local_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_local_main_process and tmp.exists():  # on a shared filesystem another node may have moved it
        atomic_write_json(tmp / STATE_FILE, asdict(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _rotate(output_dir, keep_last, protect=state.best_checkpoint)
    accelerator.wait_for_everyone()
    return final


def _rotate(output_dir: Path, keep_last: int, protect: str) -> None:
    """Keep the newest `keep_last` checkpoints and the best epoch's; delete the rest."""
    done = complete_checkpoints(output_dir)
    for p in done[:-keep_last] if keep_last > 0 else done:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)


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
