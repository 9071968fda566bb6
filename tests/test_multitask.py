"""Many tasks on one base: a binary, a three-way and a six-emotion run (LoRA and bottleneck)
loaded together, each with its own head and labels, answered in one mixed call; the console,
files and the server with mixed label sets. Every answer must equal the run's own, alone."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil

import numpy as np
import pytest
from conftest import adapter_flags, record_forward_calls, train_config

from weibo_senti import SentimentClassifier, UserError
from weibo_senti.train import train

TEXTS = [
    "好棒喜爱赞乐美好棒喜爱赞",
    "差坏烂恨糟怒哭差坏烂恨糟",
    "我你他的了是在有人这中大",
    "怒恨怒恨哭糟哭糟",
    "喜爱赞坏烂差",
    "好差好差",
]
THREE = ["negative", "neutral", "positive"]
SIX = ["angry", "fear", "happy", "neutral", "sad", "surprise"]


@pytest.fixture(scope="session")
def label_runs(tmp_path_factory, tiny_base, trained_runs, three_way_files, emotion_files):
    """``label_runs(labels, method)``: a finished run of "two", "three" or "six" labels on the
    tiny base, trained on first use (a few seconds each) and kept for the session."""
    root = tmp_path_factory.mktemp("label-runs")
    files = {"three": three_way_files, "six": emotion_files}
    done = {}

    def get(labels: str, method: str):
        if labels == "two":
            return trained_runs[method]
        if (labels, method) not in done:
            cfg = train_config(method, tiny_base, *files[labels], root / f"{labels}-{method}")
            done[labels, method] = train(cfg).run
        return done[labels, method]

    return get


def load(run, **kw):
    return SentimentClassifier.load(run, precision="fp32", merge=False, **kw)


# the runs loaded together below: name -> (labels, method)
TASKS = {
    "six-adapter": ("six", "adapter"),  # first: the base's own head is 6 wide
    "two": ("two", "lora"),
    "three": ("three", "lora"),
    "six": ("six", "lora"),
    "three-adapter": ("three", "adapter"),
}


@pytest.fixture(scope="module")
def alone(label_runs):
    """Each task's logits and predictions from its run loaded alone."""
    out = {}
    for name, (labels, method) in TASKS.items():
        clf = load(label_runs(labels, method))
        out[name] = clf.predict_logits(TEXTS)[0], clf.predict(TEXTS)
    return out


@pytest.fixture()
def many(label_runs):
    first, *rest = TASKS
    clf = load(label_runs(*TASKS[first]), name=first)
    for name in rest:
        clf.add_adapter(name, label_runs(*TASKS[name]))
    return clf


def mixed_names(n: int) -> list[str]:
    return [list(TASKS)[i % len(TASKS)] for i in range(n)]


def test_one_mixed_call_equals_each_run_alone(many, alone):
    texts = TEXTS * 3
    names = mixed_names(len(texts))
    logits, _ = many.predict_logits(texts, adapter=names)
    assert logits.shape == (len(texts), 6)
    preds = many.predict(texts, adapter=names)
    for i, name in enumerate(names):
        want_logits, want = alone[name][0][i % len(TEXTS)], alone[name][1][i % len(TEXTS)]
        width = len(want_logits)
        assert np.abs(logits[i, :width] - want_logits).max() < 1e-5, name
        assert np.isneginf(logits[i, width:]).all()  # no label there: not a logit of 0
        p = preds[i]
        assert (p.adapter, p.label, p.label_zh) == (name, want.label, want.label_zh)
        assert list(p.probabilities) == list(want.probabilities)  # its labels, its order
        got = np.array(list(p.probabilities.values()))
        assert np.abs(got - np.array(list(want.probabilities.values()))).max() < 1e-5
        assert len(p.logits) == width
    assert {len(p.probabilities) for p in preds} == {2, 3, 6}
    proba = many.predict_proba(texts, adapter=names)
    assert np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba[[i for i, n in enumerate(names) if n == "two"], 2:] == 0).all()


