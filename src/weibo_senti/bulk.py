"""Scoring files of any size: read, score and write in chunks; commit each chunk; resume.

The local engine streams every input shard (CSV/TSV/JSONL/TXT through data.py, Parquet through
pyarrow) in chunks of ``chunk_rows`` rows, scores each chunk with one ``Predictor`` and commits
it as a part file in ``<output>.partial/`` (atomically, then ``progress.json``). The final output
appears under its name only once every part is there (one atomic rename), so a finished output
is never mistaken for a partial one; ``--resume`` reads the progress, drops an uncommitted part,
skips the committed rows without scoring them and goes on. Chunks always start at multiples of
``chunk_rows``, so a resumed output is byte-identical to an uninterrupted one.

The same ``Predictor`` is the ``map_batches`` callable of the Ray engine (engine_ray.py).
"""

from __future__ import annotations

import errno
import glob
import io
import json
import logging
import numbers
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import tables
from .data import (
    BLANK,
    RaggedRow,
    _parse_label,
    pick_text_column,
    stream_codec,
    stream_records,
)
from .errors import UserError
from .files import write_json
from .progress import progress

log = logging.getLogger("weibo_senti")

CHUNK_ROWS = 4096  # rows per committed part: what a kill can cost, and the length-sort window
INPUT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".ndjson", ".txt", ".parquet")


class Predictor:
    """Adds prediction columns to a batch of rows: pyarrow Table, pandas DataFrame or a dict of
    columns (Ray Data's numpy batches). Empty and invalid texts get no label, as in predict().

    Ray: ``ds.map_batches(Predictor, fn_constructor_kwargs={"run": "runs/weibo"},
    concurrency=8, batch_size=256)`` loads the model once per actor.
    """

    def __init__(
        self,
        run: str | Path | None = None,
        *,
        classifier=None,
        text_column: str | None = "review",
        prefix: str = "pred_",
        adapter_column: str = "adapter",
        batch_size: int | None = None,
        precision: str = "auto",
        base_model: str | None = None,
    ):
        if classifier is None:
            from .predict import load_classifier

            if run is None:
                raise UserError("Predictor needs a run folder or a loaded classifier")
            classifier = load_classifier(Path(run), None, base_model, precision)
        self.clf = classifier
        self.text_column = text_column  # None: review, text, content or the only column
        self.adapter_column = adapter_column
        self.batch_size = batch_size
        self.labels = label_columns(self.clf)
        names = ["label", "label_zh", "score", *(f"p_{n}" for n in self.labels), "truncated"]
        if self.clf.bank is not None:
            names.append("adapter")
        self.added = [prefix + n for n in names]
        self.truncated_column = prefix + "truncated"

    def check_columns(self, columns: list[str], source: str) -> None:
        clash = [c for c in self.added if c in columns]
        if clash:
            raise UserError(
                f"{source} already has column {clash[0]!r}: pass --prefix to name the predictions"
            )

    def columns(self, texts: list, adapters: list | None = None) -> dict[str, list]:
        """The prediction columns for these cells: strings and numbers are read as text;
        None, objects, lists, bytes get no label (never their repr)."""
        texts = [text_of(t) for t in texts]
        names = None
        if adapters is not None and len(self.clf.adapters) > 1:
            active = self.clf.active_adapter
            names = [str(n or "").strip() or active for n in adapters]
        preds = self.clf.predict(texts, self.batch_size, names)
        out: dict[str, list] = {c: [] for c in self.added}
        for p in preds:
            probs = p.probabilities or {}
            values = [p.label, p.label_zh, None if p.score is None else round(p.score, 6)]
            # a label the row's adapter does not predict: empty, not 0
            values += [round(probs[n], 6) if n in probs else None for n in self.labels]
            values += [p.truncated] + ([p.adapter] if self.clf.bank is not None else [])
            for c, v in zip(self.added, values):
                out[c].append(v)
        return out

    def __call__(self, batch):
        columns = tables.names(batch)
        self.check_columns(columns, "the batch")
        texts = tables.column(batch, pick_text_column(columns, self.text_column, "the batch"))
        adapters = None
        if self.adapter_column in tables.names(batch):
            adapters = tables.column(batch, self.adapter_column)
        return tables.add_columns(batch, self.columns(texts, adapters))


