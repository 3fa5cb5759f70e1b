"""Ready for the first GPU: numerics, speed and memory of a flan-t5 shape on one device, against the planner.

    python bench/gpu_check.py                                # on a GPU: flan-t5-xl's exact shapes, random weights
    python bench/gpu_check.py --shape tiny --device cpu      # the same checks in seconds on CPU (make test runs it)
        [--batch 8 --source 512 --target 128 --steps 5 --gradient-checkpointing --serve-batch 16 --json PATH]

One device, no DeepSpeed, nothing downloaded (bench/model_shapes.py builds the model: untied head, 32,128 rows).
For fp32, bf16 and fp16 (every weight cast, as DeepSpeed's 16-bit engines do):
  numerics   inf/NaN counts in every feed-forward output (`wo`, where T5 overflows fp16) and in the loss, over one
             training forward of the longest batch (batch x source x target tokens); for fp16 also whether the
             overflow guard (train/guard.py) stops the step, and at which layer.
  speed      seconds per training step, tokens/s and model-FLOPs utilisation, with the planner's FLOP count
             (train.plan.forward_flops; 3 x forward for a training step) over the device's dense peak.
             A step is forward + backward + AdamW when the planner says weights, gradients and Adam states fit
             this one device; else forward + backward; else forward alone (flan-t5-xl in fp32 needs 45.6 GB of
             states: a V100 or an A10G trains it only sharded, with ZeRO-3 across GPUs).
  memory     the peak of one step above the memory held before it (torch.cuda.max_memory_allocated; on CPU the
             process's VmHWM) against the planner's activations + backward transient for the same batch.
Then bf16 beam-4 serving throughput (radreport.generation.generate, `wo` kept in fp32 as from_pretrained keeps
it): one batch of --serve-batch findings against the same findings one at a time.

With random weights nothing in the activations is as large as in the pretrained checkpoint, so zero overflows
here does not prove fp16 safe for flan-t5-xl; the guard is what a real fp16 run relies on.
Prints a table and writes JSON (default bench/results/gpu_check_SHAPE_DEVICE.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.model_shapes import build_model, flan_layout_tokenizer, sample_texts, shape_config  # noqa: E402
from radreport.io import atomic_write_json  # noqa: E402
from train import plan  # noqa: E402

GIB = 1024**3
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Dense peak TFLOP/s by device name fragment: fp32 (no tensor cores; TF32 off) and 16-bit tensor cores.
PEAKS = {
    "V100": (15.7, 125.0),
    "A10G": (31.2, 125.0),
    "A100": (19.5, 312.0),
    "H100": (67.0, 989.0),
    "H200": (67.0, 989.0),
    "L4": (30.3, 121.0),
}


def device_peak_tflops(device: str, dtype: str, override: float) -> float:
    if override:
        return override
    if not device.startswith("cuda"):
        return 0.0
    name = torch.cuda.get_device_name(device)
    for key, (fp32, half) in PEAKS.items():
        if key in name:
            return fp32 if dtype == "fp32" else half
    return 0.0


class WoCounter:
    """Counts non-finite values in every `*.wo` output (forward hooks, like train/guard.py's)."""

    def __init__(self, model):
        self.nonfinite: dict[str, int] = {}
        self.handles = []
        for name, module in model.named_modules():
            if name.endswith(".wo"):
                self.nonfinite[name] = 0
                self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, inputs, output):
            self.nonfinite[name] += int((~torch.isfinite(output)).sum())

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class PeakMemory:
    """Peak bytes above the level at `start()`: CUDA allocator statistics, or the process's VmHWM on CPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        return 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.base = self._status("VmRSS:")

    def peak_above_start(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return self._status("VmHWM:") - self.base


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_mode(shape: plan.Shape, dtype: str, batch: plan.Batch, ckpt: bool, device: str) -> str:
    """What a step can hold on this one device, by the planner's numbers (no ZeRO: one process holds all)."""
    if not device.startswith("cuda"):
        return "adamw"
    p = plan.parameter_counts(shape)["total"]
    w = DTYPES[dtype].itemsize
    act = plan.activation_bytes(shape, batch.size, batch.source, batch.target, w, 1, ckpt)
    activations = act["kept"] + act["recompute"] + act["transient"]
    free = plan.USABLE_SHARE * torch.cuda.get_device_properties(device).total_memory
    if w * p + w * p + 8 * p + activations <= free:  # weights, gradients, AdamW m and v (fp32)
        return "adamw"
    if 2 * w * p + activations <= free:
        return "backward"
    return "forward"


