"""Reading data files: encodings, formats, bad rows, splits."""

from __future__ import annotations

import json
import logging

import pytest

from weibo_senti import UserError
from weibo_senti.data import read_labelled, read_texts, split_dev, strip_emoticons

ROWS = [(1, "今天天气真好[哈哈]"), (0, "服务态度差，价格还贵"), (1, "开心"), (0, "难过[泪]")]


def write_csv(path, rows=ROWS, encoding="utf-8", header="label,review"):
    body = header + "\n" + "".join(f'{lab},"{text}"\n' for lab, text in rows)
    path.write_bytes(body.encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
def test_encodings_are_detected(tmp_path, encoding):
    ex = read_labelled(write_csv(tmp_path / "d.csv", encoding=encoding))
    assert ex.texts == [t for _, t in ROWS]
    assert ex.labels == [lab for lab, _ in ROWS]


def test_explicit_wrong_encoding_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", encoding="gbk")
    with pytest.raises(UserError, match="cannot decode as utf-8"):
        read_labelled(path, encoding="utf-8")


def test_tsv_and_jsonl_and_custom_columns(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("y\ttext\n" + "".join(f"{lab}\t{t}\n" for lab, t in ROWS), encoding="utf-8")
    ex = read_labelled(tsv, text_column="text", label_column="y")
    assert ex.labels == [1, 0, 1, 0]
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps({"label": lab, "review": t}) + "\n" for lab, t in ROWS))
    assert read_labelled(jl).texts == [t for _, t in ROWS]


def test_bad_rows_are_counted_skipped_and_reported(tmp_path, caplog):
    path = tmp_path / "d.csv"
    path.write_text(
        "label,review\n"
        "1,好\n"  # line 2 ok
        "0,\n"  # line 3 empty text
        "1,a,b\n"  # line 4 wrong number of fields
        "1,   \n"  # line 5 blank text
        "0,差\n"  # line 6 ok
        + "".join(f"{i % 2},文本{i}\n" for i in range(40))
        + "7,坏标签\n",  # line 47 label not 0/1
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="weibo_senti"):
        ex = read_labelled(path)
    assert len(ex) == 42
    msg = caplog.text
    assert "skipped 4 of 46 rows" in msg
    assert "empty text: 2" in msg and "unparsable: 1" in msg and "label not 0/1: 1" in msg
    assert "lines 3, 4, 5, 47" in msg


