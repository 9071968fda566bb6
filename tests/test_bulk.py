"""Bulk scoring: streamed in chunks, every format, resume after a kill gives the same bytes."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_text

from weibo_senti import bulk, tables
from weibo_senti.errors import UserError
from weibo_senti.predict import SentimentClassifier

ROWS = 2000
CHUNK = 128


@pytest.fixture(scope="module")
def clf(trained_runs):
    return SentimentClassifier.load(trained_runs["lora"], precision="fp32")


@pytest.fixture(scope="module")
def posts(tmp_path_factory) -> Path:
    """A crawl-like CSV: ids with leading zeros, empty texts, a long one, quoted line breaks."""
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("crawl") / "posts.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "review", "city"])
        for i in range(ROWS):
            text = make_text(rng, i % 2, rng.randint(3, 30))
            if i % 97 == 0:
                text = ""
            elif i % 89 == 0:
                text = text + "\n" + text
            elif i == 5:
                text = text * 20  # longer than the tiny model's length: truncated
            w.writerow([f"{i:07d}", text, rng.choice(["北京", "上海", ""])])
    return path


def predictor(clf, **kw) -> bulk.Predictor:
    return bulk.Predictor(classifier=clf, **kw)


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_streamed_in_chunks_equals_in_memory(clf, posts, tmp_path):
    out = tmp_path / "scored.csv"
    summary = bulk.score(posts, out, predictor(clf), chunk_rows=CHUNK)
    rows = read_csv(out)
    source = read_csv(posts)
    assert len(rows) == ROWS == summary.rows == summary.scored
    assert list(rows[0])[:3] == ["id", "review", "city"]
    assert [r["id"] for r in rows] == [r["id"] for r in source]  # order and "0000007" kept
    assert [r["city"] for r in rows] == [r["city"] for r in source]
    memory = clf.predict([r["review"] for r in source])  # the whole file in one call
    for row, pred in zip(rows, memory):
        assert row["pred_label"] == (pred.label or "")
        if pred.score is not None:
            assert abs(float(row["pred_p_positive"]) - pred.probabilities["positive"]) < 1e-5
    assert summary.empty == sum(1 for r in source if not r["review"].strip()) > 0
    assert rows[5]["pred_truncated"] == "True" and summary.truncated >= 1
    assert not out.with_name("scored.csv.partial").exists()


@pytest.mark.parametrize("out_kind", ["csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize("in_kind", ["csv", "tsv", "jsonl", "txt", "parquet"])
def test_every_input_and_output_format(clf, tmp_path, in_kind, out_kind):
    if "parquet" in (in_kind, out_kind):
        pytest.importorskip("pyarrow", reason="Parquet needs the parquet extra (pyarrow)")
    texts = ["好棒喜爱", "差坏烂", "", '好 , "引号"', "乐美赞"] * 7
    src = write_input(tmp_path / f"in.{in_kind}", texts, in_kind)
    out = tmp_path / f"out.{out_kind}"
    bulk.score(src, out, predictor(clf, text_column="text"), chunk_rows=4)
    rows = read_output(out, out_kind)
    expected = clf.predict(texts)
    assert [r["text"] for r in rows] == texts
    assert [r["pred_label"] or None for r in rows] == [p.label for p in expected]
    if in_kind != "txt":
        assert [str(r["n"]) for r in rows] == [str(i) for i in range(len(texts))]


def write_input(path: Path, texts: list[str], kind: str) -> Path:
    if kind == "txt":
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    elif kind == "jsonl":
        lines = [json.dumps({"n": i, "text": t}, ensure_ascii=False) for i, t in enumerate(texts)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"n": list(range(len(texts))), "text": texts}), path)
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t" if kind == "tsv" else ",")
            w.writerow(["n", "text"])
            w.writerows([i, t] for i, t in enumerate(texts))
    return path


def read_output(path: Path, kind: str) -> list[dict]:
    if kind == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t" if kind == "tsv" else ","))


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (BaseException: no handler catches it)."""


