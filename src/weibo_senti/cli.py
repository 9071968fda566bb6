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

    if resume:
        folder = Path(out or f"runs/{method or 'lora'}")
        saved = folder / "hyperparameters.yaml"
        if not saved.is_file():
            raise UserError(f"{folder} has no hyperparameters.yaml to resume")
        cfg = TrainConfig.from_sources(saved)
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
    run: Annotated[Path, typer.Argument(help="Run folder")],
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
    from .predict import SentimentClassifier, console, format_console, predict_file, serialize

    if output is not None and input is None:
        raise UserError("--output needs --input")
    if output is not None:
        serialize([], output)  # refuse a bad suffix before the model loads
    clf = SentimentClassifier.load(run, base_model=base_model, precision=precision)
    if input is not None:
        rows = predict_file(clf, input, output, text_column, encoding, batch_size)
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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted (a training run continues with --resume)", err=True)
        sys.exit(130)
