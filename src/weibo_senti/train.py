"""Fine-tuning on Accelerate: ``setup`` → ``fit`` (epochs of steps, ``validate`` each) → ``finish``.

The same code runs in one process or under ``torchrun``/``accelerate launch``: each global
batch of ``batch_size`` posts is shared out between the processes (``EpochBatchSampler``), so
the steps, schedule and results do not depend on how many processes there are. Checkpoints are
Accelerate's ``save_state`` (trainable weights only, optimizer, scheduler, every process's RNG)
plus our progress file, in JSON rather than ``register_for_checkpointing``, which Accelerate
loads with ``weights_only=False`` (a pickle in a folder could run code). A resumed epoch skips
the batches already trained on with Accelerate's ``skip_first_batches``. Resume is bit-exact.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import inference, modeling, runfolder
from . import labels as label_sets
from .config import TrainConfig
from .data import Examples, join, read_labelled, split_dev, strip_emoticons
from .errors import UserError, is_disk_full
from .features import Collator, EncodedDataset, EpochBatchSampler, encode_cached
from .hub import default_data, resolve_base_model
from .metrics import classification_metrics
from .progress import progress
from .runfolder import RunInfo

log = logging.getLogger("weibo_senti")


@dataclass
class Progress:
    """Where training stands; saved with every checkpoint."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0
    global_step: int = 0
    best_macro_f1: float = -1.0
    train_seconds: float = 0.0
    samples_seen: int = 0
    loss_window: list[float] = field(default_factory=list)  # losses since the last log line


@dataclass
class Setup:
    cfg: TrainConfig
    out: Path
    accelerator: object
    model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    sampler: EpochBatchSampler
    train_loader: object
    dev_loader: object
    base: Path
    dev_set: Examples
    class_weight: torch.Tensor | None = None  # --class-weights balanced

    @property
    def labels(self) -> list[str]:
        return self.dev_set.names

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def train(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[int], None] | None = None,
):
    """Train ``cfg.method`` into the run folder ``cfg.out``; returns the classifier.

    With ``resume``, continues the run in ``cfg.out`` (a finished run is returned as it is).
    The caller's random generators are left as they were.
    """
    with preserved_rng():
        if resume and runfolder.is_complete(Path(cfg.out)):
            log.info("%s has finished training; nothing to resume", cfg.out)
            runfolder.drop_checkpoint(Path(cfg.out))  # killed after finishing, before cleaning
            from .predict import SentimentClassifier

            return SentimentClassifier.load(cfg.out, precision="fp32", merge=False)
        out = Path(cfg.out)
        if resume and not out.is_dir():
            raise UserError(f"{out} does not exist; nothing to resume")
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} is a file; choose another --out")
        created = not out.exists()
        lock = runfolder.lock_run(out) if is_main_process() else None
        try:
            try:
                s = setup(cfg, resume, overwrite)
            except BaseException:
                if created and lock is not None:  # a train that cannot start leaves nothing
                    shutil.rmtree(out, ignore_errors=True)
                raise
            try:
                state = restore(s) if resume else begin(s)
                fit(s, state, on_step)
                return finish(s)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                if s.main:
                    runfolder.drop_staging(out)
                raise UserError(
                    f"disk full while writing {out}; the last checkpoint is intact: free some "
                    f"space, then continue with: weibo-senti train --resume --out {out}"
                ) from None
        finally:
            if lock is not None:
                lock.release()


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or the only process): the folder's writer."""
    import os

    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def preserved_rng():
    """Training seeds Python's, NumPy's and torch's generators; put the caller's back after."""
    import numpy as np

    saved = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        try:
            yield
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


