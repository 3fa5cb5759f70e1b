"""Checkpoints count only when their manifest checks; a run continues only the run it belongs to; nothing in an
output directory changes before the new state is complete. Unit tests on real files first, then the real command
(accelerate launch, DeepSpeed ZeRO-3, 2 CPU processes) refusing and falling back."""

import hashlib
import json
import math
import time
from pathlib import Path

import pytest
from accelerate import PartialState

from radreport.config import load_config
from train.checkpoint import (
    MANIFEST,
    SaveClock,
    checkpoint_problem,
    complete_checkpoints,
    rotate,
    write_manifest,
)
from train.config import TrainConfig
from train.disk import disk_need
from train.fingerprint import differences, run_fingerprint
from train.rundir import RunDirError, prepare_run_dir

from .conftest import ROOT, launch, small_run_overrides

FP = {"optim.lr": 0.003, "processes": 1}


def fake_checkpoint(output_dir: Path, name: str, step: int, fingerprint=FP, shard_bytes=1000) -> Path:
    """A checkpoint laid out as accelerate/DeepSpeed write one (files of known sizes), then its manifest."""
    d = output_dir / "checkpoints" / name
    (d / "pytorch_model").mkdir(parents=True)
    (d / "pytorch_model/zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x" * shard_bytes)
    (d / "random_states_0.pkl").write_bytes(b"r" * 10)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": 0, "batches_done": step}))
    write_manifest(d, step, fingerprint)
    return d


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def tiny_cfg(tmp_path, *overrides) -> TrainConfig:
    return load_config(TrainConfig, ROOT / "configs/train/tiny-cpu.yaml", [*overrides])


def test_manifest_lists_every_file_with_its_size(tmp_path):
    d = fake_checkpoint(tmp_path, "step-00000005", 5)
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["global_step"] == 5 and manifest["fingerprint"] == FP
    assert manifest["files"] == {
        "pytorch_model/zero_pp_rank_0_mp_rank_00_optim_states.pt": 1000,
        "random_states_0.pkl": 10,
    }  # trainer_state.json is checked by reading it: the epoch end rewrites it after validation
    assert checkpoint_problem(d) is None


def test_trainer_state_is_checked_by_its_step_and_may_be_rewritten(tmp_path):
    d = fake_checkpoint(tmp_path, "step-00000005", 5)
    state = d / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 5, "epoch": 1, "batches_done": 0, "history": [{"eval_loss": 1.5}]}))
    assert checkpoint_problem(d) is None  # validation results written into a published checkpoint
    state.write_text(json.dumps({"global_step": 4}))
    assert checkpoint_problem(d) == "trainer_state.json is of step 4, the manifest of step 5"
    state.write_text('{"global_step": 5')
    assert checkpoint_problem(d) == "trainer_state.json unreadable (JSONDecodeError)"
    state.unlink()
    assert checkpoint_problem(d) == "trainer_state.json is missing"


def test_missing_truncated_or_unlisted_checkpoints_do_not_count(tmp_path):
    good = fake_checkpoint(tmp_path, "step-00000005", 5)
    truncated = fake_checkpoint(tmp_path, "step-00000010", 10)
    shard = truncated / "pytorch_model/zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(b"x" * 400)  # an upload cut short
    missing = fake_checkpoint(tmp_path, "step-00000015", 15)
    (missing / "random_states_0.pkl").unlink()
    no_manifest = fake_checkpoint(tmp_path, "step-00000020", 20)
    (no_manifest / MANIFEST).unlink()
    assert checkpoint_problem(truncated) == (
        "pytorch_model/zero_pp_rank_0_mp_rank_00_optim_states.pt is 400 bytes, the manifest says 1000"
    )
    assert checkpoint_problem(missing) == "random_states_0.pkl is missing"
    assert checkpoint_problem(no_manifest).startswith("no manifest.json")
    assert complete_checkpoints(tmp_path) == [good]


