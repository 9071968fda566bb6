"""One base model in memory serving any number of adapters: LoRA (PEFT) and bottleneck (ours).

Each adapter brings its own classification head; the heads live in a ``HeadBank`` that takes
the place of the model's ``score`` layer, so LoRA adapters are loaded without PEFT's
modules_to_save copies and rows addressed to different LoRA adapters share one forward pass
(PEFT's ``adapter_names``). Adding, switching and removing never reload the base.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from . import adapters as bottleneck
from .errors import UserError
from .modeling import load_safetensors, read_json

LORA_HEAD = "base_model.model.score.weight"


class HeadBank(nn.Module):
    """Classification heads by adapter name; one active, or one per row for a mixed batch."""

    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleDict()
        self.active: str | None = None
        self.rows: list[str] | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return self.heads[self.active](hidden)
        outs = {name: self.heads[name](hidden) for name in set(self.rows)}
        return torch.stack([outs[name][i] for i, name in enumerate(self.rows)])


class AdapterBank:
    def __init__(self, model: nn.Module):
        self.model = model  # becomes a PeftModel once a LoRA adapter is added
        self.heads = HeadBank().to(next(model.parameters()).device)
        model.score = self.heads
        self.kinds: dict[str, str] = {}  # name -> "lora" | "adapter"
        # User names may hold dots or "lora" (PEFT's key prefix): modules get safe ids instead.
        self.ids: dict[str, str] = {}
        self._next_id = 0
        self.runs: dict[str, Path] = {}
        self.active: str | None = None
        self.merged: str | None = None  # the LoRA adapter folded into the base weights

    @property
    def base(self) -> nn.Module:
        from peft import PeftModel

        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def add(self, name: str, run: Path, method: str) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict

        if name in self.kinds:
            raise UserError(f"an adapter called '{name}' is already loaded")
        if method not in ("lora", "adapter"):
            raise UserError(f"{run} is a {method} run: only lora and adapter runs share a base")
        self.unmerge()
        state = load_safetensors(run / "adapter_model.safetensors")
        config = read_json(run / "adapter_config.json")
        uid = f"a{self._next_id}"
        if method == "lora":
            cfg = LoraConfig.from_pretrained(str(run))
            cfg.modules_to_save, cfg.task_type, cfg.inference_mode = None, None, True
            if isinstance(self.model, PeftModel):
                self.model.add_adapter(uid, cfg)
            else:
                self.model = get_peft_model(self.model, cfg, adapter_name=uid)
            lora = {k: v for k, v in state.items() if "lora_" in k}
            result = set_peft_model_state_dict(self.model, lora, adapter_name=uid)
            missing = [k for k in result.missing_keys if f".{uid}." in k and "lora_" in k]
            if missing or not lora:
                raise UserError(
                    f"{run / 'adapter_model.safetensors'} lacks LoRA weights "
                    f"({len(missing)} missing)"
                )
            head = state.get(LORA_HEAD)
        else:
            bottleneck.add_adapter(self.base, uid, int(config["size"]))
            bottleneck.load_adapter_state_dict(
                self.base, {k[8:]: v for k, v in state.items() if k.startswith("adapter.")}, uid
            )
            head = state.get("score.weight")
        if head is None:
            raise UserError(f"{run / 'adapter_model.safetensors'} has no score head")
        linear = nn.Linear(head.shape[1], head.shape[0], bias=False)
        linear.weight.data = head.to(next(self.base.parameters()).dtype)
        self.heads.heads[uid] = linear.to(next(self.base.parameters()).device)
        self.kinds[name], self.runs[name], self.ids[name] = method, run, uid
        self._next_id += 1
        self.model.eval()  # new modules start in training mode (dropout on)
        self._route(self.active or name)
        self.active = self.active or name

    def remove(self, name: str) -> None:
        self._require(name)
        self.unmerge()
        kind = self.kinds.pop(name)
        del self.runs[name]
        uid = self.ids.pop(name)
        if kind == "lora":
            if any(k == "lora" for k in self.kinds.values()):
                self.model.delete_adapter(uid)
            else:  # the last LoRA adapter: take PEFT's layers out again
                self.model = self.model.unload()
        else:
            bottleneck.remove_adapter(self.base, uid)
        del self.heads.heads[uid]
        if self.active == name:
            self.active = next(iter(self.kinds), None)
        if self.active:
            self._route(self.active)

    def use(self, name: str) -> None:
        self._require(name)
        if self.merged and self.merged != name:
            self.unmerge()
        self.active = name
        self._route(name)

    def merge(self) -> None:
        """Fold the only LoRA adapter into the weights (reversibly): faster single-task serving."""
        if list(self.kinds.values()) == ["lora"] and not self.merged:
            self.model.merge_adapter()
            self.merged = self.active

    def unmerge(self) -> None:
        if self.merged:
            self.model.unmerge_adapter()
            self.merged = None

    def _require(self, name: str) -> None:
        if name not in self.kinds:
            loaded = ", ".join(self.kinds) or "none"
            raise UserError(f"no adapter called '{name}' is loaded (loaded: {loaded})")

    def _route(self, name: str) -> None:
        uid = self.ids[name]
        self.heads.active, self.heads.rows = uid, None
        if any(k == "adapter" for k in self.kinds.values()):
            bottleneck.set_active(self.base, uid if self.kinds[name] == "adapter" else None)
        if self.kinds[name] == "lora" and self.merged != name:
            self.model.set_adapter(uid)

    def forward(self, batch: dict, names: list[str]) -> torch.Tensor:
        """Logits for a batch whose rows name their adapters (all LoRA, or all one adapter)."""
        if len(set(names)) == 1:
            self._route(names[0])
            if self.kinds[names[0]] == "adapter" and hasattr(self.model, "disable_adapter"):
                self.unmerge()
                ctx = self.model.disable_adapter()  # LoRA off while a bottleneck adapter runs
            else:
                ctx = contextlib.nullcontext()
            with ctx:
                out = self.model(**batch).logits
            self._route(self.active)
            return out
        self.unmerge()
        if any(k == "adapter" for k in self.kinds.values()):
            bottleneck.set_active(self.base, None)
        uids = [self.ids[n] for n in names]
        self.heads.rows = uids
        try:
            return self.model(**batch, adapter_names=uids).logits
        finally:
            self._route(self.active)
