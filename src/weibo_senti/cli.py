"""The `weibo-senti` command: one verb per job, each a typed function with a docstring."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fine-tune a Chinese GPT-2 for Weibo sentiment (0 negative, 1 positive) and use it.",
    pretty_exceptions_enable=False,
)
log = logging.getLogger("weibo_senti")

Opt = typer.Option


@app.command()
def train(
    method: Annotated[str | None, Opt(help="lora | adapter | full  (default: lora)")] = None,
    data: Annotated[
        str | None, Opt(help="Training CSV/TSV/JSONL (default: weibo_senti_100k)")
    ] = None,
    dev_data: Annotated[
        str | None, Opt(help="Dev file (default: seeded 90/10 split of --data)")
    ] = None,
    base_model: Annotated[
        str | None, Opt(help="GPT-2 folder or hub id (default: uer/gpt2-chinese-cluecorpussmall)")
    ] = None,
    out: Annotated[str | None, Opt(help="Run folder (default: runs/<method>)")] = None,
    config: Annotated[
        Path | None,
        Opt(help="YAML file of options (e.g. a run's hyperparameters.yaml); flags override it"),
    ] = None,
    text_column: Annotated[str | None, Opt(help="Text column (default: review)")] = None,
    label_column: Annotated[str | None, Opt(help="Label column (0/1) (default: label)")] = None,
    encoding: Annotated[
        str | None, Opt(help="File encoding (default: detect UTF-8/BOM/GBK)")
    ] = None,
    dev_fraction: Annotated[
        float | None, Opt(help="Dev share when no --dev-data (default: 0.1)")
    ] = None,
    max_train_samples: Annotated[
        int | None, Opt(help="Train on a seeded sample of this many rows")
    ] = None,
    max_length: Annotated[int | None, Opt(help="Max tokens per text (default: 160)")] = None,
    epochs: Annotated[int | None, Opt(help="(default: 3)")] = None,
    batch_size: Annotated[int | None, Opt(help="(default: 16)")] = None,
    eval_batch_size: Annotated[int | None, Opt(help="(default: 64)")] = None,
    lr: Annotated[float | None, Opt(help="(default: 5e-4 lora, 1e-3 adapter, 2e-5 full)")] = None,
    weight_decay: Annotated[float | None, Opt(help="AdamW weight decay (default: 0.01)")] = None,
    warmup_ratio: Annotated[float | None, Opt(help="Linear warm-up share (default: 0.1)")] = None,
    max_grad_norm: Annotated[float | None, Opt(help="Gradient clipping (default: 1.0)")] = None,
    seed: Annotated[int | None, Opt(help="(default: 42)")] = None,
    precision: Annotated[
        str | None,
        Opt(
            help="Mixed precision: auto (bf16 on AMX/AVX512-BF16 CPUs and bf16 GPUs) | no | bf16 | fp16 (default: auto)"
        ),
    ] = None,
    group_by_length: Annotated[
        bool | None,
        Opt(
            "--group-by-length/--no-group-by-length",
            help="Batch similar lengths together (default: on)",
        ),
    ] = None,
    logging_steps: Annotated[int | None, Opt(help="(default: 50)")] = None,
    save_steps: Annotated[
        int | None, Opt(help="Resumable checkpoint every N steps (default: 500)")
    ] = None,
    lora_r: Annotated[int | None, Opt(help="(default: 8)")] = None,
    lora_alpha: Annotated[int | None, Opt(help="(default: 32)")] = None,
    lora_dropout: Annotated[float | None, Opt(help="(default: 0.1)")] = None,
    lora_target_modules: Annotated[
        list[str] | None, Opt(help="Repeat per module (default: c_attn c_proj)")
    ] = None,
    adapter_size: Annotated[int | None, Opt(help="Bottleneck width (default: 64)")] = None,
    resume: Annotated[
        bool, Opt(help="Continue the interrupted run in --out from its checkpoint")
    ] = False,
    overwrite: Annotated[bool, Opt(help="Replace an existing run in --out")] = False,
):
    """Fine-tune the base model and write a self-contained run folder."""
    options = {k: v for k, v in locals().items() if k not in ("config", "resume", "overwrite")}
    from .config import TrainConfig
    from .train import train as run_training

    if resume:  # the folder named by --out, whatever `out` its hyperparameters recorded
        folder = Path(out or f"runs/{method or 'lora'}")
        from .runfolder import read_hyperparameters

        cfg = TrainConfig.from_sources(read_hyperparameters(folder), out=str(folder))
    else:
        cfg = TrainConfig.from_sources(config, **options)
    clf = run_training(cfg, resume=resume, overwrite=overwrite)
    typer.echo(f"run saved to {clf.run}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder")],
    data: Annotated[str, Opt(help="Labelled CSV/TSV/JSONL")],
    base_model: Annotated[
        str | None, Opt(help="Base model folder, if not the recorded one")
    ] = None,
    text_column: str = "review",
    label_column: str = "label",
    encoding: Annotated[str | None, Opt(help="(default: detect)")] = None,
    strip_emoticons: Annotated[
        bool, Opt(help="Remove emoticons such as 哈哈 in brackets before predicting")
    ] = False,
    batch_size: int = 16,
    precision: Annotated[
        str, Opt(help="auto (bf16 where fast, else fp32) | fp32 | bf16 | int8 (dynamic, CPU)")
    ] = "auto",
    as_json: Annotated[
        bool, Opt("--json", help="Print one JSON object instead of a table")
    ] = False,
):
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix and loss on a file."""
    from .evaluate import evaluate as run_eval
    from .metrics import render_table
    from .predict import SentimentClassifier

    clf = SentimentClassifier.load(run, base_model=base_model, precision=precision)
    m = run_eval(clf, data, text_column, label_column, encoding, strip_emoticons, batch_size)
    if as_json:
        typer.echo(json.dumps(m, ensure_ascii=False))
    else:
        title = f"{run} on {data}" + (" (emoticons stripped)" if strip_emoticons else "")
        typer.echo(render_table(m, title))


