"""Prediction output files (CSV, TSV, JSONL, Parquet), Parquet input, and batches of columns.

CSV and JSONL are written with the standard library (every value as read: CSV cells stay
strings, JSONL keys and values stay what they were); Parquet with pyarrow, keeping an input
Parquet's schema. Bulk scoring writes parts and joins them here; one module owns the formats.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from .data import _next_row
from .errors import UserError
from .files import atomic_write

OUTPUT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".ndjson", ".parquet")
# A lone surrogate (valid in JSON, "\ud800") has no UTF-8: written as the escape \ud800, which
# in a JSONL string reads back as the same value (in a CSV cell: as those six characters).
UNENCODABLE = "backslashreplace"


def kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return {".tsv": "tsv", ".txt": "txt", ".parquet": "parquet"}.get(suffix, "csv")


def output_kind(path: Path) -> str:
    if path.suffix.lower() not in OUTPUT_SUFFIXES:  # kind() reads any other suffix as CSV
        raise UserError(f"--output must end in .csv, .tsv, .jsonl or .parquet, not {path.name}")
    return kind(path)


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("Parquet needs pyarrow: pip install 'weibo-senti[parquet]'") from None
    return pa, pq


# ---------------------------------------------------------------- Parquet input
def parquet_schema(path: Path):
    """(schema, rows) of a Parquet input, after reading every page once: a corrupt file is
    one line now, not a failure halfway through scoring."""
    pa, pq = _pyarrow()
    try:
        f = pq.ParquetFile(path)
        for _ in f.iter_batches(batch_size=65536):
            pass
        schema, rows = f.schema_arrow, f.metadata.num_rows
    except (pa.ArrowException, OSError) as e:  # pyarrow raises some as OSError
        raise _unreadable(path, e) from None
    names = list(schema.names)
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:  # rows as dicts would keep one of the two values
        raise UserError(f"{path}: the schema has column {dup!r} twice: one would be lost")
    return schema, rows


def _unreadable(path: Path, e: Exception) -> UserError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return UserError(f"{path} is not a readable Parquet file ({first[:200]})")


def parquet_rows(path: Path, skip: int = 0, batch_rows: int = 4096) -> Iterator[dict]:
    """Rows as dicts; whole row groups before ``skip`` are not even read."""
    pa, pq = _pyarrow()
    try:
        f = pq.ParquetFile(path)
        groups, start = [], 0
        for g in range(f.num_row_groups):
            n = f.metadata.row_group(g).num_rows
            if start + n > skip:
                groups.append(g)
            else:
                start += n
        skip -= start
        for batch in f.iter_batches(batch_size=batch_rows, row_groups=groups):
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            yield from batch.slice(skip).to_pylist()
            skip = 0
    except (pa.ArrowException, OSError) as e:  # changed since the scan read it
        raise _unreadable(path, e) from None


def prediction_fields(added: list[str]):
    """Arrow types of bulk.Predictor's columns, by their names' endings (any --prefix)."""
    pa, _ = _pyarrow()
    out = []
    for name in added:
        if name.endswith(("label", "label_zh", "adapter")):
            out.append(pa.field(name, pa.string()))
        elif name.endswith("truncated"):
            out.append(pa.field(name, pa.bool_()))
        else:  # score, p_<label>
            out.append(pa.field(name, pa.float64()))
    return out


def output_schema(input_schema, columns: list[str], added: list[str], input_kind: str):
    """An input Parquet's schema, or strings for CSV/TSV/TXT columns; None for JSONL (the
    first part decides)."""
    pa, _ = _pyarrow()
    if input_kind == "jsonl":
        return None
    base = (
        list(input_schema)
        if input_schema is not None
        else [pa.field(c, pa.string()) for c in columns]
    )
    return pa.schema(base + prediction_fields(added))


def count_rows(path: Path) -> int:
    """Rows of an output file this module wrote."""
    out_kind = output_kind(path)
    if out_kind == "parquet":
        _, pq = _pyarrow()
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, encoding="utf-8", newline="", errors="replace") as f:
        if out_kind == "jsonl":
            return sum(1 for line in f if line.strip())
        reader = csv.reader(f, delimiter="\t" if out_kind == "tsv" else ",")
        rows = 0
        while True:
            try:
                _next_row(reader)  # a huge text is a field over csv's default limit
            except StopIteration:
                return max(0, rows - 1)
            rows += 1


def holds_columns(path: Path, names: list[str]) -> bool:
    """Does this output file's header (CSV/TSV, the first JSONL row, the Parquet schema)
    hold every one of ``names``? False for anything unreadable."""
    try:
        out_kind = output_kind(path)
        if out_kind == "parquet":
            _, pq = _pyarrow()
            header = pq.read_schema(path).names
        else:
            with open(path, encoding="utf-8", newline="") as f:
                if out_kind == "jsonl":
                    header = list(json.loads(f.readline()))
                else:
                    header = next(csv.reader(f, delimiter="\t" if out_kind == "tsv" else ","))
    except Exception:  # whatever fails to read is no output of ours
        return False
    return set(names) <= set(header)


# ---------------------------------------------------------------- writing
def write_rows(stream, rows: Iterable[dict], header: list[str], out_kind: str) -> None:
    """CSV/TSV (no header line) or JSONL rows onto a text stream."""
    if out_kind == "jsonl":
        for r in rows:
            stream.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        return
    writer = csv.DictWriter(stream, fieldnames=header, delimiter="\t" if out_kind == "tsv" else ",")
    writer.writerows(map(_cells, rows))


def _cells(row: dict) -> dict:
    """JSON objects and lists (from JSONL or Parquet) as JSON in a CSV cell, not Python's repr."""
    return {
        k: json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else v
        for k, v in row.items()
    }


