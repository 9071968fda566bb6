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


def classification_metrics(labels, probs) -> dict:
    """accuracy, macro_f1, loss, per-class precision/recall/f1/support, confusion matrix."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(-1, keepdims=True)  # float32 softmax rows may miss 1 by 1e-7
    preds = probs.argmax(-1)
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=[0, 1], zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", labels=[0, 1], zero_division=0)),
        "loss": float(log_loss(labels, probs, labels=[0, 1])),
        "n": int(len(labels)),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, name in enumerate(LABELS)
        },
        # rows: true label, columns: predicted label
        "confusion_matrix": confusion_matrix(labels, preds, labels=[0, 1]).tolist(),
    }


def calibration_metrics(labels, probs, bins: int = 15) -> dict:
    """Expected calibration error (equal-width bins of the predicted label's probability),
    Brier score of P(positive), and log loss."""
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
    return {
        "ece": float(ece),
        "brier": float(brier_score_loss(labels, probs[:, 1], pos_label=1)),
        "log_loss": float(log_loss(labels, probs, labels=[0, 1])),
    }


def render_table(metrics: dict, title: str = "") -> str:
    """A plain-text table of the metrics, for terminals and logs."""
    lines = [title] if title else []
    lines.append(
        f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
        f"loss {metrics['loss']:.4f}   n {metrics['n']}"
    )
    lines.append(f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name, m in metrics["per_class"].items():
        lines.append(
            f"{name:<10}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}"
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
    cm = metrics["confusion_matrix"]
    lines.append("confusion (rows true, columns predicted):")
    lines.append(f"{'':<10}{LABELS[0]:>10}{LABELS[1]:>10}")
    for i, name in enumerate(LABELS):
        lines.append(f"{name:<10}{cm[i][0]:>10}{cm[i][1]:>10}")
    return "\n".join(lines)
