r"""Fine-tune a seq2seq model on FINDINGS -> IMPRESSION.

    accelerate launch --config_file configs/accelerate/NAME.yaml -m train \
        --config configs/train/NAME.yaml --output-dir DIR [key.path=value ...]

Resumes from the newest complete checkpoint in DIR unless --no-resume. The model is exported to DIR/model.
Exit status: 0 done, 2 bad config or data (before any process group starts), 3 non-finite loss,
75 interrupted on purpose (resumable).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radreport.cli import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="configs/train/*.yaml")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="continue from the newest checkpoint in --output-dir (default)",
    )
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore existing checkpoints")
    p.add_argument("overrides", nargs="*", help="key.path=value, e.g. optim.lr=3e-4 epochs=1")
    args = p.parse_args(argv)

    from train.config import load_train_config

    # everything that can be checked is checked before a process group exists
    cfg = load_train_config(args.config, args.overrides)

    from train.guard import ActivationOverflow
    from train.loop import INTERRUPTED_EXIT, Interrupted, NonFiniteLoss, train

    try:
        return train(cfg, args.output_dir, resume=args.resume)
    except (NonFiniteLoss, ActivationOverflow) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except Interrupted as e:
        print(f"stopped: {e}; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(run(main))
