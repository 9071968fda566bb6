"""The `weibo-senti` command end to end, as a user runs it, for every method."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import FAST

from weibo_senti.cli import app

METHODS = ["lora", "adapter", "full"]
# Texts as long as the synthetic task's (12 characters), made only of sentiment characters.
POS = "好棒喜爱赞乐美好棒喜爱赞"
NEG = "差坏烂恨糟怒哭差坏烂恨糟"


def cli(*args, input=None):
    """Run the real console entry point in a subprocess-free way, returning (code, out, err)."""
    from typer.testing import CliRunner

    from weibo_senti.errors import UserError

    runner = CliRunner()
    try:
        r = runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
    except UserError as e:  # what main() turns into "error: ..." and exit code 2
        return 2, "", f"error: {e}"
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, tiny_base, task_files):
    root = tmp_path_factory.mktemp("cli")
    train, dev = task_files
    runs = {}
    for method in METHODS:
        out = root / method
        extra = [x for k, v in FAST[method].items() for x in (f"--{k.replace('_', '-')}", v)]
        code, _, err = cli(
            "train",
            "--method",
            method,
            "--data",
            train,
            "--dev-data",
            dev,
            "--base-model",
            tiny_base,
            "--out",
            out,
            "--epochs",
            4,
            "--max-length",
            40,
            "--warmup-ratio",
            0,
            "--precision",  # Accelerate keeps one precision per process: the tests' fp32
            "fp32",
            *extra,
        )
        assert code == 0, err
        runs[method] = out
    return runs


@pytest.mark.parametrize("method", METHODS)
def test_evaluate_json(cli_runs, task_files, method):
    code, out, err = cli("evaluate", cli_runs[method], "--data", task_files[1], "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["accuracy"] > 0.85 and m["n"] == 160
    assert set(m) >= {"accuracy", "macro_f1", "loss", "per_class", "confusion_matrix"}
    assert sum(map(sum, m["confusion_matrix"])) == 160
    code, out, _ = cli("evaluate", cli_runs[method], "--data", task_files[1])
    assert "macro-F1" in out and "confusion" in out


def test_evaluate_strip_emoticons_changes_input(cli_runs, tmp_path):
    data = tmp_path / "e.csv"
    data.write_text("label,review\n1,[好好好好]我\n0,[差差差差]我\n", encoding="utf-8")
    _, with_e, _ = cli("evaluate", cli_runs["full"], "--data", data, "--json")
    _, without, _ = cli("evaluate", cli_runs["full"], "--data", data, "--json", "--strip-emoticons")
    assert json.loads(without)["strip_emoticons"] is True
    assert json.loads(with_e)["loss"] != json.loads(without)["loss"]


@pytest.mark.parametrize("method", METHODS)
def test_predict_text_and_json(cli_runs, method):
    code, out, _ = cli("predict", cli_runs[method], "--text", POS)
    assert code == 0
    assert re.match(r"预测结果: 正面情感 \(置信度: (0\.[5-9]\d{3}|1\.0000)\)", out), out
    code, out, _ = cli("predict", cli_runs[method], "--text", NEG, "--text", "", "--json")
    first, second = [json.loads(line) for line in out.splitlines()]
    assert first["label"] == "negative" and first["label_zh"] == "负面"
    assert abs(sum(first["probabilities"].values()) - 1) < 1e-5
    assert second["label"] is None  # empty text is answered, not guessed


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_predict_batch_file(cli_runs, tmp_path, suffix):
    inp = tmp_path / "posts.csv"
    inp.write_text(
        "id,review\n1," + POS + "\n2," + NEG + "\n3,\n4," + "我" * 500 + "\n", encoding="utf-8"
    )
    out = tmp_path / f"preds{suffix}"
    code, _, err = cli("predict", cli_runs["lora"], "--input", inp, "--output", out)
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    rows = (
        [json.loads(x) for x in text.splitlines()]
        if suffix == ".jsonl"
        else list(csv.DictReader(io.StringIO(text)))
    )
    assert [str(r["id"]) for r in rows] == ["1", "2", "3", "4"]
    assert [r["pred_label"] or "" for r in rows[:3]] == ["positive", "negative", ""]
    assert str(rows[3]["pred_truncated"]) == "True"


def test_predict_file_keeps_every_input_column_as_it_was(cli_runs, tmp_path):
    """A gold label, the text column's name and columns called score/adapter all survive."""
    inp = tmp_path / "gold.csv"
    rows = [("1", POS, "0.5", "x"), ("0", NEG, "", "y"), ("1", " 好 ", "7", "")]
    inp.write_text(
        "label,review,score,adapter\n" + "".join(",".join(r) + "\n" for r in rows),
        encoding="utf-8",
    )
    out = tmp_path / "preds.csv"
    code, _, err = cli("predict", cli_runs["lora"], "--input", inp, "--output", out)
    assert code == 0, err
    got = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert list(got[0])[:4] == ["label", "review", "score", "adapter"]
    assert [tuple(r[c] for c in ("label", "review", "score", "adapter")) for r in got] == rows
    assert [r["pred_label"] for r in got[:2]] == ["positive", "negative"]
    assert {"pred_score", "pred_p_positive", "pred_p_negative", "pred_label_zh"} <= set(got[0])
    clash = tmp_path / "clash.csv"
    clash.write_text("review,pred_label\n好,1\n", encoding="utf-8")
    code, _, err = cli("predict", cli_runs["lora"], "--input", clash)
    assert code == 2 and "already has column 'pred_label'" in err and "--prefix" in err
    code, out, err = cli("predict", cli_runs["lora"], "--input", clash, "--prefix", "model_")
    assert code == 0 and "model_label" in out.splitlines()[0], err


