r"""Size a training run before paying for it.

    python -m train.plan --config configs/train/flan-t5-xl-p3.16xlarge.yaml \
        [--instance p3.16xlarge --nodes 1 --mfu 0.30]

Builds the model on the meta device (no weights, no download), prints per-GPU memory of the model
states for each ZeRO stage with and without offload (DeepSpeed's own estimators), the token count
of the data, and the time of the run at a stated model-FLOPs utilisation. It says when a config
cannot fit.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from radreport.cli import run
from radreport.config import load_config
from train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    fp32_tflops: float  # dense, what fp32 training reaches for
    bf16_tflops: float  # dense tensor-core peak; 0 where the GPU has no bf16


GPUS = {
    "V100-16GB": Gpu("V100-16GB", 16, 15.7, 0.0),
    "A10G-24GB": Gpu("A10G-24GB", 24, 31.2, 70.0),
    "A100-40GB": Gpu("A100-40GB", 40, 19.5, 312.0),
    "H100-80GB": Gpu("H100-80GB", 80, 67.0, 989.0),
}
INSTANCES = {
    "p3.16xlarge": ("V100-16GB", 8),
    "p3dn.24xlarge": ("V100-16GB", 8),
    "g5.2xlarge": ("A10G-24GB", 1),
    "g5.48xlarge": ("A10G-24GB", 8),
    "p4d.24xlarge": ("A100-40GB", 8),
    "p5.48xlarge": ("H100-80GB", 8),
}
TOKENS_PER_WORD = 1.4  # T5 SentencePiece on clinical English, used only when no tokenizer is at hand


def model_config(cfg: TrainConfig):
    from transformers import AutoConfig, T5Config

    if cfg.model.tiny_spec:
        from radreport.modeling import TinyModelSpec

        spec = load_config(TinyModelSpec, cfg.model.tiny_spec)
        return T5Config(vocab_size=spec.tokenizer.vocab_size, **spec.t5)
    if Path(cfg.model.name).is_dir():
        return AutoConfig.from_pretrained(cfg.model.name, local_files_only=True)
    shipped = ROOT / "configs/model" / f"{cfg.model.name.split('/')[-1]}.config.json"
    if shipped.is_file():
        data = {k: v for k, v in json.loads(shipped.read_text()).items() if not k.startswith("_")}
        return T5Config(**data)
    return AutoConfig.from_pretrained(cfg.model.name)  # a small JSON from the hub


def meta_model(config):
    from transformers import AutoModelForSeq2SeqLM

    with torch.device("meta"):
        return AutoModelForSeq2SeqLM.from_config(config)


def parameter_counts(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    enc = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))
    dec = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("decoder.", "lm_head.")))
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return {"total": total, "encoder": enc, "decoder_and_head": dec, "largest_layer": largest}


def data_tokens(cfg: TrainConfig) -> dict[str, float]:
    """Source/target tokens of one epoch (after truncation), from words when no tokenizer is local."""
    from radreport.prompt import render
    from radreport.schema import load_examples

    if not Path(cfg.data.train).is_file():
        return {}
    rows = load_examples(cfg.data.train, skip_bad=True)
    src = [
        min(
            cfg.data.max_source_tokens,
            math.ceil(len(render(e.findings, cfg.data.prompt_template).split()) * TOKENS_PER_WORD) + 1,
        )
        for e in rows
    ]
    tgt = [min(cfg.data.max_target_tokens, math.ceil(len(e.impression.split()) * TOKENS_PER_WORD) + 1) for e in rows]
    kept = 1 - (cfg.data.val_fraction if not cfg.data.validation else 0)
    return {
        "rows": len(rows) * kept,
        "source_tokens": sum(src) * kept,
        "target_tokens": sum(tgt) * kept,
        "max_source": max(src),
        "max_target": max(tgt),
    }


def deepspeed_estimates(counts: dict, gpus_per_node: int, nodes: int) -> list[dict]:
    """DeepSpeed's own estimators (each returns CPU bytes first, then GPU bytes)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    rows = []
    for offload in (False, True):
        cpu, gpu = estimate_zero2_model_states_mem_needs(counts["total"], gpus_per_node, nodes, cpu_offload=offload)
        rows.append(
            {"stage": 2, "offload": "optimizer" if offload else "none", "gpu_gib": gpu / GIB, "cpu_gib": cpu / GIB}
        )
    for offload, params in ((False, False), (True, False), (True, True)):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            counts["total"],
            counts["largest_layer"],
            gpus_per_node,
            nodes,
            cpu_offload=offload,
            cpu_offload_params=params,
        )
        what = "optimizer+params" if params else ("optimizer" if offload else "none")
        rows.append({"stage": 3, "offload": what, "gpu_gib": gpu / GIB, "cpu_gib": cpu / GIB})
    return rows


