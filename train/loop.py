"""The training loop: prepare, accumulate, backward, gather. Read top to bottom in `train`."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DummyOptim, DummyScheduler, InitProcessGroupKwargs, gather_object, set_seed
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from eval.rouge import Rouge, mean_scores
from radreport.build_tiny import tokenizer_corpus
from radreport.io import atomic_write_json
from radreport.modeling import ModelMeta, build_tiny_t5, count_parameters, load_seq2seq, load_tokenizer
from train.cache import examples, load_rows, load_tokens, prepare_rows, prepare_tokens, wait_for
from train.checkpoint import (
    STATE_FILE,
    TrainerState,
    epoch_name,
    export_model,
    save_checkpoint,
    step_name,
)
from train.config import TrainConfig
from train.data import IGNORE_INDEX, BatchOrder, Collator, Seq2SeqRows
from train.rundir import prepare_run_dir

INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: stopped on purpose, resumable
HUB_FILES = ["*.json", "*.safetensors", "*.model"]  # what a hub model is downloaded with
# A collective that waits longer than this ends every rank (a dead or hung rank stops the job instead of holding
# 8 GPUs for hours). Longer than the slowest legitimate wait: the main process exporting and verifying the model.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)


class NonFiniteLoss(RuntimeError):
    pass


class Interrupted(Exception):
    pass


class RunLog:
    """Log lines on the main process in the form SageMaker's metric regexes read; every value in metrics.jsonl."""

    def __init__(self, accelerator: Accelerator, output_dir: Path):
        self.accelerator, self.path = accelerator, output_dir / "metrics.jsonl"

    def info(self, msg: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(msg)

    def log(self, values: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        tqdm.write(
            "{"
            + ", ".join(f"'{k}': {v:.6g}" if isinstance(v, float) else f"'{k}': {v}" for k, v in values.items())
            + "}"
        )
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(values) + "\n")


def quiet_deprecated_collectives() -> None:
    """Silence exactly the FutureWarnings DeepSpeed's ZeRO-3 triggers on every step through torch.distributed
    calls that torch 2.13 deprecated (a 2-process CPU run printed ~55,000 of them); every other warning shows."""
    for name in ("reduce_scatter_tensor", "all_gather_into_tensor"):
        warnings.filterwarnings(
            "ignore",
            message=rf"`torch\.distributed\.{name}` is deprecated",
            category=FutureWarning,
            module=r"torch\.distributed\.",
        )


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    # On CPU, accelerate counts a multi-process DeepSpeed run as one process unless gloo is named.
    # A plain `python -m train` (no launcher, no WORLD_SIZE) has no process group to configure.
    launched = "WORLD_SIZE" in os.environ
    handlers = []
    if launched:
        gloo = {} if torch.cuda.is_available() else {"backend": "gloo"}
        handlers = [InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT, **gloo)]
    return Accelerator(gradient_accumulation_steps=cfg.batch.gradient_accumulation_steps, kwargs_handlers=handlers)


def load_model_source(cfg: TrainConfig, output_dir: Path, rows_dir: Path) -> str:
    """The directory or hub id to load; called before any process group exists.

    The tiny model is built by local rank 0 of every node (nodes may not share a disk; the build is
    deterministic, so every copy is the same) outside DeepSpeed's ZeRO-3 context; the other local
    ranks wait for the directory, which appears complete in one rename. A hub id is downloaded once
    per node the same way (the other ranks find it in the cache once the process group has started).
    """
    local_rank = os.environ.get("LOCAL_RANK", "0")
    if not cfg.model.tiny_spec:
        if Path(cfg.model.name).is_dir():
            return cfg.model.name
        if local_rank == "0":
            from huggingface_hub import snapshot_download

            snapshot_download(cfg.model.name, allow_patterns=HUB_FILES)
        return cfg.model.name
    init_dir = output_dir / "init-model"
    if local_rank == "0" and not init_dir.is_dir():
        corpus = tokenizer_corpus(examples(load_rows(rows_dir)[0]), cfg.data.prompt_template)
        build_tiny_t5(cfg.model.tiny_spec, corpus, init_dir)
    wait_for(init_dir, "the tiny model (local rank 0 failed to build it?)", 600)
    return str(init_dir)


