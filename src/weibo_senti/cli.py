"""The `weibo-senti` command: one verb per job, each a typed function with a docstring."""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fine-tune a Chinese GPT-2 for Weibo sentiment (or any label set) and use it.",
    pretty_exceptions_enable=False,
)
log = logging.getLogger("weibo_senti")

Opt = typer.Option

# One vocabulary for every command that loads a run.
RunBase = Annotated[
    str | None,
    Opt("--base-model", help="Base model folder or hub id, if the recorded one cannot be found"),
]
InferPrecision = Annotated[
    str,
    Opt(
        help="auto (the fastest path timed on this machine that agrees with fp32; "
        "predict --verbose says which) | fp32 | bf16 | int8 (CPU)"
    ),
]
TextColumn = Annotated[str, Opt(help="Text column of the file")]
Encoding = Annotated[str | None, Opt(help="File encoding (default: detect UTF-8/BOM/UTF-16/GBK)")]
BatchSize = Annotated[
    int | None,
    Opt(min=1, help="Posts per forward pass (default: 16 on a CPU, 256 on a GPU)"),
]
AllowIncomplete = Annotated[
    bool,
    Opt(help="Use a run that has not finished training (its best epoch so far, uncalibrated)"),
]


def need_extra(module: str, extra: str, command: str) -> None:
    """The server and the comparison tooling are extras: say how to get them."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"'weibo-senti {command}' needs the {extra} extra: pip install 'weibo-senti[{extra}]'"
        )


def show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"weibo-senti {__version__}")
        raise typer.Exit()


@app.callback()
def common(
    version: Annotated[
        bool | None,
        Opt("--version", callback=show_version, is_eager=True, help="Print the version and exit"),
    ] = None,
) -> None:
    """Fine-tune a Chinese GPT-2 for Weibo sentiment (or any label set) and use it."""


def config_options(schema=None) -> list[inspect.Parameter]:
    """One flag per field of ``schema`` (TrainConfig by default): name, type, help and default
    come from the config."""
    import typing

    from .config import TrainConfig

    params = []
    for name, f in (schema or TrainConfig).model_fields.items():
        kind = f.annotation
        if type(None) in typing.get_args(kind):  # `X | None`: the flag is an X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if typing.get_origin(kind) is Annotated:  # its constraints are the schema's to check
            kind = typing.get_args(kind)[0]
        if typing.get_origin(kind) is typing.Literal:  # choices are checked by the schema
            kind = str
        if typing.get_origin(kind) is list:  # items' constraints too: typer wants plain types
            kind = list[str]
        if typing.get_origin(kind) is dict:  # --label-map a=b,c=d or a file; parsed by the schema
            kind = str
        default = f.get_default(call_default_factory=True)
        shown = " ".join(default) if isinstance(default, list) else default
        help = f.description + (
            "" if "default:" in f.description or default in (None, []) else f" (default: {shown})"
        )
        flag = f"--{name.replace('_', '-')}"
        opt = Opt(f"{flag}/--no-{flag[2:]}", help=help) if kind is bool else Opt(flag, help=help)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, opt],
            )
        )
    return params


# What --resume takes besides the folder: the base and the data may lie elsewhere now.
RESUME_FLAGS = ("out", "base_model", "data", "dev_data", "method")


def train(
    config: Path | None = None, resume: bool = False, overwrite: bool = False, **options
) -> None:
    """Fine-tune the base model and write a self-contained run folder."""
    from .config import TrainConfig
    from .train import train as run_training

    if resume:  # the folder named by --out, whatever `out` its hyperparameters recorded
        from .runfolder import hyperparameters_file

        folder = Path(options["out"] or f"runs/{options['method'] or 'lora'}")
        given = [k for k, v in options.items() if v is not None and k not in RESUME_FLAGS]
        if given or config:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in given + ["config"] * bool(config))
            raise UserError(
                f"--resume continues the run as it was configured; {flags} cannot change it "
                f"(start a new run with --config {folder}/hyperparameters.yaml instead)"
            )
        from .runfolder import is_complete

        if is_complete(folder):
            typer.echo(f"{folder} has finished training; nothing to resume", err=True)
        saved = hyperparameters_file(folder)
        moved = {k: options[k] for k in ("base_model", "data", "dev_data")}  # now elsewhere
        cfg = TrainConfig.from_sources(saved, recorded=True, out=str(folder), **moved)
    else:
        cfg = TrainConfig.from_sources(config, **options)
    try:
        clf = run_training(cfg, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:  # said here: typer turns Ctrl-C into a bare exit otherwise
        typer.echo(
            f"\ninterrupted: continue with weibo-senti train --resume --out {cfg.out}", err=True
        )
        raise typer.Exit(130) from None
    typer.echo(f"run saved to {clf.run}")


def run_flags(command: str) -> list[inspect.Parameter]:
    """--config, --resume and --overwrite of a command that writes a folder as it trains."""
    what = "run" if command == "train" else "base"

    def flag(name, kind, default, help):
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default,
            annotation=Annotated[kind, Opt(help=help)],
        )  # fmt: skip

    return [
        flag(
            "config", Path | None, None,
            f"YAML file of options (e.g. a {what}'s recorded options); flags override it",
        ),
        flag("resume", bool, False, f"Continue the interrupted {what} in --out"),
        flag("overwrite", bool, False, f"Replace an existing {what} in --out"),
    ]  # fmt: skip


def _register(command, name: str, schema=None) -> None:
    """``command``'s flags: one per config field, then --config, --resume, --overwrite."""
    params = config_options(schema) + run_flags(name)
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    app.command(name)(command)


