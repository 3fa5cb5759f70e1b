"""Peak RSS of each ZeRO-3 CPU rank, phase by phase, at fixed lengths: what train/plan.py's CPU terms rest on.

    python bench/model_shapes.py base runs/probe/base-model
    accelerate launch --config_file configs/accelerate/cpu-2proc.yaml bench/memory_probe.py \
        --model runs/probe/base-model --batch 8 --source 197 --target 90 [--gradient-checkpointing] [--steps 3]

Each rank resets its kernel high-water mark (/proc/self/clear_refs) after every phase and prints the peak of the
phase and the resident size after it: imports, process group, from_pretrained under zero.Init, prepare
(optimizer states), then forward / backward+step of each training step (the first step traces the module order;
from the second, ZeRO-3 keeps parameters gathered from forward to backward), then beam search with synced_gpus.
Random token ids of exactly --source and --target tokens, so every step is the longest batch.
Run it with MALLOC_MMAP_THRESHOLD_=262144 in the environment to see the live sum without glibc's retention.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from radreport.cli import positive_int  # noqa: E402  (argparse only: part of the `python` phase)

T0 = time.time()
RANK = os.environ.get("RANK", "0")
GIB = 1024**3


def status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024 / GIB
    return 0.0


def mark(phase: str) -> None:
    print(
        f"[rank {RANK}] {time.time() - T0:6.1f}s {phase:<24} peak {status('VmHWM:'):6.2f} GiB, "
        f"after {status('VmRSS:'):6.2f} GiB",
        flush=True,
    )
    Path("/proc/self/clear_refs").write_text("5")  # the next phase's peak starts from here


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a model directory (bench/model_shapes.py writes one)")
    p.add_argument("--batch", type=positive_int, default=8, help="examples per rank and step")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--source", type=positive_int, default=197, metavar="TOKENS", help="prompt tokens of every row")
    p.add_argument("--target", type=positive_int, default=90, metavar="TOKENS", help="impression tokens of every row")
    p.add_argument("--steps", type=positive_int, default=3, help="training steps (the first traces, the rest repeat)")
    p.add_argument("--new-tokens", type=positive_int, default=16, help="tokens the beam search generates")
    a = p.parse_args()
    mark("python")
    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    import train.loop  # noqa: F401  everything a training rank imports

    mark("imports")
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo", timeout=timedelta(minutes=30))])
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"], ds["gradient_clipping"] = a.batch, 1.0
    mark("process group")
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(a.model, dtype=torch.float32)
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    mark("from_pretrained")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    mark("prepare")
    g = torch.Generator().manual_seed(int(RANK))
    ids = torch.randint(3, 32000, (a.batch, a.source), generator=g)
    mask = torch.ones_like(ids)
    for step in range(a.steps):
        labels = torch.randint(3, 32000, (a.batch, a.target), generator=g)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        mark(f"step {step} forward")
        accelerator.backward(loss)  # DeepSpeed also steps the optimizer here
        optimizer.step()
        optimizer.zero_grad()
        mark(f"step {step} backward+step")
    model.eval()
    with torch.no_grad():
        accelerator.unwrap_model(model).generate(
            input_ids=ids, attention_mask=mask, num_beams=4, max_new_tokens=a.new_tokens, synced_gpus=True
        )
    mark(f"beam search {a.batch}x4")


if __name__ == "__main__":
    main()
