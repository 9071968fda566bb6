"""Measure training recipes (not a unit test): train on gpt2-mini-zh with weibo_senti_100k and
evaluate on its dev split (as is, and emoticons stripped) and on the three human-labelled sets,
accuracy and expected calibration error (after the run's temperature).

    python scripts/recipe_sweep.py --methods lora --dropouts 0 0.5 1 --report docs/emoticon-dropout
    python scripts/recipe_sweep.py --methods lora --lrs 5e-4 1e-3 2e-3 --report docs/recipe-sweep

Every combination of the list options is trained. Reads ../shared (model and data); writes runs
under --runs and <report>.{json,md}; rows already in <report>.json are kept, not re-trained.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from weibo_senti import TrainConfig
from weibo_senti.cli import configure_process
from weibo_senti.compare import human_sets
from weibo_senti.evaluate import evaluate
from weibo_senti.files import write_json, write_text
from weibo_senti.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared"
HUMAN = human_sets(SHARED / "data")  # labelled by people, not by emoticons
SETS = ("dev", "dev_stripped", *HUMAN)
KNOBS = ("method", "emoticon_dropout", "lr", "lora_r", "epochs", "seed")


def measure(cfg: TrainConfig) -> dict:
    t0 = time.perf_counter()
    clf = train(cfg, overwrite=True)
    row = {"train_seconds": round(time.perf_counter() - t0, 1)}
    paths = {"dev": cfg.dev_data, "dev_stripped": cfg.dev_data}
    paths.update(HUMAN)
    for name, path in paths.items():
        m = evaluate(clf, path, strip=name == "dev_stripped")
        row[name] = m["accuracy"]
        row[f"{name}_ece"] = m["calibration"]["after"]["ece"]
    row["human_mean"] = sum(row[n] for n in HUMAN) / len(HUMAN)
    return row


def configs(args) -> list[TrainConfig]:
    grid = itertools.product(
        args.methods, args.dropouts, args.lrs or [None], args.lora_ranks, args.seeds
    )
    out = []
    for method, p, lr, rank, seed in grid:
        name = f"{method}-p{p}-lr{lr or 'default'}-r{rank}-e{args.epochs}-s{seed}"
        out.append(
            TrainConfig(
                method=method,
                base_model=args.base_model,
                data=str(SHARED / "data/weibo_senti_100k/train.csv"),
                dev_data=str(SHARED / "data/weibo_senti_100k/dev.csv"),
                out=f"{args.runs}/{name}",
                max_train_samples=args.train_rows,
                epochs=args.epochs,
                emoticon_dropout=p,
                lr=lr,
                lora_r=rank,
                seed=seed,
            )
        )
    return out


def render(rows: list[dict], command: str) -> str:
    head = "| " + " | ".join(KNOBS) + " | " + " | ".join(SETS) + " | mean of the three human sets"
    head += " | ECE " + " | ECE ".join(SETS) + " |"
    lines = [f"`{command}`", "", head, "|" + "---|" * (len(KNOBS) + 2 * len(SETS) + 1)]
    for r in rows:
        cells = [str(r[k]) for k in KNOBS] + [f"{r[s]:.4f}" for s in SETS]
        cells += [f"{r['human_mean']:.4f}"] + [f"{r[s + '_ece']:.4f}" for s in SETS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-model", default=str(SHARED / "models/gpt2-mini-zh"))
    ap.add_argument("--methods", nargs="+", default=["lora"])
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.5])
    ap.add_argument("--lrs", type=float, nargs="+", default=None, help="default: per method")
    ap.add_argument("--lora-ranks", type=int, nargs="+", default=[8])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--train-rows", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", default="runs/recipe-sweep")
    ap.add_argument("--report", default="docs/recipe-sweep")
    args = ap.parse_args()
    configure_process()
    report = Path(f"{args.report}.json")
    rows = json.loads(report.read_text())["rows"] if report.exists() else []
    command = "python scripts/recipe_sweep.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
        if v is not None
    )
    for cfg in configs(args):
        knobs = {k: getattr(cfg, k) for k in KNOBS}
        if any(all(r.get(k) == v for k, v in knobs.items()) for r in rows):
            continue
        rows.append({**knobs, **measure(cfg)})
        print(json.dumps(rows[-1]), flush=True)
        write_json(report, {"rows": rows})
        write_text(f"{args.report}.md", render(rows, command))


if __name__ == "__main__":
    main()
