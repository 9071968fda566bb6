"""The Ray Data engine: the same scoring as the local engine on a pool of actors.

The driver first scans every shard as the local engine does (bulk.scan_shards: columns, row
counts, encodings, and the same refusals, before Ray starts). CSV/TSV/JSONL/TXT are then read
on the workers by data.py, row for row as the local engine reads them (ragged and unparsable
rows kept, blank lines skipped and counted), each row carried as one JSON string so no column
of the input can collide with anything of ours; ``RowScorer`` scores them with
``bulk.score_records``. Parquet is read by ``read_parquet`` and scored by ``bulk.Predictor``.
The driver streams the scored batches, in input order, into one output file with the writers
the local engine uses. Every worker needs weibo-senti, the run folder, its base and the input
files at the same paths (shared storage or the hub cache).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import bulk, tables
from .errors import UserError

READ_ROWS = 1024  # rows per block a read task yields


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'weibo-senti[ray]'") from None
    return ray


def scan(input_spec, output: Path, text_column, prefix: str, encoding) -> list[bulk.Shard]:
    """The shards, scanned in the driver with the local engine's refusals."""
    paths = bulk.find_shards(input_spec, output)
    bulk.refuse_input_as_output(output, paths)
    kinds = {"parquet" if tables.kind(p) == "parquet" else "rows" for p in paths}
    if len(kinds) > 1:
        raise UserError("--engine ray reads Parquet or text files (CSV, JSONL, TXT), not both")
    one_file = output if "rows" in kinds else Path("x.parquet")  # read_parquet: one schema

    def check_columns(columns: list[str], source: str) -> None:
        ours = ("label", "label_zh", "score", "truncated", "adapter")
        clash = [
            c for c in columns if c in {prefix + n for n in ours} or c.startswith(prefix + "p_")
        ]
        if clash:
            raise UserError(
                f"{source} already has column {clash[0]!r}: pass --prefix to name the predictions"
            )

    shards = bulk.scan_shards(paths, encoding, text_column, check_columns)
    bulk.joint_header(shards, one_file, [])  # shards into one file: the same columns
    return shards


def read_shard(batch: dict):
    """map_batches over shard descriptions: each file's rows as data.py reads them, in blocks
    of JSON-encoded rows (ASCII escapes: a lone surrogate survives Arrow's UTF-8)."""
    import pyarrow as pa

    from .data import stream_records

    for path, codec, column, txt in zip(
        batch["path"], batch["codec"], batch["column"], batch["txt"]
    ):
        block: list[bulk.Rec] = []
        for n, rec in stream_records(Path(path), str(codec), bool(txt), quiet=True):
            row = bulk.to_rec(n, rec) if n else None
            if row is not None:
                block.append(row)
            if len(block) == READ_ROWS:
                yield rows_block(block, str(column), pa)
                block = []
        if block:
            yield rows_block(block, str(column), pa)


def rows_block(recs: list[bulk.Rec], column: str, pa):
    return pa.table(
        {
            "row": [json.dumps(r.values) for r in recs],
            "line": pa.array([r.line for r in recs], pa.int64()),
            "unparsable": pa.array([r.unparsable for r in recs], pa.bool_()),
            "column": [column] * len(recs),
        }
    )


class RowScorer:
    """The map_batches callable for rows read by ``read_shard``: bulk.score_records, exactly
    the local engine's scoring; the model is loaded once per actor."""

    def __init__(self, **predictor_options):
        self.predictor = bulk.Predictor(**predictor_options)

    def __call__(self, batch):
        import pyarrow as pa

        cols = [batch.column(k).to_pylist() for k in ("row", "line", "unparsable", "column")]
        recs = [bulk.Rec(json.loads(r), n, u, c) for r, n, u, c in zip(*cols)]
        rows, status = bulk.score_records(self.predictor, recs)
        return pa.table(
            {
                "row": [json.dumps(r) for r in rows],
                "status": status,
                "line": pa.array([r.line for r in recs], pa.int64()),
            }
        )


