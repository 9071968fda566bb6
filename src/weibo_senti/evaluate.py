"""Evaluating a run folder on a labelled file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import read_labelled, strip_emoticons
from .metrics import classification_metrics
from .predict import SentimentClassifier


def evaluate(
    clf: SentimentClassifier,
    data: str | Path,
    text_column: str = "review",
    label_column: str = "label",
    encoding: str | None = None,
    strip: bool = False,
    batch_size: int = 16,
) -> dict:
    """Metrics of ``clf`` on ``data``; with ``strip`` the [表情] emoticons are removed first."""
    examples = read_labelled(data, text_column, label_column, encoding)
    texts = [strip_emoticons(t) for t in examples.texts] if strip else examples.texts
    probs = clf.predict_proba(texts, batch_size)
    metrics = classification_metrics(np.asarray(examples.labels), probs)
    metrics.update({"data": str(data), "run": str(clf.run), "strip_emoticons": strip})
    return metrics