def test_labels_are_the_active_adapters_and_each_adapters_on_request(many, label_runs):
    assert many.labels == SIX and many.active_adapter == "six-adapter"
    assert many.labels_of("two") == ["negative", "positive"] and many.labels_of("three") == THREE
    many.use("three")
    assert many.labels == THREE and many.info.labels_zh == ["负面", "中性", "正面"]
    assert list(many.predict(TEXTS[0])[0].probabilities) == THREE
    assert many.info.temperature == load(label_runs("three", "lora")).info.temperature
    with pytest.raises(UserError, match="no adapter called 'x'"):
        many.labels_of("x")
    single = SentimentClassifier.load(label_runs("six", "full"), precision="fp32")
    assert single.labels == SIX and single.labels_of() == SIX
    with pytest.raises(UserError, match="no adapters"):
        single.labels_of("six")


def test_lora_rows_share_a_pass_per_head_width(many, label_runs, monkeypatch):
    many.add_adapter("three-again", label_runs("three", "lora"))  # another 3-wide LoRA head
    calls = record_forward_calls(many, monkeypatch)
    names = ["two", "three", "six", "three-again", "two", "three-again"]
    logits = many.predict_logits(TEXTS, adapter=names)[0]
    assert len(calls) == 3  # one pass per width: 2, 3 and 6 outputs
    mixed = [c for c in calls if c is not None]  # passes of one adapter name none
    ids = many.bank.ids
    assert len(mixed) == 1  # the 3-wide pass holds the rows of both 3-label adapters
    assert sorted(mixed[0]) == sorted([ids["three"]] + [ids["three-again"]] * 2)
    alone = many.predict_logits([TEXTS[3], TEXTS[5]], adapter="three")[0]
    assert np.abs(logits[[3, 5], :3] - alone).max() < 1e-5  # the same run under two names


def test_removing_adapters_restores_the_base_and_the_answers(many, alone, label_runs):
    import torch

    head = many.bank.base_head
    assert head.out_features == 6  # the first run's width
    many.remove_adapter("three")
    many.remove_adapter("six")
    assert many.bank.base.score.original_module is head  # PEFT's wrapper: the base's head
    got = many.predict_logits(TEXTS, adapter="two")[0]
    assert (got == alone["two"][0]).all()
    many.remove_adapter("two")  # the last LoRA adapter: PEFT's layers and wrapper go
    assert many.bank.peft is None and many.bank.base.score is head
    assert not any("lora_" in k for k in many.model.state_dict())
    many.add_adapter("six", label_runs("six", "lora"))  # a fresh PeftModel over the 6-wide head
    got = many.predict_logits(TEXTS, adapter="six")[0]
    assert np.abs(got - alone["six"][0]).max() < 1e-5
    many.remove_adapter("six")
    many.add_adapter("two", label_runs("two", "lora"))  # 2 wide over a 6-wide head
    assert np.abs(many.predict_logits(TEXTS, adapter="two")[0] - alone["two"][0]).max() < 1e-5
    assert torch.equal(many.bank.base.score.original_module.weight, head.weight)
    assert many.adapters == ["six-adapter", "three-adapter", "two"]


def test_a_binary_first_run_merged_then_other_label_sets(label_runs, alone):
    clf = SentimentClassifier.load(label_runs("two", "lora"), precision="fp32", name="two")
    assert clf.bank.merged == "two"
    clf.add_adapter("six", label_runs("six", "lora"))  # unmerges, then a 6-wide head
    clf.merge_single = True
    clf.remove_adapter("two")  # one LoRA left: folded in again, answered by the engine copy
    assert clf.bank.merged == "six" and clf.labels == SIX
    got = clf.predict_logits(TEXTS)[0]
    assert got.shape == (len(TEXTS), 6)
    assert np.abs(got - alone["six"][0]).max() < 1e-4


def test_heads_that_do_not_match_their_labels_are_refused(label_runs, tmp_path):
    clf = load(label_runs("two", "lora"), name="two")
    for method in ("lora", "adapter"):
        damaged = shutil.copytree(label_runs("three", method), tmp_path / method)
        info = json.loads((damaged / "run.json").read_text())
        info["labels"], info["labels_zh"] = SIX, SIX  # 6 labels over a 3-wide head
        (damaged / "run.json").write_text(json.dumps(info))
        with pytest.raises(UserError, match="unusable LoRA weights|head of 3 outputs"):
            clf.add_adapter(method, damaged)
    assert clf.adapters == ["two"] and clf.labels_of("two") == ["negative", "positive"]
    assert clf.predict(TEXTS[0])[0].label == "positive"


# ---------------------------------------------------------------------------- console, files
def cli(*args):
    from test_cli import cli as run_cli

    return run_cli(*args)


