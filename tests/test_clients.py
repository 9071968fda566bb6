"""Run folders in the clients users already have, called the way their users call them.

Each client's probabilities must equal `weibo-senti predict --precision fp32` within 1e-4 on
every text, texts longer than the run's max length included (40 tokens here).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli import cli

SHORT = ["好棒喜爱赞乐美好棒喜爱赞", "差坏烂恨糟怒哭差坏烂恨糟", "我你他的了是在有人这中大", "好差"]
LONG = ["好" * 45, "差坏" * 30 + "好", "我你他的了是在" * 20]  # 45 to 140 tokens: cut at 40
TEXTS = SHORT + LONG


def ours(run, texts=TEXTS) -> np.ndarray:
    """P(positive) per text from the command line, as a user gets it."""
    args = ["predict", run, "--precision", "fp32", "--json"]
    code, out, err = cli(*args, *[x for t in texts for x in ("--text", t)])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["truncated"] for r in rows] == [len(t) > 38 for t in texts]
    return np.array([r["probabilities"]["positive"] for r in rows])


@pytest.fixture(scope="module")
def merged(trained_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "m"
    code, _, err = cli("merge", trained_runs["lora"], "--out", out)
    assert code == 0, err
    return out


def pipeline_positive(folder, texts, **call) -> np.ndarray:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder))
    return np.array(
        [
            r["score"] if r["label"] == "positive" else 1 - r["score"]
            for r in classify(texts, **call)
        ]
    )


@pytest.mark.parametrize("kind", ["merged", "full"])
def test_pipeline(kind, merged, trained_runs):
    folder = merged if kind == "merged" else trained_runs["full"]
    expected = ours(folder)
    # The default call: the saved tokenizer adds no token_type_ids and pads on [PAD].
    short = pipeline_positive(folder, SHORT)
    assert np.abs(short - expected[: len(SHORT)]).max() < 1e-4
    # Longer posts: transformers truncates only when asked; model_max_length is the run's.
    every = pipeline_positive(folder, TEXTS, truncation=True)
    assert np.abs(every - expected).max() < 1e-4
    # and the merged model answers like the LoRA run it came from
    if kind == "merged":
        assert np.abs(expected - ours(trained_runs["lora"])).max() < 1e-4


@pytest.mark.parametrize("kind", ["merged", "full"])
def test_auto_classes_default_and_seeds_style_calls(kind, merged, trained_runs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = merged if kind == "merged" else trained_runs["full"]
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    assert "token_type_ids" not in tok(SHORT[0])
    assert tok.model_max_length == 40 and model.config.pad_token_id == tok.pad_token_id == 0
    assert model.config.id2label == {0: "negative", 1: "positive"}
    expected = ours(folder)
    with torch.no_grad():
        batch = tok(TEXTS, padding=True, truncation=True, return_tensors="pt")
        auto = model(**batch).logits.softmax(-1)[:, 1].numpy()
        seeds = []
        for text in TEXTS:  # the seeds' call: pad to max length, then ids and mask only
            enc = tok(
                text, max_length=40, padding="max_length", truncation=True, return_tensors="pt"
            )
            logits = model(enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            seeds.append(logits.softmax(-1)[0, 1].item())
    assert np.abs(auto - expected).max() < 1e-4
    assert np.abs(np.array(seeds) - expected).max() < 1e-4


def test_peft_from_pretrained_on_a_lora_run(trained_runs, tiny_base):
    """The PEFT recipe of docs/clients.md: the base with the tokenizer's pad id, then the run folder."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = trained_runs["lora"]
    tok = AutoTokenizer.from_pretrained(str(run))
    base = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_base),
        pad_token_id=tok.pad_token_id,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model = PeftModel.from_pretrained(base, str(run)).eval()
    adapter_config = json.loads((run / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_base.resolve())  # from anywhere
    assert model.config.id2label[1] == "positive"
    with torch.no_grad():
        batch = tok(TEXTS, padding=True, truncation=True, return_tensors="pt")
        probs = model(**batch).logits.softmax(-1)[:, 1].numpy()
    assert np.abs(probs - ours(run)).max() < 1e-4


def test_saved_tokenizer_files_carry_the_rules(trained_runs, merged):
    for folder in (trained_runs["lora"], trained_runs["adapter"], trained_runs["full"], merged):
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert config["model_input_names"] == ["input_ids", "attention_mask"]
        assert config["model_max_length"] == 40
        assert json.loads((folder / "tokenizer.json").read_text())["truncation"] is None
        assert not (folder / "README.md").exists()  # PEFT's empty model-card stub


def test_merged_and_exported_folders_give_calibrated_probabilities_in_a_pipeline(
    trained_runs, merged, task_files, tmp_path
):
    """The temperature is in the head: a stock pipeline's dev log loss is the calibrated one
    recorded at training time, not the one before the temperature."""
    from sklearn.metrics import log_loss

    from weibo_senti.data import read_labelled

    exported = tmp_path / "exported"
    code, _, err = cli("merge", trained_runs["lora"], "--out", exported, "--export")
    assert code == 0, err
    calibration = json.loads((trained_runs["lora"] / "eval_results.json").read_text())
    calibration = calibration["calibration"]
    assert calibration["temperature"] != 1.0
    dev = read_labelled(task_files[1])
    for folder in (merged, exported):
        p = pipeline_positive(folder, dev.texts, truncation=True)
        loss = log_loss(dev.labels, np.stack([1 - p, p], 1), labels=[0, 1])
        assert loss == pytest.approx(calibration["after"]["log_loss"], abs=1e-4)
        assert loss < calibration["before"]["log_loss"]


# ---------------------------------------------------------------------------- any label set
from test_multitask import label_runs  # noqa: E402, F401  (a fixture: runs of 3 and 6 labels)


def ours_every_label(run, texts=TEXTS) -> tuple[list[str], np.ndarray]:
    """(labels, every probability per text) from the command line, as a user gets them."""
    args = ["predict", run, "--precision", "fp32", "--json"]
    code, out, err = cli(*args, *[x for t in texts for x in ("--text", t)])
    assert code == 0, err
    rows = [json.loads(line)["probabilities"] for line in out.splitlines()]
    return list(rows[0]), np.array([list(r.values()) for r in rows])


@pytest.fixture(scope="module")
def merged_six(label_runs, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("merged-six") / "m"
    code, _, err = cli("merge", label_runs("six", "lora"), "--out", out)
    assert code == 0, err
    return out


@pytest.mark.parametrize("kind", ["merged", "full"])
def test_six_labels_in_a_stock_pipeline_and_the_auto_classes(kind, merged_six, label_runs):  # noqa: F811
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    folder = merged_six if kind == "merged" else label_runs("six", "full")
    labels, expected = ours_every_label(folder)
    assert len(labels) == 6
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(i): n for i, n in enumerate(labels)}
    assert config["label2id"] == {n: i for i, n in enumerate(labels)}
    classify = pipeline("text-classification", model=str(folder))
    answers = classify(TEXTS, top_k=None, truncation=True)
    for answer, want in zip(answers, expected):
        got = {a["label"]: a["score"] for a in answer}
        assert list(got) == sorted(labels, key=lambda n: -got[n])  # every label, best first
        assert np.abs(np.array([got[n] for n in labels]) - want).max() < 1e-4
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    assert model.config.id2label == dict(enumerate(labels)) and model.config.num_labels == 6
    with torch.no_grad():
        batch = tok(TEXTS, padding=True, truncation=True, return_tensors="pt")
        auto = model(**batch).logits.softmax(-1).numpy()
    assert np.abs(auto - expected).max() < 1e-4
    if kind == "merged":  # the merged model answers like the LoRA run it came from
        assert np.abs(expected - ours_every_label(label_runs("six", "lora"))[1]).max() < 1e-4


@pytest.mark.parametrize("labels", ["three", "six"])
def test_peft_from_pretrained_on_n_label_lora_runs(labels, label_runs, tiny_base):  # noqa: F811
    """The PEFT recipe of docs/clients.md with the run's labels: the base gets id2label, then the run."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = label_runs(labels, "lora")
    names = json.loads((run / "run.json").read_text())["labels"]
    tok = AutoTokenizer.from_pretrained(str(run))
    base = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_base),
        pad_token_id=tok.pad_token_id,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    model = PeftModel.from_pretrained(base, str(run)).eval()
    assert model.config.id2label == dict(enumerate(names))
    with torch.no_grad():
        batch = tok(TEXTS, padding=True, truncation=True, return_tensors="pt")
        probs = model(**batch).logits.softmax(-1).numpy()
    got_labels, expected = ours_every_label(run)
    assert got_labels == names and probs.shape == (len(TEXTS), len(names))
    assert np.abs(probs - expected).max() < 1e-4