def label_columns(clf) -> list[str]:
    """The labels that get a probability column (``p_<label>``): every label of the loaded
    adapters, the active adapter's first (in its order), then each other adapter's labels
    not seen yet, in loading order. A row's probabilities fill its own adapter's labels; the
    other columns stay empty. One label set (a single run) gives exactly its columns."""
    names = list(clf.labels)
    for adapter in clf.adapters:
        names += [n for n in clf.labels_of(adapter) if n not in names]
    return names


def is_missing(value) -> bool:
    """None, NaN (pandas' missing text) and pandas.NA: no text, not the word 'nan'."""
    if value is None or (isinstance(value, float) and value != value):
        return True
    return type(value).__name__ == "NAType"


def is_text(value) -> bool:
    """A string, or a number (a JSONL "text": 5 reads as "5"); not a bool, object, list or
    bytes, whose repr is no post."""
    if isinstance(value, str):
        return True
    return isinstance(value, numbers.Number) and not isinstance(value, (bool, complex))


def text_of(value) -> str:
    """The text to score: "" (no label) for missing, non-text and invalid Unicode values."""
    from .predict import is_valid_unicode

    if is_missing(value) or not is_text(value):
        return ""
    text = str(value)
    return text if is_valid_unicode(text) else ""


def text_status(value) -> str:
    """ok, empty (missing, blank, invalid Unicode) or non-text: what the summary counts."""
    if not is_missing(value) and not is_text(value):
        return "non-text"
    return "ok" if text_of(value).strip() else "empty"


@dataclass
class Rec:
    """One input row: its cells as read, where it was, and whether it parsed. Kept apart
    from the cells so no column name can collide with a marker."""

    values: dict
    line: int  # line in its file (Parquet: row number), for the summary
    unparsable: bool = False
    column: str = ""  # its shard's text column


def to_rec(n: int, rec) -> Rec | None:
    """A record of data.stream_records as a Rec; None for a blank line (not a row)."""
    if rec is BLANK:
        return None
    if rec is None:
        return Rec({}, n, True)
    return Rec(dict(rec), n, isinstance(rec, RaggedRow))


@dataclass
class Shard:
    """One input file, its rows streamed as Recs (every column kept, values as read)."""

    path: Path
    encoding: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: int = 0
    schema: object = None  # pyarrow schema of a Parquet input
    text_column: str = ""  # this shard's own (shards of a folder may name it differently)
    label_like: dict = field(default_factory=dict)  # column -> every value reads as 0/1
    blank: int = 0  # blank lines of a CSV/TSV/JSONL: not rows, counted for the summary
    blank_lines: list[int] = field(default_factory=list)  # the first few

    @property
    def kind(self) -> str:
        return tables.kind(self.path)

    def scan(self) -> Shard:
        """Columns and row count, in one pass that parses every row (a bad file fails here,
        before the model has scored anything)."""
        try:
            if self.kind == "parquet":
                self.schema, self.rows = tables.parquet_schema(self.path)
                self.columns = list(self.schema.names)
                return self
            self.encoding = stream_codec(self.path, self.encoding)
            self._scan_records()
        except OSError as e:  # unreadable: a permission, a folder named .csv, a bad disk
            raise UserError(f"cannot read {self.path}: {e.strerror or e}") from None
        return self

    def _scan_records(self) -> None:
        seen: dict[str, None] = {}
        for n, rec in self._records():
            if n == 0:
                seen.update(dict.fromkeys(rec))
                continue
            if rec is BLANK:
                self.blank += 1
                self.blank_lines = (self.blank_lines + [n])[:5]
                continue
            self.rows += 1
            if isinstance(rec, dict):
                if self.kind == "jsonl":
                    seen.update(dict.fromkeys(rec))
                for c, v in rec.items():
                    if self.label_like.get(c, True):
                        self.label_like[c] = _parse_label(v) is not None
        self.columns = list(seen) or ["text"]

    def _records(self, quiet: bool = False):
        return stream_records(self.path, self.encoding, self.kind == "txt", quiet)

    def iter_rows(self, skip: int = 0) -> Iterator[Rec]:
        """Rows after the first ``skip``; unparsable lines come as Recs marked so."""
        if self.kind == "parquet":
            for i, values in enumerate(tables.parquet_rows(self.path, skip), start=skip + 1):
                yield Rec(values, i)
            return
        count = 0
        for n, rec in self._records(quiet=True):  # scan() has warned already
            row = to_rec(n, rec) if n else None
            if row is None:
                continue
            count += 1
            if count > skip:
                yield row


