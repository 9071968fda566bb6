"""Multi-task integration run: Weibo and food-delivery (waimai) LoRA adapters on one base,
each alone and combined, evaluated on both tasks.

    python scripts/multitask.py            # reads ../shared, writes runs/multitask and docs/

Needs a Weibo LoRA run (default runs/integration/lora, from scripts/integration.py).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from weibo_senti import SentimentClassifier, TrainConfig, runfolder
from weibo_senti.cli import configure_process
from weibo_senti.combine import combine
from weibo_senti.data import read_labelled, split_dev
from weibo_senti.errors import UserError
from weibo_senti.evaluate import evaluate
from weibo_senti.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared"


def write_csv(path: Path, examples) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "review"])
        w.writerows(zip(examples.labels, examples.texts))
    return path


def is_complete(run: Path) -> bool:
    """A finished training run (an interrupted one is trained again)."""
    try:
        return runfolder.read_info(run).complete
    except UserError:
        return False


def train_waimai(args, work: Path) -> tuple[Path, Path]:
    """A LoRA run on a seeded 90% of waimai_10k (kept if already complete), and its dev file."""
    train_set, dev_set = split_dev(read_labelled(args.waimai), 0.1, seed=42)
    waimai_train = write_csv(work / "waimai_train.csv", train_set)
    waimai_dev = write_csv(work / "waimai_dev.csv", dev_set)
    waimai_run = work / "waimai"
    if not is_complete(waimai_run):
        train(
            TrainConfig(
                method="lora",
                base_model=args.base_model,
                data=str(waimai_train),
                dev_data=str(waimai_dev),
                out=str(waimai_run),
                epochs=args.epochs,
                max_train_samples=args.train_rows,
            ),
            overwrite=True,
        )
    return waimai_run, waimai_dev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-model", default=str(SHARED / "models/gpt2-mini-zh"))
    ap.add_argument("--weibo-run", default="runs/integration/lora")
    ap.add_argument("--weibo-dev", default=str(SHARED / "data/weibo_senti_100k/dev.csv"))
    ap.add_argument("--waimai", default=str(SHARED / "data/waimai_10k.csv"))
    ap.add_argument("--train-rows", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--work", default="runs/multitask")
    ap.add_argument("--report", default="docs/studies/multitask")
    args = ap.parse_args()
    configure_process()  # INFO logging, quiet transformers, every core
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    waimai_run, waimai_dev = train_waimai(args, work)
    combined = combine(
        [Path(args.weibo_run), waimai_run], [0.5, 0.5], work / "combined", overwrite=True
    )

    clf = SentimentClassifier.load(args.weibo_run, precision="fp32", merge=False, name="weibo")
    clf.add_adapter("waimai", waimai_run)
    clf.add_adapter("combined", combined)
    tasks = {"weibo dev": args.weibo_dev, "waimai dev": str(waimai_dev)}
    results = {}
    for adapter in clf.adapters:
        clf.use(adapter)
        results[adapter] = {
            task: round(evaluate(clf, path)["accuracy"], 4) for task, path in tasks.items()
        }
        print(adapter, results[adapter], flush=True)

    lines = [
        f"Base `{Path(args.base_model).name}`; weibo = `{args.weibo_run}` (6,000 weibo_senti_100k "
        f"rows, 2 epochs); waimai = LoRA on {args.train_rows} rows of a seeded 90% split of "
        f"waimai_10k, {args.epochs} epochs; combined = `weibo-senti combine` with weights "
        "0.5/0.5, combination `cat`, heads averaged. All three served by one base in memory.",
        "",
        "| adapter | weibo dev accuracy | waimai dev accuracy |",
        "|---|---|---|",
    ]
    for adapter, r in results.items():
        lines.append(f"| {adapter} | {r['weibo dev']:.4f} | {r['waimai dev']:.4f} |")
    Path(args.report).with_suffix(".md").write_text("\n".join(lines) + "\n")
    Path(args.report).with_suffix(".json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
