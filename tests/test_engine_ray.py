"""The Ray engine on a local Ray (2 CPUs, 2 actors) gives the local engine's rows."""

from __future__ import annotations

import csv
import json

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra")
pa = pytest.importorskip("pyarrow", reason="the Ray engine needs pyarrow")

from weibo_senti import bulk, engine_ray  # noqa: E402
from weibo_senti.predict import SentimentClassifier  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def texts(n: int) -> list[str]:
    base = ["好棒喜爱", "差坏烂", "", "乐美赞", "恨糟怒哭", "我的天"]
    return [base[i % len(base)] + str(i) for i in range(n)]


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_two_actors_give_the_local_engines_rows(local_ray, trained_runs, tmp_path, kind):
    import pyarrow.parquet as pq

    ts = texts(600)
    ids = [f"{i:05d}" for i in range(len(ts))]
    src = tmp_path / f"posts.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table({"id": ids, "text": ts}), src, row_group_size=100)
    else:  # GBK, as many Chinese crawls are: detected, then transcoded by pyarrow
        with open(src, "w", encoding="gbk", newline="") as f:
            csv.writer(f).writerows([["id", "text"], *zip(ids, ts)])
    run = trained_runs["lora"]
    out = tmp_path / "ray.parquet"
    summary = engine_ray.score(
        src, out, run, text_column="text", precision="fp32", workers=2, rows_per_batch=64
    )
    assert summary.rows == len(ts)
    local = tmp_path / "local.parquet"
    clf = SentimentClassifier.load(run, precision="fp32")
    bulk.score(src, local, bulk.Predictor(classifier=clf, text_column="text"))
    got, want = pq.read_table(out).to_pylist(), pq.read_table(local).to_pylist()
    assert [r["id"] for r in got] == ids  # input order, "00007" kept as read
    for g, w in zip(got, want):
        assert g["pred_label"] == w["pred_label"] and g["text"] == w["text"]
        if w["pred_p_positive"] is not None:
            assert abs(g["pred_p_positive"] - w["pred_p_positive"]) < 1e-5


def test_without_ray_installed_the_line_says_how(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from weibo_senti.errors import UserError

    with pytest.raises(UserError, match=r"pip install 'weibo-senti\[ray\]'"):
        engine_ray.require_ray()


def hostile_folder(folder):
    """Shards with every row the local engine keeps: blank lines (skipped, counted), ragged
    and unparsable rows, non-text values, keys like old internal markers, quoted and
    Unicode line breaks, a NUL, a lone surrogate."""
    folder.mkdir()
    (folder / "a.csv").write_text(
        'id,text\n1,好棒\n\n2,"差\n坏"\n3,a,extra\n4\n   \n5,\n,\n6,好\x00棒\n7,"x\r\ny"\n',
        encoding="utf-8",
        newline="",
    )
    rows = [
        {"text": "乐美"},
        {"text": {"a": 1}},
        {"text": [1, 2]},
        {"text": 5},
        {"text": None},
        {"\u0000text_column": "mine", "\u0000unparsable_line": 3, "text": "赞"},
        {"id": 9},
    ]
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    body += "not json\n\n[1]\n" + '{"text": "\\ud800"}\n'
    (folder / "b.jsonl").write_text(body, encoding="utf-8")
    (folder / "c.txt").write_bytes("好\u2028差\r烂\n\n坏\x85棒\n".encode())
    return folder


def test_ray_keeps_the_rows_the_local_engine_keeps(local_ray, trained_runs, tmp_path):
    src = hostile_folder(tmp_path / "crawl")
    run, out, local = trained_runs["lora"], tmp_path / "ray.jsonl", tmp_path / "local.jsonl"
    got_summary = engine_ray.score(
        src, out, run, text_column="text", precision="fp32", workers=2, rows_per_batch=4
    )
    clf = SentimentClassifier.load(run, precision="fp32")
    want_summary = bulk.score(src, local, bulk.Predictor(classifier=clf, text_column="text"))
    got, want = read_jsonl(out), read_jsonl(local)
    assert len(got) == len(want) == want_summary.rows == got_summary.rows == 22
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if "_p_" not in k and "score" not in k} == {
            k: v for k, v in w.items() if "_p_" not in k and "score" not in k
        }
        if w["pred_p_positive"] is not None:
            assert abs(g["pred_p_positive"] - w["pred_p_positive"]) < 1e-5
    for key in ("empty", "non_text", "unparsable", "blank", "unparsable_lines", "blank_lines"):
        assert getattr(got_summary, key) == getattr(want_summary, key), key
    assert want_summary.blank == 3 and want_summary.non_text == 2


def read_jsonl(path):
    lines = path.read_text(encoding="utf-8").split("\n")  # U+2028 inside a text is no break
    return [json.loads(line) for line in lines if line]


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("in.csv", b"PK\x03\x04" + bytes(60), "zip archive"),
        ("in.csv", bytes(range(256)) * 4, "binary data"),
        ("in.parquet", b"PAR1" + bytes(40), "not a readable Parquet"),
        ("in.csv", b"id,text,text\n1,a,b\n", "column 'text' twice"),
        ("in.jsonl", b'{"text": "a", "text": "b"}\n', "twice"),
    ],
    ids=["xlsx-named-csv", "binary-csv", "corrupt-parquet", "duplicate-header", "duplicate-key"],
)
def test_ray_refuses_what_the_local_engine_refuses_before_it_starts(
    local_ray, tmp_path, name, data, message
):
    from weibo_senti.errors import UserError

    src = tmp_path / name
    src.write_bytes(data)
    with pytest.raises(UserError, match=message) as e:
        engine_ray.score(src, tmp_path / "o.jsonl", tmp_path / "no-run-needed", workers=1)
    assert "\n" not in str(e.value) and not (tmp_path / "o.jsonl").exists()


def test_ray_with_no_rows_writes_the_header_as_the_local_engine(local_ray, trained_runs, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,text\n\n", encoding="utf-8")
    out = tmp_path / "o.csv"
    summary = engine_ray.score(src, out, trained_runs["lora"], text_column="text", workers=1)
    assert summary.rows == 0 and summary.blank == 1
    assert out.read_text(encoding="utf-8").startswith("id,text,pred_label,")


from test_multitask import label_runs  # noqa: E402, F401  (a fixture: runs of 3 and 6 labels)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_six_label_run_gives_the_local_engines_columns(local_ray, label_runs, tmp_path, kind):  # noqa: F811
    import pyarrow.parquet as pq

    ts = texts(60)
    src = tmp_path / f"posts.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table({"text": ts}), src, row_group_size=20)
    else:
        src.write_text("text\n" + "".join(f"{t or '-'}\n" for t in ts), encoding="utf-8")
    run = label_runs("six", "lora")
    out, local = tmp_path / "ray.parquet", tmp_path / "local.parquet"
    engine_ray.score(src, out, run, text_column="text", precision="fp32", workers=2)
    clf = SentimentClassifier.load(run, precision="fp32")
    bulk.score(src, local, bulk.Predictor(classifier=clf, text_column="text"))
    got, want = pq.read_table(out).to_pylist(), pq.read_table(local).to_pylist()
    six = ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    assert list(got[0]) == list(want[0])
    assert [k for k in got[0] if k.startswith("pred_p_")] == [f"pred_p_{n}" for n in six]
    for g, w in zip(got, want):
        assert g["pred_label"] == w["pred_label"] and g["text"] == w["text"]
        for n in six:
            if w[f"pred_p_{n}"] is not None:
                assert abs(g[f"pred_p_{n}"] - w[f"pred_p_{n}"]) < 1e-5
