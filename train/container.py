"""SageMaker's bring-your-own-container training contract, mapped onto `accelerate launch -m train`.

The image's `train` command runs `python -m train.container`. It reads
  /opt/ml/input/config/hyperparameters.json   strings; our dotted config keys, or the JumpStart names below
  /opt/ml/input/config/resourceconfig.json    {"current_host", "hosts", "network_interface_name"}
  /opt/ml/input/data/<channel>/               `train` (required), `validation`, and `model`: a pre-staged
                                              Hugging Face model directory used instead of the hub
and writes checkpoints to /opt/ml/checkpoints (SageMaker syncs it with S3, so a managed spot run resumes
where it stopped), the exported model to /opt/ml/model, and on failure the reason to
/opt/ml/output/failure with the training processes' own exit status (2 bad input, 3 non-finite loss,
75 interrupted, resumable). OPT_ML_ROOT moves /opt/ml (tests); this edge is the only place that reads
environment variables.

The Hugging Face cache (HF_HOME) is /opt/ml/input/hf-home: on the instance's ML storage volume, shared by
the processes of a node, and not under /opt/ml/checkpoints, which SageMaker uploads to S3 (11 GB more per
upload) and restores before every start. Across restarts a `model` channel (the model pre-staged in S3)
avoids fetching it from the hub again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
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
LAUNCH_KEYS = {
    "config",
    "accelerate_config",
    "num_processes",
    "main_process_port",
    "resume_job",  # set by `python -m train.sagemaker --resume-job`: the checkpoints must be there
    "allow_config_change",
    "host_wait_s",
}
DATA_SUFFIXES = (".json", ".jsonl", ".csv")
EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_INTERRUPTED = 2, 3, 75
# When processes disagree, the most specific status wins; the launcher itself only ever says 1.
STATUS_PRIORITY = (EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_INTERRUPTED)
HOST_WAIT_S = 300  # SageMaker starts the instances of a job together; DNS for all of them can lag by a minute


class ContainerError(RuntimeError):
    pass


def sm_paths(root: Path) -> dict[str, Path]:
    return {
        "hyperparameters": root / "input/config/hyperparameters.json",
        "resources": root / "input/config/resourceconfig.json",
        "data": root / "input/data",
        "hf_home": root / "input/hf-home",
        "model": root / "model",
        "checkpoints": root / "checkpoints",
        "failure": root / "output/failure",
    }


def channel_dir(data_dir: Path, channel: str, env: dict) -> Path:
    return Path(env.get(f"SM_CHANNEL_{channel.upper()}") or data_dir / channel)


def channel_file(data_dir: Path, channel: str, env: dict | None = None) -> Path | None:
    d = channel_dir(data_dir, channel, env or {})
    if not d.is_dir():
        return None
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
    if len(files) != 1:
        raise ContainerError(
            f"channel '{channel}' ({d}): expected one {'/'.join(DATA_SUFFIXES)} file, found {[p.name for p in files]}"
        )
    return files[0]


def model_channel(data_dir: Path, env: dict) -> Path | None:
    """The `model` channel: a Hugging Face model directory (config.json, weights, tokenizer) staged in S3."""
    d = channel_dir(data_dir, "model", env)
    if not d.is_dir():
        return None
    found = [p.parent for p in d.rglob("config.json")]
    if len(found) != 1:
        raise ContainerError(f"channel 'model' ({d}): expected one model directory with a config.json, found {found}")
    return found[0]


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


def is_true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


def read_resources(paths: dict, env: dict) -> dict:
    resources = json.loads(paths["resources"].read_text()) if paths["resources"].is_file() else {}
    if env.get("SM_HOSTS"):
        resources = {
            **resources,
            "hosts": json.loads(env["SM_HOSTS"]),
            "current_host": env.get("SM_CURRENT_HOST", ""),
        }
        if env.get("SM_NETWORK_INTERFACE_NAME"):
            resources["network_interface_name"] = env["SM_NETWORK_INTERFACE_NAME"]
    return resources


def build_command(root: Path, gpus: int, env: dict | None = None) -> tuple[list[str], dict, dict]:
    """The launch command, the environment it adds, and what the job is (hosts, hyper-parameters).

    `env`: the SM_* variables the SageMaker training toolkit sets, where it sets them; the /opt/ml
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
    cfg = load_train_config(str(config), overrides)
    model_dir = model_channel(paths["data"], env)
    if model_dir is not None:
        if cfg.model.tiny_spec:
            raise ContainerError("channel 'model' is given, but the config builds a tiny model (model.tiny_spec)")
        overrides.append(f"model.name={model_dir}")
    if hp.get("resume_job"):
        from train.checkpoint import checkpoint_dirs

        if not checkpoint_dirs(paths["checkpoints"]):
            raise ContainerError(
                f"resume_job={hp['resume_job']}: no checkpoints in {paths['checkpoints'] / 'checkpoints'} "
                "(SageMaker restores them from the job's checkpoint S3 URI: is the job name right?)"
            )

    resources = read_resources(paths, env)
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
    cmd += ["-m", "train", "--config", str(config), "--output-dir", str(paths["checkpoints"])]
    if is_true(hp.get("allow_config_change", "false")):
        cmd.append("--allow-config-change")
    cmd += overrides

    child_env = {"HF_HOME": env.get("HF_HOME") or str(paths["hf_home"])}
    interface = resources.get("network_interface_name")
    if interface:  # the instances' network, not docker0 or lo: NCCL and gloo pick the wrong one otherwise
        child_env.update(NCCL_SOCKET_IFNAME=interface, GLOO_SOCKET_IFNAME=interface)
    if gpus:  # a collective that times out ends the process (with PROCESS_GROUP_TIMEOUT in train/loop.py)
        child_env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"
    job = {"hosts": hosts, "rank": rank, "host_wait_s": float(hp.get("host_wait_s", HOST_WAIT_S))}
    return cmd, child_env, job


