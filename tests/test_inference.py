"""The fast paths of prediction: token-budget batches, the fused GELU, and int8 for small passes
of a single model — each checked against the plain fp32 answers on the tiny model."""

from __future__ import annotations

import random

import pytest
import torch
from test_bank import TEXTS, flipped_run  # noqa: F401  (a fixture: the same task, labels swapped)

from weibo_senti import autotune, inference
from weibo_senti.features import encode, token_budget_batches
from weibo_senti.predict import SentimentClassifier


def test_token_budget_batches_cover_every_row_once_within_the_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 160) for _ in range(500)]
    batches = token_budget_batches(lengths, max_count=16, max_tokens=512, multiple=8)
    assert sorted(i for b in batches for i in b) == list(range(500))
    order = [lengths[i] for b in batches for i in b]
    assert order == sorted(order)  # sorted by length: rows of a batch are alike
    for b in batches:
        width = -(-max(lengths[i] for i in b) // 8) * 8
        assert len(b) <= 16
        assert len(b) * width <= 512 or len(b) == 1  # a lone long post still gets its pass
    assert max(len(b) for b in batches) == 16  # short posts fill whole batches
    assert token_budget_batches([], 16, 512) == []


def test_fused_gelu_gives_the_same_logits(trained_runs):
    from weibo_senti import runfolder

    clf = SentimentClassifier.load(trained_runs["full"], precision="fp32")
    assert not any(type(m).__name__ == "NewGELUActivation" for m in clf.model.modules())
    plain = runfolder.load_full_model(trained_runs["full"]).eval()  # gelu_new as saved
    assert any(type(m).__name__ == "NewGELUActivation" for m in plain.modules())
    batch = clf.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        want = plain(**batch).logits
        got = clf.model(**batch).logits
    assert torch.allclose(got, want, atol=1e-5)


def fake_timings(fastest_lone: str, fastest_batch: str):
    """autotune.measure's answer with ``fastest_lone``/``fastest_batch`` winning: the choice
    logic, whatever this CPU's own speeds."""

    def measure(runners, shape, device):
        out = {p: {"screen_ms": 1.0, "lone_ms": 10.0, "batch_ms": 100.0} for p in runners}
        out[fastest_lone]["lone_ms"], out[fastest_batch]["batch_ms"] = 1.0, 50.0
        return out

    return measure


@pytest.mark.parametrize("model_path", ["torch-fp32", "torch-bf16"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_small_passes_take_the_lone_post_path_and_big_ones_the_batch_path(
    trained_runs, method, model_path, monkeypatch
):
    """int8 the fastest at a lone post, a torch path at the full pass: passes of up to the
    switch point run on the int8 copy, bigger ones on the model in that path's precision."""
    want = SentimentClassifier.load(trained_runs[method], precision="fp32").predict_proba(TEXTS)
    monkeypatch.setattr(autotune, "measure", fake_timings("torch-int8", model_path))
    monkeypatch.setattr(
        autotune, "cached_timings", lambda key, paths, time_them: (time_them(), "x")
    )
    clf = SentimentClassifier.load(
        trained_runs[method], precision="auto", device="cpu", engine="torch"
    )
    assert (clf.choice.lone, clf.choice.batch) == ("torch-int8", model_path), clf.choice
    assert clf.precision == model_path.split("-")[1] and clf.choice.switch_tokens > 0
    calls = []
    monkeypatch.setattr(
        inference,
        "engine_copy",
        lambda m, p, e, f=inference.engine_copy: calls.append(p) or f(m, p, e),
    )
    clf._copies.clear()
    width = -(-max(len(ids) for ids in encode(clf.tokenizer, TEXTS)[0]) // 8) * 8
    clf.choice.switch_tokens = 2 * width  # passes of up to 2 rows: int8
    got = clf.predict_proba(TEXTS, batch_size=2)
    assert calls == ["int8"] and list(clf._copies) == ["torch-int8"]
    assert (got.argmax(1) == want.argmax(1)).all()
    assert abs(got - want).max() < 0.05
    big = clf.predict_proba(TEXTS, batch_size=16)  # one pass of 4 rows: the model itself
    assert calls == ["int8"]
    assert abs(big - want).max() < (0.02 if model_path == "torch-bf16" else 1e-5)


def test_int8_copy_follows_the_adapters(trained_runs, flipped_run, monkeypatch):  # noqa: F811
    """Adding an adapter drops the int8 copy (it holds the old weights); rows for another
    adapter never take it; removing back to one adapter rebuilds it from the right weights."""
    monkeypatch.setattr(autotune, "measure", fake_timings("torch-int8", "torch-int8"))
    monkeypatch.setattr(
        autotune, "cached_timings", lambda key, paths, time_them: (time_them(), "x")
    )
    clf = SentimentClassifier.load(trained_runs["lora"], name="weibo", engine="torch")
    assert clf.choice.batch == "torch-int8"
    clf.merge_single = True
    fp32 = SentimentClassifier.load(flipped_run, precision="fp32").predict_proba(TEXTS)
    clf.predict(TEXTS)
    assert "torch-int8" in clf._copies
    clf.add_adapter("flip", flipped_run)
    assert not clf._copies and clf.bank.merged is None
    flip = clf.predict_proba(TEXTS, adapter="flip")
    assert not clf._copies  # several adapters: no int8 copy
    assert abs(flip - fp32).max() < 0.02  # bf16/fp32, flip's own answers
    clf.remove_adapter("weibo")
    assert clf.bank.merged == "flip"
    again = clf.predict_proba(TEXTS)
    assert "torch-int8" in clf._copies
    assert (again.argmax(1) == fp32.argmax(1)).all() and abs(again - fp32).max() < 0.05


def test_torch_int8_never_saturates_u8s8_pairs():
    """Inputs that quantize to full-range uint8 times weights of +-127: 8-bit activations would
    put 2 * 255 * 127 = 64770 in each int16 pair of fbgemm's kernel on a CPU without VNNI
    (49% off); torch's 7-bit activations keep it exact there and everywhere."""
    linear = torch.nn.Linear(64, 16, bias=False)
    with torch.no_grad():
        linear.weight.fill_(1.0)
        linear.weight[1::2] = -1.0
    x = torch.ones(4, 64)
    x[:, 0] = 0.0
    with torch.inference_mode():
        want = linear(x)
        got = inference.quantize_int8(torch.nn.Sequential(linear))(x)
    assert (got - want).abs().max() < 0.01 * want.abs().max()


def test_int8_needs_vnni(monkeypatch):
    monkeypatch.setattr(inference, "cpu_features", lambda: {"avx2"})
    assert inference.int8_rows_for_cpu() == 0 and not inference.cpu_has_fast_bf16()
    monkeypatch.setattr(inference, "cpu_features", lambda: {"vnni", "amx_tile", "avx512_bf16"})
    assert inference.int8_rows_for_cpu() == 4
    monkeypatch.setattr(inference, "cpu_features", lambda: {"vnni", "avx512_bf16"})
    assert inference.int8_rows_for_cpu() > 1000 and inference.cpu_has_fast_bf16()


def test_cpu_features_follow_what_torch_sees(monkeypatch):
    """torch's capabilities where it has them (a masked CPU counts; AVX-VNNI is VNNI too),
    /proc/cpuinfo's flags otherwise."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx_vnni": True})
    assert inference.cpu_features() == {"avx2", "vnni"}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})
    assert inference.cpu_features() == {"avx2"} and inference.int8_rows_for_cpu() == 0
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    monkeypatch.setattr(inference, "cpu_flags", lambda: {"avx2", "avx512_vnni", "avx512_bf16"})
    assert inference.cpu_features() == {"avx2", "vnni", "avx512_bf16"}


def test_the_default_rows_per_pass_follow_the_device(trained_runs, monkeypatch):
    """16 rows on a CPU (the token budget binds first), 256 on a GPU; an explicit size wins."""
    from weibo_senti.predict import default_batch_rows

    assert default_batch_rows(torch.device("cpu")) == 16
    assert default_batch_rows(torch.device("cuda")) == 256
    clf = SentimentClassifier.load(trained_runs["full"], precision="fp32", engine="torch")
    assert clf.batch_rows == 16
    passes = []
    real = clf._forward
    monkeypatch.setattr(clf, "_forward", lambda b, n: passes.append(len(n)) or real(b, n))
    texts = ["好"] * 40  # 8 padded tokens each: the 512-token budget would take 64 rows
    clf.predict_proba(texts)
    assert passes == [16, 16, 8]
    passes.clear()
    clf.batch_rows = 32
    clf.predict_proba(texts)
    assert passes == [32, 8]
    passes.clear()
    clf.predict_proba(texts, batch_size=40)
    assert passes == [40]
