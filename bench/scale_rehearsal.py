"""Scale rehearsal on CPU: a real flan-t5 shape through the real training entry point, measured against the plan.

    flock /tmp/radreport-heavy.lock python bench/scale_rehearsal.py [--shape base] [--batch 8] [--steps 4]
        [--gradient-checkpointing] [--out-dir runs/rehearsal] [--json bench/results/scale_rehearsal_base_b8.json]

1. Builds a model directory with the exact architecture of flan-t5-SHAPE (configs/model/flan-t5-SHAPE.config.json,
   untied LM head, 32,128 vocabulary rows), random weights and a locally learnt tokenizer (bench/model_shapes.py).
2. Trains it with the real command, 2 DeepSpeed ZeRO-3 processes on CPU:
       accelerate launch --config_file configs/accelerate/cpu-2proc.yaml -m train --config RUN/train.yaml ...
   first stopping after half the steps (interrupt_after_steps: checkpoint, exit 75), then the same command again:
   it resumes, finishes the steps, validates (beam search), checkpoints and exports.
3. Reloads the export, checks that its lm_head is its own matrix (not `shared`), and generates with
   radreport.generation.generate.
4. Prints, per rank, the peak RSS measured (VmHWM of each rank process, polled from /proc) beside what
   `python -m train.plan --cpu` plans for the same shape, world size, batch and data (its framework term is
   measured on this machine: an idle process with the loop's imports); checkpoint and export sizes on disk
   beside 12 and 4 bytes/param.

The training rows are the sample's longest (by tokens), so every step is close to the longest batch the
planner plans for. The last line reads `rehearsal: peak X GiB measured, Y GiB planned per rank`.
Needs ~20 GB of memory at the defaults: run it alone (under the heavy-jobs lock); it refuses to start when
the plan says it does not fit this machine (--force to try anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.model_shapes import build_model_dir, head_report  # noqa: E402
from radreport.io import atomic_write_json  # noqa: E402
from train.local_launch import launch_command  # noqa: E402

GIB = 1024**3


def vm_hwm(pid: int) -> int | None:
    """Peak resident set of a process so far (bytes), from the kernel's own high-water mark."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class RankPeaks:
    """Polls the launcher's descendants and keeps the VmHWM of each training rank: a process with RANK in its
    environment whose parent has none (a process a rank starts inherits RANK; it is kept apart, in `others`).
    The kernel's high-water mark is exact; polling only has to read it before the process exits."""

    def __init__(self, launcher_pid: int, interval: float = 0.2):
        self.launcher_pid, self.interval = launcher_pid, interval
        self.peaks: dict[int, int] = {}
        self.others: dict[str, int] = {}  # "pid command" -> peak, for processes the ranks started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RankPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        role: dict[int, int | str | None] = {}  # pid -> rank, "pid command" of a rank's child, or None
        while not self._stop.is_set():
            for pid, ppid in descendants(self.launcher_pid):
                if pid not in role:
                    env = environment(pid)
                    if "RANK" not in env or "LOCAL_RANK" not in env:
                        role[pid] = None
                    elif "RANK" in environment(ppid):
                        role[pid] = f"{pid} {command(pid)}"
                    else:
                        role[pid] = int(env["RANK"])
                peak = vm_hwm(pid) if role[pid] is not None else None
                if peak and isinstance(role[pid], int):
                    self.peaks[role[pid]] = max(self.peaks.get(role[pid], 0), peak)
                elif peak:
                    self.others[role[pid]] = max(self.others.get(role[pid], 0), peak)
            self._stop.wait(self.interval)


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of every process below `root`, from /proc/PID/stat."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += [(pid, parent) for pid in children]
        frontier += children
    return found


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return "?"


def environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def longest_rows(tokenizer, rows, template: str, n: int):
    """The n rows with the most source + target tokens."""
    from radreport.prompt import render

    src = tokenizer([render(r.findings, template, r.background) for r in rows])["input_ids"]
    tgt = tokenizer(text_target=[r.impression for r in rows])["input_ids"]
    order = sorted(range(len(rows)), key=lambda i: -(len(src[i]) + len(tgt[i])))
    return [rows[i] for i in order[:n]]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


TRAIN_YAML = """# Written by bench/scale_rehearsal.py: flan-t5-{shape} shape, random weights, the sample's longest rows.
model:
  name: {model}
  gradient_checkpointing: {ckpt}
data:
  train: {train}
  validation: {val}
  prompt_template: instruction
  max_source_tokens: 512
  max_target_tokens: 128
batch:
  per_device: {batch}
  gradient_accumulation_steps: 1
  batching: length_grouped
  eval_per_device: {gen_batch}
optim:
  lr: 1e-5
  schedule: constant_with_warmup
eval:
  rouge_samples: {val_rows}
  num_beams: 4
  max_new_tokens: 32
  generation_batch_size: {gen_batch}
checkpoint:
  every_steps: 0
  keep_last: 1
epochs: 1
max_steps: {steps}
log_every_steps: 1
seed: 0
"""


