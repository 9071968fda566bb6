"""The Ray engine on a local Ray (2 CPUs, 2 actors) gives the local engine's rows."""

from __future__ import annotations

import csv

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
