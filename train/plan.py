r"""Size a training run before paying for it: memory per GPU (or per CPU process), checkpoint size, time.

    python -m train.plan --config configs/train/flan-t5-xl-p3.16xlarge.yaml [--instance p3.16xlarge --nodes 1]
    python -m train.plan --config CONFIG --cpu --world-size 2        # CPU processes (bench/scale_rehearsal.py)

The model is read from its config alone (a local model directory, configs/model/NAME.config.json for a hub id,
or the tiny spec): nothing is downloaded, no weights are built. Token counts come from the model directory's
tokenizer when there is one; otherwise from words x TOKENS_PER_WORD (said in the output). Memory is planned
for the longest batch: batch.per_device examples all as long as the longest source and the longest target of
the data (or the config's limits with --at-limits, or when no data file is at hand).

The memory model, in bytes per process (GPU or CPU rank). It was checked against measured peaks of the real
entry point on CPU (bench/scale_rehearsal.py, docs/benchmarks.md); every term says where it comes from.
Notation: P parameters (an untied lm_head counted: flan-t5-xl 2.85B), N processes, b batch per device,
s / t source / target tokens of the longest batch, d d_model, f d_ff, n = num_heads x d_kv, h heads,
Le / Ld encoder / decoder layers, V vocabulary rows, w bytes per weight and activation (4 fp32, 2 bf16/fp16),
m bytes per dropout mask element (1 on CUDA: bool; w on CPU, where dropout keeps its mask in the activations'
dtype).

  framework      CPU: what a rank of the real loop holds besides the terms below: its imports and gloo group,
                 measured on this machine (cpu_import_gib), + CPU_RANK_EXTRA_GIB;
                 CUDA: context, kernels and NCCL buffers, outside max_memory_allocated (CUDA_CONTEXT_GIB).
  model states   ZeRO-3 partitions, 20 P / N: weights w + fp32 master copy (none when w = 4: DeepSpeed reuses the
                 weights) + gradient partition w + a flattened fp32 copy of it for the optimizer step + Adam m, v
                 (4 + 0 + 4 + 4 + 8 in fp32; 2 + 4 + 2 + 4 + 8 in 16-bit). Offloaded parts go to host memory.
  ZeRO-3 working set  gathered parameters that stay live until their reuse in backward: w min(P, reuse/2) where
                 reuse = stage3_max_reuse_distance (a parameter is kept when it is used again within that many
                 parameters; from forward to backward that holds for the last reuse/2 of them). Gradients are
                 reduce-scattered in reduce_bucket_size pieces (d^2 under accelerate's "auto"): no full-size copy
                 stays (measured: backward's peak is within 0.1 GiB of the forward's on flan-t5-small).
  activations    what autograd keeps for backward in the longest batch (T5 in transformers 5, SDPA math path,
                 counted tensor by tensor; tests/train/test_plan.py checks the count against saved_tensors_hooks):
                   RMS norm, per token: 3 w d + 4 (+ 4 d when w = 2: the fp32 copy its variance is taken from)
                   encoder layer, per source token: 2 norms + 4 w n (q, k, v, attention output) + 2 m d (dropout masks)
                       + feed-forward: gated-GELU (7 w + m) f (gelu_new keeps 4 tensors, the gate 2, the dropout 1 + its
                       mask) or ReLU (2 w + m) f; and per layer (2 w + m) b h s^2 (softmax, dropout mask, dropout out)
                   decoder layer, per target token: 3 norms + 6 w n + 3 m d + feed-forward; per source token 2 w n
                       (cross-attention keys and values); per layer (2 w + m) b h (t^2 + t s)
                   each stack, per token: 2 m d + norm (embedding and final dropout masks, the final norm; its
                       output feeds dropout, not a linear, and the stack's output is kept by what reads it)
                   loss: log-softmax of the logits, 4 t V per example (fp32)
                 With gradient checkpointing each block keeps only its input (w d per token), plus the position
                 biases the first block hands on (w h s^2; w h (t^2 + t s); only in a stack of 2+ layers), and
                 one block at a time is recomputed in backward (the largest one counts).
                 Checked to the byte in fp32. For 16-bit on CUDA it is an estimate (attention maps and masks
                 as above, in w and bool). On CUDA, SDPA may pick its memory-efficient kernel, which keeps no
                 attention probabilities: the plan then errs high.
  transient      backward's peak on top: the logits' two gradients (2 x 4 b t V) and one attention map's gradients.
  CPU allocator  (CPU only) what glibc malloc holds beyond the live tensors: CPU_ALLOCATOR_RETENTION bytes per
                 parameter (measured; see the constant).

Validation beam search (eval.generation_batch_size = g per device, k beams, the longest source s, T new tokens):
g k (s d w + Ld 2 (s + T) n w) for encoder states and the decoder's cross/self key-value caches, plus the
per-step logits (3 x 4 g k V), on top of framework + model states + the gathered decoder.

FLOPs (model FLOPs, 2 per multiply-add, no padding): per example forward = encoder Le (2 s (4 d n + c d f) + 4 s^2 n)
+ decoder Ld (2 t (6 d n + c d f) + 4 s d n + 4 t^2 n + 4 t s n) + LM head 2 t d V, with c = 3 gated, 2 ReLU;
training = 3 x forward; gradient checkpointing recomputes the forward (4 x, hardware FLOPs).

Checkpoint on disk: 12 bytes per parameter (fp32 master weights + Adam m, v, gathered from every rank's shard;
16-bit training adds 2 bytes of 16-bit weights); the export: w bytes per parameter.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from radreport.cli import fraction, non_negative_float, non_negative_int, positive_int, run
from radreport.config import load_config, load_yaml
from radreport.errors import InputError
from radreport.paths import not_an_input, output_file
from train.config import TrainConfig
from train.disk import ASSUMED_DATA_GIB

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3

# Words -> tokens only when no tokenizer is at hand (a hub id, not downloaded). Estimated by hand for T5's
# 32k SentencePiece on chest X-ray prose: punctuation is its own piece and medical terms split
# ("pneumothorax" -> 4 pieces), ~1.5 per word. Not measured (the hub is unreachable where this was written).
# The ~2.7 per word quoted in issue 10 is the tiny tokenizer learnt from the synthetic sample, not T5's.
TOKENS_PER_WORD = 1.5
# What a CPU training rank holds besides its imports (cpu_import_gib) and the terms below: the tokenizer, the
# tokenised data, DeepSpeed's engine. Measured: ranks of the real loop training the 9M-parameter tiny shape
# (bench/scale_rehearsal.py --shape tiny) peak at 0.88-0.95 GiB with 0.24 GiB of imports and 0.38 of planned
# terms, and at 1.07-1.15 GiB with 0.46 GiB of imports (once the loop imported datasets) and 0.40 planned.
CPU_RANK_EXTRA_GIB = 0.30
# CUDA context, cuBLAS workspace, kernels and NCCL's buffers: not in max_memory_allocated but taken from the
# GPU. Typical for torch 2.x with CUDA 12: 0.3-0.6 GiB of context, a few hundred MiB for NCCL among 8 GPUs.
# Not measured here (no GPU); bench/gpu_check.py measures the context.
CUDA_CONTEXT_GIB = 0.75
# A GPU (or this machine) counts as fitting when the plan uses at most this share of it; the rest is allocator
# fragmentation (CUDA caching allocator, glibc arenas) and what other processes take.
USABLE_SHARE = 0.9
# Bytes per parameter that glibc malloc holds on CPU beyond the live tensors: ZeRO-3 gathers every weight and
# frees it each step, and the gradients come and go in parameter-sized blocks; freed into the heap between
# activation blocks, that memory is not all reused. bench/memory_probe.py measured 10.4-13.0 B/param on the
# flan-t5-small and -base shapes, with and without gradient checkpointing (docs/benchmarks.md); with
# MALLOC_MMAP_THRESHOLD_=262144 (large blocks returned to the system at once) the same runs peak at the live sum.
CPU_ALLOCATOR_RETENTION = 12.0


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float  # what the driver reports as total (torch.cuda.get_device_properties().total_memory)
    fp32_tflops: float  # dense, what fp32 training reaches for
    bf16_tflops: float  # dense tensor-core peak; 0 where the GPU has no bf16


GPUS = {
    "V100-16GB": Gpu("V100-16GB", 15.77, 15.7, 0.0),
    "A10G-24GB": Gpu("A10G-24GB", 22.3, 31.2, 70.0),
    "A100-40GB": Gpu("A100-40GB", 39.4, 19.5, 312.0),
    "H100-80GB": Gpu("H100-80GB", 79.1, 67.0, 989.0),
}
INSTANCES = {
    "p3.16xlarge": ("V100-16GB", 8),
    "p3dn.24xlarge": ("V100-16GB", 8),
    "g5.2xlarge": ("A10G-24GB", 1),
    "g5.48xlarge": ("A10G-24GB", 8),
    "p4d.24xlarge": ("A100-40GB", 8),
    "p5.48xlarge": ("H100-80GB", 8),
}


# ---- the model's shape and what follows from it alone ----------------------------------------


@dataclass(frozen=True)
class Shape:
    """The numbers of a T5 config that memory and FLOPs depend on."""

    d_model: int
    d_ff: int
    d_kv: int
    num_heads: int
    num_layers: int
    num_decoder_layers: int
    vocab_size: int
    gated: bool = True
    tied: bool = False
    relative_attention_num_buckets: int = 32

    @property
    def inner(self) -> int:
        return self.num_heads * self.d_kv

    @classmethod
    def from_config(cls, c: dict) -> Shape:
        """From a T5 config.json dict. `tie_word_embeddings` is read as written (transformers' T5Config
        reports True whatever the file says; flan-t5 files say false)."""
        return cls(
            d_model=c["d_model"],
            d_ff=c["d_ff"],
            d_kv=c["d_kv"],
            num_heads=c["num_heads"],
            num_layers=c["num_layers"],
            num_decoder_layers=c.get("num_decoder_layers") or c["num_layers"],
            vocab_size=c["vocab_size"],
            gated=c.get("feed_forward_proj", "relu").startswith("gated"),
            tied=c.get("tie_word_embeddings", True),
            relative_attention_num_buckets=c.get("relative_attention_num_buckets", 32),
        )


def parameter_counts(s: Shape) -> dict[str, int]:
    """Parameters by part; `total` counts the lm_head when it is untied."""
    d, f, n = s.d_model, s.d_ff, s.inner
    ff = (3 if s.gated else 2) * d * f
    bias = s.relative_attention_num_buckets * s.num_heads  # relative position table, first layer of each stack
    enc_layer = 4 * d * n + ff + 2 * d
    dec_layer = 8 * d * n + ff + 3 * d
    embedding = s.vocab_size * d
    encoder = s.num_layers * enc_layer + bias + d
    decoder = s.num_decoder_layers * dec_layer + bias + d
    head = 0 if s.tied else embedding
    return {
        "total": embedding + encoder + decoder + head,
        "embedding": embedding,
        "encoder": encoder,
        "decoder": decoder,
        "lm_head": head,
        "largest_layer": max(embedding, dec_layer),
    }


def norm_bytes(d: int, w: int) -> int:
    """Kept by one T5 RMS norm per token: its input, the normalised value, the scaled output, 1/rms (fp32);
    in 16-bit also the fp32 copy the variance is computed from."""
    return 3 * w * d + 4 + (4 * d if w < 4 else 0)


def ff_bytes(s: Shape, w: int, m: int) -> int:
    """Kept by the feed-forward per token. gelu_new is written in Python: its input, tanh, 0.5 x and 1 + tanh are
    kept; the gate keeps both factors; dropout keeps its mask, and its output is wo's input."""
    if s.gated:
        return (7 * w + m) * s.d_ff
    return (2 * w + m) * s.d_ff


