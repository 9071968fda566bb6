"""Hostile files through the real `weibo-senti predict --input` command: each is refused in one
`error:` line with exit code 2 (nothing written, the input untouched), or scored with every row
kept (rows in == rows out, input columns kept) and its oddities counted in the summary line.

The command runs in-process (cli.main, as the console script does) on the tiny model of
conftest.py, loaded once; a few cases also run as a real subprocess.
"""

from __future__ import annotations

import codecs
import csv
import errno
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from weibo_senti import bulk, tables
from weibo_senti.predict import SentimentClassifier

pa = pytest.importorskip("pyarrow", reason="the Parquet cases need the parquet extra")
pq = pytest.importorskip("pyarrow.parquet")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The one `error:` line of a refusal (and no traceback)."""
        assert self.code == 2, self.err
        assert "Traceback" not in self.err, self.err
        lines = [line for line in self.err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, self.err
        return lines[0]

    def summary(self) -> str:
        assert self.code == 0, self.err
        return [line for line in self.err.splitlines() if " rows in " in line][-1]


@pytest.fixture(scope="module")
def clf(trained_runs):
    return SentimentClassifier.load(trained_runs["lora"], precision="fp32", engine="torch")


@pytest.fixture
def cli(clf, trained_runs, monkeypatch, capsys):
    """`weibo-senti predict RUN ARGS...` through cli.main: its exit code and its output."""
    from weibo_senti import cli as cli_module
    from weibo_senti import predict

    monkeypatch.setattr(predict, "load_classifier", lambda *a, **k: clf)  # loaded once
    # configure_process sets logging and warnings for the whole process: a command's job,
    # not a test process's
    monkeypatch.setattr(cli_module, "configure_process", lambda: None)

    def run(*args) -> Result:
        argv = ["weibo-senti", "predict", str(trained_runs["lora"]), *map(str, args)]
        monkeypatch.setattr(sys, "argv", argv)
        capsys.readouterr()
        try:
            cli_module.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def read_output(path: Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of an output file of any kind."""
    kind = tables.kind(path)
    if kind == "parquet":
        table = pq.read_table(path)
        return table.column_names, table.to_pylist()
    with open(path, encoding="utf-8", newline="") as f:  # "\r\n" inside a cell stays
        text = f.read()
    if kind == "jsonl":
        rows = [json.loads(line) for line in text.split("\n") if line.strip()]
        return list(dict.fromkeys(k for r in rows for k in r)), rows
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",")
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def nothing_written(out: Path) -> bool:
    siblings = [p.name for p in out.parent.iterdir() if p.name.startswith(out.name)]
    return not siblings


