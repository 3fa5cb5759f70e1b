"""SageMaker's bring-your-own-container training contract, mapped onto `accelerate launch -m train`.

The image's `train` command runs `python -m train.container`. It reads
  /opt/ml/input/config/hyperparameters.json   strings; our dotted config keys, or the JumpStart names below
  /opt/ml/input/config/resourceconfig.json    {"current_host", "hosts"}: machine rank and the main host
  /opt/ml/input/data/<channel>/               `train` (required) and `validation` channels
and writes checkpoints to /opt/ml/checkpoints (SageMaker syncs it to S3, so a managed spot run resumes
where it stopped), the exported model to /opt/ml/model, and on failure the reason to
/opt/ml/output/failure with a non-zero exit. OPT_ML_ROOT moves /opt/ml (tests); this edge is the only
place that reads environment variables.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from radreport.config import ConfigError
from train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
# JumpStart's FLAN-T5 hyper-parameter names, so the reference's estimator settings carry over.
JUMPSTART_NAMES = {
    "learning_rate": "optim.lr",
    "epochs": "epochs",
    "per_device_train_batch_size": "batch.per_device",
    "per_device_eval_batch_size": "batch.eval_per_device",
    "gradient_accumulation_steps": "batch.gradient_accumulation_steps",
    "max_input_length": "data.max_source_tokens",
    "max_output_length": "data.max_target_tokens",
    "seed": "seed",
    "validation_split_ratio": "data.val_fraction",
}
# Keys that choose the launch rather than set the training config.
LAUNCH_KEYS = {"config", "accelerate_config", "num_processes", "main_process_port"}
DATA_SUFFIXES = (".json", ".jsonl", ".csv")


class ContainerError(RuntimeError):
    pass


def sm_paths(root: Path) -> dict[str, Path]:
    return {
        "hyperparameters": root / "input/config/hyperparameters.json",
        "resources": root / "input/config/resourceconfig.json",
        "data": root / "input/data",
        "model": root / "model",
        "checkpoints": root / "checkpoints",
        "failure": root / "output/failure",
    }


def channel_file(data_dir: Path, channel: str, env: dict | None = None) -> Path | None:
    d = Path((env or {}).get(f"SM_CHANNEL_{channel.upper()}") or data_dir / channel)
    if not d.is_dir():
        return None
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
    if len(files) != 1:
        raise ContainerError(
            f"channel '{channel}' ({d}): expected one {'/'.join(DATA_SUFFIXES)} file, found {[p.name for p in files]}"
        )
    return files[0]


def read_hyperparameters(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ContainerError(f"{path}: not valid JSON ({e.msg})") from None
    # SageMaker writes every value as a string, sometimes JSON-quoted twice ("\"3\"")
    out = {}
    for k, v in raw.items():
        v = str(v)
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        out[k] = v
    return out


def build_command(root: Path, gpus: int, env: dict | None = None) -> tuple[list[str], Path]:
    """`env`: the SM_* variables the SageMaker training toolkit sets, where it sets them; the /opt/ml
    files are read otherwise (a plain bring-your-own-container job has only those)."""
    env = env or {}
    paths = sm_paths(root)
    hp = read_hyperparameters(paths["hyperparameters"])
    if not hp and env.get("SM_HPS"):
        hp = {k: str(v) for k, v in json.loads(env["SM_HPS"]).items()}
    config = ROOT / hp.get("config", "configs/train/flan-t5-xl-p3.16xlarge.yaml")
    overrides = []
    for k, v in hp.items():
        if k in LAUNCH_KEYS or k.startswith("sagemaker_"):
            continue
        overrides.append(f"{JUMPSTART_NAMES.get(k, k)}={v}")
    train_file = channel_file(paths["data"], "train", env)
    if train_file is None:
        raise ContainerError(f"channel 'train' is missing: {paths['data'] / 'train'}")
    overrides.append(f"data.train={train_file}")
    val_file = channel_file(paths["data"], "validation", env)
    if val_file is not None:
        overrides.append(f"data.validation={val_file}")
    # Check the config here, before any process starts: a bad key fails the job with its name.
    load_train_config(str(config), overrides)

    resources = json.loads(paths["resources"].read_text()) if paths["resources"].is_file() else {}
    if env.get("SM_HOSTS"):
        resources = {"hosts": json.loads(env["SM_HOSTS"]), "current_host": env.get("SM_CURRENT_HOST", "")}
    hosts = resources.get("hosts") or ["localhost"]
    current = resources.get("current_host") or hosts[0]
    nodes, rank = len(hosts), hosts.index(current)
    per_node = int(hp.get("num_processes", gpus or 1))
    if nodes == 1:
        default_acc = "configs/accelerate/p3.16xlarge.yaml" if gpus else "configs/accelerate/cpu-2proc.yaml"
    else:
        default_acc = "configs/accelerate/multi-node.yaml" if gpus else "configs/accelerate/cpu-multi-node.yaml"
    acc = ROOT / hp.get("accelerate_config", default_acc)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(acc),
        "--num_processes",
        str(per_node * nodes),
        "--num_machines",
        str(nodes),
        "--machine_rank",
        str(rank),
        "--main_process_ip",
        hosts[0],
        "--main_process_port",
        hp.get("main_process_port", "29500"),
    ]
    if nodes > 1:
        cmd += ["--deepspeed_multinode_launcher", "standard"]
    cmd += ["-m", "train", "--config", str(config), "--output-dir", str(paths["checkpoints"]), *overrides]
    return cmd, paths["checkpoints"]


def write_failure(root: Path, reason: str) -> None:
    from radreport.io import atomic_write_text

    atomic_write_text(sm_paths(root)["failure"], reason.strip()[-4000:] + "\n")


def main() -> int:
    root = Path(os.environ.get("OPT_ML_ROOT", "/opt/ml"))
    gpus = int(os.environ.get("SM_NUM_GPUS", "0") or 0)
    if not gpus:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            gpus = 0
    try:
        cmd, out = build_command(root, gpus, {k: v for k, v in os.environ.items() if k.startswith("SM_")})
    except (ContainerError, ConfigError) as e:
        write_failure(root, f"bad job configuration: {e}")
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("launch: " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "stopped:"))]
        write_failure(root, "\n".join(errors) or proc.stderr[-2000:] or f"training exited {proc.returncode}")
        return proc.returncode or 1
    model = out / "model"
    if model.is_dir():  # the main node exported it; SageMaker uploads /opt/ml/model
        dest = Path(os.environ.get("SM_MODEL_DIR") or sm_paths(root)["model"])
        dest.mkdir(parents=True, exist_ok=True)
        for f in model.iterdir():
            shutil.copy2(f, dest / f.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
