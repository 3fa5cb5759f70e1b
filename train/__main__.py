r"""Fine-tune a seq2seq model on FINDINGS -> IMPRESSION.

    accelerate launch --config_file configs/accelerate/NAME.yaml -m train \
        --config configs/train/NAME.yaml --output-dir DIR [key.path=value ...]

Resumes from the newest complete checkpoint in DIR (one whose manifest checks) if it was written under
the same config, data and model; refuses otherwise, naming what differs, unless --allow-config-change.
--no-resume refuses a DIR that holds an earlier run. The model is exported to DIR/model.
Exit status: 0 done, 2 bad config, data or output directory (before training starts), 3 non-finite
loss, 75 interrupted on purpose (resumable). Under `accelerate launch` the launcher exits 1 whatever
the processes' status; --exit-status-dir keeps each process's own status (the SageMaker entrypoint
reads it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from radreport.cli import path_arg, run
from radreport.errors import EXIT_BAD_INPUT, InputError
from radreport.paths import output_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="configs/train/*.yaml")
    p.add_argument("--output-dir", required=True, type=path_arg)
    p.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="continue from the newest checkpoint in --output-dir (default)",
    )
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start at step 0; refused when --output-dir holds an earlier run (checkpoints, model)",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="continue a checkpoint written under a different config, data or model (the differences are logged)",
    )
    p.add_argument("--exit-status-dir", type=Path, help="write this process's exit status here (rank-N.json)")
    p.add_argument("overrides", nargs="*", help="key.path=value, e.g. optim.lr=3e-4 epochs=1")
    args = p.parse_args(argv)
    status = 1
    try:
        status = _train(args)
        return status
    except InputError:
        status = EXIT_BAD_INPUT
        raise
    finally:
        if args.exit_status_dir:
            write_exit_status(args.exit_status_dir, status)


def write_exit_status(status_dir: Path, status: int) -> None:
    """One small file per process: what `accelerate launch` (torch elastic) does not pass on."""
    from radreport.io import atomic_write_json

    rank = os.environ.get("RANK", "0")  # set by the launcher
    atomic_write_json(status_dir / f"rank-{rank}.json", {"rank": int(rank), "exit": status})


def die_with_launcher() -> None:
    """Under a launcher (`accelerate launch`, torchrun), stop this process when the launcher dies: killed with
    -9 or by the OOM killer, it cannot stop its workers, which would train on as orphans and write checkpoints
    beside the rerun that is meant to resume from them. Linux only (prctl PR_SET_PDEATHSIG)."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the launcher was already gone before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _train(args) -> int:
    from train.config import load_train_config

    # everything that can be checked is checked before a process group exists
    cfg = load_train_config(args.config, args.overrides)
    output_dir(args.output_dir, "--output-dir")
    die_with_launcher()

    from train.guard import ActivationOverflow
    from train.loop import INTERRUPTED_EXIT, Interrupted, NonFiniteLoss, train
    from train.rundir import lock_output_dir, release_output_dir

    lock = lock_output_dir(args.output_dir) if int(os.environ.get("LOCAL_RANK", "0")) == 0 else None
    try:
        return train(cfg, args.output_dir, resume=args.resume, allow_config_change=args.allow_config_change)
    except (NonFiniteLoss, ActivationOverflow) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except Interrupted as e:
        print(f"stopped: {e}; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED_EXIT
    finally:
        if lock is not None:
            release_output_dir(args.output_dir, *lock)


if __name__ == "__main__":
    sys.exit(run(main))
