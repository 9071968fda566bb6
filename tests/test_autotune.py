"""The measured "auto": each path timed once per machine and shape, cached, the fastest that
agrees with fp32 kept, overrides obeyed, the flag rules only when timing fails."""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest
import torch
from test_bank import TEXTS, flipped_run  # noqa: F401  (a fixture: the same task, labels swapped)
from test_inference import fake_timings

from weibo_senti import autotune, inference, onnx_runtime
from weibo_senti.predict import SentimentClassifier


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIBO_SENTI_CACHE", str(tmp_path))
    return tmp_path / "engines.json"


def fp32_probs(run):
    return SentimentClassifier.load(run, precision="fp32", engine="torch").predict_proba(TEXTS)


def test_auto_times_every_path_once_and_reads_the_cache_after(trained_runs, cache, monkeypatch):
    run = trained_runs["full"]
    clf = SentimentClassifier.load(run, device="cpu")
    assert clf.choice.source == "measured now"
    entries = json.loads(cache.read_text())
    assert len(entries) == 1
    ((key, entry),) = entries.items()
    assert json.loads(key)["threads"] == torch.get_num_threads()
    timed = {p for p, t in entry["timings"].items() if t.get("lone_ms", 0) > 0 < t["batch_ms"]}
    assert "torch-fp32" in timed
    assert set(entry["timings"]) == {p for p, t in clf.choice.timings.items() if "failed" not in t}
    if onnx_runtime.missing() is None and onnx_runtime.int8_weight_bits():
        assert {"ort-fp32", "ort-int8"} <= set(entry["timings"])
    for path in (clf.choice.lone, clf.choice.batch):  # the winners are timed, agreeing ones
        assert path in timed and path in clf.choice.gaps and path not in clf.choice.refused
    usable = [p for p in timed if p not in clf.choice.refused]  # faster ones were refused
    assert min(usable, key=lambda p: entry["timings"][p]["lone_ms"]) == clf.choice.lone
    got, want = clf.predict_proba(TEXTS), fp32_probs(run)
    assert (got.argmax(1) == want.argmax(1)).all() and np.abs(got - want).max() < 0.05

    monkeypatch.setattr(autotune, "measure", lambda *a, **k: pytest.fail("timed again"))
    again = SentimentClassifier.load(run, device="cpu")
    assert again.choice.source.startswith("measured before, cached in")
    assert (again.choice.lone, again.choice.batch) == (clf.choice.lone, clf.choice.batch)


def test_the_cache_is_kept_per_threads_cpu_and_shape(trained_runs, cache, monkeypatch):
    cpu = torch.device("cpu")
    shape = {"layers": 2, "width": 32}
    key = autotune.cache_key(cpu, shape)
    assert key != autotune.cache_key(cpu, {**shape, "width": 64})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    assert autotune.cache_key(cpu, shape) != key
    monkeypatch.undo()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    avx2 = autotune.cache_key(cpu, shape)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert autotune.cache_key(cpu, shape) != avx2  # a masked CPU is another CPU


TIME_ONCE = """
import sys, time
from weibo_senti import autotune
def time_them():
    open(sys.argv[1], "a").write("timed\\n")
    time.sleep(0.5)
    return {"torch-fp32": {"lone_ms": 1.0, "batch_ms": 2.0}}
print(autotune.cached_timings(sys.argv[2], ["torch-fp32"], time_them)[1])
"""


def test_processes_starting_together_time_once_and_keep_every_entry(cache, tmp_path):
    """Timing runs under the cache's lock: two processes on the same key time once (the other
    reads it), and entries of other keys stay."""
    import subprocess
    import sys

    log = tmp_path / "timed.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TIME_ONCE, str(log), "same-key"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    sources = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert log.read_text() == "timed\n"
    assert sources[0].startswith("measured before, cached in") and sources[1] == "measured now"
    subprocess.run([sys.executable, "-c", TIME_ONCE, str(log), "other-key"], check=True)
    assert set(json.loads(cache.read_text())) == {"same-key", "other-key"}
    assert not list(cache.parent.glob(".engines.json.*"))  # no temp file left


def test_a_damaged_cache_is_timed_again(trained_runs, cache):
    cache.write_text("{not json")
    clf = SentimentClassifier.load(trained_runs["full"], device="cpu")
    assert clf.choice.source == "measured now" and len(json.loads(cache.read_text())) == 1