@pytest.mark.parametrize(
    "where, after",
    [("write_part", 0), ("write_part", 5), ("commit", 3), ("commit", 15), ("join_parts", 0)],
)
def test_resume_after_a_kill_gives_the_same_bytes(clf, posts, tmp_path, monkeypatch, where, after):
    """Killed before any part, mid-part, between a part and its commit, before the join: the
    resumed output is byte-identical and no row is scored twice."""
    whole = tmp_path / "whole.csv"
    bulk.score(posts, whole, predictor(clf), chunk_rows=CHUNK)
    out = tmp_path / "out.csv"
    target = {"write_part": tables, "commit": bulk, "join_parts": tables}[where]
    name = {"write_part": "write_part", "commit": "write_json", "join_parts": "join_parts"}[where]
    real, calls = getattr(target, name), []

    def dies(*args, **kw):
        calls.append(1)
        if len(calls) > after:
            raise Killed
        return real(*args, **kw)

    monkeypatch.setattr(target, name, dies)
    with pytest.raises(Killed):
        bulk.score(posts, out, predictor(clf), chunk_rows=CHUNK)
    monkeypatch.setattr(target, name, real)
    assert not out.exists()  # a partial output never sits under the final name
    partial = out.with_name("out.csv.partial")
    assert partial.is_dir()
    with pytest.raises(UserError, match="--resume continues it"):
        bulk.score(posts, out, predictor(clf), chunk_rows=CHUNK)
    committed = json.loads((partial / "progress.json").read_text())["rows"] if after else 0
    if where == "join_parts":
        committed = ROWS
    summary = bulk.score(posts, out, predictor(clf), chunk_rows=CHUNK, resume=True)
    assert out.read_bytes() == whole.read_bytes()
    assert summary.scored == ROWS - committed and summary.rows == ROWS
    assert not partial.exists()
    again = bulk.score(posts, out, predictor(clf), chunk_rows=CHUNK, resume=True)
    assert again.scored == 0  # complete: nothing rescored, nothing rewritten


