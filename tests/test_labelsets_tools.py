"""Label sets beyond negative/positive in the tools around a run: evaluate's figures, explain,
merge, combine, compare and report, on the tiny model with 3 and 6 labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import EMOTIONS, NEUTRAL, THREE_WAY, train_config, write_labelled
from test_cli import cli

THREE = ["negative", "neutral", "positive"]
SIX = sorted(EMOTIONS)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_base, three_way_files, emotion_files):
    """A 3-label LoRA and adapter run and a 6-label LoRA run, trained once for this module."""
    from weibo_senti.train import train

    root = tmp_path_factory.mktemp("label-set-runs")
    plan = {
        "three": ("lora", three_way_files),
        "three_adapter": ("adapter", three_way_files),
        "six": ("lora", emotion_files),
    }
    return {
        name: train(train_config(method, tiny_base, *files, root / name)).run
        for name, (method, files) in plan.items()
    }


def load(run, **kw):
    from weibo_senti.predict import SentimentClassifier

    return SentimentClassifier.load(run, precision="fp32", **kw)


# ---------------------------------------------------------------------------- evaluate
def test_evaluate_draws_the_confusion_matrix_and_reliability_of_three_labels(
    runs, three_way_files, tmp_path
):
    confusion, reliability = tmp_path / "cm.png", tmp_path / "rel.png"
    code, out, err = cli(
        "evaluate", runs["three"], "--data", three_way_files[1], "--json",
        "--confusion", confusion, "--reliability", reliability,
    )  # fmt: skip
    assert code == 0, err
    m = json.loads(out)
    assert m["labels"] == THREE and list(m["per_class"]) == THREE
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == m["n"] == 150
    assert [m["per_class"][n]["support"] for n in THREE] == cm.sum(1).tolist() == [50, 50, 50]
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert m["accuracy"] > 0.7  # the tiny model learns the three-way task
    c = m["calibration"]
    assert c["after"]["log_loss"] <= c["before"]["log_loss"] and 0 <= c["after"]["ece"] < 1
    assert m["confusion_png"] == str(confusion) and m["reliability_png"] == str(reliability)
    assert confusion.read_bytes()[:8] == PNG and reliability.read_bytes()[:8] == PNG
    code, out, _ = cli("evaluate", runs["three"], "--data", three_way_files[1])
    assert code == 0 and "neutral" in out.splitlines()[-2] and "positive" in out.splitlines()[-1]


def test_evaluate_of_six_labels_in_python(runs, emotion_files, tmp_path):
    from weibo_senti.evaluate import evaluate

    confusion = tmp_path / "cm6.png"
    m = evaluate(load(runs["six"]), emotion_files[1], confusion=confusion)
    cm = np.array(m["confusion_matrix"])
    assert m["labels"] == SIX and cm.shape == (6, 6) and cm.sum(1).tolist() == [30] * 6
    assert m["macro_f1"] == pytest.approx(np.mean([m["per_class"][n]["f1"] for n in SIX]))
    assert m["macro_f1"] > 0.6 and confusion.read_bytes()[:8] == PNG


def test_evaluate_figures_are_refused_before_anything_is_written(runs, tmp_path):
    bad = write_labelled(tmp_path / "bad.csv", 12, 1, {**THREE_WAY, "angry": list("怒")})
    png = tmp_path / "cm.png"
    code, _, err = cli("evaluate", runs["three"], "--data", bad, "--confusion", png)
    assert code == 2 and "'angry' is not one of the run's labels" in err and not png.exists()
    code, _, err = cli("evaluate", runs["three"], "--data", bad, "--confusion", tmp_path / "x.jpg")
    assert code == 2 and "--confusion must name a .png file" in err
    same = tmp_path / "same.png"
    code, _, err = cli(
        "evaluate", runs["three"], "--data", bad, "--confusion", same, "--reliability", same
    )
    assert code == 2 and "give two files" in err and not same.exists()


def test_a_confusion_figure_grows_with_the_labels(tmp_path):
    pytest.importorskip("matplotlib", reason="figures need the [compare] extra")
    from PIL import Image

    from weibo_senti.report import plot_confusion

    sizes = {}
    for names in (THREE, SIX):
        cm = np.arange(len(names) ** 2).reshape(len(names), -1)
        path = plot_confusion(cm, names, tmp_path / f"{len(names)}.png", "t")
        with Image.open(path) as image:
            sizes[len(names)] = image.size
    assert sizes[6][0] > sizes[3][0] * 1.2 and sizes[6][1] > sizes[3][1] * 1.2


def test_reliability_for_many_labels_is_the_predicted_labels_view():
    from weibo_senti.report import reliability_inputs

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    truth, p = reliability_inputs(np.array([0, 1, 1]), probs)
    assert truth.tolist() == [1, 0, 1] and p.tolist() == [0.7, 0.6, 0.5]
    binary = np.array([[0.8, 0.2], [0.3, 0.7]])  # two labels: P(second label), as before
    truth, p = reliability_inputs(np.array([0, 0]), binary)
    assert truth.tolist() == [0, 0] and p.tolist() == [0.2, 0.7]


# ---------------------------------------------------------------------------- explain
def test_the_attributed_quantity_is_the_targets_logit_minus_the_others_mean():
    import torch

    from weibo_senti.explain import describe_quantity, target_score

    logits = torch.tensor([[1.0, 4.0, -2.0], [0.5, 0.5, 3.5]])
    assert target_score(logits, 1).tolist() == [4.0 - (1.0 - 2.0) / 2, 0.5 - 2.0]
    two = torch.tensor([[0.3, 2.3]])
    assert target_score(two, 1).tolist() == pytest.approx([2.0])  # binary: logit1 - logit0
    assert target_score(two, 0).tolist() == pytest.approx([-2.0])
    assert describe_quantity(THREE, 2) == "logit[positive] - mean of the other 2 labels' logits"
    assert describe_quantity(["negative", "positive"], 1) == "logit[positive] - logit[negative]"


@pytest.mark.parametrize("name", ["three", "six"])
def test_explain_attributes_the_predicted_label_by_default(runs, name):
    pytest.importorskip("captum", reason="explain needs the [explain] extra (captum)")
    from weibo_senti.explain import explain

    clf = load(runs[name])
    text = "好棒我的好了棒是人" if name == "three" else "怒恨我的了怒是人"
    ex = explain(clf, text)
    pred = clf.predict([text])[0]
    assert ex.label == ex.toward == pred.label == ("positive" if name == "three" else "angry")
    assert ex.score == ex.toward_score == pytest.approx(pred.score, abs=1e-4)
    assert [c for c, _ in ex.chars] == list(text) and ex.completeness_gap <= 0.05
    assert f"other {len(clf.labels) - 1} labels" in ex.quantity
    strong = [v for c, v in ex.chars if c not in NEUTRAL]  # the label's own characters
    filler = [abs(v) for c, v in ex.chars if c in NEUTRAL]
    assert min(strong) > 0 and sum(strong) > sum(filler)


def test_attributions_toward_every_label_add_up_to_nothing(runs):
    """sum over t of (logit_t - mean of the others) is 0, and integrated gradients is linear in
    the attributed function: each character's scores toward all labels must cancel."""
    pytest.importorskip("captum", reason="explain needs the [explain] extra (captum)")
    from weibo_senti.explain import explain

    clf = load(runs["six"])
    text = "怒恨我的哭了喜是人"
    per_label = [explain(clf, text, label=n, steps=64, max_steps=64) for n in SIX]
    assert [ex.toward for ex in per_label] == SIX
    scores = np.array([[v for _, v in ex.chars] for ex in per_label])
    assert np.abs(scores).max() > 0.1
    assert np.abs(scores.sum(0)).max() < 1e-3 * np.abs(scores).max()
    assert len({ex.label for ex in per_label}) == 1  # the predicted label does not move