@pytest.mark.parametrize("command", ["predict", "evaluate", "train"])
def test_an_unclosed_quote_is_refused_with_its_line(cli_runs, tiny_base, tmp_path, command):
    bad = tmp_path / "q.csv"
    bad.write_text('label,review\n1,好\n0,"坏\n1,好的\n0,差\n', encoding="utf-8")
    args = {
        "predict": ["predict", cli_runs["lora"], "--input", bad],
        "evaluate": ["evaluate", cli_runs["lora"], "--data", bad],
        "train": ["train", "--data", bad, "--base-model", tiny_base, "--out", tmp_path / "r"],
    }[command]
    code, _, err = cli(*args)
    assert code == 2 and "quote opened on line 3 never closes" in err and "3 lines" in err
    assert not (tmp_path / "r").exists()


def test_quoted_line_breaks_are_kept_and_reported(caplog, tmp_path):
    from weibo_senti.data import read_labelled

    f = tmp_path / "multi.csv"
    f.write_text('label,review\n1,"好\n的"\n0,差\n', encoding="utf-8")
    ex = read_labelled(f)
    assert ex.texts == ["好\n的", "差"] and "line breaks inside quotes" in caplog.text


def test_big5_is_not_read_as_gbk(caplog, tmp_path):
    from weibo_senti.data import read_labelled

    posts = ["今天天氣很好，我們去公園散步", "這家餐廳的服務態度太差了", "電影非常好看，推薦給大家"]
    f = tmp_path / "big5.csv"
    f.write_bytes(
        ("label,review\n" + "".join(f"{i % 2},{p}\n" for i, p in enumerate(posts))).encode("big5")
    )
    assert read_labelled(f).texts == posts and "Big5" in caplog.text
    gbk = tmp_path / "gbk.csv"
    simplified = ["今天天气很好，我们去公园散步", "这家餐厅的服务态度太差了"]
    gbk.write_bytes(("label,review\n" + "".join(f"1,{p}\n" for p in simplified)).encode("gbk"))
    assert read_labelled(gbk).texts == simplified
    tiny = tmp_path / "tiny-gbk.csv"  # 微 in GBK is CE A2: also valid UTF-8 (U+03A2)
    tiny.write_bytes("label,review\r\n0,微\r\n".encode("gbk"))
    assert read_labelled(tiny).texts == ["微"]
    greek = tmp_path / "greek.csv"  # real UTF-8 below U+0800 stays UTF-8
    greek.write_bytes("label,review\n1,Καλημέρα\n0,Привет мир\n".encode())
    assert read_labelled(greek).texts == ["Καλημέρα", "Привет мир"]


def test_label_only_file_and_directories_are_refused(cli_runs, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("label\n1\n0\n1\n", encoding="utf-8")
    code, _, err = cli("predict", cli_runs["lora"], "--input", labels)
    assert code == 2 and "holds labels (0/1), not texts" in err
    folder = tmp_path / "posts.csv"
    folder.mkdir()
    code, _, err = cli("evaluate", cli_runs["lora"], "--data", folder)
    assert code == 2 and "is a directory, not a file" in err
    # predict reads a folder of shards; one without any is one line
    code, _, err = cli("predict", cli_runs["lora"], "--input", folder)
    assert code == 2 and "holds no .csv, .tsv" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("label,review\n1,好\n0,差\n", "2 training rows are too few"),
        (
            "label,review\n" + "1,好\n" * 30,
            "no training rows are label negative (the rows are positive (30))",
        ),
    ],
)
def test_training_data_that_cannot_teach_is_refused_first(tiny_base, tmp_path, content, message):
    data = tmp_path / "d.csv"
    data.write_text(content, encoding="utf-8")
    code, _, err = cli("train", "--data", data, "--base-model", tiny_base, "--out", tmp_path / "r")
    assert code == 2 and message in err, err
    assert not (tmp_path / "r").exists()


