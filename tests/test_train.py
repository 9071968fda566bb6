"""The real training recipe on the tiny model: it learns, saves, reloads, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_config, train_until_interrupted
from safetensors.torch import load_file

from weibo_senti import SentimentClassifier, UserError
from weibo_senti.train import train

METHODS = ["lora", "adapter", "full"]


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", METHODS)
def test_learns_the_task_and_loss_goes_down(trained_runs, method):
    run = trained_runs[method]
    results = json.loads((run / "eval_results.json").read_text())
    assert results["dev"]["accuracy"] >= 0.85, results["dev"]
    losses = [m["loss"] for m in read_metrics(run) if m["type"] == "train"]
    assert len(losses) >= 4
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses
    evals = [m for m in read_metrics(run) if m["type"] == "eval"]
    assert [m["epoch"] for m in evals] == [1, 2, 3, 4]


@pytest.mark.parametrize("method", METHODS)
def test_run_folder_is_self_contained(trained_runs, method):
    run = trained_runs[method]
    names = {p.name for p in run.iterdir()}
    assert {
        "run.json",
        "hyperparameters.yaml",
        "metrics.jsonl",
        "eval_results.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert weights in names
    assert "checkpoint" not in names  # removed once training finished
    assert len({p.stat().st_mode for p in run.iterdir()}) == 1  # no 0600 files among 0644
    info = json.loads((run / "run.json").read_text())
    assert info["complete"] and info["pad_token_id"] == 0 and info["method"] == method
    if method == "full":
        assert json.loads((run / "config.json").read_text())["pad_token_id"] == 0


@pytest.mark.parametrize("method", METHODS)
def test_saved_run_reloads_to_identical_logits(tiny_base, task_files, tmp_path, method):
    trained = train(train_config(method, tiny_base, *task_files, tmp_path / "r", epochs=1))
    texts = ["好好好的人", "差的天", "我你他", "我" * 300]
    reloaded = SentimentClassifier.load(tmp_path / "r", merge=False, precision="fp32")
    la, ta = trained.predict_logits(texts)
    lb, tb = reloaded.predict_logits(texts)
    assert (la == lb).all()
    assert ta == tb == [False, False, False, True]
    # the batched, length-sorted path equals one text at a time
    single = [reloaded.predict_logits([t])[0][0] for t in texts]
    assert torch.allclose(torch.tensor(lb), torch.tensor(np.array(single)), atol=1e-5)
    explicit = SentimentClassifier.load(
        tmp_path / "r", base_model=str(tiny_base), merge=False, precision="fp32"
    )
    assert (explicit.predict_logits(texts)[0] == lb).all()
    merged = SentimentClassifier.load(tmp_path / "r", precision="fp32")  # LoRA folded in
    assert np.abs(merged.predict_logits(texts)[0] - lb).max() < 1e-4


def _base_state(tiny_base):
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(str(tiny_base), num_labels=2)
    return {k: v for k, v in m.state_dict().items() if not k.startswith("score")}


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_only_intended_parameters_change(tiny_base, task_files, tmp_path, method):
    """Base weights stay bit-identical; the method's own weights and the head move."""
    before = _base_state(tiny_base)
    clf = train(train_config(method, tiny_base, *task_files, tmp_path / "r", epochs=1))
    model = clf.model
    if method == "lora":
        model = model.get_base_model()
        state = {
            k.replace(".base_layer", ""): v
            for k, v in model.state_dict().items()
            if "lora_" not in k and "score" not in k
        }
    else:
        state = {
            k: v
            for k, v in model.state_dict().items()
            if "senti_" not in k and not k.startswith("score")
        }
    assert set(state) == set(before)
    for k in before:
        assert torch.equal(state[k].cpu(), before[k]), k
    saved = load_file(str(tmp_path / "r" / "adapter_model.safetensors"))
    if method == "lora":
        lora_b = [v for k, v in saved.items() if "lora_B" in k]
        assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero
        assert any("score" in k for k in saved)
    else:
        ups = [v for k, v in saved.items() if k.endswith("up.weight")]
        assert len(ups) == 2 and all(v.abs().sum() > 0 for v in ups)  # up starts at zero
        assert "score.weight" in saved