def test_resume_falls_back_to_the_newest_checkpoint_that_checks_and_removes_stale_saves(tmp_path):
    cfg = tiny_cfg(tmp_path)
    fp = run_fingerprint(cfg, "", 1)
    older = fake_checkpoint(tmp_path, "step-00000050", 50, fp)
    newer = fake_checkpoint(tmp_path, "step-00000100", 100, fp)
    (newer / "random_states_0.pkl").unlink()
    (tmp_path / "checkpoints/.tmp-step-00000150/pytorch_model").mkdir(parents=True)
    said = []
    run = prepare_run_dir(PartialState(), cfg, tmp_path, "", info=said.append)
    assert run.resume_from == older
    assert not (tmp_path / "checkpoints/.tmp-step-00000150").exists()
    assert "removed interrupted saves: .tmp-step-00000150" in said
    assert "skipping checkpoint step-00000100: random_states_0.pkl is missing" in said
    assert newer.is_dir()  # left as it is until a newer save is complete


def test_changed_config_is_refused_naming_every_key_and_changes_nothing(tmp_path):
    cfg = tiny_cfg(tmp_path)
    fake_checkpoint(tmp_path, "step-00000050", 50, run_fingerprint(cfg, "", 1))
    before = tree_digest(tmp_path)
    changed = tiny_cfg(tmp_path, "optim.lr=0.001", "batch.per_device=8", "log_every_steps=1")
    with pytest.raises(RunDirError) as e:
        prepare_run_dir(PartialState(), changed, tmp_path, "")
    msg = str(e.value)
    assert "2 key(s) differ: batch.per_device: 16 -> 8; optim.lr: 0.003 -> 0.001." in msg
    assert "--allow-config-change" in msg and "log_every_steps" not in msg  # a resumable change is not listed
    assert tree_digest(tmp_path) == before
    said = []
    run = prepare_run_dir(PartialState(), changed, tmp_path, "", allow_config_change=True, info=said.append)
    assert run.resume_from.name == "step-00000050" and not run.committed  # train_config.json rewritten at next save
    expected = f"--allow-config-change: continuing checkpoint {run.resume_from} with 2 change(s): "
    assert said == [expected + "batch.per_device: 16 -> 8; optim.lr: 0.003 -> 0.001"]


def test_changed_data_content_is_a_different_run(tmp_path):
    data = tmp_path / "train.json"
    data.write_bytes((ROOT / "data/sample/train.json").read_bytes())
    cfg = tiny_cfg(tmp_path, f"data.train={data}")
    old = run_fingerprint(cfg, "", 2)
    moved = tmp_path / "moved.json"
    moved.write_bytes(data.read_bytes())
    assert differences(old, run_fingerprint(tiny_cfg(tmp_path, f"data.train={moved}"), "", 2)) == []  # path only
    rows = json.loads(data.read_text())
    data.write_text(json.dumps(rows[:-1]))
    assert [d.split(":")[0] for d in differences(old, run_fingerprint(cfg, "", 2))] == ["data.train content"]
    assert differences(old, run_fingerprint(cfg, "", 4))[-1] == "processes: 2 -> 4"


def test_no_resume_on_an_earlier_run_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path)
    fake_checkpoint(tmp_path, "epoch-001", 18, run_fingerprint(cfg, "", 1))
    before = tree_digest(tmp_path)
    with pytest.raises(
        RunDirError, match=r"--no-resume, but it holds an earlier run \(1 checkpoint\(s\) \(epoch-001\)"
    ):
        prepare_run_dir(PartialState(), cfg, tmp_path, "", resume=False)
    assert tree_digest(tmp_path) == before
    assert prepare_run_dir(PartialState(), cfg, tmp_path / "fresh", "", resume=False).resume_from is None


def test_rotation_keeps_the_newest_and_the_best_and_drops_leftovers(tmp_path):
    for step, name in ((10, "epoch-001"), (20, "step-00000020"), (30, "step-00000030"), (40, "step-00000040")):
        fake_checkpoint(tmp_path, name, step)
    leftover = fake_checkpoint(tmp_path, "step-00000050", 50)
    (leftover / MANIFEST).unlink()
    removed = rotate(tmp_path, keep_last=2, protect="epoch-001")
    assert sorted(p.name for p in removed) == ["step-00000020", "step-00000050"]
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["epoch-001", "step-00000030", "step-00000040"]


