"""Submit the training job to SageMaker with our container.

    python -m train.sagemaker --config configs/train/flan-t5-xl-p3.16xlarge.yaml --image ECR_URI --role ROLE_ARN \
        --train s3://bucket/mediqa/train.json [--validation s3://...] [--model s3://bucket/models/flan-t5-xl/] \
        --output s3://bucket/runs --instance-type ml.p3.16xlarge --instance-count 1 [--spot] \
        [--resume-job NAME [--allow-config-change]] [--dry-run] [key=value ...]

Every submission is a new run: its job name is the base name, a UTC timestamp and a random suffix, and
its checkpoints go under OUTPUT/checkpoints/JOB_NAME, which no other job writes. Continuing an earlier
run is explicit: `--resume-job NAME` points the new job at NAME's checkpoint prefix (the job fails if it
finds no checkpoint there, and refuses one written under another config unless --allow-config-change).
A managed spot restart of the same job keeps its own prefix and resumes by itself.

The ML storage volume is sized from the run (train/disk.py: kept checkpoints + the one being written +
export + starting model + data), not a fixed number. `--dry-run` prints the request and needs no AWS
credentials. A real submission needs the optional extra: pip install '.[sagemaker]'.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from datetime import datetime, timezone

from radreport.cli import positive_int, run
from radreport.config import flatten, parse_overrides
from radreport.errors import InputError
from train.config import TrainConfig
from train.disk import ASSUMED_DATA_GIB

# The log lines train/loop.py prints; the same regexes as the reference's JumpStart job.
METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": r"'loss': ([0-9]+\.?[0-9]*(?:e-?[0-9]+)?)"},
    {"Name": "eval:loss", "Regex": r"'eval_loss': ([0-9]+\.?[0-9]*(?:e-?[0-9]+)?)"},
    {"Name": "eval:rougeL", "Regex": r"'eval_rougeL': ([0-9]+\.?[0-9]*)"},
    {"Name": "epoch", "Regex": r"'epoch': ([0-9]+\.?[0-9]*)"},
]
# SageMaker's rule for training job names: 1-63 letters, digits and hyphens, starting with a letter or digit.
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
STAMP_LEN = len("-20260101-120000-abcd")
GIB = 1024**3


def unique_job_name(base: str, now: datetime | None = None) -> str:
    """`base-YYYYmmdd-HHMMSS-xxxx` (UTC, 4 random hex digits), at most 63 characters."""
    now = now or datetime.now(timezone.utc)
    base = base[: 63 - STAMP_LEN].rstrip("-")
    return f"{base}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def job_name_arg(text: str) -> str:
    if not JOB_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a SageMaker job name has 1-63 letters, digits and hyphens and starts with a letter or digit"
        )
    return text


def size_gib(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GiB, got {text!r}") from None
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1e6 GiB, got {text}")
    return value


def s3_uri(text: str) -> str:
    """s3://bucket/key...: what SageMaker takes for channels and output (it refuses anything else, after the job
    has been created). Empty: not given."""
    if text and not re.fullmatch(r"s3://[a-z0-9<][a-z0-9.<>-]{2,62}(/\S*)?", text):  # <bucket>: a placeholder
        raise argparse.ArgumentTypeError(
            f"expected an S3 URI, s3://BUCKET/prefix with a bucket name of 3-63 lower-case letters, digits, '.' "
            f"and '-', got {text!r}"
        )
    return text


# The defaults of --image and --role, and the <bucket> of the S3 defaults: --dry-run shows a request before any AWS
# value is at hand; a submission that still holds one is refused.
IMAGE_PLACEHOLDER = "<account>.dkr.ecr.<region>.amazonaws.com/radreport-train:latest"
ROLE_PLACEHOLDER = "<sagemaker-execution-role-arn>"
PLACEHOLDER = re.compile(r"<[a-z-]+>")


def _checked(what: str, pattern: str, placeholder: str = ""):
    """An argparse type for a value SageMaker would refuse only after the job request is sent."""

    def check(text: str) -> str:
        if not re.fullmatch(pattern, text) and text != placeholder:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return text

    return check


role_arn = _checked(
    "an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME",
    r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}",
    ROLE_PLACEHOLDER,
)
image_uri = _checked(
    "an image URI, e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG",
    r"[a-z0-9.-]+(?::\d+)?/[a-z0-9._/-]+(?::[\w.-]{1,128}|@sha256:[0-9a-f]{64})?",
    IMAGE_PLACEHOLDER,
)
instance_type = _checked("a SageMaker instance type, e.g. ml.p3.16xlarge", r"ml\.[a-z0-9-]+\.[a-z0-9]+")

MAX_RUN_SECONDS = 28 * 24 * 3600  # SageMaker's limit for a training job's MaxRuntimeInSeconds


def max_run(text: str) -> int:
    value = positive_int(text)
    if value > MAX_RUN_SECONDS:
        raise argparse.ArgumentTypeError(f"SageMaker runs a job for at most {MAX_RUN_SECONDS} s (28 days), got {value}")
    return value


def volume_gb(cfg: TrainConfig, nodes: int, data_gib: float) -> int:
    """The ML storage volume for this run, from train/disk.py and the model's parameter count (meta device)."""
    from train.disk import disk_need
    from train.plan import Shape, model_config, parameter_counts

    n_params = parameter_counts(Shape.from_config(model_config(cfg)[0]))["total"]
    return disk_need(n_params, cfg, nodes, int(data_gib * GIB)).volume_gb