def test_a_fast_path_that_disagrees_with_fp32_is_refused(trained_runs, cache, monkeypatch, caplog):
    """torch-int8 timed fastest but answering wrong (a saturating kernel, say): not used."""
    run = trained_runs["full"]
    want = fp32_probs(run)

    class Flipped(inference.TorchInt8):
        def __call__(self, input_ids, attention_mask):
            return super().__call__(input_ids, attention_mask).flip(-1)

    real_copy = inference.engine_copy
    monkeypatch.setattr(
        inference,
        "engine_copy",
        lambda m, p, e: Flipped(m) if (p, e) == ("int8", "torch") else real_copy(m, p, e),
    )
    monkeypatch.setattr(autotune, "measure", fake_timings("torch-int8", "torch-int8"))
    with caplog.at_level(logging.WARNING, logger="weibo_senti"):
        clf = SentimentClassifier.load(run, device="cpu", engine="torch")
    assert (
        "torch-int8" in clf.choice.refused
        and "of 16 probe labels fp32 is sure of differ" in clf.choice.refused["torch-int8"]
    )
    assert "torch-int8" not in (clf.choice.lone, clf.choice.batch)
    assert "the torch-int8 path is not used here" in caplog.text
    assert "torch-int8 refused" in clf.choice.summary()
    assert np.abs(clf.predict_proba(TEXTS) - want).max() < 0.02


def test_precision_and_engine_override_the_measurement(trained_runs, cache, monkeypatch):
    run = trained_runs["full"]
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: pytest.fail("timed"))
    for precision in ("fp32", "bf16", "int8"):
        clf = SentimentClassifier.load(run, precision=precision, engine="torch")
        assert clf.choice.source == f"--precision {precision}"
        assert clf.choice.lone == clf.choice.batch == f"torch-{precision}"
    monkeypatch.undo()
    monkeypatch.setenv("WEIBO_SENTI_CACHE", str(cache.parent))
    monkeypatch.setenv("WEIBO_SENTI_ENGINE", "torch")
    clf = SentimentClassifier.load(run, device="cpu")
    assert not any(p.startswith("ort-") for p in clf.choice.timings)
    assert set(clf.choice.timings) == {"torch-fp32", "torch-bf16", "torch-int8"}
    if onnx_runtime.missing() is None:
        ort = SentimentClassifier.load(run, device="cpu", engine="onnxruntime")
        assert set(ort.choice.timings) == {"torch-bf16", "ort-fp32", "ort-int8"}


def test_adapters_added_or_removed_tune_again(trained_runs, flipped_run, cache):  # noqa: F811
    """Several adapters: only the model itself can answer, so only torch fp32/bf16 are timed;
    back to one merged LoRA adapter, the copies compete again."""
    from weibo_senti.predict import load_classifier

    clf = load_classifier(None, [f"a={trained_runs['lora']}", f"b={flipped_run}"])
    assert set(clf.choice.timings) == {"torch-fp32", "torch-bf16"}
    single = SentimentClassifier.load(trained_runs["lora"], name="a", engine="torch")
    assert "torch-int8" in single.choice.timings
    single.merge_single = True
    single.add_adapter("b", flipped_run)
    assert set(single.choice.timings) == {"torch-fp32", "torch-bf16"}
    single.remove_adapter("b")
    assert "torch-int8" in single.choice.timings and single.bank.merged == "a"


def test_a_path_that_fails_is_refused_not_fatal(trained_runs, cache, monkeypatch):
    real_copy = inference.engine_copy

    def broken(model, precision, engine):
        if (precision, engine) == ("int8", "torch"):
            raise RuntimeError("no int8 kernel here")
        return real_copy(model, precision, engine)

    monkeypatch.setattr(inference, "engine_copy", broken)
    monkeypatch.setattr(autotune, "measure", fake_timings("torch-int8", "torch-int8"))
    clf = SentimentClassifier.load(trained_runs["full"], device="cpu", engine="torch")
    assert clf.choice.refused["torch-int8"].startswith("failed: RuntimeError: no int8 kernel")
    assert "torch-int8" not in (clf.choice.lone, clf.choice.batch) and not clf._copies
    want = fp32_probs(trained_runs["full"])
    assert np.abs(clf.predict_proba(TEXTS) - want).max() < 0.02


@pytest.mark.parametrize("pad", [0, 7, 49])
def test_probe_and_timing_batches_take_any_id_but_pad(pad):
    probe = autotune.probe_batch(50, pad, torch.device("cpu"))
    real = probe["input_ids"][probe["attention_mask"].bool()]
    assert (real != pad).all() and real.min() >= 0 and real.max() < 50
    ids = autotune.shaped_batch(8, 64, 50, pad, torch.device("cpu"))["input_ids"]
    assert (ids != pad).all() and len(ids.unique()) == 49  # every other id turns up


