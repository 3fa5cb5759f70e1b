"""The SageMaker entrypoint against directories laid out like /opt/ml (no Docker engine here: we test
what the image runs), 2 CPU processes, the tiny config; two "instances" on loopback as one job."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radreport.cli import run
from radreport.schema import load_examples, write_examples
from train.local_launch import free_port
from train.sagemaker import JOB_NAME
from train.sagemaker import main as sagemaker_main

ROOT = Path(__file__).resolve().parents[2]


def opt_ml(
    root: Path, hyperparameters: dict, hosts=("algo-1",), current="algo-1", rows=300, interface: str = ""
) -> Path:
    (root / "input/config").mkdir(parents=True, exist_ok=True)
    (root / "input/data/train").mkdir(parents=True, exist_ok=True)
    write_examples(root / "input/data/train/train.json", load_examples(ROOT / "data/sample/train.json")[:rows])
    # SageMaker writes every hyper-parameter as a string
    (root / "input/config/hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    resources = {"current_host": current, "hosts": list(hosts)}
    if interface:
        resources["network_interface_name"] = interface
    (root / "input/config/resourceconfig.json").write_text(json.dumps(resources))
    return root


def run_entrypoint(root: Path, timeout=600, background=False, log: Path | None = None):
    """`log`: a background run's output goes to this file (a pipe nobody reads would fill and stall it)."""
    cmd = [sys.executable, "-m", "train.container"]
    env = {**os.environ, "OPT_ML_ROOT": str(root), "OMP_NUM_THREADS": "1", "SM_NUM_GPUS": "0"}
    if background:
        out = open(log, "w") if log else subprocess.PIPE  # the child writes to it
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def base_hp(port):
    return {
        "config": "configs/train/tiny-cpu.yaml",
        "num_processes": 2,
        "epochs": 1,
        "learning_rate": "0.003",
        "eval.rouge_samples": 8,
        "checkpoint.every_steps": 2,
        "main_process_port": port,
    }


def test_entrypoint_streams_output_is_interrupted_with_75_and_resumes(tmp_path):
    root = opt_ml(tmp_path / "opt_ml", {**base_hp(free_port()), "interrupt_after_steps": 4})
    proc = run_entrypoint(root, background=True)
    seen, live = [], False
    for line in proc.stdout:  # the child's stderr (tqdm's bar) and stdout, as they come
        seen.append(line)
        if line.startswith("train:"):
            live = proc.poll() is None
            break
    rest, _ = proc.communicate(timeout=600)
    assert live, "".join(seen)[-3000:]  # a line of the training processes arrived while they were still running
    assert proc.returncode == 75, rest[-3000:]  # the processes' own status, not accelerate launch's 1
    assert "interrupted on purpose after step 4" in (root / "output/failure").read_text()
    assert (root / "checkpoints/checkpoints/step-00000004/manifest.json").is_file()
    opt_ml(root, base_hp(free_port()))  # the spot instance comes back: same job, same checkpoint dir
    second = run_entrypoint(root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from step-00000004" in second.stdout + second.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "radreport.json"} <= {
        p.name for p in (root / "model").iterdir()
    }
    assert not (root / "checkpoints/model").exists()  # moved, not copied: no second copy on the volume or in S3


def test_bad_hyperparameter_writes_failure_and_exits_nonzero(tmp_path):
    root = opt_ml(tmp_path / "opt_ml", {**base_hp(free_port()), "learning_rate": "-1", "optim.warmup": "5"})
    r = run_entrypoint(root, timeout=120)
    assert r.returncode == 2
    failure = (root / "output/failure").read_text()
    assert "optim.lr: must be > 0" in failure and "optim.warmup: unknown key" in failure
    assert not (root / "checkpoints").exists()