def parquet_bytes(table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return buf.getvalue().to_pybytes()


GOOD_PARQUET = parquet_bytes(pa.table({"id": [1, 2, 3], "text": ["好棒", "差坏", "乐美"]}))
GBK_ROWS = "id,text\n1,今天天气真好，我们去公园玩吧\n2,服务态度差，价格还贵\n"


# ---------------------------------------------------------------- refused in one line
@dataclass
class Refused:
    id: str
    name: str
    data: bytes
    message: str  # a regex the error line matches
    args: tuple = ()


REFUSED = [
    Refused("empty-csv", "in.csv", b"", "is empty"),
    Refused("empty-jsonl", "in.jsonl", b"", "is empty"),
    Refused("empty-txt", "in.txt", b"", "is empty"),
    Refused("empty-parquet", "in.parquet", b"", "not a readable Parquet file"),
    Refused("truncated-parquet", "in.parquet", GOOD_PARQUET[:-40], "not a readable Parquet"),
    Refused("csv-named-parquet", "in.parquet", b"id,text\n1,x\n", "not a readable Parquet"),
    Refused(
        "corrupt-parquet-page",
        "in.parquet",
        GOOD_PARQUET[:4] + bytes(120) + GOOD_PARQUET[124:],
        "Parquet|cannot read",
    ),
    Refused("xlsx-named-csv", "in.csv", b"PK\x03\x04\x14\x00\x06\x00" + bytes(60), "zip archive"),
    Refused("gzip-named-csv", "in.csv", b"\x1f\x8b\x08\x00" + bytes(40), "gzip"),
    Refused("png-named-jsonl", "in.jsonl", b"\x89PNG\r\n\x1a\n" + bytes(40), "PNG"),
    Refused("parquet-named-csv", "in.csv", GOOD_PARQUET, "a Parquet file"),
    Refused("binary-junk-csv", "in.csv", bytes(range(256)) * 4, "binary data"),
    Refused("binary-junk-txt", "in.txt", b"\x01\x00\x02\x00\xff\x00" * 50, "binary data"),
    Refused(
        "old-xls-named-tsv", "in.tsv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(50), "Office"
    ),
    Refused("unclosed-quote", "in.csv", b'id,text\n1,"open\n2,b\n3,c\n', "never closes"),
    Refused("duplicate-header", "in.csv", b"id,text,text\n1,a,b\n", "column 'text' twice"),
    Refused("duplicate-header-spaces", "in.csv", b"text, text\na,b\n", "column 'text' twice"),
    Refused("two-unnamed-columns", "in.csv", b"id,text,,\n1,a,,\n", "unnamed column twice"),
    Refused("duplicate-tsv-header", "in.tsv", b"text\ttext\na\tb\n", "column 'text' twice"),
    Refused("duplicate-jsonl-key", "in.jsonl", b'{"text": "a", "text": "b"}\n', "twice"),
    Refused("unknown-encoding", "in.csv", b"text\na\n", "unknown encoding", ("--encoding", "x")),
    Refused(
        "wrong-explicit-encoding",
        "in.csv",
        GBK_ROWS.encode("gbk"),
        "bytes that are not utf-8",
        ("--encoding", "utf-8"),
    ),
    Refused(
        "gbk-with-a-stray-byte",
        "in.csv",
        GBK_ROWS.encode("gbk") + b"3,\xff\xff\n",
        "unknown text encoding",
    ),
    Refused(
        "gbk-after-64k-of-utf8",
        "in.csv",
        b"id,text\n" + b"1,ok\n" * 14000 + "2,差评\n".encode("gbk"),
        "bytes that are not utf-8",
    ),
    Refused("xlsx-suffix", "in.xlsx", b"PK\x03\x04" + bytes(30), "not an input this reads"),
    Refused("gz-suffix", "in.csv.gz", b"\x1f\x8b" + bytes(30), "not an input this reads"),
    Refused(
        "missing-text-column",
        "in.csv",
        b"id,body\n1,a\n",
        "no column 'text'",
        ("--text-column", "text"),
    ),
    Refused("labels-only", "in.csv", b"label\n0\n1\n", "holds labels"),
    Refused("clashing-prediction-column", "in.csv", b"text,pred_label\na,b\n", "pred_label"),
    Refused(
        "duplicate-parquet-columns",
        "in.parquet",
        parquet_bytes(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], ["text", "text"])),
        "column 'text' twice",
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_a_hostile_file_is_refused_in_one_line(cli, tmp_path, case):
    src = tmp_path / case.name
    src.write_bytes(case.data)
    out = tmp_path / "out" / "scored.csv"
    out.parent.mkdir()
    r = cli("--input", src, "--output", out, *case.args)
    assert re.search(case.message, r.error_line()), r.err
    assert nothing_written(out)  # no output, no partial, no lock
    assert src.read_bytes() == case.data


# ---------------------------------------------------------------- scored, oddities counted
@dataclass
class Kept:
    id: str
    name: str
    data: bytes | str  # str: written as UTF-8
    rows: int  # rows in = rows out
    report: list[str] = field(default_factory=list)  # fragments of the summary or a warning
    texts: list | None = None  # the text column as read, where it matters
    columns: list[str] = field(default_factory=lambda: ["id", "text"])
    args: tuple = ()
    out: str = ""  # the output's name, when not the input's kind


def jsonl(*objs) -> bytes:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs).encode("utf-8")


