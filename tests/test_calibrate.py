"""Temperature scaling: fitted on dev after training, folded into the head, reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import cli

from weibo_senti.calibrate import fit_temperature, softmax
from weibo_senti.metrics import calibration_metrics


def test_fit_finds_the_temperature_that_made_logits_overconfident():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 2, size=(4000, 2))
    labels = [int(rng.random() < p) for p in softmax(true)[:, 1]]
    assert abs(fit_temperature(true * 3.0, labels) - 3.0) < 0.3
    assert abs(fit_temperature(true / 2.0, labels) - 0.5) < 0.05


def test_ece_of_perfectly_calibrated_and_of_overconfident_predictions():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 20000)
    labels = (rng.uniform(0, 1, 20000) < p).astype(int)
    probs = np.stack([1 - p, p], 1)
    assert calibration_metrics(labels, probs)["ece"] < 0.02
    sharp = np.stack([1 - (p > 0.5), p > 0.5], 1).astype(float) * 0.98 + 0.01
    assert calibration_metrics(labels, sharp)["ece"] > 0.15


def test_temperature_and_calibration_work_for_any_number_of_labels():
    rng = np.random.default_rng(2)
    true = rng.normal(0, 2, size=(6000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(true)])
    assert abs(fit_temperature(true * 2.5, labels) - 2.5) < 0.25
    c = calibration_metrics(labels, softmax(true))
    assert c["ece"] < 0.03  # the true probabilities: calibrated, top label or not
    probs = softmax(true).astype(np.float64)
    onehot = np.eye(4)[labels]
    assert c["brier"] == pytest.approx(((probs - onehot) ** 2).sum(1).mean(), rel=1e-4)
    assert calibration_metrics(labels, softmax(true * 3))["ece"] > 0.1  # overconfident


def test_training_folds_a_temperature_that_lowers_dev_log_loss(trained_runs):
    for method, run in trained_runs.items():
        info = json.loads((run / "run.json").read_text())
        report = json.loads((run / "eval_results.json").read_text())["calibration"]
        assert info["temperature"] == report["temperature"] != 1.0, method
        assert report["after"]["log_loss"] <= report["before"]["log_loss"], method


def test_evaluate_reports_calibration_before_and_after_and_draws_it(
    trained_runs, task_files, tmp_path
):
    png = tmp_path / "reliability.png"
    code, out, err = cli(
        "evaluate", trained_runs["lora"], "--data", task_files[1], "--json", "--reliability", png
    )
    assert code == 0, err
    c = json.loads(out)["calibration"]
    assert set(c) == {"temperature", "before", "after"}
    assert c["after"]["log_loss"] <= c["before"]["log_loss"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = cli("evaluate", trained_runs["lora"], "--data", task_files[1])
    assert "calibration (temperature" in out and "ECE" in out
