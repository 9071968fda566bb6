"""One output folder, two writers: the second gets one line, nothing is mixed or deleted."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from test_cli import cli

ENTRY = [sys.executable, "-c", "from weibo_senti.cli import main; main()"]


def start_training(tiny_base, task_files, out, *extra):
    args = ["train", "--method", "lora", "--base-model", tiny_base, "--data", task_files[0]]
    args += ["--dev-data", task_files[1], "--out", out, "--precision", "fp32", "--max-length", "40"]
    args += extra  # the tiny base has 64 positions
    return subprocess.Popen(
        [*ENTRY, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def wait_for(path, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_writer_is_refused_while_a_run_is_going(tiny_base, task_files, tmp_path):
    out = tmp_path / "run"
    first = start_training(tiny_base, task_files, out, "--epochs", 60)
    try:
        wait_for(out / "hyperparameters.yaml", first)
        competitors = {
            "another training": ["--epochs", "1"],
            "an overwrite": ["--epochs", "1", "--overwrite"],
        }
        for what, extra in competitors.items():
            second = start_training(tiny_base, task_files, out, *extra)
            _, err = second.communicate(timeout=300)
            assert second.returncode == 2, (what, err.decode()[-1500:])
            assert err.decode().strip().splitlines()[-1] == (
                f"error: {out} is in use by another weibo-senti training; wait for it to end "
                "or choose another --out"
            ), what
        code, _, err = cli("train", "--resume", "--out", out)
        assert code == 2 and "in use by another weibo-senti training" in err
        assert first.poll() is None  # the first run was neither stopped nor deleted
    finally:
        first.wait(timeout=600)
    assert first.returncode == 0, first.stderr.read().decode()[-2000:]
    import yaml

    hyper = yaml.safe_load((out / "hyperparameters.yaml").read_text())
    assert hyper["epochs"] == 60  # the folder is the first run's, whole
    assert cli("predict", out, "--text", "好")[0] == 0


def test_overwrite_replaces_only_run_folders(tiny_base, task_files, tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years of work")
    args = ["train", "--base-model", tiny_base, "--data", task_files[0], "--out", folder]
    code, _, err = cli(*args, "--overwrite")
    assert code == 2 and "not a weibo-senti run's (thesis.txt)" in err
    assert (folder / "thesis.txt").read_text() == "four years of work"


def test_overwrite_checks_the_inputs_before_deleting(trained_runs, tiny_base, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_runs["lora"], run)
    before = sorted(p.name for p in run.iterdir())
    args = ["train", "--base-model", tiny_base, "--data", tmp_path / "missing.csv"]
    code, _, err = cli(*args, "--out", run, "--overwrite")
    assert code == 2 and "does not exist" in err
    assert sorted(p.name for p in run.iterdir()) == before
    assert cli("predict", run, "--text", "好")[0] == 0


@pytest.mark.parametrize("where", ["new", "file"])
def test_a_train_that_cannot_start_leaves_nothing(tiny_base, tmp_path, where):
    out = tmp_path / "out"
    if where == "file":
        out.write_text("x")
    args = ["train", "--base-model", tiny_base, "--data", tmp_path / "missing.csv", "--out", out]
    code, _, err = cli(*args)
    assert code == 2
    assert (out.read_text() == "x") if where == "file" else not out.exists()
