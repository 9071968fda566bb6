"""Prediction: ``SentimentClassifier.load(run).predict(texts)`` and the console.

The classifier's other jobs live beside it: loading runs and adapters in loading.py, the path
each pass takes (the measured engine choice and its copies) in engine_paths.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import autotune
from .bank import AdapterBank
from .engine_paths import EnginePaths
from .errors import UserError
from .features import encode, pad_batch, token_budget_batches
from .loading import Loading
from .runfolder import RunInfo


@dataclass
class Prediction:
    label: str | None  # one of the run's labels ("negative"...); None for an empty text
    label_zh: str | None  # its Chinese name for display (负面...), or the label itself
    score: float | None  # probability of the predicted label
    probabilities: dict[str, float] | None
    truncated: bool = False  # the text was longer than max_length tokens and was cut
    adapter: str | None = None  # the adapter that answered
    # the calibrated head's raw scores (TEI's raw_scores); not part of the JSON answers
    logits: list[float] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["logits"]
        return out


def default_batch_rows(device: torch.device) -> int:
    """Rows per pass when no batch_size is given: on a CPU the 512-token budget binds first
    (16 rows of short posts); on a GPU 256 rows ran 3x faster than 16 (H100,
    docs/studies/bulk-bench-gpu.md)."""
    return 16 if device.type == "cpu" else 256


class SentimentClassifier(Loading, EnginePaths):
    """A trained run folder, loaded for prediction; lora/adapter runs can share one base.

    Adapters on one base may predict different label sets (a binary task, a three-way one,
    six emotions): each answers with its own head and labels (``labels_of``); ``labels`` and
    ``info`` are the active adapter's (a single model's own without adapters).

    Its jobs part three ways: ``Loading`` (loading.py: ``load``, ``add_adapter``,
    ``remove_adapter``, the adapters' records), ``EnginePaths`` (engine_paths.py: ``tune``,
    the path each pass takes, the copies it runs) and prediction, here.
    """

    def __init__(
        self,
        model,
        tokenizer,
        info: RunInfo,
        run: Path,
        precision: str = "fp32",
        bank: AdapterBank | None = None,
    ):
        self._model = model.eval()
        self.bank = bank
        self.precision = precision
        self.tokenizer = tokenizer  # carries the run's rules: max length, no token_type_ids
        self._info = info  # the loaded run's record: its base, and a single model's labels
        self._infos: dict[str, RunInfo] = {}  # each loaded adapter's record
        self.run = run
        self.max_length = int(tokenizer.model_max_length)
        # Padded tokens per forward pass (rows × width, features.token_budget_batches): on a CPU
        # 512 was fastest for a sorted mix of real posts (GPT-2 small, 2 cores: 512 ≥ 1024 >
        # 2048 tokens, bf16 and int8); a GPU wants its batches whole.
        self.max_tokens = 512 if self.device.type == "cpu" else 1 << 30
        self.batch_rows = default_batch_rows(self.device)
        self.engine = "torch"  # or "onnxruntime" (inference.cpu_engine)
        # the path each pass takes (autotune.py: measured under "auto")
        self.choice = autotune.fixed(precision, "torch", f"precision {precision}")
        self.requested: tuple[str, str] | None = None  # (precision, engine) as tune() was asked
        # copies of the single model for the ort-*/torch-int8 paths, keyed by path, built on
        # first use, dropped when adapters change (they hold the weights of the time)
        self._copies: dict[str, object] = {}
        self.merge_single = False  # fold a lone LoRA adapter back in after removals

    @property
    def model(self):
        return self.bank.model if self.bank else self._model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def predict_logits(
        self,
        texts: list[str],
        batch_size: int | None = None,
        adapter: str | list[str] | None = None,
    ) -> tuple[np.ndarray, list]:
        """Logits in input order; batches of similar length so little compute goes to padding.

        ``adapter``: one name for all texts, or one per text (rows for different LoRA
        adapters share forward passes). ``batch_size``: rows per pass, by default
        ``batch_rows`` (16 on a CPU, 256 on a GPU).

        Rows answered by adapters of different label sets differ in width: row i holds
        ``len(labels_of(adapter[i]))`` logits, in that adapter's label order, and the columns
        past them are -inf (a softmax gives them probability 0, argmax never picks them). When
        every row has the same width the array is exactly that wide.
        """
        ids, truncated = encode(self.tokenizer, texts)
        names = self._row_adapters(adapter, len(ids))
        width = max((len(self.labels_of(n)) for n in set(names)), default=len(self.labels))
        logits = np.full((len(ids), width), -np.inf, dtype=np.float32)
        pad, rows = self.tokenizer.pad_token_id, batch_size or self.batch_rows
        for group in self._groups(names):
            lengths = [len(ids[i]) for i in group]
            for batch_rows in token_budget_batches(lengths, rows, self.max_tokens):
                idx = [group[j] for j in batch_rows]
                # widths in steps of 8: 20 tensor shapes instead of 160 keep the CPU kernels'
                # per-shape caches (oneDNN) and the allocator's pools from growing (bulk RSS)
                batch = pad_batch([ids[i] for i in idx], pad, multiple=8)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out = self._forward(batch, [names[i] for i in idx]).float().cpu().numpy()
                logits[idx, : out.shape[1]] = out
        return logits, truncated

    def forward_batch(self, batch: dict) -> torch.Tensor:
        """Logits of one padded batch (``features.pad_batch``) by the active adapter."""
        return self._forward(batch, self._row_adapters(None, len(batch["input_ids"])))

    def _row_adapters(self, adapter, n: int) -> list[str | None]:
        if self.bank is None:
            if adapter is not None:
                raise UserError("this classifier has no adapters to choose from")
            return [None] * n
        names = [adapter or self.bank.active] * n if not isinstance(adapter, list) else adapter
        if len(names) != n:
            raise UserError(f"{len(names)} adapter names for {n} texts")
        for name in set(names):
            self.bank.require(name)
        return names

    def _groups(self, names: list[str | None]) -> list[list[int]]:
        """Rows that can share forward passes: LoRA rows whose heads are equally wide together
        (PEFT's mixed batch stacks the heads' outputs), each other adapter alone."""
        kinds = self.bank.kinds if self.bank else {}
        groups: dict[tuple, list[int]] = {}
        widths = {n: len(self.labels_of(n)) for n in set(names)}
        for i, name in enumerate(names):
            lora = kinds.get(name) == "lora" and not self.bank.merged
            key = ("lora", widths[name]) if lora else ("one", name)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def predict_proba(
        self,
        texts: list[str],
        batch_size: int | None = None,
        adapter: str | list[str] | None = None,
    ) -> np.ndarray:
        """Probabilities per row, in the answering adapter's label order; with adapters of
        different label sets, the columns past a row's labels are 0 (see predict_logits)."""
        logits, _ = self.predict_logits(list(texts), batch_size, adapter)
        return torch.from_numpy(logits).softmax(-1).numpy()

    def predict(
        self,
        texts: str | list[str],
        batch_size: int | None = None,
        adapter: str | list[str] | None = None,
    ) -> list[Prediction]:
        """One Prediction per text, in order; empty texts get label None instead of a guess.

        ``adapter`` picks the adapter (one name, or one per text); default the active one.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = ["" if t is None else str(t) for t in texts]
        check_unicode(texts)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        names = self._row_adapters(adapter, len(texts))
        out = [Prediction(None, None, None, None, adapter=names[i]) for i in range(len(texts))]
        if keep:
            logits, truncated = self.predict_logits(
                [texts[i].strip() for i in keep],
                batch_size,
                [names[i] for i in keep] if self.bank else None,
            )
            probs = torch.from_numpy(logits).softmax(-1).numpy()
            for j, i in enumerate(keep):
                out[i] = self._prediction(logits[j], probs[j], truncated[j], names[i])
        return out

    def _prediction(self, logits, probs, truncated: bool, name: str | None) -> Prediction:
        """One row's answer in the labels of the adapter that gave it (its own width)."""
        info = self.info_of(name)
        width = len(info.labels)
        k = int(probs[:width].argmax())
        return Prediction(
            info.labels[k],
            info.labels_zh[k],
            float(probs[k]),
            {label: float(p) for label, p in zip(info.labels, probs[:width])},
            truncated,
            name,
            [float(x) for x in logits[:width]],
        )


