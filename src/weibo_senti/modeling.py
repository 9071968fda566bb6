"""Building the classifier from a GPT-2 base, applying a method, and saving/loading its weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import adapters
from .config import TrainConfig
from .data import LABELS
from .errors import UserError

WEIGHT_FILES = {
    "lora": ["adapter_config.json", "adapter_model.safetensors"],
    "adapter": ["adapter_config.json", "adapter_model.safetensors"],
    "full": ["config.json", "model.safetensors"],
}


def gpt2_small_config():
    """uer/gpt2-chinese-cluecorpussmall's shape (12 x 768, vocab 21,128), for counts and speed."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=21128,
        n_positions=1024,
        n_embd=768,
        n_layer=12,
        n_head=12,
        num_labels=2,
        pad_token_id=0,
    )


def quiet_transformers() -> None:
    """transformers warns about uer's out-of-vocabulary bos/eos ids and the fresh head: noise."""
    import warnings

    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT calls deprecated helpers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_tokenizer(path: str | Path):
    """The tokenizer of a base or run folder; its size is checked against the model on load."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise UserError(f"cannot load the tokenizer from {path}: {e}") from None
    if tok.pad_token_id is None:
        raise UserError(f"tokenizer in {path} has no [PAD] token")
    return tok


def classifier_config(base: Path, tokenizer):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(
        str(base),
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        # uer's config has no pad id and bos/eos 50256, outside the 21,128-token vocab.
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )


def load_base_classifier(base: Path, tokenizer) -> nn.Module:
    """The base GPT-2 with a fresh 2-way ``score`` head, padding on ``[PAD]``."""
    from transformers import AutoModelForSequenceClassification

    config = classifier_config(base, tokenizer)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(base), config=config)
    except Exception as e:
        raise UserError(f"cannot load base model weights from {base}: {e}") from None
    load_tokenizer_check(tokenizer, model.config)
    return model


def load_tokenizer_check(tokenizer, config) -> None:
    # BertTokenizer(vocab_file=...) silently builds a 5-token vocab: catch any such mismatch.
    if not (0.9 * config.vocab_size <= len(tokenizer) <= config.vocab_size):
        raise UserError(
            f"tokenizer has {len(tokenizer)} tokens, the model {config.vocab_size}: "
            "they do not belong together"
        )
    if config.pad_token_id != tokenizer.pad_token_id:
        raise UserError(
            f"model pad_token_id {config.pad_token_id} differs from the tokenizer's "
            f"[PAD] id {tokenizer.pad_token_id}"
        )


def apply_method(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Make the right parameters trainable: LoRA via PEFT, our adapters, or everything."""
    if cfg.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS,  # PEFT then trains and saves the `score` head too
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
            fan_in_fan_out=True,  # GPT-2 uses Conv1D (weights stored transposed)
        )
        return get_peft_model(model, lora)
    if cfg.method == "adapter":
        model.requires_grad_(False)
        adapters.add_adapter(model, "default", cfg.adapter_size)
        for p in adapters.adapter_parameters(model, "default"):
            p.requires_grad_(True)
        model.score.requires_grad_(True)
        return model
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, all), counted the way PEFT's print_trainable_parameters does."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def describe_parameters(model: nn.Module) -> str:
    trainable, total = count_parameters(model)
    return (
        f"trainable params: {trainable:,} || all params: {total:,} || "
        f"trainable%: {100 * trainable / total:.4f}"
    )


def save_weights(model: nn.Module, method: str, folder: Path, base_model: str) -> None:
    """Write the method's weights into ``folder`` (safetensors + a small JSON config)."""
    folder.mkdir(parents=True, exist_ok=True)
    if method in ("lora", "full"):
        model.save_pretrained(str(folder), safe_serialization=True)
        if method == "lora":  # record the id the user gave, not a cache path
            cfg_path = folder / "adapter_config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["base_model_name_or_path"] = base_model
            cfg_path.write_text(json.dumps(cfg, indent=2))
        return
    state = {
        f"adapter.{k}": v.detach().cpu().contiguous()
        for k, v in adapters.adapter_state_dict(model).items()
    }
    state.update({f"score.{k}": v.detach().cpu() for k, v in model.score.state_dict().items()})
    save_file(state, str(folder / "adapter_model.safetensors"))
    blocks = adapters.blocks(model)
    config = {
        "adapter_type": "bottleneck",
        "size": blocks[0].senti_adapters["default"].down.out_features,
        "hidden_size": model.config.n_embd,
        "num_layers": len(blocks),
        "activation": "gelu",
        "placement": "after each transformer block, residual",
        "base_model_name_or_path": base_model,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"missing file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"corrupt file {path}: {e}") from None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"missing file {path}")
    try:
        return load_file(str(path))
    except Exception as e:
        raise UserError(f"corrupt weights file {path}: {e}") from None


def load_full(run: Path, tokenizer) -> nn.Module:
    """A full fine-tuning run (a plain transformers folder), checked file by file."""
    from transformers import AutoModelForSequenceClassification

    for name in WEIGHT_FILES["full"]:
        if not (run / name).is_file():
            raise UserError(f"run folder {run} is missing {name}")
    read_json(run / "config.json")
    load_safetensors(run / "model.safetensors")  # fails with the file's name if corrupt
    model = AutoModelForSequenceClassification.from_pretrained(str(run))
    load_tokenizer_check(tokenizer, model.config)
    return model


def fold_for_export(bank) -> nn.Module:
    """The bank's single adapter as a plain model: LoRA folded in, head back in ``score``."""
    if len(bank.kinds) != 1:
        raise UserError("folding needs exactly one loaded adapter")
    ((name, kind),) = bank.kinds.items()
    model = bank.model.merge_and_unload() if kind == "lora" else bank.model
    head = bank.heads.heads[bank.ids[name]]
    model.score = head
    return model