def load_training_model(cfg: TrainConfig, source: str):
    """The model, with every rank together (ZeRO-3 partitions the weights while loading), keeping the
    checkpoint's own head tying (radreport.modeling.load_seq2seq explains why that needs care)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    model_dir = source
    if not Path(source).is_dir():  # a hub id: local rank 0 downloaded it before the process group started
        from huggingface_hub import snapshot_download

        model_dir = snapshot_download(source, allow_patterns=HUB_FILES, local_files_only=True)
    gather = None
    if is_deepspeed_zero3_enabled():
        import deepspeed

        gather = deepspeed.zero.GatheredParameters
    model = load_seq2seq(model_dir, torch.float32, gather=gather)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model, load_tokenizer(model_dir)


def build_loaders(cfg: TrainConfig, accelerator: Accelerator, pad_id: int, train_ds: Seq2SeqRows, val_ds):
    """(batch order, train, validation-loss and ROUGE loaders); the ROUGE loader is None when rouge_samples=0.

    Each loader has its own generator: making an iterator draws a seed from it, and drawing from the
    global RNG instead would shift every dropout mask after a resume."""
    fixed = cfg.batch.batching == "max_length"
    collate = Collator(
        pad_id,
        cfg.batch.pad_to_multiple_of,
        cfg.data.max_source_tokens if fixed else 0,
        cfg.data.max_target_tokens if fixed else 0,
    )
    eval_collate = Collator(pad_id, cfg.batch.pad_to_multiple_of)
    order = BatchOrder(
        train_ds.length_keys,
        cfg.batch.per_device,
        accelerator.num_processes,
        cfg.seed,
        cfg.batch.batching,
        cfg.batch.group_size,
    )
    loader_rng = lambda: torch.Generator().manual_seed(cfg.seed)  # noqa: E731
    train_dl = DataLoader(train_ds, batch_sampler=order, collate_fn=collate, generator=loader_rng())
    val_sorted = np.argsort(val_ds.length_keys, kind="stable").tolist()  # similar lengths per eval batch
    val_dl = DataLoader(
        Subset(val_ds, val_sorted),
        batch_size=cfg.batch.eval_per_device,
        collate_fn=eval_collate,
        generator=loader_rng(),
    )
    rouge_dl = None
    if cfg.eval.rouge_samples:
        # A fixed sample, longest prompt first: consecutive batches (one per process) hold similar lengths, and a
        # batch too large for memory fails on the first one, not after most of the work.
        pick = np.random.default_rng(cfg.seed).permutation(len(val_ds))[: cfg.eval.rouge_samples]
        source_len = np.array([len(x) for x in val_ds.table.select(pick.tolist())["input_ids"]])
        longest_first = pick[np.argsort(-source_len, kind="stable")].tolist()
        rouge_dl = DataLoader(
            Subset(val_ds, longest_first),
            batch_size=cfg.eval.generation_batch_size,
            collate_fn=eval_collate,
            generator=loader_rng(),
        )
    return order, train_dl, val_dl, rouge_dl


def lr_lambda(cfg: TrainConfig, total_steps: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.optim.schedule == "linear":
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        return 1.0

    return f


def build_optimizer(cfg: TrainConfig, model, ds_cfg: dict, total_steps: int):
    """(optimizer, scheduler, whether DeepSpeed owns both); one scheduler step per optimizer step."""
    warmup = cfg.optim.warmup_steps or int(cfg.optim.warmup_ratio * total_steps)
    if "optimizer" in ds_cfg:  # e.g. ZeRO-Offload: DeepSpeed's CPU Adam, and its own scheduler
        optimizer = DummyOptim(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        return optimizer, DummyScheduler(optimizer, total_num_steps=total_steps, warmup_num_steps=warmup), True
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps, warmup)), False


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    tok = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    mask = (labels != IGNORE_INDEX).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp(min=1)


def validation_loss(accelerator, model, val_dl) -> float:
    losses = []
    with torch.no_grad():
        for batch in val_dl:
            batch.pop("row")
            out = model(**batch)
            losses.append(accelerator.gather_for_metrics(per_example_loss(out.logits, batch["labels"])))
    return float(torch.cat(losses).mean())


class GenerationDrill(RuntimeError):
    pass


def validation_rouge(accelerator, model, tokenizer, rouge_dl, cfg: TrainConfig, epoch: int) -> dict:
    """Beam search over the ROUGE sample, scored. A failure (out of memory, any exception) is returned as
    `{"eval_rouge_error": ...}` instead of ending the run: after every batch all ranks add up a failure flag,
    so every rank stops together and nobody waits in a collective the others have left.

    What this cannot undo: under ZeRO-3 a rank that fails in the middle of a forward pass has left the others
    inside a parameter gather; they wait for the process group's timeout (30 minutes) and the run dies. The
    epoch's checkpoint is written before validation, so a restart resumes after it."""
    unwrapped = accelerator.unwrap_model(model)
    preds, refs = [], []
    drill = cfg.inject_generation_failure_at_epoch == epoch + 1
    with torch.no_grad():
        for batch in rouge_dl:
            error = ""
            try:
                # ZeRO-3: every rank must join every forward of generate, or the gather of parameters hangs.
                gen = unwrapped.generate(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    num_beams=cfg.eval.num_beams,
                    max_new_tokens=cfg.eval.max_new_tokens,
                    synced_gpus=accelerator.num_processes > 1,
                )
                if drill and accelerator.process_index == accelerator.num_processes - 1:
                    raise GenerationDrill(f"generation failure injected at epoch {epoch + 1} (drill)")
            except Exception as e:  # noqa: BLE001  out of memory is a RuntimeError; any failure is reported alike
                error = f"{type(e).__name__}: {str(e)[:300]}"
            failed = torch.tensor([1.0 if error else 0.0], device=accelerator.device)
            if float(accelerator.reduce(failed, "sum")) > 0:  # every rank leaves here together
                errors = gather_object([error]) if accelerator.num_processes > 1 else [error]
                return {"eval_rouge_error": "; ".join(f"rank {r}: {e}" for r, e in enumerate(errors) if e)}
            gen = accelerator.pad_across_processes(gen, dim=1, pad_index=tokenizer.pad_token_id)
            labels = accelerator.pad_across_processes(batch["labels"], dim=1, pad_index=IGNORE_INDEX)
            gen, labels = accelerator.gather_for_metrics((gen, labels))
            labels = labels.masked_fill(labels == IGNORE_INDEX, tokenizer.pad_token_id)
            preds += tokenizer.batch_decode(gen, skip_special_tokens=True)
            refs += tokenizer.batch_decode(labels, skip_special_tokens=True)
    scores = mean_scores(Rouge().score_all(refs, preds))
    return {f"eval_{k}": v for k, v in scores.items()}


