"""Integration run (not a unit test): train each method on gpt2-mini-zh with real Weibo data.

    python scripts/integration.py --train-rows 6000 --epochs 2

Reads ../shared (model and data), writes runs under --runs and a report (JSON + Markdown).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from weibo_senti import TrainConfig, runfolder
from weibo_senti.cli import configure_process
from weibo_senti.evaluate import evaluate
from weibo_senti.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-model", default=str(SHARED / "models/gpt2-mini-zh"))
    ap.add_argument("--train", default=str(SHARED / "data/weibo_senti_100k/train.csv"))
    ap.add_argument("--dev", default=str(SHARED / "data/weibo_senti_100k/dev.csv"))
    ap.add_argument("--weibo2018", default=str(SHARED / "data/weibo2018/train.csv"))
    ap.add_argument("--train-rows", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["lora", "adapter", "full"])
    ap.add_argument("--runs", default="runs/integration")
    ap.add_argument("--report", default="docs/studies/integration")
    args = ap.parse_args()
    configure_process()  # INFO logging, quiet transformers, every core
    results = {}
    for method in args.methods:
        results[method] = run_method(args, method)
        print(method, json.dumps(results[method]), flush=True)
    write_report(args, results)


def run_method(args, method: str) -> dict:
    """Train one method, then its figures on dev (with and without emoticons) and weibo2018."""
    cfg = TrainConfig(
        method=method,
        base_model=args.base_model,
        data=args.train,
        dev_data=args.dev,
        out=f"{args.runs}/{method}",
        max_train_samples=args.train_rows,
        epochs=args.epochs,
    )
    t0 = time.perf_counter()
    clf = train(cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    best = runfolder.read_eval_results(clf.run)
    row = {
        "trainable_params": clf.info.trainable_params,
        "all_params": clf.info.all_params,
        "best_epoch": best["epoch"],
        "train_seconds": best["train_seconds"],
        "train_samples_per_second": best["train_samples_per_second"],
        "wall_seconds": round(seconds, 1),
    }
    for name, data, strip in [
        ("dev", args.dev, False),
        ("dev_stripped", args.dev, True),
        ("weibo2018", args.weibo2018, False),
    ]:
        m = evaluate(clf, data, strip=strip)
        row[f"{name}_accuracy"] = round(m["accuracy"], 4)
        row[f"{name}_macro_f1"] = round(m["macro_f1"], 4)
    return row


def write_report(args, results: dict) -> None:
    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in vars(args).items() if k != "report"}
    out.with_suffix(".json").write_text(json.dumps({"args": meta, "results": results}, indent=2))
    lines = [
        f"Base `{Path(args.base_model).name}`, {args.train_rows} training rows sampled (seed 42) "
        f"from weibo_senti_100k/train.csv, {args.epochs} epochs, other settings default; "
        "dev = weibo_senti_100k/dev.csv (8,938 rows); weibo2018 = its 10,000 human-labelled rows.",
        "",
        "| method | trainable params | dev acc | dev macro-F1 | dev acc, emoticons stripped "
        "| weibo2018 acc | weibo2018 macro-F1 | train samples/s | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in results.items():
        share = 100 * r["trainable_params"] / r["all_params"]
        lines.append(
            f"| {method} | {r['trainable_params']:,} ({share:.2f}%) | {r['dev_accuracy']:.4f} "
            f"| {r['dev_macro_f1']:.4f} | {r['dev_stripped_accuracy']:.4f} "
            f"| {r['weibo2018_accuracy']:.4f} | {r['weibo2018_macro_f1']:.4f} "
            f"| {r['train_samples_per_second']:.1f} | {r['wall_seconds'] / 60:.1f} min |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
