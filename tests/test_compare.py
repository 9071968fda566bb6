"""`compare` and `report` on the tiny model: every method, its figures, tables and plots."""

from __future__ import annotations

import json

from test_cli import cli


def test_compare_writes_table_json_and_plots(tiny_base, task_files, tmp_path):
    out = tmp_path / "cmp"
    code, _, err = cli(
        "compare",
        "--base-model",
        tiny_base,
        "--data",
        task_files[0],
        "--dev-data",
        task_files[1],
        "--extra-test",
        f"again={task_files[1]}",
        "--out",
        out,
        "--epochs",
        1,
        "--repeats",
        2,
        "--max-train-samples",
        200,
        "--precision",
        "no",
    )
    assert code == 0, err
    report = json.loads((out / "comparison.json").read_text())
    results = report["results"]
    assert list(results) == ["full", "adapter", "lora", "tfidf"]
    for method, r in results.items():
        for key in (
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
        ):
            assert r[key]["mean"] > 0, (method, key)
        assert len(report["per_seed"][method]) == 2
    assert report["meta"]["seeds"] == [42, 43] and report["meta"]["sampled_train_rows"] == 200
    # the classical baseline sees the sentiment characters directly: it must solve the task
    assert results["tfidf"]["dev_accuracy"]["mean"] > 0.95
    assert results["lora"]["trainable_params"]["mean"] < results["full"]["trainable_params"]["mean"]
    md = (out / "comparison.md").read_text()
    assert "| lora |" in md and "±" in md and "again acc" in md and "weibo-senti compare" in md
    for png in ("curves.png", "confusion.png", "accuracy_vs_size.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_report_plots_a_run(trained_runs, tmp_path):
    code, out, err = cli("report", trained_runs["lora"], "--out", tmp_path / "r.png")
    assert code == 0, err
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "metrics.jsonl" in err
