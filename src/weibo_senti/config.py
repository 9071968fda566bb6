"""Training hyperparameters: defaults follow the reference recipe; a YAML file or flags override."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError
from .hub import DEFAULT_BASE_MODEL

METHODS = ("lora", "adapter", "full")
DEFAULT_LR = {"lora": 5e-4, "adapter": 1e-3, "full": 2e-5}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # training; "no" is read as fp32


def option(default, help: str, **kw):
    """A config field with its help: the CLI's flags are generated from these (one source)."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    method: str = option("lora", "lora | adapter | full")
    base_model: str = option(DEFAULT_BASE_MODEL, "GPT-2 folder or hub id")
    data: str | None = option(None, "Training CSV/TSV/JSONL (default: weibo_senti_100k)")
    dev_data: str | None = option(None, "Dev file (default: a stratified split of --data)")
    out: str | None = option(None, "Run folder (default: runs/<method>)")
    text_column: str = option("review", "Text column of the data files")
    label_column: str = option("label", "Label column (0 negative, 1 positive)")
    encoding: str | None = option(None, "File encoding (default: detect UTF-8/BOM/UTF-16/GBK)")
    dev_fraction: float = option(0.1, "Dev share when there is no --dev-data")
    max_train_samples: int | None = option(None, "Train on a seeded sample of this many rows")
    max_length: int = option(160, "Max tokens per post (128 would cut 14.5% of Weibo posts)")
    epochs: int = option(3, "Epochs")
    batch_size: int = option(16, "Posts per optimizer step (split across processes)")
    eval_batch_size: int = option(64, "Posts per dev batch")
    lr: float | None = option(None, "Learning rate (default: 5e-4 lora, 1e-3 adapter, 2e-5 full)")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_ratio: float = option(0.1, "Share of steps with linear warm-up")
    max_grad_norm: float = option(1.0, "Gradient clipping (0: off)")
    seed: int = option(42, "Seed of the split, the sampling, the shuffles and the init")
    precision: str = option(
        "auto", "auto (bf16 where the hardware is fast at it) | fp32 | bf16 | fp16"
    )
    group_by_length: bool = option(True, "Batch posts of similar length together (less padding)")
    gradient_checkpointing: bool = option(
        False, "Recompute activations in the backward pass: less memory, slower steps"
    )
    logging_steps: int = option(50, "Log the training loss every N steps")
    save_steps: int = option(500, "Resumable checkpoint every N steps (and every epoch)")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.1, "LoRA dropout")
    lora_target_modules: list[str] = option(
        lambda: ["c_attn", "c_proj"], "Modules LoRA adapts (repeat the flag per module)"
    )
    adapter_size: int = option(64, "Bottleneck adapter width")
    label_smoothing: float = option(0.0, "Label smoothing of the training loss (0: off)")
    emoticon_dropout: float = option(  # 0.5: measured, docs/emoticon-dropout.md
        0.5, "Share of training posts seen without their emoticons, drawn afresh each epoch"
    )

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.precision == "no":  # Accelerate's word, and older hyperparameters.yaml files
            self.precision = "fp32"
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        if self.out is None:
            self.out = f"runs/{self.method}"
        if not 0.0 <= self.emoticon_dropout <= 1.0:
            raise UserError("--emoticon-dropout must be between 0 and 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError("--label-smoothing must be at least 0 and below 1")
        for name in ("epochs", "batch_size", "eval_batch_size", "max_length", "adapter_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1")
        if self.max_length < 3:
            raise UserError("max_length must leave room for [CLS] text [SEP]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_sources(cls, config_file: str | Path | None = None, **overrides) -> TrainConfig:
        """Defaults, then the YAML file, then every override that is not None."""
        values: dict = {}
        if config_file:
            try:
                loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as e:
                raise UserError(f"cannot read config file {config_file}: {e}") from None
            if not isinstance(loaded, dict):
                raise UserError(f"config file {config_file} must be a mapping of options")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**values)