def test_binary_runs_still_explain_toward_the_second_label(trained_runs):
    pytest.importorskip("captum", reason="explain needs the [explain] extra (captum)")
    from weibo_senti.explain import explain

    clf = load(trained_runs["full"])
    text = "差坏我的烂了"
    default = explain(clf, text, steps=64, max_steps=64)
    assert default.label == "negative" and default.toward == "positive"
    assert default.quantity == "logit[positive] - logit[negative]"
    flipped = explain(clf, text, label="negative", steps=64, max_steps=64)
    assert flipped.toward == "negative" and flipped.label == "negative"
    assert flipped.logit_difference == pytest.approx(-default.logit_difference, abs=1e-5)
    for (_, a), (_, b) in zip(default.chars, flipped.chars):
        assert a == pytest.approx(-b, abs=1e-5)


def test_explain_cli_names_the_label_and_refuses_an_unknown_one(runs, tmp_path):
    pytest.importorskip("captum", reason="explain needs the [explain] extra (captum)")
    png = tmp_path / "why.png"
    code, out, err = cli(
        "explain", runs["three"], "--text", "好棒我的好了", "--label", "neutral", "--png", png
    )
    assert code == 0, err
    assert "pushed toward 'neutral' (p=" in out
    assert "explained: logit[neutral] - mean of the other 2 labels' logits" in out
    assert png.read_bytes()[:8] == PNG
    code, out, err = cli("explain", runs["three"], "--text", "好", "--label", "happy", "--json")
    assert code == 2 and out == ""
    assert err.strip() == (
        "error: --label 'happy' is not one of the run's labels: negative, neutral, positive"
    )
    code, out, _ = cli("explain", runs["six"], "--text", "怒恨我的了怒是人", "--json")
    ex = json.loads(out)
    assert code == 0 and ex["toward"] == ex["label"] == "angry" and ex["quantity"]