def end_epoch(accelerator, model, tokenizer, val_dl, rouge_dl, cfg, run, state: TrainerState, epoch, log):
    """Checkpoint first, then validation: whatever validation does, the epoch is kept. The validation result
    (history, best epoch) is then written into that checkpoint's trainer_state.json."""
    state.epoch, state.batches_done = epoch + 1, 0
    ckpt = save_checkpoint(accelerator, run, state, epoch_name(epoch + 1))
    model.eval()
    metrics = {"eval_loss": validation_loss(accelerator, model, val_dl)}
    if rouge_dl is not None:
        metrics.update(validation_rouge(accelerator, model, tokenizer, rouge_dl, cfg, epoch))
    model.train()
    if "eval_rouge_error" in metrics:
        log.info(
            f"validation ROUGE failed at epoch {epoch + 1} ({metrics['eval_rouge_error']}); training goes on "
            f"(checkpoint {ckpt.name} is saved). If it ran out of memory, lower eval.generation_batch_size."
        )
    metrics.update({"epoch": float(epoch + 1), "step": state.global_step})
    log.log(metrics)
    state.history.append(metrics)
    key = cfg.eval.metric_for_best
    value = metrics.get(f"eval_{key}" if key != "eval_loss" else key)
    lower_is_better = key == "eval_loss"
    if value is not None and (
        state.best_metric is None or (value < state.best_metric if lower_is_better else value > state.best_metric)
    ):
        state.best_metric, state.best_epoch, state.best_checkpoint = value, epoch + 1, ckpt.name
    if accelerator.is_local_main_process and ckpt.is_dir():  # the same state, now with this epoch's validation
        atomic_write_json(ckpt / STATE_FILE, asdict(state))
    accelerator.wait_for_everyone()


