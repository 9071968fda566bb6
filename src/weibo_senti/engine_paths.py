"""The path each pass of a loaded classifier takes: the measured choice (``tune``, through
autotune.py) and the copies of the single model that the ort-*/torch-int8 paths run.

``EnginePaths`` is mixed into ``predict.SentimentClassifier``; the state it reads and writes
(``choice``, ``requested``, ``_copies``, ``engine``, ``precision``, ``bank``, ``_model``,
``max_tokens``, ``batch_rows``, the tokenizer) is set in that class's ``__init__``; it uses
``model``, ``device`` and ``_row_adapters`` from there. Copies hold the weights of their time: adding or removing an adapter drops
them and tunes again.
"""

from __future__ import annotations

import copy
import logging

import torch

from . import autotune, inference, onnx_runtime
from .errors import UserError

log = logging.getLogger("weibo_senti")


class EnginePaths:
    """Which path runs a pass (torch fp32/bf16/int8, ONNX Runtime fp32/int8), chosen once per
    model shape and machine, and the copies those paths run."""

    def tune(self, precision: str = "auto", engine: str = "auto") -> autotune.Choice:
        """Settle the path each pass takes: measured under "auto" (autotune.choose), else the
        requested precision on the engine. The flag rules only where timing fails. Adding or
        removing adapters tunes again (the copies serve a single model only)."""
        self.requested = (precision, engine)
        if precision == "int8" and self.device.type != "cpu":
            raise UserError("--precision int8 runs on a CPU: load with device='cpu'")
        if precision != "auto":
            self.choice = autotune.fixed(self.precision, self.engine, f"--precision {precision}")
            return self.choice
        request = autotune.Request(
            self._path_runner,
            self._candidates(engine),
            self._shape(),
            self.device,
            lambda path: self._copies.pop(path, None),
        )
        if "ort-int8" in request.candidates and not onnx_runtime.int8_weight_bits():
            request.candidates.remove("ort-int8")
            request.refused["ort-int8"] = "ONNX Runtime's uint8 x int8 matmul saturates here"
        try:
            self.choice = autotune.choose(request)
        except Exception as e:  # noqa: BLE001 - any failure to time leaves the flag rules
            self._copies.clear()  # what was built for timing
            why = f"timing failed ({type(e).__name__}: {e})".splitlines()[0][:200]
            log.warning("could not time the inference paths, using the CPU-flag rules: %s", why)
            self.choice = autotune.rules_choice(self.device, self.engine, why)
        self.precision = self.choice.model
        return self.choice

    def _candidates(self, engine: str) -> list[str]:
        """The paths "auto" may take: torch's on any device; on a CPU also int8 and ONNX
        Runtime's, where a single model runs (copies cannot serve several adapters).
        WEIBO_SENTI_ENGINE=torch or onnxruntime keeps the fp32/int8 paths to that engine."""
        if self.device.type == "cuda":
            return ["torch-fp32"] + (["torch-bf16"] if torch.cuda.is_bf16_supported() else [])
        paths = ["torch-fp32", "torch-bf16"]
        if self.bank is not None and self.bank.merged is None:
            return paths
        if engine != "onnxruntime":
            paths.append("torch-int8")
        if self.engine == "onnxruntime":
            paths = [p for p in paths if p != "torch-fp32"] + ["ort-fp32", "ort-int8"]
            paths = paths if engine == "onnxruntime" else ["torch-fp32", *paths]
        return paths

    def _shape(self) -> dict:
        """What a pass's time depends on besides the machine (autotune's cache key)."""
        config = self.model.config
        single = self.bank is None or self.bank.merged is not None
        return {
            "layers": config.num_hidden_layers,
            "width": config.hidden_size,
            "heads": config.num_attention_heads,
            "vocab": config.vocab_size,
            # a full run and a merged LoRA are the same plain model; adapters add their work
            "body": "plain" if single else "+".join(sorted(set(self.bank.kinds.values()))),
            "budget": min(self.max_tokens, self.batch_rows * autotune.BATCH_WIDTH),
            "pad": self.tokenizer.pad_token_id,
        }

    def _retune(self) -> None:
        """After the adapters changed, the paths open to the model now (load tunes first)."""
        if self.requested is not None and self.requested[0] == "auto":
            self.tune(*self.requested)

    def _forward(self, batch: dict, names: list[str | None]) -> torch.Tensor:
        return self._run_path(self.choice.path_for(batch["input_ids"].numel()), batch, names)

    def _run_path(self, path: str, batch: dict, names: list[str | None]) -> torch.Tensor:
        """One pass on ``path``: a copy's (ort-*, torch-int8) where one model answers every
        row, else the model itself, under the path's precision if it is torch-fp32/bf16."""
        engine, precision = autotune.split(path)
        if engine != "torch" or precision == "int8":  # a copy's path
            if self._single(names):
                return self._copy(path)(batch["input_ids"], batch["attention_mask"])
            precision = self.precision
        with inference.autocast(precision, self.device):
            if self.bank is None:
                return self.model(**batch).logits
            return self.bank.forward(batch, names)

    def _path_runner(self, path: str):
        """``path`` as a function of (input_ids, attention_mask), for autotune."""

        def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            batch = {"input_ids": input_ids, "attention_mask": attention_mask}
            return self._run_path(path, batch, self._row_adapters(None, len(input_ids)))

        return run

    def _single(self, names: list[str | None]) -> bool:
        """Whether one plain model answers these rows (no adapters, or one merged)."""
        return self.bank is None or (
            self.bank.merged is not None and set(names) == {self.bank.merged}
        )

    def _copy(self, path: str):
        """The single model's copy for ``path``, built on first use."""
        if path not in self._copies:
            engine, precision = autotune.split(path)
            self._copies[path] = inference.engine_copy(self._plain_model(engine), precision, engine)
        return self._copies[path]

    def _plain_model(self, engine: str):
        """The single model without PEFT's wrapping; a copy where the engine changes it."""
        if self.bank is None:
            keep = engine == "onnxruntime" or self.precision == "int8"
            return self._model if keep else copy.deepcopy(self._model)
        plain = copy.deepcopy(self.bank.peft)
        plain.unmerge_adapter()
        return plain.merge_and_unload()
