"""Bottleneck adapters (Houlsby/Pfeiffer style) added to GPT-2 blocks through forward hooks.

We do not copy or subclass GPT2Block: each block gets a ModuleDict of adapters and a forward
hook that adds ``up(act(down(h)))`` to the block's output, so the module keeps working across
transformers releases. AdapterHub's ``adapters`` would do this, but it pins a transformers
release with CVE-2026-4372.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .errors import UserError

ATTR = "senti_adapters"  # name of the ModuleDict on each block
HEADS = "senti_heads"  # classification heads of loaded adapters, on the model


class BottleneckAdapter(nn.Module):
    """hidden → size → hidden with a residual; ``up`` starts at zero, so at first it is identity."""

    def __init__(self, hidden_size: int, size: int = 64):
        super().__init__()
        self.down = nn.Linear(hidden_size, size)
        self.act = nn.GELU()
        self.up = nn.Linear(size, hidden_size)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


def blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a GPT-2 style model (``transformer.h``)."""
    base = getattr(model, "transformer", None) or getattr(model, "base_model", None)
    h = getattr(base, "h", None)
    if not isinstance(h, nn.ModuleList):
        raise UserError("bottleneck adapters need a GPT-2 style model (transformer.h blocks)")
    return h


def after_block(block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The block's output as its hook leaves it: through the active adapter, if any."""
    name = getattr(block, "senti_active", None)
    return hidden if name is None else getattr(block, ATTR)[name](hidden)


def _hook(block: nn.Module, args, output):
    if isinstance(output, tuple):  # older transformers returned (hidden, ...)
        return (after_block(block, output[0]), *output[1:])
    return after_block(block, output)


def add_adapter(model: nn.Module, name: str = "default", size: int = 64) -> None:
    """Add an adapter called ``name`` to every block and make it the active one."""
    hidden = model.config.n_embd
    for block in blocks(model):
        if not hasattr(block, ATTR):
            block.add_module(ATTR, nn.ModuleDict())
            block.register_forward_hook(_hook)
        if name in getattr(block, ATTR):
            raise UserError(f"adapter '{name}' is already loaded")
        param = next(block.parameters())
        # the block's device and dtype: a model served in bf16 on a GPU gets a bf16 adapter there
        getattr(block, ATTR)[name] = BottleneckAdapter(hidden, size).to(param.device, param.dtype)
    set_active(model, name)


def set_active(model: nn.Module, name: str | None) -> None:
    """Route blocks through adapter ``name``; ``None`` runs the plain base model."""
    for block in blocks(model):
        if name is not None and name not in getattr(block, ATTR, {}):
            raise UserError(f"no adapter '{name}' is loaded")
        block.senti_active = name


def remove_adapter(model: nn.Module, name: str) -> None:
    for block in blocks(model):
        if getattr(block, "senti_active", None) == name:
            block.senti_active = None
        del getattr(block, ATTR)[name]


def adapter_state_dict(model: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """Adapter weights keyed ``h.{layer}.{down|up}.{weight|bias}``."""
    out = {}
    for i, block in enumerate(blocks(model)):
        for k, v in getattr(block, ATTR)[name].state_dict().items():
            out[f"h.{i}.{k}"] = v
    return out


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    for i, block in enumerate(blocks(model)):
        prefix = f"h.{i}."
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        getattr(block, ATTR)[name].load_state_dict(sub, strict=True)


def adapter_parameters(model: nn.Module, name: str = "default"):
    for block in blocks(model):
        yield from getattr(block, ATTR)[name].parameters()


def export(model: nn.Module, name: str, head: nn.Linear) -> tuple[dict, dict]:
    """(tensors, config) of adapter ``name`` with its classification ``head``, for saving."""
    state = {
        f"adapter.{k}": v.detach().cpu().contiguous()
        for k, v in adapter_state_dict(model, name).items()
    }
    state["score.weight"] = head.weight.detach().cpu().contiguous()
    config = {
        "adapter_type": "bottleneck",
        "size": blocks(model)[0].senti_adapters[name].down.out_features,
        "hidden_size": model.config.n_embd,
        "num_layers": len(blocks(model)),
        "activation": "gelu",
        "placement": "after each transformer block, residual",
    }
    return state, config


def load(model: nn.Module, name: str, config: dict, state: dict) -> None:
    """Add adapter ``name`` from ``export``'s (config, tensors), with its own head."""
    if "score.weight" not in state:
        raise UserError("the adapter's weights have no score head")
    add_adapter(model, name, int(config["size"]))
    set_active(model, None)  # it runs only inside ``answering``
    load_adapter_state_dict(
        model, {k[len("adapter.") :]: v for k, v in state.items() if k.startswith("adapter.")}, name
    )
    weight = state["score.weight"]
    param = next(model.parameters())
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=param.device)
    head.weight.data = weight.to(param.device, param.dtype)  # safetensors loads onto the CPU
    if not hasattr(model, HEADS):
        model.add_module(HEADS, nn.ModuleDict())
    getattr(model, HEADS)[name] = head.eval()


def head(model: nn.Module, name: str) -> nn.Linear:
    return getattr(model, HEADS)[name]


def unload(model: nn.Module, name: str) -> None:
    remove_adapter(model, name)
    del getattr(model, HEADS)[name]


@contextlib.contextmanager
def answering(model: nn.Module, name: str):
    """Within: adapter ``name`` runs in every block and its head stands in for ``score``."""
    blocks_active = [getattr(b, "senti_active", None) for b in blocks(model)]
    score = model.score
    set_active(model, name)
    model.score = getattr(model, HEADS)[name]
    try:
        yield
    finally:
        model.score = score
        for block, active in zip(blocks(model), blocks_active):
            block.senti_active = active