def train(cfg: TrainConfig, output_dir: Path, resume: bool = True, allow_config_change: bool = False) -> int:
    """Fine-tune `cfg.model` on `cfg.data` into `output_dir`; returns the exit status (0).

    In order: the data (read, checked and cached before any process group exists), the model and tokenizer
    (every rank together), the tokenised cache, loaders, optimizer and schedule, `accelerator.prepare`, a resume
    from the newest complete checkpoint, the loop (one optimizer step per `gradient_accumulation_steps`
    micro-batches; loss lines every `log_every_steps`; step checkpoints), an epoch end (checkpoint, then
    validation), and the export of the best epoch to `output_dir/model`. Raises NonFiniteLoss (every rank
    stops before the update) and Interrupted (the preemption drill); RunDirError (exit 2) when `output_dir`
    holds another run's checkpoints, unless `allow_config_change`."""
    quiet_deprecated_collectives()
    rows_dir = prepare_rows(cfg, output_dir)  # may raise DataError before anything is written
    source = load_model_source(cfg, output_dir, rows_dir)
    accelerator = make_accelerator(cfg)
    log = RunLog(accelerator, output_dir)
    # which checkpoint to continue, or refuse (exit 2); train_config.json is written at the first checkpoint
    run = prepare_run_dir(accelerator, cfg, output_dir, source, resume, allow_config_change, log.info)
    set_seed(cfg.seed)
    deepspeed = accelerator.state.deepspeed_plugin
    ds_cfg = deepspeed.deepspeed_config if deepspeed else {}
    for line in load_rows(rows_dir)[2]:
        log.info(line)

    # ---- model, tokenised data, loaders
    model, tokenizer = load_training_model(cfg, source)
    log.info(
        f"model {source}: {count_parameters(model) / 1e6:.1f}M parameters, {accelerator.num_processes} processes, "
        f"{'DeepSpeed ZeRO-' + str(ds_cfg.get('zero_optimization', {}).get('stage')) if deepspeed else 'no DeepSpeed'}"
    )
    tokens_dir, built = prepare_tokens(cfg, output_dir, rows_dir, tokenizer, accelerator)
    log.info(f"{'tokenised into' if built else 'tokens read from'} {tokens_dir}")
    train_ds, val_ds = (Seq2SeqRows(t) for t in load_tokens(tokens_dir))
    order, train_dl, val_dl, rouge_dl = build_loaders(cfg, accelerator, tokenizer.pad_token_id, train_ds, val_ds)

    # ---- optimizer and schedule (one scheduler step per optimizer step)
    micro_per_epoch = math.ceil(len(order) / accelerator.num_processes)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.batch.gradient_accumulation_steps)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    optimizer, scheduler, ds_owns_optimizer = build_optimizer(cfg, model, ds_cfg, total_steps)
    if deepspeed:  # our config is the one source of these numbers; the JSON says "auto"
        if ds_cfg.get("gradient_clipping", "auto") == "auto":
            ds_cfg["gradient_clipping"] = cfg.optim.max_grad_norm
        if ds_cfg.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds_cfg["train_micro_batch_size_per_gpu"] = cfg.batch.per_device
    if ds_owns_optimizer:
        model, optimizer, train_dl, val_dl, scheduler = accelerator.prepare(
            model, optimizer, train_dl, val_dl, scheduler
        )
    else:
        model, optimizer, train_dl, val_dl = accelerator.prepare(model, optimizer, train_dl, val_dl)
    if rouge_dl is not None:
        rouge_dl = accelerator.prepare(rouge_dl)
    if cfg.precision.fp16_overflow_guard:
        from train.guard import install_overflow_guard

        install_overflow_guard(accelerator.unwrap_model(model))

    # ---- resume
    state = TrainerState()
    if run.resume_from:
        accelerator.load_state(str(run.resume_from))
        state = TrainerState.read(run.resume_from)
        log.info(
            f"resumed from {run.resume_from.name}: step {state.global_step}, epoch {state.epoch}, "
            f"{state.batches_done} batches into it"
        )
    if not ds_owns_optimizer:
        with warnings.catch_warnings():  # fast-forwarding the schedule, not stepping it before the optimizer
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            for _ in range(state.global_step):
                scheduler.step()

    log.info(
        f"{len(train_ds)} train / {len(val_ds)} validation rows; {steps_per_epoch} optimizer steps per epoch, "
        f"{total_steps} in all; {cfg.batch.per_device} x {cfg.batch.gradient_accumulation_steps} x "
        f"{accelerator.num_processes} = "
        f"{cfg.batch.per_device * cfg.batch.gradient_accumulation_steps * accelerator.num_processes} "
        f"examples per step; batching: {cfg.batch.batching}"
    )
    bar = tqdm(
        total=total_steps,
        initial=state.global_step,
        disable=not accelerator.is_local_main_process,
        desc="train",
        dynamic_ncols=True,
    )
    model.train()
    loss_sum, loss_n, t0 = torch.zeros((), device=accelerator.device), 0, time.time()
    finished = state.global_step >= total_steps
    try:
        for epoch in range(state.epoch, cfg.epochs):
            if finished:
                break
            order.for_epoch(epoch)
            loader = accelerator.skip_first_batches(train_dl, state.batches_done) if state.batches_done else train_dl
            for batch in loader:
                rows = batch.pop("row")
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    if cfg.inject_nonfinite_at_step and state.global_step + 1 == cfg.inject_nonfinite_at_step:
                        loss = loss * float("nan")
                    check_finite(accelerator, loss, rows, train_ds, state, epoch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and not deepspeed:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                loss_sum += loss.detach()
                loss_n += 1
                state.batches_done += 1
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                if not ds_owns_optimizer:
                    scheduler.step()
                bar.update(1)
                if state.global_step % cfg.log_every_steps == 0:
                    mean_loss = float(accelerator.reduce(loss_sum, "mean")) / loss_n
                    log.log(
                        {
                            "loss": mean_loss,
                            "learning_rate": float(optimizer.param_groups[0]["lr"]),
                            "epoch": round(epoch + state.batches_done / micro_per_epoch, 4),
                            "step": state.global_step,
                            "examples_per_s": round(
                                loss_n * cfg.batch.per_device * accelerator.num_processes / (time.time() - t0), 2
                            ),
                        }
                    )
                    loss_sum.zero_()
                    loss_n, t0 = 0, time.time()
                if run.checkpoint_due(accelerator, state.global_step):
                    save_checkpoint(accelerator, run, state, step_name(state.global_step))
                if cfg.interrupt_after_steps and state.global_step == cfg.interrupt_after_steps:
                    save_checkpoint(accelerator, run, state, step_name(state.global_step))
                    raise Interrupted(f"interrupted on purpose after step {state.global_step} (interrupt_after_steps)")
                if state.global_step >= total_steps:
                    finished = True
                    break
            end_epoch(accelerator, model, tokenizer, val_dl, rouge_dl, cfg, run, state, epoch, log)
    finally:
        bar.close()

    export_best(accelerator, model, tokenizer, cfg, output_dir, state, log)
    accelerator.end_training()
    return 0


def export_best(accelerator, model, tokenizer, cfg: TrainConfig, output_dir: Path, state: TrainerState, log) -> None:
    """Load the best epoch's checkpoint (if it is not the last) and export it, once, to output_dir/model."""
    best = output_dir / "checkpoints" / state.best_checkpoint
    if state.best_checkpoint and state.best_epoch != state.epoch and best.is_dir():
        log.info(
            f"loading the best epoch ({state.best_epoch}, {cfg.eval.metric_for_best}={state.best_metric:.4f}) "
            "for export"
        )
        accelerator.load_state(str(best))
    epoch = state.best_epoch or state.epoch
    # the step the exported weights were saved at: the best epoch's end, not the run's last step
    step = next((int(h["step"]) for h in state.history if int(h.get("epoch", 0)) == epoch), state.global_step)
    meta = ModelMeta(
        cfg.data.prompt_template,
        cfg.data.max_source_tokens,
        cfg.data.max_target_tokens,
        trained_by=f"python -m train (epoch {epoch} of {cfg.epochs}, step {step} of {state.global_step})",
    )
    export_model(accelerator, model, tokenizer, output_dir / "model", meta, cfg.generation)
    log.info(
        f"exported {output_dir / 'model'} (best epoch {state.best_epoch}, {cfg.eval.metric_for_best}="
        f"{state.best_metric if state.best_metric is not None else float('nan'):.4f})"
    )


def check_finite(accelerator, loss, rows, train_ds: Seq2SeqRows, state: TrainerState, epoch: int) -> None:
    """All ranks agree to stop if any rank's loss is inf/NaN; the error names step, batch and studies."""
    bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=accelerator.device)
    if float(accelerator.reduce(bad, "sum")) == 0:
        return
    studies = train_ds.study_ids(rows.tolist()) if not torch.isfinite(loss) else []
    where = f"this rank's batch: study_ids {studies}" if studies else "on another rank"
    raise NonFiniteLoss(
        f"non-finite loss at optimizer step {state.global_step + 1} (epoch {epoch + 1}, "
        f"micro-batch {state.batches_done + 1}); {where}. Stopped before the update; the last good "
        f"checkpoint is untouched."
    )
