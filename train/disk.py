"""The disk a training run needs on each node, so a SageMaker volume is sized from the run, not guessed.

A resumable checkpoint holds, per parameter, the fp32 weights (or fp32 master weights beside 16-bit
ones) and Adam's two moments: 4 + 4 + 4 = 12 bytes, sharded over the processes under ZeRO and written
by every rank into its node's copy of the directory (DeepSpeed's node-local checkpoint storage). ZeRO-2
also writes the 16-bit module weights once (2 bytes). RNG and trainer state are kilobytes.

At its peak a node holds: the kept checkpoints (`checkpoint.keep_last` and the best epoch's) plus the
one being written (the oldest is deleted only after the new one is complete); the export written
beside the last good one before the swap (2 x weights, on the main node; the same space later holds
the export and SageMaker's model.tar.gz); the starting model (hub cache or `model` channel); the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from train.config import TrainConfig

CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights or master weights, Adam exp_avg, exp_avg_sq
ZERO2_MODULE_BYTES_PER_PARAM = 2  # ZeRO-2 saves the 16-bit module weights as well
MARGIN = 1.10  # logs, metrics, allocator slack of the filesystem
FIXED_GIB = 5  # the image's pip caches, /opt/ml/output, tmp files
GIB = 1024**3
ASSUMED_DATA_GIB = 1.0  # the data channels, when their size is not known here (MEDIQA's JSON is ~0.1 GiB)


@dataclass(frozen=True)
class DiskNeed:
    checkpoint_bytes: int
    """One checkpoint, all nodes together."""
    checkpoint_bytes_per_node: int
    checkpoints_held: int
    """Checkpoints on a node at the peak: keep_last + the best epoch's + the one being written."""
    export_bytes: int
    """Two copies of the exported weights (the new export beside the last good one)."""
    model_source_bytes: int
    data_bytes: int
    total_bytes: int
    """Per node, with the margin."""

    @property
    def volume_gb(self) -> int:
        """SageMaker's VolumeSizeInGB for this run (GiB, rounded up)."""
        return math.ceil(self.total_bytes / GIB)

    def lines(self) -> list[str]:
        g = lambda b: f"{b / GIB:,.1f} GiB"  # noqa: E731
        held = self.checkpoints_held * self.checkpoint_bytes_per_node
        return [
            f"checkpoint: {g(self.checkpoint_bytes)} ({CHECKPOINT_BYTES_PER_PARAM} bytes/parameter), "
            f"{g(self.checkpoint_bytes_per_node)} per node",
            f"disk per node: {self.checkpoints_held} checkpoints {g(held)} + export x2 {g(self.export_bytes)} + "
            f"starting model {g(self.model_source_bytes)} + data {g(self.data_bytes)}, x{MARGIN} + {FIXED_GIB} GiB "
            f"= {g(self.total_bytes)} -> volume_size {self.volume_gb}",
        ]


def disk_need(
    n_params: int,
    cfg: TrainConfig,
    nodes: int = 1,
    data_bytes: int = 0,
    zero_stage: int = 3,
    weight_bytes: int = 4,
    source_weight_bytes: int = 4,
) -> DiskNeed:
    """Peak disk per node. `weight_bytes`: bytes per parameter of the export (the training dtype: 4 for fp32,
    2 for bf16); `source_weight_bytes`: of the starting model as stored (flan-t5-xl on the hub: fp32)."""
    ckpt = n_params * CHECKPOINT_BYTES_PER_PARAM + (n_params * ZERO2_MODULE_BYTES_PER_PARAM if zero_stage == 2 else 0)
    per_node = math.ceil(ckpt / nodes)
    held = cfg.checkpoint.keep_last + 1 + 1
    export = 2 * n_params * weight_bytes
    source = 0 if cfg.model.tiny_spec else n_params * source_weight_bytes
    raw = held * per_node + export + source + data_bytes
    return DiskNeed(ckpt, per_node, held, export, source, data_bytes, math.ceil(raw * MARGIN + FIXED_GIB * GIB))