def test_a_real_sigkill_then_resume(trained_runs, posts, tmp_path):
    """The CLI in its own process, killed with SIGKILL after a few commits, then --resume."""
    out, whole = tmp_path / "out.jsonl", tmp_path / "whole.jsonl"
    args = [sys.executable, "-m", "weibo_senti.cli", "predict", str(trained_runs["lora"])]
    args += ["--input", str(posts), "--precision", "fp32", "--chunk-rows", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WEIBO_SENTI_NO_PROGRESS": "1"}
    subprocess.run([*args, "--output", str(whole)], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*args, "--output", str(out)], env=env, stderr=subprocess.PIPE)
    progress = out.with_name("out.jsonl.partial") / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and json.loads(progress.read_text() or "{}").get("parts", 0) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = subprocess.run([*args, "--output", str(out), "--resume"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert out.read_bytes() == whole.read_bytes()
    assert f"{ROWS} rows" in done.stderr.decode()


def test_resume_refuses_a_changed_input(clf, posts, tmp_path, monkeypatch):
    src = tmp_path / "posts.csv"
    src.write_bytes(posts.read_bytes())
    out = tmp_path / "out.csv"
    real, calls = bulk.write_json, []

    def dies_at_the_second_commit(*args):
        calls.append(1)
        if len(calls) > 1:
            raise Killed
        real(*args)

    monkeypatch.setattr(bulk, "write_json", dies_at_the_second_commit)
    with pytest.raises(Killed):
        bulk.score(src, out, predictor(clf), chunk_rows=CHUNK)
    monkeypatch.undo()
    with open(src, "a", encoding="utf-8") as f:
        f.write("9999999,新的一行,北京\n")
    with pytest.raises(UserError, match="started with other input files"):
        bulk.score(src, out, predictor(clf), chunk_rows=CHUNK, resume=True)
    bulk.score(src, out, predictor(clf), chunk_rows=CHUNK, overwrite=True)
    assert len(read_csv(out)) == ROWS + 1


def test_a_folder_of_mixed_shards(clf, tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet needs the parquet extra (pyarrow)")
    folder = tmp_path / "crawl"
    (folder / "day2").mkdir(parents=True)
    texts = {"a.csv": ["好棒", "差坏"], "b.jsonl": ["乐美", ""], "day2/c.parquet": ["烂糟", "赞"]}
    texts["day2/d.txt"] = ["哭", "喜"]
    for name, ts in texts.items():
        write_input(folder / name, ts, Path(name).suffix[1:])
    (folder / "notes.md").write_text("not a shard", encoding="utf-8")
    summary = bulk.score(folder, tmp_path / "scored", predictor(clf, text_column="text"))
    assert summary.rows == 8 and len(summary.outputs) == 4
    for name, ts in texts.items():
        kind = "csv" if name.endswith(".txt") else tables.kind(Path(name))
        out = tmp_path / "scored" / (name + ".csv" if name.endswith(".txt") else name)
        rows = read_output(out, kind)
        assert [r["text"] for r in rows] == ts
        assert [r["pred_label"] or None for r in rows] == [p.label for p in clf.predict(ts)]
    # a glob of CSV shards into one file: rows in shard order
    write_input(folder / "e.csv", ["赞美", "怒"], "csv")
    one = tmp_path / "one.csv"
    bulk.score(str(folder / "*.csv"), one, predictor(clf, text_column="text"))
    assert [r["text"] for r in read_csv(one)] == ["好棒", "差坏", "赞美", "怒"]


def test_shards_with_other_columns_cannot_share_one_csv(clf, tmp_path):
    write_input(tmp_path / "a.csv", ["好"], "csv")
    (tmp_path / "b.csv").write_text("text,extra\n差,1\n", encoding="utf-8")
    with pytest.raises(UserError, match="same columns"):
        bulk.score(str(tmp_path / "*.csv"), tmp_path / "o.csv", predictor(clf, text_column="text"))


def test_unparsable_rows_are_kept_and_counted(clf, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "好棒"}\n{broken\n{"text": "差坏"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    summary = bulk.score(src, out, predictor(clf, text_column="text"))
    rows = read_output(out, "jsonl")
    assert len(rows) == 3 and rows[1]["pred_label"] is None
    assert summary.unparsable == 1 and summary.unparsable_lines == [2]
    assert "1 unparsable, kept without a label (lines 2)" in summary.line()


def test_predictor_takes_the_batch_types_engines_hand_it(clf):
    p = predictor(clf, text_column="text")
    texts = ["好棒喜爱", "差坏烂", ""]
    expected = [pr.label for pr in clf.predict(texts)]
    import numpy as np

    out = p({"text": np.array(texts, dtype=object), "id": np.arange(3)})
    assert list(out["pred_label"]) == expected and list(out["id"]) == [0, 1, 2]
    pa = pytest.importorskip("pyarrow", reason="pyarrow batches need the parquet extra")
    table = p(pa.table({"text": texts}))
    assert table.column("pred_label").to_pylist() == expected
    assert table.schema.field("pred_score").type == pa.float64()
    with pytest.raises(UserError, match="no column 'review'"):
        predictor(clf)(pa.table({"text": texts}))


def test_each_shard_reads_its_own_text_column(clf, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.csv").write_text("id,review\n1,好棒喜爱\n2,差坏烂\n", encoding="utf-8")
    (folder / "b.txt").write_text("乐美赞\n恨糟怒\n", encoding="utf-8")
    summary = bulk.score(folder, tmp_path / "out.jsonl", predictor(clf, text_column=None))
    rows = read_output(tmp_path / "out.jsonl", "jsonl")
    assert summary.empty == 0 and all(r["pred_label"] for r in rows)
    expected = clf.predict(["好棒喜爱", "差坏烂", "乐美赞", "恨糟怒"])
    assert [r["pred_label"] for r in rows] == [p.label for p in expected]


def test_a_named_text_column_is_never_swapped_for_another(clf, tmp_path):
    src = write_input(tmp_path / "in.csv", ["好棒"], "csv")
    with pytest.raises(UserError, match="no column 'body'"):
        bulk.score(src, tmp_path / "o.csv", predictor(clf, text_column="body"))


def test_resume_on_a_finished_output_from_other_input_is_refused(clf, tmp_path):
    src = write_input(tmp_path / "in.csv", ["好棒", "差坏", "乐美"], "csv")
    out = tmp_path / "o.csv"
    bulk.score(src, out, predictor(clf, text_column="text"))
    assert bulk.score(src, out, predictor(clf, text_column="text"), resume=True).scored == 0
    other = write_input(tmp_path / "other.csv", ["好棒", "差坏"], "csv")
    with pytest.raises(UserError, match="holds 3 rows and the input has 2"):
        bulk.score(other, out, predictor(clf, text_column="text"), resume=True)


def test_unsupported_inputs_and_nested_values(clf, tmp_path):
    for name in ("posts.xlsx", "posts.csv.gz"):
        (tmp_path / name).write_bytes(b"PK\x03\x04")
        with pytest.raises(UserError, match="is not an input this reads"):
            bulk.score(tmp_path / name, tmp_path / "o.csv", predictor(clf))
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "好棒", "meta": {"a": [1, 2]}}\n', encoding="utf-8")
    bulk.score(src, tmp_path / "o.csv", predictor(clf, text_column="text"))
    assert json.loads(read_csv(tmp_path / "o.csv")[0]["meta"]) == {"a": [1, 2]}


def test_pandas_batches_missing_texts_and_clashing_columns(clf):
    pd = pytest.importorskip("pandas", reason="pandas batches need pandas")
    import numpy as np

    p = predictor(clf)
    out = p(pd.DataFrame({"review": [None, "好棒", np.nan, "", pd.NA]}))
    assert out["pred_label"].isna().tolist() == [
        True,
        False,
        True,
        True,
        True,
    ]
    with pytest.raises(UserError, match="already has column 'pred_label'"):
        p(pd.DataFrame({"review": ["好"], "pred_label": ["mine"]}))