_register(train, "train")


def pretrain(
    config: Path | None = None, resume: bool = False, overwrite: bool = False, **options
) -> None:
    """Continue pretraining a GPT-2 base on unlabelled posts into a new base folder."""
    from .config import PretrainConfig
    from .pretrain import SETTINGS
    from .pretrain import pretrain as run_pretraining

    if resume:  # as it was configured; only where the base and the data lie may change
        out = Path(options["out"] or PretrainConfig.model_fields["out"].default)
        moved = ("out", "base_model", "data")
        given = [k for k, v in options.items() if v is not None and k not in moved]
        if given or config:
            raise UserError(f"--resume continues {out} as it was configured; drop the other flags")
        config = out / SETTINGS if (out / SETTINGS).is_file() else None
    cfg = PretrainConfig.from_sources(config, **options)
    try:
        record = run_pretraining(cfg, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        from .pretrain import how_to_continue

        typer.echo(f"\ninterrupted: {how_to_continue(Path(cfg.out))}", err=True)
        raise typer.Exit(130) from None
    if record is None:  # not the main process of several: the main one reports
        return
    typer.echo(
        f"base saved to {cfg.out}: perplexity {record['perplexity_before']:.2f} -> "
        f"{record['perplexity_after']:.2f} after {record['tokens_seen']:,} tokens"
    )


def _register_pretrain() -> None:
    from .config import PretrainConfig

    _register(pretrain, "pretrain", PretrainConfig)


_register_pretrain()


@app.command("select")
def select_posts(
    run: Annotated[Path, typer.Argument(help="Run folder whose uncertainty ranks the posts")],
    pool: Annotated[str, Opt(help="Unlabelled posts: a file, folder or glob")],
    out: Annotated[Path, Opt(help="Posts to label: .csv, .tsv, .jsonl or .parquet")],
    n: Annotated[int, Opt(help="How many posts to choose")] = 500,
    strategy: Annotated[str, Opt(help="margin | entropy")] = "margin",
    diversity: Annotated[
        str, Opt(help="kmeans (one post per cluster of the model's features) | none")
    ] = "kmeans",
    candidates: Annotated[
        int, Opt(help="The most uncertain N × this many posts go to the diversity step")
    ] = 10,
    text_column: Annotated[
        str | None, Opt(help="Text column (default: review, text or content)")
    ] = None,
    label_column: Annotated[str, Opt(help="Name of the empty column to fill in")] = "label",
    encoding: Encoding = None,
    base_model: RunBase = None,
    batch_size: BatchSize = None,
    seed: Annotated[int, Opt(help="Seed of the clustering")] = 42,
    overwrite: Annotated[bool, Opt(help="Replace --out if it exists")] = False,
) -> None:
    """Choose the posts of a pool most worth labelling (active learning)."""
    from .selection import Request, select

    req = Request(
        run, pool, n, out, strategy, diversity, candidates, text_column, label_column,
        encoding, batch_size, seed, base_model, overwrite,
    )  # fmt: skip
    summary = select(req)
    lo, hi = summary["uncertainty_range"]
    skipped = f"{summary['repeats']:,} repeats, {summary['empty']:,} without text"
    skipped += f" and {summary['unparsable']:,} unparsable rows skipped"
    typer.echo(
        f"{summary['chosen']} posts to label written to {out} (of {summary['scored']:,} "
        f"distinct posts scored; {skipped}; {strategy} uncertainty {lo:.3f} to {hi:.3f}); "
        f"fill in its '{label_column}' column ({', '.join(summary['labels'])}), then train "
        f"with --data YOUR_DATA --data {out}"
        + ("" if label_column == "label" else f" after renaming '{label_column}' to the label "
           "column of your data (training reads one label column from every file)")
    )  # fmt: skip


LabelMap = Annotated[
    str | None,
    Opt(help="Rename the file's labels first: happy=positive,surprise= (empty: drop) or a YAML"),
]


def parse_label_map(spec: str | None) -> dict[str, str | None] | None:
    from .labels import parse_map

    try:
        return parse_map(spec)
    except ValueError as e:
        raise UserError(f"--label-map: {e}") from None


def check_png_option(path: Path | None, flag: str, command: str) -> None:
    """A figure option: matplotlib installed, a .png file name (not a folder)."""
    if path is None:
        return
    need_extra("matplotlib", "compare", f"{command} {flag}")
    if path.suffix.lower() != ".png" or path.is_dir():
        raise UserError(f"{flag} must name a .png file, not {path}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder")],
    data: Annotated[str, Opt(help="Labelled CSV/TSV/JSONL")],
    base_model: RunBase = None,
    text_column: TextColumn = "review",
    label_column: Annotated[
        str, Opt(help="Label column: the run's label names or ids (default: label)")
    ] = "label",
    label_map: LabelMap = None,
    encoding: Encoding = None,
    strip_emoticons: Annotated[
        bool, Opt(help="Remove emoticons ([哈哈] codes and emoji) before predicting")
    ] = False,
    batch_size: BatchSize = None,
    precision: InferPrecision = "auto",
    reliability: Annotated[
        Path | None, Opt(help="Write a reliability diagram PNG here (extra: compare)")
    ] = None,
    confusion: Annotated[
        Path | None, Opt(help="Write the confusion matrix as a PNG here (extra: compare)")
    ] = None,
    as_json: Annotated[
        bool, Opt("--json", help="Print one JSON object instead of a table")
    ] = False,
    allow_incomplete: AllowIncomplete = False,
):
    """Accuracy, macro-F1, per-class scores, confusion matrix, loss and calibration on a file."""
    from .evaluate import evaluate as run_eval
    from .metrics import render_table
    from .predict import SentimentClassifier

    if text_column == label_column:
        raise UserError(f"--text-column and --label-column are both {text_column!r}")
    check_png_option(reliability, "--reliability", "evaluate")
    check_png_option(confusion, "--confusion", "evaluate")
    if reliability and confusion and reliability.resolve() == confusion.resolve():
        raise UserError(f"--reliability and --confusion are both {reliability}: give two files")
    mapping = parse_label_map(label_map)
    clf = SentimentClassifier.load(
        run, base_model=base_model, precision=precision, allow_incomplete=allow_incomplete
    )
    m = run_eval(
        clf, data, text_column, label_column, encoding, strip_emoticons, batch_size, reliability,
        label_map=mapping, confusion=confusion,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(m, ensure_ascii=False))
    else:
        title = f"{run} on {data}" + (" (emoticons stripped)" if strip_emoticons else "")
        typer.echo(render_table(m, title))


