"""The run folder: what a trained model needs besides its weights (labels, pad id, base id)."""

from __future__ import annotations

from pathlib import Path

from . import __version__
from .data import LABELS, LABELS_ZH
from .errors import UserError
from .files import write_json
from .modeling import read_json

RUN_FILE = "run.json"


def base_fingerprint(config) -> dict:
    """What an adapter depends on: architecture and vocabulary of the base."""
    return {
        "model_type": config.model_type,
        "n_layer": config.n_layer,
        "n_embd": config.n_embd,
        "vocab_size": config.vocab_size,
    }


def write_run_info(out: Path, cfg, config, tokenizer, **extra) -> None:
    write_json(
        out / RUN_FILE,
        {
            "weibo_senti_version": __version__,
            "method": cfg.method,
            "base_model": cfg.base_model,
            "base": base_fingerprint(config),
            "labels": LABELS,
            "labels_zh": LABELS_ZH,
            "pad_token_id": tokenizer.pad_token_id,
            "max_length": cfg.max_length,
            "text_column": cfg.text_column,
            **extra,
        },
    )


def read_run_info(run: Path) -> dict:
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist")
    info = read_json(run / RUN_FILE)
    for key in ("method", "base_model", "labels", "pad_token_id", "max_length"):
        if key not in info:
            raise UserError(f"{run / RUN_FILE} lacks '{key}': not a weibo-senti run folder")
    return info