def wait_for_hosts(hosts: list[str], timeout_s: float, poll_s: float = 2.0) -> None:
    """Return once every host name resolves; ContainerError naming the ones that do not after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = []
        for host in hosts:
            try:
                socket.getaddrinfo(host, None)
            except OSError:
                missing.append(host)
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ContainerError(f"hosts did not resolve within {timeout_s:.0f} s: {', '.join(missing)}")
        time.sleep(poll_s)


def run_streaming(cmd: list[str], cwd: Path, env: dict) -> tuple[int, list[str]]:
    """Run `cmd`, passing its stdout through and echoing its stderr line by line as it comes (CloudWatch shows a
    hang as it happens); return its exit status and the lines that explain a failure.

    SIGTERM (SageMaker stopping the job) is passed on to the whole launch, which runs in its own session."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: os.killpg(proc.pid, signal.SIGTERM))
    tail: deque[str] = deque(maxlen=40)
    reasons: list[str] = []
    try:
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip())
            if line.startswith(("error:", "stopped:")) and line.rstrip() not in reasons:
                reasons.append(line.rstrip())  # every rank prints the same line
        return proc.wait(), reasons or list(tail)
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(returncode: int, status_dir: Path) -> int:
    """The training processes' own status: `accelerate launch` (torch elastic) exits 1 whatever they returned."""
    if returncode == 0:
        return 0
    codes = set()
    for f in status_dir.glob("rank-*.json"):
        try:
            codes.add(int(json.loads(f.read_text())["exit"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for code in STATUS_PRIORITY:
        if code in codes:
            return code
    return returncode if returncode > 0 else 1  # killed by a signal: negative in Popen


def write_failure(root: Path, reason: str) -> None:
    from radreport.io import atomic_write_text

    atomic_write_text(sm_paths(root)["failure"], reason.strip()[-4000:] + "\n")


def publish_model(out: Path, dest: Path) -> None:
    """Move the export into /opt/ml/model (SageMaker uploads it as model.tar.gz). A rename on the same volume:
    no second 11 GB copy on the disk, and no upload of it with the checkpoints."""
    model = out / "model"
    if not model.is_dir():  # exported by the main node only
        return
    dest.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        target = dest / f.name
        try:
            os.replace(f, target)
        except OSError:  # another filesystem
            shutil.copy2(f, target)
    shutil.rmtree(model)


def main() -> int:
    root = Path(os.environ.get("OPT_ML_ROOT", "/opt/ml"))
    gpus = int(os.environ.get("SM_NUM_GPUS", "0") or 0)
    if not gpus:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            gpus = 0
    sm_env = {k: v for k, v in os.environ.items() if k.startswith("SM_") or k == "HF_HOME"}
    try:
        cmd, child_env, job = build_command(root, gpus, sm_env)
        if len(job["hosts"]) > 1:
            wait_for_hosts(job["hosts"], job["host_wait_s"])
    except (ContainerError, ConfigError) as e:
        write_failure(root, f"bad job configuration: {e}")
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    status_dir = Path(tempfile.mkdtemp(prefix="radreport-status-"))
    cmd[cmd.index("--output-dir") : cmd.index("--output-dir")] = ["--exit-status-dir", str(status_dir)]
    print("launch: " + " ".join(cmd), flush=True)
    returncode, reasons = run_streaming(cmd, ROOT, {**os.environ, **child_env})
    status = exit_status(returncode, status_dir)
    shutil.rmtree(status_dir, ignore_errors=True)
    if status != 0:
        write_failure(root, "\n".join(reasons) or f"training exited {returncode}")
        return status
    publish_model(sm_paths(root)["checkpoints"], Path(os.environ.get("SM_MODEL_DIR") or sm_paths(root)["model"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