def header_line(header: list[str], out_kind: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t" if out_kind == "tsv" else ",").writerow(header)
    return buf.getvalue()


def write_part(path: Path, rows: list[dict], header: list[str], out_kind: str, schema) -> None:
    """One committed chunk of the output, written atomically."""
    if out_kind == "parquet":
        _, pq = _pyarrow()
        table = rows_table(rows, schema)
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        return

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="", errors=UNENCODABLE) as f:
            write_rows(f, rows, header, out_kind)

    atomic_write(path, write)


def write_table(path: Path, rows: list[dict], header: list[str]) -> None:
    """A whole small table (e.g. posts to label) in the format its suffix names, atomically."""
    out_kind = output_kind(path)
    if out_kind != "parquet":
        head = header_line(header, out_kind) if out_kind != "jsonl" else ""

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8", newline="", errors=UNENCODABLE) as f:
                f.write(head)
                write_rows(f, ({c: r.get(c) for c in header} for r in rows), header, out_kind)

        atomic_write(path, write)
        return
    _, pq = _pyarrow()
    table = rows_table([{c: r.get(c) for c in header} for r in rows], None)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def rows_table(rows: list[dict], schema):
    """Rows as an Arrow table of ``schema`` (None: inferred from these rows)."""
    pa, _ = _pyarrow()
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError) as e:  # a lone surrogate
        first = str(e).splitlines()[0][:200]
        raise UserError(f"cannot write these rows to Parquet ({first}); write .jsonl") from None


def part_schema(path: Path):
    _, pq = _pyarrow()
    return pq.read_schema(path)


def join_parts(parts: list[Path], output: Path, header: list[str], out_kind: str) -> None:
    """The final output from its parts, in order, under its name in one rename."""

    def write(tmp: Path) -> None:
        if out_kind == "parquet":
            _, pq = _pyarrow()
            schema = pq.read_schema(parts[0]) if parts else None
            if schema is None:
                pa, _ = _pyarrow()
                schema = pa.schema([pa.field(c, pa.string()) for c in header])
            with pq.ParquetWriter(tmp, schema) as writer:
                for p in parts:
                    writer.write_table(pq.read_table(p, schema=schema))
            return
        with open(tmp, "wb") as out:
            if out_kind != "jsonl":
                out.write(header_line(header, out_kind).encode("utf-8"))
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out)

    atomic_write(output, write)


# ---------------------------------------------------------------- batches (Ray Data, pandas)
def names(batch) -> list[str]:
    if hasattr(batch, "column_names"):  # pyarrow Table / RecordBatch
        return list(batch.column_names)
    return list(batch.keys() if isinstance(batch, dict) else batch.columns)


def column(batch, name: str) -> list:
    if name not in names(batch):
        raise UserError(f"the batch has no column {name!r} (columns: {', '.join(names(batch))})")
    col = batch[name]
    return col.to_pylist() if hasattr(col, "to_pylist") else list(col)


def add_columns(batch, added: dict[str, list]):
    """The batch, of the type it came in, with ``added`` after its own columns."""
    if hasattr(batch, "append_column"):  # pyarrow Table
        pa, _ = _pyarrow()
        for field_, values in zip(prediction_fields(list(added)), added.values()):
            batch = batch.append_column(field_, pa.array(values, type=field_.type))
        return batch
    if isinstance(batch, dict):  # Ray's numpy batches
        import numpy as np

        out = dict(batch)
        for name, values in added.items():
            out[name] = np.array(values, dtype=object if name.endswith(("label", "zh")) else None)
        return out
    out = batch.copy()  # pandas
    for name, values in added.items():
        out[name] = values
    return out