def load_splits(cfg: TrainConfig, labels: list[str] | None = None) -> tuple[Examples, Examples]:
    """Training and dev rows; their label names come from ``labels`` (a resumed run's),
    ``--labels``, or the (first) training file. With several --data files the dev split and
    --max-train-samples take from the first only: later files (e.g. the posts you labelled)
    train whole."""
    kw = dict(text_column=cfg.text_column, label_column=cfg.label_column, encoding=cfg.encoding)
    kw["label_map"] = cfg.label_map
    files = cfg.data or [str(default_data())]
    first = read_labelled(files[0], labels=labels or cfg.labels, **kw)
    rest = read_later_files(files[1:], first.names, bool(labels or cfg.labels), kw)
    check_trainable(join([first, *rest]), "training")
    if cfg.dev_data:
        where = "the training labels" if not cfg.labels else "--labels"
        dev_set = read_labelled(cfg.dev_data, labels=first.names, labels_from=where, **kw)
    else:
        first, dev_set = split_dev(first, cfg.dev_fraction, cfg.seed)
    first = sample_rows(first, cfg.max_train_samples, cfg.seed)
    train_set = join([first, *rest], cfg.data_weights)
    if rest:
        log.info(
            "training rows per file: %s", ", ".join(f"{p.source} {len(p)}" for p in [first, *rest])
        )
    check_trainable(train_set, "training")
    return train_set, dev_set


def read_later_files(files: list[str], names: list[str], named: bool, kw: dict) -> list:
    """Files after the first, read with its label set; each detects its own encoding and,
    without the text column, reads its review/text/content column (`select`'s output)."""
    where = "--labels" if named else "the labels of the first --data file"
    kw = {**kw, "labels": names, "labels_from": where, "any_text_column": True, "encoding": None}
    return [read_labelled(f, **kw) for f in files]


def sample_rows(examples: Examples, n: int | None, seed: int) -> Examples:
    """--max-train-samples: a seeded sample of ``n`` rows, in file order."""
    if n and n > len(examples):
        raise UserError(
            f"--max-train-samples {n} is more than the {len(examples)} training rows of "
            f"{examples.source}: give at most {len(examples)}, or leave it out"
        )
    if n and n < len(examples):
        examples = examples.subset(sorted(random.Random(seed).sample(range(len(examples)), n)))
    return examples


MIN_TRAIN_ROWS = 10


def check_trainable(examples: Examples, role: str) -> None:
    """Refuse, before any training, data a classifier cannot learn from."""
    if len(examples) < MIN_TRAIN_ROWS:
        raise UserError(
            f"{examples.source}: {len(examples)} {role} rows are too few to train on "
            f"(at least {MIN_TRAIN_ROWS})"
        )
    counts = Counter(examples.labels)
    if len(examples.names) < 2:  # one value in the file: one class known
        raise UserError(
            f"{examples.source}: all {len(examples)} {role} rows are label "
            f"{examples.names[examples.labels[0]]}; a classifier needs at least two labels"
        )
    missing = [name for i, name in enumerate(examples.names) if not counts.get(i)]
    if missing:
        present = ", ".join(f"{examples.names[c]} ({n})" for c, n in sorted(counts.items()))
        raise UserError(
            f"{examples.source}: no {role} rows are label {', '.join(missing)} (the rows are "
            f"{present}); a classifier needs rows of every label: drop it from --labels or "
            "add rows"
        )


def class_weights(cfg: TrainConfig, examples: Examples) -> torch.Tensor | None:
    """``balanced``: each class weighs n / (classes × its rows), as scikit-learn's."""
    if cfg.class_weights == "none":
        return None
    counts = Counter(examples.labels)
    k, n = len(examples.names), len(examples)
    return torch.tensor([n / (k * counts[i]) for i in range(k)], dtype=torch.float32)