def test_multiline_quoted_text_keeps_line_numbers(tmp_path, caplog):
    path = tmp_path / "d.csv"
    path.write_text('label,review\n1,"第一行\n第二行"\n0,\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="weibo_senti"):
        ex = read_labelled(path)
    assert ex.texts == ["第一行\n第二行"]
    assert "lines 4" in caplog.text


def test_missing_column_stops(tmp_path):
    path = write_csv(tmp_path / "d.csv", header="label,text")
    with pytest.raises(UserError, match="missing column 'review'.*--text-column"):
        read_labelled(path)


def test_another_integer_scheme_is_a_label_set_in_numeric_order(tmp_path):
    rows = [((i * 7) % 10 + 1, f"评论{i}") for i in range(30)]  # 1-10 stars, unordered rows
    ex = read_labelled(write_csv(tmp_path / "d.csv", rows))
    assert ex.names == [str(i) for i in range(1, 11)]  # numeric order: 10 after 9
    assert [ex.names[c] for c in ex.labels] == [str(lab) for lab, _ in rows]


@pytest.mark.parametrize("body", ["", "label,review\n", "label,review\n0,\n1,  \n"])
def test_no_usable_rows_stops(tmp_path, body):
    path = tmp_path / "d.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(UserError, match="empty|no usable rows"):
        read_labelled(path)


def test_missing_file_stops(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_labelled(tmp_path / "nope.csv")


def test_huge_text_is_read(tmp_path):
    path = write_csv(tmp_path / "d.csv", [(1, "好" * 300_000), (0, "差")])
    assert len(read_labelled(path).texts[0]) == 300_000


def test_split_is_stratified_and_seeded():
    from weibo_senti.data import Examples

    ex = Examples([f"t{i}" for i in range(100)], [1] * 80 + [0] * 20)
    train, dev = split_dev(ex, 0.1, seed=42)
    assert len(dev) == 10 and sum(dev.labels) == 8
    assert set(train.texts).isdisjoint(dev.texts)
    assert split_dev(ex, 0.1, seed=42)[1].texts == dev.texts
    assert split_dev(ex, 0.1, seed=1)[1].texts != dev.texts


def test_read_texts_keeps_every_row_in_order(tmp_path, caplog):
    txt = tmp_path / "p.txt"
    txt.write_text("第一\n\n第三\n", encoding="utf-8")
    assert read_texts(txt).texts == ["第一", "", "第三"]
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("id,review\n7,好\n8,\n9,x,y\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="weibo_senti"):
        ex = read_texts(csv_path)
    assert ex.texts == ["好", "", ""]
    assert ex.columns == {"id": ["7", "8", "9"], "review": ["好", "", "x"]}  # ragged: cells kept
    assert "1 unparsable" in caplog.text
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"text": "好", "k": 1}\nnot json\n{"text": "差", "k": 2}\n', encoding="utf-8")
    ex = read_texts(jl)
    assert ex.texts == ["好", "", "差"]
    assert ex.columns == {"text": ["好", None, "差"], "k": [1, None, 2]}  # types as read


def test_strip_emoticons():
    assert strip_emoticons("好开心[哈哈][鼓掌] [a]b") == "好开心 b"
    assert strip_emoticons("[这不是一个表情而是很长的方括号]") == "[这不是一个表情而是很长的方括号]"
    assert strip_emoticons("好开心😀👍🏻🇨🇳今天❤️") == "好开心今天"  # Unicode emoji too


def test_blank_lines_duplicate_columns_and_non_text_in_training_data(tmp_path, caplog):
    path = tmp_path / "d.csv"
    path.write_text("label,review\n1,好\n\n0,差\n   \n" + "1,棒\n" * 10, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="weibo_senti"):
        ex = read_labelled(path)
    assert len(ex) == 12 and "2 blank lines skipped (lines 3, 5)" in caplog.text
    path.write_text("label,review,review\n1,a,b\n", encoding="utf-8")
    with pytest.raises(UserError, match="column 'review' twice"):
        read_labelled(path)
    jl = tmp_path / "d.jsonl"
    rows = [{"label": 1, "review": {"a": 1}}] + [{"label": i % 2, "review": "好"} for i in range(9)]
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert read_labelled(jl).skipped == {"not text": [1]}  # counted, never its repr


@pytest.mark.parametrize(
    "raw, encoding, said",
    [
        ("id,text\n1,好\n".encode("utf-16-le"), None, "UTF-16-LE (no BOM"),
        ("id,text\n1,今天天气真好\n".encode("gbk"), None, "GB18030/GBK"),
        ("id,text\n1,今天天气真好，我们去公园\n".encode("gbk"), "latin-1", "likely mojibake"),
    ],
    ids=["utf16-without-bom", "gbk-guess", "explicit-latin1-on-gbk"],
)
def test_an_encoding_guess_or_a_mojibake_encoding_is_said(tmp_path, caplog, raw, encoding, said):
    path = tmp_path / "p.csv"
    path.write_bytes(raw)
    with caplog.at_level(logging.WARNING, logger="weibo_senti"):
        read_texts(path, "text", encoding=encoding)
    assert said in caplog.text and "--encoding" in caplog.text


@pytest.mark.parametrize(
    "raw", [b"PK\x03\x04" + bytes(40), bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n" + bytes(9)]
)
def test_binary_files_are_refused(tmp_path, raw):
    path = tmp_path / "p.csv"
    path.write_bytes(raw)
    with pytest.raises(UserError, match="not text"):
        read_texts(path)