def specs(label_runs) -> list[str]:
    return adapter_flags(
        {
            "two": label_runs("two", "lora"),
            "six": label_runs("six", "lora"),
            "three": label_runs("three", "adapter"),
        }
    )


def test_cli_text_shows_every_probability_of_the_chosen_task(label_runs, alone):
    code, out, err = cli("predict", *specs(label_runs), "--use", "six", "--text", TEXTS[3])
    assert code == 0, err
    want = alone["six"][1][3]
    lines = out.splitlines()
    assert lines[0].startswith(f"预测结果: {want.label_zh} (置信度: {want.score:.4f})")
    assert lines[1].strip().startswith("各类概率: 愤怒 ")
    for name, zh in zip(SIX, ["愤怒", "恐惧", "高兴", "中性", "悲伤", "惊奇"]):
        assert f"{zh} {want.probabilities[name]:.4f}" in lines[1]
    code, out, _ = cli("predict", *specs(label_runs), "--text", TEXTS[0])
    assert out.splitlines() == [f"预测结果: 正面情感 (置信度: {alone['two'][1][0].score:.4f})"]
    code, out, _ = cli("predict", *specs(label_runs), "--use", "six", "--text", TEXTS[3], "--json")
    answer = json.loads(out)
    assert answer["adapter"] == "six" and list(answer["probabilities"]) == SIX


def test_console_answers_in_the_active_tasks_labels(label_runs):
    from weibo_senti.predict import console

    clf = load(label_runs("two", "lora"), name="two")
    clf.add_adapter("three", label_runs("three", "lora"))
    out = io.StringIO()
    console(clf, stdin=io.StringIO(f"{TEXTS[1]}\n:use three\n{TEXTS[1]}\nq\n"), stdout=out)
    text = out.getvalue()
    assert "负面情感" in text.split("now using three")[0]
    after = text.split("now using three")[1]
    assert "各类概率: 负面 " in after and "中性 " in after and "正面 " in after


def test_a_file_of_rows_for_three_label_sets(label_runs, alone, tmp_path):
    rows = [("two", 0), ("six", 3), ("three", 1), ("", 4), ("six", 5), ("two", 2)]
    inp = tmp_path / "mixed.csv"
    body = "adapter,review\n" + "".join(f"{a},{TEXTS[i]}\n" for a, i in rows) + "six,\n"
    inp.write_text(body, encoding="utf-8")
    code, out, err = cli("predict", *specs(label_runs), "--input", inp)
    assert code == 0, err
    got = list(csv.DictReader(io.StringIO(out)))
    union = ["negative", "positive", *SIX, "neutral"]  # the active task's first, then new ones
    assert list(got[0]) == [
        "adapter",
        "review",
        "pred_label",
        "pred_label_zh",
        "pred_score",
        *(f"pred_p_{n}" for n in dict.fromkeys(union)),
        "pred_truncated",
        "pred_adapter",
    ]
    answers = {"two": alone["two"][1], "six": alone["six"][1], "three": alone["three-adapter"][1]}
    for row, (adapter, i) in zip(got, rows):
        task = adapter or "two"
        want = answers[task][i]
        assert (row["pred_adapter"], row["pred_label"]) == (task, want.label)
        for name in dict.fromkeys(union):
            cell = row[f"pred_p_{name}"]
            if name in want.probabilities:
                assert abs(float(cell) - want.probabilities[name]) < 1e-5, (task, name)
            else:
                assert cell == "", (task, name)  # not this task's label: empty, not 0
    assert got[-1]["pred_label"] == "" and got[-1]["pred_p_angry"] == ""  # an empty text


def test_a_file_scored_by_one_six_label_run(label_runs, alone, tmp_path):
    inp = tmp_path / "posts.jsonl"
    inp.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    out = tmp_path / "scored.parquet"
    code, _, err = cli(
        "predict", label_runs("six", "full"), "--input", inp, "--output", out, "--precision", "fp32"
    )
    assert code == 0, err
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()
    assert [k for k in table[0] if k.startswith("pred_p_")] == [f"pred_p_{n}" for n in SIX]
    clf = SentimentClassifier.load(label_runs("six", "full"), precision="fp32")
    for row, want in zip(table, clf.predict(TEXTS)):
        assert row["pred_label"] == want.label
        assert all(abs(row[f"pred_p_{n}"] - want.probabilities[n]) < 1e-5 for n in SIX)