def encoder_layer_bytes(s: Shape, b: int, src: int, w: int, m: int) -> int:
    d, n = s.d_model, s.inner
    per_token = 2 * norm_bytes(d, w) + 4 * w * n + 2 * m * d + ff_bytes(s, w, m)
    return b * (src * per_token + (2 * w + m) * s.num_heads * src * src)


def decoder_layer_bytes(s: Shape, b: int, src: int, tgt: int, w: int, m: int) -> int:
    d, n = s.d_model, s.inner
    per_token = 3 * norm_bytes(d, w) + 6 * w * n + 3 * m * d + ff_bytes(s, w, m)
    cross_kv = 2 * w * n * src
    attention = (2 * w + m) * s.num_heads * (tgt * tgt + tgt * src)
    return b * (tgt * per_token + cross_kv + attention)


def activation_bytes(s: Shape, b: int, src: int, tgt: int, w: int, m: int, checkpointing: bool) -> dict[str, int]:
    """Bytes autograd keeps for backward at the end of the forward (`kept`), and backward's extra peak
    (`transient`). See the module docstring for the terms."""
    d = s.d_model
    # embedding dropout mask, final norm, dropout mask, and the stack's output (kept by the cross-attention keys and
    # values, or by the LM head); the final norm's output feeds dropout, not a linear, which cancels that w d
    stack_ends = b * (src + tgt) * (2 * m * d + norm_bytes(d, w))
    loss = 4 * b * tgt * s.vocab_size
    enc = encoder_layer_bytes(s, b, src, w, m)
    dec = decoder_layer_bytes(s, b, src, tgt, w, m)
    if checkpointing:
        inputs = w * d * b * (s.num_layers * src + s.num_decoder_layers * tgt)
        # the relative position biases the first block hands to the others are checkpoint inputs too
        enc_bias = src * src if s.num_layers > 1 else 0
        dec_bias = tgt * (tgt + src) if s.num_decoder_layers > 1 else 0
        biases = w * s.num_heads * (enc_bias + dec_bias)
        kept = inputs + biases + stack_ends + loss
        recompute = max(enc, dec)
    else:
        kept = s.num_layers * enc + s.num_decoder_layers * dec + stack_ends + loss
        recompute = 0
    attention_grads = 2 * w * b * s.num_heads * max(src * src, tgt * (tgt + src))
    transient = 2 * 4 * b * tgt * s.vocab_size + attention_grads
    return {"kept": kept, "recompute": recompute, "transient": transient}


