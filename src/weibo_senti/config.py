"""Training hyperparameters: defaults follow the reference recipe; a YAML file or flags override.

``TrainConfig`` is a pydantic model: one schema checks every field's type, range and choices and
the rules between fields, the same way for flags, a YAML ``--config`` and ``--resume`` (which
re-reads the run's hyperparameters.yaml). Rules that need the data or the base model (max length
within the base's positions, a sample no larger than the data) are checked where those are read.
"""

from __future__ import annotations

import codecs
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import labels as label_sets
from .errors import UserError
from .hub import DEFAULT_BASE_MODEL

METHODS = ("lora", "adapter", "full")
DEFAULT_LR = {"lora": 5e-4, "adapter": 1e-3, "full": 2e-5}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # training; "no" is read as fp32
MAX_SEED = 2**32 - 1  # numpy's and Python's seeding range, which set_seed feeds


# Options added after runs were first recorded, with the value those runs trained with: a run
# resumed from an older hyperparameters.yaml continues as it started.
BEFORE_FIELDS = {"class_weights": "none"}


def option(default, help: str, **constraints):
    """A config field with its help: the CLI's flags are generated from these (one source)."""
    if callable(default):
        return Field(default_factory=default, description=help, **constraints)
    return Field(default=default, description=help, **constraints)


NonEmpty = Annotated[str, Field(min_length=1)]
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Options(BaseModel):
    """A command's options, read the same way from flags, a YAML file and a recorded one."""

    # Unknown keys are refused (a typo in a YAML file must not fall back to a default).
    model_config = ConfigDict(extra="forbid", validate_default=True)
    before_fields: ClassVar[dict] = {}  # options newer than records: their value before

    @classmethod
    def checked(cls, **values):
        """Validate, turning pydantic's report into one ``UserError`` line per bad field."""
        try:
            return cls(**values)
        except ValidationError as e:
            raise UserError(describe(e, "option")) from None

    @classmethod
    def from_sources(
        cls, config_file: str | Path | None = None, recorded: bool = False, **overrides
    ):
        """Defaults, then the YAML file, then every override that is not None. ``recorded``:
        the file is a run's own record, so options it predates keep their value of the time."""
        values: dict = dict(cls.before_fields) if recorded else {}
        if config_file:
            try:
                loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                raise UserError(f"cannot read config file {config_file}: {e}") from None
            if not isinstance(loaded, dict):
                raise UserError(f"config file {config_file} must be a mapping of options")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(str(k) for k in set(values) - set(cls.model_fields))
        if unknown:
            raise UserError(f"unknown option(s): {', '.join(unknown)}")
        return cls.checked(**values)