def test_two_instances_on_loopback_train_one_job(tmp_path):
    port = free_port()
    hosts = ("127.0.0.1", "127.0.0.2")
    hp = {**base_hp(port), "num_processes": 1, "log_every_steps": 1}
    # gloo is told the interface from resourceconfig.json (GLOO_SOCKET_IFNAME): loopback here, eth0 on SageMaker
    roots = [opt_ml(tmp_path / f"node{i}", hp, hosts, hosts[i], interface="lo") for i in range(2)]
    worker_log = tmp_path / "worker.log"
    worker = run_entrypoint(roots[1], background=True, log=worker_log)
    main = run_entrypoint(roots[0])
    worker.wait(timeout=600)
    assert main.returncode == 0 and worker.returncode == 0, (main.stderr[-2000:], worker_log.read_text()[-2000:])
    log = main.stdout + main.stderr
    assert "2 processes, DeepSpeed ZeRO-3" in log
    # 285 training rows / (16 per process x 2 processes) = 9 optimizer steps: one job, not two
    steps = [
        json.loads(x)["step"]
        for x in (roots[0] / "checkpoints/metrics.jsonl").read_text().splitlines()
        if '"loss"' in x
    ]
    assert max(steps) == 9, steps
    assert (roots[0] / "model/model.safetensors").is_file()
    for i in range(2):  # each node keeps its own ranks' shards (node-local storage)
        assert (roots[i] / f"checkpoints/checkpoints/epoch-001/random_states_{i}.pkl").is_file()