def test_the_library_refuses_an_unknown_label_in_one_line(runs):
    pytest.importorskip("captum", reason="explain needs the [explain] extra (captum)")
    from weibo_senti.errors import UserError
    from weibo_senti.explain import explain

    with pytest.raises(UserError) as e:
        explain(load(runs["six"]), "好", label="positive")
    assert str(e.value) == (
        "cannot explain toward 'positive': the run's labels are "
        "angry, fear, happy, neutral, sad, surprise"
    )


# ---------------------------------------------------------------------------- merge, combine
TEXTS = ["好棒我的好了", "差坏我的烂了", "我的了是人在", "怒恨我的"]


def test_a_merged_three_label_lora_run_keeps_its_labels(runs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "merged"
    code, _, err = cli("merge", runs["three"], "--out", out)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}
    info = json.loads((out / "run.json").read_text())
    assert info["labels"] == THREE and info["labels_zh"] == ["负面", "中性", "正面"]
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    import torch

    with torch.no_grad():
        logits = model(**tok(TEXTS[:1], return_tensors="pt")).logits
    expected = load(runs["three"]).predict_proba(TEXTS[:1])
    assert logits.shape == (1, 3)
    assert np.abs(logits.softmax(-1).numpy() - expected).max() < 1e-4
    assert load(out).labels == THREE


def test_an_exported_three_label_adapter_run_keeps_its_labels(runs, tmp_path):
    out = tmp_path / "exported"
    code, _, err = cli("merge", runs["three_adapter"], "--out", out, "--export")
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["labels"] == THREE
    exported = load(out)
    assert exported.labels == THREE
    same = load(runs["three_adapter"]).predict_proba(TEXTS)
    assert exported.predict_proba(TEXTS).shape == (4, 3)
    assert np.abs(exported.predict_proba(TEXTS) - same).max() < 1e-5


def test_combine_keeps_the_label_set_and_its_head_size(runs, tmp_path):
    out = tmp_path / "comb"
    code, _, err = cli("combine", runs["three"], runs["three"], "--out", out)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["labels"] == THREE
    combined = load(out).predict_proba(TEXTS)
    # the same ΔW twice at half weight, heads averaged: the run itself
    assert combined.shape == (4, 3)
    assert np.abs(combined - load(runs["three"]).predict_proba(TEXTS)).max() < 1e-4


def test_combine_refuses_two_label_sets_in_one_line(runs, tmp_path):
    out = tmp_path / "comb"
    code, _, err = cli("combine", runs["three"], runs["six"], "--out", out)
    assert code == 2 and not out.exists() and len(err.strip().splitlines()) == 1
    assert (
        f"{runs['six']} has labels angry, fear, happy, neutral, sad, surprise; "
        f"{runs['three']} has negative, neutral, positive: combine needs one label set"
    ) in err


