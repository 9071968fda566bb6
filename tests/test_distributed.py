"""Training in two CPU processes under `torchrun` (gloo), killed and resumed for real.

"Works distributed" is measured here: a two-process run killed with SIGKILL, resumed with the
documented command, ends where a one-process run of the same config ends. (On CPUs
`accelerate launch` hands several processes to mpirun; torchrun is the launcher that needs
nothing more. Accelerate reads the same environment either way.)
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from conftest import train_config

from weibo_senti import SentimentClassifier
from weibo_senti.train import train

HELPERS = Path(__file__).parent / "helpers"
TEXTS = [
    "好棒喜爱赞乐美好棒喜爱赞",
    "差坏烂恨糟怒哭差坏烂恨糟",
    "我你他的了是在有人这中大",
    "好差好差",
]


def without_dropout(tiny_base: Path, folder: Path) -> Path:
    """The tiny base with dropout off: one and two processes then differ only in rounding."""
    import shutil

    shutil.copytree(tiny_base, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def launch(*args) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(port), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_two_processes_killed_and_resumed_end_where_one_process_ends(
    tiny_base, task_files, tmp_path
):
    base = without_dropout(tiny_base, tmp_path / "base")
    # 470 rows: a part-filled last batch of 6, split 3 + 3. (Its place in the middle of an
    # epoch, under length grouping, is tested on the sampler; a longer run here would only
    # measure how rounding grows, as it does in any training.)
    kw = dict(epochs=2, save_steps=7, logging_steps=4, lora_dropout=0.0, max_train_samples=470)
    kw.update(group_by_length=False)
    one = train(train_config("lora", base, *task_files, tmp_path / "one", **kw))

    cfg = train_config("lora", base, *task_files, tmp_path / "two", **kw)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    killed = launch(HELPERS / "train_and_die.py", tmp_path / "two.yaml", 40)
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert (tmp_path / "two" / "checkpoint" / "random_states_1.pkl").is_file()  # rank 1 ran
    progress = json.loads((tmp_path / "two" / "checkpoint" / "progress.json").read_text())
    assert progress["global_step"] == 35  # the last checkpoint before the kill at step 40

    resumed = launch("-m", "weibo_senti.cli", "train", "--resume", "--out", tmp_path / "two")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    two = SentimentClassifier.load(tmp_path / "two", precision="fp32", merge=False)
    diff = np.abs(two.predict_proba(TEXTS) - one.predict_proba(TEXTS)).max()
    print(f"max |P(one process) - P(two processes)| = {diff:.2e}")
    assert diff < 1e-4, diff  # the same steps on the same batches; only rounding differs
    logged = {
        r: [
            (m["type"], m["step"]) for m in map(json.loads, (tmp_path / r / "metrics.jsonl").open())
        ]
        for r in ("one", "two")
    }
    assert logged["two"] == logged["one"]  # every logging step and epoch, once, in order


def test_pretraining_in_two_processes_ends_where_one_process_ends(tiny_base, tmp_path):
    """`pretrain` under torchrun: each process trains on its half of every global batch."""
    import csv
    import random

    from conftest import make_text
    from safetensors.torch import load_file

    from weibo_senti.config import PretrainConfig
    from weibo_senti.pretrain import pretrain

    base = without_dropout(tiny_base, tmp_path / "base")
    crawl, rng = tmp_path / "crawl.csv", random.Random(3)
    with open(crawl, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text"]] + [[make_text(rng, i % 2)] for i in range(600)])
    flags = dict(block_size=32, batch_size=8, held_out_blocks=10, lr=3e-3, precision="fp32")
    one = tmp_path / "one"
    pretrain(PretrainConfig(base_model=str(base), data=[str(crawl)], out=str(one), **flags))
    args = ["-m", "weibo_senti.cli", "pretrain", "--base-model", base, "--data", crawl]
    args += ["--out", tmp_path / "two"]
    args += [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", v)]
    two = launch(*args)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (
        load_file(str(one / "model.safetensors")),
        load_file(str(tmp_path / "two" / "model.safetensors")),
    )
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |weight(one process) - weight(two processes)| = {diff:.2e}")
    assert diff < 1e-4, diff
    ppl = [
        json.loads((f / "pretrain.json").read_text())["perplexity_after"]
        for f in (one, tmp_path / "two")
    ]
    assert abs(ppl[0] - ppl[1]) < 1e-3 * ppl[0]