# predict's options, named once here so that the command reads as what it does
AdapterSpecs = Annotated[
    list[str] | None, Opt(help="NAME=RUN_FOLDER, repeatable: several lora/adapter runs on one base")
]
InputSpec = Annotated[
    str | None,
    Opt(help="Texts to score: a .txt/.csv/.tsv/.jsonl/.parquet file, a folder or a glob"),
]
OutputPath = Annotated[
    Path | None,
    Opt(help="Write predictions here: .csv, .tsv, .jsonl, .parquet, or a folder (per shard)"),
]
InputTextColumn = Annotated[
    str | None, Opt(help="Text column (default: review, text, content or the only column)")
]
Prefix = Annotated[
    str, Opt(help="Names of the columns --input adds: PREFIX+label, +score, +p_positive, ...")
]
Resume = Annotated[
    bool, Opt(help="Continue an interrupted --output where it stopped (local engine)")
]
ChunkRows = Annotated[
    int, Opt(min=1, help="Rows per committed chunk of --output (what a kill can cost)")
]
RayAddress = Annotated[
    str | None, Opt(help="Ray cluster to join (e.g. auto); default: start a local Ray")
]
CpusPerWorker = Annotated[
    float | None, Opt(min=0.01, help="Ray engine: CPUs per actor (default: leave one for reading)")
]


