"""`compare` and `report` on the tiny model: every method, its figures, tables and plots."""

from __future__ import annotations

import json

import pytest
from test_cli import cli

FIGURES = (
    "trainable_params",
    "artifact_mb",
    "train_wall_s",
    "infer_samples_per_s",
    "latency_ms",
    "peak_rss_mb",
    "dev_accuracy",
    "dev_macro_f1",
    "dev_stripped_accuracy",
    "again_accuracy",
    "weibo2018_accuracy",
    "smp2020_accuracy",
    "human_mean_accuracy",
    "dev_ece",
    "dev_brier",
    "dev_log_loss",
    "weibo2018_ece",
)


def run_compare(tiny_base, task_files, tmp_path):
    """`weibo-senti compare` on the tiny task, with a human-labelled folder of ../shared's
    layout holding the tiny task's dev rows; returns the output folder."""
    out, human = tmp_path / "cmp", tmp_path / "human"
    for rel in ("weibo2018/train.csv", "smp2020_usual/eval.csv"):
        (human / rel).parent.mkdir(parents=True)
        (human / rel).write_bytes(task_files[1].read_bytes())
    code, _, err = cli(
        "compare", "--base-model", tiny_base, "--data", task_files[0],
        "--dev-data", task_files[1], "--extra-test", f"again={task_files[1]}",
        "--human-data", human,
        "--max-length", 40,  # the tiny base has 64 positions
        "--out", out, "--epochs", 1, "--repeats", 2, "--max-train-samples", 200,
        "--precision", "no",
    )  # fmt: skip
    assert code == 0, err
    return out


def test_compare_writes_table_json_and_plots(tiny_base, task_files, tmp_path):
    out = run_compare(tiny_base, task_files, tmp_path)
    report = json.loads((out / "comparison.json").read_text())
    results = report["results"]
    assert list(results) == ["full", "adapter", "lora", "tfidf"]
    for method, r in results.items():
        for key in FIGURES:
            assert r[key]["mean"] > 0, (method, key)
        assert "nlpcc_accuracy" not in r  # not in the folder: not invented
        mean = (r["weibo2018_accuracy"]["mean"] + r["smp2020_accuracy"]["mean"]) / 2
        assert r["human_mean_accuracy"]["mean"] == pytest.approx(mean)
        if method != "tfidf":  # calibration before the temperature is recovered exactly
            assert "dev_ece_before" in r
        assert len(report["per_seed"][method]) == 2
    assert report["meta"]["seeds"] == [42, 43] and report["meta"]["sampled_train_rows"] == 200
    # the classical baseline sees the sentiment characters directly: it must solve the task
    assert results["tfidf"]["dev_accuracy"]["mean"] > 0.95
    assert results["lora"]["trainable_params"]["mean"] < results["full"]["trainable_params"]["mean"]
    md = (out / "comparison.md").read_text()
    assert "| lora |" in md and "±" in md and "again acc" in md and "weibo-senti compare" in md
    assert "mean of the human-labelled sets" in md and "dev ECE (before → after T)" in md
    assert "weibo2018 ECE" in md and "No human-labelled set" not in md
    for png in ("curves.png", "confusion.png", "accuracy_vs_size.png", "accuracy_by_set.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_report_plots_a_run(trained_runs, tmp_path):
    code, out, err = cli("report", trained_runs["lora"], "--out", tmp_path / "r.png")
    assert code == 0, err
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "metrics.jsonl" in err


def test_compare_refuses_a_human_data_folder_without_the_sets(tmp_path):
    code, _, err = cli(
        "compare", "--data", tmp_path / "x.csv", "--out", tmp_path / "o", "--human-data", tmp_path
    )
    assert code == 2 and "no human-labelled set under" in err and "weibo2018/train.csv" in err


def test_report_without_human_sets_says_so_loudly():
    from weibo_senti.compare import render

    cell = {"mean": 0.5, "std": 0.0}
    row = {k: cell for k in ("dev_accuracy", "dev_stripped_accuracy", "dev_ece", "dev_brier")}
    row.update(
        {
            "dev_log_loss": cell,
            "trainable_params": cell,
            "trainable_share": cell,
            "artifact_mb": cell,
            "train_wall_s": cell,
            "train_samples_per_s": cell,
            "infer_samples_per_s": cell,
            "latency_ms": cell,
            "peak_rss_mb": cell,
        }
    )
    meta = {
        "command": "",
        "base_model": "b",
        "data": "d",
        "dev_data": None,
        "human_sets": {},
        "extra_tests": {},
        "sampled_train_rows": None,
        "seeds": [42],
        "repeats": 1,
    }
    md = render({"tfidf": row}, meta, [])
    assert "No human-labelled set was found" in md and "mean of the human" not in md


def _exit_at_once():
    import os

    os._exit(3)


def test_a_child_that_dies_without_answering_is_reported_not_waited_for():
    from weibo_senti.errors import UserError
    from weibo_senti.isolate import run_isolated

    with pytest.raises(UserError, match="died .exit code 3"):
        run_isolated(_exit_at_once)