def parquet(**cols):
    return parquet_bytes(pa.table({"id": list(range(len(next(iter(cols.values()))))), **cols}))


KEPT = [
    Kept("blank-lines-csv", "in.csv", "id,text\n1,好\n\n2,差\n\n\n", 2, ["3 blank lines skipped"]),
    Kept("space-lines-csv", "in.csv", "id,text\n1,好\n   \n2,差\n", 2, ["1 blank lines skipped"]),
    Kept(
        "blank-lines-jsonl",
        "in.jsonl",
        jsonl({"text": "好"}) + b"\n  \n" + jsonl({"text": "差"}),
        2,
        ["2 blank lines skipped (lines 2, 3)"],
        columns=["text"],
    ),
    Kept("all-empty-cells-row", "in.csv", "id,text\n1,好\n,\n", 2, ["1 with no usable text"]),
    Kept(
        "ragged-rows",
        "in.csv",
        b"id,text\n1,a,extra\n2\n3,ok\n",
        3,
        ["2 unparsable, kept without a label (lines 2, 3)"],
        ["a", "", "ok"],
    ),
    Kept("ragged-tsv", "in.tsv", b"id\ttext\n1\ta\tb\n2\tok\n", 2, ["1 unparsable"]),
    Kept(
        "unparsable-jsonl",
        "in.jsonl",
        b'{"text": "a"}\nnot json\n[1, 2]\n"str"\n{"text": "b"\n',
        5,
        ["4 unparsable, kept without a label (lines 2, 3, 4, 5)"],
        columns=["text"],
    ),
    Kept(
        "object-list-bool-texts",
        "in.jsonl",
        jsonl({"text": {"a": 1}}, {"text": [1, 2]}, {"text": True}, {"text": "好"}),
        4,
        ["3 with no text in the text column", "(lines 1, 2, 3)"],
        columns=["text"],
    ),
    Kept(
        "number-text",
        "in.jsonl",
        jsonl({"text": 5}, {"text": 1.5}),
        2,
        [],
        [5, 1.5],
        columns=["text"],
    ),
    Kept(
        "null-and-missing-texts",
        "in.jsonl",
        jsonl({"text": None}, {"id": 1}, {"text": "好"}),
        3,
        ["2 with no usable text"],
        columns=["text", "id"],
    ),
    Kept(
        "marker-named-keys",
        "in.jsonl",
        jsonl({"\0text_column": "mine", "\0unparsable_line": 7, "text": "好"}),
        1,
        [],
        columns=["\0text_column", "\0unparsable_line", "text"],
    ),
    Kept(
        "lone-surrogate",
        "in.jsonl",
        b'{"text": "\\ud800"}\n{"text": "ok"}\n',
        2,
        ["1 with no usable text"],
        columns=["text"],
    ),
    Kept(
        "nul-byte-in-a-cell",
        "in.csv",
        "id,text\n1,好\x00棒\n2,差\n".encode(),
        2,
        [],
        ["好\x00棒", "差"],
    ),
    Kept(
        "huge-field",
        "in.csv",
        b"id,text\n1," + "好".encode() * 400_000 + b"\n2,x\n",
        2,
        ["1 cut to the model's length"],
        out="out.jsonl",
    ),
    Kept("header-only-csv", "in.csv", b"id,text\n", 0, []),
    Kept("header-only-tsv", "in.tsv", b"id\ttext\n", 0, []),
    Kept("header-only-jsonl-blank", "in.jsonl", b"\n\n", 0, ["2 blank lines skipped"], columns=[]),
    Kept("utf8-bom", "in.csv", codecs.BOM_UTF8 + "id,text\n1,好\n".encode(), 1, [], ["好"]),
    Kept("utf16-le-bom", "in.csv", "id,text\n1,好\n".encode("utf-16"), 1, [], ["好"]),
    Kept(
        "utf16-be-bom",
        "in.csv",
        codecs.BOM_UTF16_BE + "id,text\n1,好\n".encode("utf-16-be"),
        1,
        [],
        ["好"],
    ),
    Kept(
        "utf16-le-no-bom",
        "in.csv",
        "id,text\n1,好\n2,差\n".encode("utf-16-le"),
        2,
        ["UTF-16-LE (no BOM"],
        ["好", "差"],
    ),
    Kept("utf32-bom", "in.csv", "id,text\n1,好\n".encode("utf-32"), 1, [], ["好"]),
    Kept(
        "gbk",
        "in.csv",
        GBK_ROWS.encode("gbk"),
        2,
        ["GB18030/GBK", "--encoding"],
        ["今天天气真好，我们去公园玩吧", "服务态度差，价格还贵"],
    ),
    Kept(
        "gbk-as-valid-utf8",
        "in.csv",
        b"id,text\n1,\xce\xa2\xce\xa2\n",
        1,
        ["read as GBK"],
        ["微微"],
    ),
    Kept(
        "big5",
        "in.csv",
        "id,text\n1,今天天氣真好，我們去公園玩吧\n".encode("big5"),
        1,
        ["Big5", "--encoding"],
        ["今天天氣真好，我們去公園玩吧"],
    ),
    Kept(
        "explicit-latin1-on-gbk",
        "in.csv",
        GBK_ROWS.encode("gbk"),
        2,
        ["likely mojibake", "check --encoding"],
        args=("--encoding", "latin-1"),
    ),
    Kept("crlf", "in.csv", b"id,text\r\n1,\xe5\xa5\xbd\r\n2,x\r\n", 2, [], ["好", "x"]),
    Kept("lone-cr", "in.csv", b"id,text\r1,a\r2,b\r", 2, [], ["a", "b"]),
    Kept("no-final-newline", "in.csv", b"id,text\n1,a\n2,b", 2, [], ["a", "b"]),
    Kept(
        "quoted-line-breaks",
        "in.csv",
        b'id,text\n1,"a\nb"\n2,"c\r\nd"\n',
        2,
        [],
        ["a\nb", "c\r\nd"],
    ),
    Kept(
        "quoted-delimiters",
        "in.csv",
        b'id,text\n1,"a,b"\n2,"say ""hi"""\n',
        2,
        [],
        ["a,b", 'say "hi"'],
    ),
    Kept(
        "txt-blank-lines",
        "in.txt",
        "好\n\n差\n\n".encode(),
        4,
        ["2 with no usable text"],
        ["好", "", "差", ""],
        columns=["text"],
    ),
    Kept(
        "txt-line-separator",
        "in.txt",
        "好\u2028差\n烂\x85坏\n".encode(),
        2,
        [],
        ["好\u2028差", "烂\x85坏"],
        columns=["text"],
    ),
    Kept("txt-cr-only", "in.txt", b"a\rb\rc", 3, [], ["a", "b", "c"], columns=["text"]),
    Kept(
        "parquet-binary-text",
        "in.parquet",
        parquet(text=[b"\xe5\xa5\xbd", b"x"]),
        2,
        ["2 with no text in the text column"],
    ),
    Kept(
        "parquet-list-text",
        "in.parquet",
        parquet(text=[["a"], ["b", "c"]]),
        2,
        ["2 with no text in the text column"],
    ),
    Kept(
        "parquet-struct-text",
        "in.parquet",
        parquet(text=[{"a": 1}, {"a": 2}]),
        2,
        ["2 with no text in the text column"],
    ),
    Kept(
        "parquet-null-text",
        "in.parquet",
        parquet(text=["好", None, ""]),
        3,
        ["2 with no usable text"],
    ),
    Kept(
        "parquet-no-rows",
        "in.parquet",
        parquet_bytes(
            pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())})
        ),
        0,
        [],
    ),
    Kept("leading-zero-ids", "in.csv", b"id,text\n007,a\n0,b\n", 2, [], ["a", "b"]),
]


