"""Reading labelled and unlabelled text files (CSV, TSV, JSONL, TXT) robustly, and splitting them."""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import labels as label_sets
from .errors import UserError

log = logging.getLogger("weibo_senti")

LABELS = label_sets.BINARY  # the default task; a run's own are in run.json
LABELS_ZH = label_sets.BINARY_ZH
EMOTICON = re.compile(r"\[[^\[\]]{1,8}\]")


def strip_emoticons(text: str) -> str:
    """Remove Weibo emoticon codes such as [哈哈] and Unicode emoji (``emoji``'s list):
    weibo_senti_100k's labels were derived from them."""
    import emoji

    return emoji.replace_emoji(EMOTICON.sub("", text), replace="")


@dataclass
class Examples:
    texts: list[str]
    labels: list[int] | None
    source: str = ""
    # read_texts: every input column in file order, text column included, values as read
    columns: dict[str, list] = field(default_factory=dict)
    rows_read: int = 0  # data rows in the file; = len(texts) + what was skipped
    skipped: dict[str, list[int]] = field(default_factory=dict)  # reason -> line numbers
    names: list[str] | None = None  # label names; labels[i] is an index into them
    weights: list[float] | None = None  # per row: its file's --data-weights (None: all 1)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> Examples:
        labels = None if self.labels is None else [self.labels[i] for i in idx]
        columns = {k: [v[i] for i in idx] for k, v in self.columns.items()}
        texts = [self.texts[i] for i in idx]
        weights = None if self.weights is None else [self.weights[i] for i in idx]
        return Examples(texts, labels, self.source, columns, names=self.names, weights=weights)


def join(parts: list[Examples], weights: list[float] | None = None) -> Examples:
    """Labelled files read with one label set, as one set of rows, in file order; each
    row weighs its file's weight (kept only where some weight is not 1)."""
    if len(parts) == 1 and not weights:
        return parts[0]
    weighted = weights is not None and any(w != 1 for w in weights)
    per_row = [w for part, w in zip(parts, weights) for _ in part.texts] if weighted else None
    skipped: dict[str, list[int]] = {}
    for part in parts:
        for reason, lines in part.skipped.items():
            skipped[f"{reason} ({Path(part.source).name})"] = lines
    return Examples(
        [t for part in parts for t in part.texts],
        [y for part in parts for y in part.labels],
        " + ".join(part.source for part in parts),
        rows_read=sum(part.rows_read for part in parts),
        skipped=skipped,
        names=parts[0].names,
        weights=per_row,
    )


def decode(raw: bytes, path: Path, encoding: str | None = None) -> str:
    """UTF-8 (BOM or not), UTF-16 with BOM, GBK/GB18030, Big5; or exactly ``encoding``."""
    codec = detect_codec(raw, path, encoding)
    try:
        return raw.decode(codec)
    except (UnicodeDecodeError, LookupError) as e:
        raise UserError(f"{path}: cannot decode as {codec}: {e}") from None


# Files that are not text, by their first bytes: read as text they would give rows of junk.
MAGIC = {
    b"PK\x03\x04": "a zip archive (an .xlsx, .docx, ...)",
    b"\x1f\x8b": "gzip-compressed",
    b"PAR1": "a Parquet file",
    b"%PDF": "a PDF",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\xd0\xcf\x11\xe0": "an old Office file (.xls, .doc)",
    b"SQLite format 3\x00": "an SQLite database",
    b"\xfd7zXZ": "xz-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"\x7fELF": "a program",
}
UTF16_32 = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")


def detect_codec(raw: bytes, path: Path, encoding: str | None = None) -> str:
    """The codec of ``raw`` (a whole file, or its first bytes cut at a line break). A guess
    other than UTF is said in a warning naming it and --encoding; so is an ``encoding`` that
    gives text far less Chinese-looking than the guess would (mojibake)."""
    for magic, what in MAGIC.items():
        if raw.startswith(magic):
            raise UserError(f"{path} is {what}, not text: export or decompress it first")
    if encoding:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise UserError(f"{path}: unknown encoding {encoding!r}") from None
        if codec not in UTF16_32:
            _refuse_zero_bytes(raw, path)
        _warn_mojibake(raw, path, codec)
        return codec
    codec, note = _guess(raw, path)
    if note:
        log.warning("%s: %s; pass --encoding if that is wrong", path, note)
    return codec


