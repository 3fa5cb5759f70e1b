"""Training throughput by batching strategy, side by side in one run.

    python bench/train_throughput.py [--steps 30] [--per-device 16] [--out bench/results/train_throughput.json]

Same tiny T5, same data (the bundled sample), same optimizer; only the batching differs:
  (a) max_length     every batch padded to max_source/max_target tokens (the reference, JumpStart defaults)
  (b) dynamic        random batches padded to their longest member
  (c) length_grouped our default: batches of similar length, padded to their longest member
Reports examples/s over timed steps (after warm-up) and the share of non-padding tokens over a whole epoch.
Targets: (c) >= 2x (a) in examples/s, and >= 90% non-padding tokens.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radreport.build_tiny import tokenizer_corpus  # noqa: E402
from radreport.io import atomic_write_json  # noqa: E402
from radreport.modeling import build_tiny_t5, load_model, load_tokenizer  # noqa: E402
from radreport.schema import load_examples  # noqa: E402
from train.data import BatchOrder, Collator, Seq2SeqRows, padding_stats  # noqa: E402

MODES = ("max_length", "dynamic", "length_grouped")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--per-device", type=int, default=16)
    p.add_argument("--max-source", type=int, default=512)
    p.add_argument("--max-target", type=int, default=128)
    p.add_argument(
        "--pad-to-multiple-of",
        type=int,
        default=1,
        help="1 for fp32 on V100 (no tensor cores in fp32); 8 for fp16/bf16 tensor cores",
    )
    p.add_argument("--data", default=str(ROOT / "data/sample/train.json"))
    p.add_argument("--out", default=str(ROOT / "bench/results/train_throughput.json"))
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = load_examples(a.data)
    tmp = tempfile.TemporaryDirectory()
    model_dir = build_tiny_t5(ROOT / "configs/model/tiny-t5.yaml", tokenizer_corpus(rows), Path(tmp.name) / "m")
    tok = load_tokenizer(model_dir)
    init = load_model(model_dir).state_dict()
    ds = Seq2SeqRows.tokenize(rows, tok, "instruction", a.max_source, a.max_target)
    results = []
    for mode in MODES:
        fixed = mode == "max_length"
        collate = Collator(
            tok.pad_token_id, a.pad_to_multiple_of, a.max_source if fixed else 0, a.max_target if fixed else 0
        )
        batches = BatchOrder(ds.length_keys, a.per_device, 1, seed=0, mode=mode).batches()
        real = total = 0
        for b in batches:  # padding share over the whole epoch
            r, t = padding_stats(collate([ds[i] for i in b]), tok.pad_token_id)
            real, total = real + r, total + t
        model = load_model(model_dir)
        model.load_state_dict(init)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        examples, elapsed = 0, 0.0
        for step, b in enumerate(batches[: a.warmup + a.steps]):
            batch = collate([ds[i] for i in b])
            batch.pop("row")
            t0 = time.perf_counter()
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad()
            if step >= a.warmup:
                elapsed += time.perf_counter() - t0
                examples += len(b)
        results.append({"mode": mode, "examples_per_s": examples / elapsed, "non_padding_share": real / total})
    base = results[0]["examples_per_s"]
    for r in results:
        r["speedup_vs_max_length"] = r["examples_per_s"] / base
    print(f"{'batching':<16} {'examples/s':>11} {'vs max_length':>14} {'non-padding':>12}")
    for r in results:
        print(
            f"{r['mode']:<16} {r['examples_per_s']:>11.1f} {r['speedup_vs_max_length']:>13.2f}x "
            f"{r['non_padding_share']:>11.1%}"
        )
    c = results[2]
    verdict = {
        "speedup_target_2x": c["speedup_vs_max_length"] >= 2,
        "non_padding_target_90pct": c["non_padding_share"] >= 0.9,
    }
    print("targets:", verdict)
    atomic_write_json(
        a.out,
        {
            "command": " ".join(["python", *sys.argv]),
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "per_device": a.per_device,
            "max_source": a.max_source,
            "pad_to_multiple_of": a.pad_to_multiple_of,
            "max_target": a.max_target,
            "steps": a.steps,
            "results": results,
            "targets": verdict,
        },
    )


if __name__ == "__main__":
    main()
