"""Submit the training job to SageMaker with our container.

    python -m train.sagemaker --config configs/train/flan-t5-xl-p3.16xlarge.yaml --image ECR_URI --role ROLE_ARN \
        --train s3://bucket/mediqa/train.json [--validation s3://...] --output s3://bucket/runs \
        --instance-type ml.p3.16xlarge --instance-count 1 [--spot] [--dry-run] [key=value ...]

`--dry-run` prints the request (image, role, channels, checkpoint S3 URI, metric definitions) and
needs no AWS credentials. A real submission needs the optional extra: pip install '.[sagemaker]'.
"""

from __future__ import annotations

import argparse
import json
import sys

from radreport.cli import run
from radreport.config import parse_overrides
from train.config import TrainConfig

# The log lines train/loop.py prints; the same regexes as the reference's JumpStart job.
METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": r"'loss': ([0-9]+\.?[0-9]*(?:e-?[0-9]+)?)"},
    {"Name": "eval:loss", "Regex": r"'eval_loss': ([0-9]+\.?[0-9]*(?:e-?[0-9]+)?)"},
    {"Name": "eval:rougeL", "Regex": r"'eval_rougeL': ([0-9]+\.?[0-9]*)"},
    {"Name": "epoch", "Regex": r"'epoch': ([0-9]+\.?[0-9]*)"},
]


def build_request(a) -> dict:
    from radreport.config import load_config

    hp = {"config": a.config, **{k: str(v) for k, v in _flatten(parse_overrides(a.overrides)).items()}}
    load_config(TrainConfig, a.config, a.overrides + ["data.train=data/sample/train.json"])  # keys exist, values valid
    channels = {"train": a.train, **({"validation": a.validation} if a.validation else {})}
    request = {
        "image_uri": a.image,
        "role": a.role,
        "instance_type": a.instance_type,
        "instance_count": a.instance_count,
        "hyperparameters": hp,
        "inputs": channels,
        "output_path": a.output,
        "checkpoint_s3_uri": f"{a.output.rstrip('/')}/checkpoints/{a.job_name}",
        "checkpoint_local_path": "/opt/ml/checkpoints",
        "metric_definitions": METRIC_DEFINITIONS,
        "use_spot_instances": a.spot,
        "max_run": a.max_run,
        "volume_size": 200,
        "base_job_name": a.job_name,
    }
    if a.spot:
        request["max_wait"] = a.max_run * 2
    return request


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.sagemaker", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--image", default="<account>.dkr.ecr.<region>.amazonaws.com/radreport-train:latest")
    p.add_argument("--role", default="<sagemaker-execution-role-arn>")
    p.add_argument("--train", default="s3://<bucket>/mediqa/train.json")
    p.add_argument("--validation", default="")
    p.add_argument("--output", default="s3://<bucket>/radreport")
    p.add_argument("--instance-type", default="ml.p3.16xlarge")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--job-name", default="radreport-flan-t5-xl")
    p.add_argument("--max-run", type=int, default=24 * 3600)
    p.add_argument("--spot", action="store_true", help="managed spot training; resumes from the checkpoint S3 URI")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    request = build_request(a)
    if a.dry_run:
        print(json.dumps(request, indent=2))
        return 0
    try:
        from sagemaker.estimator import Estimator
    except ImportError:
        print("error: the SageMaker SDK is not installed: pip install '.[sagemaker]'", file=sys.stderr)
        return 2
    inputs = request.pop("inputs")
    estimator = Estimator(
        **{k: v for k, v in request.items() if k not in ("use_spot_instances",)},
        use_spot_instances=request["use_spot_instances"],
    )
    estimator.fit(inputs, wait=False)
    print(f"submitted: {estimator.latest_training_job.name}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
