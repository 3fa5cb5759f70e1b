"""The real command: accelerate launch, DeepSpeed ZeRO-3, 2 CPU processes (gloo), the tiny T5."""

import math
import os
import re
import subprocess
import warnings

import pytest
import torch
from safetensors.torch import load_file

from radreport.cli import run
from radreport.modeling import count_parameters, load_model, load_tokenizer, read_meta
from radreport.prompt import render
from radreport.schema import load_examples
from train.__main__ import main as train_main
from train.local_launch import train_command
from train.loop import quiet_deprecated_collectives

from .conftest import ROOT, launch, metrics, small_run_overrides

DEPRECATED_COLLECTIVES = (
    "`torch.distributed.reduce_scatter_tensor` is",
    "`torch.distributed.all_gather_into_tensor` is",
)


def test_two_process_zero3_run_learns_and_exports(uninterrupted_run):
    m = metrics(uninterrupted_run)
    losses = [x["loss"] for x in m if "loss" in x]
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0], losses  # 2 epochs x 18 steps, a line every 3
    evals = [x for x in m if "eval_loss" in x]
    assert [e["epoch"] for e in evals] == [1.0, 2.0] and all(0 <= e["eval_rougeL"] <= 1 for e in evals)
    model_dir = uninterrupted_run / "model"
    meta = read_meta(model_dir)
    assert meta.prompt_template == "instruction" and meta.max_target_tokens == 64
    model, tok = load_model(model_dir), load_tokenizer(model_dir)  # one process, plain from_pretrained
    assert all(p.numel() > 0 and torch.isfinite(p).all() for p in model.parameters())
    assert model.lm_head.weight is not model.shared.weight  # the tiny model's own head, trained and exported
    batch = tok([render("There is a small left pleural effusion. The heart size is normal.")], return_tensors="pt")
    text = tok.decode(model.generate(**batch)[0], skip_special_tokens=True)
    assert text.strip() and model.generation_config.num_beams == 4


def test_log_lines_match_sagemaker_metric_regexes(uninterrupted_run):
    """The regexes a SageMaker estimator is given read the printed lines, with the values in metrics.jsonl."""
    log = uninterrupted_run.with_suffix(".log").read_text()
    printed_losses = [float(x) for x in re.findall(r"'loss': ([0-9.e+-]+)", log)]
    printed_evals = [float(x) for x in re.findall(r"'eval_loss': ([0-9.e+-]+)", log)]
    m = metrics(uninterrupted_run)
    assert printed_losses == pytest.approx([x["loss"] for x in m if "loss" in x], rel=1e-5)
    assert printed_evals == pytest.approx([x["eval_loss"] for x in m if "eval_loss" in x], rel=1e-5)
    assert [float(x) for x in re.findall(r"'epoch': ([0-9.]+)", log)] == [x["epoch"] for x in m]


def test_training_log_is_readable(uninterrupted_run, tiny_model_dir):
    """No FutureWarning from DeepSpeed's deprecated torch.distributed calls; our lines are all there."""
    lines = uninterrupted_run.with_suffix(".log").read_text().splitlines()
    assert not [line for line in lines if any(w in line for w in DEPRECATED_COLLECTIVES)]
    assert not [line for line in lines if "FutureWarning" in line]
    assert len([line for line in lines if line.startswith("{'loss': ")]) == 12
    assert len([line for line in lines if line.startswith("{'eval_loss': ")]) == 2
    assert any(line.startswith("exported ") for line in lines)
    assert any(re.fullmatch(r"model .*init-model: 0\.9M parameters, 2 processes, DeepSpeed ZeRO-3", x) for x in lines)


def test_only_the_deprecated_collective_warnings_are_silenced():
    def shown(message, category=FutureWarning, module="torch.distributed.c10d_logger") -> bool:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            quiet_deprecated_collectives()
            warnings.warn_explicit(message, category, "c10d_logger.py", 83, module=module)
        return len(seen) == 1

    deprecated = "`torch.distributed.reduce_scatter_tensor` is deprecated. Please use `reduce_scatter_single`."
    assert not shown(deprecated)
    assert not shown("`torch.distributed.all_gather_into_tensor` is deprecated. Please use `all_gather_single`.")
    assert shown("`torch.distributed.all_reduce_coalesced` will be deprecated.")
    assert shown(deprecated, category=DeprecationWarning)
    assert shown(deprecated, module="deepspeed.runtime.zero.stage3")