def fp32_zero3_model_states_gib(counts: dict, gpus: int) -> float:
    """DeepSpeed's estimator assumes 16-bit weights; fp32 ZeRO-3 holds 4 (weights) + 4 (grads) + 8 (Adam) bytes
    per parameter, sharded, plus the largest layer gathered in fp32."""
    return (16 * counts["total"] / gpus + 4 * counts["largest_layer"] * 2) / GIB


def activation_gib(config, cfg: TrainConfig, tokens: dict) -> float:
    """Rough peak activations of one worst-case micro-batch (fp32); gradient checkpointing keeps layer inputs only."""
    b = cfg.batch.per_device
    s = tokens.get("max_source", cfg.data.max_source_tokens)
    t = tokens.get("max_target", cfg.data.max_target_tokens)
    d, ff, h = config.d_model, config.d_ff, config.num_heads
    per_tok_layer = 4 * (10 * d + 2 * ff)  # q,k,v,o, norms, residuals, gated FF, in fp32 bytes
    attn = 4 * h * (s * s + 2 * t * t + t * s) * b
    layers = config.num_layers + config.num_decoder_layers
    logits = 4 * b * t * config.vocab_size * 2
    if cfg.model.gradient_checkpointing:
        total = (
            4 * d * b * (s * config.num_layers + t * config.num_decoder_layers)
            + per_tok_layer * b * max(s, t)
            + attn / layers
        )
    else:
        total = per_tok_layer * b * (s * config.num_layers + 2 * t * config.num_decoder_layers) + attn
    return (total + logits) / GIB


