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


@dataclass
class TrainConfig:
    method: str = "lora"
    base_model: str = DEFAULT_BASE_MODEL
    data: str | None = None  # None: weibo_senti_100k, downloaded once
    dev_data: str | None = None  # None: a stratified split of `data`
    out: str | None = None  # None: runs/<method>
    text_column: str = "review"
    label_column: str = "label"
    encoding: str | None = None
    dev_fraction: float = 0.1
    max_train_samples: int | None = None  # a seeded sample of the training rows
    max_length: int = 160  # 128 cuts 14.5% of Weibo posts
    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float | None = None  # None: per method (DEFAULT_LR)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: str = "auto"  # mixed precision: auto (bf16 where fast) | no | bf16 | fp16
    group_by_length: bool = True
    logging_steps: int = 50
    save_steps: int = 500  # resumable checkpoint every N steps (and every epoch)
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: ["c_attn", "c_proj"])
    adapter_size: int = 64

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