@app.command()
def predict(
    run: Annotated[Path | None, typer.Argument(help="Run folder (or use --adapter)")] = None,
    adapter: AdapterSpecs = None,
    use: Annotated[str | None, Opt(help="Adapter that answers (default: the first)")] = None,
    adapter_column: Annotated[
        str, Opt(help="Column of --input naming each row's adapter")
    ] = "adapter",
    text: Annotated[list[str] | None, Opt(help="Text to classify (repeatable); no console")] = None,
    input: InputSpec = None,
    output: OutputPath = None,
    base_model: RunBase = None,
    text_column: InputTextColumn = None,
    encoding: Encoding = None,
    batch_size: BatchSize = None,
    precision: InferPrecision = "auto",
    as_json: Annotated[bool, Opt("--json", help="Print JSON lines instead of text")] = False,
    prefix: Prefix = "pred_",
    overwrite: Annotated[bool, Opt(help="Replace an existing --output")] = False,
    resume: Resume = False,
    chunk_rows: ChunkRows = 4096,
    engine: Annotated[str, Opt(help="local | ray (extra: ray)")] = "local",
    ray_address: RayAddress = None,
    workers: Annotated[int, Opt(min=1, help="Ray engine: model replicas (actors)")] = 2,
    gpus_per_worker: Annotated[float, Opt(min=0.0, help="Ray engine: GPUs per actor")] = 0.0,
    cpus_per_worker: CpusPerWorker = None,
    allow_incomplete: AllowIncomplete = False,
    verbose: Annotated[
        bool, Opt(help="Say on stderr which inference path runs and the timings behind it")
    ] = False,
):
    """Classify texts: an interactive console, --text one-shot, or --input files of any size."""
    from . import bulk
    from .predict import console, load_classifier

    options = dict(locals())  # the flags, for the engine that scores the files
    check_predict_sources(text, input, output, resume, overwrite)
    if engine not in ("local", "ray"):
        raise UserError(f"--engine must be local or ray, not {engine!r}")
    if input is not None and engine == "ray":
        return predict_ray(options)
    if output is not None and output.suffix and not output.is_dir():
        from .tables import output_kind

        output_kind(output)  # refuse a bad suffix before the model loads
    bulk.precheck(output, resume, overwrite, input)  # before the model loads
    clf = load_classifier(run, adapter, base_model, precision, allow_incomplete)
    if verbose:
        typer.echo(clf.choice.summary(), err=True)
    if use:
        clf.use(use)
    if input is not None:
        score_files(clf, options)
    elif text:
        print_predictions(clf, text, batch_size, as_json)
    else:
        console(clf)


def score_files(clf, options: dict) -> None:
    from . import bulk

    predictor = bulk.Predictor(
        classifier=clf,
        text_column=options["text_column"],
        prefix=options["prefix"],
        adapter_column=options["adapter_column"],
        batch_size=options["batch_size"],
    )
    files = {k: options[k] for k in ("resume", "overwrite", "chunk_rows", "encoding")}
    stdout_kind = "jsonl" if options["as_json"] else "csv"
    summary = bulk.score(
        options["input"], options["output"], predictor, stdout_kind=stdout_kind, **files
    )
    typer.echo(summary.line(), err=True)


def print_predictions(clf, texts: list[str], batch_size: int, as_json: bool) -> None:
    from .predict import display_names, format_console

    for t, p in zip(texts, clf.predict(texts, batch_size)):
        if as_json:
            typer.echo(json.dumps({"text": t, **p.to_dict()}, ensure_ascii=False))
        else:
            typer.echo(format_console(p, clf.max_length, display_names(clf, p.adapter)))


def check_predict_sources(text, input, output, resume: bool, overwrite: bool) -> None:
    """One source of texts per call; file options only with files."""
    if text and input is not None:
        raise UserError("give --text or --input, not both (--text would be ignored)")
    if output is not None and input is None:
        raise UserError("--output needs --input")
    if (resume or overwrite) and output is None:
        raise UserError("--resume and --overwrite apply to an --output file")


RAY_OPTIONS = (
    "text_column",
    "prefix",
    "batch_size",
    "precision",
    "base_model",
    "overwrite",
    "encoding",
)
RAY_ONLY = ("workers", "gpus_per_worker", "cpus_per_worker")


