"""The training config: configs/train/*.yaml checked into these dataclasses.

Batch arithmetic: examples per optimizer step = batch.per_device x batch.gradient_accumulation_steps
x number of processes (8 on a p3.16xlarge, 16 on two).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le, Lt

from radreport.config import (
    ConfigError,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    from_dict,
    range_problems,
    read_config,
)
from radreport.generation import Beams, GenerationParams, NewTokens
from radreport.modeling import SourceTokens, TargetTokens
from radreport.paths import same_file
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
    val_fraction: Annotated[float, Gt(0), Lt(1)] = 0.05
    """Share of train held out for validation when `validation` is empty; it must hold out at least one row."""
    prompt_template: str = "instruction"
    """Name in radreport.prompt.TEMPLATES; recorded in the exported model so serving uses the same."""
    max_source_tokens: SourceTokens = 512
    """Prompt tokens kept (longer prompts are truncated)."""
    max_target_tokens: TargetTokens = 128
    """Impression tokens trained on (longer targets are truncated)."""
    skip_bad_rows: bool = False
    """Drop rows that break the schema (and report how many and why) instead of stopping."""

    def file_problems(self) -> list[str]:
        """Data files that are not there (or a validation file that is the training file). Checked by the training
        command, not by the config itself, so that `train.plan` and `train.sagemaker --dry-run` work on a config
        whose data lives elsewhere (S3, another host)."""
        problems = [
            f"{key}: data file not found: {path}"
            for key in ("train", "validation")
            if (path := getattr(self, key)) and not Path(path).is_file()
        ]
        if not problems and self.validation and same_file(self.train, self.validation):
            # the best epoch would be chosen, and ROUGE reported, on rows the model trained on
            problems.append(f"validation: {self.validation} is the training file; leave it empty to hold out rows")
        return problems

    def check(self) -> list[str]:
        errors = range_problems(self)
        if not self.train:
            errors.append("train: required")
        if self.prompt_template not in TEMPLATES:
            errors.append(f"prompt_template: must be one of {list(TEMPLATES)}")
        return errors


@dataclass(frozen=True)
class BatchConfig:
    per_device: PositiveInt = 8
    """Training examples per process and micro-batch."""
    gradient_accumulation_steps: PositiveInt = 1
    """Micro-batches per optimizer step."""
    batching: Literal["length_grouped", "dynamic", "max_length"] = "length_grouped"
    """length_grouped: similar lengths per step, padded to the longest; dynamic: random batches padded to the
    longest; max_length: every batch padded to max_*_tokens (what the reference did)."""
    group_size: PositiveInt = 64
    """Length grouping sorts windows of per_device x processes x group_size shuffled examples."""
    pad_to_multiple_of: PositiveInt = 1
    """8 helps fp16/bf16 tensor cores (Ampere, Hopper); fp32 on V100 has none, so 1 wastes nothing."""
    eval_per_device: PositiveInt = 16
    """Validation-loss batch per process (teacher-forced forward only; beam search has its own,
    eval.generation_batch_size)."""


@dataclass(frozen=True)
class OptimConfig:
    lr: PositiveFloat = 1e-4
    """Peak learning rate (AdamW)."""
    weight_decay: NonNegativeFloat = 0.0
    """Decoupled weight decay (AdamW)."""
    betas: tuple[float, ...] = (0.9, 0.999)
    """AdamW's moment decay rates (two values in [0, 1))."""
    eps: PositiveFloat = 1e-8
    """AdamW's denominator term."""
    schedule: Literal["constant_with_warmup", "linear"] = "constant_with_warmup"
    warmup_steps: NonNegativeInt = 0
    """Optimizer steps of linear warm-up; `warmup_ratio` is used when this is 0."""
    warmup_ratio: Fraction = 0.0
    """Share of all optimizer steps spent warming up, in [0, 1)."""
    max_grad_norm: PositiveFloat = 1.0
    """Gradient clipping norm (DeepSpeed's gradient_clipping when its JSON says "auto")."""

    def check(self) -> list[str]:
        errors = range_problems(self)
        if len(self.betas) != 2:
            errors.append("betas: two values")
        elif not all(0 <= b < 1 for b in self.betas):
            errors.append("betas: each must be in [0, 1)")
        return errors