def test_predict_bad_output_suffix_is_refused_before_loading(cli_runs, tmp_path):
    inp = tmp_path / "p.txt"
    inp.write_text("好\n", encoding="utf-8")
    code, _, err = cli("predict", cli_runs["lora"], "--input", inp, "--output", tmp_path / "o.xls")
    assert code == 2 and ".csv, .tsv, .jsonl or .parquet" in err


def test_console(cli_runs):
    from weibo_senti.predict import SentimentClassifier, console

    clf = SentimentClassifier.load(cli_runs["adapter"])
    out = io.StringIO()
    console(clf, stdin=io.StringIO(POS + "\n\n" + "好" * 100 + "\nq\n不会读到\n"), stdout=out)
    text = out.getvalue()
    assert text.count("预测结果: 正面情感") == 2
    assert "输入为空" in text and "已截断" in text and "不会读到" not in text
    out = io.StringIO()
    console(clf, stdin=io.StringIO("好\n"), stdout=out)  # Ctrl-D (EOF) ends it too
    assert "再见" in out.getvalue()


def test_console_entry_point_reports_errors_in_one_line(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from weibo_senti.cli import main; main()",
            "predict",
            str(tmp_path / "missing-run"),
            "--text",
            "好",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: run folder {tmp_path / 'missing-run'} does not exist"
    ]


def test_undecodable_bytes_get_one_line_on_argv_and_in_the_console(cli_runs):
    entry = [sys.executable, "-c", "from weibo_senti.cli import main; main()"]
    r = subprocess.run(
        [*entry, "predict", str(cli_runs["lora"]), "--text", "好", "--text", b"\xff"],
        capture_output=True,
    )
    assert r.returncode == 2, r.stderr[-500:]
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "text 2 is not valid Unicode" in lines[0]
    r = subprocess.run(
        [*entry, "predict", str(cli_runs["lora"])],
        input=b"\xff\xfe\n" + POS.encode() + b"\nq\n",
        capture_output=True,
    )
    out = r.stdout.decode()
    assert r.returncode == 0 and "not valid Unicode" in out and "预测结果: 正面情感" in out


@pytest.mark.parametrize("method", METHODS)
def test_corrupt_or_missing_weights_are_named(cli_runs, tmp_path, method):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_runs[method], run)
    weights = run / ("model.safetensors" if method == "full" else "adapter_model.safetensors")
    weights.write_bytes(b"not a safetensors file")
    code, _, err = cli("predict", run, "--text", "好")
    assert code == 2 and "corrupt" in err and weights.name in err
    weights.unlink()
    code, _, err = cli("predict", run, "--text", "好")
    assert code == 2 and "missing" in err and weights.name in err
    (run / "run.json").write_text("{not json", encoding="utf-8")
    code, _, err = cli("predict", run, "--text", "好")
    assert code == 2 and "run.json" in err


def test_pad_id_mismatch_is_refused(cli_runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_runs["full"], run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "pad_token_id": 5}))
    code, _, err = cli("predict", run, "--text", "好")
    assert code == 2 and "pad" in err


def test_train_refuses_to_overwrite_and_reports_bad_options(cli_runs, task_files, tiny_base):
    code, _, err = cli(
        "train",
        "--method",
        "lora",
        "--data",
        task_files[0],
        "--base-model",
        tiny_base,
        "--out",
        cli_runs["lora"],
    )
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, _, err = cli("train", "--method", "prefix", "--out", "x")
    assert code == 2 and "'lora', 'adapter' or 'full'" in err and "'prefix'" in err


def test_train_with_config_file_and_split(tmp_path, tiny_base, task_files):
    cfg = tmp_path / "hp.yaml"
    cfg.write_text(
        f"method: adapter\nepochs: 1\nadapter_size: 8\nbase_model: {tiny_base}\n"
        "max_length: 32\nlr: 0.003\nprecision: fp32\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    code, _, err = cli(
        "train", "--config", cfg, "--data", task_files[0], "--out", out, "--epochs", 2
    )
    assert code == 0, err
    import yaml

    saved = yaml.safe_load((out / "hyperparameters.yaml").read_text())
    assert saved["method"] == "adapter" and saved["epochs"] == 2 and saved["adapter_size"] == 8
    results = json.loads((out / "eval_results.json").read_text())
    assert results["dev"]["n"] == 48  # 10% of 480, split off because no --dev-data