# ---------------------------------------------------------------------------- setup
def make_accelerator(precision: str):
    """An Accelerator for ``precision`` (auto | fp32 | bf16 | fp16); pretraining's too."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    asked = precision
    if precision == "fp16" and not torch.cuda.is_available():
        raise UserError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 or no")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # auto: bf16 where the hardware is fast at it (it kept accuracy, README), else fp32
    precision = precision if precision != "auto" else inference.resolve("auto", device)
    precision = {"fp32": "no"}.get(precision, precision)  # Accelerate's name for fp32
    try:
        return Accelerator(
            # cpu=True makes Accelerate run several CPU processes (torchrun) as one job (gloo)
            cpu=device.type == "cpu" and not torch.backends.mps.is_available(),
            mixed_precision=precision,
            # The scheduler steps once per global batch; the dev batches are split too.
            dataloader_config=DataLoaderConfiguration(split_batches=True),
        )
    except ValueError:  # Accelerate holds one precision per process
        raise UserError(
            f"cannot train with precision {asked} here: this process already trained "
            "with another one, and Accelerate keeps one per process; start a new process"
        ) from None


def enable_checkpointing(model) -> None:
    """transformers' gradient checkpointing, non-reentrant: frozen inputs (LoRA, adapters) need
    no input-gradient hook, and dropout is replayed from the saved RNG state."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def cpu_training_speedups(model, cfg: TrainConfig, accelerator) -> None:
    """On a CPU: dropout masks drawn four per random number, eager attention while training, and
    under bf16 LoRA inputs left in bf16 and the frozen base's weights kept in bf16 (one process
    only: gloo's broadcast of bf16 tensors is unchecked)."""
    if accelerator.device.type != "cpu":
        return
    modeling.fast_dropout(model)
    modeling.eager_attention_while_training(model)
    if accelerator.mixed_precision != "bf16":
        return
    modeling.lora_inputs_in_autocast_dtype(model)
    if cfg.method in ("lora", "adapter") and accelerator.num_processes == 1:
        modeling.frozen_weights_in_bf16(model)


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, fused: one kernel for all of them instead of a loop
    of small ops per tensor."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def setup(cfg: TrainConfig, resume: bool, overwrite: bool) -> Setup:
    from accelerate.utils import set_seed

    out = Path(cfg.out)
    if not resume:
        runfolder.check_new(out, overwrite)
    base, labels = find_base(cfg, out, resume)
    tokenizer = runfolder.load_tokenizer(base, max_length=cfg.max_length)
    train_set, dev_set = load_splits(cfg, labels)
    accelerator = make_accelerator(cfg.precision)  # what the user must fix is said before this
    set_seed(cfg.seed)
    base_model = modeling.load_base_classifier(base, tokenizer, train_set.names)  # gelu fused
    if cfg.gradient_checkpointing:
        enable_checkpointing(base_model)
    model = modeling.apply_method(base_model, cfg)
    cpu_training_speedups(model, cfg, accelerator)
    if accelerator.is_main_process and not resume:  # base and data found: now the folder
        runfolder.prepare_new(out, overwrite)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        log_setup(cfg, model, train_set, dev_set, accelerator)
    check_process_split(cfg, accelerator.num_processes, len(train_set))
    sampler, train_loader, dev_loader = build_loaders(
        cfg, tokenizer, train_set, dev_set, accelerator
    )
    optimizer = make_optimizer(model, cfg)
    from transformers import get_linear_schedule_with_warmup

    total_steps = cfg.epochs * len(sampler)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    # The training loader is ours (each process takes its share of every global batch);
    # Accelerate prepares the rest.
    model, optimizer, dev_loader, scheduler = accelerator.prepare(
        model, optimizer, dev_loader, scheduler
    )
    weight = class_weights(cfg, train_set)
    s = Setup(
        cfg, out, accelerator, model, tokenizer, optimizer, scheduler, sampler,
        train_loader, dev_loader, base, dev_set,
        None if weight is None else weight.to(accelerator.device),
    )  # fmt: skip
    register_checkpoint_hooks(accelerator)
    return s


def find_base(cfg: TrainConfig, out: Path, resume: bool) -> tuple[Path, list[str] | None]:
    """(base folder, label names): a resumed run's recorded base, found from any working
    directory unless another is given, and its own labels; else the configured base."""
    if not resume:
        return resolve_base_model(cfg.base_model), None
    info = runfolder.read_info(out)
    override = cfg.base_model if cfg.base_model != info.base.name else None
    return runfolder.resolve_base(out, info, override), info.labels


def log_setup(cfg: TrainConfig, model, train_set: Examples, dev_set: Examples, acc) -> None:
    source = train_set.source if cfg.data else "weibo_senti_100k"
    log.info("%s: %d train / %d dev rows from %s", cfg.method, len(train_set), len(dev_set), source)
    if cfg.data_weights:
        log.info("loss weight per file: %s", ", ".join(f"{w:g}" for w in cfg.data_weights))
    counts = Counter(train_set.labels)
    shown = ", ".join(f"{name} {counts[i]}" for i, name in enumerate(train_set.names))
    log.info("%d labels (training rows): %s", len(train_set.names), shown)
    log.info(modeling.describe_parameters(model))
    log.info("mixed precision: %s, processes: %d", acc.mixed_precision, acc.num_processes)