def test_time_based_saves(tmp_path):
    state = PartialState()
    clock = SaveClock(every_steps=0, every_minutes=1)
    assert not clock.due(state, 7)
    clock.last = time.monotonic() - 61
    assert clock.due(state, 8)
    clock.saved()
    assert not clock.due(state, 9)
    assert SaveClock(every_steps=5, every_minutes=0).due(state, 10) and not SaveClock(5, 0).due(state, 11)


def test_disk_arithmetic_for_flan_t5_xl():
    cfg = load_config(
        TrainConfig, ROOT / "configs/train/flan-t5-xl-p3.16xlarge.yaml", ["data.train=data/sample/train.json"]
    )
    need = disk_need(2_783_917_056, cfg, nodes=1, data_bytes=10**8)
    gib = 1024**3
    # 12 bytes/param; keep_last 2 + best + one being written; export x2 and the source weights at 4 bytes/param
    assert need.checkpoint_bytes == 12 * 2_783_917_056 and need.checkpoints_held == 4
    raw = 4 * 12 * 2_783_917_056 + 2 * 4 * 2_783_917_056 + 4 * 2_783_917_056 + 10**8
    assert need.total_bytes == math.ceil(raw * 1.10 + 5 * gib)
    assert need.volume_gb == 177  # 189,217,234,816 bytes = 176.2 GiB
    assert disk_need(2_783_917_056, cfg, nodes=2).checkpoint_bytes_per_node == 6 * 2_783_917_056


# ---- the real command: refusals leave every byte as it was; a truncated shard is skipped on resume


def test_real_run_refuses_other_configs_and_skips_a_truncated_checkpoint(small_train_file, tmp_path):
    out = tmp_path / "run"
    # every_minutes: no save by time in this short run, but the main process's decision is broadcast every step
    base = small_run_overrides(small_train_file) + [
        "epochs=1",
        "checkpoint.keep_last=3",
        "checkpoint.every_minutes=600",
    ]
    first = launch(out, base + ["interrupt_after_steps=12"])
    assert first.returncode != 0 and "interrupted on purpose after step 12" in first.stderr
    names = [p.name for p in complete_checkpoints(out)]
    assert names == ["step-00000005", "step-00000010", "step-00000012"]
    train_config = json.loads((out / "train_config.json").read_text())
    assert train_config["checkpoint"]["keep_last"] == 3

    # the estimate of train/disk.py against a real checkpoint (tiny T5: fixed overheads are a larger share)
    from safetensors.torch import load_file

    n_params = sum(t.numel() for t in load_file(out / "init-model/model.safetensors").values())
    real = sum(p.stat().st_size for p in (out / "checkpoints/step-00000010").rglob("*") if p.is_file())
    estimate = disk_need(n_params, tiny_cfg(tmp_path)).checkpoint_bytes
    assert 0.9 < real / estimate < 1.1, (real, estimate)

    shard = sorted((out / "checkpoints/step-00000012").rglob("*optim_states.pt"))[0]
    shard.write_bytes(shard.read_bytes()[:1000])  # what a partial S3 restore leaves
    before = tree_digest(out)
    changed = launch(out, base + ["optim.lr=0.001"])
    assert changed.returncode != 0
    assert "1 key(s) differ: optim.lr: 0.003 -> 0.001" in changed.stderr, changed.stderr[-3000:]
    assert "skipping checkpoint step-00000012" in changed.stdout
    fresh = launch(out, base + ["--no-resume"])
    assert fresh.returncode != 0 and "--no-resume, but it holds an earlier run" in fresh.stderr
    assert tree_digest(out) == before  # train_config.json, checkpoints, metrics: byte for byte

    resumed = launch(out, base)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert (
        f"skipping checkpoint step-00000012: {shard.relative_to(out / 'checkpoints/step-00000012')} is 1000 bytes"
        in log
    )
    assert "resumed from step-00000010" in log
    # the partial step-00000012 is removed once newer checkpoints are complete; keep_last=3 of the complete ones
    assert not (out / "checkpoints/step-00000012").exists()
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000010", "step-00000015", "epoch-001"]
    assert (out / "model/model.safetensors").is_file()