def predict_ray(options: dict) -> None:
    from . import engine_ray

    if options["resume"] or options["adapter"]:
        raise UserError("--engine ray takes one run folder and no --resume (local engine)")
    if options["run"] is None:
        raise UserError("--engine ray scores with one run folder (no --adapter)")
    if options["output"] is None:
        raise UserError("--engine ray needs --output")
    chosen = {k: options[k] for k in RAY_OPTIONS + RAY_ONLY}
    summary = engine_ray.score(
        options["input"],
        options["output"],
        options["run"],
        address=options["ray_address"],
        **chosen,
    )
    typer.echo(summary.line(), err=True)


@app.command()
def explain(
    run: Annotated[Path | None, typer.Argument(help="Run folder (or use --adapter)")] = None,
    text: Annotated[list[str] | None, Opt(help="Post to explain (repeatable)")] = None,
    adapter: Annotated[
        list[str] | None, Opt(help="NAME=RUN_FOLDER, repeatable: several adapters on one base")
    ] = None,
    use: Annotated[str | None, Opt(help="Adapter that answers (default: the first)")] = None,
    steps: Annotated[
        int, Opt(min=1, max=2048, help="Integration steps to start with (doubled until complete)")
    ] = 64,
    base_model: RunBase = None,
    as_json: Annotated[bool, Opt("--json", help="Print JSON lines instead of colours")] = False,
    png: Annotated[
        Path | None, Opt(help="Also draw the posts, coloured, in this PNG (extra: compare)")
    ] = None,
    label: Annotated[
        str | None,
        Opt(
            help="Label to explain: green pushed toward it, red away (default: the predicted "
            "label; with two labels, the second)"
        ),
    ] = None,
):
    """Why a post got its label: per-character integrated gradients (green pushed toward the
    explained label, red away from it), with the completeness check."""
    need_extra("captum", "explain", "explain")
    check_explain_png(png)
    from .explain import explain as explain_post
    from .explain import render_console, summary_lines
    from .predict import load_classifier

    if not text:
        raise UserError("give the post to explain with --text")
    clf = load_classifier(run, adapter, base_model, "fp32")
    if use:
        clf.use(use)
    if label is not None and label not in clf.labels:
        raise UserError(
            f"--label {label!r} is not one of the run's labels: {', '.join(clf.labels)}"
        )
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True)  # no hard breaks when piped
    done = []
    for post in text:
        done.append(explain_post(clf, post, steps=steps, label=label))
        if as_json:
            typer.echo(json.dumps(done[-1].to_dict(), ensure_ascii=False))
            continue
        out.print(render_console(done[-1]))
        for line in summary_lines(done[-1]):
            out.print(line, markup=False)
    if png is not None:
        from .report import plot_explanations

        plot_explanations(done, [clf.active_adapter or "model"] * len(done), png)
        typer.echo(f"figure written to {png}", err=True)


def check_explain_png(png: Path | None) -> None:
    if png is not None:
        need_extra("matplotlib", "compare", "explain --png")
        if png.suffix.lower() != ".png":
            raise UserError(f"--png must name a .png file, not {png.name}")
        if png.is_dir():
            raise UserError(f"--png {png} is a directory; give a file name")


@app.command()
def merge(
    run: Annotated[Path, typer.Argument(help="A lora run (or an adapter run with --export)")],
    out: Annotated[Path, Opt(help="Output folder")],
    export: Annotated[
        bool, Opt(help="Adapter runs: write base + adapter as one self-contained run folder")
    ] = False,
    base_model: RunBase = None,
    overwrite: Annotated[bool, Opt(help="Replace an existing folder at --out")] = False,
):
    """Fold LoRA into the base: a plain transformers folder (no peft needed to load it)."""
    from .merge import merge as run_merge

    typer.echo(f"written {run_merge(run, out, base_model, export, overwrite)}")


@app.command()
def combine(
    runs: Annotated[list[Path], typer.Argument(help="LoRA run folders on the same base")],
    out: Annotated[Path, Opt(help="Output run folder")],
    weights: Annotated[list[float] | None, Opt(help="One weight per run (default: equal)")] = None,
    combination_type: Annotated[
        str, Opt(help="PEFT add_weighted_adapter type: cat | linear | svd | ties | dare_ties | ...")
    ] = "cat",
    head: Annotated[
        str, Opt(help="'weighted' (heads mixed with the weights) or the index of one run's head")
    ] = "weighted",
    density: Annotated[
        float | None, Opt(min=0.0, max=1.0, help="Density for ties/dare/magnitude_prune")
    ] = None,
    base_model: RunBase = None,
    overwrite: Annotated[bool, Opt(help="Replace an existing folder at --out")] = False,
):
    """Weighted combination of LoRA runs into a new LoRA run."""
    from .combine import combine as run_combine

    weights = weights or [1.0 / len(runs)] * len(runs)
    done = run_combine(runs, weights, out, combination_type, head, base_model, density, overwrite)
    typer.echo(f"written {done}")


