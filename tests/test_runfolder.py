"""The run folder as users treat it: moved, copied, used from anywhere, killed while writing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import train_config, train_until_interrupted
from test_cli import cli

from weibo_senti import runfolder
from weibo_senti.train import train

TEXTS = ["好棒喜爱赞乐美好棒喜爱赞", "差坏烂恨糟怒哭差坏烂恨糟", "我你他的了是在有人这中大"]


def predicted(run, *extra) -> list[float]:
    args = ["predict", run, "--precision", "fp32", "--json", *extra]
    code, out, err = cli(*args, *[x for t in TEXTS for x in ("--text", t)])
    assert code == 0, err
    return [json.loads(line)["probabilities"]["positive"] for line in out.splitlines()]


def test_a_run_works_from_anywhere_after_it_is_moved_or_copied(
    tiny_base, task_files, tmp_path, monkeypatch
):
    work = tmp_path / "work"
    shutil.copytree(tiny_base, work / "models" / "base")
    monkeypatch.chdir(work)  # the base is given relative to this directory, as users do
    train(train_config("lora", "models/base", *task_files, "runs/a", epochs=1))
    info = json.loads((work / "runs/a/run.json").read_text())
    assert info["base"]["name"] == "models/base"
    assert info["base"]["path"] == str((work / "models/base").resolve())
    expected = predicted(work / "runs/a")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert predicted(work / "runs/a") == expected
    shutil.copytree(work / "runs/a", elsewhere / "copy")
    assert predicted("copy") == expected
    shutil.move(work / "runs/a", tmp_path / "moved")
    assert predicted(tmp_path / "moved") == expected

    # Another machine: the base is somewhere else; one line says what to pass.
    shutil.move(work / "models/base", tmp_path / "base-elsewhere")
    code, _, err = cli("predict", tmp_path / "moved", "--text", "好")
    assert code == 2 and "--base-model" in err and "\n" not in err.strip()
    assert predicted(tmp_path / "moved", "--base-model", tmp_path / "base-elsewhere") == expected


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_resuming_a_copy_trains_the_copy_and_leaves_the_original_alone(
    tiny_base, task_files, tmp_path
):
    cfg = train_config("lora", tiny_base, *task_files, tmp_path / "a", epochs=2, save_steps=10)
    train_until_interrupted(cfg, step=45)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    before = digest(tmp_path / "a")
    code, _, err = cli("train", "--resume", "--out", tmp_path / "b")
    assert code == 0, err
    assert digest(tmp_path / "a") == before
    assert json.loads((tmp_path / "b" / "run.json").read_text())["complete"]
    assert not (tmp_path / "b" / "checkpoint").exists()


KW = dict(epochs=2, save_steps=7, logging_steps=4)


@pytest.fixture(scope="module")
def uninterrupted(tiny_base, task_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "r"
    return train(train_config("adapter", tiny_base, *task_files, out, **KW))


@pytest.mark.parametrize("phase", ["saving state", "progress", "old moved out", "new moved in"])
def test_a_kill_in_any_phase_of_a_checkpoint_write_resumes_exactly(
    phase, uninterrupted, tiny_base, task_files, tmp_path, monkeypatch
):
    """Killed while writing the checkpoint of step 35 (a Ctrl-C inside the write)."""
    cfg = train_config("adapter", tiny_base, *task_files, tmp_path / "r", **KW)
    armed = []
    real_replace, real_save = os.replace, torch.save

    def replace(src, dst):
        name = os.path.basename(dst)
        wanted = {"progress": "progress.json", "old moved out": "checkpoint.old"}
        if armed and (
            name == wanted.get(phase) or (phase == "new moved in" and name == "checkpoint")
        ):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    def save(obj, f, *a, **k):
        if armed and phase == "saving state" and str(f).endswith("optimizer.bin"):
            raise KeyboardInterrupt  # model.safetensors is written, the rest is not
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=lambda step: step == 34 and armed.append(step))
    monkeypatch.undo()
    resumed = train(cfg, resume=True)
    a, b = uninterrupted.predict_logits(TEXTS)[0], resumed.predict_logits(TEXTS)[0]
    assert np.abs(a - b).max() < 1e-5
    steps = [m["step"] for m in runfolder.read_metrics(tmp_path / "r") if m["type"] == "train"]
    assert steps == sorted(set(steps))
    leftovers = {"checkpoint", "checkpoint.old", "checkpoint.tmp"} & {
        p.name for p in (tmp_path / "r").iterdir()
    }
    assert not leftovers


def test_a_kill_after_completion_is_not_resumed_and_the_leftovers_go(
    tiny_base, task_files, tmp_path
):
    cfg = train_config("adapter", tiny_base, *task_files, tmp_path / "r", **KW)
    train_until_interrupted(cfg, step=40)
    runfolder.mark_complete(tmp_path / "r")  # as if killed between marking and cleaning up
    code, _, err = cli("train", "--resume", "--out", tmp_path / "r")
    assert code == 0 and "finished training; nothing to resume" in err, err
    assert not (tmp_path / "r" / "checkpoint").exists()


def test_resume_takes_the_base_from_elsewhere_but_no_other_change(tiny_base, task_files, tmp_path):
    base = shutil.copytree(tiny_base, tmp_path / "base")
    cfg = train_config("lora", base, *task_files, tmp_path / "r", **KW)
    train_until_interrupted(cfg, step=10)
    shutil.move(base, tmp_path / "moved-base")  # another machine: the base is elsewhere
    code, _, err = cli("train", "--resume", "--out", tmp_path / "r", "--epochs", 5)
    assert code == 2 and "--epochs cannot change it" in err
    code, _, err = cli("train", "--resume", "--out", tmp_path / "r")
    assert code == 2 and "--base-model" in err
    code, _, err = cli(
        "train", "--resume", "--out", tmp_path / "r", "--base-model", tmp_path / "moved-base"
    )
    assert code == 0, err


def test_a_train_that_cannot_start_leaves_no_folder(task_files, tmp_path):
    code, _, err = cli("train", "--base-model", tmp_path / "nope", "--out", tmp_path / "r")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "r").exists()


def test_old_records_and_foreign_bases_get_one_line(trained_runs, tmp_path, monkeypatch):
    """run.json of weibo-senti 0.1 (`base_model` + a flat fingerprint) still loads."""
    for method in ("lora", "adapter"):
        old = shutil.copytree(trained_runs[method], tmp_path / method)
        info = json.loads((old / "run.json").read_text())
        flat = {**info, "base_model": info["base"]["path"], "base": info["base"]["fingerprint"]}
        (old / "run.json").write_text(json.dumps(flat))
        monkeypatch.chdir("/")
        assert predicted(old) == predicted(trained_runs[method])
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 141}))
    code, _, err = cli("predict", trained_runs["lora"], "--base-model", bert, "--text", "好")
    assert code == 2 and "different base" in err and "\n" not in err.strip()


def _ask_for_code(folder, config_name: str, marker) -> None:
    config = json.loads((folder / config_name).read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / config_name).write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    )


@pytest.mark.parametrize(
    "config_name", ["tokenizer_config.json", "config.json", "adapter_config.json"]
)
def test_folders_that_ask_to_run_code_are_refused_by_every_command(
    trained_runs, task_files, tmp_path, config_name
):
    import shutil

    from test_cli import cli

    method = "full" if config_name == "config.json" else "lora"
    run = tmp_path / "run"
    shutil.copytree(trained_runs[method], run)
    marker = tmp_path / "PWNED"
    _ask_for_code(run, config_name, marker)
    commands = [
        ("predict", run, "--text", "好"),
        ("evaluate", run, "--data", task_files[1]),
        ("explain", run, "--text", "好"),
        ("merge", run, "--out", tmp_path / "m"),
        ("train", "--resume", "--out", run),
    ]
    for args in commands:
        if method == "full" and args[0] == "merge":
            continue
        code, _, err = cli(*args, input="1\n好开心\nq\n")
        assert code == 2 and "asks to run code from the folder" in err, (args, err)
        assert config_name in err
    from weibo_senti.errors import UserError
    from weibo_senti.predict import SentimentClassifier

    with pytest.raises(UserError, match="never runs code"):
        SentimentClassifier.load(run)
    assert not marker.exists()


def test_a_base_folder_that_asks_to_run_code_is_refused(tiny_base, task_files, tmp_path):
    import shutil

    from test_cli import cli

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    _ask_for_code(base, "config.json", tmp_path / "PWNED")
    code, _, err = cli(
        "train", "--data", task_files[0], "--base-model", base, "--out", tmp_path / "r"
    )
    assert code == 2 and "asks to run code" in err and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("method", ["lora", "adapter", "full"])
def test_a_flipped_bit_or_a_swapped_tokenizer_is_named_on_load(trained_runs, tmp_path, method):
    import shutil

    from test_cli import cli

    from weibo_senti.runfolder import SEALED_FILES, read_info

    run = tmp_path / "run"
    shutil.copytree(trained_runs[method], run)
    sealed = read_info(run).files
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert weights in sealed and "tokenizer.json" in sealed and set(sealed) <= set(SEALED_FILES)
    assert cli("predict", run, "--text", "好")[0] == 0
    data = bytearray((run / weights).read_bytes())
    data[-3] ^= 0x10  # one bit of one weight: still a valid safetensors file
    (run / weights).write_bytes(bytes(data))
    code, _, err = cli("predict", run, "--text", "好")
    assert code == 2 and f"{weights} has changed since the run was saved" in err
    shutil.copy2(trained_runs[method] / weights, run / weights)
    # same size, another vocabulary: two tokens swapped
    tok = json.loads((run / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    a, b = "好", "差"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (run / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    code, _, err = cli("evaluate", run, "--data", run / "missing.csv")
    assert code == 2 and "tokenizer.json has changed" in err
    (run / "tokenizer.json").unlink()
    code, _, err = cli("predict", run, "--text", "好")
    assert code == 2 and "missing tokenizer.json" in err


def _unseal(run) -> None:
    info = json.loads((run / "run.json").read_text())
    info["files"] = {}  # these cases are about records as written, not about later changes
    (run / "run.json").write_text(json.dumps(info))


def _set_method(run, method: str) -> None:
    info = json.loads((run / "run.json").read_text())
    info["method"] = method
    (run / "run.json").write_text(json.dumps(info))


def _drop_size(run) -> None:
    config = json.loads((run / "adapter_config.json").read_text())
    del config["size"]
    (run / "adapter_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "source, damage, message",
    [
        ("adapter", _drop_size, "adapter_config.json lacks size"),
        ("lora", lambda run: _set_method(run, "prefix"), "unknown method 'prefix'"),
        (
            "adapter",
            lambda run: _set_method(run, "lora"),
            "is an adapter run's, but run.json says lora",
        ),
        (
            "lora",
            lambda run: _set_method(run, "adapter"),
            "is a lora run's, but run.json says adapter",
        ),
    ],
)
def test_inconsistent_records_get_one_line(trained_runs, tmp_path, source, damage, message):
    import shutil

    from test_cli import cli

    run = tmp_path / "run"
    shutil.copytree(trained_runs[source], run)
    _unseal(run)
    damage(run)
    for args in (
        ("predict", run, "--text", "好"),
        ("merge", run, "--out", tmp_path / "m", "--export"),
    ):
        code, _, err = cli(*args)
        assert code == 2 and message in err, (args, err)


def test_a_base_of_the_same_shape_with_other_weights_is_refused(trained_runs, tiny_base, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file
    from test_cli import cli

    from weibo_senti.runfolder import read_info

    assert read_info(trained_runs["lora"]).base.fingerprint["weights_sha256"]
    other = tmp_path / "other-base"
    shutil.copytree(tiny_base, other)
    weights = next(other.glob("*.safetensors"))
    tensors = load_file(str(weights))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01  # same shape, other weights
    save_file(tensors, str(weights), metadata={"format": "pt"})
    code, _, err = cli("predict", trained_runs["lora"], "--base-model", other, "--text", "好")
    assert code == 2 and "right shape but other weights" in err
    assert cli("predict", trained_runs["lora"], "--base-model", tiny_base, "--text", "好")[0] == 0