# ---------------------------------------------------------------------------- serving
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def client(label_runs, tmp_path):
    from fastapi.testclient import TestClient

    from weibo_senti.serve import create_app

    root = tmp_path / "root"
    shutil.copytree(label_runs("three", "lora"), root / "three")
    shutil.copytree(label_runs("six", "adapter"), root / "emotions")
    clf = load(label_runs("two", "lora"), name="two")
    clf.add_adapter("six", label_runs("six", "lora"))
    app = create_app(clf, adapter_root=str(root), admin_token=TOKEN)
    with TestClient(app) as c:
        yield c


def probabilities(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [p["probabilities"] for p in response.json()["predictions"]]


def close(got: dict, want: dict) -> bool:
    return list(got) == list(want) and all(abs(got[k] - want[k]) < 1e-5 for k in want)


def test_serve_answers_every_label_of_the_answering_adapter(client, alone):
    for name, task in (("two", "two"), ("six", "six")):
        r = client.post("/v1/predict", json={"texts": TEXTS, "adapter": name})
        for got, want in zip(probabilities(r), alone[task][1]):
            assert close(got, want.probabilities), name
    listing = client.get("/v1/adapters").json()
    assert listing["labels"] == ["negative", "positive"]  # the default's
    assert listing["details"]["six"]["labels"] == SIX
    assert listing["details"]["six"]["labels_zh"][:3] == ["愤怒", "恐惧", "高兴"]
    tei = client.post("/predict", json={"inputs": TEXTS[1]}).json()
    assert [s["label"] for s in tei][0] == "negative" and len(tei) == 2
    r = client.post("/v1/adapters", json={"name": "three", "path": "three"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["labels"] == THREE
    r = client.post("/v1/adapters", json={"name": "emo", "path": "emotions"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["kind"] == "adapter" and r.json()["labels"] == SIX
    r = client.post("/v1/predict", json={"texts": TEXTS, "adapter": "three"})
    for got, want in zip(probabilities(r), alone["three"][1]):
        assert close(got, want.probabilities)
    r = client.post("/v1/predict", json={"texts": TEXTS, "adapter": "emo"})
    for got, want in zip(probabilities(r), alone["six-adapter"][1]):
        assert close(got, want.probabilities)
    assert client.delete("/v1/adapters/six", headers=AUTH).status_code == 200
    assert client.delete("/v1/adapters/two", headers=AUTH).status_code == 200
    # the default is now the three-way task: the standard routes answer in its labels
    listing = client.get("/v1/adapters").json()
    assert listing["default"] == "three" and listing["labels"] == THREE
    tei = client.post("/predict", json={"inputs": [TEXTS[0]], "raw_scores": True}).json()
    want = alone["three"][0][0]
    assert {s["label"]: s["score"] for s in tei[0]} == pytest.approx(
        dict(zip(THREE, want)), abs=1e-4
    )
    api = client.post("/", json={"inputs": TEXTS[2], "parameters": {"top_k": 2}}).json()
    assert len(api[0]) == 2 and {s["label"] for s in api[0]} <= set(THREE)
    api = client.post("/", json={"inputs": TEXTS[2]}).json()
    assert [s["label"] for s in api[0]] == sorted(
        THREE, key=lambda n: -alone["three"][1][2].probabilities[n]
    )


def test_one_batch_of_requests_for_three_label_sets(label_runs, alone, monkeypatch):
    from weibo_senti.serve import Batcher

    clf = load(label_runs("two", "lora"), name="two")
    clf.add_adapter("three", label_runs("three", "lora"))
    clf.add_adapter("six-adapter", label_runs("six", "adapter"))
    calls = []
    original = Batcher._predict
    monkeypatch.setattr(
        Batcher, "_predict", lambda s, jobs: calls.append(jobs) or original(s, jobs)
    )
    names = ["two", "three", "six-adapter"] * 2

    async def scenario():
        batcher = Batcher(clf, max_batch=64, max_wait_ms=200)
        batcher.start()
        answers = await asyncio.gather(*[batcher.submit(TEXTS, n) for n in names])
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert len(calls) < len(names)  # requests of different tasks shared a model call
    for name, preds in zip(names, answers):
        assert all(p.adapter == name for p in preds)
        assert all(close(p.probabilities, w.probabilities) for p, w in zip(preds, alone[name][1]))


def test_the_page_shows_every_label(client):
    page = client.get("/").text
    assert "p.probabilities" in page and "labels_zh" in page
