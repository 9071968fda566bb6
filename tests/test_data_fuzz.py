"""Property-based fuzz of the data reader (hypothesis): whatever the bytes, encoding, quotes and
delimiters, it returns rows or raises the project's one-line error — nothing else — and never
returns fewer rows than it reports."""

from __future__ import annotations

import csv
import io
import json
import logging

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz needs hypothesis ([test] extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from weibo_senti.data import read_labelled, read_texts  # noqa: E402
from weibo_senti.errors import UserError  # noqa: E402

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SUFFIXES = [".csv", ".tsv", ".jsonl", ".txt"]
# Chinese, the characters that make CSV hard, and line breaks only Python knows as such
PIECES = list("好差我的了是微博今天") + [",", "\t", '"', "'", "\n", "\r", "\r\n", " ", "[哈哈]"]
PIECES += ["\u2028", "\x1c", "\x85", "😀", "\\", "{", "}"]
texts = st.lists(st.sampled_from(PIECES), min_size=0, max_size=12).map("".join)


def one_line_error(e: UserError) -> bool:
    return "\n" not in str(e) and len(str(e)) < 600


@FUZZ
@given(raw=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_give_rows_or_one_line(tmp_path_factory, raw, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    path.write_bytes(raw)
    for read in (read_texts, read_labelled):
        if read is read_labelled and suffix == ".txt":
            continue
        try:
            ex = read(path)
        except UserError as e:
            assert one_line_error(e), str(e)
            continue
        skipped = sum(len(v) for v in ex.skipped.values())
        assert len(ex.texts) + skipped == ex.rows_read  # nothing lost without a count
        if ex.labels is not None:
            assert len(ex.labels) == len(ex.texts) and set(ex.labels) <= {0, 1}


@FUZZ
@given(
    rows=st.lists(st.tuples(st.sampled_from([0, 1]), texts), min_size=1, max_size=25),
    fmt=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "gb18030"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
)
def test_well_formed_files_come_back_row_for_row(tmp_path_factory, rows, fmt, encoding, quoting):
    """Every file a csv/json writer produces is read back exactly: the usable rows in order,
    the others (blank texts) counted as skipped."""
    path = tmp_path_factory.mktemp("fuzz") / f"data{fmt}"
    if fmt == ".jsonl":
        body = "".join(
            json.dumps({"label": y, "review": t}, ensure_ascii=False) + "\n" for y, t in rows
        )
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t" if fmt == ".tsv" else ",", quoting=quoting)
        writer.writerow(["label", "review"])
        writer.writerows(rows)
        body = buf.getvalue()
    path.write_bytes(body.encode(encoding))
    usable = [(y, t.strip()) for y, t in rows if t.strip()]
    logging.getLogger("weibo_senti").disabled = True  # warnings are expected; keep output calm
    try:
        try:
            ex = read_labelled(path)
        except UserError as e:
            assert not usable and "no usable rows" in str(e), str(e)
            return
        assert list(zip(ex.labels, ex.texts)) == usable
        assert ex.rows_read == len(rows)
        assert ex.skipped.get("empty text", []) == [] or len(usable) < len(rows)
        if fmt != ".jsonl":
            got = read_texts(path)
            assert [str(v) for v in got.columns["label"]] == [str(y) for y, _ in rows]
            assert got.columns["review"] == [t for _, t in rows]
    finally:
        logging.getLogger("weibo_senti").disabled = False


# ------------------------------------------------ predict --input: rows out == rows in
CELLS = st.one_of(
    texts, st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=2)
)


@pytest.fixture(scope="module")
def fuzz_cli(trained_runs):
    """`weibo-senti predict RUN --input ...` in-process on the tiny model, loaded once."""
    from unittest import mock

    from weibo_senti import cli, predict
    from weibo_senti.predict import SentimentClassifier

    clf = SentimentClassifier.load(trained_runs["lora"], precision="fp32", engine="torch")

    def run(*args) -> int:
        argv = ["weibo-senti", "predict", str(trained_runs["lora"]), *map(str, args)]
        # configure_process sets logging and warnings for the whole process: not in tests
        with (
            mock.patch.object(predict, "load_classifier", lambda *a, **k: clf),
            mock.patch.object(cli, "configure_process", lambda: None),
            mock.patch("sys.argv", argv),
        ):
            try:
                cli.main()
            except SystemExit as e:
                return e.code or 0
        return 0

    return run


@settings(FUZZ, max_examples=60)  # each example runs the command: fewer, not weaker
@given(
    rows=st.lists(st.tuples(texts, CELLS), min_size=0, max_size=15),
    fmt=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
def test_random_rows_through_predict_come_out_row_for_row(
    fuzz_cli, tmp_path_factory, rows, fmt, encoding
):
    """Any rows a csv/json writer produces (texts with quotes, delimiters and line breaks of
    every kind; JSONL values of every type) come out of predict --input one for one, in
    order, with their cells as written."""
    folder = tmp_path_factory.mktemp("predict-fuzz")
    src, out = folder / f"in{fmt}", folder / "out.jsonl"
    if fmt == ".jsonl":
        objs = [{"id": str(i), "text": t, "extra": c} for i, (t, c) in enumerate(rows)]
        body = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)
        encoding = "utf-8"  # JSONL is UTF-8
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t" if fmt == ".tsv" else ",")
        writer.writerow(["id", "text"])
        writer.writerows([str(i), t] for i, (t, _) in enumerate(rows))
        body = buf.getvalue()
    src.write_bytes(body.encode(encoding))
    logging.getLogger("weibo_senti").disabled = True  # warnings are expected; keep output calm
    try:
        code = fuzz_cli("--input", src, "--output", out, "--text-column", "text")
    finally:
        logging.getLogger("weibo_senti").disabled = False
    if fmt == ".jsonl" and not rows:
        assert code == 2  # an empty file: refused in one line
        return
    assert code == 0
    lines = out.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 is text
    got = [json.loads(line) for line in lines if line]
    assert [g["id"] for g in got] == [str(i) for i in range(len(rows))]
    assert [g["text"] for g in got] == [t for t, _ in rows]
    if fmt == ".jsonl":
        assert [g["extra"] for g in got] == [c for _, c in rows]