def training_flops(counts: dict, tokens: dict, epochs: int, checkpointing: bool) -> float:
    """6 x params x tokens per pass, encoder params over source tokens and decoder over target tokens;
    gradient checkpointing adds a forward (8x)."""
    k = 8 if checkpointing else 6
    return (
        k
        * epochs
        * (counts["encoder"] * tokens["source_tokens"] + counts["decoder_and_head"] * tokens["target_tokens"])
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--instance", default="p3.16xlarge", choices=sorted(INSTANCES))
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--mfu", type=float, default=0.30, help="model-FLOPs utilisation assumed for the time estimate")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument(
        "--assume-rows",
        type=int,
        default=0,
        help="scale the data's token counts to this many rows (e.g. 91544 for MEDIQA when only a sample is at hand)",
    )
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(TrainConfig, a.config, a.overrides)
    gpu_name, per_node = INSTANCES[a.instance]
    gpu, gpus = GPUS[gpu_name], INSTANCES[a.instance][1] * a.nodes
    config = model_config(cfg)
    counts = parameter_counts(meta_model(config))
    with redirect_stdout(io.StringIO()):
        estimates = deepspeed_estimates(counts, per_node, a.nodes)
    tokens = data_tokens(cfg)
    if tokens and a.assume_rows:
        scale = a.assume_rows * (1 - (cfg.data.val_fraction if not cfg.data.validation else 0)) / tokens["rows"]
        tokens.update({k: tokens[k] * scale for k in ("rows", "source_tokens", "target_tokens")})
    act = activation_gib(config, cfg, tokens)
    fp32_states = fp32_zero3_model_states_gib(counts, gpus)

    print(
        f"model: {cfg.model.name or cfg.model.tiny_spec}: {counts['total'] / 1e9:.3f}B parameters "
        f"(encoder {counts['encoder'] / 1e9:.3f}B, decoder+head {counts['decoder_and_head'] / 1e9:.3f}B, "
        f"largest layer {counts['largest_layer'] / 1e6:.1f}M)"
    )
    print(f"hardware: {a.nodes} x {a.instance} = {gpus} x {gpu.name}\n")
    print("model states per GPU (DeepSpeed estimators; they assume 16-bit weights + fp32 optimizer):")
    print(f"  {'ZeRO':>4}  {'offload':<17} {'GPU GiB':>8} {'CPU GiB/node':>13}")
    for r in estimates:
        print(f"  {r['stage']:>4}  {r['offload']:<17} {r['gpu_gib']:>8.2f} {r['cpu_gib']:>13.1f}")
    print(f"  fp32 ZeRO-3 (our V100 default, 16 bytes/param sharded + a gathered layer): {fp32_states:.2f} GiB")
    print(
        f"activations, worst micro-batch of {cfg.batch.per_device} (rough, fp32, gradient checkpointing "
        f"{'on' if cfg.model.gradient_checkpointing else 'off'}): {act:.2f} GiB"
    )
    need = (fp32_states if a.precision == "fp32" else estimates[2]["gpu_gib"]) + act  # [2]: ZeRO-3, no offload
    fits = need < gpu.memory_gib * 0.9
    print(
        f"=> {need:.1f} GiB of {gpu.memory_gib:.0f} GiB per GPU: {'fits' if fits else 'DOES NOT FIT'} "
        f"(ZeRO-3, {a.precision}, no offload)"
    )
    if not fits:
        print(
            "   try: model.gradient_checkpointing=true, a smaller batch.per_device with more "
            "gradient_accumulation_steps, configs/deepspeed/zero3-fp32-offload.json, or more nodes"
        )
    result = {
        "instance": a.instance,
        "nodes": a.nodes,
        "gpus": gpus,
        "params": counts,
        "zero": estimates,
        "fp32_zero3_states_gib": fp32_states,
        "activation_gib": act,
        "fits": fits,
        "tokens": tokens,
    }
    # disk per node (train/disk.py): kept checkpoints + the one being written + export + starting model + data
    from train.disk import disk_need

    data_bytes = sum(Path(f).stat().st_size for f in (cfg.data.train, cfg.data.validation) if f and Path(f).is_file())
    data_bytes = int(data_bytes * (a.assume_rows / tokens["rows"] if tokens and a.assume_rows else 1))
    disk = disk_need(counts["total"], cfg, a.nodes, data_bytes, weight_bytes=4 if a.precision == "fp32" else 2)
    print("\n" + "\n".join(disk.lines()))
    result["disk"] = {**asdict(disk), "volume_gb": disk.volume_gb}
    if tokens:
        flops = training_flops(counts, tokens, cfg.epochs, cfg.model.gradient_checkpointing)
        peak = (gpu.fp32_tflops if a.precision == "fp32" else gpu.bf16_tflops) * 1e12
        seconds = flops / (gpus * peak * a.mfu)
        print(
            f"\ndata: {tokens['rows']:.0f} training rows/epoch, {tokens['source_tokens'] / 1e6:.2f}M source + "
            f"{tokens['target_tokens'] / 1e6:.2f}M target tokens (no padding; ~{TOKENS_PER_WORD} tokens/word)"
        )
        print(
            f"compute: {flops / 1e15:.1f} PFLOP for {cfg.epochs} epochs; at {a.mfu:.0%} MFU of {gpus} x "
            f"{peak / 1e12:.1f} TFLOP/s ({a.precision}): {seconds:,.0f} s ({seconds / 3600:.1f} h)"
        )
        result.update({"flops": flops, "mfu": a.mfu, "seconds": seconds})
    if a.json:
        from radreport.io import atomic_write_json

        atomic_write_json(a.json, result)
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(run(main))