def forward_flops(s: Shape, src: float, tgt: float) -> float:
    """Model FLOPs of one example's forward (matrix multiplies, 2 per multiply-add)."""
    d, f, n, c = s.d_model, s.d_ff, s.inner, (3 if s.gated else 2)
    enc = s.num_layers * (2 * src * (4 * d * n + c * d * f) + 4 * src * src * n)
    dec = s.num_decoder_layers * (
        2 * tgt * (6 * d * n + c * d * f) + 4 * src * d * n + 4 * tgt * tgt * n + 4 * tgt * src * n
    )
    return enc + dec + 2 * tgt * d * s.vocab_size


def generation_bytes(s: Shape, g: int, beams: int, src: int, new_tokens: int, w: int) -> int:
    """Beam search of g inputs: encoder states and key/value caches for every beam, plus per-step logits."""
    rows = g * beams
    states = rows * src * s.d_model * w
    caches = rows * s.num_decoder_layers * 2 * (src + new_tokens) * s.inner * w
    logits = 3 * 4 * rows * s.vocab_size
    return states + caches + logits


# ---- DeepSpeed settings --------------------------------------------------------------------


@dataclass(frozen=True)
class ZeroSettings:
    """What the planner reads from a DeepSpeed JSON."""

    path: str
    stage: int
    weight_bytes: int  # 4 fp32, 2 bf16/fp16
    reuse_distance: float
    offload_optimizer: bool
    offload_params: bool

    @property
    def precision(self) -> str:
        return "fp32" if self.weight_bytes == 4 else "16-bit"


