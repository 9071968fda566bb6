"""Continued (domain-adaptive) pretraining of a GPT-2 base on unlabelled posts:
``setup`` → ``fit`` → ``finish``, on Accelerate as fine-tuning is.

Posts are streamed from any input bulk scoring reads (files, folders, globs; CSV/TSV/JSONL/TXT/
Parquet), each encoded as fine-tuning sees it (``[CLS] post [SEP]``: the separator between
posts) and packed into blocks of ``block_size`` tokens. Memory stays bounded: the crawl is
streamed once to count the blocks (the schedule needs their number), once to collect the
held-out ones, and once per epoch through a seeded shuffle buffer (tokenizing is cheap next to
training). A seeded sample of blocks is held out for perplexity, before
and after. Checkpoints are Accelerate's ``save_state`` plus our progress; ``--resume`` streams
the crawl again and skips the global batches already trained on, so it is bit-exact.

The output folder is a base in uer's layout (config.json, model.safetensors, the base's own
tokenizer files) that ``train --base-model`` and every stock client load, and ``pretrain.json``
records where it came from: the base, the data, the tokens seen and both perplexities.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import runfolder
from .config import PretrainConfig
from .data import strip_emoticons
from .errors import UserError, is_disk_full
from .files import move_files_into, write_json, write_text
from .hub import resolve_base_model
from .progress import progress

log = logging.getLogger("weibo_senti")

RECORD = "pretrain.json"  # written last: its presence marks a finished base
SETTINGS = "pretrain.yaml"  # the options, for --resume
STAGING = ".base.tmp"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json")
TOKENIZER_FILES += ("special_tokens_map.json", "added_tokens.json")
SHUFFLE_BLOCKS = 4096  # the shuffle buffer: 4096 blocks of 128 ids, about 20 MB as lists
POSTS_PER_ENCODE = 512


# ---------------------------------------------------------------------------- the crawl
@dataclass
class Crawl:
    """The posts of every input, streamed in a fixed order and packed into blocks."""

    shards: list
    tokenizer: object
    block_size: int
    drop_emoticons: bool = False
    skipped: Counter = field(default_factory=Counter)  # of the last pass: reason -> rows

    def posts(self) -> Iterator[str]:
        from .bulk import text_of

        self.skipped.clear()
        for shard in self.shards:
            for rec in shard.iter_rows():
                text = text_of(rec.values.get(shard.text_column)).strip()
                if text and self.drop_emoticons:
                    text = strip_emoticons(text).strip()
                if text:
                    yield text
                else:
                    self.skipped["unparsable" if rec.unparsable else "without text"] += 1

    def stamp(self) -> list:
        """Each input's path, size and modification time: a resume needs the same crawl."""
        from .bulk import file_stamp

        return [[str(s.path.resolve()), *file_stamp(s.path)] for s in self.shards]

    def blocks(self) -> Iterator[list[int]]:
        """Blocks of ``block_size`` ids in reading order; a last part-filled one is dropped."""
        buffer: list[int] = []
        for texts in _chunks(self.posts(), POSTS_PER_ENCODE):
            for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]:
                buffer.extend(ids)
            while len(buffer) >= self.block_size:
                yield buffer[: self.block_size]
                del buffer[: self.block_size]