def out_name(case: Kept) -> str:
    if case.out:
        return case.out
    kind = tables.kind(Path(case.name))
    return {"txt": "out.csv", "jsonl": "out.jsonl", "parquet": "out.parquet"}.get(
        kind, f"out.{kind}"
    )


@pytest.mark.parametrize("case", KEPT, ids=lambda c: c.id)
def test_a_hostile_file_keeps_every_row(cli, tmp_path, caplog, case):
    src = tmp_path / case.name
    src.write_bytes(case.data.encode() if isinstance(case.data, str) else case.data)
    out = tmp_path / out_name(case)
    r = cli("--input", src, "--output", out, "--text-column", "text", *case.args)
    summary = r.summary()
    columns, rows = read_output(out)
    assert len(rows) == case.rows and summary.startswith(f"{case.rows} rows")
    said = summary + "\n" + caplog.text
    for fragment in case.report:
        assert fragment in said, said
    if tables.kind(out) != "jsonl":
        assert columns[: len(case.columns)] == case.columns  # input columns first, as read
    else:  # JSONL rows keep their own keys
        assert set(case.columns) <= set(columns)
    assert "pred_label" in columns or (tables.kind(out) == "jsonl" and not rows)
    if case.texts is not None:
        assert [r.get("text", "") for r in rows] == case.texts
    if src.suffix == ".csv" and case.id == "leading-zero-ids":
        assert [r["id"] for r in rows] == ["007", "0"]