def zero_settings(path: str | Path) -> ZeroSettings:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: DeepSpeed config not found")
    try:
        ds = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(ds, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(ds).__name__}")
    zero = ds.get("zero_optimization", {})
    half = any(ds.get(k, {}).get("enabled") in (True, "auto") for k in ("bf16", "fp16"))
    device = lambda key: zero.get(key, {}).get("device", "none") not in ("none", None)  # noqa: E731
    return ZeroSettings(
        path=str(path),
        stage=int(zero.get("stage", 0)),
        weight_bytes=2 if half else 4,
        reuse_distance=float(zero.get("stage3_max_reuse_distance", 1e9)),
        offload_optimizer=device("offload_optimizer"),
        offload_params=device("offload_param"),
    )


def deepspeed_json_of(accelerate_config: str | Path) -> str:
    """The deepspeed_config_file an accelerate YAML names."""
    import yaml

    p = Path(accelerate_config)
    if not p.is_file():
        raise InputError(f"{accelerate_config}: accelerate config not found")
    try:
        data = load_yaml(p.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"{accelerate_config}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{accelerate_config}: expected a mapping of accelerate settings")
    name = (data.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if not name:
        raise InputError(f"{accelerate_config}: names no deepspeed_config_file")
    return str(ROOT / name) if not Path(name).is_absolute() else name


# ---- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """The longest batch a process sees."""

    size: int
    source: int
    target: int


@dataclass(frozen=True)
class MemoryPlan:
    """Peak memory of one process, by term, in bytes."""

    framework: float
    model_states: float
    zero3_working: float
    activations: float
    transient: float
    allocator: float

    @property
    def total(self) -> float:
        return (
            self.framework + self.model_states + self.zero3_working + self.activations + self.transient + self.allocator
        )


def model_state_bytes(p: int, world: int, z: ZeroSettings) -> tuple[float, float]:
    """(device bytes, host bytes) of ZeRO-3 partitions per process: 20 P / N in all (see the module docstring)."""
    weights = z.weight_bytes * p / world
    master = (4 * p / world) if z.weight_bytes < 4 else 0.0
    grads = z.weight_bytes * p / world
    flat_grad = 4 * p / world
    adam = 8 * p / world
    optimizer = master + flat_grad + adam
    device = (0 if z.offload_params else weights) + (0 if z.offload_optimizer else grads + optimizer)
    host = (weights if z.offload_params else 0) + (grads + optimizer if z.offload_optimizer else 0)
    return device, host


def zero3_working_bytes(p: int, z: ZeroSettings) -> float:
    """Gathered weights that stay live from forward to backward (module docstring)."""
    return z.weight_bytes * min(p, z.reuse_distance / 2)


@functools.cache
def cpu_import_gib() -> float:
    """Peak RSS (GiB) of an idle process holding what a CPU rank holds before its model: the training loop's
    imports (torch, DeepSpeed, transformers, accelerate, datasets) and a gloo process group. Measured here, in a
    child process, because it moves with the installed libraries (0.24 GiB, then 0.46 once the loop imported
    datasets)."""
    from train.local_launch import free_port

    code = (
        "import torch.distributed as dist, train.loop\n"
        f"dist.init_process_group('gloo', init_method='tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"measuring the imports of a CPU rank failed: {out.stderr.strip()[-2000:]}")
    return int(out.stdout.strip().splitlines()[-1]) * 1024 / GIB


def framework_bytes(cpu: bool) -> float:
    return (cpu_import_gib() + CPU_RANK_EXTRA_GIB if cpu else CUDA_CONTEXT_GIB) * GIB


def plan_training(
    shape: Shape, batch: Batch, world: int, z: ZeroSettings, checkpointing: bool, cpu: bool
) -> MemoryPlan:
    p = parameter_counts(shape)["total"]
    w = z.weight_bytes
    m = w if cpu else 1  # CPU dropout keeps its mask in the activations' dtype; CUDA keeps bool
    act = activation_bytes(shape, batch.size, batch.source, batch.target, w, m, checkpointing)
    states, _ = model_state_bytes(p, world, z)
    activations = act["kept"] + act["recompute"]
    return MemoryPlan(
        framework=framework_bytes(cpu),
        model_states=states,
        zero3_working=zero3_working_bytes(p, z),
        activations=activations,
        transient=act["transient"],
        allocator=CPU_ALLOCATOR_RETENTION * p if cpu else 0.0,
    )


def plan_generation(
    shape: Shape, g: int, beams: int, source: int, new_tokens: int, world: int, z: ZeroSettings, cpu: bool
) -> float:
    """Peak bytes of one process during validation beam search at generation batch g."""
    counts = parameter_counts(shape)
    states, _ = model_state_bytes(counts["total"], world, z)
    # each decoding step runs the decoder and the head; ZeRO-3 keeps them gathered from step to step only when
    # they are used again within stage3_max_reuse_distance parameters, i.e. when they are smaller than it
    per_step = counts["decoder"] + counts["lm_head"] + counts["embedding"]
    gathered = z.weight_bytes * (per_step if per_step < z.reuse_distance else 2 * counts["largest_layer"])
    decoding = generation_bytes(shape, g, beams, source, new_tokens, z.weight_bytes)
    return framework_bytes(cpu) + states + gathered + decoding


def largest_batch(fits, start: int = 1, limit: int = 4096) -> int:
    """The largest b >= 1 with fits(b) (0 when even 1 does not fit); fits must be monotone."""
    if not fits(start):
        return 0
    lo, hi = start, start
    while hi < limit and fits(hi * 2):
        hi *= 2
    lo, hi = hi, min(hi * 2, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def checkpoint_bytes(p: int, z: ZeroSettings) -> float:
    """A resumable checkpoint on disk: fp32 master weights + Adam m, v (12 B/param), + 16-bit weights if any."""
    return (12 + (z.weight_bytes if z.weight_bytes < 4 else 0)) * p


# ---- inputs: model config, tokens ----------------------------------------------------------


def model_config(cfg: TrainConfig) -> tuple[dict, str]:
    """The model's config.json as a dict, and where it came from."""
    if cfg.model.tiny_spec:
        from radreport.modeling import TinyModelSpec

        spec = load_config(TinyModelSpec, cfg.model.tiny_spec)
        c = {"vocab_size": spec.tokenizer.vocab_size, "tie_word_embeddings": True, **spec.t5}
        return c, cfg.model.tiny_spec
    local = Path(cfg.model.name) / "config.json"
    if local.is_file():
        return json.loads(local.read_text()), str(local)
    shipped = ROOT / "configs/model" / f"{cfg.model.name.split('/')[-1]}.config.json"
    if shipped.is_file():
        return {k: v for k, v in json.loads(shipped.read_text()).items() if not k.startswith("_")}, str(shipped)
    raise InputError(
        f"model.name: {cfg.model.name}: no local directory and no configs/model/{cfg.model.name.split('/')[-1]}"
        ".config.json; add the model's config.json there (the planner downloads nothing)"
    )


def local_tokenizer(cfg: TrainConfig):
    """The model directory's tokenizer, or None (hub id, tiny spec)."""
    if cfg.model.name and (Path(cfg.model.name) / "config.json").is_file():
        from radreport.modeling import load_tokenizer

        return load_tokenizer(cfg.model.name)
    return None


def data_tokens(cfg: TrainConfig, tokenizer) -> dict:
    """Source/target tokens of one epoch's training rows (after truncation) and the longest of each.

    Tokenised as training does (radreport.prompt.render, eos included, truncated to the limits) when a
    tokenizer is given; else words x TOKENS_PER_WORD + 1."""
    from radreport.prompt import render
    from radreport.schema import load_examples

    if not Path(cfg.data.train).is_file():
        return {}
    rows = load_examples(cfg.data.train, skip_bad=True)
    prompts = [render(e.findings, cfg.data.prompt_template, e.background) for e in rows]
    targets = [e.impression for e in rows]
    ms, mt = cfg.data.max_source_tokens, cfg.data.max_target_tokens
    if tokenizer is not None:
        src = [len(x) for x in tokenizer(prompts, max_length=ms, truncation=True)["input_ids"]]
        tgt = [len(x) for x in tokenizer(text_target=targets, max_length=mt, truncation=True)["input_ids"]]
        how = "tokenizer of the model directory"
    else:
        src = [min(ms, math.ceil(len(x.split()) * TOKENS_PER_WORD) + 1) for x in prompts]
        tgt = [min(mt, math.ceil(len(x.split()) * TOKENS_PER_WORD) + 1) for x in targets]
        how = f"no tokenizer at hand: {TOKENS_PER_WORD} tokens per word assumed"
    words = sum(len(x.split()) for x in prompts)
    kept = 1 - (cfg.data.val_fraction if not cfg.data.validation else 0)
    return {
        "rows": len(rows) * kept,
        "source_tokens": sum(src) * kept,
        "target_tokens": sum(tgt) * kept,
        "max_source": max(src),
        "max_target": max(tgt),
        "tokens_per_word": sum(src) / max(words, 1),
        "how": how,
    }


def epoch_flops(shape: Shape, tokens: dict) -> float:
    """Model FLOPs of one epoch (3 x forward), per-example lengths approximated by the epoch's mean lengths.

    The attention terms are quadratic in length, so the mean understates them slightly; they are a small share."""
    rows = tokens["rows"]
    return 3 * rows * forward_flops(shape, tokens["source_tokens"] / rows, tokens["target_tokens"] / rows)


# ---- the command ---------------------------------------------------------------------------


def host_memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--instance", default="p3.16xlarge", choices=sorted(INSTANCES))
    p.add_argument("--nodes", type=positive_int, default=1)
    p.add_argument("--cpu", action="store_true", help="plan CPU processes on this machine instead of GPUs")
    p.add_argument(
        "--world-size",
        type=non_negative_int,
        default=0,
        help="processes (default: the instance's GPUs x nodes; 2 with --cpu)",
    )
    p.add_argument(
        "--memory-gib",
        type=non_negative_float,
        default=0.0,
        help="--cpu: memory all processes share (default: this machine's)",
    )
    p.add_argument(
        "--deepspeed",
        default="",
        help="DeepSpeed JSON (default: the one configs/accelerate/p3.16xlarge.yaml or cpu-2proc.yaml names; "
        "configs/deepspeed/zero3-bf16.json on GPUs with bf16)",
    )
    p.add_argument("--at-limits", action="store_true", help="plan memory for data.max_source/max_target_tokens")
    p.add_argument("--mfu", type=fraction, default=0.30, help="model-FLOPs utilisation assumed for the time estimate")
    p.add_argument(
        "--assume-rows",
        type=non_negative_int,
        default=0,
        help="scale the data's token counts to this many rows (e.g. 91544 for MEDIQA when only a sample is at hand)",
    )
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args(argv)  # key=value overrides may come before or after the options
    if a.json:
        output_file(a.json, "--json")
    cfg = load_config(TrainConfig, a.config, a.overrides)
    if a.json:
        inputs = {"--config": a.config, "data.train": cfg.data.train, "data.validation": cfg.data.validation}
        not_an_input(
            a.json, f"--json {a.json}", {k: v for k, v in inputs.items() if v} | {"--deepspeed": a.deepspeed or None}
        )
    result = make_plan(cfg, a)
    print_plan(result)
    if a.json:
        from radreport.io import atomic_write_json

        atomic_write_json(a.json, result)
    return 0 if result["fits"] else 1


def make_plan(cfg: TrainConfig, a) -> dict:
    """Every number the command prints, as a dict (also what --json writes)."""
    config, config_source = model_config(cfg)
    shape = Shape.from_config(config)
    counts = parameter_counts(shape)
    if a.cpu:
        world = a.world_size or 2
        device_name, memory_gib = "CPU process", (a.memory_gib or host_memory_gib())
        usable = USABLE_SHARE * memory_gib / world
        accelerate_default = ROOT / "configs/accelerate/cpu-2proc.yaml"
    else:
        gpu_name, per_node = INSTANCES[a.instance]
        gpu = GPUS[gpu_name]
        world = a.world_size or per_node * a.nodes
        if world > per_node * a.nodes:
            raise InputError(
                f"--world-size {world}: {a.nodes} x {a.instance} has {per_node * a.nodes} GPUs (one process each)"
            )
        device_name, memory_gib, usable = gpu.name, gpu.memory_gib, USABLE_SHARE * gpu.memory_gib
        accelerate_default = ROOT / "configs/accelerate/p3.16xlarge.yaml"
    if a.deepspeed:
        ds_path = a.deepspeed
    elif a.cpu or GPUS[INSTANCES[a.instance][0]].bf16_tflops == 0:
        ds_path = deepspeed_json_of(accelerate_default)
    else:
        ds_path = str(ROOT / "configs/deepspeed/zero3-bf16.json")
    z = zero_settings(ds_path)
    if z.stage != 3:
        raise InputError(f"{ds_path}: the planner models ZeRO-3 only (stage is {z.stage})")

    tokenizer = local_tokenizer(cfg)
    tokens = data_tokens(cfg, tokenizer)
    if tokens and a.assume_rows:
        scale = a.assume_rows * (1 - (cfg.data.val_fraction if not cfg.data.validation else 0)) / tokens["rows"]
        tokens.update({k: tokens[k] * scale for k in ("rows", "source_tokens", "target_tokens")})
        tokens["data_scale"] = scale  # the data files' bytes grow with their rows (disk)
    at_limits = a.at_limits or not tokens
    batch = Batch(
        cfg.batch.per_device,
        cfg.data.max_source_tokens if at_limits else tokens["max_source"],
        cfg.data.max_target_tokens if at_limits else tokens["max_target"],
    )
    ckpt = cfg.model.gradient_checkpointing
    train = plan_training(shape, batch, world, z, ckpt, a.cpu)
    fits = train.total <= usable * GIB

    def train_fits(b: int, checkpointing: bool) -> bool:
        return plan_training(shape, Batch(b, batch.source, batch.target), world, z, checkpointing, a.cpu).total <= (
            usable * GIB
        )

    g = cfg.eval.generation_batch_size
    gen_args = (cfg.eval.num_beams, batch.source, cfg.eval.max_new_tokens, world, z, a.cpu)
    generation = plan_generation(shape, g, *gen_args)
    gen_largest = largest_batch(lambda n: plan_generation(shape, n, *gen_args) <= usable * GIB)
    _, host_states = model_state_bytes(counts["total"], world, z)
    result = {
        "model": cfg.model.name or cfg.model.tiny_spec,
        "model_config": config_source,
        "shape": asdict(shape),
        "params": counts,
        "device": device_name,
        "cpu": a.cpu,
        "world_size": world,
        "memory_gib": memory_gib,
        "framework_imports_gib": cpu_import_gib() if a.cpu else None,
        "data_file": cfg.data.train,
        "usable_gib_per_process": usable,
        "deepspeed": asdict(z),
        "batch": asdict(batch),
        "batch_from": "limits" if at_limits else "data",
        "gradient_checkpointing": ckpt,
        "memory": {k: v / GIB for k, v in asdict(train).items()} | {"total": train.total / GIB},
        "host_gib_per_process": host_states / GIB,
        "fits": fits,
        "largest_batch": {
            "checkpointing_off": largest_batch(lambda b: train_fits(b, False)),
            "checkpointing_on": largest_batch(lambda b: train_fits(b, True)),
        },
        "generation": {
            "batch": g,
            "beams": cfg.eval.num_beams,
            "new_tokens": cfg.eval.max_new_tokens,
            "source": batch.source,
            "gib": generation / GIB,
            "largest_batch": gen_largest,
        },
        "checkpoint_gb": checkpoint_bytes(counts["total"], z) / 1e9,
        "export_gb": z.weight_bytes * counts["total"] / 1e9,
        "tokens": tokens,
        "disk": run_disk(cfg, counts["total"], a, tokens, z),
    }
    if tokens:
        flops = epoch_flops(shape, tokens) * cfg.epochs
        peak = 0.0
        if not a.cpu:
            gpu = GPUS[INSTANCES[a.instance][0]]
            peak = (gpu.fp32_tflops if z.weight_bytes == 4 else gpu.bf16_tflops) * 1e12
        result["compute"] = {
            "model_flops": flops,
            "hardware_flops": flops * (4 / 3 if ckpt else 1),
            "mfu": a.mfu,
            "peak_flops_per_device": peak,
            "seconds": flops / (world * peak * a.mfu) if peak else None,
        }
    return result


def run_disk(cfg: TrainConfig, n_params: int, a, tokens: dict, z: ZeroSettings) -> dict:
    """Disk per node (train/disk.py): kept checkpoints + the one being written + export + starting model + data."""
    from train.disk import disk_need

    if tokens:
        data = sum(Path(f).stat().st_size for f in (cfg.data.train, cfg.data.validation) if f and Path(f).is_file())
        data = int(data * tokens.get("data_scale", 1))
    else:  # no data file at hand: what `train.sagemaker --data-gib` assumes too
        data = int(ASSUMED_DATA_GIB * GIB)
    need = disk_need(n_params, cfg, a.nodes, data, zero_stage=z.stage, weight_bytes=z.weight_bytes)
    return {**asdict(need), "volume_gb": need.volume_gb, "lines": need.lines()}


def print_plan(r: dict) -> None:
    c, z, mem = r["params"], r["deepspeed"], r["memory"]
    head = f"{c['lm_head'] / 1e9:.3f}B untied" if c["lm_head"] else "tied"
    print(
        f"model: {r['model']} ({r['model_config']}): {c['total'] / 1e9:.3f}B parameters (encoder "
        f"{c['encoder'] / 1e9:.3f}B, decoder {c['decoder'] / 1e9:.3f}B, shared embedding {c['embedding'] / 1e9:.3f}B, "
        f"lm_head {head})"
    )
    where = (
        f"{r['world_size']} CPU processes sharing {r['memory_gib']:.1f} GiB"
        if r["cpu"]
        else (f"{r['world_size']} x {r['device']} ({r['memory_gib']:.2f} GiB each)")
    )
    print(
        f"hardware: {where}; ZeRO-{z['stage']} {'fp32' if z['weight_bytes'] == 4 else '16-bit'} "
        f"({Path(z['path']).name}; reuse distance {z['reuse_distance']:.0e}"
        f"{', optimizer offloaded' if z['offload_optimizer'] else ''}"
        f"{', parameters offloaded' if z['offload_params'] else ''})"
    )
    t = r["tokens"]
    if t:
        ratio = f"; {t['tokens_per_word']:.2f} tokens per word of the prompts" if "tokenizer of" in t["how"] else ""
        print(f"tokens: {t['how']}{ratio}")
    b = r["batch"]
    print(
        f"longest batch: {b['size']} x ({b['source']} source + {b['target']} target tokens), "
        f"{'the config limits' if r['batch_from'] == 'limits' else 'the longest source and target of the data'}; "
        f"gradient checkpointing {'on' if r['gradient_checkpointing'] else 'off'}"
    )
    unit = "CPU process" if r["cpu"] else "GPU"
    print(f"\nmemory per {unit}, training (GiB):")
    rows = [
        (
            f"framework (imports {r['framework_imports_gib']:.2f} measured + {CPU_RANK_EXTRA_GIB:.2f} data, engine)"
            if r["cpu"]
            else "framework (CUDA context, NCCL)",
            mem["framework"],
        ),
        ("model states, ZeRO-3 partitions (20 B/param / N)", mem["model_states"]),
        ("ZeRO-3 gathered parameters, live forward to backward", mem["zero3_working"]),
        (
            "activations kept for backward" + (" + one block recomputed" if r["gradient_checkpointing"] else ""),
            mem["activations"],
        ),
        ("backward transient (logit gradients, attention)", mem["transient"]),
    ]
    if r["cpu"]:
        rows.append(("CPU allocator retention", mem["allocator"]))
    for name, v in rows:
        print(f"  {name:<52} {v:6.2f}")
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    print(f"  {'total':<52} {mem['total']:6.2f}  of {r['usable_gib_per_process']:.1f} usable: {verdict}")
    if r["host_gib_per_process"]:
        print(f"  host memory per process for offloaded states: {r['host_gib_per_process']:.1f} GiB")
    lb = r["largest_batch"]
    print(
        f"  largest batch.per_device that fits at these lengths: {lb['checkpointing_off']} without, "
        f"{lb['checkpointing_on']} with gradient checkpointing"
    )
    g = r["generation"]
    print(
        f"validation beam search: eval.generation_batch_size={g['batch']} x {g['beams']} beams at {g['source']} "
        f"source + {g['new_tokens']} new tokens: {g['gib']:.2f} GiB per {unit}; the largest that fits: "
        f"{g['largest_batch']}"
    )
    print(
        f"checkpoint on disk: {r['checkpoint_gb']:.1f} GB (fp32 weights + Adam m, v: 12 B/param); "
        f"export: {r['export_gb']:.1f} GB"
    )
    print("\n" + "\n".join(r["disk"]["lines"]))
    if t:
        comp = r["compute"]
        print(
            f"\ndata: {t['rows']:.0f} training rows/epoch, {t['source_tokens'] / 1e6:.2f}M source + "
            f"{t['target_tokens'] / 1e6:.2f}M target tokens (no padding)"
        )
        line = f"compute: {comp['model_flops'] / 1e15:.1f} PFLOP (model FLOPs: forward + backward)"
        if comp["seconds"]:
            line += (
                f"; at {comp['mfu']:.0%} MFU of {r['world_size']} x {comp['peak_flops_per_device'] / 1e12:.1f} "
                f"TFLOP/s: {comp['seconds']:,.0f} s ({comp['seconds'] / 3600:.1f} h)"
            )
        print(line)
    else:
        print(
            f"\ndata: {r['data_file'] or '(none)'} is not here: memory planned at the config's token limits, "
            f"{ASSUMED_DATA_GIB:.0f} GiB of data assumed for the disk, no time estimate (data.train=FILE; a "
            "sample of it with --assume-rows N)"
        )
    if not r["fits"]:
        print(
            "   try: a smaller batch.per_device with more gradient_accumulation_steps (largest above), "
            "model.gradient_checkpointing=true, configs/deepspeed/zero3-fp32-offload.json, or more nodes"
        )


if __name__ == "__main__":
    sys.exit(run(main))