def test_full_changes_the_base(trained_runs, tiny_base):
    before = _base_state(tiny_base)
    after = load_file(str(trained_runs["full"] / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > 0.9 * len(before)


@pytest.mark.parametrize("method", METHODS)
def test_resume_after_interruption_matches_uninterrupted(tiny_base, task_files, tmp_path, method):
    kw = dict(epochs=2, save_steps=7, logging_steps=4)
    full = train(train_config(method, tiny_base, *task_files, tmp_path / "a", **kw))

    cfg = train_config(method, tiny_base, *task_files, tmp_path / "b", **kw)
    # mid-epoch 2 (30 steps per epoch), after the checkpoint at 35
    train_until_interrupted(cfg, step=40)
    assert (tmp_path / "b" / "checkpoint").is_dir()
    with pytest.raises(UserError, match="--resume"):
        train(cfg)  # refuses to clobber the interrupted run
    resumed = train(cfg, resume=True)
    texts = ["好好的人", "差的天", "我你他的了是在"]
    assert torch.allclose(
        torch.tensor(full.predict_logits(texts)[0]),
        torch.tensor(resumed.predict_logits(texts)[0]),
        atol=1e-5,
    )
    steps = [m["step"] for m in read_metrics(tmp_path / "b") if m["type"] == "train"]
    assert steps == sorted(set(steps))  # no duplicated log lines after the resume
    # the same log: the loss window open at the checkpoint was saved with it
    logged = {
        r: [(m["type"], m["step"], round(m["loss"], 5)) for m in read_metrics(tmp_path / r)]
        for r in "ab"
    }
    assert logged["a"] == logged["b"]
    again = train(cfg, resume=True)  # finished: nothing to do, the run comes back as it is
    assert (again.predict_logits(texts)[0] == resumed.predict_logits(texts)[0]).all()


def test_resume_in_an_earlier_epoch_matches_uninterrupted(tiny_base, task_files, tmp_path):
    """Epochs after the resumed one shuffle as they would have (seed, epoch)."""
    kw = dict(epochs=3, save_steps=7, logging_steps=4, max_train_samples=470)  # last batch: 6
    full = train(train_config("lora", tiny_base, *task_files, tmp_path / "a", **kw))
    cfg = train_config("lora", tiny_base, *task_files, tmp_path / "b", **kw)
    train_until_interrupted(cfg, step=17)  # epoch 1 of 3 (30 steps each), checkpoint at 14
    resumed = train(cfg, resume=True)
    texts = ["好好的人", "差的天", "我你他的了是在"]
    assert (full.predict_logits(texts)[0] == resumed.predict_logits(texts)[0]).all()
    evals = [m for m in read_metrics(tmp_path / "b") if m["type"] == "eval"]
    assert [m["epoch"] for m in evals] == [1, 2, 3]


def test_bf16_autocast_trains_on_cpu(tiny_base, task_files, tmp_path):
    """In a process of its own: Accelerate keeps one precision per process."""
    import subprocess
    import sys

    import yaml

    train_file, dev_file = task_files
    args = ["train", "--method", "lora", "--base-model", tiny_base, "--data", train_file]
    args += ["--dev-data", dev_file, "--out", tmp_path / "r", "--epochs", "1"]
    args += ["--max-length", "40", "--precision", "bf16"]
    code = "from weibo_senti.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mixed precision: bf16" in done.stderr
    clf = SentimentClassifier.load(tmp_path / "r", precision="bf16")
    assert clf.predict(["好"])[0].label in ("negative", "positive")
    saved = yaml.safe_load((tmp_path / "r" / "hyperparameters.yaml").read_text())
    assert saved["precision"] == "bf16"


def test_fp16_without_cuda_is_a_clear_error(tiny_base, task_files, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error is for CPU-only machines")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        train(train_config("lora", tiny_base, *task_files, tmp_path / "r", precision="fp16"))


def test_corrupt_checkpoint_is_named_on_resume(tiny_base, task_files, tmp_path):
    cfg = train_config("adapter", tiny_base, *task_files, tmp_path / "r", epochs=2, save_steps=5)
    train_until_interrupted(cfg, step=7)
    (tmp_path / "r" / "checkpoint" / "optimizer.bin").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt checkpoint in .*checkpoint"):
        train(cfg, resume=True)
    (tmp_path / "r" / "checkpoint" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt weights file .*model.safetensors"):
        train(cfg, resume=True)


class Exploit:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_bin_base_is_loaded_only_with_weights_only(tiny_base, tmp_path):
    import shutil

    from weibo_senti import modeling, runfolder

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    (base / "model.safetensors").unlink()
    pwned = tmp_path / "pwned"
    torch.save(
        {"transformer.wte.weight": torch.zeros(2), "x": Exploit(str(pwned))},
        base / "pytorch_model.bin",
    )
    tok = runfolder.load_tokenizer(base, max_length=40)
    with pytest.raises(UserError, match="cannot load base model weights"):
        modeling.load_base_classifier(base, tok)
    assert not pwned.exists()


def test_emoticon_dropout_trains_on_stripped_posts_and_is_recorded(
    tiny_base, tmp_path, monkeypatch
):
    import csv

    import yaml

    from weibo_senti import features

    rows = [[i % 2, ("好棒" if i % 2 else "差坏") + "[哈哈]" * (i % 3)] for i in range(64)]
    rows.append([1, "[哈哈][哈哈]"])  # emoticons only: never emptied
    data = tmp_path / "emo.csv"
    with data.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["label", "review"], *rows])
    seen = []
    real = features.Collator.__call__
    monkeypatch.setattr(
        features.Collator, "__call__", lambda self, items: seen.extend(items) or real(self, items)
    )
    cfg = train_config(
        "lora", tiny_base, data, data, tmp_path / "r", epochs=2, emoticon_dropout=1.0
    )
    train(cfg)
    from weibo_senti.runfolder import load_tokenizer

    tok = load_tokenizer(tiny_base, max_length=40)
    bracket = tok.convert_tokens_to_ids("[")
    lengths = sorted(len(ids) for ids, _ in seen[:65])
    assert min(lengths) > 2  # no post was emptied to [CLS] [SEP]
    trained_on = [ids for ids, _ in seen[:65]]
    assert sum(bracket in ids for ids in trained_on) == 1  # only the emoticons-only post
    saved = yaml.safe_load((tmp_path / "r" / "hyperparameters.yaml").read_text())
    assert saved["emoticon_dropout"] == 1.0


def _full_disk_in(monkeypatch, target: str, error: Exception) -> None:
    """The save ``target`` (a runfolder function) fails as on a full disk, after it has begun
    writing its staging folder."""
    from weibo_senti import runfolder

    original = getattr(runfolder, target)

    def failing(out, *args, **kw):
        runfolder.checkpoint_staging(out).mkdir(exist_ok=True)
        (runfolder.checkpoint_staging(out) / "half-written").write_bytes(b"\0" * 10)
        raise error

    monkeypatch.setattr(runfolder, target, failing)
    return original


@pytest.mark.parametrize(
    "target, error",
    [
        ("commit_checkpoint", OSError(28, "No space left on device")),
        (
            "save_best",
            RuntimeError(  # how safetensors reports it (its SafetensorError is Rust's text)
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                'space left on device" })'
            ),
        ),
    ],
)
def test_a_full_disk_gets_one_line_and_the_run_resumes(
    tiny_base, task_files, tmp_path, monkeypatch, target, error
):
    from weibo_senti import runfolder

    out = tmp_path / "r"
    cfg = train_config("lora", tiny_base, *task_files, out, epochs=2)
    original = _full_disk_in(monkeypatch, target, error)
    with pytest.raises(UserError, match="disk full while writing .*--resume --out"):
        train(cfg)
    assert not (out / "checkpoint.tmp").exists() and not (out / ".best.tmp").exists()
    monkeypatch.setattr(runfolder, target, original)
    resumed = (
        train(cfg, resume=True) if (out / "checkpoint").exists() else train(cfg, overwrite=True)
    )
    assert runfolder.read_info(resumed.run).complete


def test_label_smoothing_softens_the_training_loss():
    """step_loss: 0 is the model's own loss; s > 0 is cross-entropy against smoothed targets."""
    from types import SimpleNamespace

    from weibo_senti.train import step_loss

    logits = torch.tensor([[4.0, -4.0], [-3.0, 3.0]])
    labels = torch.tensor([0, 1])

    def model(labels=None, **_):
        plain = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(logits=logits, loss=plain)

    plain = step_loss(model, {"input_ids": None, "labels": labels}, 0.0)
    smoothed = step_loss(model, {"input_ids": None, "labels": labels}, 0.2)
    # confident right answers cost more once the targets are 0.9/0.1 instead of 1/0
    assert smoothed > plain
    expected = -(0.9 * torch.log_softmax(logits, -1)[[0, 1], [0, 1]])
    expected -= 0.1 * torch.log_softmax(logits, -1)[[0, 1], [1, 0]]
    assert torch.allclose(smoothed, expected.mean())


@pytest.mark.parametrize("method", ["lora", "full"])
def test_gradient_checkpointing_trains_the_same_steps(
    tiny_base, task_files, tmp_path, method, monkeypatch
):
    """Recomputing activations changes memory, not the maths: the same losses step by step
    (dropout replayed from the saved RNG state); and the blocks really are checkpointed."""
    import transformers.modeling_utils as modeling_utils

    calls = []
    real = modeling_utils.checkpoint
    monkeypatch.setattr(
        modeling_utils, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    runs = {}
    for flag in (False, True):
        cfg = train_config(
            method,
            tiny_base,
            *task_files,
            tmp_path / f"gc-{flag}",
            epochs=1,
            logging_steps=1,
            gradient_checkpointing=flag,
        )
        train(cfg)
        runs[flag] = cfg.out
    plain, checkpointed = (
        [m["loss"] for m in read_metrics(Path(runs[f])) if m["type"] == "train"]
        for f in (False, True)
    )
    assert len(plain) >= 10
    assert checkpointed == pytest.approx(plain, abs=1e-4)
    assert len(calls) >= 2 * len(plain)  # two blocks per training step, only in the second run