@app.command()
def predict(
    run: Annotated[Path | None, typer.Argument(help="Run folder (or use --adapter)")] = None,
    adapter: Annotated[
        list[str] | None,
        Opt(help="NAME=RUN_FOLDER, repeatable: several lora/adapter runs on one base"),
    ] = None,
    use: Annotated[str | None, Opt(help="Adapter that answers (default: the first)")] = None,
    adapter_column: Annotated[
        str, Opt(help="Column of --input naming each row's adapter")
    ] = "adapter",
    text: Annotated[list[str] | None, Opt(help="Text to classify (repeatable); no console")] = None,
    input: Annotated[
        Path | None, Opt(help="File of texts: .txt (one per line), .csv, .tsv, .jsonl")
    ] = None,
    output: Annotated[
        Path | None, Opt(help="Write predictions here (.csv, .tsv or .jsonl)")
    ] = None,
    base_model: Annotated[
        str | None, Opt(help="Base model folder, if not the recorded one")
    ] = None,
    text_column: str = "review",
    encoding: Annotated[str | None, Opt(help="(default: detect)")] = None,
    batch_size: int = 16,
    precision: Annotated[
        str, Opt(help="auto (bf16 where fast, else fp32) | fp32 | bf16 | int8 (dynamic, CPU)")
    ] = "auto",
    as_json: Annotated[bool, Opt("--json", help="Print JSON lines instead of text")] = False,
):
    """Classify texts: an interactive console, --text one-shot, or --input batch files."""
    from .predict import console, format_console, load_classifier, predict_file, serialize

    if output is not None and input is None:
        raise UserError("--output needs --input")
    if output is not None:
        serialize([], output)  # refuse a bad suffix before the model loads
    clf = load_classifier(run, adapter, base_model, precision)
    if use:
        clf.use(use)
    if input is not None:
        rows = predict_file(clf, input, output, text_column, encoding, batch_size, adapter_column)
        if output is None:
            typer.echo(serialize(rows, Path("stdout.jsonl" if as_json else "stdout.csv")), nl=False)
        else:
            typer.echo(f"{len(rows)} predictions written to {output}", err=True)
    elif text:
        for t, p in zip(text, clf.predict(text, batch_size)):
            if as_json:
                typer.echo(json.dumps({"text": t, **p.to_dict()}, ensure_ascii=False))
            else:
                typer.echo(format_console(p, clf.max_length))
    else:
        console(clf)