def test_resume_through_cli(tmp_path, tiny_base, task_files):
    from conftest import train_config, train_until_interrupted

    cfg = train_config("lora", tiny_base, *task_files, tmp_path / "r", epochs=2, save_steps=10)
    train_until_interrupted(cfg, step=45)
    code, out, err = cli("train", "--resume", "--out", tmp_path / "r")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "run.json").read_text())["complete"]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("method", METHODS)
def test_fast_inference_paths_agree_with_fp32(cli_runs, task_files, method, precision):
    from weibo_senti.data import read_labelled
    from weibo_senti.predict import SentimentClassifier

    texts = read_labelled(task_files[1]).texts
    ref = SentimentClassifier.load(cli_runs[method], merge=False, precision="fp32")
    ref = ref.predict_proba(texts)
    fast = SentimentClassifier.load(cli_runs[method], precision=precision).predict_proba(texts)
    # Every label, and P within 0.15: full-range int8 weights on a CPU without VNNI saturated
    # ONNX Runtime's u8s8 kernel and moved a lora post from P(neg) 0.99999 to 0.32 (AVX2 EPYC;
    # now 100% equal, max |dP| 0.072, the adapter's). A 32-wide model quantizes coarsely: the
    # real thresholds (>= 99.5% equal labels) are measured on a real model (benchmarks/bench.py).
    assert (ref.argmax(1) == fast.argmax(1)).all()
    assert np.abs(ref - fast).max() < 0.15
    code, out, _ = cli("predict", cli_runs[method], "--text", POS, "--precision", precision)
    assert code == 0 and "正面" in out


def test_predict_never_overwrites_a_file_without_a_word(cli_runs, tmp_path):
    inp = tmp_path / "in.csv"
    inp.write_text("review\n好\n", encoding="utf-8")
    code, _, err = cli("predict", cli_runs["lora"], "--input", inp, "--output", inp)
    assert code == 2 and "is the input file" in err
    assert inp.read_text(encoding="utf-8") == "review\n好\n"
    out = tmp_path / "out.csv"
    out.write_text("precious", encoding="utf-8")
    code, _, err = cli("predict", cli_runs["lora"], "--input", inp, "--output", out)
    assert code == 2 and "pass --overwrite" in err and out.read_text() == "precious"
    args = ("predict", cli_runs["lora"], "--input", inp, "--output", out, "--overwrite")
    assert cli(*args)[0] == 0 and "pred_label" in out.read_text(encoding="utf-8")


def test_jsonl_keys_of_any_row_and_a_header_without_rows_are_kept(cli_runs, tmp_path):
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"review": "好", "label": 1}\n{"review": "差", "label": 0, "extra": "x"}\n')
    out = tmp_path / "o.csv"
    assert cli("predict", cli_runs["lora"], "--input", jl, "--output", out)[0] == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["extra"] for r in rows] == ["", "x"] and rows[1]["label"] == "0"
    empty = tmp_path / "header.csv"
    empty.write_text("id,label,review\n", encoding="utf-8")
    out = tmp_path / "h.csv"
    assert cli("predict", cli_runs["lora"], "--input", empty, "--output", out)[0] == 0
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:3] == ["id", "label", "review"] and "pred_label" in header
    blank = tmp_path / "blank.txt"
    blank.write_text("", encoding="utf-8")
    code, _, err = cli("predict", cli_runs["lora"], "--input", blank)
    assert code == 2 and "is empty" in err


def test_explain_png_and_truncation_are_said_in_one_line(cli_runs, tmp_path):
    pytest.importorskip("captum", reason="explain needs the [explain] extra")
    code, _, err = cli("explain", cli_runs["full"], "--text", "好", "--png", tmp_path)
    assert code == 2 and "--png must name a .png file" in err
    folder = tmp_path / "x.png"
    folder.mkdir()
    code, _, err = cli("explain", cli_runs["full"], "--text", "好", "--png", folder)
    assert code == 2 and "is a directory" in err
    png = tmp_path / "why.png"
    code, out, err = cli("explain", cli_runs["full"], "--text", "好" * 300, "--png", png)
    assert code == 0, err
    assert "the post was cut" in out and "steps)" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