def is_valid_unicode(text: str) -> bool:
    """False for lone surrogates (undecodable bytes in argv, \\ud800 in JSON): no tokenizer
    can encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_unicode(texts: list[str]) -> None:
    for i, text in enumerate(texts):
        if not is_valid_unicode(text):
            shown = text.encode("utf-8", "backslashreplace").decode("ascii", "replace")[:40]
            raise UserError(
                f"text {i + 1} is not valid Unicode ({shown!r}): check the terminal's or the "
                "file's encoding"
            ) from None


def format_console(pred: Prediction, max_length: int, names_zh: dict | None = None) -> str:
    """The console's answer: the label and its probability; with more than two labels a second
    line has every label's probability (shown by ``names_zh``, label -> display name)."""
    if pred.label is None:
        return "请输入要分析的文本 (输入为空)"
    if len(pred.probabilities) == 2:  # the binary task, worded as always
        line = f"预测结果: {pred.label_zh}情感 (置信度: {pred.score:.4f})"
    else:
        line = f"预测结果: {pred.label_zh} (置信度: {pred.score:.4f})"
    if pred.truncated:
        line += f"  [文本超过 {max_length} 个词元，已截断]"
    if len(pred.probabilities) > 2:
        names_zh = names_zh or {}
        shown = (f"{names_zh.get(n, n)} {p:.4f}" for n, p in pred.probabilities.items())
        line += "\n  各类概率: " + ", ".join(shown)
    return line