def _guess(raw: bytes, path: Path) -> tuple[str, str | None]:
    """(codec, a note when the guess is not plain UTF-8/UTF-16 with a BOM)."""
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32", None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", None
    utf16 = _utf16_without_bom(raw)
    if utf16:
        return utf16, f"read as {utf16.upper()} (no BOM; guessed from its zero bytes)"
    _refuse_zero_bytes(raw, path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if _gbk_posing_as_utf8(raw):
            return "gb18030", "read as GBK (it is also valid UTF-8, as nonsense)"
        return ("utf-8-sig" if raw.startswith(codecs.BOM_UTF8) else "utf-8"), None
    found = _chinese_legacy(raw)
    if found is not None:
        return found
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None:
        raise UserError(f"{path}: unknown text encoding; pass --encoding (e.g. utf-8, gbk)")
    return best.encoding, f"decoded as {best.encoding} (guessed)"


def _utf16_without_bom(raw: bytes) -> str | None:
    """UTF-16 without a BOM: ASCII (commas, line breaks, digits) leaves a zero byte beside
    every character, on one side only; read as UTF-8 or GBK it would be mojibake with NULs."""
    sample = raw[:4096]
    half = len(sample) // 2
    if half < 2:
        return None
    even, odd = sample[0::2].count(0) / half, sample[1::2].count(0) / half
    if odd >= 0.3 and even < 0.01:
        codec = "utf-16-le"
    elif even >= 0.3 and odd < 0.01:
        codec = "utf-16-be"
    else:
        return None
    try:
        text = raw[: len(raw) - len(raw) % 2].decode(codec)
    except UnicodeDecodeError:
        return None
    controls = sum(c < " " and c not in "\t\n\r\f" for c in text[:2048])
    return codec if controls <= min(len(text), 2048) // 20 else None  # else binary


CONTROL = bytes([*range(0, 9), *range(14, 32), 127])  # no text holds many (tab, CR, LF: fine)


def _refuse_zero_bytes(raw: bytes, path: Path) -> None:
    """Text has few control bytes (a stray NUL in a post is kept); many mean a binary file.
    No GBK, Big5 or UTF-8 character has a byte below 0x20 inside it."""
    zeros = raw.count(0)
    controls = len(raw) - len(raw.translate(None, CONTROL))
    if zeros > max(8, len(raw) // 100) or controls > max(8, len(raw) // 20):
        raise UserError(
            f"{path} holds binary data ({controls} control bytes, {zeros} of them zero, in its "
            f"first {len(raw)}), not text: another format renamed? (UTF-16/32: pass --encoding)"
        )


def _warn_mojibake(raw: bytes, path: Path, codec: str) -> None:
    """An explicit --encoding is obeyed; if the guess reads far more like Chinese, say so."""
    try:
        text = raw.decode(codec)
        guess, _ = _guess(raw, path)
        other = raw.decode(guess)
    except (UnicodeDecodeError, LookupError, UserError):
        return  # not decodable as asked (decode() says so), or no guess to compare with
    if codecs.lookup(guess).name == codec or other == text:
        return
    mine, theirs = _chinese_share(text), _chinese_share(other)
    if theirs >= 0.8 and mine < 0.5:
        log.warning(
            "%s: as --encoding %s, %.0f%% of its Chinese characters are common ones (%.0f%% "
            "as %s): the text is likely mojibake; check --encoding",
            path,
            codec,
            100 * mine,
            100 * theirs,
            guess,
        )


def _chinese_share(text: str) -> float:
    """Share of common characters in the text's Han ones (0: no Han at all)."""
    return max(_common_share(text, "gb2312", 0xB0, 0xD7), _common_share(text, "big5", 0xA4, 0xC6))


def _common_share(text: str, encoding: str, first: int, last: int) -> float:
    """Share of the Han characters that are in ``encoding``'s frequent-character block (lead
    bytes first..last): high for text decoded with its own codec, low for mojibake."""
    han = [c for c in text[:20000] if "\u4e00" <= c <= "\u9fff"]
    if not han:
        return 0.0
    hits = 0
    for c in han:
        try:
            hits += first <= c.encode(encoding)[0] <= last
        except UnicodeEncodeError:
            pass
    return hits / len(han)


def _gbk_posing_as_utf8(raw: bytes) -> bool:
    """Short GBK text can be valid UTF-8 (微 = CE A2 = U+03A2): when UTF-8 gives only
    characters below U+0800 (Greek, Cyrillic, ... no Chinese) and GB18030 gives common Chinese
    ones, the file is GBK."""
    text = raw.decode("utf-8-sig")
    non_ascii = [c for c in text if ord(c) > 127]
    if not non_ascii or max(map(ord, non_ascii)) > 0x7FF:
        return False
    try:
        gbk = raw.decode("gb18030")
    except UnicodeDecodeError:
        return False
    return _common_share(gbk, "gb2312", 0xB0, 0xD7) >= 0.8


def _chinese_legacy(raw: bytes) -> tuple[str, str] | None:  # (codec, note)
    """GB18030 (GBK) or Big5: Big5 bytes often decode as GB18030 without an error, into
    nonsense. Both decodings are judged by how many of their characters are common ones
    (GB2312 level 1, Big5 frequent block)."""
    decoded = {}
    for enc in ("gb18030", "big5"):
        try:
            decoded[enc] = raw.decode(enc)
        except UnicodeDecodeError:
            pass
    if not decoded:
        return None
    gb = _common_share(decoded["gb18030"], "gb2312", 0xB0, 0xD7) if "gb18030" in decoded else 0
    big5 = _common_share(decoded["big5"], "big5", 0xA4, 0xC6) if "big5" in decoded else 0
    if "gb18030" not in decoded or big5 > gb:
        return "big5", (
            f"read as Big5 (traditional Chinese; {100 * big5:.0f}% common characters against "
            f"{100 * gb:.0f}% as GBK{'' if 'gb18030' in decoded else ', which cannot decode it'})"
        )
    return "gb18030", "read as GB18030/GBK (detected: the file is not UTF-8)"


def is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".json", ".ndjson")


class Blank:
    """A line holding nothing but whitespace in a CSV/TSV/JSONL file: not a row; counted."""


BLANK = Blank()


class DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    """json.loads keeps the last of two equal keys: one value would be lost without a word."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) < len(keys):
        raise DuplicateKey(next(k for k in keys if keys.count(k) > 1))
    return dict(pairs)


def _rows(stream, path: Path, quiet: bool = False):
    """Yield (line number, dict, or None if unparsable, or BLANK) from a text stream of
    CSV/TSV/JSONL; for CSV/TSV first (0, header). The stream splits lines as the format does:
    csv's own rules (\r\n, \r, \n; newline="") or, for JSONL, \n alone (newline="\n"):
    str.splitlines would also split on U+2028, \x1c, \x85, ... which csv does not quote and
    JSON strings may hold."""
    if is_jsonl(path):
        for n, line in enumerate(stream, start=1):
            if not line.strip():
                yield n, BLANK
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_unique_keys)
            except DuplicateKey as e:
                raise UserError(
                    f"{path} line {n}: key {e.args[0]!r} appears twice in one object (one value "
                    "would be lost); keep one"
                ) from None
            except json.JSONDecodeError:
                obj = None
            yield n, obj if isinstance(obj, dict) else None
        return
    lines = _Lines(stream)
    first = lines.upcoming or ""
    delimiter = (
        "\t" if path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first) else ","
    )
    yield from _csv_rows(lines, path, delimiter, quiet)


class _Lines:
    """Lines of a stream with one of look-ahead (is this the last?) and the current row's lines."""

    def __init__(self, stream):
        self._it = iter(stream)
        self.upcoming = next(self._it, None)
        self.line_count = 0
        self.row_lines: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.upcoming is None:
            raise StopIteration
        line, self.upcoming = self.upcoming, next(self._it, None)
        self.line_count += 1
        self.row_lines.append(line)
        return line


def _next_row(reader):
    # csv's field limit is process-wide: raised only inside this call (huge texts are cut at
    # tokenization), then restored, so no other code sees it changed.
    limit = csv.field_size_limit(2**31 - 1)
    try:
        return next(reader)
    finally:
        csv.field_size_limit(limit)


class RaggedRow(dict):
    """A CSV row with more or fewer cells than the header: not read as a text (which cell
    would it be?), but its cells, matched to the header from the left, are kept."""


def _csv_rows(lines: _Lines, path: Path, delimiter: str, quiet: bool = False):
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = [h.strip() for h in _next_row(reader)]
    except StopIteration:
        raise UserError(f"{path} is empty") from None
    _check_header(header, path)
    yield 0, header  # the header, so callers can name missing columns
    start = reader.line_num + 1
    spanning = []  # rows whose quoted text runs over several lines
    while True:
        lines.row_lines = []
        try:
            row = _next_row(reader)
        except StopIteration:
            break
        except csv.Error:
            row = None
        if reader.line_num > start:
            spanning.append(start)
            if lines.upcoming is None:
                _check_closed(lines.row_lines, path, start, delimiter)
        if row is not None and _is_blank("".join(lines.row_lines), len(header)):
            yield start, BLANK
        elif row is None:
            yield start, None
        elif len(row) == len(header):
            yield start, dict(zip(header, row))
        else:  # unparsable, but its cells are kept for the output (predict --input)
            yield start, RaggedRow(zip(header, row))
        start = reader.line_num + 1
    if spanning and not quiet:
        log.warning(
            "%s: %d rows have line breaks inside quotes, each read as one text (lines %s); "
            "if that is wrong, a quote is unbalanced there",
            path,
            len(spanning),
            ", ".join(map(str, spanning[:5])),
        )


def _is_blank(line: str, columns: int) -> bool:
    """An empty line; or, with several columns, one of only spaces (no delimiter: not a row).
    In a one-column file spaces are a row whose text is blank (csv.writer writes it so)."""
    return not line.strip("\r\n") or (columns > 1 and not line.strip())


def _check_header(header: list[str], path: Path) -> None:
    """Two columns of one name would collapse into one (each row keeps one value): refuse."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name in seen:
            what = f"column {name!r}" if name else "an unnamed column"
            raise UserError(
                f"{path}: the header has {what} twice (columns {seen[name]} and {i}): one would "
                "be lost; rename one"
            )
        seen[name] = i


def _check_closed(tail: list[str], path: Path, line: int, delimiter: str) -> None:
    """A quote that never closes swallows the rest of the file into one text: refuse."""
    try:
        list(csv.reader(tail, delimiter=delimiter, strict=True))
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise UserError(
                f"{path}: the quote opened on line {line} never closes, so lines {line}-"
                f"{line + len(tail) - 1} ({len(tail)} lines) would be one text; fix the quoting"
            ) from None


def _parse_label(value) -> int | None:
    """0 or 1 for a binary label cell, else None (how a labels column is told from texts)."""
    key = label_sets.cell_key(value)
    return int(key) if key in ("0", "1") else None


def require_file(path: Path, what: str = "data file") -> None:
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file")
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_file():  # a pipe or a device: read more than once, or forever
        raise UserError(f"{what} {path} is not a regular file (a pipe or a device): save it first")


def _records(path: Path, encoding: str | None) -> tuple[list[str] | None, list]:
    """(header or None for JSONL, [(line number, record or None if unparsable)])."""
    path = Path(path)
    require_file(path)
    text = decode(path.read_bytes(), path, encoding)
    stream = io.StringIO(text, newline="\n" if is_jsonl(path) else "")
    header, records, blank = None, [], []
    for n, rec in _rows(stream, path):
        if n == 0:
            header = rec
        elif rec is BLANK:  # not a row, but said
            blank.append(n)
        else:
            records.append((n, rec))
    if blank:
        lines = ", ".join(map(str, blank[:5]))
        log.warning("%s: %d blank lines skipped (lines %s)", path, len(blank), lines)
    return header, records


SNIFF_BYTES = 1 << 16  # what a streamed file's encoding is judged on


def stream_codec(path: Path, encoding: str | None) -> str:
    """The codec of a file too large to read at once, judged on its first lines."""
    require_file(path, "input file")
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        if len(head) == SNIFF_BYTES and b"\n" in head:  # no character cut in half
            head = head[: head.rindex(b"\n") + 1]
    if not head:
        raise UserError(f"{path} is empty")
    return detect_codec(head, path, encoding)


def stream_records(
    path: Path, codec: str, text_lines: bool = False, quiet: bool = False, binary=None
):
    """Like _records, lazily: (0, header) first for CSV/TSV, then (line number, record or
    None or BLANK). ``text_lines``: a .txt file, each line a record {"text": line}.
    ``binary``: read this open binary stream instead of opening ``path`` (a Ray worker's)."""
    # .txt: universal newlines, as read_texts splits them; JSONL: \n alone; CSV: csv's rules
    newline = None if text_lines else "\n" if is_jsonl(path) else ""
    if binary is None:
        stream = open(path, encoding=codec, newline=newline, errors="strict")
    else:
        stream = io.TextIOWrapper(binary, encoding=codec, newline=newline, errors="strict")
    with stream:
        try:
            if text_lines:
                for n, line in enumerate(stream, start=1):
                    yield n, {"text": line.rstrip("\r\n")}
            else:
                yield from _rows(stream, path, quiet)
        except UnicodeDecodeError as e:
            raise UserError(
                f"{path}: holds bytes that are not {codec} ({e.reason}); pass the file's "
                "encoding with --encoding"
            ) from None


def read_labelled(
    path: str | Path,
    text_column: str = "review",
    label_column: str = "label",
    encoding: str | None = None,
    labels: list[str] | None = None,
    label_map: dict[str, str | None] | None = None,
    labels_from: str = "--labels",
    any_text_column: bool = False,
) -> Examples:
    """Read a labelled file; bad rows are counted, skipped and reported, never silently lost.

    ``labels``: the names, in order (a run's, or ``--labels``); a row with another label is
    refused, naming it. Without them the names come from the file (``labels.infer_names``).
    ``label_map`` renames label cells, or drops their rows, first. ``any_text_column``: a
    table without ``text_column`` is read from its review, text or content column (said).
    """
    path = Path(path)
    bad: dict[str, list[int]] = {"unparsable": [], "empty text": [], "not text": []}
    bad["empty label"] = []
    rows, total = _labelled_rows(path, text_column, label_column, encoding, bad, any_text_column)
    if label_map:
        rows = _apply_label_map(path, rows, label_map, labels, bad)
    counts = Counter(key for _, _, key in rows)
    if labels:
        names = list(labels)
    elif label_sets.stray_binary(counts):
        names = list(label_sets.BINARY)
    else:
        names = label_sets.infer_names(counts) if counts else None
    if names == label_sets.BINARY and label_sets.stray_binary(counts):
        rows = _skip_stray(path, rows, bad)  # a few junk labels in a 0/1 file, as always
    elif names:
        _refuse_outside(path, rows, label_sets.LabelReader(names), labels_from)
    if not rows:
        raise UserError(f"{path}: no usable rows ({_describe(bad, total)})")
    reader = label_sets.LabelReader(names)
    _warn_bad(path, bad, total)
    skipped = {reason: lines for reason, lines in bad.items() if lines}
    return Examples(
        [text for _, text, _ in rows],
        [reader.class_id(key) for _, _, key in rows],
        str(path),
        rows_read=total,
        skipped=skipped,
        names=names,
    )


def _labelled_rows(
    path: Path, text_column: str, label_column: str, encoding, bad, any_text_column: bool = False
) -> tuple:
    """([(line, text, label key)], rows read): rows without text or label go to ``bad``."""
    header, records = _records(path, encoding)
    if header is not None and any_text_column and text_column not in header:
        text_column = _other_text_column(path, header, text_column)
    if header is not None:
        _require_columns(path, header, [text_column, label_column])
    rows = []
    for n, rec in records:
        if rec is None or isinstance(rec, RaggedRow):
            bad["unparsable"].append(n)
            continue
        if text_column not in rec or label_column not in rec:
            bad["unparsable"].append(n)
            continue
        text, key = rec[text_column], label_sets.cell_key(rec[label_column])
        if text is not None and not isinstance(text, str):  # an object, list, number: no repr
            bad["not text"].append(n)
        elif not text or not text.strip():
            bad["empty text"].append(n)
        elif key is None:
            bad["empty label"].append(n)
        else:
            rows.append((n, text.strip(), key))
    return rows, len(records)


def _other_text_column(path: Path, header: list[str], wanted: str) -> str:
    """The one review/text/content column of a file without ``wanted`` (said); two is refused."""
    found = [c for c in ("review", "text", "content") if c in header]
    if len(found) != 1:
        raise UserError(
            f"{path}: no column '{wanted}' (columns: {', '.join(header)}); name the column "
            f"to train on '{wanted}', as in the first --data file"
        )
    log.info("%s: no column '%s'; its posts are read from '%s'", path, wanted, found[0])
    return found[0]


def _apply_label_map(path: Path, rows: list, label_map: dict, labels, bad) -> list:
    reader = label_sets.LabelReader(labels or [], label_map)
    kept, bad["dropped by --label-map"] = [], []
    for n, text, key in rows:
        known, name = reader.mapped(key)
        if not known:
            raise UserError(
                f"{path} line {n}: label {key!r} is not in --label-map "
                f"({', '.join(label_map)}): map it, or drop its rows with {key}="
            )
        if name is None:
            bad["dropped by --label-map"].append(n)
        else:
            kept.append((n, text, name))
    return kept


def _skip_stray(path: Path, rows: list, bad) -> list:
    bad["label not 0/1"] = [n for n, _, key in rows if key not in ("0", "1")]
    others = sorted({key for _, _, key in rows if key not in ("0", "1")})
    log.warning(
        "%s: a 0/1 file with %d rows of other labels (%s): they are skipped; to train them as "
        "labels of their own, name every label with --labels",
        path, len(bad["label not 0/1"]), ", ".join(others[:5]),
    )  # fmt: skip
    return [row for row in rows if row[2] in ("0", "1")]


def _refuse_outside(path: Path, rows: list, reader, labels_from: str) -> None:
    for n, _, key in rows:
        if reader.class_id(key) is None:
            others = Counter(k for _, _, k in rows if reader.class_id(k) is None)
            raise UserError(
                f"{path} line {n}: label {key!r} is not one of {labels_from}: "
                f"{reader.describe()} ({sum(others.values())} such rows; "
                f"values: {', '.join(list(others)[:5])}); map them with --label-map"
            )


def read_texts(
    path: str | Path, text_column: str = "review", encoding: str | None = None
) -> Examples:
    """Read texts to predict: .txt (one per line) or a table; every row is kept, in order."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        require_file(path, "input file")
        text = decode(path.read_bytes(), path, encoding)
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the last line's newline ends it; it does not start another
        if not lines:
            raise UserError(f"{path} is empty")
        return Examples(lines, None, str(path), {"text": lines}, rows_read=len(lines))
    header, records = _records(path, encoding)
    # JSONL has no header: every key any row has, in order of first appearance
    columns = header or list(dict.fromkeys(k for _, r in records if r for k in r)) or [text_column]
    column = pick_text_column(columns, text_column, path, strict=False)
    values = [r.get(column) for _, r in records if r is not None]
    if column == "label" or (values and all(_parse_label(v) is not None for v in values)):
        raise UserError(
            f"{path}: column '{column}' holds labels (0/1), not texts; give the text column "
            "with --text-column"
        )
    kept = {c: [] for c in columns}
    texts, bad = [], []
    for n, rec in records:
        ok = isinstance(rec, dict) and not isinstance(rec, RaggedRow)
        ok = ok and isinstance(rec.get(column), str)
        texts.append(rec[column] if ok else "")
        if not ok:
            bad.append(n)
        for c in kept:
            kept[c].append(None if rec is None else rec.get(c))
    if bad:
        log.warning(
            "%s: %d unparsable or non-text rows kept as empty texts (lines %s)",
            path,
            len(bad),
            ", ".join(map(str, bad[:5])),
        )
    return Examples(texts, None, str(path), kept, rows_read=len(records))


def pick_text_column(columns: list[str], wanted: str | None, source, strict: bool = True) -> str:
    """The column asked for, else review, text, content or the only column. ``strict``: a
    column asked for must exist (never swapped for another)."""
    if wanted in columns:
        return wanted
    if wanted is not None and strict:
        raise UserError(
            f"{source}: no column '{wanted}' (columns: {', '.join(columns)}); use --text-column"
        )
    for alt in ("review", "text", "content"):
        if alt in columns:
            return alt
    if len(columns) == 1:
        return columns[0]
    raise UserError(
        f"{source}: no column '{wanted or 'review'}' (columns: {', '.join(columns)}); "
        "use --text-column"
    )


def _require_columns(path: Path, header: list[str], needed: list[str]) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        raise UserError(
            f"{path}: missing column {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(header)}); use --text-column / --label-column"
        )


def _describe(bad: dict[str, list[int]], total: int) -> str:
    parts = [f"{k}: {len(v)}" for k, v in bad.items() if v]
    return f"{total} rows read; " + (", ".join(parts) if parts else "none usable")


def _warn_bad(path: Path, bad: dict[str, list[int]], total: int) -> None:
    lines = sorted(n for v in bad.values() for n in v)
    if lines:
        log.warning(
            "%s: skipped %d of %d rows (%s); first at lines %s",
            path,
            len(lines),
            total,
            ", ".join(f"{k}: {len(v)}" for k, v in bad.items() if v),
            ", ".join(map(str, lines[:5])),
        )


def split_dev(examples: Examples, dev_fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Stratified, seeded split: every class keeps its share in both parts. A class of one row
    cannot be in both and is refused; a dev part smaller than the number of classes is drawn
    at random (and said)."""
    from sklearn.model_selection import train_test_split

    idx = list(range(len(examples)))
    counts = Counter(examples.labels)
    n_dev = max(1, round(dev_fraction * len(idx)))
    if len(idx) - n_dev < 1:
        raise UserError(f"{examples.source}: {len(idx)} rows are too few to split off a dev set")
    names = examples.names or LABELS
    lone = [names[c] for c, n in sorted(counts.items()) if n < 2]
    if lone:
        raise UserError(
            f"{examples.source}: class {', '.join(lone)} has 1 row, too few for the dev split "
            "(each class needs 2: one to train on, one to check): add rows, give --dev-data, "
            "or drop it with --label-map NAME="
        )
    stratify = examples.labels if n_dev >= len(counts) else None
    if stratify is None:
        log.warning(
            "%s: a dev split of %d rows cannot hold all %d classes: drawn at random",
            examples.source, n_dev, len(counts),
        )  # fmt: skip
    train_idx, dev_idx = train_test_split(
        idx, test_size=n_dev, random_state=seed, stratify=stratify
    )
    return examples.subset(sorted(train_idx)), examples.subset(sorted(dev_idx))