def _chunks(items, n: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def open_crawl(cfg: PretrainConfig, tokenizer) -> Crawl:
    """Every input found and scanned (columns, rows) before anything trains."""
    from .bulk import find_shards, scan_shards

    paths = [p for spec in cfg.data for p in find_shards(spec)]
    shards = scan_shards(paths, cfg.encoding, cfg.text_column, lambda columns, source: None)
    return Crawl(shards, tokenizer, cfg.block_size, cfg.drop_emoticons)


@dataclass
class Plan:
    """How the crawl divides: blocks, the held-out ones, steps."""

    blocks: int
    held_out: list[int]  # block indices in reading order
    steps_per_epoch: int
    total_steps: int


def plan(crawl: Crawl, cfg: PretrainConfig) -> Plan:
    sources = ", ".join(cfg.data)
    n = sum(1 for _ in progress(crawl.blocks(), desc="counting blocks", unit="block"))
    if crawl.skipped:
        shown = ", ".join(f"{rows:,} {why}" for why, rows in sorted(crawl.skipped.items()))
        log.warning("%s: rows skipped: %s", sources, shown)
    if n == 0:
        raise UserError(
            f"{sources}: no text to pretrain on (not one block of {cfg.block_size} tokens)"
        )
    k = min(cfg.held_out_blocks, max(1, n // 20))
    steps = (n - k) // cfg.batch_size
    if steps == 0:
        raise UserError(
            f"{sources}: {n - k} training blocks of {cfg.block_size} tokens are fewer than "
            f"--batch-size {cfg.batch_size}: give more text or a smaller --batch-size"
        )
    total = cfg.epochs * steps
    if cfg.max_tokens:
        total = min(total, math.ceil(cfg.max_tokens / (cfg.batch_size * cfg.block_size)))
    held = sorted(random.Random(cfg.seed).sample(range(n), k))
    return Plan(n, held, steps, total)


def held_out_blocks(crawl: Crawl, held: list[int]) -> torch.Tensor:
    wanted = set(held)
    return torch.tensor([b for i, b in enumerate(crawl.blocks()) if i in wanted])


def training_batches(crawl: Crawl, p: Plan, cfg: PretrainConfig, epoch: int) -> Iterator[list]:
    """This epoch's global batches: the blocks not held out, through a shuffle buffer seeded
    by (seed, epoch), so every process and every resume sees the same ones."""
    rng, held = random.Random(f"{cfg.seed}/{epoch}"), set(p.held_out)
    pool: list[list[int]] = []
    batch: list[list[int]] = []
    for i, block in enumerate(crawl.blocks()):
        if i in held:
            continue
        pool.append(block)
        if len(pool) < SHUFFLE_BLOCKS:
            continue
        batch.append(pool.pop(rng.randrange(len(pool))))
        if len(batch) == cfg.batch_size:
            yield batch
            batch = []
    rng.shuffle(pool)
    for block in pool:
        batch.append(block)
        if len(batch) == cfg.batch_size:
            yield batch
            batch = []


# ---------------------------------------------------------------------------- setup
@dataclass
class Progress:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    perplexity_before: float | None = None
    loss_window: list[float] = field(default_factory=list)
    crawl: list = field(default_factory=list)  # Crawl.stamp(): what a resume must find again
    blocks: int = 0


@dataclass
class Setup:
    cfg: PretrainConfig
    out: Path
    base: Path
    accelerator: object
    model: torch.nn.Module
    optimizer: object
    scheduler: object
    crawl: Crawl
    plan: Plan
    held_out: torch.Tensor

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def load_causal_lm(base: Path, block_size: int):
    """The base as a GPT-2 causal LM; anything else, or blocks past its positions, refused."""
    from transformers import AutoConfig, GPT2LMHeadModel

    runfolder.refuse_custom_code(base)
    try:
        config = AutoConfig.from_pretrained(str(base), trust_remote_code=False)
    except Exception as e:
        raise UserError(f"cannot read {base}/config.json: {e}") from None
    if config.model_type != "gpt2":
        raise UserError(
            f"{base} is a {config.model_type} model, not a GPT-2 causal LM: pretrain continues "
            "GPT-2 bases (e.g. uer/gpt2-chinese-cluecorpussmall)"
        )
    if block_size > config.n_positions:
        raise UserError(
            f"--block-size {block_size} is beyond the {config.n_positions} positions of {base}: "
            f"give at most {config.n_positions}"
        )
    return GPT2LMHeadModel.from_pretrained(str(base), config=config, trust_remote_code=False)


def with_method(model, cfg: PretrainConfig):
    if cfg.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,  # GPT-2's Conv1D stores weights transposed
    )
    return get_peft_model(model, lora)


def setup(cfg: PretrainConfig) -> Setup:
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    from .modeling import check_vocabulary
    from .train import make_accelerator, register_checkpoint_hooks

    base = resolve_base_model(cfg.base_model)
    out = Path(cfg.out).resolve()
    if out == base.resolve() or out in base.resolve().parents:
        raise UserError(f"--out {cfg.out} holds the base itself: write the new base elsewhere")
    model = load_causal_lm(base, cfg.block_size)
    # posts are packed, never cut: the length rule only keeps tokenizers from warning
    tokenizer = runfolder.load_tokenizer(base, max_length=model.config.n_positions)
    check_vocabulary(tokenizer, model.config)
    crawl = open_crawl(cfg, tokenizer)
    p = plan(crawl, cfg)
    accelerator = make_accelerator(cfg.precision)
    if cfg.batch_size % accelerator.num_processes:
        raise UserError(
            f"--batch-size {cfg.batch_size} cannot be split evenly between "
            f"{accelerator.num_processes} processes"
        )
    set_seed(cfg.seed)
    model = with_method(model, cfg)
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * p.total_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, p.total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    held = held_out_blocks(crawl, p.held_out)
    s = Setup(cfg, out, base, accelerator, model, optimizer, scheduler, crawl, p, held)
    register_checkpoint_hooks(accelerator)  # a LoRA checkpoint holds LoRA's weights, not the base's
    return s


# ---------------------------------------------------------------------------- run
def pretrain(
    cfg: PretrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Continue pretraining ``cfg.base_model`` on ``cfg.data`` into the base folder
    ``cfg.out``; returns its record. With ``resume``, continues an interrupted one."""
    from .train import is_main_process, preserved_rng

    out = Path(cfg.out)
    if is_main_process():  # the others would see what it has begun to write
        check_out(out, resume, overwrite)
    created = not out.exists()
    lock = runfolder.lock_run(out) if is_main_process() else None
    try:
        with preserved_rng():
            try:
                s = setup(cfg)
            except BaseException:
                if created and lock is not None:  # a pretraining that cannot start leaves nothing
                    shutil.rmtree(out, ignore_errors=True)
                raise
            state = restore(s) if resume else begin(s)
            try:
                fit(s, state, on_step)
                return finish(s, state)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                if s.main:
                    runfolder.drop_staging(out)
                    shutil.rmtree(out / STAGING, ignore_errors=True)
                raise UserError(
                    f"disk full while writing {out}: free some space, then {how_to_continue(out)}"
                ) from None
    finally:
        if lock is not None:
            lock.release()


def how_to_continue(out: Path) -> str:
    """What to run after an interruption: --resume from the last checkpoint, if there is one."""
    if (out / runfolder.CHECKPOINT / runfolder.CHECKPOINT_STATE).is_file():
        return f"continue from the last checkpoint with: weibo-senti pretrain --resume --out {out}"
    return "no checkpoint was written yet: start again with the same command and --overwrite"


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """A new or empty folder, or (``overwrite``) one of ours; ``resume``: an unfinished one."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose another --out")
    entries = {p.name for p in out.iterdir()} - {runfolder.LOCK} if out.is_dir() else set()
    ours = SETTINGS in entries or RECORD in entries
    if resume:
        if not (out / SETTINGS).is_file():
            raise UserError(f"{out} holds no pretraining to resume")
        if (out / RECORD).is_file():
            raise UserError(f"{out} has finished pretraining; nothing to resume")
        return
    if entries and not ours:
        raise UserError(f"{out} holds other files; --out must be a new folder: choose another")
    if entries and not overwrite and RECORD not in entries:
        raise UserError(f"{out} holds an unfinished pretraining: {how_to_continue(out)}")
    if entries and not overwrite:
        raise UserError(
            f"{out} already holds a pretrained base: pass --overwrite to replace it, or choose "
            "another --out"
        )


def begin(s: Setup) -> Progress:
    import yaml

    state = Progress(perplexity_before=perplexity(s), crawl=s.crawl.stamp(), blocks=s.plan.blocks)
    if s.main:
        for entry in s.out.iterdir():  # a folder of ours given with --overwrite, emptied
            if entry.name != runfolder.LOCK:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        settings = yaml.safe_dump(portable(s.cfg), sort_keys=False, allow_unicode=True)
        write_text(s.out / SETTINGS, settings)
        log.info(
            "pretraining %s (%s): %d blocks of %d tokens, %d held out; %d steps; "
            "perplexity before %.2f",
            s.base, s.cfg.method, s.plan.blocks, s.cfg.block_size, len(s.plan.held_out),
            s.plan.total_steps, state.perplexity_before,
        )  # fmt: skip
    s.accelerator.wait_for_everyone()
    return state


def restore(s: Setup) -> Progress:
    from .train import read_checkpoint

    state = Progress(**read_checkpoint(s.accelerator, s.out))
    if state.crawl != s.crawl.stamp() or state.blocks != s.plan.blocks:
        raise UserError(
            f"the crawl has changed since {s.out} was begun (files added, removed or "
            "modified): a resume must read the same posts; start again with --overwrite"
        )
    if s.main:
        log.info("resuming %s at step %d of %d", s.out, state.global_step, s.plan.total_steps)
        runfolder.trim_metrics(s.out, state.global_step, state.epoch)
    return state


def portable(cfg: PretrainConfig) -> dict:
    """The options with absolute paths: --resume works from any directory."""
    values = cfg.model_dump()
    values["data"] = [os.path.abspath(spec) for spec in cfg.data]  # globs stay globs
    if Path(cfg.base_model).expanduser().exists():
        values["base_model"] = str(Path(cfg.base_model).expanduser().resolve())
    values["out"] = str(Path(cfg.out).resolve())
    return values


def save_checkpoint(s: Setup, state: Progress) -> None:
    from .train import write_checkpoint

    write_checkpoint(s.accelerator, s.out, asdict(state))


def fit(s: Setup, state: Progress, on_step: Callable[[int], None] | None) -> None:
    bar = progress(
        total=s.plan.total_steps, initial=state.global_step, desc="pretrain", disable=not s.main
    )
    s.model.train()
    while state.global_step < s.plan.total_steps:
        batches = training_batches(s.crawl, s.plan, s.cfg, state.epoch)
        for i, batch in enumerate(batches):
            if i < state.step_in_epoch:
                continue  # trained on before the interruption
            t0 = time.perf_counter()
            loss = step(s, batch)
            state.train_seconds += time.perf_counter() - t0
            state.global_step += 1
            state.step_in_epoch += 1
            state.tokens_seen += len(batch) * s.cfg.block_size
            after_step(s, state, loss, bar)
            if on_step:
                on_step(state.global_step)
            if state.global_step >= s.plan.total_steps:
                break
        else:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
    bar.close()


def step(s: Setup, batch: list[list[int]]) -> float:
    """One optimizer step on this process's share of a global batch of full blocks."""
    from .train import optimizer_step

    acc = s.accelerator
    share = len(batch) // acc.num_processes
    mine = batch[acc.process_index * share : (acc.process_index + 1) * share]
    ids = torch.tensor(mine, device=acc.device)
    loss = s.model(input_ids=ids, labels=ids).loss  # every share is equal: the mean is exact
    return optimizer_step(s, loss)


def after_step(s: Setup, state: Progress, loss: float, bar) -> None:
    state.loss_window.append(loss)
    rate = state.tokens_seen / max(state.train_seconds, 1e-9)
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")
    if s.main and state.global_step % s.cfg.logging_steps == 0:
        mean = sum(state.loss_window) / len(state.loss_window)
        runfolder.append_metrics(
            s.out,
            {"type": "train", "step": state.global_step, "loss": mean, "tokens": state.tokens_seen},
        )
        state.loss_window.clear()
    at_end = state.global_step == s.plan.total_steps
    if state.global_step % s.cfg.save_steps == 0 and not at_end:
        save_checkpoint(s, state)


@torch.inference_mode()
def perplexity(s: Setup) -> float:
    """exp of the mean token loss on the held-out blocks (every process computes it all)."""
    model = s.accelerator.unwrap_model(s.model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for chunk in s.held_out.split(s.cfg.batch_size):
        ids = chunk.to(s.accelerator.device)
        with s.accelerator.autocast():
            loss = model(input_ids=ids, labels=ids).loss.float()
        total += loss.item() * len(chunk)
        count += len(chunk)
    model.train(was_training)
    return math.exp(total / count)


# ---------------------------------------------------------------------------- finish
def finish(s: Setup, state: Progress) -> dict:
    """The base written whole into a staging folder, then renamed in, its record last."""
    after = perplexity(s)
    record = None
    if s.main:
        model = s.accelerator.unwrap_model(s.model)
        if s.cfg.method == "lora":
            model = model.merge_and_unload()
        staging = s.out / STAGING
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging), safe_serialization=True)
        for name in TOKENIZER_FILES:  # the base's own files: its layout and rules, unchanged
            if (s.base / name).is_file():
                shutil.copyfile(s.base / name, staging / name)
        record = base_record(s, state, after)
        write_json(staging / RECORD, record)
        (staging / RECORD).rename(s.out / (RECORD + ".tmp"))
        move_files_into(staging, s.out)
        (s.out / (RECORD + ".tmp")).rename(s.out / RECORD)  # last: the base is complete
        runfolder.drop_checkpoint(s.out)
        log.info(
            "perplexity %.2f -> %.2f after %s tokens; base saved to %s",
            state.perplexity_before, after, f"{state.tokens_seen:,}", s.out,
        )  # fmt: skip
    s.accelerator.wait_for_everyone()
    s.accelerator.free_memory()
    return record


def base_record(s: Setup, state: Progress, after: float) -> dict:
    from . import __version__

    return {
        "base_model": s.cfg.base_model,
        "base_weights_sha256": runfolder.base_weights_sha256(s.base),
        "method": s.cfg.method,
        "data": [
            {"path": str(sh.path.resolve()), "rows": sh.rows, "text_column": sh.text_column}
            for sh in s.crawl.shards
        ],
        "drop_emoticons": s.cfg.drop_emoticons,
        "block_size": s.cfg.block_size,
        "blocks": s.plan.blocks,
        "held_out_blocks": len(s.plan.held_out),
        "steps": state.global_step,
        "tokens_seen": state.tokens_seen,
        "epochs": round(state.global_step / s.plan.steps_per_epoch, 4),
        "perplexity_before": round(state.perplexity_before, 4),
        "perplexity_after": round(after, 4),
        "train_seconds": round(state.train_seconds, 2),
        "tokens_per_second": round(state.tokens_seen / max(state.train_seconds, 1e-9), 1),
        "seed": s.cfg.seed,
        "weibo_senti_version": __version__,
    }
