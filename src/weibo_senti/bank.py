"""One base model in memory serving any number of adapters: LoRA (PEFT) and bottleneck (ours).

LoRA adapters go through PEFT's own multi-adapter path: ``PeftModel.from_pretrained`` and
``load_adapter`` with the ``score`` head as PEFT's ``modules_to_save``, ``set_adapter``, and rows
for different LoRA adapters in one forward pass (``adapter_names``). Bottleneck adapters and
their heads live in ``adapters``; while one answers, PEFT's adapters are switched off. Adding,
switching and removing never reload the base.

Adapters may predict different label sets: each brings its own head, of its own width. Rows
for LoRA adapters share a PEFT pass only when their heads are equally wide (PEFT's mixed batch
stacks the heads' outputs row by row).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from . import adapters as bottleneck
from . import runfolder
from .errors import UserError


class AdapterBank:
    def __init__(self, model: nn.Module):
        self.base = model  # GPT2ForSequenceClassification; its own weights never change
        self.base_head = model.score
        self.peft = None  # a PeftModel around ``base`` while LoRA adapters are loaded
        self.kinds: dict[str, str] = {}  # name -> "lora" | "adapter"
        # User names may hold dots or "lora" (PEFT's key prefix): modules get safe ids instead.
        self.ids: dict[str, str] = {}
        self._next_id = 0
        self.active: str | None = None
        self.merged: str | None = None  # the LoRA adapter folded into the base weights

    @property
    def model(self) -> nn.Module:
        return self.peft if self.peft is not None else self.base

    def add(self, name: str, run: Path, method: str, width: int | None = None) -> None:
        """Load adapter ``name`` from ``run``; its head has ``width`` outputs (its labels;
        default: as many as the base's head)."""
        if name in self.kinds:
            raise UserError(f"an adapter called '{name}' is already loaded")
        if method not in ("lora", "adapter"):
            raise UserError(f"{run} is a {method} run: only lora and adapter runs share a base")
        runfolder.check_weights(run, method)
        self.unmerge()
        uid = f"a{self._next_id}"
        if method == "lora":
            self._add_lora(uid, run, width or self.base_head.out_features)
        else:
            config, state = runfolder.read_bottleneck(run)
            rows = getattr(state.get("score.weight"), "shape", (width,))[0]
            if width is not None and rows != width:
                raise UserError(f"{run} has a head of {rows} outputs for its {width} labels")
            try:
                bottleneck.load(self.base, uid, config, state)
            except (KeyError, RuntimeError) as e:
                raise UserError(f"{run} has unusable adapter weights: {e}") from None
        self.kinds[name], self.ids[name] = method, uid
        self._next_id += 1
        self.model.eval()  # new modules start in training mode (dropout on)
        self.use(self.active or name)

    def _add_lora(self, uid: str, run: Path, width: int) -> None:
        from peft import PeftModel

        try:
            with self._head_to_copy(width):
                if self.peft is None:
                    self.peft = PeftModel.from_pretrained(self.base, str(run), adapter_name=uid)
                else:
                    self.peft.load_adapter(str(run), adapter_name=uid)
        except (ValueError, KeyError, RuntimeError) as e:
            raise UserError(f"{run} has unusable LoRA weights: {e}") from None
        loaded = [n for n, _ in self.peft.named_parameters() if f".{uid}." in n]
        if not any("lora_" in n for n in loaded) or not any("score" in n for n in loaded):
            raise UserError(f"{run} lacks LoRA weights or its score head")

    @contextlib.contextmanager
    def _head_to_copy(self, width: int):
        """Within: the head PEFT copies for a new LoRA adapter has ``width`` outputs.

        PEFT 0.21 gives each adapter its ``score`` as ``copy.deepcopy`` of the wrapped original
        head (ModulesToSaveWrapper.update), then loads the saved weights into the copy: a head
        of another width fails on the sizes. So for the load only, the original (the base's
        ``score``, or the wrapper's ``original_module``) is a blank Linear of the adapter's
        width; afterwards the base's own head is back in place. PEFT's public API stays the
        only way in (no state dicts of our own, no module surgery after loading), and the
        copy PEFT makes is exactly as wide as the weights it loads.
        """
        head = self.base_head
        if width == head.out_features:
            yield
            return
        blank = nn.Linear(
            head.in_features,
            width,
            bias=head.bias is not None,
            device=head.weight.device,
            dtype=head.weight.dtype,
        )
        if self.peft is None:
            self.base.score = blank
        else:
            self.base.score.original_module = blank
        try:
            yield
        finally:
            if hasattr(self.base.score, "original_module"):
                self.base.score.original_module = self.base_head
            else:
                self.base.score = self.base_head

    def remove(self, name: str) -> None:
        self.require(name)
        self.unmerge()
        kind, uid = self.kinds.pop(name), self.ids.pop(name)
        if kind == "lora" and "lora" in self.kinds.values():
            self.peft.delete_adapter(uid)
        elif kind == "lora":  # the last LoRA adapter: take PEFT's layers out again
            self.peft.unload()
            self.base.score, self.peft = self.base_head, None
        else:
            bottleneck.unload(self.base, uid)
        if self.active == name:
            self.active = next(iter(self.kinds), None)
        if self.active:
            self.use(self.active)

    def use(self, name: str) -> None:
        self.require(name)
        if self.merged and self.merged != name:
            self.unmerge()
        self.active = name
        if self.kinds[name] == "lora" and self.merged != name:
            self.peft.set_adapter(self.ids[name])

    def merge(self) -> None:
        """Fold the only LoRA adapter into the weights (reversibly): faster single-task serving."""
        if list(self.kinds.values()) == ["lora"] and not self.merged:
            self.peft.merge_adapter()
            self.merged = self.active

    def unmerge(self) -> None:
        if self.merged:
            self.peft.unmerge_adapter()
            self.merged = None

    def require(self, name: str | None) -> None:
        if name is None:
            raise UserError("no adapter is loaded: add one with add_adapter")
        if name not in self.kinds:
            loaded = ", ".join(self.kinds) or "none"
            raise UserError(f"no adapter called '{name}' is loaded (loaded: {loaded})")

    def forward(self, batch: dict, names: list[str]) -> torch.Tensor:
        """Logits for a batch whose rows name their adapters (all LoRA with heads of one width,
        or all one adapter)."""
        if len(set(names)) > 1:
            self.unmerge()
            uids = [self.ids[n] for n in names]
            return self.peft(**batch, adapter_names=uids).logits
        (name,) = set(names)
        if self.kinds[name] == "lora":
            if name != self.active:
                self.peft.set_adapter(self.ids[name])
            try:
                return self.peft(**batch).logits
            finally:
                self.use(self.active)
        with self._lora_off(), bottleneck.answering(self.base, self.ids[name]):
            return self.base(**batch).logits

    def _lora_off(self):
        if self.peft is None:
            return contextlib.nullcontext()
        self.unmerge()
        return self.peft.disable_adapter()

    def fold(self) -> nn.Module:
        """The single loaded adapter as a plain model: LoRA folded in, its head in ``score``."""
        if len(self.kinds) != 1:
            raise UserError("folding needs exactly one loaded adapter")
        ((name, kind),) = self.kinds.items()
        self.unmerge()
        if kind == "lora":
            return self.peft.merge_and_unload()
        bottleneck.set_active(self.base, self.ids[name])
        self.base.score = bottleneck.head(self.base, self.ids[name])
        return self.base
