"""Evaluating a run folder on a labelled file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .calibrate import softmax
from .data import read_labelled, strip_emoticons
from .metrics import calibration_metrics, classification_metrics
from .predict import SentimentClassifier


def evaluate(
    clf: SentimentClassifier,
    data: str | Path,
    text_column: str = "review",
    label_column: str = "label",
    encoding: str | None = None,
    strip: bool = False,
    batch_size: int | None = None,
    reliability: Path | None = None,
    label_map: dict[str, str | None] | None = None,
    confusion: Path | None = None,
) -> dict:
    """Metrics of ``clf`` on ``data``, calibration before and after the run's temperature;
    with ``strip`` the emoticons are removed first; ``reliability``: a PNG diagram there
    (P(second label) for two labels, the predicted label's probability for more);
    ``confusion``: the confusion matrix, labels named, as a PNG there.
    The file's labels must be the run's (names, or ids in the run's order), after
    ``label_map``; a row with another is refused, naming it, before anything is written."""
    examples = read_labelled(
        data, text_column, label_column, encoding, labels=clf.labels, label_map=label_map,
        labels_from="the run's labels",
    )  # fmt: skip
    texts = [strip_emoticons(t) for t in examples.texts] if strip else examples.texts
    logits, _ = clf.predict_logits(texts, batch_size)
    labels = np.asarray(examples.labels)
    probs = softmax(logits)
    metrics = classification_metrics(labels, probs, clf.labels)
    temperature = clf.info.temperature  # already in the head: logits * T are the raw ones
    before = softmax(logits * temperature)
    metrics["calibration"] = {
        "temperature": temperature,
        "before": calibration_metrics(labels, before),
        "after": calibration_metrics(labels, probs),
    }
    metrics.update({"data": str(data), "run": str(clf.run), "strip_emoticons": strip})
    if reliability is not None:
        from .report import plot_reliability

        path = plot_reliability(labels, before, probs, reliability, clf.labels)
        metrics["reliability_png"] = str(path)
    if confusion is not None:
        from .report import plot_confusion

        title = f"{Path(clf.run).name} on {Path(data).name} (rows true, columns predicted)"
        cm = metrics["confusion_matrix"]
        metrics["confusion_png"] = str(plot_confusion(cm, clf.labels, confusion, title))
    return metrics