# ---------------------------------------------------------------------------- report
@pytest.mark.parametrize("name, labels", [("three", THREE), ("six", SIX)])
def test_report_of_a_many_label_run_adds_each_labels_scores(runs, tmp_path, name, labels):
    pytest.importorskip("matplotlib", reason="figures need the [compare] extra")
    from PIL import Image

    from weibo_senti.report import _kept_per_class

    per_class = _kept_per_class(runs[name])
    assert list(per_class) == labels and all(0 <= v["f1"] <= 1 for v in per_class.values())
    assert sum(v["support"] for v in per_class.values()) in (150, 180)  # the dev rows
    code, _, err = cli("report", runs[name], "--out", tmp_path / "r.png")
    assert code == 0, err
    with Image.open(tmp_path / "r.png") as image:
        assert image.size[0] > 1300  # three panels; two are 11 in x 110 dpi = 1210 px at most


# ---------------------------------------------------------------------------- compare
def test_compare_with_three_labels_reports_macro_f1_and_skips_the_binary_sets(
    tiny_base, three_way_files, task_files, tmp_path
):
    out, human = tmp_path / "cmp", tmp_path / "human"
    (human / "weibo2018").mkdir(parents=True)
    (human / "weibo2018" / "train.csv").write_bytes(task_files[1].read_bytes())  # 0/1 posts
    test = write_labelled(tmp_path / "test.csv", 90, 9, THREE_WAY)
    code, _, err = cli(
        "compare", "--base-model", tiny_base, "--data", three_way_files[0],
        "--dev-data", three_way_files[1], "--extra-test", f"held={test}", "--human-data", human,
        "--method", "lora", "--method", "tfidf", "--max-length", 40, "--epochs", 1,
        "--max-train-samples", 240, "--precision", "no", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "comparison.json").read_text())
    assert report["meta"]["labels"] == THREE and report["meta"]["human_sets"] == {}
    assert "negative/positive" in report["meta"]["human_sets_skipped"]
    for method, r in report["results"].items():
        assert np.array(r["confusion_matrix"]).shape == (3, 3), method
        assert np.array(r["held_confusion_matrix"]).sum() == 90, method
        assert 0 < r["held_macro_f1"]["mean"] <= 1 and "weibo2018_accuracy" not in r
    assert report["results"]["tfidf"]["held_accuracy"]["mean"] > 0.9  # multi-class LR
    md = (out / "comparison.md").read_text()
    assert "| held acc | held macro-F1 |" in md and "dev macro-F1" in md
    assert "Labels (3): negative, neutral, positive." in md and "not scored" in md
    for png in ("confusion.png", "accuracy_by_set.png", "macro_f1_by_set.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_compare_refuses_a_test_set_of_other_labels_before_training(
    tiny_base, three_way_files, tmp_path
):
    bad = write_labelled(tmp_path / "bad.csv", 12, 1, {"happy": [], "sad": []})
    out = tmp_path / "cmp"
    code, _, err = cli(
        "compare", "--base-model", tiny_base, "--data", three_way_files[0],
        "--extra-test", f"bad={bad}", "--out", out, "--max-length", 40,
    )  # fmt: skip
    assert code == 2 and "'happy' is not one of the task's labels" in err and not out.exists()
    code, _, err = cli(
        "compare", "--base-model", tiny_base, "--data", three_way_files[0],
        "--labels", "negative,positive", "--out", out, "--max-length", 40,
    )  # fmt: skip
    assert code == 2 and "'neutral' is not one of --labels" in err and not out.exists()


def test_the_quality_table_has_macro_f1_only_for_more_than_two_labels():
    from weibo_senti.compare import _quality_table

    cell = {"mean": 0.5, "std": 0.0}
    keys = ["dev_accuracy", "dev_macro_f1", "dev_stripped_accuracy", "dev_stripped_macro_f1"]
    row = {k: cell for k in keys + ["dev_ece", "dev_brier", "dev_log_loss"]}
    many = _quality_table({"lora": row}, [], [], f1=True)[0]
    two = _quality_table({"lora": row}, [], [], f1=False)[0]
    assert "dev macro-F1" in many and "dev, emoticons stripped macro-F1" in many
    assert "macro-F1" not in two and two.startswith("| method | dev acc |")


def test_report_of_a_binary_run_keeps_its_two_panels(trained_runs):
    from weibo_senti.report import _kept_per_class

    assert _kept_per_class(trained_runs["lora"]) is None