LabelNames = Annotated[
    list[str] | None,
    Opt(help="Label names in order, e.g. negative,neutral,positive (default: from the data)"),
]
ClassWeights = Annotated[
    str, Opt(help="none | balanced (every method, TF-IDF's logistic regression too)")
]


@app.command()
def compare(
    data: Annotated[str, Opt(help="Training CSV/TSV/JSONL")],
    out: Annotated[Path, Opt(help="Report folder (comparison.md/.json, PNG plots, runs/)")],
    base_model: Annotated[
        str, Opt(help="GPT-2 folder or hub id")
    ] = "uer/gpt2-chinese-cluecorpussmall",
    dev_data: Annotated[str | None, Opt(help="Dev file (default: 10% split of --data)")] = None,
    extra_test: Annotated[
        list[str] | None, Opt(help="NAME=FILE, repeatable: more labelled test sets")
    ] = None,
    human_data: Annotated[
        Path | None,
        Opt(
            help="Folder with the human-labelled sets (weibo2018/, smp2020_usual/, "
            "nlpcc_emotion/); default $WEIBO_SENTI_HUMAN_DATA, else shared/data or ../shared/data"
        ),
    ] = None,
    methods: Annotated[
        list[str] | None,
        Opt("--method", help="Repeat to choose (default: full adapter lora tfidf)"),
    ] = None,
    repeats: Annotated[int, Opt(min=1, help="Seeds per method; the table shows mean ± std")] = 1,
    seed: Annotated[
        int, Opt(min=0, max=2**32 - 1, help="First seed; repeats use seed, seed+1, ...")
    ] = 42,
    epochs: Annotated[int, Opt(min=1, help="Epochs for every neural method")] = 3,
    max_length: Annotated[
        int, Opt(min=3, help="Max tokens per post, at most the base's positions")
    ] = 160,
    max_train_samples: Annotated[
        int | None,
        Opt(min=1, help="Train every method on the same seeded sample of this many rows"),
    ] = None,
    precision: Annotated[str, Opt(help="Training precision: auto | fp32 | bf16 | fp16")] = "auto",
    labels: LabelNames = None,
    label_map: LabelMap = None,
    class_weights: ClassWeights = "none",
):
    """Train every method on the same data and base; table, JSON and plots of the results.
    Any label set: test sets are read with the task's labels; the human-labelled
    (negative/positive) sets are scored only when the task is negative/positive."""
    need_extra("matplotlib", "compare", "compare")
    from .compare import compare as run_compare

    human_data = human_data_root(human_data)
    extra = extra_test_files(extra_test)
    command = compare_command(dict(locals()))
    options = compare_train_options(dict(locals()))
    run_compare(
        base_model, data, dev_data, out, extra, methods, human_data, repeats, seed, command,
        child_setup=configure_process, **options,
    )  # fmt: skip
    typer.echo(f"report written to {out / 'comparison.md'}")


def compare_train_options(o: dict) -> dict:
    """What every method of a comparison trains with (TrainConfig fields)."""
    keys = ("epochs", "max_length", "max_train_samples", "precision", "class_weights")
    options = {k: o[k] for k in keys}
    if o["labels"]:
        options["labels"] = o["labels"]
    if o["label_map"]:
        options["label_map"] = parse_label_map(o["label_map"])
    return options


def human_data_root(given: Path | None) -> Path | None:
    """The human-labelled sets: the folder given (which must hold one), else the default."""
    from .compare import HUMAN_SETS, default_human_root, human_sets

    if given is not None and not human_sets(given):
        expected = ", ".join(HUMAN_SETS.values())
        raise UserError(f"no human-labelled set under {given} (looked for {expected})")
    return given or default_human_root()  # compare warns when a binary task has none


def extra_test_files(specs: list[str] | None) -> dict[str, str]:
    extra = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--extra-test wants NAME=FILE, not {spec!r}")
        extra[name] = path
    return extra


