"""Many adapters on one base: switching, unloading, mixed batches, refusals (API and CLI)."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import record_forward_calls, train_config, write_task

from weibo_senti import SentimentClassifier, UserError
from weibo_senti.train import train

TEXTS = [
    "好棒喜爱赞乐美好棒喜爱赞",
    "差坏烂恨糟怒哭差坏烂恨糟",
    "我你他的了是在有人这中大",
    "好差好差",
]


@pytest.fixture(scope="module")
def flipped_run(tmp_path_factory, tiny_base):
    """A second LoRA task on the same base: the same texts with the labels swapped."""
    root = tmp_path_factory.mktemp("flipped")
    for name, n, seed in [("train", 480, 1), ("dev", 160, 2)]:
        path = write_task(root / f"{name}.csv", n, seed)
        rows = list(csv.reader(path.open(encoding="utf-8")))
        with path.open("w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([rows[0]] + [[1 - int(r[0]), r[1]] for r in rows[1:]])
    train(train_config("lora", tiny_base, root / "train.csv", root / "dev.csv", root / "run"))
    return root / "run"


def load(run, **kw):
    return SentimentClassifier.load(run, precision="fp32", merge=False, **kw)


def test_switching_changes_outputs_and_back_restores_bit_for_bit(trained_runs, flipped_run):
    clf = load(trained_runs["lora"], name="weibo")
    a = clf.predict_logits(TEXTS)[0]
    clf.add_adapter("flip", flipped_run)
    clf.add_adapter("bottleneck", trained_runs["adapter"])
    assert clf.adapters == ["weibo", "flip", "bottleneck"] and clf.active_adapter == "weibo"
    assert (clf.predict_logits(TEXTS)[0] == a).all()  # adding does not change the active one
    clf.use("flip")
    b = clf.predict_logits(TEXTS)[0]
    assert (a[:2].argmax(1) != b[:2].argmax(1)).all()  # the flipped task answers the opposite
    alone = load(flipped_run).predict_logits(TEXTS)[0]
    assert np.abs(b - alone).max() < 1e-5
    clf.use("bottleneck")
    c = clf.predict_logits(TEXTS)[0]
    assert np.abs(c - load(trained_runs["adapter"]).predict_logits(TEXTS)[0]).max() < 1e-5
    clf.use("weibo")
    assert (clf.predict_logits(TEXTS)[0] == a).all()
    assert [p.adapter for p in clf.predict(TEXTS[:1], adapter="flip")] == ["flip"]
    with pytest.raises(UserError, match="no adapter called 'nope'.*weibo, flip, bottleneck"):
        clf.use("nope")


def base_weights(clf):
    return {
        k: v.clone()
        for k, v in clf.bank.base.state_dict().items()
        if "lora_" not in k and "senti_" not in k and "score" not in k
    }


def test_unloading_leaves_the_base_bit_identical(trained_runs, flipped_run):
    clf = load(trained_runs["lora"], name="weibo")
    before = {k.replace(".base_layer", ""): v for k, v in base_weights(clf).items()}
    logits = clf.predict_logits(TEXTS)[0]
    clf.add_adapter("flip", flipped_run)
    clf.add_adapter("bottleneck", trained_runs["adapter"])
    clf.use("flip")
    clf.predict_logits(TEXTS)
    clf.remove_adapter("flip")
    clf.remove_adapter("bottleneck")
    assert clf.adapters == ["weibo"]
    after = {k.replace(".base_layer", ""): v for k, v in base_weights(clf).items()}
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert (clf.predict_logits(TEXTS)[0] == logits).all()
    clf.remove_adapter("weibo")  # the last LoRA adapter: PEFT's layers go too
    assert clf.adapters == [] and not any("lora_" in k for k in clf.model.state_dict())
    plain = {k: v for k, v in clf.model.state_dict().items() if "heads" not in k}
    assert all(torch.equal(plain[k], before[k]) for k in before)


def test_mixed_batch_equals_per_adapter_results(trained_runs, flipped_run):
    clf = load(trained_runs["lora"], name="weibo")
    clf.add_adapter("flip", flipped_run)
    clf.add_adapter("bottleneck", trained_runs["adapter"])
    texts = TEXTS * 5
    names = (["weibo", "flip", "bottleneck", "flip"] * 5)[: len(texts)]
    mixed = clf.predict_logits(texts, adapter=names)[0]
    for name in ("weibo", "flip", "bottleneck"):
        idx = [i for i, n in enumerate(names) if n == name]
        single = clf.predict_logits([texts[i] for i in idx], adapter=name)[0]
        assert np.abs(mixed[idx] - single).max() < 1e-5, name
    preds = clf.predict(texts, adapter=names)
    assert [p.adapter for p in preds] == names


def test_one_lora_pass_serves_rows_of_several_adapters(trained_runs, flipped_run, monkeypatch):
    clf = load(trained_runs["lora"], name="weibo")
    clf.add_adapter("flip", flipped_run)
    calls = record_forward_calls(clf, monkeypatch)
    clf.predict_logits(TEXTS, adapter=["weibo", "flip", "weibo", "flip"])
    assert len(calls) == 1  # four rows, two adapters, one forward pass
    ids = clf.bank.ids
    assert sorted(calls[0]) == sorted([ids["weibo"], ids["flip"]] * 2)


def test_mismatched_or_unsuitable_adapters_are_refused(trained_runs, tmp_path):
    clf = load(trained_runs["lora"], name="weibo")
    other = tmp_path / "other"
    shutil.copytree(trained_runs["adapter"], other)
    info = json.loads((other / "run.json").read_text())
    info["base"]["fingerprint"]["n_embd"] = 64
    (other / "run.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="different base"):
        clf.add_adapter("other", other)
    with pytest.raises(UserError, match="full run"):
        clf.add_adapter("full", trained_runs["full"])
    with pytest.raises(UserError, match="already loaded"):
        clf.add_adapter("weibo", trained_runs["lora"])
    full = SentimentClassifier.load(trained_runs["full"])
    with pytest.raises(UserError, match="no shared base"):
        full.add_adapter("x", trained_runs["lora"])
    assert clf.adapters == ["weibo"]


def test_merged_single_adapter_unmerges_to_take_more(trained_runs, flipped_run):
    merged = SentimentClassifier.load(trained_runs["lora"], precision="fp32", name="weibo")
    assert merged.bank.merged == "weibo"
    ref = load(trained_runs["lora"]).predict_logits(TEXTS)[0]
    assert np.abs(merged.predict_logits(TEXTS)[0] - ref).max() < 1e-4
    merged.add_adapter("flip", flipped_run)
    assert merged.bank.merged is None
    assert np.abs(merged.predict_logits(TEXTS, adapter="weibo")[0] - ref).max() < 1e-4


def cli(*args, input=None):
    from test_cli import cli as run_cli

    return run_cli(*args, input=input)


def test_cli_predict_with_several_adapters(trained_runs, flipped_run, tmp_path):
    specs = [
        "--adapter",
        f"weibo={trained_runs['lora']}",
        "--adapter",
        f"flip={flipped_run}",
        "--precision",
        "fp32",
    ]
    code, out, err = cli("predict", *specs, "--text", TEXTS[0], "--json")
    assert code == 0, err
    assert json.loads(out)["adapter"] == "weibo" and json.loads(out)["label"] == "positive"
    code, out, _ = cli("predict", *specs, "--use", "flip", "--text", TEXTS[0], "--json")
    assert json.loads(out)["adapter"] == "flip" and json.loads(out)["label"] == "negative"
    inp = tmp_path / "mixed.csv"
    inp.write_text(
        f"adapter,review\nweibo,{TEXTS[0]}\nflip,{TEXTS[0]}\n,{TEXTS[1]}\n", encoding="utf-8"
    )
    code, out, err = cli("predict", *specs, "--input", inp)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["adapter"], r["pred_adapter"], r["pred_label"]) for r in rows] == [
        ("weibo", "weibo", "positive"),
        ("flip", "flip", "negative"),
        ("", "weibo", "negative"),  # the input column is kept as it was
    ]
    code, _, err = cli("predict", "--adapter", "weibo", "--text", "好")
    assert code == 2 and "NAME=RUN_FOLDER" in err


def test_console_switches_adapters(trained_runs, flipped_run):
    from weibo_senti.predict import console

    clf = load(trained_runs["lora"], name="weibo")
    clf.add_adapter("flip", flipped_run)
    out = io.StringIO()
    console(
        clf,
        stdin=io.StringIO(f":adapters\n{TEXTS[0]}\n:use flip\n{TEXTS[0]}\n:use x\nq\n"),
        stdout=out,
    )
    text = out.getvalue()
    assert "* weibo\n  flip" in text and "now using flip" in text
    assert text.index("正面情感") < text.index("now using flip") < text.index("负面情感")
    assert "error: no adapter called 'x'" in text


def test_merge_gives_a_plain_transformers_folder_with_the_same_probabilities(
    trained_runs, tmp_path
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    code, _, err = cli("merge", trained_runs["lora"], "--out", tmp_path / "merged")
    assert code == 0, err
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "merged")).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    assert model.config.pad_token_id == tok.pad_token_id == 0
    assert model.config.id2label == {0: "negative", 1: "positive"}
    enc = tok(TEXTS, padding=True, return_tensors="pt")  # the saved tokenizer's defaults
    with torch.no_grad():
        merged = model(**enc).logits.softmax(-1).numpy()
    unmerged = load(trained_runs["lora"]).predict_proba(TEXTS)
    assert np.abs(merged - unmerged).max() <= 1e-4
    assert not any("lora" in k for k in model.state_dict())
    again = SentimentClassifier.load(tmp_path / "merged", precision="fp32").predict_proba(TEXTS)
    assert np.abs(again - unmerged).max() <= 1e-4


def test_merge_refuses_bottleneck_adapters_but_exports_them(trained_runs, tmp_path):
    code, _, err = cli("merge", trained_runs["adapter"], "--out", tmp_path / "m")
    assert code == 2 and "cannot be folded" in err and "--export" in err
    code, _, err = cli("merge", trained_runs["adapter"], "--out", tmp_path / "m", "--export")
    assert code == 0, err
    info = json.loads((tmp_path / "m" / "run.json").read_text())
    assert info["base"]["bundled"] and (tmp_path / "m" / "base" / "config.json").is_file()
    exported = load(tmp_path / "m").predict_logits(TEXTS)[0]  # needs nothing but the folder
    assert np.abs(exported - load(trained_runs["adapter"]).predict_logits(TEXTS)[0]).max() < 1e-6


def test_combine_weights_adapters_and_heads(trained_runs, flipped_run, tmp_path):
    out = tmp_path / "comb"
    code, _, err = cli(
        "combine", trained_runs["lora"], flipped_run, "--weights", 1, "--weights", 0, "--out", out
    )
    assert code == 0, err
    one = load(out).predict_proba(TEXTS)
    assert np.abs(one - load(trained_runs["lora"]).predict_proba(TEXTS)).max() < 1e-4
    code, _, err = cli(
        "combine",
        trained_runs["lora"],
        flipped_run,
        "--weights",
        0.5,
        "--weights",
        0.5,
        "--head",
        "1",
        "--out",
        tmp_path / "half",
    )
    assert code == 0, err
    info = json.loads((tmp_path / "half" / "run.json").read_text())
    assert info["origin"]["weights"] == [0.5, 0.5]
    assert info["origin"]["combination_type"] == "cat"
    assert load(tmp_path / "half").predict_proba(TEXTS).shape == (4, 2)
    code, _, err = cli(
        "combine", trained_runs["lora"], trained_runs["adapter"], "--out", tmp_path / "bad"
    )
    assert code == 2 and "only LoRA runs" in err


def test_weights_accept_space_separated_values():
    from weibo_senti.cli import expand_multi_value

    argv = ["combine", "a", "b", "--weights", "0.5", "0.5", "--out", "c"]
    assert expand_multi_value(argv) == [
        "combine",
        "a",
        "b",
        "--weights",
        "0.5",
        "--weights",
        "0.5",
        "--out",
        "c",
    ]


def test_export_copies_a_read_only_base_with_normal_modes(trained_runs, tiny_base, tmp_path):
    import os

    read_only = shutil.copytree(tiny_base, tmp_path / "ro-base")
    os.chmod(read_only, 0o555)  # e.g. a shared model folder
    out = tmp_path / "m"
    code, _, err = cli(
        "merge", trained_runs["adapter"], "--out", out, "--export", "--base-model", read_only
    )
    assert code == 0, err
    assert (out / "base").stat().st_mode & 0o200  # the copy can be changed and removed
    assert len({p.stat().st_mode for p in out.rglob("*") if p.is_file()}) == 1