def check_process_split(cfg: TrainConfig, processes: int, rows: int) -> None:
    for name in ("batch_size", "eval_batch_size"):
        if getattr(cfg, name) % processes:
            raise UserError(
                f"--{name.replace('_', '-')} {getattr(cfg, name)} cannot be split evenly "
                f"between {processes} processes: choose a multiple of {processes}"
            )
    if rows < processes:
        raise UserError(f"{rows} training rows are too few for {processes} processes")


def build_loaders(cfg: TrainConfig, tokenizer, train_set: Examples, dev_set: Examples, acc):
    train_ids, _ = encode_cached(tokenizer, train_set.texts)
    dev_ids, _ = encode_cached(tokenizer, dev_set.texts)
    stripped = None
    if cfg.emoticon_dropout:  # a post of emoticons only is never emptied: it stays as it is
        texts = [strip_emoticons(t).strip() or t for t in train_set.texts]
        stripped, _ = encode_cached(tokenizer, texts)
    sampler = EpochBatchSampler(
        [len(x) for x in train_ids],
        cfg.batch_size,
        cfg.seed,
        group_by_length=cfg.group_by_length,
        num_processes=acc.num_processes,
        process_index=acc.process_index,
    )
    collate = Collator(tokenizer.pad_token_id)
    train_loader = torch.utils.data.DataLoader(
        EncodedDataset(
            train_ids,
            train_set.labels,
            stripped,
            cfg.emoticon_dropout,
            cfg.seed,
            train_set.weights,
        ),  # fmt: skip
        batch_sampler=sampler,
        collate_fn=collate,
        generator=torch.Generator(),  # else each new iterator draws from the global RNG
    )
    by_len = sorted(range(len(dev_ids)), key=lambda i: len(dev_ids[i]))  # less padding
    dev_loader = torch.utils.data.DataLoader(
        EncodedDataset([dev_ids[i] for i in by_len], [dev_set.labels[i] for i in by_len]),
        batch_size=cfg.eval_batch_size,
        collate_fn=collate,
        generator=torch.Generator(),
    )
    return sampler, train_loader, dev_loader


def register_checkpoint_hooks(accelerator) -> None:
    """Checkpoints hold the trainable weights only (a LoRA checkpoint is megabytes, not the base)."""

    def trainable(model) -> set[str]:
        return {n for n, p in model.named_parameters() if p.requires_grad}

    def keep_trainable(models, weights, _dir):
        for i, model in enumerate(models):
            keep = trainable(model)
            weights[i] = {k: v for k, v in weights[i].items() if k in keep}

    def check_matches(models, input_dir):
        if runfolder.checkpoint_weight_names(Path(input_dir)) != trainable(models[0]):
            raise UserError(f"checkpoint in {input_dir} does not match this model and method")

    accelerator.register_save_state_pre_hook(keep_trainable)
    accelerator.register_load_state_pre_hook(check_matches)


# ---------------------------------------------------------------------------- start or resume
def begin(s: Setup) -> Progress:
    if s.main:
        trainable, total = modeling.count_parameters(s.model)
        info = RunInfo(
            method=s.cfg.method,
            base=runfolder.base_ref(
                s.cfg.base_model, s.base, s.accelerator.unwrap_model(s.model).config
            ),
            max_length=s.cfg.max_length,
            pad_token_id=s.tokenizer.pad_token_id,
            text_column=s.cfg.text_column,
            precision=s.accelerator.mixed_precision,
            trainable_params=trainable,
            all_params=total,
            labels=list(s.labels),
            labels_zh=label_sets.chinese(s.labels),
        )
        hyperparameters = s.cfg.to_dict()
        # absolute: --resume works from any directory
        if hyperparameters["data"]:
            hyperparameters["data"] = [str(Path(f).resolve()) for f in hyperparameters["data"]]
        if hyperparameters["dev_data"]:
            hyperparameters["dev_data"] = str(Path(hyperparameters["dev_data"]).resolve())
        runfolder.start_run(s.out, info, s.tokenizer, hyperparameters)
    s.accelerator.wait_for_everyone()
    return Progress()


