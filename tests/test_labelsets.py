"""Label sets beyond 0/1: names from the data or --labels, --label-map, N-class training,
evaluation and refusals. The tiny model learns 3 and 6 labels in seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import EMOTIONS, train_config, write_labelled

from weibo_senti import SentimentClassifier
from weibo_senti.cli import run_cli
from weibo_senti.data import Examples, read_labelled, split_dev
from weibo_senti.errors import UserError
from weibo_senti.evaluate import evaluate
from weibo_senti.labels import parse_map, parse_names
from weibo_senti.train import class_weights, step_loss, train


def write(path: Path, rows: list[tuple[object, str]]) -> Path:
    body = "label,review\n" + "".join(f"{lab},{text}\n" for lab, text in rows)
    path.write_text(body, encoding="utf-8")
    return path


def edge(capsys, *args) -> tuple[int, str]:
    code = run_cli([str(a) for a in args])
    return code, capsys.readouterr().err


def one_error(code: int, err: str, *needles: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]


# ---------------------------------------------------------------------------- reading labels
def test_words_become_labels_in_alphabetical_order_whatever_the_row_order(tmp_path):
    rows = [("positive", "好"), ("neutral", "是"), ("negative", "差"), ("positive", "棒")]
    ex = read_labelled(write(tmp_path / "d.csv", rows))
    assert ex.names == ["negative", "neutral", "positive"]
    assert [ex.names[i] for i in ex.labels] == [lab for lab, _ in rows]
    reordered = read_labelled(write(tmp_path / "e.csv", rows[::-1]))
    assert reordered.names == ex.names


def test_labels_fix_the_order_and_integer_ids_index_them(tmp_path):
    names = ["positive", "neutral", "negative"]
    by_name = read_labelled(
        write(tmp_path / "w.csv", [("negative", "差"), ("positive", "好")]), labels=names
    )
    assert by_name.names == names and by_name.labels == [2, 0]
    by_id = read_labelled(
        write(tmp_path / "i.csv", [(2, "差"), (0, "好"), (1, "是")]), labels=names
    )
    assert by_id.labels == [2, 0, 1]


def test_binary_files_read_as_before(tmp_path):
    ex = read_labelled(write(tmp_path / "d.csv", [(1, "好"), (0, "差"), ("1.0", "棒")]))
    assert ex.names == ["negative", "positive"] and ex.labels == [1, 0, 1]


def test_a_label_outside_the_set_is_refused_naming_its_row(tmp_path):
    rows = [("negative", "差"), ("positive", "好"), ("angry", "怒")]
    with pytest.raises(UserError, match=r"line 4: label 'angry' is not one of --labels"):
        read_labelled(write(tmp_path / "d.csv", rows), labels=["negative", "positive", "neutral"])


def test_ids_mixed_with_words_are_refused(tmp_path):
    with pytest.raises(UserError, match="mix integer ids .* and words"):
        read_labelled(write(tmp_path / "d.csv", [(0, "差"), (1, "好"), ("neutral", "是")] * 2))


def test_label_map_renames_drops_and_refuses_what_it_lacks(tmp_path, caplog):
    rows = [("happy", "好"), ("angry", "怒"), ("surprise", "哇"), ("neutral", "是"), ("sad", "哭")]
    path = write(tmp_path / "d.csv", rows)
    mapping = parse_map("happy=positive,neutral=neutral,angry=negative,sad=negative,surprise=")
    ex = read_labelled(path, label_map=mapping)
    assert ex.names == ["negative", "neutral", "positive"]
    assert [ex.names[i] for i in ex.labels] == ["positive", "negative", "neutral", "negative"]
    assert (
        ex.skipped == {"dropped by --label-map": [4]} and "dropped by --label-map: 1" in caplog.text
    )
    with pytest.raises(UserError, match=r"line 6: label 'sad' is not in --label-map"):
        read_labelled(
            path, label_map=parse_map("happy=positive,angry=negative,surprise=,neutral=neutral")
        )


def test_label_map_from_a_yaml_file(tmp_path):
    f = tmp_path / "map.yaml"
    f.write_text(yaml.safe_dump({"happy": "positive", "surprise": None, 1: "x"}), encoding="utf-8")
    assert parse_map(str(f)) == {"happy": "positive", "surprise": None, "1": "x"}


@pytest.mark.parametrize("spec", ["a,a", "a", "a,,b"])
def test_bad_label_lists_are_refused(spec):
    with pytest.raises(ValueError):
        parse_names(spec)


def test_dev_split_keeps_every_class_and_refuses_a_lone_one(tmp_path):
    ex = read_labelled(write_labelled(tmp_path / "d.csv", 120, 0, EMOTIONS))
    train_part, dev = split_dev(ex, 0.1, seed=1)
    assert sorted(set(dev.labels)) == list(range(6)) and dev.names == ex.names
    lone = Examples(ex.texts[:13], ex.labels[:12] + [5], "x.csv", names=ex.names)
    lone.labels = [i % 5 for i in range(12)] + [5]
    with pytest.raises(UserError, match="class surprise has 1 row, too few for the dev split"):
        split_dev(lone, 0.1, seed=1)


# ---------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def three_way_run(tmp_path_factory, tiny_base, three_way_files):
    out = tmp_path_factory.mktemp("labelsets") / "three"
    return train(train_config("lora", tiny_base, *three_way_files, out)).run


@pytest.fixture(scope="module")
def emotion_run(tmp_path_factory, tiny_base, emotion_files):
    out = tmp_path_factory.mktemp("labelsets") / "six"
    return train(train_config("full", tiny_base, *emotion_files, out)).run


def test_a_three_way_run_records_and_learns_its_labels(three_way_run, three_way_files):
    info = json.loads((three_way_run / "run.json").read_text())
    assert info["labels"] == ["negative", "neutral", "positive"]
    assert info["labels_zh"] == ["负面", "中性", "正面"]
    from safetensors.torch import load_file

    head = load_file(str(three_way_run / "adapter_model.safetensors"))
    assert head["base_model.model.score.weight"].shape[0] == 3
    dev = json.loads((three_way_run / "eval_results.json").read_text())["dev"]
    assert set(dev["per_class"]) == set(info["labels"]) and len(dev["confusion_matrix"]) == 3
    m = evaluate(SentimentClassifier.load(three_way_run, precision="fp32"), three_way_files[1])
    assert m["accuracy"] > 0.6  # chance: 1/3


def test_a_six_label_run_evaluates_and_predicts_every_label(emotion_run, emotion_files):
    config = json.loads((emotion_run / "config.json").read_text())
    assert list(config["id2label"].values()) == list(sorted(EMOTIONS))
    clf = SentimentClassifier.load(emotion_run, precision="fp32")
    m = evaluate(clf, emotion_files[1])
    assert m["accuracy"] > 0.8 and np.array(m["confusion_matrix"]).shape == (6, 6)
    assert m["calibration"]["after"]["ece"] <= m["calibration"]["before"]["ece"] + 1e-6
    (pred,) = clf.predict("怒恨怒恨是的")
    assert list(pred.probabilities) == sorted(EMOTIONS) and pred.label == "angry"
    assert pred.label_zh == "愤怒" and abs(sum(pred.probabilities.values()) - 1) < 1e-5


def test_labels_flag_sets_the_head_order(tmp_path, tiny_base, three_way_files):
    order = ["positive", "neutral", "negative"]
    clf = train(train_config("full", tiny_base, *three_way_files, tmp_path / "r", labels=order))
    assert clf.labels == order
    (pred,) = clf.predict("好棒好棒喜爱")
    assert pred.label == "positive" and list(pred.probabilities) == order


def test_evaluate_refuses_a_label_the_run_never_saw(capsys, tmp_path, three_way_run):
    data = write(tmp_path / "t.csv", [("negative", "差"), ("angry", "怒")])
    code, err = edge(
        capsys, "evaluate", three_way_run, "--data", data, "--reliability", tmp_path / "r.png"
    )
    one_error(code, err, "line 3: label 'angry' is not one of the run's labels")
    assert not (tmp_path / "r.png").exists()
    argv = ["evaluate", str(three_way_run), "--data", str(data), "--label-map", "angry=negative"]
    code = run_cli(argv)
    out = capsys.readouterr().out
    assert code == 0 and "negative" in out and "n 2" in out


@pytest.mark.parametrize(
    "rows, flags, needle",
    [
        ([("happy", f"好{i}") for i in range(12)], [], "a classifier needs at least two labels"),
        ([("a", "x")] * 11 + [("b", "y")], [], "class b has 1 row, too few for the dev split"),
        ([("a", "x"), ("b", "y")] * 6, ["--labels", "a,b,c"], "no training rows are label c"),
        ([("a", "x"), ("b", "y")] * 6, ["--labels", "a,a"], "named twice: a"),
        (
            [("a", "x"), ("z", "y")] * 6,
            ["--labels", "a,b"],
            "line 3: label 'z' is not one of --labels",
        ),
    ],
)
def test_train_refuses_label_sets_it_cannot_learn(capsys, tmp_path, tiny_base, rows, flags, needle):
    data = write(tmp_path / "d.csv", rows)
    out = tmp_path / "run"
    code, err = edge(
        capsys,
        "train",
        "--base-model",
        tiny_base,
        "--data",
        data,
        "--out",
        out,
        "--max-length",
        40,
        *flags,
    )
    one_error(code, err, needle)
    assert not out.exists()


def test_balanced_class_weights_are_inverse_frequencies_and_weigh_the_loss():
    from weibo_senti import TrainConfig

    ex = Examples(["x"] * 8, [0, 0, 0, 0, 0, 0, 1, 2], names=["a", "b", "c"])
    weight = class_weights(TrainConfig(class_weights="balanced"), ex)
    assert torch.allclose(weight, torch.tensor([8 / 18, 8 / 3, 8 / 3]))
    assert class_weights(TrainConfig(class_weights="none"), ex) is None
    assert TrainConfig().class_weights == "balanced"  # the measured default

    class Model(torch.nn.Module):
        def forward(self, input_ids, **_):
            return type("Out", (), {"logits": input_ids.float()})()

    logits, labels = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([0, 2])
    loss = step_loss(Model(), {"input_ids": logits, "labels": labels}, 0.0, weight)
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=weight)
    unweighted = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.isclose(loss, expected) and not torch.isclose(loss, unweighted)


def test_a_run_recorded_before_label_sets_answers_as_before(tmp_path, trained_runs):
    """Records written before run.json named its labels read as negative/positive."""
    old = tmp_path / "old"
    shutil.copytree(trained_runs["lora"], old)
    record = json.loads((old / "run.json").read_text())
    for key in ("labels", "labels_zh"):
        record.pop(key)
    (old / "run.json").write_text(json.dumps(record))
    texts = ["好棒好棒", "差坏烂", "我你他"]
    then = SentimentClassifier.load(old, precision="fp32").predict(texts)
    now = SentimentClassifier.load(trained_runs["lora"], precision="fp32").predict(texts)
    answers = [{**p.to_dict(), "adapter": None} for p in then]  # adapters go by folder name
    assert answers == [{**p.to_dict(), "adapter": None} for p in now]
    assert {p.label for p in then} <= {"negative", "positive"} and then[0].label_zh in (
        "负面",
        "正面",
    )


def test_resume_keeps_the_recorded_label_order(tmp_path, tiny_base, three_way_files):
    from conftest import train_until_interrupted

    order = ["positive", "negative", "neutral"]
    cfg = train_config(
        "lora", tiny_base, *three_way_files, tmp_path / "r", labels=order, save_steps=5
    )
    train_until_interrupted(cfg, 12)
    resumed = train(cfg.model_copy(update={"labels": None}), resume=True)
    assert resumed.labels == order


def test_a_run_recorded_before_class_weights_resumes_without_them(tmp_path):
    from weibo_senti import TrainConfig

    saved = tmp_path / "hyperparameters.yaml"
    record = TrainConfig(class_weights="none").to_dict()
    del record["class_weights"]  # as written before the option existed
    saved.write_text(yaml.safe_dump(record), encoding="utf-8")
    assert TrainConfig.from_sources(saved, recorded=True).class_weights == "none"
    assert TrainConfig.from_sources(saved).class_weights == "balanced"  # --config: defaults
