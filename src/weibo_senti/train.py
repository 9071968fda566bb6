"""Fine-tuning: one readable loop on Accelerate (so `accelerate launch`/`torchrun` just work)."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from . import inference, modeling
from .config import TrainConfig
from .data import Examples, read_labelled, split_dev
from .errors import UserError
from .features import Collator, EncodedDataset, EpochBatchSampler, encode_cached
from .files import append_jsonl, move_files_into, replace_dir, write_json, write_text
from .hub import default_data, resolve_base_model
from .metrics import classification_metrics
from .progress import progress
from .runs import RUN_FILE, read_run_info, write_run_info

log = logging.getLogger("weibo_senti")
CHECKPOINT = "checkpoint"


def load_splits(cfg: TrainConfig) -> tuple[Examples, Examples]:
    data = cfg.data or str(default_data())
    kw = dict(text_column=cfg.text_column, label_column=cfg.label_column, encoding=cfg.encoding)
    train = read_labelled(data, **kw)
    if cfg.dev_data:
        dev = read_labelled(cfg.dev_data, **kw)
    else:
        train, dev = split_dev(train, cfg.dev_fraction, cfg.seed)
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        idx = sorted(random.Random(cfg.seed).sample(range(len(train)), cfg.max_train_samples))
        train = train.subset(idx)
    return train, dev


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / CHECKPOINT).is_dir() and (out / "checkpoint.old").is_dir():
            (out / "checkpoint.old").rename(out / CHECKPOINT)  # crash during the swap
        if not (out / CHECKPOINT).is_dir():
            done = (out / RUN_FILE).is_file() and read_run_info(out).get("complete")
            raise UserError(
                f"{out} has finished training; nothing to resume"
                if done
                else f"{out} has no checkpoint to resume from; start without --resume"
            )
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                f"{out} already holds a run: pass --resume to continue it, --overwrite to "
                "replace it, or choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[int], None] | None = None,
):
    """Train ``cfg.method`` and write a self-contained run folder; returns the classifier."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    from .predict import SentimentClassifier

    if cfg.precision == "fp16" and not torch.cuda.is_available():
        raise UserError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 or no")
    precision = cfg.precision
    if precision == "auto":  # bf16 kept accuracy in our runs (README); fp32 where bf16 is slow
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = "bf16" if inference.resolve("auto", device) == "bf16" else "no"
    modeling.quiet_transformers()
    # Accelerate keeps one global state per process; several train() calls in one process
    # (tests, method comparisons) may each choose their own precision.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=precision)
    main = accelerator.is_main_process
    out = Path(cfg.out)
    if main:
        prepare_out(out, resume, overwrite)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)

    base = resolve_base_model(cfg.base_model)
    tokenizer = modeling.load_tokenizer(base)
    train_set, dev_set = load_splits(cfg)
    model = modeling.load_base_classifier(base, tokenizer)
    model = modeling.apply_method(model, cfg)
    trainable, total = modeling.count_parameters(model)
    if main:
        log.info(
            "%s: %d train / %d dev rows from %s",
            cfg.method,
            len(train_set),
            len(dev_set),
            cfg.data or "weibo_senti_100k",
        )
        log.info(modeling.describe_parameters(model))
        log.info("mixed precision: %s", precision)

    train_ids, _ = encode_cached(tokenizer, train_set.texts, cfg.max_length)
    dev_ids, _ = encode_cached(tokenizer, dev_set.texts, cfg.max_length)
    sampler = EpochBatchSampler(
        [len(x) for x in train_ids], cfg.batch_size, cfg.seed, group_by_length=cfg.group_by_length
    )
    collate = Collator(tokenizer.pad_token_id)
    train_loader = torch.utils.data.DataLoader(
        EncodedDataset(train_ids, train_set.labels),
        batch_sampler=sampler,
        collate_fn=collate,
        generator=torch.Generator(),  # else each epoch's iterator draws from the global RNG
    )
    by_len = sorted(range(len(dev_ids)), key=lambda i: len(dev_ids[i]))  # less padding
    dev_loader = torch.utils.data.DataLoader(
        EncodedDataset([dev_ids[i] for i in by_len], [dev_set.labels[i] for i in by_len]),
        batch_size=cfg.eval_batch_size,
        collate_fn=collate,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(sampler)  # global batches; Accelerate scales per process
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps
    )
    model, optimizer, train_loader, dev_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, dev_loader, scheduler
    )

    state = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "best_macro_f1": -1.0,
        "train_seconds": 0.0,
        "samples_seen": 0,
    }
    if resume:
        state = load_checkpoint(out / CHECKPOINT, accelerator, model, optimizer, scheduler)
        if main:
            log.info(
                "resuming %s at epoch %d, step %d", out, state["epoch"] + 1, state["global_step"]
            )
            trim_metrics(out / "metrics.jsonl", state["global_step"])
    elif main:
        tok_tmp = out / ".tokenizer.tmp"
        tokenizer.save_pretrained(str(tok_tmp))
        move_files_into(tok_tmp, out)
        write_text(
            out / "hyperparameters.yaml",
            yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True),
        )
        write_run_info(
            out,
            cfg,
            accelerator.unwrap_model(model).config,
            tokenizer,
            trainable_params=trainable,
            all_params=total,
            precision=precision,
            complete=False,
        )
        (out / "metrics.jsonl").unlink(missing_ok=True)

    steps_per_epoch = len(train_loader)
    for epoch in range(state["epoch"], cfg.epochs):
        model.train()
        skip = state["step_in_epoch"] if epoch == state["epoch"] else 0
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        sampler.set_epoch(epoch)
        sampler.skip = skip * accelerator.num_processes
        bar = progress(
            total=steps_per_epoch,
            initial=skip,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not main,
        )
        window, window_n, t0 = 0.0, 0, time.perf_counter()
        for batch in train_loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            state["samples_seen"] += len(batch["labels"]) * accelerator.num_processes
            window += loss.item()
            window_n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            step = state["global_step"]
            if main and step % cfg.logging_steps == 0:
                append_jsonl(
                    out / "metrics.jsonl",
                    {
                        "type": "train",
                        "step": step,
                        "epoch": round(epoch + state["step_in_epoch"] / steps_per_epoch, 4),
                        "loss": window / window_n,
                        "lr": scheduler.get_last_lr()[0],
                    },
                )
                window, window_n = 0.0, 0
            if cfg.save_steps and step % cfg.save_steps == 0:
                state["train_seconds"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                save_checkpoint(out / CHECKPOINT, accelerator, model, optimizer, scheduler, state)
            if on_step:
                on_step(step)
        bar.close()
        state["train_seconds"] += time.perf_counter() - t0
        dev = evaluate_loader(model, dev_loader, accelerator)
        state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        best = dev["macro_f1"] > state["best_macro_f1"]
        if main:
            append_jsonl(
                out / "metrics.jsonl",
                {
                    "type": "eval",
                    "step": state["global_step"],
                    "epoch": epoch + 1,
                    **{k: dev[k] for k in ("loss", "accuracy", "macro_f1")},
                },
            )
            log.info(
                "epoch %d/%d  dev loss %.4f  accuracy %.4f  macro-F1 %.4f  %.0fs%s",
                epoch + 1,
                cfg.epochs,
                dev["loss"],
                dev["accuracy"],
                dev["macro_f1"],
                state["train_seconds"],
                "  (best, saved)" if best else "",
            )
        if best:
            state["best_macro_f1"] = dev["macro_f1"]
            if main:
                save_best(accelerator.unwrap_model(model), cfg, out, dev, epoch + 1, state)
        save_checkpoint(out / CHECKPOINT, accelerator, model, optimizer, scheduler, state)

    accelerator.wait_for_everyone()
    if main:
        info = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        write_json(out / RUN_FILE, {**info, "complete": True})
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    if best:  # the model in memory is the one saved
        info = read_run_info(out)
        return SentimentClassifier(accelerator.unwrap_model(model), tokenizer, info, out)
    return SentimentClassifier.load(out, base_model=str(base))


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint: the resumed run writes them again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a line torn by the interruption
    write_text(path, "".join(kept))


def save_best(model, cfg: TrainConfig, out: Path, dev: dict, epoch: int, state: dict) -> None:
    """Weights first (file by file, each an atomic rename), then the results naming them."""
    tmp = out / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    modeling.save_weights(model, cfg.method, tmp, cfg.base_model)
    move_files_into(tmp, out)
    seconds = state["train_seconds"]
    write_json(
        out / "eval_results.json",
        {
            "epoch": epoch,
            "global_step": state["global_step"],
            "dev": dev,
            "train_seconds": round(seconds, 2),
            "train_samples_per_second": round(state["samples_seen"] / max(seconds, 1e-9), 2),
        },
    )


def evaluate_loader(model, loader, accelerator) -> dict:
    model.eval()
    logits, labels = [], []
    with torch.inference_mode():
        for batch in progress(loader, desc="dev", disable=not accelerator.is_main_process):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            lg, lb = accelerator.gather_for_metrics((out.logits.float(), batch["labels"]))
            logits.append(lg.cpu())
            labels.append(lb.cpu())
    model.train()
    probs = torch.cat(logits).softmax(-1).numpy()
    return classification_metrics(torch.cat(labels).numpy(), probs)


def save_checkpoint(folder: Path, accelerator, model, optimizer, scheduler, state) -> None:
    """Trainable weights (safetensors), optimizer/scheduler/RNG (plain tensors), state (JSON)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        unwrapped = accelerator.unwrap_model(model)
        weights = {
            n: p.detach().cpu().contiguous()
            for n, p in unwrapped.named_parameters()
            if p.requires_grad
        }
        save_file(weights, str(tmp / "trainable.safetensors"))
        extra = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "cpu_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            extra["cuda_rng"] = torch.cuda.get_rng_state_all()
        if accelerator.scaler is not None:
            extra["scaler"] = accelerator.scaler.state_dict()
        torch.save(extra, tmp / "optimizer.pt")
        write_json(tmp / "state.json", state)
        replace_dir(tmp, folder)
    accelerator.wait_for_everyone()


def load_checkpoint(folder: Path, accelerator, model, optimizer, scheduler) -> dict:
    weights = modeling.load_safetensors(folder / "trainable.safetensors")
    unwrapped = accelerator.unwrap_model(model)
    expected = {n for n, p in unwrapped.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        raise UserError(f"checkpoint in {folder} does not match this model and method")
    unwrapped.load_state_dict(weights, strict=False)
    try:  # weights_only: never unpickle arbitrary objects
        extra = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"corrupt checkpoint file {folder / 'optimizer.pt'}: {e}") from None
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["cpu_rng"])
    if "cuda_rng" in extra and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(extra["cuda_rng"])
    if "scaler" in extra and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(extra["scaler"])
    return modeling.read_json(folder / "state.json")