def restore(s: Setup) -> Progress:
    state = Progress(**read_checkpoint(s.accelerator, s.out))
    if s.main:
        log.info("resuming %s at epoch %d, step %d", s.out, state.epoch + 1, state.global_step)
        runfolder.trim_metrics(s.out, state.global_step, state.epoch)
    return state


def read_checkpoint(accelerator, out: Path) -> dict:
    """Load the last checkpoint into the prepared objects; its progress (pretraining's too)."""
    if accelerator.is_main_process:  # a kill in the middle of a checkpoint swap: one repairs it
        runfolder.recover_checkpoint(out)
    accelerator.wait_for_everyone()
    folder, saved = runfolder.open_checkpoint(out)
    try:
        accelerator.load_state(str(folder), strict=False)  # trainable weights only: checked
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"corrupt checkpoint in {folder}: {type(e).__name__}: {e}") from None
    return saved


def save_checkpoint(s: Setup, state: Progress) -> None:
    write_checkpoint(s.accelerator, s.out, asdict(state))


def write_checkpoint(accelerator, out: Path, progress: dict) -> None:
    """Accelerate's state, then our progress, swapped in whole (pretraining's too)."""
    staging = runfolder.checkpoint_staging(out)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()  # every process's RNG state is written
    if accelerator.is_main_process:
        runfolder.commit_checkpoint(out, staging, progress)
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------- fit
def fit(s: Setup, state: Progress, on_step: Callable[[int], None] | None) -> None:
    for epoch in range(state.epoch, s.cfg.epochs):
        train_epoch(s, state, epoch, on_step)
        dev = validate(s.model, s.dev_loader, s.accelerator, s.labels)
        state.epoch, state.step_in_epoch = epoch + 1, 0
        best = dev["macro_f1"] > state.best_macro_f1
        if best:
            state.best_macro_f1 = dev["macro_f1"]
        if s.main:
            log_epoch(s, state, dev, best)
            if best:
                results = {
                    "epoch": epoch + 1,
                    "global_step": state.global_step,
                    "dev": dev,
                    "train_seconds": round(state.train_seconds, 2),
                    "train_samples_per_second": round(
                        state.samples_seen / max(state.train_seconds, 1e-9), 2
                    ),
                }
                model = s.accelerator.unwrap_model(s.model)
                base_name = runfolder.portable_base_name(s.cfg.base_model)
                runfolder.save_best(s.out, model, s.cfg.method, base_name, results)
        save_checkpoint(s, state)


def train_epoch(s: Setup, state: Progress, epoch: int, on_step) -> None:
    from accelerate import skip_first_batches

    cfg = s.cfg
    s.model.train()
    s.sampler.set_epoch(epoch)  # the order, and which posts lose their emoticons,
    s.train_loader.dataset.set_epoch(epoch)  # depend on (seed, epoch) only
    skip = state.step_in_epoch
    loader = skip_first_batches(s.train_loader, skip) if skip else s.train_loader
    bar = progress(
        total=len(s.sampler),
        initial=skip,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not s.main,
    )
    window, t0 = state.loss_window, time.perf_counter()
    for batch in loader:
        loss, posts = train_step(s, batch)
        state.global_step += 1
        state.step_in_epoch += 1
        state.samples_seen += posts
        window.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if s.main and state.global_step % cfg.logging_steps == 0:
            runfolder.append_metrics(
                s.out,
                {
                    "type": "train",
                    "step": state.global_step,
                    "epoch": round(epoch + state.step_in_epoch / len(s.sampler), 4),
                    "loss": sum(window) / len(window),
                    "lr": s.scheduler.get_last_lr()[0],
                },
            )
            window.clear()
        if cfg.save_steps and state.global_step % cfg.save_steps == 0:
            state.train_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save_checkpoint(s, state)
        if on_step:
            on_step(state.global_step)
    bar.close()
    state.train_seconds += time.perf_counter() - t0