@app.command()
def merge(
    run: Annotated[Path, typer.Argument(help="A lora run (or an adapter run with --export)")],
    out: Annotated[Path, Opt(help="Output folder")],
    export: Annotated[
        bool, Opt(help="Adapter runs: write base + adapter as one self-contained run folder")
    ] = False,
    base_model: Annotated[str | None, Opt(help="Base model, if not the recorded one")] = None,
    overwrite: bool = False,
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
    density: Annotated[float | None, Opt(help="Density for ties/dare/magnitude_prune")] = None,
    base_model: Annotated[str | None, Opt(help="Base model, if not the recorded one")] = None,
    overwrite: bool = False,
):
    """Weighted combination of LoRA runs into a new LoRA run."""
    from .combine import combine as run_combine

    weights = weights or [1.0 / len(runs)] * len(runs)
    done = run_combine(runs, weights, out, combination_type, head, base_model, density, overwrite)
    typer.echo(f"written {done}")


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
    methods: Annotated[
        list[str] | None,
        Opt("--method", help="Repeat to choose (default: full adapter lora tfidf)"),
    ] = None,
    repeats: Annotated[int, Opt(help="Seeds per method; the table shows mean ± std")] = 1,
    seed: int = 42,
    epochs: Annotated[int, Opt(help="Epochs for every neural method")] = 3,
    max_train_samples: Annotated[
        int | None, Opt(help="Train every method on the same seeded sample of this many rows")
    ] = None,
    precision: Annotated[str, Opt(help="auto | no | bf16 | fp16")] = "auto",
):
    """Train every method on the same data and base; table, JSON and plots of the results."""
    from .compare import compare as run_compare

    extra = {}
    for spec in extra_test or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--extra-test wants NAME=FILE, not {spec!r}")
        extra[name] = path
    parts = ["weibo-senti compare", f"--base-model {base_model}", f"--data {data}"]
    parts += [f"--dev-data {dev_data}"] if dev_data else []
    parts += [f"--extra-test {spec}" for spec in extra_test or []]
    parts += [f"--method {m}" for m in methods or []]
    parts += [f"--epochs {epochs}", f"--repeats {repeats}", f"--seed {seed}"]
    parts += [f"--max-train-samples {max_train_samples}"] if max_train_samples else []
    parts += [f"--precision {precision}", f"--out {out}"]
    command = " ".join(parts)
    run_compare(
        base_model,
        data,
        dev_data,
        out,
        extra,
        methods,
        repeats,
        seed,
        command,
        epochs=epochs,
        max_train_samples=max_train_samples,
        precision=precision,
    )
    typer.echo(f"report written to {out / 'comparison.md'}")


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="Run folder")],
    out: Annotated[Path | None, Opt(help="PNG path (default: RUN/report.png)")] = None,
):
    """Plot a run's training loss and dev metrics per epoch from its metrics.jsonl."""
    from .report import plot_run

    typer.echo(f"written {plot_run(run, out)}")


@app.command()
def serve(
    run: Annotated[Path | None, typer.Argument(help="Run folder (or use --adapter)")] = None,
    adapter: Annotated[
        list[str] | None, Opt(help="NAME=RUN_FOLDER, repeatable: several adapters on one base")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    base_model: Annotated[str | None, Opt(help="Base model, if not the recorded one")] = None,
    precision: Annotated[str, Opt(help="auto | fp32 | bf16 | int8")] = "auto",
    max_batch: Annotated[int, Opt(help="Texts per micro-batch")] = 32,
    max_wait_ms: Annotated[float, Opt(help="How long a micro-batch gathers requests")] = 5.0,
    queue_size: Annotated[int, Opt(help="Requests waiting before 503 + Retry-After")] = 256,
    micro_batching: Annotated[bool, Opt(help="Gather concurrent requests into one batch")] = True,
):
    """Serve predictions over HTTP: POST /v1/predict, GET /v1/adapters, /health, a page at /."""
    from .predict import load_classifier
    from .serve import serve as run_server

    clf = load_classifier(run, adapter, base_model, precision)
    typer.echo(f"serving {', '.join(clf.adapters) or run} on http://{host}:{port}/", err=True)
    run_server(
        clf,
        host,
        port,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        micro_batching=micro_batching,
    )


def expand_multi_value(argv: list[str], option: str = "--weights") -> list[str]:
    """Accept `--weights 0.5 0.5` (click wants the option repeated for each value)."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == option:
            values = []
            while i + 1 < len(argv) and _is_number(argv[i + 1]):
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
    import os
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # a line per checkpoint file
    # transformers warns about uer's out-of-vocabulary bos/eos ids and the fresh head; PEFT
    # calls deprecated helpers: noise to someone running a command.
    warnings.filterwarnings("ignore", category=FutureWarning)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if "OMP_NUM_THREADS" not in os.environ and hasattr(os, "sched_getaffinity"):
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))  # every core we may use


def main() -> None:
    configure_process()
    try:
        app(args=expand_multi_value(sys.argv[1:]))
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted (a training run continues with --resume)", err=True)
        sys.exit(130)


if __name__ == "__main__":  # `accelerate launch -m weibo_senti.cli train ...`
    main()