def compare_command(o: dict) -> str:
    """The command line that reproduces a comparison, written into its report."""
    parts = ["weibo-senti compare", f"--base-model {o['base_model']}", f"--data {o['data']}"]
    parts += [f"--dev-data {o['dev_data']}"] if o["dev_data"] else []
    parts += [f"--extra-test {spec}" for spec in o["extra_test"] or []]
    parts += [f"--human-data {o['human_data']}"] if o["human_data"] else []
    parts += [f"--method {m}" for m in o["methods"] or []]
    parts += [f"--labels {','.join(o['labels'])}"] if o["labels"] else []
    parts += [f"--label-map {o['label_map']}"] if o["label_map"] else []
    parts += [f"--class-weights {o['class_weights']}"] if o["class_weights"] != "none" else []
    parts += [f"--epochs {o['epochs']}", f"--repeats {o['repeats']}", f"--seed {o['seed']}"]
    parts += [f"--max-length {o['max_length']}"] if o["max_length"] != 160 else []
    samples = o["max_train_samples"]
    parts += [f"--max-train-samples {samples}"] if samples else []
    parts += [f"--precision {o['precision']}", f"--out {o['out']}"]
    return " ".join(parts)


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="Run folder")],
    out: Annotated[Path | None, Opt(help="PNG path (default: RUN/report.png)")] = None,
):
    """Plot a run's training loss and dev metrics per epoch (PNG)."""
    need_extra("matplotlib", "compare", "report")
    from .report import plot_run

    typer.echo(f"written {plot_run(run, out)}")