def dry_run(capsys, *args) -> dict:
    assert sagemaker_main(["--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "--dry-run", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_sagemaker_dry_run_request(capsys):
    req = dry_run(capsys, "--instance-count", "2", "--spot", "optim.lr=5e-5")
    assert req["instance_type"] == "ml.p3.16xlarge" and req["instance_count"] == 2 and req["use_spot_instances"]
    assert req["hyperparameters"] == {"config": "configs/train/flan-t5-xl-p3.16xlarge.yaml", "optim.lr": "5e-5"}
    assert req["checkpoint_local_path"] == "/opt/ml/checkpoints"
    assert req["max_wait"] == 2 * req["max_run"]
    line = "{'loss': 1.2345, 'learning_rate': 0.0001, 'epoch': 0.5}  {'eval_loss': 0.9876, 'eval_rougeL': 0.41}"
    found = {m["Name"]: re.search(m["Regex"], line).group(1) for m in req["metric_definitions"]}
    assert found == {"train:loss": "1.2345", "eval:loss": "0.9876", "eval:rougeL": "0.41", "epoch": "0.5"}
    assert (
        run(sagemaker_main, ["--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "--dry-run", "optim.lr=-1"]) == 2
    )


def test_every_submission_gets_its_own_checkpoint_prefix_and_resuming_is_explicit(capsys):
    first, second = dry_run(capsys), dry_run(capsys)
    assert first["job_name"] != second["job_name"]
    assert first["checkpoint_s3_uri"] == f"s3://<bucket>/radreport/checkpoints/{first['job_name']}"
    assert second["checkpoint_s3_uri"] == f"s3://<bucket>/radreport/checkpoints/{second['job_name']}"
    assert re.fullmatch(r"radreport-flan-t5-xl-\d{8}-\d{6}-[0-9a-f]{4}", first["job_name"])
    resumed = dry_run(capsys, "--resume-job", first["job_name"], "--allow-config-change")
    assert resumed["checkpoint_s3_uri"] == first["checkpoint_s3_uri"] and resumed["job_name"] != first["job_name"]
    assert resumed["hyperparameters"]["resume_job"] == first["job_name"]
    assert resumed["hyperparameters"]["allow_config_change"] == "true"
    long_base = dry_run(capsys, "--job-name", "x" * 63)["job_name"]
    assert len(long_base) == 63 and JOB_NAME.fullmatch(long_base)
    with pytest.raises(SystemExit) as bad_name:  # argparse: usage and exit status 2
        sagemaker_main(["--config", "configs/train/tiny-cpu.yaml", "--dry-run", "--resume-job", "a_b"])
    assert bad_name.value.code == 2 and "a SageMaker job name has 1-63 letters" in capsys.readouterr().err
    assert run(sagemaker_main, ["--config", "configs/train/tiny-cpu.yaml", "--dry-run", "--allow-config-change"]) == 2


@pytest.mark.parametrize("flag", ["--train", "--validation", "--model", "--output"])
def test_channels_and_output_must_be_s3_uris(capsys, flag):
    with pytest.raises(SystemExit) as e:
        sagemaker_main(["--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "--dry-run", flag, "/local/path"])
    assert e.value.code == 2
    assert f"argument {flag}: expected an S3 URI, s3://BUCKET/prefix" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--role", "MyRole", "expected an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME, got 'MyRole'"),
        ("--image", "radreport train", "expected an image URI, e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG"),
        ("--instance-type", "p3.16xlarge", "expected a SageMaker instance type, e.g. ml.p3.16xlarge"),
    ],
)
def test_aws_values_sagemaker_would_refuse_after_submission_are_refused_here(capsys, flag, value, message):
    with pytest.raises(SystemExit) as e:
        sagemaker_main(["--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "--dry-run", flag, value])
    assert e.value.code == 2 and f"argument {flag}: {message}" in capsys.readouterr().err


def test_real_aws_values_pass_and_placeholders_only_make_a_dry_run(capsys):
    real = ["--role", "arn:aws:iam::123456789012:role/service-role/SageMaker-Exec", "--instance-type", "ml.g5.48xlarge"]
    real += ["--image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/radreport-train:2026-12-01"]
    config = ["--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml"]
    assert sagemaker_main([*config, "--dry-run", *real]) == 0
    request = json.loads(capsys.readouterr().out)
    assert (
        request["role"] == real[1] and request["instance_type"] == "ml.g5.48xlarge" and request["image_uri"] == real[5]
    )
    # a submission with the defaults' placeholders is refused before the SDK is imported, naming every one
    assert run(sagemaker_main, [*config, *real[:4]]) == 2
    assert capsys.readouterr().err == (
        "error: --image, --train, --output: a placeholder (<...>), for --dry-run only; give your own to submit\n"
    )
    typed = [*real, "--train", "s3://b-1/t.json", "--output", "s3://b-1/o", "--validation", "s3://<bucket>/v.json"]
    assert run(sagemaker_main, [*config, *typed]) == 2  # a placeholder typed in by hand too
    assert capsys.readouterr().err.startswith("error: --validation: a placeholder (<...>)")
    with pytest.raises(SystemExit):  # outside the defaults, <...> is no escape from the format check
        sagemaker_main([*config, "--dry-run", "--role", "garbage<x>"])
    assert "argument --role: expected an IAM role ARN" in capsys.readouterr().err


def test_a_job_longer_than_sagemaker_allows_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        sagemaker_main(["--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "--dry-run", "--max-run", "2419201"])
    assert e.value.code == 2 and "SageMaker runs a job for at most 2419200 s (28 days)" in capsys.readouterr().err


def test_volume_is_sized_from_the_run(capsys):
    from radreport.config import load_config
    from train.config import TrainConfig
    from train.disk import disk_need

    cfg = load_config(TrainConfig, "configs/train/flan-t5-xl-p3.16xlarge.yaml", ["data.train=data/sample/train.json"])
    one, two = dry_run(capsys), dry_run(capsys, "--instance-count", "2", "checkpoint.keep_last=1")
    n = 2_849_757_184  # flan-t5-xl with its own lm_head (python -m train.plan)
    assert one["volume_size"] == disk_need(n, cfg, 1, 1024**3).volume_gb == 182
    # two nodes: each holds half of every checkpoint (6 bytes/param), 1 kept + best + 1 being written; export x2
    # (8), source weights (4), 1 GiB of data: (30 x 2,849,757,184 + 2^30) x 1.1 + 5 GiB = 93.7 GiB
    assert two["volume_size"] == 94


def test_sm_variables_take_precedence_over_files(tmp_path):
    from train.container import build_command

    root = opt_ml(tmp_path / "opt_ml", {})
    (root / "input/config/hyperparameters.json").unlink()
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_examples(other / "rows.jsonl", load_examples(ROOT / "data/sample/dev1.json"))
    env = {
        "SM_HPS": json.dumps({"config": "configs/train/tiny-cpu.yaml", "epochs": 2}),
        "SM_CHANNEL_TRAIN": str(other),
        "SM_HOSTS": json.dumps(["algo-1", "algo-2"]),
        "SM_CURRENT_HOST": "algo-2",
    }
    cmd, child_env, job = build_command(root, gpus=0, env=env)
    assert f"data.train={other / 'rows.jsonl'}" in cmd and "epochs=2" in cmd
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and cmd[cmd.index("--main_process_ip") + 1] == "algo-1"
    assert cmd[cmd.index("--config_file") + 1].endswith("cpu-multi-node.yaml")
    assert child_env == {"HF_HOME": str(root / "input/hf-home")} and job["hosts"] == ["algo-1", "algo-2"]


def test_network_interface_model_channel_and_hub_cache(tmp_path):
    from train.container import ContainerError, build_command

    root = opt_ml(tmp_path / "opt_ml", {"config": "configs/train/flan-t5-xl-p3.16xlarge.yaml"}, interface="eth7")
    model = root / "input/data/model/flan-t5-xl"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    cmd, child_env, _ = build_command(root, gpus=8)
    assert f"model.name={model}" in cmd
    assert child_env == {
        "HF_HOME": str(root / "input/hf-home"),
        "NCCL_SOCKET_IFNAME": "eth7",
        "GLOO_SOCKET_IFNAME": "eth7",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }
    tiny = opt_ml(tmp_path / "tiny", {"config": "configs/train/tiny-cpu.yaml", "resume_job": "job-1"})
    with pytest.raises(ContainerError, match=r"resume_job=job-1: no checkpoints in .*is the job name right"):
        build_command(tiny, gpus=0)
    (tiny / "input/data/model").mkdir()
    (tiny / "input/data/model/config.json").write_text("{}")
    (tiny / "input/config/hyperparameters.json").write_text(json.dumps({"config": "configs/train/tiny-cpu.yaml"}))
    with pytest.raises(ContainerError, match="channel 'model' is given, but the config builds a tiny model"):
        build_command(tiny, gpus=0)


def test_hosts_must_resolve_in_bounded_time():
    from train.container import ContainerError, wait_for_hosts

    wait_for_hosts(["127.0.0.1", "localhost"], timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises(ContainerError, match=r"hosts did not resolve within 1 s: algo-9\.invalid$"):
        wait_for_hosts(["127.0.0.1", "algo-9.invalid"], timeout_s=1, poll_s=0.2)
    assert time.monotonic() - t0 < 30


def test_exit_status_survives_the_launcher(tmp_path):
    from train.container import exit_status

    assert exit_status(0, tmp_path) == 0
    assert exit_status(1, tmp_path) == 1  # no status written: a crash or a kill
    assert exit_status(-9, tmp_path) == 1
    (tmp_path / "rank-1.json").write_text(json.dumps({"rank": 1, "exit": 75}))
    assert exit_status(1, tmp_path) == 75
    (tmp_path / "rank-0.json").write_text(json.dumps({"rank": 0, "exit": 3}))
    assert exit_status(1, tmp_path) == 3


STREAMING_CHILD = """
import sys, time
from pathlib import Path
print("first line, on stderr", file=sys.stderr, flush=True)
while not Path(sys.argv[1]).exists():  # the test lets the child finish only once it has seen the line
    time.sleep(0.05)
print("error: the reason", file=sys.stderr, flush=True)
sys.exit(3)
"""

STREAMING_PARENT = """
import sys
from pathlib import Path
from train.container import run_streaming
code, reasons = run_streaming([sys.executable, "-c", sys.argv[1], sys.argv[2]], Path("."), None)
print(f"parent: {code} {reasons}", flush=True)
"""


def test_child_stderr_is_streamed_before_the_child_exits(tmp_path):
    release = tmp_path / "release"
    parent = subprocess.Popen(
        [sys.executable, "-c", STREAMING_PARENT, STREAMING_CHILD, str(release)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert parent.stdout.readline() == "first line, on stderr\n"  # the child is still waiting for `release`
    release.touch()
    rest, _ = parent.communicate(timeout=60)
    assert rest == "error: the reason\nparent: 3 ['error: the reason']\n"