def score(
    input_spec,
    output: Path,
    run: Path,
    *,
    text_column: str | None = "review",
    prefix: str = "pred_",
    batch_size: int | None = None,
    precision: str = "auto",
    base_model: str | None = None,
    overwrite: bool = False,
    address: str | None = None,
    workers: int = 2,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    rows_per_batch: int = 256,
    encoding: str | None = None,
) -> bulk.Summary:
    """Score ``input_spec`` into ``output`` with ``workers`` actors; returns the summary."""
    ray = require_ray()
    out_kind = tables.output_kind(output)
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    if workers < 1:
        raise UserError("--workers must be at least 1")
    t0 = time.perf_counter()
    shards = scan(input_spec, output, text_column, prefix, encoding)
    options = {
        "run": str(Path(run).resolve()),
        "text_column": shards[0].text_column,
        "prefix": prefix,
        "batch_size": batch_size,
        "precision": precision,
        "base_model": base_model,
    }
    if not sum(s.rows for s in shards):  # nothing to spread: the local engine, same output
        predictor = bulk.Predictor(**{**options, "text_column": text_column})
        return bulk.score(input_spec, output, predictor, overwrite=overwrite, encoding=encoding)
    started = not ray.is_initialized()
    if started:
        check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at {address}: {e}") from None
    try:
        resources = {"concurrency": workers, "num_gpus": gpus_per_worker or None}
        resources["num_cpus"] = cpus_per_worker or cpus_each(ray, workers)
        summary = run_dataset(ray, shards, output, out_kind, options, resources, rows_per_batch)
    finally:
        if started:
            ray.shutdown()
    bulk.add_blank_lines(summary, shards)
    summary.seconds = time.perf_counter() - t0
    summary.scored = summary.rows
    return summary


def run_dataset(ray, shards, output, out_kind, options, resources, rows_per_batch):
    """Build the dataset and write it in input order: Ray's preserve_order, for this run only.
    A Dataset copies the context when it is created, so it is set before reading."""
    ctx = ray.data.DataContext.get_current()
    before, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    try:
        parquet = shards[0].kind == "parquet"
        if parquet:
            ds = ray.data.read_parquet([str(s.path) for s in shards])
        else:
            ds = ray.data.from_items([shard_item(s) for s in shards])
            ds = ds.map_batches(read_shard, batch_size=1)
        # one file is one block: split it (streaming) so every actor gets work
        ds = ds.repartition(target_num_rows_per_block=rows_per_batch)
        scored = ds.map_batches(
            bulk.Predictor if parquet else RowScorer,
            fn_constructor_kwargs=options,
            batch_format="pyarrow",
            batch_size=rows_per_batch,
            **resources,
        )
        write = write_arrow if parquet else write_json_rows
        return one_line_errors(lambda: write(scored, output, out_kind, shards, options))
    finally:
        ctx.execution_options.preserve_order = before


def shard_item(shard: bulk.Shard) -> dict:
    """What a read task needs of a scanned shard."""
    path, txt = str(shard.path.resolve()), shard.kind == "txt"
    return {"path": path, "codec": shard.encoding, "column": shard.text_column, "txt": txt}


def check_count(summary: bulk.Summary, shards) -> None:
    """The scan counted the rows: never a short output without a word (before the rename)."""
    want = sum(s.rows for s in shards)
    if summary.rows != want:
        raise UserError(f"{summary.rows} rows came back for {want} read: did an input change?")


def one_line_errors(write):
    """A UserError raised on a worker (an input changed since the scan) or a corrupt Parquet
    page reaches the driver wrapped in Ray's task error, whose text is a traceback: one line."""
    import pyarrow as pa

    try:
        return write()
    except Exception as e:
        cause, seen = e, set()
        while id(cause) not in seen:  # RayTaskError.cause: the exception raised in the task
            seen.add(id(cause))
            cause = getattr(cause, "cause", None) or cause.__cause__ or cause
        if isinstance(cause, (UserError, pa.ArrowException)):
            first = (str(cause.args[0]) if cause.args else str(cause)).splitlines()[0]
            raise UserError(first[:400]) from None
        raise


def check_reachable(address: str | None) -> None:
    """host:port that nothing answers: one line now (ray.init would retry for many minutes)."""
    import socket

    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit() or address.startswith("ray://"):
        return  # none (local Ray), "auto", or a Ray client address: Ray's own checks
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address}: {e}") from None