@app.command()
def serve(
    run: Annotated[Path | None, typer.Argument(help="Run folder (or use --adapter)")] = None,
    adapter: Annotated[
        list[str] | None, Opt(help="NAME=RUN_FOLDER, repeatable: several adapters on one base")
    ] = None,
    host: Annotated[str, Opt(help="Address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, Opt(help="Port to listen on (1-65535)")] = 8000,
    base_model: RunBase = None,
    precision: InferPrecision = "auto",
    max_batch: Annotated[int, Opt(help="Texts per micro-batch")] = 32,
    max_wait_ms: Annotated[float, Opt(help="How long a micro-batch gathers requests")] = 5.0,
    queue_size: Annotated[int, Opt(help="Requests waiting before 503 + Retry-After")] = 256,
    micro_batching: Annotated[bool, Opt(help="Gather concurrent requests into one batch")] = True,
    timeout_keep_alive: Annotated[float, Opt(help="Seconds an idle connection is kept")] = 5.0,
    timeout_request: Annotated[float, Opt(help="Seconds for a whole request to arrive")] = 15.0,
    max_connections: Annotated[int, Opt(help="Connections + requests; beyond them 503")] = 512,
    max_explain_steps: Annotated[int, Opt(help="Most integration steps per explanation")] = 512,
    explain_queue: Annotated[int, Opt(help="Explanations waiting; beyond them 503")] = 2,
    adapter_root: Annotated[
        Path | None,
        Opt(help="Folder whose runs POST /v1/adapters may load (nothing outside it is opened)"),
    ] = None,
    admin_token: Annotated[
        str | None,
        Opt(
            help="Token for loading/unloading adapters (Authorization: Bearer); none: off. "
            "Prefer the environment variable: a flag is visible in ps",
            envvar="WEIBO_SENTI_ADMIN_TOKEN",
            show_default=False,
        ),
    ] = None,
    max_adapters: Annotated[
        int,
        Opt(
            help="Adapters loaded at once, those given here included; loading one more evicts "
            "the least recently used (the first one too)"
        ),
    ] = 16,
):
    """Serve predictions over HTTP: POST /v1/predict, POST / (Inference API), POST /predict
    (TEI), GET /metrics, /health, a page at /; GET /v1/adapters, and with --admin-token and
    --adapter-root, POST /v1/adapters (load) and DELETE /v1/adapters/NAME (unload)."""
    # first, while it holds the flags only: every server flag goes on by its own name
    server = dict(locals())
    for module in ("fastapi", "fastapi_offline", "uvicorn"):
        need_extra(module, "serve", "serve")
    from .predict import load_classifier
    from .serve import OPTION_RULES, check_bind, check_options
    from .serve import serve as run_server

    # every refusal comes before the model loads
    check_options(**{k: v for k, v in server.items() if k in OPTION_RULES})
    server["admin_token"] = admin_token = (admin_token or "").strip() or None  # file's newline
    check_serve_adapters(run, adapter, adapter_root, admin_token, max_adapters)
    check_bind(host, port)
    clf = load_classifier(run, adapter, base_model, precision)
    typer.echo(serving_line(clf, run, host, port), err=True)
    for name in ("run", "adapter", "base_model", "precision"):
        del server[name]
    run_server(clf, **server)


def serving_line(clf, run, host: str, port: int) -> str:
    """Where the server listens, what it serves, and the inference path it runs."""
    served = ", ".join(clf.adapters) or run
    return f"serving {served} on http://{host}:{port}/; {clf.choice.headline()}"


def check_serve_adapters(run, adapters, root, token, max_adapters: int) -> None:
    """Refuse what cannot work before the model loads; say what will not work."""
    if root is not None and not root.is_dir():
        raise UserError(f"--adapter-root {root} is not a folder")
    given = (run is not None) + len(adapters or [])
    if max_adapters < 1 or given > max_adapters:
        raise UserError(f"--max-adapters {max_adapters}: at least 1 and the {given} given")
    if root is not None and not token:
        typer.echo("--adapter-root without --admin-token: adapters cannot be loaded", err=True)
    if token and root is None:
        typer.echo("--admin-token without --adapter-root: adapters can be unloaded only", err=True)


def expand_multi_value(argv: list[str], option: str = "--weights", takes=None) -> list[str]:
    """Accept `--weights 0.5 0.5` (click wants the option repeated for each value); also
    `--data-weights 1 3`, and `--data a.csv b.csv` (a shell's `--data crawl/*.csv`)."""
    takes = takes or _is_number
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == option:
            values = []
            while i + 1 < len(argv) and takes(argv[i + 1]):
                values.append(argv[i + 1])
                i += 1
            out[-1:] = [x for v in values for x in (option, v)] or [option]
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def configure_process() -> None:
    """Process-wide settings belong to the command, never to the library."""
    import warnings

    # Our own progress lines at INFO; other libraries only from WARNING up (ONNX Runtime's
    # quantizer logs a line per tensor to the root logger).
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("weibo_senti").setLevel(logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # a line per checkpoint file
    # The one-time ONNX export (onnx_runtime.py): torch lists exporters it skips, warns about
    # axis names, and ONNX Runtime's quantizer suggests a pre-processing step; none of it is
    # for the user, who sees our one line saying that the export runs.
    logging.getLogger().handlers[0].addFilter(
        lambda record: record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname
    )
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
    # transformers warns about uer's out-of-vocabulary bos/eos ids and the fresh head; PEFT
    # calls deprecated helpers: noise to someone running a command.
    warnings.filterwarnings("ignore", category=FutureWarning)
    # torch deprecates the quantized-tensor functions behind dynamic int8 (still its CPU path)
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
    import transformers

    transformers.logging.set_verbosity_error()
    # The exporter's list of skipped torchvision ops; named at the leaf because torch's own
    # logging setup sets levels on the loggers above it.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    transformers.logging.disable_progress_bar()
    if "OMP_NUM_THREADS" not in os.environ and hasattr(os, "sched_getaffinity"):
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))  # every core we may use


def main() -> None:
    configure_process()
    argv = expand_multi_value(sys.argv[1:])
    argv = expand_multi_value(argv, "--data-weights")
    if argv[:1] in (["train"], ["pretrain"]):  # their only multi-value option taking paths
        argv = expand_multi_value(argv, "--data", lambda arg: not arg.startswith("-"))
    sys.exit(run_cli(argv))


def run_cli(argv: list[str]) -> int:
    """The command's edge: a usage error, our ``UserError`` and the known library errors a user
    can cause (errors.one_line) end as one ``error:`` line and exit code 2; bugs keep their
    traceback. click runs without its standalone mode so that its usage errors come here too,
    as one line instead of a framed box."""
    if not argv:
        argv = ["--help"]  # click's no-args help raises instead of printing when not standalone
    try:
        code = app(args=argv, standalone_mode=False, prog_name="weibo-senti")
    except typer.Abort:  # Ctrl-C outside training (which says how to resume itself)
        typer.echo("\ninterrupted", err=True)
        return 130
    except Exception as e:
        line = usage_error(e)
        if line is None:
            from .errors import one_line

            line = one_line(e)
        if line is None:
            raise
        typer.echo(f"error: {' '.join(line.split())}", err=True)  # one line, always
        return 2
    return code if isinstance(code, int) else 0


def usage_error(error: Exception) -> str | None:
    """click's usage errors (typer vendors click, so matched by interface, not class)."""
    if not (hasattr(error, "format_message") and hasattr(error, "ctx")):
        return None
    ctx = error.ctx
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return f"{error.format_message()}{where}"


if __name__ == "__main__":  # `accelerate launch -m weibo_senti.cli train ...`
    main()