def launch(run_dir: Path, config: Path, world: int, overrides: list[str], log: Path) -> tuple[int, dict, float]:
    """One `accelerate launch ... -m train` run; (exit status, peak bytes by rank, seconds)."""
    cmd = launch_command(config, run_dir, world, overrides)
    print("$ accelerate launch " + " ".join(cmd[4:]), flush=True)
    t0 = time.time()
    with open(log, "a") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
        with RankPeaks(proc.pid) as peaks:
            rc = proc.wait()
    for name, peak in peaks.others.items():  # e.g. the compiler of DeepSpeed's first-launch JIT build (1.5 GiB)
        if peak > 0.1 * GIB:
            print(f"  (not counted, a process a rank started: {name[:100]}: peak {peak / GIB:.2f} GiB)")
    return rc, dict(sorted(peaks.peaks.items())), time.time() - t0


def planned(config: Path, world: int) -> dict:
    """`python -m train.plan --config RUN/train.yaml --cpu --world-size N`, printed as a user sees it; its JSON."""
    from train.plan import main as plan_main

    out = config.with_name("plan.json")
    plan_main(["--config", str(config), "--cpu", "--world-size", str(world), "--json", str(out)])
    return json.loads(out.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="base", choices=["tiny", "small", "base", "large"])
    p.add_argument("--batch", type=int, default=8, help="batch.per_device")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps in all (the first run stops at half)")
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--out-dir", type=Path, default=ROOT / "runs/rehearsal")
    p.add_argument("--json", type=Path, default=None, help="default: bench/results/scale_rehearsal_SHAPE_bN.json")
    p.add_argument("--force", action="store_true", help="run even when the plan says it does not fit")
    p.add_argument("--keep", action="store_true", help="keep the run directory (checkpoints, export)")
    a = p.parse_args()
    if a.steps < 2:
        p.error("--steps must be at least 2 (stop at half, resume for the rest)")
    from radreport.modeling import load_model, load_tokenizer, read_meta
    from radreport.schema import load_examples, write_examples

    tag = f"{a.shape}_b{a.batch}" + ("_ckpt" if a.gradient_checkpointing else "")
    out = a.out_dir / tag
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t_start = time.time()

    # ---- 1. model directory, data, config
    model_dir = build_model_dir(a.shape, out / "init-model")
    tokenizer = load_tokenizer(model_dir)
    rows = load_examples(ROOT / "data/sample/train.json")
    per_run = a.batch * a.world_size
    longest = longest_rows(tokenizer, rows, "instruction", per_run * a.steps + 8)
    write_examples(out / "train.json", longest[8:])
    write_examples(out / "val.json", longest[:8])
    gen_batch = 8 // a.world_size
    config = out / "train.yaml"
    config.write_text(
        TRAIN_YAML.format(
            shape=a.shape,
            model=model_dir,
            ckpt=str(a.gradient_checkpointing).lower(),
            train=out / "train.json",
            val=out / "val.json",
            batch=a.batch,
            gen_batch=gen_batch,
            val_rows=8,
            steps=a.steps,
        )
    )
    plan = planned(config, a.world_size)
    plan_peak = max(plan["memory"]["total"], plan["generation"]["gib"])
    if not plan["fits"] and not a.force:
        print(f"error: the plan needs {plan_peak:.1f} GiB per rank, more than this machine allows (--force to try)")
        return 2

    # ---- 2. train: stop at half (checkpoint), then resume to the end (validation, checkpoint, export)
    run_dir, log = out / "run", out / "train.log"
    half = a.steps // 2
    rc1, peaks1, s1 = launch(run_dir, config, a.world_size, [f"interrupt_after_steps={half}"], log)
    ckpt_dirs = sorted((run_dir / "checkpoints").glob("step-*"))
    step_ckpt = dir_bytes(ckpt_dirs[-1]) if ckpt_dirs else 0
    # each rank exits 75 (resumable); the launcher reports that as a failure of its own
    stopped = rc1 != 0 and f"interrupted on purpose after step {half}" in log.read_text() and ckpt_dirs
    rc2, peaks2, s2 = launch(run_dir, config, a.world_size, [], log) if stopped else (None, {}, 0.0)
    failed = not stopped or rc2 != 0
    if failed:
        print(
            f"error: the first run should stop at step {half} with a checkpoint, the second finish "
            f"(exit {rc2}); log: {log}"
        )
        print("\n".join(log.read_text().splitlines()[-30:]))

    # ---- 3. the export: its head, a reload, generation
    export = run_dir / "model"
    epoch_ckpts = sorted((run_dir / "checkpoints").glob("epoch-*"))
    head, reload = {}, {}
    if not failed:
        from radreport.generation import GenerationParams, generate

        head = head_report(export)
        model = load_model(export)
        tok = load_tokenizer(export)
        t0 = time.time()
        outs = generate(model, tok, read_meta(export), [r.findings for r in longest[:2]], GenerationParams(4, 16))
        reload = {
            "parameters": sum(q.numel() for q in model.parameters()),
            "generate_2_inputs_s": time.time() - t0,
            "generated": [o.candidates[0][0][:120] for o in outs],  # random weights: text, not sense
        }

    # ---- 4. report
    ranks = sorted(set(peaks1) | set(peaks2))
    measured = {r: max(peaks1.get(r, 0), peaks2.get(r, 0)) / GIB for r in ranks}
    params = plan["params"]["total"]
    print(
        f"\nflan-t5-{a.shape} shape ({params / 1e6:.1f}M parameters), {a.world_size} ZeRO-3 CPU processes, "
        f"batch {a.batch}, longest batch {plan['batch']['source']} + {plan['batch']['target']} tokens, "
        f"gradient checkpointing {'on' if a.gradient_checkpointing else 'off'}"
    )
    print(
        f"{'rank':>4}  {'run 1 GiB':>9}  {'run 2 GiB':>9}  {'peak GiB':>8}  {'planned GiB':>11}  "
        f"{'measured/planned':>16}"
    )
    for r in ranks:
        print(
            f"{r:>4}  {peaks1.get(r, 0) / GIB:>9.2f}  {peaks2.get(r, 0) / GIB:>9.2f}  {measured[r]:>8.2f}  "
            f"{plan_peak:>11.2f}  {measured[r] / plan_peak:>16.2f}"
        )
    terms = plan["memory"]
    print(
        "planned terms (GiB): "
        + ", ".join(f"{k} {v:.2f}" for k, v in terms.items() if k != "total")
        + f"; validation beam search {plan['generation']['gib']:.2f}"
    )
    print(
        f"framework: an idle process with the loop's imports and a gloo group {plan['framework_imports_gib']:.2f} "
        f"GiB (measured by the planner) + {terms['framework'] - plan['framework_imports_gib']:.2f} GiB planned "
        "for the tokenizer, the data and DeepSpeed's engine"
    )
    export_bytes = dir_bytes(export) if export.is_dir() else 0
    epoch_bytes = dir_bytes(epoch_ckpts[-1]) if epoch_ckpts else 0
    print(
        f"checkpoint on disk: {step_ckpt / 1e9:.2f} GB (step), {epoch_bytes / 1e9:.2f} GB (epoch); planned "
        f"{plan['checkpoint_gb']:.2f} GB (12 B/param). Export: {export_bytes / 1e9:.2f} GB; planned "
        f"{plan['export_gb']:.2f} GB (4 B/param)"
    )
    if head:
        print(
            f"export lm_head: {'saved' if head['lm_head_saved'] else 'NOT saved'}, "
            f"{'differs from' if head['lm_head_differs_from_shared'] else 'SAME AS'} shared.weight; reloaded model "
            f"{reload['parameters'] / 1e6:.1f}M parameters (untied: {params / 1e6:.1f}M)"
        )
        if not head["lm_head_differs_from_shared"]:
            print("  -> the untied head was tied on loading under ZeRO-3 (issue 10 section 1; fixed in train-core)")
    wall = time.time() - t_start
    print(f"wall time: {wall / 60:.1f} min (run 1 {s1:.0f} s, run 2 {s2:.0f} s)")
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "shape": a.shape,
        "world_size": a.world_size,
        "batch": a.batch,
        "steps": a.steps,
        "gradient_checkpointing": a.gradient_checkpointing,
        "exit_codes": [rc1, rc2],
        "peak_gib_by_rank": {
            "run1": {r: v / GIB for r, v in peaks1.items()},
            "run2": {r: v / GIB for r, v in peaks2.items()},
        },
        "peak_gib_measured": max(measured.values(), default=0.0),
        "peak_gib_planned": plan_peak,
        "plan": plan,
        "checkpoint_gb": {"step": step_ckpt / 1e9, "epoch": epoch_bytes / 1e9, "planned": plan["checkpoint_gb"]},
        "export_gb": {"measured": export_bytes / 1e9, "planned": plan["export_gb"]},
        "export_head": head,
        "reload": reload,
        "seconds": {"run1": s1, "run2": s2, "wall": wall},
    }
    atomic_write_json(a.json or ROOT / f"bench/results/scale_rehearsal_{tag}.json", result)
    if not a.keep:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    print(
        f"rehearsal: peak {max(measured.values(), default=0.0):.1f} GiB measured, {plan_peak:.1f} GiB planned per rank"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
