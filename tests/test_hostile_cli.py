"""Hostile cases at the CLI's edge: every bad flag, record, config and place ends as one
`error:` line with exit code 2, nothing is written or lost, and no traceback escapes.

Each case runs the real entry (`weibo_senti.cli.run_cli`, what `weibo-senti` runs) in-process.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weibo_senti import TrainConfig
from weibo_senti.cli import run_cli
from weibo_senti.errors import UserError, one_line


def edge(capsys, *args) -> tuple[int, str, str]:
    code = run_cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2, err
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def train_flags(tiny_base, task_files):
    train, dev = task_files
    base = ["train", "--base-model", tiny_base, "--data", train, "--dev-data", dev]
    return base + ["--epochs", "1", "--max-length", "40", "--precision", "fp32"]


# flag, value, what the line must name
BAD_TRAIN_FLAGS = [
    ("--lr", "0", "greater than 0"),
    ("--lr", "-1", "greater than 0"),
    ("--lr", "nan", "finite"),
    ("--lr", "inf", "finite"),
    ("--lr", "5", "less than or equal to 1"),
    ("--lr", "abc", "valid number"),
    ("--weight-decay", "-0.1", "greater than or equal to 0"),
    ("--weight-decay", "nan", "finite"),
    ("--warmup-ratio", "-0.1", "warmup_ratio"),
    ("--warmup-ratio", "1.5", "warmup_ratio"),
    ("--max-grad-norm", "-1", "max_grad_norm"),
    ("--seed", "-1", "seed"),
    ("--seed", str(2**32), "4294967295"),
    ("--save-steps", "0", "save_steps"),
    ("--save-steps", "-5", "save_steps"),
    ("--logging-steps", "0", "logging_steps"),
    ("--lora-r", "0", "lora_r"),
    ("--lora-r", "-2", "lora_r"),
    ("--lora-alpha", "0", "lora_alpha"),
    ("--lora-dropout", "1", "lora_dropout"),
    ("--lora-dropout", "2", "lora_dropout"),
    ("--lora-dropout", "-0.1", "lora_dropout"),
    ("--adapter-size", "0", "adapter_size"),
    ("--label-smoothing", "1", "label_smoothing"),
    ("--label-smoothing", "-0.5", "label_smoothing"),
    ("--emoticon-dropout", "1.5", "emoticon_dropout"),
    ("--epochs", "0", "epochs"),
    ("--epochs", "1.5", "valid integer"),
    ("--batch-size", "0", "batch_size"),
    ("--eval-batch-size", "0", "eval_batch_size"),
    ("--max-length", "2", "max_length"),
    ("--max-length", "500", "64 positions"),
    ("--dev-fraction", "0", "dev_fraction"),
    ("--dev-fraction", "1", "dev_fraction"),
    ("--max-train-samples", "0", "max_train_samples"),
    ("--max-train-samples", "100000", "480 training rows"),
    ("--method", "qlora", "'lora', 'adapter' or 'full'"),
    ("--precision", "int8", "precision"),
    ("--text-column", "label", "read its own labels"),
    ("--text-column", "", "text_column"),
    ("--encoding", "no-such-codec", "not an encoding"),
    ("--lora-target-modules", "nothing", "matches no module"),
    ("--lora-target-modules", "ln_1", "LoRA cannot adapt"),
    ("--base-model", "/no/such/base", "/no/such/base"),
    ("--data", "/no/such/file.csv", "/no/such/file.csv"),
    ("--no-such-flag", "1", "No such option"),
]


@pytest.mark.parametrize("flag,value,needle", BAD_TRAIN_FLAGS, ids=lambda v: str(v)[:24])
def test_bad_train_flags_are_one_line_and_write_nothing(
    capsys, tmp_path, train_flags, flag, value, needle
):
    out = tmp_path / "run"
    args = [*train_flags, "--out", out]
    if flag == "--dev-fraction":  # only used without --dev-data
        args = [a for a in args if a != train_flags[train_flags.index("--dev-data") + 1]]
        args.remove("--dev-data")
    code, _, err = edge(capsys, *args, flag, value)
    assert_one_error_line(code, err, needle)
    assert not out.exists() or not any(out.iterdir())


BAD_YAML = [
    ("lr: -1\n", "lr"),
    ("lr: abc\n", "lr"),
    ("batch_size: sixteen\n", "batch_size"),
    ("bogus_option: 1\n", "unknown option(s): bogus_option"),
    ("- just\n- a list\n", "mapping of options"),
    ("lr: [1, 2\n", "cannot read config file"),
    ("lora_target_modules: c_attn\n", "lora_target_modules"),
    ("lora_r: {nested: 1}\n", "lora_r"),
]


@pytest.mark.parametrize("text,needle", BAD_YAML, ids=lambda v: str(v)[:20])
def test_bad_yaml_configs_are_one_line(capsys, tmp_path, train_flags, text, needle):
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    code, _, err = edge(capsys, *train_flags, "--out", tmp_path / "run", "--config", config)
    assert_one_error_line(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_resume_validates_the_saved_hyperparameters_like_flags(capsys, tmp_path, trained_runs):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["lora"], run)
    saved = yaml.safe_load((run / "hyperparameters.yaml").read_text())
    saved["lora_r"] = -3
    (run / "hyperparameters.yaml").write_text(yaml.safe_dump(saved))
    code, _, err = edge(capsys, "train", "--resume", "--out", run)
    assert_one_error_line(code, err, "lora_r", "-3")


# run.json damaged in one field: (key, value, what the line must name)
BAD_RECORDS = [
    ("max_length", "40", "max_length"),
    ("max_length", -5, "max_length"),
    ("max_length", 5000, "64 positions"),
    ("max_length", None, "max_length"),
    ("pad_token_id", -1, "pad_token_id"),
    ("labels", ["only-one"], "labels"),
    ("labels", "negative,positive", "labels"),
    ("labels_zh", ["负面"], "labels_zh"),
    ("complete", "yes", "complete"),
    ("temperature", 0, "temperature"),
    ("temperature", "1.0", "temperature"),
    ("base", "x", "base"),
    ("base", {"path": "/x"}, "base.name"),
    ("files", [], "files"),
    ("trainable_params", -1, "trainable_params"),
    ("method", "qlora", "unknown method"),
    ("text_column", 7, "text_column"),
]


@pytest.mark.parametrize("key,value,needle", BAD_RECORDS, ids=lambda v: str(v)[:16])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_damaged_run_record_is_one_line(
    capsys, tmp_path, trained_runs, method, key, value, needle
):
    run = tmp_path / "run"
    shutil.copytree(trained_runs[method], run)
    record = json.loads((run / "run.json").read_text())
    record[key] = value
    (run / "run.json").write_text(json.dumps(record))
    code, _, err = edge(capsys, "predict", run, "--text", "好", "--precision", "fp32")
    assert_one_error_line(code, err, needle)


@pytest.mark.parametrize("content", ["", "[1, 2]", "null", "{", "\xff\xfe"])
def test_a_run_record_that_is_not_an_object_is_one_line(capsys, tmp_path, trained_runs, content):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["lora"], run)
    (run / "run.json").write_bytes(content.encode("latin-1"))
    code, _, err = edge(capsys, "predict", run, "--text", "好")
    assert_one_error_line(code, err, "run.json")


BAD_PREDICT = [
    (["--text", "好", "--input", "{dev}"], "not both"),
    (["--output", "{tmp}/o.csv"], "--output needs --input"),
    (["--text", "好", "--resume"], "apply to an --output"),
    (["--text", "好", "--overwrite"], "apply to an --output"),
    (["--text", "好", "--batch-size", "0"], "--batch-size"),
    (["--input", "{dev}", "--output", "{tmp}/o.csv", "--chunk-rows", "0"], "--chunk-rows"),
    (["--input", "{dev}", "--engine", "spark"], "--engine"),
    (["--input", "{dev}", "--output", "{tmp}/o.csv", "--workers", "0"], "--workers"),
    (["--text", "好", "--precision", "int4"], "int4"),
    (["--text", "好", "--use", "nobody"], "nobody"),
    (["--input", "{dev}", "--output", "{tmp}/o.xlsx"], "xlsx"),
    (["--input", "{tmp}/missing.csv", "--output", "{tmp}/o.csv"], "missing.csv"),
]


@pytest.mark.parametrize("args,needle", BAD_PREDICT, ids=lambda v: str(v)[:30])
def test_bad_predict_flags_are_one_line(capsys, tmp_path, trained_runs, task_files, args, needle):
    args = [a.format(dev=task_files[1], tmp=tmp_path) for a in args]
    code, _, err = edge(capsys, "predict", trained_runs["lora"], *args)
    assert_one_error_line(code, err, needle)
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["predict", "{tmp}/nowhere", "--text", "好"], "does not exist"),
        (["predict", "{file}", "--text", "好"], "is a file"),
        (["predict", "--adapter", "oops", "--text", "好"], "NAME=RUN_FOLDER"),
        (["predict", "--text", "好"], "give a run folder"),
        (["evaluate", "{lora}", "--data", "{tmp}/none.csv"], "none.csv"),
        (["evaluate", "{lora}", "--data", "{dev}", "--label-column", "review"], "both 'review'"),
        (["evaluate", "{lora}", "--data", "{dev}", "--reliability", "{tmp}/r.txt"], ".png"),
        (["explain", "{lora}"], "--text"),
        (["explain", "{lora}", "--text", "好", "--steps", "0"], "--steps"),
        (["explain", "{lora}", "--text", "好", "--png", "{tmp}/x.jpg"], ".png"),
        (["report", "{tmp}/nowhere"], "nowhere"),
        (["merge", "{full}", "--out", "{tmp}/m"], "full fine-tuning run"),
        (["merge", "{adapter}", "--out", "{tmp}/m"], "--export"),
        (["merge", "{lora}", "--out", "{lora}", "--overwrite"], "is an input run"),
        (["combine", "{lora}", "--out", "{tmp}/c"], "at least two runs"),
        (
            [
                "combine",
                "{lora}",
                "{lora}",
                "--out",
                "{tmp}/c",
                "--weights",
                "nan",
                "--weights",
                "1",
            ],
            "finite",
        ),
        (
            [
                "combine",
                "{lora}",
                "{lora}",
                "--out",
                "{tmp}/c",
                "--weights",
                "inf",
                "--weights",
                "1",
            ],
            "finite",
        ),
        (
            ["combine", "{lora}", "{lora}", "--out", "{tmp}/c", "--weights", "0", "--weights", "0"],
            "not all 0",
        ),
        (["combine", "{lora}", "{lora}", "--out", "{tmp}/c", "--weights", "1"], "1 weights for 2"),
        (
            ["combine", "{lora}", "{lora}", "--out", "{tmp}/c", "--combination-type", "avg"],
            "--combination-type",
        ),
        (["combine", "{lora}", "{lora}", "--out", "{tmp}/c", "--head", "7"], "--head"),
        (["combine", "{lora}", "{full}", "--out", "{tmp}/c"], "only LoRA runs"),
        (["combine", "{lora}", "{lora}", "--out", "{tmp}/c", "--density", "2"], "--density"),
        (["nosuchcommand"], "No such command"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_commands_are_one_line(capsys, tmp_path, trained_runs, task_files, args, needle):
    file = tmp_path / "file.txt"
    file.write_text("x")
    names = {m: trained_runs[m] for m in ("lora", "adapter", "full")}
    args = [a.format(tmp=tmp_path, file=file, dev=task_files[1], **names) for a in args]
    code, _, err = edge(capsys, *args)
    assert_one_error_line(code, err, needle)
    assert not (tmp_path / "m").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", ["merge", "combine"])
def test_overwrite_never_deletes_a_folder_that_is_not_a_run(
    capsys, tmp_path, trained_runs, command
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    runs = [trained_runs["lora"]] * (2 if command == "combine" else 1)
    code, _, err = edge(capsys, command, *runs, "--out", out, "--overwrite")
    assert_one_error_line(code, err, "notes.txt")
    assert (out / "notes.txt").read_text() == "mine"
    # a run folder of ours is replaced
    (out / "notes.txt").unlink()
    code, _, err = edge(capsys, command, *runs, "--out", out)
    assert code == 0, err
    code, _, err = edge(capsys, command, *runs, "--out", out, "--overwrite")
    assert code == 0, err


@pytest.fixture
def incomplete_run(tmp_path, trained_runs):
    run = tmp_path / "training"
    shutil.copytree(trained_runs["lora"], run)
    record = json.loads((run / "run.json").read_text())
    record["complete"], record["files"] = False, {}
    (run / "run.json").write_text(json.dumps(record))
    return run


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "{run}", "--text", "好"],
        ["evaluate", "{run}", "--data", "{dev}"],
        ["merge", "{run}", "--out", "{tmp}/m"],
        ["combine", "{run}", "{run}", "--out", "{tmp}/c"],
        ["predict", "--adapter", "a={run}", "--adapter", "b={run}", "--text", "好"],
    ],
    ids=lambda v: v[0],
)
def test_a_run_still_training_is_refused_unless_asked(
    capsys, tmp_path, incomplete_run, task_files, args
):
    args = [a.format(run=incomplete_run, dev=task_files[1], tmp=tmp_path) for a in args]
    code, _, err = edge(capsys, *args)
    assert_one_error_line(code, err, "has not finished training", "--allow-incomplete")


def test_allow_incomplete_predicts_with_the_best_epoch_so_far(capsys, incomplete_run):
    code, out, err = edge(capsys, "predict", incomplete_run, "--text", "好", "--allow-incomplete")
    assert code == 0, err
    assert "预测结果" in out


# ------------------------------------------------------------ library errors at the edge
def _safetensors_error():
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os 28)")


def _pyarrow_error():
    import pyarrow as pa

    return pa.ArrowInvalid("Parquet magic bytes not found in footer")


def _ort_error():
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    return InvalidArgument("Got invalid dimensions for input")


EDGE_ERRORS = [
    (lambda: OSError(errno.ENOSPC, "No space left on device", "/x/out.csv"), "disk full"),
    (lambda: OSError(errno.EDQUOT, "Disk quota exceeded", "/x/out.csv"), "disk full"),
    (lambda: OSError(errno.EROFS, "Read-only file system", "/ro/run"), "read-only file system"),
    (lambda: OSError(errno.EACCES, "Permission denied", "/root/x"), "permission denied: /root"),
    (lambda: PermissionError(errno.EPERM, "Operation not permitted", "/x"), "not permitted"),
    (lambda: FileNotFoundError(errno.ENOENT, "No such file", "/gone"), "no such file"),
    (lambda: IsADirectoryError(errno.EISDIR, "Is a directory", "/d"), "is a folder"),
    (lambda: NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"), "not a folder"),
    (lambda: OSError(errno.ENAMETOOLONG, "File name too long", "/x" * 300), "too long"),
    (
        lambda: RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5 vs 3"),
        "disk full",
    ),
    (_safetensors_error, "disk full"),
    (_pyarrow_error, "pyarrow"),
    (_ort_error, "ONNX Runtime"),
    (lambda: UserError("plain"), "plain"),
]


@pytest.mark.parametrize("make,needle", EDGE_ERRORS, ids=lambda v: getattr(v, "__name__", v))
def test_known_library_errors_become_one_line(capsys, monkeypatch, trained_runs, make, needle):
    from weibo_senti import predict

    def fail(*a, **k):
        raise make()

    monkeypatch.setattr(predict.SentimentClassifier, "load", fail)
    code, _, err = edge(capsys, "predict", trained_runs["lora"], "--text", "好")
    assert_one_error_line(code, err, needle)


@pytest.mark.parametrize(
    "error",
    [
        KeyError("x"),
        TypeError("bug"),
        ValueError("bug"),
        OSError(errno.EIO, "I/O error"),
        RuntimeError("bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_keep_their_traceback(capsys, monkeypatch, trained_runs, error):
    from weibo_senti import predict

    def fail(*a, **k):
        raise error

    assert one_line(error) is None
    monkeypatch.setattr(predict.SentimentClassifier, "load", fail)
    with pytest.raises(type(error)):
        run_cli(["predict", str(trained_runs["lora"]), "--text", "好"])


@pytest.mark.parametrize("where", ["safetensors", "tokenizer"])
def test_a_full_disk_in_merge_is_one_line_and_leaves_no_output(
    capsys, monkeypatch, tmp_path, trained_runs, where
):
    from weibo_senti import runfolder

    def full(*a, **k):
        if where == "safetensors":
            raise _safetensors_error()
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.tmp"))

    target = "save_model_folder" if where == "safetensors" else "save_tokenizer"
    monkeypatch.setattr(runfolder, target, full)
    code, _, err = edge(capsys, "merge", trained_runs["lora"], "--out", tmp_path / "m")
    assert_one_error_line(code, err, "disk full")
    assert not (tmp_path / "m").exists()


def test_a_full_disk_in_torch_s_writer_during_training_says_how_to_resume(
    capsys, monkeypatch, tmp_path, train_flags
):
    import torch

    real = torch.save

    def full(obj, f, *a, **k):
        if "optimizer" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5 vs 3")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    code, _, err = edge(capsys, *train_flags, "--out", out)
    assert_one_error_line(code, err, "disk full", f"--resume --out {out}")


# ------------------------------------------------------------ property tests
FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.text(max_size=6), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(TrainConfig.model_fields)), FIELD_VALUES, max_size=6))
def test_train_config_takes_random_values_or_names_the_field(values):
    try:
        cfg = TrainConfig.checked(**values)
    except UserError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert cfg.lr is not None and 0 < cfg.lr <= 1 and math.isfinite(cfg.lr)
    assert cfg.text_column != cfg.label_column
    assert TrainConfig.checked(**cfg.to_dict()) == cfg  # what hyperparameters.yaml holds reloads


ARGV_POOL = {
    "commands": ["train", "predict", "evaluate", "merge", "combine", "explain", "report"],
    "flags": [
        "--lr",
        "--epochs",
        "--seed",
        "--batch-size",
        "--max-length",
        "--text",
        "--input",
        "--output",
        "--weights",
        "--precision",
        "--chunk-rows",
        "--steps",
        "--overwrite",
        "--resume",
        "--json",
        "--method",
        "--data",
        "--out",
        "--lora-r",
        "--engine",
        "--head",
    ],
    "values": ["0", "-1", "1e309", "nan", "abc", "", "好", "3", "/no/such", "--", "-x", "1.5"],
}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    command=st.sampled_from(ARGV_POOL["commands"]),
    rest=st.lists(
        st.one_of(st.sampled_from(ARGV_POOL["flags"]), st.sampled_from(ARGV_POOL["values"])),
        max_size=8,
    ),
)
def test_random_argument_lists_never_end_in_a_traceback(capsys, tmp_path, command, rest):
    # Nothing can start real work: the run, base and data named here do not exist.
    argv = [command, "/no/such/run"] if command not in ("train", "combine") else [command]
    argv += rest + ["--base-model", "/no/such/base"] if command == "train" else rest
    if command == "train":
        argv += ["--out", str(tmp_path / "never")]
    code = run_cli(argv)
    _, err = capsys.readouterr()
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.strip().splitlines()[-1].startswith("error: ")


def test_a_readonly_output_place_is_one_line(capsys, monkeypatch, tmp_path, trained_runs):
    from weibo_senti import report

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(report, "atomic_write", read_only)
    code, _, err = edge(capsys, "report", trained_runs["lora"], "--out", tmp_path / "r.png")
    assert_one_error_line(code, err, "read-only file system")
    assert not Path(tmp_path / "r.png").exists()


@pytest.mark.parametrize("command", ["predict", "evaluate", "train"])
def test_a_pipe_named_as_input_is_refused_not_waited_on(
    capsys, tmp_path, trained_runs, train_flags, command
):
    import os

    fifo = tmp_path / "posts.csv"
    os.mkfifo(fifo)  # reading it would block until a writer comes, and count + score read twice
    args = {
        "predict": ["predict", trained_runs["lora"], "--input", fifo],
        "evaluate": ["evaluate", trained_runs["lora"], "--data", fifo],
        "train": [*train_flags, "--data", fifo, "--out", tmp_path / "run"],
    }[command]
    code, _, err = edge(capsys, *args)
    assert_one_error_line(code, err, "not a regular file")
