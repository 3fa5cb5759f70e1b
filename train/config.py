"""The training config: configs/train/*.yaml checked into these dataclasses.

Batch arithmetic: examples per optimizer step = batch.per_device x batch.gradient_accumulation_steps
x number of processes (8 on a p3.16xlarge, 16 on two).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from radreport.config import ConfigError, load_config
from radreport.generation import GenerationParams
from radreport.prompt import TEMPLATES


@dataclass(frozen=True)
class ModelConfig:
    name: str = ""
    """Hub id (e.g. google/flan-t5-xl) or a local model directory."""
    tiny_spec: str = ""
    """Instead of `name`: a tiny-T5 spec (configs/model/tiny-t5.yaml) built at start; its tokenizer is learnt from
    the training data."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, about a third more compute."""

    def check(self) -> list[str]:
        if bool(self.name) == bool(self.tiny_spec):
            return ["name / tiny_spec: set exactly one of them"]
        if self.tiny_spec and not Path(self.tiny_spec).is_file():
            return [f"tiny_spec: file not found: {self.tiny_spec}"]
        return []


@dataclass(frozen=True)
class DataConfig:
    train: str = ""
    """Training file (MEDIQA JSON list, JSONL, or CSV with findings/impression)."""
    validation: str = ""
    """Validation file; empty: hold out `val_fraction` of train, findings-disjoint."""
    val_fraction: float = 0.05
    prompt_template: str = "instruction"
    """Name in radreport.prompt.TEMPLATES; recorded in the exported model so serving uses the same."""
    max_source_tokens: int = 512
    max_target_tokens: int = 128
    skip_bad_rows: bool = False
    """Drop rows that break the schema (and report how many and why) instead of stopping."""

    def check(self) -> list[str]:
        errors = []
        if not self.train:
            errors.append("train: required")
        for key in ("train", "validation"):
            path = getattr(self, key)
            if path and not Path(path).is_file():
                errors.append(f"{key}: data file not found: {path}")
        if not 0 < self.val_fraction < 1:
            errors.append("val_fraction: must be in (0, 1)")
        if self.prompt_template not in TEMPLATES:
            errors.append(f"prompt_template: must be one of {list(TEMPLATES)}")
        if self.max_source_tokens < 8 or self.max_target_tokens < 2:
            errors.append("max_source_tokens / max_target_tokens: too small")
        return errors


@dataclass(frozen=True)
class BatchConfig:
    per_device: int = 8
    gradient_accumulation_steps: int = 1
    batching: Literal["length_grouped", "dynamic", "max_length"] = "length_grouped"
    """length_grouped: similar lengths per step, padded to the longest; dynamic: random batches padded to the
    longest; max_length: every batch padded to max_*_tokens (what the reference did)."""
    group_size: int = 64
    """Length grouping sorts windows of per_device x processes x group_size shuffled examples."""
    pad_to_multiple_of: int = 1
    """8 helps fp16/bf16 tensor cores (Ampere, Hopper); fp32 on V100 has none, so 1 wastes nothing."""
    eval_per_device: int = 16

    def check(self) -> list[str]:
        bad = [
            k
            for k in (
                "per_device",
                "gradient_accumulation_steps",
                "group_size",
                "pad_to_multiple_of",
                "eval_per_device",
            )
            if getattr(self, k) < 1
        ]
        return [f"{k}: must be >= 1" for k in bad]


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Literal["constant_with_warmup", "linear"] = "constant_with_warmup"
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up; `warmup_ratio` is used when this is 0."""
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0

    def check(self) -> list[str]:
        errors = []
        if self.lr <= 0:
            errors.append("lr: must be positive")
        if len(self.betas) != 2:
            errors.append("betas: two values")
        if not 0 <= self.warmup_ratio < 1:
            errors.append("warmup_ratio: must be in [0, 1)")
        if self.max_grad_norm <= 0:
            errors.append("max_grad_norm: must be positive")
        return errors


@dataclass(frozen=True)
class EvalConfig:
    rouge_samples: int = 64
    """Validation rows (a fixed sample) scored with ROUGE after beam search each epoch; 0 skips it."""
    num_beams: int = 4
    max_new_tokens: int = 64
    generation_batch_size: int = 8
    """Validation beam search inputs per device (each searched with num_beams beams): its own batch, planned by
    `python -m train.plan`, since num_beams x eval_per_device rows can run a GPU out of memory at the longest
    inputs."""
    metric_for_best: Literal["eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum"] = "eval_loss"


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0
    """Save a resumable checkpoint every N optimizer steps (0: only at epoch ends)."""
    keep_last: int = 2
    """Step checkpoints kept besides the best epoch's."""


@dataclass(frozen=True)
class PrecisionConfig:
    fp16_overflow_guard: bool = False
    """Required to train T5 with a DeepSpeed fp16 config: checks every feed-forward output and the loss for
    inf/NaN each step and stops at the first one. See configs/deepspeed/README.md."""


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    generation: GenerationParams = field(default_factory=GenerationParams)
    """Decoding defaults written into the exported model's generation_config.json."""
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    epochs: int = 3
    max_steps: int = 0
    """Stop after this many optimizer steps in all (0: run all epochs). Changes the schedule's length."""
    seed: int = 42
    log_every_steps: int = 10
    interrupt_after_steps: int = 0
    """Drill for preemption: checkpoint and exit (status 75) after this many optimizer steps, schedule unchanged."""
    inject_nonfinite_at_step: int = 0
    """Drill for the non-finite guard: make the loss NaN at this optimizer step."""

    def check(self) -> list[str]:
        return [] if self.epochs >= 1 else ["epochs: must be >= 1"]


def deepspeed_config_in_use() -> dict | None:
    """The DeepSpeed JSON that `accelerate launch` passes down, read before any process group exists."""
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true" or not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(path, [f"DeepSpeed config unreadable: {e}"]) from None


FP16_T5_REFUSAL = (
    "DeepSpeed fp16 is enabled for a T5 model, and precision.fp16_overflow_guard is off. T5's feed-forward "
    "output (`wo`) overflows fp16; transformers keeps `wo` in fp32 (_keep_in_fp32_modules) but DeepSpeed's fp16 "
    "engine casts every weight, so that protection is gone and the loss turns inf/NaN. Use "
    "configs/deepspeed/zero3-fp32.json on V100, a bf16 config on Ampere or newer, or set "
    "precision.fp16_overflow_guard=true to run with per-step inf/NaN checks that stop at the first overflow."
)


def load_train_config(path: str | None, overrides: list[str]) -> TrainConfig:
    cfg = load_config(TrainConfig, path, overrides)
    ds = deepspeed_config_in_use()
    if ds and ds.get("fp16", {}).get("enabled") in (True, "auto") and not cfg.precision.fp16_overflow_guard:
        if os.environ.get("ACCELERATE_MIXED_PRECISION", "no") == "fp16" or ds["fp16"]["enabled"] is True:
            raise ConfigError(path or "config", [f"precision.fp16_overflow_guard: {FP16_T5_REFUSAL}"])
    return cfg