# ---------------------------------------------------------------- outputs and the file system
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_csv_and_a_txt_of_one_name_both_reach_a_folder_output(cli, tmp_path):
    write(tmp_path / "in" / "a.csv", "id,text\n1,好\n2,差\n")
    write(tmp_path / "in" / "a.txt", "乐\n美\n赞\n")
    r = cli("--input", tmp_path / "in", "--output", tmp_path / "scored")
    assert r.summary().startswith("5 rows in 2 output file(s)")
    assert [x["text"] for x in read_output(tmp_path / "scored" / "a.csv")[1]] == ["好", "差"]
    assert [x["text"] for x in read_output(tmp_path / "scored" / "a.txt.csv")[1]] == list("乐美赞")


@pytest.mark.parametrize(
    "names, message",
    [(["a.txt", "a.txt.csv"], "would both be written"), (["A.csv", "a.csv"], "would both be")],
)
def test_shards_that_would_share_an_output_are_refused(cli, tmp_path, names, message):
    for name in names:
        write(tmp_path / "in" / name, "text\n好\n")
    r = cli("--input", tmp_path / "in", "--output", tmp_path / "scored")
    assert message in r.error_line()
    assert not (tmp_path / "scored").exists()  # refused before anything was scored


def test_a_folder_output_over_its_input_folder_is_refused(cli, tmp_path):
    src = write(tmp_path / "in" / "a.csv", "text\n好\n")
    r = cli("--input", tmp_path / "in", "--output", tmp_path / "in", "--overwrite")
    assert "over the input" in r.error_line()
    assert src.read_text(encoding="utf-8") == "text\n好\n"


def test_a_folder_output_inside_the_input_is_not_read_back(cli, tmp_path):
    write(tmp_path / "in" / "a.csv", "text\n好\n差\n")
    for _ in range(2):  # the second run must not score the first one's output as input
        r = cli("--input", tmp_path / "in", "--output", tmp_path / "in" / "scored", "--overwrite")
        assert r.summary().startswith("2 rows in 1 output file(s)")
    assert not (tmp_path / "in" / "scored" / "scored").exists()