def cpus_each(ray, workers: int) -> float:
    """CPUs per actor that leave one CPU for reading and writing: actors holding every CPU
    would wait forever for the read tasks that feed them (2 cores, 2 workers: 0.5 each)."""
    total = ray.cluster_resources().get("CPU", 1.0)
    return max(0.25, min(1.0, (total - 1.0) / workers))


def write_json_rows(ds, output: Path, out_kind: str, shards, options) -> bulk.Summary:
    """RowScorer's batches, as they come (in input order), into one file written under a
    temporary name and renamed when complete; counted as the local engine counts."""
    from .files import atomic_write

    summary = bulk.Summary(outputs=[str(output)])
    truncated = options["prefix"] + "truncated"
    columns = set(shards[0].columns)

    def write(tmp: Path) -> None:
        writer = None
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            rows = [json.loads(r) for r in table.column("row").to_pylist()]
            lines = table.column("line").to_pylist()
            summary.add(table.column("status").to_pylist(), lines, [r[truncated] for r in rows])
            summary.rows += len(rows)
            if writer is None:
                added = [k for k in rows[0] if k not in columns]
                writer = RowWriter(tmp, out_kind, shards, output, added)
            writer.write(rows)
        if writer is not None:
            writer.close()
        check_count(summary, shards)

    atomic_write(output, write)
    return summary


class RowWriter:
    """Scored rows into one CSV/TSV/JSONL/Parquet file, as the local engine writes them."""

    def __init__(self, path: Path, out_kind: str, shards, output: Path, added: list[str]):
        self.kind, self.header = out_kind, bulk.joint_header(shards, output, added)
        self.schema = None
        if out_kind == "parquet":
            s = shards[0]
            self.schema = tables.output_schema(s.schema, s.columns, added, s.kind)
            self.f, self.pq_writer = open(path, "wb"), None
            return
        self.f = open(path, "w", **text_mode(out_kind))
        if out_kind != "jsonl":
            self.f.write(tables.header_line(self.header, out_kind))

    def write(self, rows: list[dict]) -> None:
        if self.kind != "parquet":
            tables.write_rows(self.f, rows, self.header, self.kind)
            return
        import pyarrow.parquet as pq

        table = tables.rows_table(rows, self.schema)  # JSONL input: the first batch decides
        self.schema = table.schema
        self.pq_writer = self.pq_writer or pq.ParquetWriter(self.f, self.schema)
        self.pq_writer.write_table(table)

    def close(self) -> None:
        if self.kind == "parquet" and self.pq_writer is not None:
            self.pq_writer.close()
        self.f.close()


def write_arrow(ds, output: Path, out_kind: str, shards, options) -> bulk.Summary:
    """Predictor's Arrow batches (Parquet input) into one file, in input order."""
    from .files import atomic_write

    summary = bulk.Summary(outputs=[str(output)])
    text_column = options["text_column"]
    truncated = options["prefix"] + "truncated"

    def write(tmp: Path) -> None:
        import pyarrow.parquet as pq

        writer, header = None, None
        with open(tmp, "wb" if out_kind == "parquet" else "w", **text_mode(out_kind)) as f:
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                status = [bulk.text_status(v) for v in table.column(text_column).to_pylist()]
                lines = range(summary.rows + 1, summary.rows + 1 + table.num_rows)
                summary.add(status, list(lines), table.column(truncated).to_pylist())
                summary.rows += table.num_rows
                if out_kind == "parquet":
                    writer = writer or pq.ParquetWriter(f, table.schema)
                    writer.write_table(table)
                    continue
                if header is None:
                    header = table.column_names
                    if out_kind != "jsonl":
                        f.write(tables.header_line(header, out_kind))
                tables.write_rows(f, table.to_pylist(), header, out_kind)
            if writer is not None:
                writer.close()
        check_count(summary, shards)

    atomic_write(output, write)
    return summary


def text_mode(out_kind: str) -> dict:
    if out_kind == "parquet":
        return {}
    return {"encoding": "utf-8", "newline": "", "errors": tables.UNENCODABLE}
