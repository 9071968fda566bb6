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
