"""Classification metrics (scikit-learn) and how they are printed."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from .data import LABELS


def classification_metrics(labels, probs, names: list[str] = LABELS) -> dict:
    """accuracy, macro_f1, loss, per-class precision/recall/f1/support, confusion matrix."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(-1, keepdims=True)  # float32 softmax rows may miss 1 by 1e-7
    preds = probs.argmax(-1)
    ids = list(range(len(names)))
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", labels=ids, zero_division=0)),
        "loss": float(log_loss(labels, probs, labels=ids)),
        "n": int(len(labels)),
        "labels": list(names),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, name in enumerate(names)
        },
        # rows: true label, columns: predicted label
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
    }


def calibration_metrics(labels, probs, bins: int = 15) -> dict:
    """Expected calibration error (equal-width bins of the predicted label's probability: the
    top-label ECE, for any number of labels), Brier score (of P(second label) for two labels,
    as customary; the sum over labels for more: scikit-learn's), and log loss."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(-1, keepdims=True)
    confidence, predicted = probs.max(-1), probs.argmax(-1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = sum(
        abs((predicted[which == b] == labels[which == b]).mean() - confidence[which == b].mean())
        * (which == b).mean()
        for b in range(bins)
        if (which == b).any()
    )
    ids = list(range(probs.shape[1]))
    return {
        "ece": float(ece),
        "brier": float(brier_score_loss(labels, probs, labels=ids)),
        "log_loss": float(log_loss(labels, probs, labels=ids)),
    }


def render_table(metrics: dict, title: str = "") -> str:
    """A plain-text table of the metrics, for terminals and logs."""
    lines = [title] if title else []
    lines.append(
        f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
        f"loss {metrics['loss']:.4f}   n {metrics['n']}"
    )
    names = list(metrics["per_class"])
    width = max(10, *(len(n) + 2 for n in names))
    lines.append(f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name, m in metrics["per_class"].items():
        lines.append(
            f"{name:<{width}}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}"
            f"{m['support']:>10}"
        )
    if "calibration" in metrics:
        c = metrics["calibration"]
        lines.append(
            f"calibration (temperature {c['temperature']:.3f}): ECE {c['before']['ece']:.4f} -> "
            f"{c['after']['ece']:.4f}   Brier {c['before']['brier']:.4f} -> "
            f"{c['after']['brier']:.4f}   log loss {c['before']['log_loss']:.4f} -> "
            f"{c['after']['log_loss']:.4f}"
        )
    lines.append("confusion (rows true, columns predicted):")
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)
