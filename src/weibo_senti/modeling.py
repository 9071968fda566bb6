"""Building the classifier from a GPT-2 base and making a method's parameters trainable."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import adapters
from .config import TrainConfig
from .data import LABELS
from .errors import UserError
from .inference import fuse_gelu


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


def classifier_config(base: Path, tokenizer, labels: list[str] = LABELS):
    from transformers import AutoConfig

    from .runfolder import refuse_custom_code

    refuse_custom_code(Path(base))
    return AutoConfig.from_pretrained(
        str(base),
        trust_remote_code=False,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        # uer's config has no pad id and bos/eos 50256, outside the 21,128-token vocab.
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )


def load_base_classifier(base: Path, tokenizer, labels: list[str] = LABELS) -> nn.Module:
    """The base GPT-2 with a fresh ``score`` head, one output per label, padding on ``[PAD]``."""
    from transformers import AutoModelForSequenceClassification

    config = classifier_config(base, tokenizer, labels)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base), config=config, trust_remote_code=False
        )
    except Exception as e:
        raise UserError(f"cannot load base model weights from {base}: {e}") from None
    check_tokenizer_fits(tokenizer, model.config)
    return fuse_gelu(model)  # for training and prediction alike; saved configs keep gelu_new


def check_tokenizer_fits(tokenizer, config) -> None:
    check_vocabulary(tokenizer, config)
    positions = getattr(config, "n_positions", None) or config.max_position_embeddings
    if tokenizer.model_max_length > positions:  # longer posts would index past the positions
        raise UserError(
            f"max length {tokenizer.model_max_length} is beyond the model's {positions} "
            f"positions: use --max-length {positions} or less"
        )
    if config.pad_token_id != tokenizer.pad_token_id:
        raise UserError(
            f"model pad_token_id {config.pad_token_id} differs from the tokenizer's "
            f"[PAD] id {tokenizer.pad_token_id}"
        )


def check_vocabulary(tokenizer, config) -> None:
    # BertTokenizer(vocab_file=...) silently builds a 5-token vocab: catch any such mismatch.
    if not (0.9 * config.vocab_size <= len(tokenizer) <= config.vocab_size):
        raise UserError(
            f"tokenizer has {len(tokenizer)} tokens, the model {config.vocab_size}: "
            "they do not belong together"
        )


def apply_method(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Make the right parameters trainable: LoRA via PEFT, our adapters, or everything."""
    if cfg.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        check_target_modules(model, cfg.lora_target_modules)

        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS,  # PEFT then trains and saves the `score` head too
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
            fan_in_fan_out=True,  # GPT-2 uses Conv1D (weights stored transposed)
        )
        try:
            return get_peft_model(model, lora)
        except ValueError as e:  # e.g. a LayerNorm named: PEFT adapts only layers with weights
            raise UserError(f"LoRA cannot adapt --lora-target-modules as given: {e}") from None
    if cfg.method == "adapter":
        model.requires_grad_(False)
        adapters.add_adapter(model, "default", cfg.adapter_size)
        for p in adapters.adapter_parameters(model, "default"):
            p.requires_grad_(True)
        model.score.requires_grad_(True)  # trained here, saved with the adapter
    return model


def check_target_modules(model: nn.Module, targets: list[str]) -> None:
    """PEFT matches each target against the end of a module's name; one that matches nothing
    would be a typo (PEFT raises only when none match at all)."""
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names} - set("0123456789"))
        raise UserError(
            f"--lora-target-modules {', '.join(missing)} matches no module of the base "
            f"(its modules: {', '.join(leaves)})"
        )


class FastDropout(nn.Dropout):
    """nn.Dropout with a mask drawn 4 elements per 64-bit random number.

    torch's CPU dropout draws one number per element from a serial generator: 27% of a LoRA
    training step on 2 cores (profiled; LoRA adds a dropout on the input of every adapted layer,
    the 3,072-wide MLP one included). Here one full-range int64 from the same generator (so
    seeds, resume and checkpointing replay it) is read as four 16-bit draws: about 3x faster per
    mask. p is rounded to a multiple of 2^-16 (0.1 -> 0.099991) and the kept values scaled by the
    rounded p's 1/(1-p). No weights: saved models and their configs are unchanged.
    """

    _LEVELS = 1 << 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        threshold = round(self.p * self._LEVELS)
        if threshold >= self._LEVELS:
            return torch.zeros_like(x)
        n = x.numel()
        # random_() alone leaves an int64's sign bit 0; the full range keeps all 4 lanes uniform
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
        draws = words.random_(-(1 << 63), None).view(torch.int16)[:n].view(x.shape)
        dropped = draws < threshold - (1 << 15)  # int16 draws are uniform on [-2^15, 2^15)
        return x.masked_fill(dropped, 0).mul_(self._LEVELS / (self._LEVELS - threshold))


def fast_dropout(model: nn.Module) -> nn.Module:
    """Every nn.Dropout of ``model`` (GPT-2's, PEFT's LoRA dropout, our adapters') as FastDropout.
    For CPU training: a GPU draws its masks in parallel already."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    return model


def eager_attention_while_training(model: nn.Module) -> None:
    """GPT-2's eager attention in train mode, its configured one (SDPA) in eval mode.

    With attention dropout on, torch's CPU SDPA leaves its fused kernel for a math path that was
    6-8% of a LoRA bf16 step slower than transformers' eager attention (A/B, one process, 2
    cores). The choice lives on the config object only: config.json and saved models are unchanged.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base.config, "attn_pdrop", 0):
        return  # no dropout: SDPA keeps its fused kernel in training too
    configured = base.config._attn_implementation

    def pick(module: nn.Module, _args) -> None:
        wanted = "eager" if module.training else configured
        if module.config._attn_implementation != wanted:
            module.set_attn_implementation(wanted)

    base.register_forward_pre_hook(pick)


def lora_inputs_in_autocast_dtype(model: nn.Module) -> None:
    """Under bf16 autocast, PEFT's LoRA layers no longer copy their bf16 input to fp32 (their
    weights' dtype) before dropout and lora_A: autocast casts it back for the matmul anyway. The
    3,072-wide copies were 10% of a LoRA step (profiled). PEFT's own switch, set per layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


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


def frozen_weights_in_bf16(model: nn.Module) -> nn.Module:
    """The frozen Conv1D weights and biases (a LoRA or adapter run's base) stored in bf16.

    For CPU training under bf16 autocast only: autocast casts them to bf16 for every matmul
    anyway, so every number stays the same (tested step by step), while the per-step casts (7%
    of a LoRA step, profiled) and half the weight traffic go. Embeddings, LayerNorms and every
    trainable tensor stay fp32; only trainable tensors are ever saved.
    """
    from transformers.pytorch_utils import Conv1D

    for module in model.modules():
        if isinstance(module, Conv1D) and not module.weight.requires_grad:
            module.weight.data = module.weight.data.to(torch.bfloat16)
            if module.bias is not None and not module.bias.requires_grad:
                module.bias.data = module.bias.data.to(torch.bfloat16)
    return model