def test_int8_on_a_gpu_is_refused(trained_runs, monkeypatch):
    from weibo_senti.errors import UserError

    clf = SentimentClassifier.load(trained_runs["full"], precision="fp32", engine="torch")
    monkeypatch.setattr(SentimentClassifier, "device", property(lambda self: torch.device("cuda")))
    with pytest.raises(UserError, match="int8 runs on a CPU"):
        clf.tune("int8")


def test_timing_that_fails_falls_back_to_the_flag_rules_and_says_so(
    trained_runs, cache, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("no timer here")

    monkeypatch.setattr(autotune, "measure", broken)
    monkeypatch.setattr(inference, "cpu_features", lambda: {"avx2"})
    with caplog.at_level(logging.WARNING, logger="weibo_senti"):
        clf = SentimentClassifier.load(trained_runs["full"], device="cpu", engine="torch")
    assert clf.choice.source.startswith("CPU-flag rules: timing failed (RuntimeError: no timer")
    assert (clf.choice.lone, clf.choice.batch) == ("torch-fp32", "torch-fp32")  # AVX2: fp32
    assert "using the CPU-flag rules" in caplog.text
    assert np.abs(clf.predict_proba(TEXTS) - fp32_probs(trained_runs["full"])).max() < 1e-5


def test_a_path_far_slower_on_the_first_pass_is_not_timed_further():
    calls = {"slow": 0, "fast": 0}

    def runner(name, seconds):
        def run(ids, mask):
            calls[name] += 1
            torch.zeros(1).add_(1)
            if seconds:
                threading.Event().wait(seconds)
            return torch.zeros(len(ids), 2)

        return run

    shape = {"vocab": 50, "pad": 0, "budget": 128}
    runners = {"torch-fp32": runner("fast", 0), "torch-bf16": runner("slow", 0.05)}
    timings = autotune.measure(runners, shape, torch.device("cpu"))
    assert "skipped" in timings["torch-bf16"] and "lone_ms" not in timings["torch-bf16"]
    assert calls["slow"] == 2  # the screen's warm-up and one timed call, nothing more
    assert timings["torch-fp32"]["batch_ms"] > 0 and calls["fast"] > 2


def test_the_switch_point_is_where_the_two_winners_cross():
    # lone winner: 1 ms + 0.1 ms/token; batch winner: 5 ms + 0.05 ms/token -> cross at 80
    lone = {"lone_ms": 1 + 0.1 * 48, "batch_ms": 1 + 0.1 * 512}
    batch = {"lone_ms": 5 + 0.05 * 48, "batch_ms": 5 + 0.05 * 512}
    assert autotune.switch_point(lone, batch, 512) == 80
    assert autotune.switch_point(batch, lone, 512) == 512  # never slower: always
    choice = autotune.Choice("ort-int8", "torch-bf16", "x", switch_tokens=80)
    assert choice.path_for(80) == "ort-int8" and choice.path_for(81) == "torch-bf16"


def test_predict_verbose_and_serve_say_which_path_runs(
    trained_runs, cache, monkeypatch, free_tcp_port
):
    from test_cli import cli

    from weibo_senti import serve

    code, out, err = cli("predict", trained_runs["full"], "--text", "好棒", "--verbose")
    assert code == 0 and ("正面" in out or "负面" in out)
    assert "engine " in err and "(measured now)" in err and "torch-fp32 " in err, err
    assert "lone post/full pass: " in err
    monkeypatch.setattr(serve, "serve", lambda clf, **server: None)  # the line, not the server
    code, out, err = cli("serve", trained_runs["full"], "--port", free_tcp_port)
    assert code == 0 and "serving" in err and "; engine " in err and "(measured before)" in err


def test_metrics_show_the_paths_and_their_timings(trained_runs, cache):
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from weibo_senti.serve import create_app

    clf = SentimentClassifier.load(trained_runs["full"], device="cpu")
    with TestClient(create_app(clf)) as c:
        text = c.get("/metrics").text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    (info,) = [s for s in samples if s.name == "weibo_senti_engine_info"]
    assert info.labels["lone"] == clf.choice.lone and info.labels["batch"] == clf.choice.batch
    assert info.labels["source"] == "measured now"
    timed = {
        (s.labels["path"], s.labels["size"]): s.value
        for s in samples
        if s.name == "weibo_senti_engine_pass_milliseconds"
    }
    assert timed[("torch-fp32", "batch")] == clf.choice.timings["torch-fp32"]["batch_ms"]
    assert len(timed) == 2 * sum("batch_ms" in t for t in clf.choice.timings.values())