def train_step(s: Setup, batch: dict) -> tuple[float, int]:
    """One optimizer step on this process's share of a global batch; (mean loss, posts)."""
    acc = s.accelerator
    batch = {k: v.to(acc.device) for k, v in batch.items()}
    posts = acc.reduce(torch.tensor(len(batch["labels"]), device=acc.device), "sum")
    data_weight = batch.pop("weights", None)  # --data-weights
    # Processes' gradients are averaged: weigh each share by its weight (its size, or its
    # weights' sum: each share's loss is its weighted mean), so the step is the global
    # batch's weighted mean loss even when the shares differ (1.0 exactly in one process).
    local = torch.ones(len(batch["labels"]), device=acc.device)
    if data_weight is not None:
        local = local * data_weight
    if s.class_weight is not None:
        local = local * s.class_weight[batch["labels"]]
    local = local.sum()
    total = acc.reduce(local.clone(), "sum")
    loss = step_loss(s.model, batch, s.cfg.label_smoothing, s.class_weight, data_weight)
    loss = loss * (local * acc.num_processes / total)
    return optimizer_step(s, loss), int(posts)


def optimizer_step(s, loss: torch.Tensor) -> float:
    """Backward, clip, step the optimizer and the schedule (pretraining's too); the loss
    averaged over processes."""
    s.accelerator.backward(loss)
    if s.cfg.max_grad_norm:
        s.accelerator.clip_grad_norm_(s.model.parameters(), s.cfg.max_grad_norm)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return s.accelerator.reduce(loss.detach(), "mean").item()


def step_loss(
    model,
    batch: dict,
    label_smoothing: float,
    weight: torch.Tensor | None = None,
    data_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The batch's mean loss, weighted by class (``weight``) and, with --data-weights, by row
    (``data_weight``)."""
    if not label_smoothing and weight is None and data_weight is None:
        return model(**batch).loss
    labels = batch.pop("labels")
    logits = model(**batch).logits.float()
    if data_weight is None:
        return torch.nn.functional.cross_entropy(
            logits, labels, weight=weight, label_smoothing=label_smoothing
        )
    return rows_weighted_loss(logits, labels, label_smoothing, weight, data_weight)


def rows_weighted_loss(logits, labels, label_smoothing: float, weight, data_weight):
    """PyTorch's class-weighted, label-smoothed cross-entropy with each row weighted as well
    (written out: ``cross_entropy`` weighs classes only); rows of weight 1 give it exactly."""
    k = logits.shape[-1]
    logp = logits.log_softmax(-1)
    cw = weight if weight is not None else torch.ones(k, device=logits.device)
    nll = -logp.gather(1, labels[:, None]).squeeze(1) * cw[labels]
    smooth = -(logp * cw).sum(-1) / k
    rows = (1 - label_smoothing) * nll + label_smoothing * smooth
    return (rows * data_weight).sum() / (data_weight * cw[labels]).sum()


def validate(model, loader, accelerator, labels: list[str]) -> dict:
    model.eval()
    logits, gold = [], []
    with torch.inference_mode():
        for batch in progress(loader, desc="dev", disable=not accelerator.is_main_process):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            lg, lb = accelerator.gather_for_metrics((out.logits.float(), batch["labels"]))
            logits.append(lg.cpu())
            gold.append(lb.cpu())
    model.train()
    probs = torch.cat(logits).softmax(-1).numpy()
    return classification_metrics(torch.cat(gold).numpy(), probs, labels)


def log_epoch(s: Setup, state: Progress, dev: dict, best: bool) -> None:
    runfolder.append_metrics(
        s.out,
        {
            "type": "eval",
            "step": state.global_step,
            "epoch": state.epoch,
            **{k: dev[k] for k in ("loss", "accuracy", "macro_f1")},
        },
    )
    log.info(
        "epoch %d/%d  dev loss %.4f  accuracy %.4f  macro-F1 %.4f  %.0fs%s",
        state.epoch,
        s.cfg.epochs,
        dev["loss"],
        dev["accuracy"],
        dev["macro_f1"],
        state.train_seconds,
        "  (best, saved)" if best else "",
    )


def finish(s: Setup):
    from .predict import SentimentClassifier

    s.accelerator.wait_for_everyone()
    if s.main:
        from .calibrate import calibrate

        calibrate(s.out, s.dev_set, str(s.base))
        runfolder.finish(s.out)
    s.accelerator.wait_for_everyone()
    s.accelerator.free_memory()  # the next train() in this process starts clean
    return SentimentClassifier.load(s.out, str(s.base), precision="fp32", merge=False)
