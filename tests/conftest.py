"""A tiny random GPT-2 (2 layers, 32 wide) with a tiny Chinese vocab, and a learnable task.

Nothing here downloads: the base model folder is built from scratch in a temp dir.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("WEIBO_SENTI_NO_PROGRESS", "1")
os.environ.setdefault("WEIBO_SENTI_CACHE", tempfile.mkdtemp(prefix="weibo-senti-test-cache-"))

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = list("好棒喜爱赞乐美")
NEGATIVE = list("差坏烂恨糟怒哭")
NEUTRAL = list(
    "我你他的了是在有人这中大来上个们到说时要就出会也对生能而子那得于着下自之年过发后作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进等部度"
)
ASCII = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("[],.!?，。！？")


def make_text(rng: random.Random, label: int, length: int = 12) -> str:
    # Fixed length and dense sentiment characters: a frozen *random* base passes the signal on
    # only weakly, and varying [SEP] positions would drown it (real bases do not need this).
    sentiment = POSITIVE if label else NEGATIVE
    chars = [
        rng.choice(sentiment) if rng.random() < 0.5 else rng.choice(NEUTRAL)
        for _ in range(length - 1)
    ]
    chars.insert(rng.randrange(length), rng.choice(sentiment))
    return "".join(chars)


def write_task(path: Path, n: int, seed: int) -> Path:
    """A task a tiny model learns in seconds: the label is which sentiment characters occur."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "review"])
        for i in range(n):
            label = i % 2
            w.writerow([label, make_text(rng, label)])
    return path


# Label sets beyond 0/1: each label's posts carry its own characters (neutral: none).
THREE_WAY = {"negative": NEGATIVE, "neutral": [], "positive": POSITIVE}
EMOTIONS = {
    "angry": list("怒恨"),
    "fear": list("哭糟"),
    "happy": list("好棒"),
    "neutral": [],
    "sad": list("坏烂差"),
    "surprise": list("喜爱赞"),
}


def write_labelled(path: Path, n: int, seed: int, groups: dict[str, list[str]]) -> Path:
    """A task with the labels of ``groups`` as words, in round-robin order."""
    rng = random.Random(seed)
    names = list(groups)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "review"])
        for i in range(n):
            name = names[i % len(names)]
            chars = [
                rng.choice(groups[name])
                if groups[name] and rng.random() < 0.5
                else rng.choice(NEUTRAL)
                for _ in range(12)
            ]
            w.writerow([name, "".join(chars)])
    return path


def labelled_files(
    folder: Path, groups: dict[str, list[str]], n: tuple[int, int], seed: int
) -> tuple[Path, Path]:
    """train.csv and dev.csv (``n`` rows each; seeds ``seed`` and ``seed + 1``) in ``folder``."""
    return (
        write_labelled(folder / "train.csv", n[0], seed, groups),
        write_labelled(folder / "dev.csv", n[1], seed + 1, groups),
    )


@pytest.fixture(scope="session")
def three_way_files(tmp_path_factory) -> tuple[Path, Path]:
    return labelled_files(tmp_path_factory.mktemp("three-way"), THREE_WAY, (480, 150), 3)


@pytest.fixture(scope="session")
def emotion_files(tmp_path_factory) -> tuple[Path, Path]:
    return labelled_files(tmp_path_factory.mktemp("emotions"), EMOTIONS, (600, 180), 5)


def adapter_flags(runs: dict[str, Path]) -> list[str]:
    """`--adapter NAME=RUN` for each of ``runs``, at fp32: the CLI's many-adapter arguments."""
    flags = [x for name, run in runs.items() for x in ("--adapter", f"{name}={run}")]
    return [*flags, "--precision", "fp32"]


def record_forward_calls(clf, monkeypatch) -> list:
    """The ``adapter_names`` of every forward pass of ``clf``'s bank model, as they happen."""
    calls = []
    forward = clf.bank.model.forward
    monkeypatch.setattr(
        clf.bank.model,
        "forward",
        lambda *a, **k: calls.append(k.get("adapter_names")) or forward(*a, **k),
    )
    return calls


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A GPT-2 folder laid out like uer's: BertTokenizer, no pad id, bos/eos 50256."""
    import torch
    from transformers import BertTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL + ASCII
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizer(vocab=str(folder / "vocab.txt"))
    assert len(tok) == len(vocab)  # the vocab_file= trap builds 5 tokens
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=50256,
        eos_token_id=50256,
    )
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def task_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("task")
    return write_task(folder / "train.csv", 480, 1), write_task(folder / "dev.csv", 160, 2)


# Settings under which each method learns the task in a few seconds.
FAST = {
    "lora": dict(lr=5e-3, lora_r=8),
    "adapter": dict(lr=3e-3, adapter_size=16),
    "full": dict(lr=3e-3),
}


def train_config(method, base, train, dev, out, **kw):
    from weibo_senti import TrainConfig

    values = dict(
        method=method,
        base_model=str(base),
        data=[str(t) for t in train] if isinstance(train, list) else str(train),
        dev_data=str(dev),
        out=str(out),
        epochs=4,
        batch_size=16,
        max_length=40,
        logging_steps=5,
        warmup_ratio=0.0,
        precision="no",  # fp32: exact comparisons, and bf16 only pays off on large models
        **FAST[method],
    )
    values.update(kw)
    return TrainConfig(**values)


def train_until_interrupted(cfg, step: int) -> None:
    """Run `cfg` and stop it with Ctrl-C (KeyboardInterrupt) at `step`, like a user would."""
    import pytest

    from weibo_senti.train import train

    def interrupt(at):
        if at == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=interrupt)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, tiny_base, task_files):
    """One finished run per method, trained once for the whole session."""
    from weibo_senti.train import train

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for method in ("lora", "adapter", "full"):
        cfg = train_config(method, tiny_base, *task_files, root / method)
        runs[method] = train(cfg).run
    return runs