def make_batch(b: int, s: int, t: int, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    vocab = 32000  # real pieces only, not the sentinels or the padding rows
    return {
        "input_ids": torch.randint(3, vocab, (b, s), generator=g).to(device),
        "attention_mask": torch.ones(b, s, dtype=torch.long, device=device),
        "labels": torch.randint(3, vocab, (b, t), generator=g).to(device),
    }


def check_dtype(args, dtype: str, shape: plan.Shape, batch: plan.Batch) -> dict:
    """Numerics, step time and memory of one dtype."""
    from train.guard import ActivationOverflow, install_overflow_guard

    device = args.device
    model = build_model(args.shape, device=device, dtype=DTYPES[dtype], seed=0).train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    data = make_batch(batch.size, batch.source, batch.target, device)
    mode = step_mode(shape, dtype, batch, args.gradient_checkpointing, device)
    # 1e-8 is 0 in fp16, and Adam then divides 0 by 0: 16-bit steps here use eps 1e-3 (timed like any other;
    # DeepSpeed's 16-bit engines keep fp32 master weights and Adam states instead)
    eps = 1e-8 if dtype == "fp32" else 1e-3
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, eps=eps) if mode == "adamw" else None

    # numerics: one training forward of the longest batch, every wo output counted
    counter = WoCounter(model)
    with torch.no_grad() if mode == "forward" else torch.enable_grad():
        loss = model(**data).loss.detach()
    counter.remove()
    result = {
        "dtype": dtype,
        "step": mode,
        "wo_layers": len(counter.nonfinite),
        "wo_nonfinite": sum(counter.nonfinite.values()),
        "wo_layers_nonfinite": sorted(k for k, v in counter.nonfinite.items() if v),
        "loss": float(loss),
        "loss_finite": bool(torch.isfinite(loss)),
    }
    if dtype == "fp16":  # as a real fp16 run: the guard stays on for the timed steps too
        install_overflow_guard(model)
        result["guard"] = "passed: no inf/NaN in any wo output"

    # speed and memory: steps after one warm-up
    memory = PeakMemory(device)
    times, peaks = [], []
    try:
        for i in range(args.steps + 1):
            memory.start()
            sync(device)
            t0 = time.perf_counter()
            if mode == "forward":
                with torch.no_grad():
                    model(**data)
            else:
                model(**data).loss.backward()
                if optimizer:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=False)
                else:
                    model.zero_grad(set_to_none=False)
            sync(device)
            if i:  # the first step allocates gradients and optimizer states
                times.append(time.perf_counter() - t0)
                peaks.append(memory.peak_above_start())
    except ActivationOverflow as e:
        result["guard"] = f"stopped at step {i}: {e}"
    if not times:
        return result
    seconds = sorted(times)[len(times) // 2]
    forward = batch.size * plan.forward_flops(shape, batch.source, batch.target)
    flops = forward * (1 if mode == "forward" else 3)
    peak = device_peak_tflops(device, dtype, args.peak_tflops) * 1e12
    w = DTYPES[dtype].itemsize
    m = 1 if device.startswith("cuda") else w  # dropout masks: bool on CUDA, the activations' dtype on CPU
    act = plan.activation_bytes(shape, batch.size, batch.source, batch.target, w, m, args.gradient_checkpointing)
    planned = act["kept"] + act["recompute"] + act["transient"]
    result.update(
        {
            "seconds_per_step": seconds,
            "tokens_per_s": batch.size * (batch.source + batch.target) / seconds,
            "model_tflops_per_s": flops / seconds / 1e12,
            "mfu": flops / seconds / peak if peak else None,
            "step_peak_gib": max(peaks) / GIB,
            "step_peak_planned_gib": planned / GIB if mode != "forward" else None,
        }
    )
    del model, optimizer
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def serving(args, tokenizer) -> dict:
    """bf16 beam-4 throughput: one batch of n findings against the same n one at a time."""
    from radreport.generation import GenerationParams, generate
    from radreport.modeling import ModelMeta
    from radreport.schema import load_examples

    model = build_model(args.shape, device=args.device, dtype=torch.bfloat16, seed=0).eval()
    for name, module in model.named_modules():  # as from_pretrained keeps T5's `wo` (_keep_in_fp32_modules)
        if name.endswith(".wo"):
            module.float()
    meta = ModelMeta("instruction", args.source, 128)
    findings = [e.findings for e in load_examples(ROOT / "data/sample/dev1.json")[: args.serve_batch]]
    params = GenerationParams(num_beams=4, max_new_tokens=args.serve_new_tokens)
    generate(model, tokenizer, meta, findings[:2], params)  # warm-up
    sync(args.device)
    t0 = time.perf_counter()
    batched = generate(model, tokenizer, meta, findings, params)
    sync(args.device)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [generate(model, tokenizer, meta, [f], params)[0] for f in findings]
    sync(args.device)
    t_single = time.perf_counter() - t0
    same = sum(a.candidates[0][0] == b.candidates[0][0] for a, b in zip(batched, single, strict=True))
    return {
        "requests": len(findings),
        "batched_rps": len(findings) / t_batched,
        "one_at_a_time_rps": len(findings) / t_single,
        "speedup": t_single / t_batched,
        "same_best_text": same,
        "output_tokens": sum(g.output_tokens for g in batched),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="xl", choices=["tiny", "small", "base", "large", "xl"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", default="fp32,bf16,fp16")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--source", type=int, default=512)
    p.add_argument("--target", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--serve-batch", type=int, default=16, help="0: skip the serving check (e.g. a V100: no bf16)")
    p.add_argument("--serve-new-tokens", type=int, default=64)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="the device's dense peak, if not in the table")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no GPU visible to torch")
    torch.manual_seed(0)
    if a.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    shape = plan.Shape.from_config(shape_config(a.shape))
    batch = plan.Batch(a.batch, a.source, a.target)
    device_name = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else platform.processor() or "cpu"
    counts = plan.parameter_counts(shape)
    print(
        f"flan-t5-{a.shape} shape: {counts['total'] / 1e9:.3f}B parameters, random weights; {device_name}; "
        f"batch {a.batch} x ({a.source} + {a.target}) tokens; gradient checkpointing "
        f"{'on' if a.gradient_checkpointing else 'off'}"
    )
    context = None
    if a.device.startswith("cuda"):
        torch.cuda.init()
        free, total = torch.cuda.mem_get_info(a.device)
        context = (total - free - torch.cuda.memory_reserved(a.device)) / GIB
        print(f"CUDA context: {context:.2f} GiB (planner assumes {plan.CUDA_CONTEXT_GIB})")
    rows = []
    for dtype in a.dtypes.split(","):
        if dtype == "bf16" and a.device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            rows.append({"dtype": dtype, "skipped": "no bf16 on this GPU"})
            continue
        rows.append(check_dtype(a, dtype, shape, batch))
    print(
        f"\n{'dtype':<5} {'step':<9} {'wo inf/NaN':>10} {'loss':>9} {'s/step':>8} {'tokens/s':>9} {'MFU':>6} "
        f"{'peak GiB':>9} {'planned':>8}"
    )
    for r in rows:
        if "skipped" in r:
            print(f"{r['dtype']:<5} skipped: {r['skipped']}")
            continue
        if "seconds_per_step" not in r:
            print(f"{r['dtype']:<5} {r['step']:<9} {r['wo_nonfinite']:>10} {r['loss']:>9.3f}  (no step completed)")
            print(f"      fp16 overflow guard: {r['guard']}")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        planned = f"{r['step_peak_planned_gib']:.2f}" if r["step_peak_planned_gib"] is not None else "n/a"
        print(
            f"{r['dtype']:<5} {r['step']:<9} {r['wo_nonfinite']:>10} {r['loss']:>9.3f} {r['seconds_per_step']:>8.3f} "
            f"{r['tokens_per_s']:>9.0f} {mfu:>6} {r['step_peak_gib']:>9.2f} {planned:>8}"
        )
        if "guard" in r:
            print(f"      fp16 overflow guard: {r['guard']}")
    serve = None
    if a.serve_batch:
        serve = serving(a, flan_layout_tokenizer(sample_texts()))
        print(
            f"\nbf16 beam-4 serving, {serve['requests']} findings, up to {a.serve_new_tokens} new tokens: "
            f"batched {serve['batched_rps']:.2f} req/s, one at a time {serve['one_at_a_time_rps']:.2f} req/s "
            f"({serve['speedup']:.2f}x); same best text in {serve['same_best_text']}/{serve['requests']}"
        )
    result = {
        "command": " ".join(["python", *sys.argv]),
        "shape": a.shape,
        "parameters": counts["total"],
        "device": device_name,
        "torch": torch.__version__,
        "cuda_context_gib": context,
        "batch": {"size": a.batch, "source": a.source, "target": a.target},
        "gradient_checkpointing": a.gradient_checkpointing,
        "dtypes": rows,
        "serving": serve,
    }
    out = a.json or ROOT / f"bench/results/gpu_check_{a.shape}_{a.device.split(':')[0]}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
