"""The training loop: prepare, accumulate, backward, gather. Read top to bottom in `train`."""

from __future__ import annotations

import json
import math
import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DummyOptim, DummyScheduler, InitProcessGroupKwargs, set_seed
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from eval.rouge import Rouge, mean_scores
from radreport.build_tiny import tokenizer_corpus
from radreport.modeling import ModelMeta, build_tiny_t5, load_tokenizer
from radreport.schema import LoadReport, load_examples
from train.checkpoint import (
    TrainerState,
    epoch_name,
    export_model,
    save_checkpoint,
    step_name,
)
from train.config import TrainConfig
from train.data import IGNORE_INDEX, BatchOrder, Collator, Seq2SeqRows
from train.prepare import split_holdout
from train.rundir import prepare_run_dir

INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: stopped on purpose, resumable
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


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    # On CPU, accelerate counts a multi-process DeepSpeed run as one process unless gloo is named.
    # A plain `python -m train` (no launcher, no WORLD_SIZE) has no process group to configure.
    launched = "WORLD_SIZE" in os.environ
    handlers = []
    if launched:
        gloo = {} if torch.cuda.is_available() else {"backend": "gloo"}
        handlers = [InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT, **gloo)]
    return Accelerator(gradient_accumulation_steps=cfg.batch.gradient_accumulation_steps, kwargs_handlers=handlers)


def load_data(cfg: TrainConfig, info):
    report = LoadReport(cfg.data.train)
    train_rows = load_examples(cfg.data.train, skip_bad=cfg.data.skip_bad_rows, report=report)
    info(report.summary())
    if cfg.data.validation:
        vreport = LoadReport(cfg.data.validation)
        val_rows = load_examples(cfg.data.validation, skip_bad=cfg.data.skip_bad_rows, report=vreport)
        info(vreport.summary())
    else:
        train_rows, val_rows = split_holdout(train_rows, cfg.data.val_fraction, cfg.seed)
        info(f"held out {len(val_rows)} validation rows (findings-disjoint), {len(train_rows)} left to train on")
    return train_rows, val_rows


def load_model_source(cfg: TrainConfig, output_dir: Path, train_rows) -> str:
    """The directory or hub id to load; called before any process group exists.

    The tiny model is built by local rank 0 of every node (nodes may not share a disk; the build is
    deterministic, so every copy is the same) outside DeepSpeed's ZeRO-3 context; the other local
    ranks wait for the directory, which appears complete in one rename. A hub id is downloaded once
    per node the same way.
    """
    local_rank = os.environ.get("LOCAL_RANK", "0")
    if not cfg.model.tiny_spec:
        if Path(cfg.model.name).is_dir():
            return cfg.model.name
        if local_rank == "0":
            from huggingface_hub import snapshot_download

            snapshot_download(cfg.model.name, allow_patterns=["*.json", "*.safetensors", "*.model"])
        return cfg.model.name  # other ranks find it in the cache (from_pretrained retries the download otherwise)
    init_dir = output_dir / "init-model"
    if local_rank == "0" and not init_dir.is_dir():
        build_tiny_t5(cfg.model.tiny_spec, tokenizer_corpus(train_rows, cfg.data.prompt_template), init_dir)
    deadline = time.time() + 600
    while not init_dir.is_dir():
        if time.time() > deadline:
            raise RuntimeError(f"{init_dir} did not appear (local rank 0 failed to build it?)")
        time.sleep(0.5)
    return str(init_dir)