@dataclass(frozen=True)
class EvalConfig:
    rouge_samples: NonNegativeInt = 64
    """Validation rows (a fixed sample) scored with ROUGE after beam search each epoch; 0 skips it."""
    num_beams: Beams = 4
    """Beam width of the validation beam search."""
    max_new_tokens: NewTokens = 64
    """Tokens generated at most per validation row."""
    generation_batch_size: PositiveInt = 4
    """Validation rows per process in one beam search (its memory is num_beams x this x the longest input's
    decoder cache, apart from the training batch); planned by `python -m train.plan`. Rows are sorted by
    length, so each batch holds similar lengths, the longest first."""
    metric_for_best: Literal["eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum"] = "eval_loss"
    """The epoch exported is the one best by this (lowest eval_loss, highest ROUGE)."""

    def check(self) -> list[str]:
        errors = range_problems(self)
        if self.metric_for_best != "eval_loss" and self.rouge_samples == 0:
            errors.append(f"metric_for_best: {self.metric_for_best} needs rouge_samples >= 1")
        return errors


@dataclass(frozen=True)
class CheckpointConfig:
    """When resumable checkpoints are written and how many are kept (train/checkpoint.py, train/rundir.py).

    A checkpoint is also written at every epoch end. Each one is large (about 12 bytes per parameter:
    34 GB for flan-t5-xl, `python -m train.plan` prints it) and blocks training while it is written, so
    save as rarely as the risk of losing work allows: on spot capacity, with a save costing c minutes and
    interruptions every H hours on average, about sqrt(2 * c * 60 * H) minutes between saves loses least."""

    every_steps: NonNegativeInt = 0
    """Save every N optimizer steps (0: not by steps)."""
    every_minutes: Annotated[float, Ge(0), Le(7 * 24 * 60)] = 0.0
    """Save when this many minutes have passed since the last save (0: not by time; at most a week). The main
    process reads its clock and every rank follows its decision."""
    keep_last: PositiveInt = 2
    """Complete checkpoints kept besides the best epoch's (at least 1: the newest is what a restart resumes)."""


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
    epochs: PositiveInt = 3
    """Passes over the training data."""
    max_steps: NonNegativeInt = 0
    """Stop after this many optimizer steps in all (0: run all epochs). Changes the schedule's length."""
    seed: Annotated[int, Ge(0), Lt(2**32)] = 42
    """Seeds data order, held-out split, dropout and initialisation (0 .. 2**32 - 1)."""
    log_every_steps: PositiveInt = 10
    """Optimizer steps between loss lines."""
    interrupt_after_steps: NonNegativeInt = 0
    """Drill for preemption: checkpoint and exit (status 75) after this many optimizer steps, schedule unchanged."""
    inject_nonfinite_at_step: NonNegativeInt = 0
    """Drill for the non-finite guard: make the loss NaN at this optimizer step."""
    inject_generation_failure_at_epoch: NonNegativeInt = 0
    """Drill for the epoch end: validation beam search raises at the end of this epoch (on the last rank)."""


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
    """The config for a training run: load_config's checks, and the data files must be here. Every problem of
    both kinds is reported at once."""
    raw, source = read_config(path, overrides), str(path) if path else "config"
    try:
        cfg, problems = from_dict(TrainConfig, raw, source), []
    except ConfigError as e:
        cfg, problems = None, e.problems
    section = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    files = DataConfig(**{k: v for k, v in section.items() if k in ("train", "validation") and isinstance(v, str)})
    problems += [f"data.{m}" for m in files.file_problems()]
    if problems:
        raise ConfigError(source, problems)
    ds = deepspeed_config_in_use()
    if ds and ds.get("fp16", {}).get("enabled") in (True, "auto") and not cfg.precision.fp16_overflow_guard:
        if os.environ.get("ACCELERATE_MIXED_PRECISION", "no") == "fp16" or ds["fp16"]["enabled"] is True:
            raise ConfigError(path or "config", [f"precision.fp16_overflow_guard: {FP16_T5_REFUSAL}"])
    return cfg