def test_overwrite_in_a_folder_keeps_the_users_other_files(cli, tmp_path):
    write(tmp_path / "in" / "a.csv", "text\n好\n")
    write(tmp_path / "in" / "b.csv", "text\n差\n")
    notes = write(tmp_path / "scored" / "notes.md", "mine")
    other = write(tmp_path / "scored" / "other.csv", "x\n1\n")
    assert cli("--input", tmp_path / "in", "--output", tmp_path / "scored").code == 0
    r = cli("--input", tmp_path / "in", "--output", tmp_path / "scored", "--overwrite")
    assert r.summary().startswith("2 rows")
    assert notes.read_text() == "mine" and other.read_text() == "x\n1\n"
    mine = write(tmp_path / "scored" / "b.csv", "my own table\n")  # not a predict output
    r = cli("--input", tmp_path / "in", "--output", tmp_path / "scored", "--overwrite")
    assert "no output of predict" in r.error_line()
    assert mine.read_text() == "my own table\n"


def test_an_existing_target_in_a_folder_is_refused_before_any_scoring(cli, tmp_path):
    write(tmp_path / "in" / "a.csv", "text\n好\n")
    write(tmp_path / "in" / "b.csv", "text\n差\n")
    taken = write(tmp_path / "scored" / "b.csv", "mine\n")
    r = cli("--input", tmp_path / "in", "--output", tmp_path / "scored")
    assert "pass --overwrite" in r.error_line()
    assert not (tmp_path / "scored" / "a.csv").exists() and taken.read_text() == "mine\n"


def test_a_suffixless_output_that_is_a_file_is_refused(cli, tmp_path):
    write(tmp_path / "in.csv", "text\n好\n")
    existing = write(tmp_path / "scored", "a file")
    r = cli("--input", tmp_path / "in.csv", "--output", existing)
    assert "is a file" in r.error_line() and existing.read_text() == "a file"


def test_a_read_only_output_folder_is_one_line(cli, tmp_path, monkeypatch):
    write(tmp_path / "in.csv", "text\n好\n")
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: the OS's answer is simulated

        def refused(path, _write):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        monkeypatch.setattr(tables, "atomic_write", refused)
    else:
        folder.chmod(0o555)
    try:
        r = cli("--input", tmp_path / "in.csv", "--output", folder / "o.csv")
    finally:
        folder.chmod(0o755)
    assert re.search("cannot write|permission denied", r.error_line())
    assert not (folder / "o.csv").exists()


def posts(tmp_path: Path, n: int = 40) -> Path:
    rows = "".join(f"{i:04d},{'好棒差坏乐'[i % 5] * (1 + i % 7)}\n" for i in range(n))
    return write(tmp_path / "posts.csv", "id,text\n" + rows)


def test_a_full_disk_is_one_line_and_resume_finishes_it(cli, tmp_path, monkeypatch):
    src = posts(tmp_path)
    whole, out = tmp_path / "whole.csv", tmp_path / "out.csv"
    assert cli("--input", src, "--output", whole, "--chunk-rows", "4").code == 0
    real, calls = tables.write_part, []

    def fills_up(path, *a):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, *a)

    monkeypatch.setattr(tables, "write_part", fills_up)
    r = cli("--input", src, "--output", out, "--chunk-rows", "4")
    assert "disk full" in r.error_line() and not out.exists()
    monkeypatch.setattr(tables, "write_part", real)
    r = cli("--input", src, "--output", out, "--chunk-rows", "4", "--resume")
    assert "40 rows" in r.summary() and out.read_bytes() == whole.read_bytes()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def interrupted(cli, src: Path, out: Path, monkeypatch, after: int = 3) -> None:
    real, calls = bulk.write_json, []

    def dies(*args):
        calls.append(1)
        if len(calls) > after:
            raise Killed
        real(*args)

    monkeypatch.setattr(bulk, "write_json", dies)
    with pytest.raises(Killed):
        cli("--input", src, "--output", out, "--chunk-rows", "4")
    monkeypatch.setattr(bulk, "write_json", real)