def find_shards(spec: str | Path, output: Path | None = None) -> list[Path]:
    """A file, a folder (its supported files, recursively, sorted) or a glob pattern; never
    what ``output`` writes (its parts; a folder output's files when it lies in the input)."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        found = [p for p in found if p.suffix.lower() in INPUT_SUFFIXES]
        found = [p for p in found if not written_by(p, output, path)]
        if not found:
            raise UserError(f"{path} holds no {', '.join(INPUT_SUFFIXES)} files")
        return found
    if glob.has_magic(str(spec)):
        found = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
        found = [p for p in found if not written_by(p, output, glob_root(str(spec)))]
        if not found:
            raise UserError(f"no file matches {spec}")
        return found
    if not path.exists():
        raise UserError(f"input file {path} does not exist")
    if not path.is_file():  # a pipe or a device would be read twice (count, score), or forever
        raise UserError(f"input {path} is not a regular file (a pipe or a device): save it first")
    if path.suffix.lower() not in INPUT_SUFFIXES:
        raise UserError(
            f"{path}: {path.suffix or 'no suffix'} is not an input this reads "
            f"({', '.join(INPUT_SUFFIXES)}; decompress .gz files first)"
        )
    return [path]


def glob_root(spec: str) -> Path:
    """The folder a glob pattern starts from (crawl/day*/x.csv: crawl)."""
    cut = min((i for i in (spec.find(c) for c in "*?[") if i >= 0), default=len(spec))
    prefix = spec[:cut]
    return Path(prefix or ".") if prefix.endswith(("/", os.sep)) else Path(prefix).parent


def written_by(path: Path, output: Path | None, root: Path) -> bool:
    """Is ``path`` the output's own: a part in its .partial folder, or a file of a folder
    output that lies inside the input folder ``root``? Read as input, a second run would
    score its own output."""
    if output is None:
        return False
    parents = path.resolve().parents
    if partial_of(output).resolve() in parents:
        return True
    folder = output.resolve()
    inside = root.resolve() in folder.parents  # strictly inside: == root is refused later
    return is_folder_output(output) and inside and folder in parents


@dataclass
class Summary:
    rows: int = 0
    scored: int = 0  # rows scored in this call (a resumed job skips the committed ones)
    empty: int = 0
    non_text: int = 0  # an object, list, bytes... in the text column: no label, no repr
    non_text_lines: list[int] = field(default_factory=list)  # the first few
    unparsable: int = 0
    unparsable_lines: list[int] = field(default_factory=list)  # the first few
    truncated: int = 0
    blank: int = 0  # blank lines skipped (not rows)
    blank_lines: list[int] = field(default_factory=list)
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        """What progress.json keeps of it (a resumed job's summary goes on from there)."""
        keys = ("empty", "non_text", "non_text_lines", "unparsable", "unparsable_lines")
        return {k: getattr(self, k) for k in (*keys, "truncated")}

    def add(self, status: list[str], lines: list[int], truncated: list) -> None:
        """Count scored rows by status (see text_status; "unparsable" too)."""
        for s, n in zip(status, lines):
            if s == "empty":
                self.empty += 1
            elif s == "non-text":
                self.non_text += 1
                self.non_text_lines = (self.non_text_lines + [n])[:5]
            elif s == "unparsable":
                self.unparsable += 1
                self.unparsable_lines = (self.unparsable_lines + [n])[:5]
        self.truncated += sum(bool(t) for t in truncated)

    def line(self) -> str:
        rate = self.scored / self.seconds if self.seconds else 0.0
        parts = [f"{self.rows} rows in {len(self.outputs)} output file(s)"]
        parts.append(f"{self.scored} scored in {self.seconds:.1f} s ({rate:.0f} rows/s)")
        if self.empty:
            parts.append(f"{self.empty} with no usable text (empty, invalid Unicode): no label")
        if self.non_text:
            lines = ", ".join(map(str, self.non_text_lines[:5]))
            parts.append(
                f"{self.non_text} with no text in the text column (an object, list, bytes...): "
                f"no label (lines {lines})"
            )
        if self.unparsable:
            lines = ", ".join(map(str, self.unparsable_lines[:5]))
            parts.append(f"{self.unparsable} unparsable, kept without a label (lines {lines})")
        if self.blank:
            lines = ", ".join(map(str, self.blank_lines[:5]))
            parts.append(f"{self.blank} blank lines skipped (lines {lines})")
        if self.truncated:
            parts.append(f"{self.truncated} cut to the model's length")
        return "; ".join(parts) + f" -> {', '.join(self.outputs)}"


def joint_header(shards: list[Shard], output: Path | None, added: list[str]) -> list[str]:
    """The output's columns: the input's, then the predictions. Shards into one CSV/Parquet
    must agree (JSONL rows may differ)."""
    first = shards[0].columns
    for s in shards[1:]:
        if s.columns != first and tables.kind(output or Path("x.csv")) != "jsonl":
            raise UserError(
                f"{s.path} has columns {s.columns}, {shards[0].path} {first}: one output file "
                "needs the same columns; write to a folder (one file per shard) or to .jsonl"
            )
    return [*first, *added]


def score_records(p: Predictor, recs: list[Rec]) -> tuple[list[dict], list[str]]:
    """The scored rows (every input cell, then the predictions) and each row's status (ok,
    empty, non-text, unparsable). The local and the Ray engine both score through here."""
    values = [None if r.unparsable else r.values.get(r.column) for r in recs]
    status = ["unparsable" if r.unparsable else text_status(v) for r, v in zip(recs, values)]
    added = p.columns(values, [r.values.get(p.adapter_column) for r in recs])
    rows = [{**r.values, **{c: v[i] for c, v in added.items()}} for i, r in enumerate(recs)]
    return rows, status


@dataclass
class Job:
    """Shards scored into one output file (several shards: concatenated in order)."""

    shards: list[Shard]
    output: Path | None  # None: stdout
    predictor: Predictor
    chunk_rows: int = CHUNK_ROWS
    fingerprint: dict = field(default_factory=dict)

    @property
    def partial(self) -> Path:
        return partial_of(self.output)

    def header(self) -> list[str]:
        return joint_header(self.shards, self.output, self.predictor.added)

    def rows(self, skip: int) -> Iterator[Rec]:
        for shard in self.shards:
            if skip >= shard.rows:
                skip -= shard.rows
                continue
            for rec in shard.iter_rows(skip):
                rec.column = shard.text_column
                yield rec
            skip = 0

    def chunks(self, skip: int) -> Iterator[list[Rec]]:
        chunk = []
        for rec in self.rows(skip):
            chunk.append(rec)
            if len(chunk) == self.chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def score_chunk(self, chunk: list[Rec], summary: Summary) -> list[dict]:
        rows, status = score_records(self.predictor, chunk)
        truncated = [r[self.predictor.truncated_column] for r in rows]
        summary.add(status, [r.line for r in chunk], truncated)
        return rows


# ---------------------------------------------------------------- committing and resuming
PROGRESS = "progress.json"


def partial_of(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def refuse_input_as_output(output: Path, inputs: list[Path]) -> None:
    for p in inputs:
        if output.exists() and p.exists() and output.resolve() == p.resolve():
            raise UserError(f"--output {output} is the input file: write elsewhere")


def part_name(i: int, out_kind: str) -> str:
    return f"part-{i:06d}.{out_kind}"


def precheck(output: Path | None, resume: bool, overwrite: bool, input_spec=None) -> None:
    """The refusals that need no model and no pass over the input (the CLI asks first)."""
    if output is None or not output.suffix or output.is_dir():
        return
    if input_spec is not None:
        refuse_input_as_output(output, [Path(input_spec)])
    partial = partial_of(output)
    if partial.exists() and not resume and not overwrite:
        raise UserError(
            f"{partial} holds an interrupted run: --resume continues it, --overwrite starts over"
        )
    if output.exists() and not partial.exists() and not resume and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it (or --resume)")


def open_partial(job: Job, resume: bool, overwrite: bool) -> dict | None:
    """The progress to continue from (a fresh one to start), or None: nothing left to do."""
    out, partial = job.output, job.partial
    precheck(out, resume, overwrite)
    fresh = {"fingerprint": job.fingerprint, "parts": 0, "rows": 0}
    fresh["summary"] = Summary().counts()
    if partial.exists() and not resume:
        remove_partial(partial)  # --overwrite
    if not partial.exists():
        if out.exists() and resume:
            check_complete(job)
            log.info("%s is complete already", out)
            return None
        return fresh
    try:
        state = json.loads((partial / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = fresh  # killed before the first commit
    changed = [k for k, v in job.fingerprint.items() if state["fingerprint"].get(k) != v]
    if changed:
        what = {"inputs": "input files", "run": "run folder files"}
        raise UserError(
            f"{partial} was started with other {', '.join(what.get(k, k) for k in changed)}; "
            "run without --resume and with --overwrite to start over"
        )
    for p in partial.glob("part-*"):  # written, but killed before its commit
        if p.name[5:11].isdigit() and int(p.name[5:11]) >= state["parts"]:
            p.unlink()
    check_parts(partial, state["parts"], tables.output_kind(out))
    return state


def check_parts(partial: Path, parts: int, out_kind: str) -> None:
    """Every committed part must still be there: joined without one, the output would be
    short by its rows without a word."""
    missing = [i for i in range(parts) if not (partial / part_name(i, out_kind)).is_file()]
    if missing:
        raise UserError(
            f"{partial}: {len(missing)} of its {parts} committed parts are gone "
            f"({part_name(missing[0], out_kind)} first): --overwrite scores it again from the start"
        )


def check_complete(job: Job) -> None:
    """--resume on a finished output: it must hold the input's rows (else: other input)."""
    have, want = tables.count_rows(job.output), sum(s.rows for s in job.shards)
    if have != want:
        raise UserError(
            f"{job.output} is complete but holds {have} rows and the input has {want}: it was "
            "scored from other input; --overwrite scores this one"
        )


def remove_partial(partial: Path) -> None:
    """Only a folder of parts and progress is ours to delete."""
    foreign = [p.name for p in partial.iterdir() if not p.name.startswith(("part-", PROGRESS, "."))]
    if foreign:
        raise UserError(
            f"{partial} holds files weibo-senti did not write ({foreign[0]}): not removed"
        )
    shutil.rmtree(partial)


def run_job(job: Job, resume: bool = False, overwrite: bool = False, bar=None) -> Summary:
    """Score a job's rows into its output, committing every chunk (see the module's doc)."""
    try:
        return _run_job(job, resume, overwrite, bar)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"cannot write {e.filename or job.output}: {e.strerror}") from None
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(
                f"disk full writing {e.filename or job.output}: the committed chunks are kept; "
                "free space, then the same command with --resume goes on"
            ) from None
        raise


def _run_job(job: Job, resume: bool, overwrite: bool, bar) -> Summary:
    from filelock import FileLock, Timeout

    header = job.header()
    out_kind = tables.output_kind(job.output)
    partial = job.partial
    partial.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(job.output.with_name(job.output.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"another process is writing {job.output}") from None
    try:
        state = open_partial(job, resume, overwrite)
        summary = Summary(outputs=[str(job.output)])
        if state is None:
            summary.rows = sum(s.rows for s in job.shards)
            return summary
        partial.mkdir(exist_ok=True)
        commit_chunks(job, state, header, out_kind, bar, summary)
        parts = [partial / part_name(i, out_kind) for i in range(state["parts"])]
        tables.join_parts(parts, job.output, header, out_kind)
        remove_partial(partial)
        summary.rows = state["rows"]
        for k, v in state["summary"].items():
            setattr(summary, k, v)
        return summary
    finally:
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)


def commit_chunks(job: Job, state: dict, header, out_kind: str, bar, summary: Summary) -> None:
    shard = job.shards[0]
    schema = tables.output_schema(shard.schema, shard.columns, job.predictor.added, shard.kind)
    if schema is None and out_kind == "parquet" and state["parts"]:
        schema = tables.part_schema(job.partial / part_name(0, out_kind))
    if bar is not None:
        bar.update(state["rows"])
    counts = Summary(**state["summary"])
    for chunk in job.chunks(state["rows"]):
        rows = job.score_chunk(chunk, counts)
        path = job.partial / part_name(state["parts"], out_kind)
        tables.write_part(path, rows, header, out_kind, schema)
        if schema is None and out_kind == "parquet":
            schema = tables.part_schema(path)  # JSONL input: the first part decides the types
        state["parts"] += 1
        state["rows"] += len(rows)
        state["summary"] = counts.counts()
        write_json(job.partial / PROGRESS, state)  # the commit
        summary.scored += len(rows)
        if bar is not None:
            bar.update(len(rows))


# ---------------------------------------------------------------- the local engine
def plan_jobs(
    input_spec,
    output: Path | None,
    predictor: Predictor,
    chunk_rows: int,
    encoding: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> list[Job]:
    """Shards and where each goes: one output file, or a folder (one file per shard)."""
    paths = find_shards(input_spec, output)
    if output is not None:
        refuse_input_as_output(output, paths)
    shards = scan_shards(paths, encoding, predictor.text_column, predictor.check_columns)
    if output is not None and is_folder_output(output):
        root = Path(input_spec) if Path(input_spec).is_dir() else common_parent(paths)
        targets = folder_targets(output, root, shards)
        check_folder_targets(targets, predictor.added, resume, overwrite)
        return [make_job([s], t, predictor, chunk_rows) for s, t in zip(shards, targets)]
    if output is not None:
        tables.output_kind(output)
    return [make_job(shards, output, predictor, chunk_rows)]


def scan_shards(paths: list[Path], encoding, text_column, check_columns) -> list[Shard]:
    """Every shard read once, before anything is scored: columns, rows, refusals."""
    shards = []
    for p in progress(paths, desc="reading inputs", unit="file", disable=len(paths) < 2):
        shard = Shard(p, encoding).scan()
        check_columns(shard.columns, str(p))
        shard.text_column = pick_text_column(shard.columns, text_column, p)
        check_text_column(shard.text_column, shard)
        shards.append(shard)
    return shards


def check_text_column(column: str, shard: Shard) -> None:
    if column == "label" or shard.label_like.get(column):
        raise UserError(
            f"{shard.path}: column '{column}' holds labels (0/1), not texts; give the text "
            "column with --text-column"
        )


def is_folder_output(output: Path) -> bool:
    """A folder, or a path without a suffix (an output file needs one to name its format)."""
    return output.is_dir() or not output.suffix


def common_parent(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))


def folder_target(folder: Path, root: Path, path: Path) -> Path:
    """The shard's own name under ``folder``; a .txt shard is written as CSV under its whole
    name plus .csv (a.txt -> a.txt.csv), so it never meets the a.csv of the same folder."""
    rel = path.resolve().relative_to(root.resolve())
    if path.suffix.lower() == ".txt":
        rel = rel.with_name(rel.name + ".csv")
    return folder / rel


def folder_targets(output: Path, root: Path, shards: list[Shard]) -> list[Path]:
    """One output per shard; two shards into one file, or one over an input, are refused."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file: a folder output needs a folder")
    inputs = {s.path.resolve(): s.path for s in shards}
    targets, seen = [], {}
    for s in shards:
        target = folder_target(output, root, s.path)
        # casefold: names that differ only in case are one file on macOS and Windows disks
        other = seen.setdefault(str(target).casefold(), s.path)
        if other != s.path:
            raise UserError(
                f"{other} and {s.path} would both be written to {target}: rename one, or "
                "write every shard into one .jsonl"
            )
        if target.resolve() in inputs:
            raise UserError(
                f"--output {output} would write {target} over the input {inputs[target.resolve()]}"
                ": write to another folder"
            )
        targets.append(target)
    return targets


def check_folder_targets(targets: list[Path], added: list[str], resume, overwrite) -> None:
    """Before anything is scored. A folder may hold the user's own files: --overwrite
    replaces only earlier outputs of predict (files with the prediction columns)."""
    for t in targets:
        if t.is_dir():
            raise UserError(f"{t} is a folder: the output of that shard cannot be written")
        precheck(t, resume, overwrite)
        if overwrite and not resume and t.is_file() and not tables.holds_columns(t, added):
            raise UserError(
                f"{t} exists and is no output of predict (no {added[0]} column): --overwrite "
                "replaces only those in a folder; move it away"
            )


def make_job(shards: list[Shard], output, predictor: Predictor, chunk_rows: int) -> Job:
    clf = predictor.clf
    fingerprint = {
        "inputs": [[str(s.path.resolve()), *file_stamp(s.path), s.encoding] for s in shards],
        "run": [str(Path(clf.run).resolve()), run_stamp(Path(clf.run))],
        "adapters": clf.adapters,
        # as asked: under "auto" the measured path may differ between runs, within agreement
        "precision": clf.requested[0] if clf.requested else clf.precision,
        "text columns": [s.text_column for s in shards],
        "prefix": predictor.added,
        "adapter column": predictor.adapter_column,
        "batch size": predictor.batch_size or clf.batch_rows,
        "chunk rows": chunk_rows,
    }
    return Job(shards, output, predictor, chunk_rows, fingerprint)


def run_stamp(run: Path) -> dict:
    return {p.name: file_stamp(p) for p in sorted(run.iterdir()) if p.is_file()}


def file_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def score(
    input_spec,
    output: Path | None,
    predictor: Predictor,
    *,
    resume: bool = False,
    overwrite: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    encoding: str | None = None,
    stdout=None,
    stdout_kind: str = "csv",
) -> Summary:
    """Score every row of the input (file, folder or glob) into ``output`` (a file, a folder,
    or None: CSV on ``stdout``), chunk by chunk; returns the summary."""
    if chunk_rows < 1:
        raise UserError("--chunk-rows must be at least 1")
    t0 = time.perf_counter()
    jobs = plan_jobs(input_spec, output, predictor, chunk_rows, encoding, resume, overwrite)
    total = Summary()
    shards = [s for j in jobs for s in j.shards]
    rows = sum(s.rows for s in shards)
    with progress(total=rows, desc="scoring", unit="rows", smoothing=0.05) as bar:
        for job in jobs:
            if job.output is None:
                done = stream_job(job, stdout, stdout_kind, bar)
            else:
                done = run_job(job, resume, overwrite, bar)
            merge_summary(total, done)
    add_blank_lines(total, shards)
    total.seconds = time.perf_counter() - t0
    return total


def merge_summary(total: Summary, done: Summary) -> None:
    for k in ("rows", "scored", "empty", "non_text", "unparsable", "truncated"):
        setattr(total, k, getattr(total, k) + getattr(done, k))
    for k in ("non_text_lines", "unparsable_lines"):
        setattr(total, k, (getattr(total, k) + getattr(done, k))[:5])
    total.outputs += done.outputs


def add_blank_lines(summary: Summary, shards: list[Shard]) -> None:
    """Blank lines are no rows: counted by the scan, reported in the summary."""
    for s in shards:
        summary.blank += s.blank
        summary.blank_lines = (summary.blank_lines + s.blank_lines)[:5]


def stream_job(job: Job, stdout, out_kind: str, bar) -> Summary:
    """No --output: CSV or JSONL rows onto stdout as they are scored (nothing to resume)."""
    import sys

    stdout = stdout or sys.stdout
    header = job.header()
    if out_kind != "jsonl":
        stdout.write(tables.header_line(header, out_kind))
    summary = Summary(outputs=["stdout"])
    encoding = getattr(stdout, "encoding", None) or "utf-8"
    for chunk in job.chunks(0):
        rows = job.score_chunk(chunk, summary)
        buf = io.StringIO()
        tables.write_rows(buf, rows, header, out_kind)
        # what the terminal's encoding cannot hold (a lone surrogate) as an escape, not a crash
        stdout.write(buf.getvalue().encode(encoding, tables.UNENCODABLE).decode(encoding))
        summary.rows += len(rows)
        summary.scored += len(rows)
        bar.update(len(rows))
    return summary