class TrainConfig(Options):
    before_fields: ClassVar[dict] = BEFORE_FIELDS

    method: Literal["lora", "adapter", "full"] = option("lora", "lora | adapter | full")
    base_model: NonEmpty = option(DEFAULT_BASE_MODEL, "GPT-2 folder or hub id")
    data: list[NonEmpty] | None = option(
        None,
        "Training CSV/TSV/JSONL; repeat to join files, e.g. the posts you labelled "
        "(default: weibo_senti_100k)",
    )
    data_weights: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = option(
        None, "Loss weight of each --data file's rows, in order (default: 1 each)"
    )
    dev_data: NonEmpty | None = option(None, "Dev file (default: a stratified split of --data)")
    out: NonEmpty | None = option(None, "Run folder (default: runs/<method>)")
    text_column: NonEmpty = option("review", "Text column of the data files")
    label_column: NonEmpty = option("label", "Label column: names or ids (0/1: negative/positive)")
    labels: list[NonEmpty] | None = option(
        None, "Label names in order, e.g. negative,neutral,positive (default: from the data)"
    )
    label_map: dict[str, str | None] | None = option(
        None, "Rename labels first: happy=positive,surprise= (empty: drop) or a YAML file"
    )
    class_weights: Literal["none", "balanced"] = option(  # measured: docs/studies/labelsets.md
        "balanced", "Loss weights per label: balanced (inverse label frequency) | none"
    )
    encoding: NonEmpty | None = option(None, "File encoding (default: detect UTF-8/BOM/UTF-16/GBK)")
    dev_fraction: float = option(
        0.1, "Dev share when there is no --dev-data", gt=0.0, lt=1.0, allow_inf_nan=False
    )
    max_train_samples: int | None = option(None, "Train on a seeded sample of this many rows", ge=1)
    max_length: int = option(
        160, "Max tokens per post (128 would cut 14.5% of Weibo posts)", ge=3
    )  # [CLS] text [SEP]; at most the base's positions, checked when the base loads
    epochs: int = option(3, "Epochs", ge=1)
    batch_size: int = option(16, "Posts per optimizer step (split across processes)", ge=1)
    eval_batch_size: int = option(64, "Posts per dev batch", ge=1)
    lr: float | None = option(
        None,
        "Learning rate (default: 5e-4 lora, 1e-3 adapter, 2e-5 full)",
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
    )
    weight_decay: float = option(0.01, "AdamW weight decay", ge=0.0, allow_inf_nan=False)
    warmup_ratio: Share = option(0.1, "Share of steps with linear warm-up")
    max_grad_norm: float = option(1.0, "Gradient clipping (0: off)", ge=0.0, allow_inf_nan=False)
    seed: int = option(
        42, "Seed of the split, the sampling, the shuffles and the init", ge=0, le=MAX_SEED
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "auto (bf16 where the hardware is fast at it) | fp32 | bf16 | fp16"
    )
    group_by_length: bool = option(True, "Batch posts of similar length together (less padding)")
    gradient_checkpointing: bool = option(
        False, "Recompute activations in the backward pass: less memory, slower steps"
    )
    logging_steps: int = option(50, "Log the training loss every N steps", ge=1)
    save_steps: int = option(500, "Resumable checkpoint every N steps (and every epoch)", ge=1)
    lora_r: int = option(8, "LoRA rank", ge=1)
    lora_alpha: int = option(32, "LoRA alpha", ge=1)
    lora_dropout: float = option(0.1, "LoRA dropout", ge=0.0, lt=1.0, allow_inf_nan=False)
    lora_target_modules: list[NonEmpty] = option(
        lambda: ["c_attn", "c_proj"],
        "Modules LoRA adapts (repeat the flag per module)",
        min_length=1,
    )
    adapter_size: int = option(64, "Bottleneck adapter width", ge=1)
    label_smoothing: float = option(
        0.0, "Label smoothing of the training loss (0: off)", ge=0.0, lt=1.0, allow_inf_nan=False
    )
    emoticon_dropout: Share = option(  # 0.5: measured, docs/studies/emoticon-dropout.md
        0.5, "Share of training posts seen without their emoticons, drawn afresh each epoch"
    )

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, values):
        """lr and out follow the method; "no" is Accelerate's (and old YAML files') fp32."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        method = values.get("method", "lora")
        method = method if isinstance(method, str) else None  # a wrong type: named below
        if values.get("precision") == "no":
            values["precision"] = "fp32"
        if values.get("lr") is None and method in DEFAULT_LR:
            values["lr"] = DEFAULT_LR[method]
        if values.get("out") is None and method in METHODS:
            values["out"] = f"runs/{method}"
        return values

    @field_validator("labels", mode="before")
    @classmethod
    def _label_names(cls, value):
        return label_sets.parse_names(value)

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map(cls, value):
        return label_sets.parse_map(value)

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_more_files(cls, value):
        return [value] if isinstance(value, (str, Path)) else value  # one file, as before

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    "not an encoding Python knows (e.g. utf-8, gb18030, big5)"
                ) from None
        return value

    @model_validator(mode="after")
    def _columns_differ(self) -> TrainConfig:
        if self.text_column == self.label_column:
            raise ValueError(
                f"text_column and label_column are both {self.text_column!r}: the model would "
                "read its own labels"
            )
        return self

    @model_validator(mode="after")
    def _a_weight_per_file(self) -> TrainConfig:
        if self.data_weights is None:
            return self
        files = len(self.data or [])
        if len(self.data_weights) != files:
            raise ValueError(
                f"data_weights: {len(self.data_weights)} weights for {files} --data files: "
                "give one per file, in order"
            )
        return self

    def to_dict(self) -> dict:
        return self.model_dump()


PRETRAIN_LR = {"full": 1e-4, "lora": 5e-4}


class PretrainConfig(Options):
    base_model: NonEmpty = option(DEFAULT_BASE_MODEL, "GPT-2 folder or hub id to continue from")
    data: list[NonEmpty] = option(
        list, "Unlabelled posts: files, folders or globs (repeat the flag); required", min_length=1
    )
    out: NonEmpty = option("bases/pretrained", "Folder of the new base")
    text_column: NonEmpty | None = option(None, "Text column (default: review, text or content)")
    encoding: NonEmpty | None = option(None, "File encoding (default: detect)")
    method: Literal["full", "lora"] = option(
        "full", "full | lora (merged into the base at the end)"
    )
    block_size: int = option(128, "Tokens per training block (posts packed together)", ge=8)
    batch_size: int = option(32, "Blocks per optimizer step (split across processes)", ge=1)
    epochs: int = option(1, "Passes over the data", ge=1)
    max_tokens: int | None = option(None, "Stop after this many training tokens", ge=1)
    lr: float | None = option(
        None, "Learning rate (default: 1e-4 full, 5e-4 lora)", gt=0, le=1, allow_inf_nan=False
    )
    weight_decay: float = option(0.01, "AdamW weight decay", ge=0.0, allow_inf_nan=False)
    warmup_ratio: Share = option(0.05, "Share of steps with linear warm-up (then cosine)")
    max_grad_norm: float = option(1.0, "Gradient clipping (0: off)", ge=0.0, allow_inf_nan=False)
    held_out_blocks: int = option(200, "Blocks held out for perplexity (at most 5%)", ge=1)
    drop_emoticons: bool = option(False, "Remove bracketed emoticons (哈哈 in brackets) and emoji")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option("auto", "auto | fp32 | bf16 | fp16")
    seed: int = option(
        42, "Seed of the held-out sample, the shuffle and dropout", ge=0, le=MAX_SEED
    )
    save_steps: int = option(200, "Resumable checkpoint every N steps", ge=1)
    logging_steps: int = option(20, "Log the loss every N steps", ge=1)
    lora_r: int = option(8, "LoRA rank", ge=1)
    lora_alpha: int = option(32, "LoRA alpha", ge=1)
    lora_dropout: float = option(0.1, "LoRA dropout", ge=0.0, lt=1.0, allow_inf_nan=False)

    @property
    def learning_rate(self) -> float:
        return self.lr or PRETRAIN_LR[self.method]


def describe(error: ValidationError, what: str) -> str:
    """pydantic's errors as one line: each field, the value given and what it allows."""
    parts = []
    for err in error.errors():
        msg = _lower_first(err["msg"])
        if not err["loc"]:  # a rule between fields names them itself
            parts.append(msg)
            continue
        field = ".".join(str(p) for p in err["loc"])
        flag = f" (--{field.replace('_', '-')})" if what == "option" else ""
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {_short(value)}"
        parts.append(f"{what} {field}{flag}{shown}: {msg}")
    return "; ".join(parts)


def _short(value) -> str:
    text = repr(value)
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:g}"
    return text if len(text) <= 60 else text[:57] + "..."


def _lower_first(msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]
