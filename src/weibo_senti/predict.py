"""Inference: ``SentimentClassifier.load(run).predict(texts)``, the console, and batch files."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import inference, modeling
from .data import LABELS, LABELS_ZH, Examples, read_texts
from .errors import UserError
from .features import encode, pad_batch
from .files import atomic_write
from .hub import resolve_base_model
from .runs import base_fingerprint, read_run_info

log = logging.getLogger("weibo_senti")


@dataclass
class Prediction:
    label: str | None  # "negative" / "positive"; None for an empty text
    label_zh: str | None  # 负面 / 正面, for display
    score: float | None  # probability of the predicted label
    probabilities: dict[str, float] | None
    truncated: bool = False  # the text was longer than max_length tokens and was cut

    def to_dict(self) -> dict:
        return asdict(self)


class SentimentClassifier:
    """A trained run folder, loaded for prediction."""

    def __init__(self, model, tokenizer, info: dict, run: Path, precision: str = "fp32"):
        self.model = model.eval()
        self.precision = precision
        self.tokenizer = tokenizer
        self.info = info
        self.run = run
        self.labels = list(info["labels"])
        self.max_length = int(info["max_length"])

    @classmethod
    def load(
        cls,
        run: str | Path,
        base_model: str | None = None,
        device: str | None = None,
        precision: str = "auto",
        merge: bool = True,
    ):
        """Load a run folder; lora/adapter runs also need the base (recorded id or ``base_model``).

        LoRA is merged into the base weights unless ``merge=False``; ``precision`` "bf16" runs
        under bf16 autocast, "int8" quantizes the linear layers dynamically (CPU only), "auto"
        is bf16 where the hardware has fast bf16 (AMX/AVX512-BF16 CPUs, recent GPUs), else fp32.
        """
        modeling.quiet_transformers()
        run = Path(run)
        info = read_run_info(run)
        tokenizer = modeling.load_tokenizer(run)
        if tokenizer.pad_token_id != info["pad_token_id"]:
            raise UserError(
                f"{run}: tokenizer [PAD] id {tokenizer.pad_token_id} differs from the recorded "
                f"pad id {info['pad_token_id']}"
            )
        base = None
        if info["method"] != "full":
            base = resolve_base_model(base_model or info["base_model"])
            from transformers import AutoConfig

            found = base_fingerprint(AutoConfig.from_pretrained(str(base)))
            if info.get("base") and found != info["base"]:
                raise UserError(
                    f"{run} was trained on a base with {info['base']}, but {base} has {found}"
                )
        model = modeling.load_trained(run, info["method"], base, tokenizer)
        device = device or ("cuda" if torch.cuda.is_available() and precision != "int8" else "cpu")
        precision = inference.resolve(precision, torch.device(device))
        model = inference.prepare(model.to(device), precision, merge)
        return cls(model, tokenizer, info, run, precision)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def predict_logits(self, texts: list[str], batch_size: int = 16) -> tuple[np.ndarray, list]:
        """Logits in input order; batches of similar length so little compute goes to padding.

        16 is the CPU optimum for GPT-2 small: larger batches get slower per text (benchmark).
        """
        ids, truncated = encode(self.tokenizer, texts, self.max_length)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        logits = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        pad = self.tokenizer.pad_token_id
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = pad_batch([ids[i] for i in idx], pad)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with inference.autocast(self.precision, self.device):
                logits[idx] = self.model(**batch).logits.float().cpu().numpy()
        return logits, truncated

    def predict_proba(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        logits, _ = self.predict_logits(list(texts), batch_size)
        return torch.from_numpy(logits).softmax(-1).numpy()

    def predict(self, texts: str | list[str], batch_size: int = 16) -> list[Prediction]:
        """One Prediction per text, in order; empty texts get label None instead of a guess."""
        if isinstance(texts, str):
            texts = [texts]
        texts = ["" if t is None else str(t) for t in texts]
        keep = [i for i, t in enumerate(texts) if t.strip()]
        out = [Prediction(None, None, None, None) for _ in texts]
        if keep:
            logits, truncated = self.predict_logits([texts[i].strip() for i in keep], batch_size)
            probs = torch.from_numpy(logits).softmax(-1).numpy()
            for j, i in enumerate(keep):
                k = int(probs[j].argmax())
                out[i] = Prediction(
                    self.labels[k],
                    LABELS_ZH[k] if self.labels == LABELS else self.labels[k],
                    float(probs[j, k]),
                    {name: float(p) for name, p in zip(self.labels, probs[j])},
                    truncated[j],
                )
        return out


def format_console(pred: Prediction, max_length: int) -> str:
    if pred.label is None:
        return "请输入要分析的文本 (输入为空)"
    line = f"预测结果: {pred.label_zh}情感 (置信度: {pred.score:.4f})"
    if pred.truncated:
        line += f"  [文本超过 {max_length} 个词元，已截断]"
    return line


def console(clf: SentimentClassifier, stdin=None, stdout=None) -> None:
    """Interactive loop: one text per line, 'q' or Ctrl-D quits."""
    import sys

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    print("输入微博文本进行情感分析，输入 q 退出。", file=stdout)
    while True:
        print("\n请输入文本: ", end="", file=stdout, flush=True)
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            break
        if not line or line.strip().lower() in ("q", "quit", "exit"):
            break
        print(format_console(clf.predict([line.strip()])[0], clf.max_length), file=stdout)
    print("\n再见!", file=stdout)


def predict_file(
    clf: SentimentClassifier,
    inp: Path,
    output: Path | None,
    text_column: str,
    encoding: str | None = None,
    batch_size: int = 16,
) -> list[dict]:
    """Predict every row of a file; write CSV or JSONL (by suffix) atomically; return rows."""
    examples: Examples = read_texts(inp, text_column, encoding)
    preds = clf.predict(examples.texts, batch_size)
    rows = []
    for i, (text, p) in enumerate(zip(examples.texts, preds)):
        row = {k: v[i] for k, v in examples.extra.items()}
        row.update(
            {
                "text": text,
                "label": p.label or "",
                "label_zh": p.label_zh or "",
                "score": "" if p.score is None else round(p.score, 6),
            }
        )
        for name in clf.labels:
            row[f"p_{name}"] = "" if p.probabilities is None else round(p.probabilities[name], 6)
        row["truncated"] = p.truncated
        rows.append(row)
    if output is not None:
        atomic_write(output, lambda tmp: tmp.write_text(serialize(rows, output), encoding="utf-8"))
    return rows


def serialize(rows: list[dict], path: Path) -> str:
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise UserError(f"--output must end in .csv, .tsv or .jsonl, not {path.name}")
    buf = io.StringIO()
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["text"], delimiter=delim)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