def build_request(a) -> dict:
    from radreport.config import load_config

    hp = {"config": a.config, **{k: str(v) for k, v in flatten(parse_overrides(a.overrides)).items()}}
    # keys exist, values valid; the data is the job's channels, not the config's local paths
    cfg = load_config(TrainConfig, a.config, [*a.overrides, f"data.train={a.train}"])
    job_name = unique_job_name(a.job_name)
    prefix = a.resume_job or job_name
    if a.resume_job:
        hp["resume_job"] = a.resume_job
    if a.allow_config_change:
        if not a.resume_job:
            raise InputError("--allow-config-change: only with --resume-job (a new job has no checkpoints to continue)")
        hp["allow_config_change"] = "true"
    channels = {"train": a.train}
    if a.validation:
        channels["validation"] = a.validation
    if a.model:
        if cfg.model.tiny_spec:
            raise InputError(
                "--model: the config builds a tiny model (model.tiny_spec); a model channel needs model.name"
            )
        channels["model"] = a.model
    request = {
        "image_uri": a.image,
        "role": a.role,
        "instance_type": a.instance_type,
        "instance_count": a.instance_count,
        "hyperparameters": hp,
        "inputs": channels,
        "output_path": a.output,
        "job_name": job_name,
        "checkpoint_s3_uri": f"{a.output.rstrip('/')}/checkpoints/{prefix}",
        "checkpoint_local_path": "/opt/ml/checkpoints",
        "metric_definitions": METRIC_DEFINITIONS,
        "use_spot_instances": a.spot,
        "max_run": a.max_run,
        "volume_size": volume_gb(cfg, a.instance_count, a.data_gib),
        "base_job_name": a.job_name,
    }
    if a.spot:
        request["max_wait"] = a.max_run * 2
    return request


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.sagemaker", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--image", type=image_uri, default=IMAGE_PLACEHOLDER)
    p.add_argument("--role", type=role_arn, default=ROLE_PLACEHOLDER)
    p.add_argument("--train", type=s3_uri, default="s3://<bucket>/mediqa/train.json")
    p.add_argument("--validation", type=s3_uri, default="")
    p.add_argument(
        "--model", type=s3_uri, default="", help="S3 prefix of a Hugging Face model directory (the `model` channel)"
    )
    p.add_argument("--output", type=s3_uri, default="s3://<bucket>/radreport")
    p.add_argument("--instance-type", type=instance_type, default="ml.p3.16xlarge")
    p.add_argument("--instance-count", type=positive_int, default=1)
    p.add_argument("--job-name", type=job_name_arg, default="radreport-flan-t5-xl", help="base of the job name")
    p.add_argument(
        "--resume-job", type=job_name_arg, default=None, help="continue the run of this earlier job (its checkpoints)"
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume-job: continue it even though the config, data or model differ",
    )
    p.add_argument(
        "--data-gib", type=size_gib, default=ASSUMED_DATA_GIB, help="size of the data channels, for the volume size"
    )
    p.add_argument("--max-run", type=max_run, default=24 * 3600, help="seconds (SageMaker allows 28 days)")
    p.add_argument("--spot", action="store_true", help="managed spot training; a restart resumes from checkpoints")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    request = build_request(a)
    if a.dry_run:
        print(json.dumps(request, indent=2))
        return 0
    flags = ("--image", "--role", "--train", "--validation", "--model", "--output")
    unset = [flag for flag in flags if PLACEHOLDER.search(getattr(a, flag[2:]))]
    if unset:
        raise InputError(f"{', '.join(unset)}: a placeholder (<...>), for --dry-run only; give your own to submit")
    try:
        from sagemaker.estimator import Estimator
    except ImportError:
        print("error: the SageMaker SDK is not installed: pip install '.[sagemaker]'", file=sys.stderr)
        return 2
    inputs, job_name = request.pop("inputs"), request.pop("job_name")
    estimator = Estimator(**request)
    estimator.fit(inputs, job_name=job_name, wait=False)
    print(f"submitted: {job_name}; checkpoints: {request['checkpoint_s3_uri']}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