def test_kill_then_resume_gives_the_same_bytes(cli, tmp_path, monkeypatch):
    src = posts(tmp_path)
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out.jsonl"
    assert cli("--input", src, "--output", whole, "--chunk-rows", "4").code == 0
    interrupted(cli, src, out, monkeypatch)
    assert "--resume continues it" in cli("--input", src, "--output", out).error_line()
    r = cli("--input", src, "--output", out, "--chunk-rows", "4", "--resume")
    assert r.summary().startswith("40 rows") and out.read_bytes() == whole.read_bytes()


def test_resume_with_removed_parts_is_one_line_never_a_short_output(cli, tmp_path, monkeypatch):
    src = posts(tmp_path)
    out = tmp_path / "out.csv"
    interrupted(cli, src, out, monkeypatch)
    partial = out.with_name("out.csv.partial")
    (partial / "part-000001.csv").unlink()
    r = cli("--input", src, "--output", out, "--chunk-rows", "4", "--resume")
    assert "part-000001.csv" in r.error_line() and not out.exists()
    r = cli("--input", src, "--output", out, "--chunk-rows", "4", "--overwrite")
    assert len(read_output(out)[1]) == 40


def test_resume_without_its_progress_file_starts_over_correctly(cli, tmp_path, monkeypatch):
    src = posts(tmp_path)
    out = tmp_path / "out.csv"
    interrupted(cli, src, out, monkeypatch)
    (out.with_name("out.csv.partial") / "progress.json").unlink()
    r = cli("--input", src, "--output", out, "--chunk-rows", "4", "--resume")
    assert r.summary().startswith("40 rows")
    assert [x["id"] for x in read_output(out)[1]] == [f"{i:04d}" for i in range(40)]


def test_resume_after_the_input_changed_is_refused(cli, tmp_path, monkeypatch):
    src = posts(tmp_path)
    out = tmp_path / "out.csv"
    interrupted(cli, src, out, monkeypatch)
    with open(src, "a", encoding="utf-8") as f:
        f.write("9999,新的\n")
    r = cli("--input", src, "--output", out, "--chunk-rows", "4", "--resume")
    assert "started with other input files" in r.error_line()


def test_the_input_as_its_own_output_is_refused(cli, tmp_path):
    src = write(tmp_path / "in.csv", "text\n好\n")
    assert "is the input file" in cli("--input", src, "--output", src).error_line()
    assert src.read_text(encoding="utf-8") == "text\n好\n"


def test_one_bad_shard_in_a_folder_stops_before_any_output(cli, tmp_path):
    write(tmp_path / "in" / "a.csv", "text\n好\n")
    write(tmp_path / "in" / "b.csv", "text,text\nx,y\n")
    r = cli("--input", tmp_path / "in", "--output", tmp_path / "scored")
    assert "twice" in r.error_line() and not (tmp_path / "scored").exists()


def test_rows_on_stdout_survive_a_lone_surrogate(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "\\ud800"}\n{"text": "ok"}\n')
    r = cli("--input", src, "--json")
    rows = [json.loads(line) for line in r.out.split("\n") if line]
    assert r.summary().startswith("2 rows") and [x["text"] for x in rows] == ["\ud800", "ok"]


# ---------------------------------------------------------------- the real console script
@pytest.mark.parametrize(
    "name, data, message",
    [
        ("in.parquet", GOOD_PARQUET[:-40], "not a readable Parquet"),
        ("in.csv", b"PK\x03\x04" + bytes(100), "zip archive"),
        ("in.csv", b"id,text,text\n1,a,b\n", "twice"),
    ],
    ids=["corrupt-parquet", "xlsx-named-csv", "duplicate-header"],
)
def test_the_console_script_says_one_line_and_exits_2(trained_runs, tmp_path, name, data, message):
    src = tmp_path / name
    src.write_bytes(data)
    env = {**os.environ, "WEIBO_SENTI_ENGINE": "torch", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "weibo_senti.cli", "predict", str(trained_runs["lora"])]
    args += ["--input", str(src), "--output", str(tmp_path / "o.csv"), "--precision", "fp32"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
