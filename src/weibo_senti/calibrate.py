"""Temperature scaling: one number fitted on the dev set after training, folded into the head.

Dividing the ``score`` head's weights by the temperature divides every logit by it (GPT-2's
head has no bias), so the run's own files give calibrated probabilities in every client:
weibo-senti, a stock ``pipeline``, PEFT, a merged or exported folder. Labels never change.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from . import runfolder
from .data import Examples
from .metrics import calibration_metrics

log = logging.getLogger("weibo_senti")


def fit_temperature(logits: np.ndarray, labels) -> float:
    """The T > 0 that minimizes the log loss of softmax(logits / T) (L-BFGS on log T)."""
    x = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(list(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        value.backward()
        return value

    opt.step(loss)
    return float(log_t.detach().exp())


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(-1).numpy()


def calibrate(run: Path, dev: Examples, base: str | None = None) -> dict:
    """Fit the temperature on ``dev``, fold it into the run's head, record it and the dev
    calibration before and after."""
    from .predict import SentimentClassifier

    clf = SentimentClassifier.load(run, base, precision="fp32", merge=False, allow_incomplete=True)
    logits, _ = clf.predict_logits(dev.texts)
    temperature = fit_temperature(logits, dev.labels)
    report = {
        "temperature": temperature,
        "before": calibration_metrics(dev.labels, softmax(logits)),
        "after": calibration_metrics(dev.labels, softmax(logits / temperature)),
    }
    runfolder.fold_temperature(run, temperature, report)
    log.info(
        "calibrated: temperature %.3f, dev ECE %.4f -> %.4f",
        temperature,
        report["before"]["ece"],
        report["after"]["ece"],
    )
    return report
