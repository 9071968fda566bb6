"""Learning from the user's own posts, on the tiny model: `pretrain` (continued causal-LM
pretraining on a crawl), `select` (which posts to label) and training on several files."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NEGATIVE, POSITIVE, make_text, train_config
from safetensors.torch import load_file

from weibo_senti.cli import run_cli
from weibo_senti.config import PretrainConfig
from weibo_senti.errors import UserError
from weibo_senti.pretrain import pretrain
from weibo_senti.selection import uncertainty
from weibo_senti.train import step_loss, train


def write_crawl(path: Path, n: int, seed: int, column: str = "text") -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mid", column])
        for i in range(n):
            w.writerow([i, make_text(rng, i % 2, rng.randrange(6, 20))])
    return path


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> Path:
    return write_crawl(tmp_path_factory.mktemp("crawl") / "crawl.csv", 1500, 11)


def pretrain_config(base, data, out, **kw) -> PretrainConfig:
    values = dict(
        base_model=str(base), data=[str(d) for d in data], out=str(out), block_size=32,
        batch_size=8, epochs=1, held_out_blocks=16, lr=3e-3, save_steps=10, precision="fp32",
    )  # fmt: skip
    values.update(kw)
    return PretrainConfig(**values)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def cli(capsys, *args) -> tuple[int, str]:
    code = run_cli([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ---------------------------------------------------------------------------- pretrain
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_base, crawl) -> Path:
    out = tmp_path_factory.mktemp("pretrained") / "base"
    pretrain(pretrain_config(tiny_base, [crawl], out, epochs=2))
    return out


def test_pretraining_lowers_held_out_perplexity_and_records_it(pretrained, crawl):
    record = json.loads((pretrained / "pretrain.json").read_text())
    print(record["perplexity_before"], "->", record["perplexity_after"])
    assert record["perplexity_after"] < 0.5 * record["perplexity_before"]
    assert record["tokens_seen"] == record["steps"] * 8 * 32
    assert record["data"][0]["path"] == str(crawl.resolve())
    assert record["data"][0]["text_column"] == "text"
    losses = [json.loads(line)["loss"] for line in (pretrained / "metrics.jsonl").open()]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert not (pretrained / "checkpoint").exists()


def test_the_new_base_loads_in_stock_clients_and_trains(
    pretrained, tiny_base, task_files, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(pretrained)
    tok = AutoTokenizer.from_pretrained(pretrained)
    assert len(tok) == model.config.vocab_size  # the base's tokenizer, whole
    assert (pretrained / "vocab.txt").read_bytes() == (tiny_base / "vocab.txt").read_bytes()
    assert model.config.bos_token_id == 50256 and model.config.pad_token_id is None  # uer's
    before = weights(tiny_base)["transformer.h.0.attn.c_attn.weight"]
    assert not torch.equal(weights(pretrained)["transformer.h.0.attn.c_attn.weight"], before)
    clf = train(train_config("lora", pretrained, *task_files, tmp_path / "run", epochs=1))
    assert json.loads((clf.run / "run.json").read_text())["base"]["name"] == str(pretrained)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(
    tiny_base, crawl, tmp_path, monkeypatch, capsys
):
    whole = tmp_path / "whole"
    pretrain(pretrain_config(tiny_base, [crawl], whole))

    def stop(step):
        if step == 14:
            raise KeyboardInterrupt

    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "crawl.csv").write_bytes(crawl.read_bytes())
    monkeypatch.chdir(tmp_path / "here")  # relative paths, as a user types them
    with pytest.raises(KeyboardInterrupt):
        pretrain(pretrain_config(tiny_base, ["crawl.csv"], "cut"), on_step=stop)
    cut = tmp_path / "here" / "cut"
    assert json.loads((cut / "checkpoint" / "progress.json").read_text())["global_step"] == 10
    monkeypatch.chdir(tmp_path)  # resumed from elsewhere, by the documented command
    code, text = cli(capsys, "pretrain", "--resume", "--out", cut)
    assert code == 0, text
    a, b = weights(whole), weights(cut)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume is not bit-exact"
    record = json.loads((cut / "pretrain.json").read_text())
    assert (
        record["perplexity_after"]
        == json.loads((whole / "pretrain.json").read_text())["perplexity_after"]
    )
    steps = [json.loads(line)["step"] for line in (cut / "metrics.jsonl").open()]
    assert steps == sorted(set(steps))  # what was logged after the checkpoint, once


def test_resume_refuses_a_changed_crawl_and_out_as_the_base(tiny_base, crawl, tmp_path):
    data = tmp_path / "crawl.csv"
    data.write_bytes(crawl.read_bytes())

    def stop(step):
        if step == 12:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        pretrain(pretrain_config(tiny_base, [data], out), on_step=stop)
    with open(data, "a", encoding="utf-8") as f:
        f.write("9999,好棒好棒好棒好棒\n")
    with pytest.raises(UserError, match="the crawl has changed"):
        pretrain(pretrain_config(tiny_base, [data], out), resume=True)
    ours = tmp_path / "ours"  # a base pretrain wrote, continued in place
    pretrain(pretrain_config(tiny_base, [crawl], ours, max_tokens=500))
    with pytest.raises(UserError, match="holds the base itself"):
        pretrain(pretrain_config(ours, [crawl], ours), overwrite=True)
    assert (ours / "vocab.txt").is_file() and (ours / "pretrain.json").is_file()


def test_an_interruption_before_any_checkpoint_says_to_start_again(tiny_base, crawl, tmp_path):
    from weibo_senti.pretrain import how_to_continue

    out = tmp_path / "out"

    def stop(step):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(pretrain_config(tiny_base, [crawl], out), on_step=stop)
    assert "--overwrite" in how_to_continue(out)
    with pytest.raises(UserError, match="unfinished pretraining: no checkpoint .* --overwrite"):
        pretrain(pretrain_config(tiny_base, [crawl], out))
    pretrain(pretrain_config(tiny_base, [crawl], out, max_tokens=500), overwrite=True)
    assert (out / "pretrain.json").is_file()


def test_a_killed_cli_pretraining_resumes_with_the_documented_command(tiny_base, crawl, tmp_path):
    out = tmp_path / "base"
    args = [sys.executable, "-m", "weibo_senti.cli", "pretrain", "--base-model", str(tiny_base)]
    args += ["--data", str(crawl), "--out", str(out), "--block-size", "32", "--batch-size", "8"]
    args += ["--epochs", "3", "--save-steps", "5", "--precision", "fp32", "--lr", "3e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WEIBO_SENTI_NO_PROGRESS": "1"}
    whole = tmp_path / "whole"  # uninterrupted, in a process like the killed one
    subprocess.run([*args, "--out", str(whole)], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    progress = out / "checkpoint" / "progress.json"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not progress.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert progress.exists() and not (out / "pretrain.json").exists()
    done = subprocess.run(
        [*args[:4], "--resume", "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr and "base saved to" in done.stdout
    a, b = weights(whole), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lora_pretraining_is_merged_into_a_plain_base(tiny_base, crawl, tmp_path):
    out = tmp_path / "lora"
    record = pretrain(pretrain_config(tiny_base, [crawl], out, method="lora", lr=1e-2))
    assert record["perplexity_after"] < record["perplexity_before"]
    w = weights(out)
    assert not [k for k in w if "lora" in k]
    assert not torch.equal(
        w["transformer.h.1.attn.c_attn.weight"],
        weights(tiny_base)["transformer.h.1.attn.c_attn.weight"],
    )
    assert torch.equal(w["transformer.wte.weight"], weights(tiny_base)["transformer.wte.weight"])


def test_cli_pretrain_says_the_perplexities(tiny_base, crawl, tmp_path, capsys):
    out = tmp_path / "base"
    code, text = cli(capsys, "pretrain", "--base-model", tiny_base, "--data", crawl, "--out", out,
                     "--block-size", "32", "--max-tokens", "2000", "--precision", "fp32")  # fmt: skip
    assert code == 0, text
    assert "perplexity" in text and f"base saved to {out}" in text
    # --max-tokens 2000: steps of 32 blocks × 32 tokens until 2,000 are reached: two
    assert json.loads((out / "pretrain.json").read_text())["tokens_seen"] == 2 * 32 * 32
    code, text = cli(capsys, "pretrain", "--base-model", tiny_base, "--data", crawl, "--out", out)
    assert code == 2 and "already holds a pretrained base" in text


def test_posts_are_packed_as_fine_tuning_sees_them_emoticons_dropped_if_asked(tiny_base, tmp_path):
    from weibo_senti.pretrain import open_crawl
    from weibo_senti.runfolder import load_tokenizer

    crawl = tmp_path / "crawl.txt"
    crawl.write_text("好棒好棒[哈哈]\n[泪][泪]\n\n差😀\n", encoding="utf-8")
    tok = load_tokenizer(tiny_base, max_length=64)
    for drop, posts in (
        (False, ["好棒好棒[哈哈]", "[泪][泪]", "差😀"]),
        (True, ["好棒好棒", "差"]),
    ):
        c = open_crawl(PretrainConfig(data=[str(crawl)], drop_emoticons=drop, block_size=8), tok)
        assert list(c.posts()) == posts
    blocks = list(c.blocks())  # [CLS] 好 棒 好 棒 [SEP] [CLS] 差 | [SEP]: too few for a block
    assert blocks == [(tok("好棒好棒")["input_ids"] + tok("差")["input_ids"])[:8]]
    assert blocks[0][0] == tok.cls_token_id and blocks[0][5] == tok.sep_token_id


def not_gpt2(tmp_path: Path) -> Path:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "no text to pretrain on"),
        ("header only", "no text to pretrain on"),
        ("not gpt2", "not a GPT-2 causal LM"),
        ("block size", "beyond the 64 positions"),
        ("no column", "no column 'body'"),
        ("missing", "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(
    tiny_base, crawl, tmp_path, case, message, capsys
):
    data, base, flags = crawl, tiny_base, ["--block-size", "32"]
    if case == "empty":
        data = tmp_path / "empty.txt"
        data.write_text("\n\n")
    if case == "header only":
        data = tmp_path / "header.csv"
        data.write_text("mid,text\n")
    if case == "not gpt2":
        base = not_gpt2(tmp_path)
    if case == "block size":
        flags += ["--block-size", "65"]  # the last one counts
    if case == "no column":
        flags += ["--text-column", "body"]
    if case == "missing":
        data = tmp_path / "nowhere.csv"
    out = tmp_path / "out"
    code, text = cli(capsys, "pretrain", "--base-model", base, "--data", data, "--out", out, *flags)
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], text
    assert not out.exists()


def test_disk_full_says_how_to_resume(tiny_base, crawl, tmp_path, monkeypatch):
    import errno

    from weibo_senti import pretrain as module

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out"
    monkeypatch.setattr(module, "base_record", full)
    with pytest.raises(UserError, match="disk full .* pretrain --resume"):
        pretrain(pretrain_config(tiny_base, [crawl], out, max_tokens=3000))
    assert (out / "checkpoint" / "progress.json").is_file()  # resumable
    assert not (out / "config.json").exists()  # no half-written base
    assert not (out / ".base.tmp").exists()
    monkeypatch.undo()
    pretrain(pretrain_config(tiny_base, [crawl], out, max_tokens=3000), resume=True)
    assert (out / "pretrain.json").is_file()


# ---------------------------------------------------------------------------- select
def test_uncertainty_scores():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]])
    assert np.allclose(uncertainty(p, "margin"), [1.0, 0.0, 0.2])
    three = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    assert np.allclose(uncertainty(three, "entropy"), [1.0, 0.0], atol=1e-6)


def write_pool(path: Path, rng: random.Random, near_duplicates: int) -> Path:
    """Sure posts, unsure posts (as many of each sentiment), and one unsure post repeated
    with a character changed: near-duplicates, the most uncertain of all."""
    mixed = "".join(rng.choice(POSITIVE) + rng.choice(NEGATIVE) for _ in range(6))
    rows = [make_text(rng, i % 2) for i in range(120)]
    rows += ["".join(rng.choice(POSITIVE + NEGATIVE) for _ in range(12)) for _ in range(60)]
    rows += [mixed[:k] + "我" + mixed[k + 1 :] for k in range(near_duplicates)]
    rows += [mixed, mixed]  # an exact repeat: scored once
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "content", "author"])
        w.writerows([i, text, f"user{i % 7}"] for i, text in enumerate(rows))
    return path


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    return write_pool(tmp_path_factory.mktemp("pool") / "pool.csv", random.Random(5), 12)


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["lora", "adapter", "full"])
def test_select_ranks_by_uncertainty_and_writes_the_pools_columns(
    trained_runs, pool, tmp_path, capsys, method
):
    from weibo_senti import SentimentClassifier

    out = tmp_path / "to_label.csv"
    code, text = cli(capsys, "select", trained_runs[method], "--pool", pool, "--n", 10, "--out",
                     out, "--diversity", "none")  # fmt: skip
    assert code == 0, text
    rows = read_rows(out)
    assert list(rows[0]) == ["id", "content", "author", "uncertainty", "label"]
    assert len(rows) == 10 and all(r["label"] == "" for r in rows)
    scores = [float(r["uncertainty"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    clf = SentimentClassifier.load(trained_runs[method], precision="fp32")
    texts = list(dict.fromkeys(r["content"] for r in read_rows(pool)))
    every = uncertainty(clf.predict_proba(texts), "margin")
    assert np.allclose(sorted(every, reverse=True)[:10], scores, atol=1e-4)  # the top 10
    assert "1 repeats" in " ".join(text.split())


def test_diversity_keeps_near_duplicates_apart():
    """Twelve near-copies of one post (the same features, give or take), all more uncertain
    than the rest: uncertainty alone takes them all; k-means one."""
    from weibo_senti.selection import Candidates, choose

    rng = np.random.default_rng(0)
    copy = rng.normal(size=16)
    feats = np.vstack([copy + 1e-3 * rng.normal(size=(12, 16)), rng.normal(size=(88, 16))])
    scores = np.concatenate([0.95 + 0.001 * np.arange(12), rng.uniform(0.1, 0.9, 88)])
    cands = Candidates(100)
    cands.offer(scores, feats, [{"id": i} for i in range(100)])
    picked = {d: [it[3]["id"] for it in choose(cands, 8, d, seed=1)] for d in ("none", "kmeans")}
    assert set(picked["none"]) <= set(range(12))  # all eight from the copies
    assert len(set(picked["kmeans"]) & set(range(12))) == 1
    chosen_scores = [float(scores[i]) for i in picked["kmeans"]]
    assert chosen_scores == sorted(chosen_scores, reverse=True)
    assert picked["kmeans"][0] == 11  # the most uncertain copy stands for them


def test_posts_the_model_cannot_tell_apart_still_give_n():
    from weibo_senti.selection import Candidates, choose

    cands = Candidates(30)
    same = np.ones((30, 4))  # e.g. posts that differ only in emoji, all [UNK]
    cands.offer(np.linspace(0.5, 0.9, 30), same, [{"id": i} for i in range(30)])
    picked = [it[3]["id"] for it in choose(cands, 10, "kmeans", seed=0)]
    assert picked == list(range(29, 19, -1))  # one group, then the next most uncertain


def test_select_kmeans_end_to_end(trained_runs, pool, tmp_path, capsys):
    out = tmp_path / "to_label.parquet"
    code, text = cli(capsys, "select", trained_runs["full"], "--pool", pool, "--n", 8,
                     "--out", out)  # fmt: skip
    assert code == 0, text
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.column_names == ["id", "content", "author", "uncertainty", "label"]
    assert table.num_rows == 8 and len(set(table.column("content").to_pylist())) == 8


def test_select_with_three_labels_uses_entropy(tmp_path, tiny_base, three_way_files, capsys):
    run = train(train_config("full", tiny_base, *three_way_files, tmp_path / "run", epochs=1))
    out = tmp_path / "to_label.jsonl"
    code, text = cli(capsys, "select", run.run, "--pool", three_way_files[1], "--n", 5,
                     "--out", out, "--strategy", "entropy", "--label-column", "gold")  # fmt: skip
    assert code == 0, text
    rows = [json.loads(line) for line in out.open()]
    assert len(rows) == 5 and all(r["gold"] is None and "label" in r for r in rows)
    assert "negative, neutral, positive" in text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n", "1000"], "--n 1000 is more than the 194 posts"),
        (["--text-column", "body"], "no column 'body'"),
        (["--label-column", "author"], "already has a column 'author'"),
        (["--out", "x.xlsx"], "--out must end in"),
        (["--strategy", "random"], "--strategy must be one of"),
        (["--label-column", "content", "--text-column", "id"], "already has a column 'content'"),
    ],
)
def test_select_refuses_bad_input_in_one_line(trained_runs, pool, tmp_path, flags, message, capsys):
    args = ["select", trained_runs["lora"], "--pool", pool, "--out", tmp_path / "o.csv", "--n", 5]
    code, text = cli(capsys, *args, *flags)
    assert code == 2 and message in text, text
    assert not (tmp_path / "o.csv").exists()


def test_select_never_overwrites_without_a_word(trained_runs, pool, tmp_path, capsys):
    out = tmp_path / "o.csv"
    out.write_text("my labels\n")
    code, text = cli(capsys, "select", trained_runs["lora"], "--pool", pool, "--out", out)
    assert code == 2 and "--overwrite" in text
    assert out.read_text() == "my labels\n"


# ---------------------------------------------------------------------------- several files
@pytest.mark.parametrize("smoothing, class_weight", [(0.0, None), (0.1, [0.5, 2.0])])
def test_row_weights_weigh_like_repeated_rows(tiny_base, smoothing, class_weight):
    from transformers import GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification.from_pretrained(tiny_base, num_labels=2, pad_token_id=0)
    model.eval()
    cw = None if class_weight is None else torch.tensor(class_weight)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch["labels"] = torch.tensor([0, 1, 1])

    def loss(b, data_weight=None):
        return step_loss(model, dict(b), smoothing, cw, data_weight)

    weighted = loss(batch, torch.tensor([1.0, 3.0, 1.0]))
    repeated = {k: v[[0, 1, 1, 1, 2]] for k, v in batch.items()}
    assert torch.allclose(weighted, loss(repeated), atol=1e-6)
    assert torch.allclose(loss(batch, torch.full((3,), 2.0)), loss(batch), atol=1e-6)


def split_file(task: Path, tmp_path: Path) -> tuple[Path, Path]:
    lines = task.read_text(encoding="utf-8").splitlines(keepends=True)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("".join(lines[:301]), encoding="utf-8")
    b.write_text(lines[0].replace("review", "text") + "".join(lines[301:]), encoding="utf-8")
    return a, b


def test_two_files_train_as_their_rows_joined(tiny_base, task_files, tmp_path):
    train_file, dev = task_files
    a, b = split_file(train_file, tmp_path)  # b names its text column "text", as select writes
    kw = dict(epochs=1, group_by_length=False)
    one = train(train_config("lora", tiny_base, train_file, dev, tmp_path / "one", **kw))
    two = train(train_config("lora", tiny_base, [a, b], dev, tmp_path / "two", **kw))
    texts = ["好棒喜爱赞乐美好棒喜爱赞", "差坏烂恨糟怒哭差坏烂恨糟"]
    assert np.array_equal(one.predict_proba(texts), two.predict_proba(texts))
    saved = (tmp_path / "two" / "hyperparameters.yaml").read_text()
    assert str(a.resolve()) in saved and str(b.resolve()) in saved
    heavy = train(
        train_config("lora", tiny_base, [a, b], dev, tmp_path / "w", data_weights=[1, 5], **kw)
    )
    assert not np.allclose(heavy.predict_proba(texts), two.predict_proba(texts), atol=1e-6)
    assert "data_weights:\n- 1.0\n- 5.0" in (tmp_path / "w" / "hyperparameters.yaml").read_text()


def test_a_second_file_with_another_label_is_refused(tiny_base, task_files, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("label,review\nneutral,我你他\n", encoding="utf-8")
    cfg = train_config("lora", tiny_base, [task_files[0], other], task_files[1], tmp_path / "r")
    with pytest.raises(
        UserError, match="'neutral' is not one of the labels of the first --data file"
    ):
        train(cfg)
    assert not (tmp_path / "r").exists()


def test_cli_takes_several_data_files_and_their_weights(tiny_base, task_files, tmp_path):
    a, b = split_file(task_files[0], tmp_path)
    base = [sys.executable, "-m", "weibo_senti.cli", "train", "--base-model", str(tiny_base)]
    base += ["--dev-data", str(task_files[1]), "--max-length", "40", "--epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WEIBO_SENTI_NO_PROGRESS": "1"}
    bad = subprocess.run([*base, "--data", str(a), "--data", str(b), "--data-weights", "2",
                          "--out", str(tmp_path / "bad")], env=env, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "1 weights for 2 --data files" in bad.stderr
    ok = subprocess.run([*base, "--data", str(a), str(b), "--data-weights", "1", "2.5",  # a shell's glob
                         "--out", str(tmp_path / "ok")], env=env, capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "loss weight per file: 1, 2.5" in ok.stderr


def test_later_files_train_whole_in_their_own_encoding(tiny_base, task_files, tmp_path, caplog):
    """--max-train-samples and the dev split take from the first file; the labelled file,
    UTF-8 as select writes it, joins a GBK first file read with --encoding gbk."""
    import logging

    from weibo_senti.train import load_splits

    train_file, _ = task_files
    first = tmp_path / "first.csv"
    first.write_bytes(train_file.read_text(encoding="utf-8").encode("gbk"))
    mine = tmp_path / "mine.csv"
    rng = random.Random(9)
    rows = "".join(f"{i},{make_text(rng, i % 2)},{i % 2}\n" for i in range(40))
    mine.write_text("mid,text,label\n" + rows, encoding="utf-8")
    cfg = train_config(
        "lora", tiny_base, [first, mine], None, tmp_path / "r", dev_data=None,
        encoding="gbk", max_train_samples=100, dev_fraction=0.1,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="weibo_senti"):
        train_set, dev_set = load_splits(cfg)
    assert len(train_set) == 100 + 40 and train_set.texts[-40:] == [
        line.split(",")[1] for line in rows.splitlines()
    ]
    assert len(dev_set) == 48  # 10% of the first file's 480 rows
    assert "its posts are read from 'text'" in caplog.text
    assert "training rows per file" in caplog.text
    both = tmp_path / "both.csv"
    both.write_text("text,content,label\n好,差,1\n", encoding="utf-8")
    cfg = train_config("lora", tiny_base, [train_file, both], task_files[1], tmp_path / "s")
    with pytest.raises(UserError, match="no column 'review' .* name the column to train on"):
        load_splits(cfg)
