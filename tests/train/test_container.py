"""The SageMaker entrypoint against directories laid out like /opt/ml (no Docker engine here: we test
what the image runs), 2 CPU processes, the tiny config; two "instances" on loopback as one job."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from radreport.cli import run
from radreport.schema import load_examples, write_examples
from train.sagemaker import main as sagemaker_main

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def opt_ml(root: Path, hyperparameters: dict, hosts=("algo-1",), current="algo-1", rows=300) -> Path:
    (root / "input/config").mkdir(parents=True, exist_ok=True)
    (root / "input/data/train").mkdir(parents=True, exist_ok=True)
    write_examples(root / "input/data/train/train.json", load_examples(ROOT / "data/sample/train.json")[:rows])
    # SageMaker writes every hyper-parameter as a string
    (root / "input/config/hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    (root / "input/config/resourceconfig.json").write_text(json.dumps({"current_host": current, "hosts": list(hosts)}))
    return root


def run_entrypoint(root: Path, timeout=600, background=False):
    cmd = [sys.executable, "-m", "train.container"]
    env = {**os.environ, "OPT_ML_ROOT": str(root), "OMP_NUM_THREADS": "1", "SM_NUM_GPUS": "0"}
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def test_entrypoint_trains_is_interrupted_and_resumes(tmp_path):
    root = opt_ml(tmp_path / "opt_ml", {**base_hp(free_port()), "interrupt_after_steps": 4})
    first = run_entrypoint(root)
    assert first.returncode != 0
    assert "interrupted on purpose after step 4" in (root / "output/failure").read_text()
    assert (root / "checkpoints/checkpoints/step-00000004/trainer_state.json").is_file()
    opt_ml(root, base_hp(free_port()))  # the spot instance comes back: same job, same checkpoint dir
    second = run_entrypoint(root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from step-00000004" in second.stdout + second.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "radreport.json"} <= {
        p.name for p in (root / "model").iterdir()
    }


def test_bad_hyperparameter_writes_failure_and_exits_nonzero(tmp_path):
    root = opt_ml(tmp_path / "opt_ml", {**base_hp(free_port()), "learning_rate": "-1", "optim.warmup": "5"})
    r = run_entrypoint(root, timeout=120)
    assert r.returncode == 2
    failure = (root / "output/failure").read_text()
    assert "optim.lr: must be positive" in failure and "optim.warmup: unknown key" in failure
    assert not (root / "checkpoints").exists()


def test_two_instances_on_loopback_train_one_job(tmp_path):
    port = free_port()
    hosts = ("127.0.0.1", "127.0.0.2")
    hp = {**base_hp(port), "num_processes": 1, "log_every_steps": 1}
    roots = [opt_ml(tmp_path / f"node{i}", hp, hosts, hosts[i]) for i in range(2)]
    worker = run_entrypoint(roots[1], background=True)
    main = run_entrypoint(roots[0])
    out1, _ = worker.communicate(timeout=600)
    assert main.returncode == 0 and worker.returncode == 0, (main.stderr[-2000:], out1[-2000:])
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


def test_sagemaker_dry_run_request(capsys):
    assert (
        sagemaker_main(
            [
                "--config",
                "configs/train/flan-t5-xl-p3.16xlarge.yaml",
                "--instance-count",
                "2",
                "--spot",
                "--dry-run",
                "optim.lr=5e-5",
            ]
        )
        == 0
    )
    req = json.loads(capsys.readouterr().out)
    assert req["instance_type"] == "ml.p3.16xlarge" and req["instance_count"] == 2 and req["use_spot_instances"]
    assert req["hyperparameters"] == {
        "config": "configs/train/flan-t5-xl-p3.16xlarge.yaml",
        "optim.lr": "5e-05",
    } or req["hyperparameters"]["optim.lr"] in ("5e-5", "5e-05")
    assert req["checkpoint_local_path"] == "/opt/ml/checkpoints" and req["checkpoint_s3_uri"].startswith("s3://")
    assert req["max_wait"] >= req["max_run"]
    line = "{'loss': 1.2345, 'learning_rate': 0.0001, 'epoch': 0.5}  {'eval_loss': 0.9876, 'eval_rougeL': 0.41}"
    for m in req["metric_definitions"]:
        assert re.search(m["Regex"], line), m
    assert (
        run(sagemaker_main, ["--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "--dry-run", "optim.lr=-1"]) == 2
    )


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
    cmd, _ = build_command(root, gpus=0, env=env)
    assert f"data.train={other / 'rows.jsonl'}" in cmd and "epochs=2" in cmd
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and cmd[cmd.index("--main_process_ip") + 1] == "algo-1"
    assert cmd[cmd.index("--config_file") + 1].endswith("cpu-multi-node.yaml")