def test_interrupted_then_resumed_equals_uninterrupted(uninterrupted_run, small_train_file, tmp_path):
    out = tmp_path / "run"
    first = launch(out, small_run_overrides(small_train_file) + ["interrupt_after_steps=7"])
    assert first.returncode != 0 and "interrupted on purpose after step 7" in first.stderr
    assert "'loss': " in first.stdout + first.stderr  # SageMaker metric regexes read these lines
    assert f"tokenised into {out}/cache/tokens-" in first.stdout
    assert (out / "checkpoints/step-00000007/trainer_state.json").is_file()
    assert not (out / "model").exists()
    second = launch(out, small_run_overrides(small_train_file))
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from step-00000007" in second.stdout + second.stderr
    assert f"tokens read from {out}/cache/tokens-" in second.stdout and "tokenised into" not in second.stdout
    assert len(list((out / "cache").glob("tokens-*"))) == 1 and len(list((out / "cache").glob("rows-*"))) == 1
    a = load_file(uninterrupted_run / "model/model.safetensors")
    b = load_file(out / "model/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(small_train_file, tmp_path):
    r = launch(tmp_path, small_run_overrides(small_train_file) + ["inject_nonfinite_at_step=6", "epochs=1"])
    assert r.returncode != 0
    assert "non-finite loss at optimizer step 6" in r.stderr
    studies = re.search(r"this rank's batch: study_ids \[([^\]]+)\]", r.stderr)
    known = {e.study_id for e in load_examples(small_train_file)}
    assert studies and {s.strip("' ") for s in studies.group(1).split(",")} <= known
    assert (tmp_path / "checkpoints/step-00000005/trainer_state.json").is_file()
    assert not (tmp_path / "model").exists()


# ---- from an untied pretrained checkpoint (like flan-t5), 2 processes, ZeRO-3 ----------------------------------


@pytest.fixture(scope="module")
def untied_run(tiny_model_dir, small_train_file, tmp_path_factory):
    """Fine-tune the untied tiny checkpoint with a vanishing learning rate (the weights cannot move), and make
    the validation beam search fail on one rank (the drill)."""
    out = tmp_path_factory.mktemp("untied")
    r = launch(
        out,
        [
            "model.tiny_spec=''",
            f"model.name={tiny_model_dir}",
            f"data.train={small_train_file}",
            "epochs=1",
            "max_steps=3",
            "log_every_steps=1",
            "optim.lr=1e-30",
            "eval.rouge_samples=8",
            "eval.generation_batch_size=2",
            "checkpoint.every_steps=0",
            "inject_generation_failure_at_epoch=1",
        ],
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return out, r.stdout + r.stderr


def test_zero3_run_keeps_the_pretrained_head(untied_run, tiny_model_dir):
    out, log = untied_run
    given = load_file(tiny_model_dir / "model.safetensors")
    exported = load_file(out / "model/model.safetensors")
    assert torch.equal(exported["lm_head.weight"], given["lm_head.weight"])
    assert torch.equal(exported["shared.weight"], given["shared.weight"])
    assert not torch.equal(exported["lm_head.weight"], exported["shared.weight"])
    n = count_parameters(load_model(tiny_model_dir))
    assert f"{n / 1e6:.1f}M parameters, 2 processes, DeepSpeed ZeRO-3" in log  # not the partitions' 0.0M
    losses = [x["loss"] for x in metrics(out) if "loss" in x]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_failed_validation_generation_is_reported_and_the_run_finishes(untied_run):
    out, log = untied_run
    error = "rank 1: GenerationDrill: generation failure injected at epoch 1 (drill)"
    assert f"validation ROUGE failed at epoch 1 ({error}); training goes on (checkpoint epoch-001 is saved)" in log
    (evaluation,) = [x for x in metrics(out) if "eval_loss" in x]
    assert evaluation["eval_rouge_error"] == error and "eval_rouge1" not in evaluation
    assert math.isfinite(evaluation["eval_loss"])
    state = (out / "checkpoints/epoch-001/trainer_state.json").read_text()
    assert error in state and '"best_checkpoint": "epoch-001"' in state
    assert (out / "model/model.safetensors").is_file() and f"exported {out / 'model'}" in log


def test_one_process_without_launcher(trained_model_dir):
    """`python -m train` with no launcher (the fixture runs it): plain single process, model exported."""
    run_dir = trained_model_dir.parent
    exported = load_file(trained_model_dir / "model.safetensors")
    initial = load_file(run_dir / "init-model/model.safetensors")
    assert exported.keys() == initial.keys() and "lm_head.weight" in exported
    assert not torch.equal(exported["lm_head.weight"], initial["lm_head.weight"])  # trained, kept apart
    assert [x["epoch"] for x in metrics(run_dir) if "eval_loss" in x] == [1.0]


# ---- bad input: one line naming the key, exit 2, nothing written ------------------------------------------------


def train_in_process(tmp_path, capsys, *overrides: str) -> str:
    """`python -m train` in this process: a refusal comes before any process group or model exists."""
    out = tmp_path / "run"
    code = run(train_main, ["--config", "configs/train/tiny-cpu.yaml", "--output-dir", str(out), *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()  # nothing written
    assert not torch.distributed.is_initialized()
    return err


@pytest.mark.parametrize(
    "override, message",
    [
        ("max_steps=-1", "max_steps: must be >= 0"),
        ("seed=-1", "seed: must be in [0, 2**32)"),
        ("log_every_steps=0", "log_every_steps: must be >= 1"),
        ("epochs=0", "epochs: must be >= 1"),
        ("eval.num_beams=0", "eval.num_beams: must be in [1, 1024]"),
        ("eval.generation_batch_size=0", "eval.generation_batch_size: must be >= 1"),
        ("generation.num_beams=0", "generation.num_beams: must be in [1, 1024]"),
        ("optim.lr=.nan", "optim.lr: must be a finite number, got nan"),
        ("optim.betas=[0.9, 1.5]", "optim.betas: each must be in [0, 1)"),
        ('data.skip_bad_rows="true"', "data.skip_bad_rows: expected true or false, got 'true'"),
    ],
)
def test_config_value_that_makes_no_sense_is_refused(tmp_path, capsys, monkeypatch, override, message):
    monkeypatch.chdir(ROOT)
    err = train_in_process(tmp_path, capsys, "data.train=data/sample/train.json", override)
    assert err == f"error: configs/train/tiny-cpu.yaml: {message}\n"


def test_held_out_fraction_that_rounds_to_no_row_is_refused(tmp_path, capsys, monkeypatch, small_train_file):
    monkeypatch.chdir(ROOT)
    err = train_in_process(tmp_path, capsys, f"data.train={small_train_file}", "data.val_fraction=0.0001")
    assert err.startswith(f"error: data.val_fraction: 0.0001 of the 600 rows of {small_train_file} holds out no ")


def test_the_training_file_as_validation_file_is_refused(tmp_path, capsys, monkeypatch, small_train_file):
    monkeypatch.chdir(ROOT)
    err = train_in_process(tmp_path, capsys, f"data.train={small_train_file}", f"data.validation={small_train_file}")
    assert err == (
        f"error: configs/train/tiny-cpu.yaml: data.validation: {small_train_file} is the training file; "
        "leave it empty to hold out rows\n"
    )


def test_validation_file_whose_rows_are_all_skipped_is_refused(tmp_path, capsys, monkeypatch, small_train_file):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "val.jsonl"
    rows = [e.to_json() for e in load_examples(small_train_file)[:3]]
    bad.write_text("".join(f'{{"study_id": "{r["study_id"]}", "findings": "{r["findings"]}"}}\n' for r in rows))
    err = train_in_process(
        tmp_path, capsys, f"data.train={small_train_file}", f"data.validation={bad}", "data.skip_bad_rows=true"
    )
    assert err == f"error: data.validation: {bad}: no usable rows\n"


def test_a_config_without_its_sections_is_refused_naming_them(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    code = run(train_main, ["--config", str(empty), "--output-dir", str(tmp_path / "run")])
    assert code == 2 and not (tmp_path / "run").exists()
    err = capsys.readouterr().err
    assert "model.name / tiny_spec: set exactly one of them" in err and "data.train: required" in err, err


def test_an_output_dir_that_cannot_be_one_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    a_file = tmp_path / "file"
    a_file.write_text("keep me\n")
    with pytest.raises(SystemExit) as empty:
        train_main(["--config", "configs/train/tiny-cpu.yaml", "--output-dir", ""])
    assert empty.value.code == 2 and "argument --output-dir: an empty path" in capsys.readouterr().err  # not cwd
    for out, message in [
        (a_file, f"error: --output-dir: {a_file} is an existing file, expected a directory\n"),
        (a_file / "run", f"error: --output-dir: {a_file / 'run'}: {a_file} is not a directory\n"),
    ]:
        code = run(train_main, ["--config", "configs/train/tiny-cpu.yaml", "--output-dir", str(out)])
        assert code == 2 and capsys.readouterr().err == message
    assert a_file.read_text() == "keep me\n"


def test_bad_config_fails_before_any_process_group(tmp_path):
    overrides = ["optim.lr=-1", "data.train=nope.json", "batch.batching=bucketed"]
    r = subprocess.run(
        train_command("configs/train/tiny-cpu.yaml", tmp_path / "run", overrides),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    for key in ("optim.lr: must be > 0", "data.train: data file not found: nope.json", "batch.batching"):
        assert key in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_fp16_deepspeed_refuses_t5_without_guard(tmp_path):
    env = {
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ROOT / "configs/deepspeed/zero3-fp16.json"),
    }
    r = subprocess.run(
        train_command("configs/train/tiny-cpu.yaml", tmp_path, []),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert r.returncode == 2 and "overflows fp16" in r.stderr and "fp16_overflow_guard" in r.stderr