def lr_lambda(cfg: TrainConfig, total_steps: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.optim.schedule == "linear":
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        return 1.0

    return f


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    tok = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    mask = (labels != IGNORE_INDEX).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp(min=1)


def evaluate(accelerator, model, tokenizer, val_dl, rouge_dl, cfg: TrainConfig) -> dict:
    model.eval()
    losses = []
    with torch.no_grad():
        for batch in val_dl:
            batch.pop("row")
            out = model(**batch)
            losses.append(accelerator.gather_for_metrics(per_example_loss(out.logits, batch["labels"])))
    metrics = {"eval_loss": float(torch.cat(losses).mean())}
    if rouge_dl is not None:
        unwrapped = accelerator.unwrap_model(model)
        preds, refs = [], []
        with torch.no_grad():
            for batch in rouge_dl:
                # ZeRO-3: every rank must join every forward of generate, or the gather of parameters hangs.
                gen = unwrapped.generate(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    num_beams=cfg.eval.num_beams,
                    max_new_tokens=cfg.eval.max_new_tokens,
                    synced_gpus=accelerator.num_processes > 1,
                )
                gen = accelerator.pad_across_processes(gen, dim=1, pad_index=tokenizer.pad_token_id)
                labels = accelerator.pad_across_processes(batch["labels"], dim=1, pad_index=IGNORE_INDEX)
                gen, labels = accelerator.gather_for_metrics((gen, labels))
                labels = labels.masked_fill(labels == IGNORE_INDEX, tokenizer.pad_token_id)
                preds += tokenizer.batch_decode(gen, skip_special_tokens=True)
                refs += tokenizer.batch_decode(labels, skip_special_tokens=True)
        scores = mean_scores(Rouge().score_all(refs, preds))
        metrics.update({f"eval_{k}": v for k, v in scores.items()})
    model.train()
    return metrics


def train(cfg: TrainConfig, output_dir: Path, resume: bool = True, allow_config_change: bool = False) -> int:
    output_dir.mkdir(parents=True, exist_ok=True)
    train_rows, val_rows = load_data(cfg, print if os.environ.get("RANK", "0") == "0" else (lambda *_: None))
    source = load_model_source(cfg, output_dir, train_rows)
    accelerator = make_accelerator(cfg)
    log = RunLog(accelerator, output_dir)
    # which checkpoint to continue, or refuse (exit 2); train_config.json is written at the first checkpoint
    run = prepare_run_dir(accelerator, cfg, output_dir, source, resume, allow_config_change, log.info)
    set_seed(cfg.seed)
    deepspeed = accelerator.state.deepspeed_plugin
    ds_cfg = deepspeed.deepspeed_config if deepspeed else {}

    # ---- model (every rank together: ZeRO-3 partitions the weights while loading)
    tokenizer = load_tokenizer(source)
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=torch.float32)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    log.info(
        f"model {source}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
        f"(shown per rank under ZeRO-3), {accelerator.num_processes} processes, "
        f"{'DeepSpeed ZeRO-' + str(ds_cfg.get('zero_optimization', {}).get('stage')) if deepspeed else 'no DeepSpeed'}"
    )

    args = (tokenizer, cfg.data.prompt_template, cfg.data.max_source_tokens, cfg.data.max_target_tokens)
    train_ds, val_ds = Seq2SeqRows(train_rows, *args), Seq2SeqRows(val_rows, *args)
    fixed = cfg.batch.batching == "max_length"
    collate = Collator(
        tokenizer.pad_token_id,
        cfg.batch.pad_to_multiple_of,
        cfg.data.max_source_tokens if fixed else 0,
        cfg.data.max_target_tokens if fixed else 0,
    )
    eval_collate = Collator(tokenizer.pad_token_id, cfg.batch.pad_to_multiple_of)
    order = BatchOrder(
        train_ds.length_keys,
        cfg.batch.per_device,
        accelerator.num_processes,
        cfg.seed,
        cfg.batch.batching,
        cfg.batch.group_size,
    )
    # Each loader has its own generator: making an iterator draws a seed from it, and drawing from the
    # global RNG instead would shift every dropout mask after a resume.
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
        pick = np.random.default_rng(cfg.seed).permutation(len(val_ds))[: cfg.eval.rouge_samples]
        rouge_dl = DataLoader(
            Subset(val_ds, sorted(pick.tolist())),
            batch_size=cfg.batch.eval_per_device,
            collate_fn=eval_collate,
            generator=loader_rng(),
        )

    # ---- optimizer and schedule (one scheduler step per optimizer step)
    micro_per_epoch = math.ceil(len(order) / accelerator.num_processes)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.batch.gradient_accumulation_steps)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    warmup = cfg.optim.warmup_steps or int(cfg.optim.warmup_ratio * total_steps)
    ds_owns_optimizer = "optimizer" in ds_cfg
    if ds_owns_optimizer:  # e.g. ZeRO-Offload: DeepSpeed's CPU Adam, and its own scheduler
        optimizer = DummyOptim(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        scheduler = DummyScheduler(optimizer, total_num_steps=total_steps, warmup_num_steps=warmup)
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=cfg.optim.lr,
            betas=tuple(cfg.optim.betas),
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps, warmup))
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
                    check_finite(accelerator, loss, rows, train_rows, state, epoch)
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
            # ---- epoch end: validation, best tracking, checkpoint
            state.epoch, state.batches_done = epoch + 1, 0
            metrics = evaluate(accelerator, model, tokenizer, val_dl, rouge_dl, cfg)
            metrics.update({"epoch": float(epoch + 1), "step": state.global_step})
            log.log(metrics)
            state.history.append(metrics)
            key = cfg.eval.metric_for_best
            value = metrics.get(f"eval_{key}" if key != "eval_loss" else key)
            lower_is_better = key == "eval_loss"
            if value is not None and (
                state.best_metric is None
                or (value < state.best_metric if lower_is_better else value > state.best_metric)
            ):
                state.best_metric, state.best_epoch, state.best_checkpoint = value, epoch + 1, epoch_name(epoch + 1)
            save_checkpoint(accelerator, run, state, epoch_name(epoch + 1))
    finally:
        bar.close()

    # ---- export the best epoch, once
    best = output_dir / "checkpoints" / state.best_checkpoint
    if state.best_checkpoint and state.best_epoch != state.epoch and best.is_dir():
        log.info(
            f"loading the best epoch ({state.best_epoch}, {cfg.eval.metric_for_best}={state.best_metric:.4f}) "
            "for export"
        )
        accelerator.load_state(str(best))
    meta = ModelMeta(
        cfg.data.prompt_template,
        cfg.data.max_source_tokens,
        cfg.data.max_target_tokens,
        trained_by=f"python -m train (epoch {state.best_epoch or state.epoch} of {cfg.epochs}, "
        f"step {state.global_step})",
    )
    export_model(accelerator, model, tokenizer, output_dir / "model", meta, cfg.generation)
    log.info(
        f"exported {output_dir / 'model'} (best epoch {state.best_epoch}, {cfg.eval.metric_for_best}="
        f"{state.best_metric if state.best_metric is not None else float('nan'):.4f})"
    )
    accelerator.end_training()
    return 0


def check_finite(accelerator, loss, rows, train_rows, state: TrainerState, epoch: int) -> None:
    """All ranks agree to stop if any rank's loss is inf/NaN; the error names step, batch and studies."""
    bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=accelerator.device)
    if float(accelerator.reduce(bad, "sum")) == 0:
        return
    studies = [train_rows[int(i)].study_id for i in rows] if not torch.isfinite(loss) else []
    where = f"this rank's batch: study_ids {studies}" if studies else "on another rank"
    raise NonFiniteLoss(
        f"non-finite loss at optimizer step {state.global_step + 1} (epoch {epoch + 1}, "
        f"micro-batch {state.batches_done + 1}); {where}. Stopped before the update; the last good "
        f"checkpoint is untouched."
    )
