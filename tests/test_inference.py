"""The fast paths of prediction: token-budget batches, the fused GELU, and int8 for small passes
of a single model — each checked against the plain fp32 answers on the tiny model."""

from __future__ import annotations

import random

import pytest
import torch
from test_bank import TEXTS, flipped_run  # noqa: F401  (a fixture: the same task, labels swapped)

from weibo_senti import inference
from weibo_senti.features import token_budget_batches
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


@pytest.mark.parametrize("method", ["full", "lora"])
def test_int8_small_passes_agree_with_fp32_and_big_ones_keep_the_precision(
    trained_runs, method, monkeypatch
):
    want = SentimentClassifier.load(trained_runs[method], precision="fp32").predict_proba(TEXTS)
    monkeypatch.setattr(inference, "int8_rows_for_cpu", lambda: 2)
    clf = SentimentClassifier.load(trained_runs[method], precision="auto", device="cpu")
    assert clf.int8_rows == 2
    calls = []
    monkeypatch.setattr(
        inference,
        "engine_copy",
        lambda m, p, e, f=inference.engine_copy: calls.append(p) or f(m, p, e),
    )
    got = clf.predict_proba(TEXTS, batch_size=2)  # passes of 2 rows: int8
    assert calls == ["int8"] and "int8" in clf._copies
    assert (got.argmax(1) == want.argmax(1)).all()
    assert abs(got - want).max() < 0.05
    clf.predict_proba(TEXTS, batch_size=16)  # one pass of 5 rows: not int8
    assert list(clf._copies) == ["int8"] and calls == ["int8"]


def test_int8_copy_follows_the_adapters(trained_runs, flipped_run, monkeypatch):  # noqa: F811
    """Adding an adapter drops the int8 copy (it holds the old weights); rows for another
    adapter never take it; removing back to one adapter rebuilds it from the right weights."""
    monkeypatch.setattr(inference, "int8_rows_for_cpu", lambda: 1 << 30)
    clf = SentimentClassifier.load(trained_runs["lora"], precision="auto", name="weibo")
    clf.merge_single = True
    fp32 = SentimentClassifier.load(flipped_run, precision="fp32").predict_proba(TEXTS)
    clf.predict(TEXTS)
    assert "int8" in clf._copies
    clf.add_adapter("flip", flipped_run)
    assert not clf._copies and clf.bank.merged is None
    flip = clf.predict_proba(TEXTS, adapter="flip")
    assert not clf._copies  # several adapters: no int8 copy
    assert abs(flip - fp32).max() < 0.02  # bf16/fp32, flip's own answers
    clf.remove_adapter("weibo")
    assert clf.bank.merged == "flip"
    again = clf.predict_proba(TEXTS)
    assert "int8" in clf._copies
    assert (again.argmax(1) == fp32.argmax(1)).all() and abs(again - fp32).max() < 0.05


def test_int8_needs_vnni(monkeypatch):
    monkeypatch.setattr(inference, "cpu_flags", lambda: {"avx2"})
    assert inference.int8_rows_for_cpu() == 0
    monkeypatch.setattr(inference, "cpu_flags", lambda: {"avx512_vnni", "amx_bf16", "amx_int8"})
    assert inference.int8_rows_for_cpu() == 4
    monkeypatch.setattr(inference, "cpu_flags", lambda: {"avx512_vnni", "avx512_bf16"})
    assert inference.int8_rows_for_cpu() > 1000
