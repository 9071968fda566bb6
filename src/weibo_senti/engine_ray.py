"""The Ray Data engine: the same ``bulk.Predictor`` on a pool of actors (local Ray or a cluster).

read_* (pyarrow's readers, every CSV/TSV column kept as a string) → ``map_batches(Predictor)``
with an actor pool, the model loaded once per actor → the driver streams the scored batches, in
input order, into one output file with the writers the local engine uses. Every worker needs
weibo-senti, the run folder and its base at the same paths (shared storage or the hub cache).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from . import bulk, tables
from .data import stream_codec
from .errors import UserError


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'weibo-senti[ray]'") from None
    return ray


def read(ray, paths: list[Path], text_column: str):
    """One Ray dataset over the shards (all of one kind)."""
    kinds = {tables.kind(p) for p in paths}
    if len(kinds) > 1:
        raise UserError(f"--engine ray reads one kind of file at a time, not {sorted(kinds)}")
    kind, files = kinds.pop(), [str(p) for p in paths]
    if kind == "parquet":
        return ray.data.read_parquet(files)
    codec = stream_codec(paths[0], None)
    if kind != "csv" and kind != "tsv" and codec not in ("utf-8", "utf-8-sig"):
        raise UserError(f"{paths[0]} is {codec}: --engine ray reads {kind} in UTF-8 only")
    if kind == "txt":
        return ray.data.read_text(files, drop_empty_lines=False)
    if kind == "jsonl":
        return ray.data.read_json(files, lines=True)
    import pyarrow as pa
    import pyarrow.csv as pacsv

    delimiter = "\t" if kind == "tsv" else ","
    header = read_header(paths[0], delimiter, codec)
    return ray.data.read_csv(
        files,
        read_options=pacsv.ReadOptions(encoding=codec),  # GBK, Big5: transcoded by pyarrow
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        # strings as read: "007" stays "007", an empty cell stays ""
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in header},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def read_header(path: Path, delimiter: str, codec: str) -> list[str]:
    with open(path, encoding=codec, newline="") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def score(
    input_spec,
    output: Path,
    run: Path,
    *,
    text_column: str = "review",
    prefix: str = "pred_",
    batch_size: int = 16,
    precision: str = "auto",
    base_model: str | None = None,
    overwrite: bool = False,
    address: str | None = None,
    workers: int = 2,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    rows_per_batch: int = 256,
) -> bulk.Summary:
    """Score ``input_spec`` into ``output`` with ``workers`` actors; returns the summary."""
    ray = require_ray()
    out_kind = tables.output_kind(output)
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    if workers < 1:
        raise UserError("--workers must be at least 1")
    paths = bulk.find_shards(input_spec)
    if all(tables.kind(p) == "txt" for p in paths):
        text_column = "text"  # read_text's one column
    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at {address}: {e}") from None
    # Input order: Ray's preserve_order, for this run only. A Dataset copies the context when it
    # is created, so it is set before reading (set only before writing, order held by luck).
    ctx = ray.data.DataContext.get_current()
    before, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    try:
        # one file is one block: split it (streaming) so every actor gets work
        ds = read(ray, paths, text_column).repartition(target_num_rows_per_block=rows_per_batch)
        scored = ds.map_batches(
            bulk.Predictor,
            fn_constructor_kwargs={
                "run": str(Path(run).resolve()),
                "text_column": text_column,
                "prefix": prefix,
                "batch_size": batch_size,
                "precision": precision,
                "base_model": base_model,
            },
            batch_format="pyarrow",
            batch_size=rows_per_batch,
            concurrency=workers,
            num_cpus=cpus_per_worker or cpus_each(ray, workers),
            num_gpus=gpus_per_worker or None,
        )
        summary = write_ordered(scored, output, out_kind, prefix)
    finally:
        ctx.execution_options.preserve_order = before
        if started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t0
    summary.scored = summary.rows
    return summary


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


def write_ordered(ds, output: Path, out_kind: str, prefix: str) -> bulk.Summary:
    """Batches as the dataset yields them (in input order: see score) into one file, written
    under a temporary name and renamed when complete."""
    from .files import atomic_write

    summary = bulk.Summary(outputs=[str(output)])

    def write(tmp: Path) -> None:
        import pyarrow.parquet as pq

        writer, header = None, None
        binary = out_kind == "parquet"
        text = {} if binary else {"encoding": "utf-8", "newline": ""}
        with open(tmp, "wb" if binary else "w", **text) as f:
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                count(summary, table, prefix)
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

    atomic_write(output, write)
    return summary


def count(summary: bulk.Summary, table, prefix: str) -> None:
    summary.rows += table.num_rows
    labels = table.column(prefix + "label").to_pylist()
    summary.empty += sum(label is None for label in labels)
    summary.truncated += sum(bool(t) for t in table.column(prefix + "truncated").to_pylist())
