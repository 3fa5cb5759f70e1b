"""Start-up of a training run in its output directory: which checkpoint to continue, or refuse.

Nothing in an output directory changes until the new state is complete:
- a stale `.tmp-*` save (interrupted) is removed; complete checkpoints are never touched at start-up;
- the newest checkpoint whose manifest checks on every node is resumed; newer, incomplete ones (a
  partial S3 restore) are skipped, named, and replaced or removed only once a newer save is complete;
- a checkpoint written under a different fingerprint (train/fingerprint.py) is not resumed: the run
  stops with exit status 2 naming every key that differs, unless `--allow-config-change`;
- `--no-resume` on a directory that holds an earlier run is refused (choose a new --output-dir, or
  delete the old one yourself): starting over in place would delete the earlier run's checkpoints
  before the new run has its own;
- `train_config.json` and `fingerprint.json` are written when the first checkpoint of this run is
  complete on every node, not at start, so a run that fails early leaves an earlier run's files as
  they were.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from radreport.config import to_dict
from radreport.errors import InputError
from radreport.io import atomic_write_json
from train.checkpoint import (
    TMP_PREFIX,
    SaveClock,
    checkpoint_dirs,
    checkpoint_problem,
    checkpoints_dir,
    complete_checkpoints,
    read_manifest,
)
from train.config import TrainConfig
from train.fingerprint import differences, run_fingerprint

LOCK_FILE = ".lock"
CONFIG_FILE = "train_config.json"
FINGERPRINT_FILE = "fingerprint.json"


class RunDirError(InputError):
    """The output directory holds a run this one must not continue or overwrite."""


@dataclass
class RunDir:
    output_dir: Path
    fingerprint: dict
    config: dict
    keep_last: int
    resume_from: Path | None = None
    """The agreed checkpoint to load, or None to start at step 0."""
    committed: bool = False
    """train_config.json and fingerprint.json describe this run (written at its first complete checkpoint)."""
    clock: SaveClock = field(default_factory=lambda: SaveClock(0, 0))

    def checkpoint_due(self, accelerator, global_step: int) -> bool:
        """Collective when `checkpoint.every_minutes` is set (the main process decides for all ranks)."""
        return self.clock.due(accelerator, global_step)

    def checkpoint_complete(self, accelerator) -> None:
        """Called by save_checkpoint once a checkpoint is complete on every node."""
        self.clock.saved()
        if self.committed:
            return
        if accelerator.is_local_main_process:  # each node's copy of the directory (node-local storage)
            atomic_write_json(self.output_dir / FINGERPRINT_FILE, self.fingerprint)
            atomic_write_json(self.output_dir / CONFIG_FILE, self.config)
        self.committed = True


def lock_output_dir(output_dir: Path) -> tuple[int, bool]:
    """Take the output directory for this run: an exclusive lock on DIR/.lock, held until this process exits
    (the kernel releases it however the process ends). Taken by each node's local main process before anything
    is written. A second run in the same directory, e.g. the same command started again while the first one's
    processes still run, is refused instead of writing into the same checkpoints. Returns the descriptor to
    keep open, and whether the directory was created here (see release_output_dir)."""
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(output_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunDirError(f"--output-dir: {output_dir}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        raise RunDirError(
            f"--output-dir: {output_dir} is in use by another training run (process {holder}); "
            "let it finish or stop it, then rerun to resume"
        ) from None
    return fd, created


def lock_holder(fd: int) -> str:
    """The pid holding the flock on fd's file, from /proc/locks (the lock file itself is never written, so an
    earlier run's directory stays byte for byte as it was); "?" when it cannot be told."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and inode in fields:
                return fields[fields.index(inode) - 1]
    except OSError:
        pass
    return "?"


def release_output_dir(output_dir: Path, fd: int, created: bool) -> None:
    """Let the lock go; a directory this run created and left with nothing but the lock file in it (the run was
    refused before writing anything) is removed, so a refusal leaves nothing behind."""
    os.close(fd)
    if created and [p.name for p in output_dir.iterdir()] == [LOCK_FILE]:
        (output_dir / LOCK_FILE).unlink(missing_ok=True)
        output_dir.rmdir()


def earlier_run(output_dir: Path) -> list[str]:
    """What in `output_dir` belongs to an earlier run (empty when nothing does)."""
    found = [p.name for p in checkpoint_dirs(output_dir)]
    found = [f"{len(found)} checkpoint(s) ({', '.join(found)})"] if found else []
    for name in ("model", CONFIG_FILE, FINGERPRINT_FILE):
        if (output_dir / name).exists():
            found.append(name)
    return found