def display_names(clf: SentimentClassifier, name: str | None) -> dict[str, str]:
    """label -> its display name (run.json's labels_zh) for the adapter ``name``."""
    info = clf.info_of(name)
    return dict(zip(info.labels, info.labels_zh))


def load_classifier(
    run: Path | None,
    adapter_specs: list[str] | None,
    base_model=None,
    precision: str = "auto",
    allow_incomplete: bool = False,
) -> SentimentClassifier:
    """A run folder and/or NAME=RUN adapters, all on one base; the first answers by default."""
    pairs = [(Path(run).resolve().name, Path(run))] if run else []
    for spec in adapter_specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--adapter wants NAME=RUN_FOLDER, not {spec!r}")
        pairs.append((name, Path(path)))
    if not pairs:
        raise UserError("give a run folder or at least one --adapter NAME=RUN_FOLDER")
    if len(pairs) > 1 and precision == "int8":
        raise UserError("--precision int8 serves a single run; several adapters need fp32 or bf16")
    (name, first), rest = pairs[0], pairs[1:]
    clf = SentimentClassifier.load(
        first,
        base_model,
        precision=precision,
        merge=not rest,
        name=name,
        allow_incomplete=allow_incomplete,
    )
    for name, path in rest:
        clf.add_adapter(name, path)
    clf.merge_single = True  # when removals leave one LoRA adapter, fold it in again (faster)
    return clf


def console(clf: SentimentClassifier, stdin=None, stdout=None) -> None:
    """Interactive loop: one text per line; 'q' or Ctrl-D quits; ':use NAME', ':adapters'."""
    import sys

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    print("输入微博文本进行情感分析，输入 q 退出。", file=stdout)
    if len(clf.adapters) > 1:
        print(
            "适配器: " + ", ".join(clf.adapters) + "  (:use 名称 切换, :adapters 列出)", file=stdout
        )
    while True:
        print("\n请输入文本: ", end="", file=stdout, flush=True)
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            break
        text = line.strip()
        if not line or text.lower() in ("q", "quit", "exit"):
            break
        if text.startswith(":"):
            print(console_command(clf, text), file=stdout)
            continue
        try:
            pred = clf.predict([text])[0]
            names_zh = display_names(clf, pred.adapter)
            print(format_console(pred, clf.max_length, names_zh), file=stdout)
        except UserError as e:  # one bad line, not the end of the session
            print(f"error: {e}", file=stdout)
    print("\n再见!", file=stdout)


def console_command(clf: SentimentClassifier, text: str) -> str:
    command, _, arg = text[1:].partition(" ")
    if command == "adapters":
        return "\n".join(("* " if a == clf.active_adapter else "  ") + a for a in clf.adapters) or (
            "(no adapters: a single model)"
        )
    if command == "use":
        try:
            clf.use(arg.strip())
        except UserError as e:
            return f"error: {e}"
        return f"now using {arg.strip()}"
    return "commands: :use NAME, :adapters, q"
