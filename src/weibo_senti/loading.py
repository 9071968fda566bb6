"""Loading a run folder into a classifier, and adding or removing adapters on its base.

``Loading`` is mixed into ``predict.SentimentClassifier``; the state it reads and writes
(``_model``, ``bank``, ``_info``, ``_infos``, ``_copies``, ``engine``, ``merge_single``, the
tokenizer and ``max_length``) is set in that class's ``__init__``, and it calls ``tune`` and
``_retune`` of ``engine_paths.EnginePaths``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import inference, modeling, runfolder
from .bank import AdapterBank
from .errors import UserError
from .runfolder import RunInfo


class Loading:
    """How a classifier comes to hold its model: ``load`` a run, ``add_adapter`` and
    ``remove_adapter`` on the shared base, and which adapter's record and labels answer."""

    @classmethod
    def load(
        cls,
        run: str | Path,
        base_model: str | None = None,
        device: str | None = None,
        precision: str = "auto",
        merge: bool = True,
        name: str | None = None,
        engine: str | None = None,
        allow_incomplete: bool = False,
    ):
        """Load a run folder; lora/adapter runs also need their base (found through the
        recorded name, absolute path or hub id; ``base_model`` overrides).

        The run's adapter is loaded under ``name`` (default: the folder's name); more can be
        added with ``add_adapter``. A single LoRA adapter is merged into the base weights
        unless ``merge=False``. ``precision``: "bf16" runs under bf16 autocast, "int8"
        runs on int8 weights (CPU, no further adapters), "fp32" is what the stock clients
        give, and "auto" runs the path measured fastest on this machine among those that agree
        with fp32 (``tune``; the timings are cached per machine and model shape).
        ``engine`` restricts a single model's fp32 and int8 passes on a CPU: "onnxruntime"
        (with `weibo-senti[onnx]`: exported once, cached), "torch", or "auto" (both compete);
        None reads ``WEIBO_SENTI_ENGINE`` (how the CLI, the server and Ray workers are told).
        A run that has not finished training is refused unless ``allow_incomplete``.
        """
        run = Path(run)
        info = runfolder.read_info(run)
        if not allow_incomplete:
            runfolder.require_complete(run, info)
        tokenizer = runfolder.run_tokenizer(run, info)
        device = device or ("cuda" if torch.cuda.is_available() and precision != "int8" else "cpu")
        requested = precision
        # "auto" starts in fp32; the measured choice (tune) settles the model's own precision
        precision = "fp32" if precision == "auto" else inference.resolve(precision, device)
        if info.method == "full":
            model = runfolder.load_full_model(run)
            modeling.check_tokenizer_fits(tokenizer, model.config)
            model = inference.prepare(model.to(device))
            clf = cls(model, tokenizer, info, run, precision)
        else:
            base = runfolder.resolve_base(run, info, base_model)
            model = modeling.load_base_classifier(base, tokenizer, info.labels).to(device)
            clf = cls(model, tokenizer, info, run, precision, AdapterBank(model))
            clf.add_adapter(name or run.resolve().name, run, allow_incomplete)
            if precision == "int8":  # quantized weights cannot take adapters any more
                clf._model, clf.bank = clf.bank.fold(), None
            elif merge:
                clf.bank.merge()
        clf.merge_single = merge
        engine = engine or os.environ.get("WEIBO_SENTI_ENGINE", "auto")
        if clf.device.type == "cpu":
            clf.engine = inference.cpu_engine(engine)
        clf.tune(requested, engine)
        return clf

    def add_adapter(self, name: str, run: str | Path, allow_incomplete: bool = False) -> None:
        """Load another lora/adapter run onto the same base (never reloads the base)."""
        if self.bank is None:
            raise UserError(
                "this classifier has no shared base (a full or int8 model): "
                "load a lora/adapter run with precision fp32/bf16 to add adapters"
            )
        run = Path(run)
        info = runfolder.read_info(run)
        if not allow_incomplete:
            runfolder.require_complete(run, info)
        mine = self._info.base.fingerprint
        if info.base.fingerprint and mine and not runfolder.same_base(info.base.fingerprint, mine):
            raise UserError(
                f"{run} was trained on a different base ({info.base.fingerprint}) than the "
                f"loaded one ({mine})"
            )
        self._check_same_tokenizer(run, info)
        if name in self.bank.kinds:
            raise UserError(f"an adapter called '{name}' is already loaded")
        self._copies.clear()  # they stand for the weights before this adapter
        # its record first: a server's listing (another thread) never finds it without labels
        self._infos[name] = info
        try:  # any label set: the adapter brings its own head, as wide as its labels
            self.bank.add(name, run, info.method, len(info.labels))
        except BaseException:
            del self._infos[name]
            raise
        self._retune()

    def _check_same_tokenizer(self, run: Path, info: RunInfo) -> None:
        """Adapters share the loaded tokenizer: one that splits or pads otherwise is refused."""
        theirs = runfolder.run_tokenizer(run, info)
        if theirs.get_vocab() != self.tokenizer.get_vocab():
            raise UserError(
                f"{run} was trained with another tokenizer ({len(theirs)} tokens) than the "
                f"loaded one ({len(self.tokenizer)} tokens)"
            )
        if theirs.model_max_length != self.max_length:
            raise UserError(
                f"{run} reads up to {theirs.model_max_length} tokens, the loaded run "
                f"{self.max_length}: serve them from separate processes"
            )

    def use(self, name: str) -> None:
        """Make ``name`` the adapter that predict() uses by default."""
        self._require_bank().use(name)

    def remove_adapter(self, name: str) -> None:
        """Unload ``name``: its weights go, the base stays as it was before loading it."""
        self._copies.clear()
        self._require_bank().remove(name)
        self._infos.pop(name, None)
        if self.merge_single:
            self.bank.merge()
        self._retune()

    @property
    def adapters(self) -> list[str]:
        return list(self.bank.kinds) if self.bank else []

    @property
    def active_adapter(self) -> str | None:
        return self.bank.active if self.bank else None

    def info_of(self, name: str | None = None) -> RunInfo:
        """The run record of adapter ``name`` (default: the active one; without adapters the
        loaded run's)."""
        if self.bank is None or (name is None and self.bank.active is None):
            if name is not None:
                raise UserError("this classifier has no adapters to choose from")
            return self._info
        name = name or self.bank.active
        self.bank.require(name)
        return self._infos[name]

    def labels_of(self, name: str | None = None) -> list[str]:
        """The labels adapter ``name`` predicts, in its head's order (default: the active one)."""
        return list(self.info_of(name).labels)

    @property
    def info(self) -> RunInfo:
        return self.info_of()

    @property
    def labels(self) -> list[str]:
        return self.labels_of()

    def _require_bank(self) -> AdapterBank:
        if self.bank is None:
            raise UserError("this classifier serves a single model without adapters")
        return self.bank