def remove_stale_saves(output_dir: Path) -> list[str]:
    d = checkpoints_dir(output_dir)
    stale = sorted(p for p in d.glob(f"{TMP_PREFIX}*") if p.is_dir()) if d.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in stale]


def share(accelerator, value):
    """The main process's `value` on every rank (hashing a model channel's 11 GB once, not once per rank)."""
    if accelerator.num_processes == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(accelerator, names: list[str]) -> list[str]:
    """The checkpoint names complete on every rank's node, in the order of `names`."""
    if accelerator.num_processes == 1:
        return names
    import torch.distributed as dist

    everyone: list = [None] * accelerator.num_processes
    dist.all_gather_object(everyone, names)
    common = set(names).intersection(*map(set, everyone))
    return [n for n in names if n in common]


def prepare_run_dir(
    accelerator,
    cfg: TrainConfig,
    output_dir: Path,
    source: str,
    resume: bool = True,
    allow_config_change: bool = False,
    info=print,
) -> RunDir:
    """Decide what this run continues, on every rank alike; raise RunDirError (exit 2) to refuse."""
    fingerprint = share(
        accelerator, run_fingerprint(cfg, source, accelerator.num_processes) if accelerator.is_main_process else None
    )
    run = RunDir(
        output_dir,
        fingerprint,
        to_dict(cfg),
        cfg.checkpoint.keep_last,
        clock=SaveClock(cfg.checkpoint.every_steps, cfg.checkpoint.every_minutes),
    )
    if not resume:
        found = earlier_run(output_dir)
        if found:
            raise RunDirError(
                f"--output-dir {output_dir}: --no-resume, but it holds an earlier run ({'; '.join(found)}). "
                "Starting over here would delete that run's checkpoints before this one has its own: choose a "
                "new --output-dir, or delete the old one first"
            )
        return run
    decide(accelerator, run, allow_config_change, info)
    # only now, with the run accepted: interrupted saves are garbage (complete checkpoints are never touched here)
    if accelerator.is_local_main_process:
        stale = remove_stale_saves(output_dir)
        if stale:
            info(f"removed interrupted saves: {', '.join(stale)}")
    accelerator.wait_for_everyone()
    return run


def decide(accelerator, run: RunDir, allow_config_change: bool, info) -> None:
    """Set run.resume_from to the newest checkpoint complete on every node, or refuse (RunDirError)."""
    output_dir, fingerprint = run.output_dir, run.fingerprint

    for p in checkpoint_dirs(output_dir):
        problem = checkpoint_problem(p)
        if problem and accelerator.is_local_main_process:
            info(f"skipping checkpoint {p.name}: {problem}")
    here = [p.name for p in complete_checkpoints(output_dir)]
    complete = agree(accelerator, here)
    for name in sorted(set(here) - set(complete)):
        info(f"skipping checkpoint {name}: incomplete on another node")
    if complete:
        ckpt = checkpoints_dir(output_dir) / complete[-1]
        recorded, what = read_manifest(ckpt).get("fingerprint", {}), f"checkpoint {ckpt}"
    elif (output_dir / FINGERPRINT_FILE).is_file():  # its checkpoints did not survive: start over, same run only
        ckpt, what = None, f"the run recorded in {output_dir / FINGERPRINT_FILE}"
        recorded = json.loads((output_dir / FINGERPRINT_FILE).read_text())
    else:
        return
    changed = differences(recorded, fingerprint)
    if any(c.startswith("processes:") for c in changed) and ckpt is not None:
        raise RunDirError(
            f"--output-dir {output_dir}: {what} was written by {recorded.get('processes')} processes, this run has "
            f"{fingerprint['processes']}: ZeRO shards and the data order are per process, so it cannot be continued "
            "with another process count (not even with --allow-config-change); launch with the same number of "
            "processes, or choose a new --output-dir"
        )
    if changed and not allow_config_change:
        raise RunDirError(
            f"--output-dir {output_dir}: {what} was written under a different training config; "
            f"{len(changed)} key(s) differ: {'; '.join(changed)}. Continue it anyway with --allow-config-change, "
            "or choose a new --output-dir"
        )
    if changed:
        info(f"--allow-config-change: continuing {what} with {len(changed)} change(s): {'; '.join(changed)}")
    run.resume_from = ckpt
    run.committed = not changed and ckpt is not None
