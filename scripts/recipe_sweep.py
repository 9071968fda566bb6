"""Measure training recipes (not a unit test): train on gpt2-mini-zh with weibo_senti_100k and
evaluate on its dev split (as is, and emoticons stripped) and on the three human-labelled sets,
accuracy and expected calibration error (after the run's temperature).

    python scripts/recipe_sweep.py --methods lora --dropouts 0 0.5 1 --report docs/studies/emoticon-dropout
    python scripts/recipe_sweep.py --methods lora --lrs 5e-4 1e-3 2e-3 --report docs/studies/recipe-sweep

Every combination of the list options is trained. Reads ../shared (model and data); writes runs
under --runs and <report>.{json,md}; rows already in <report>.json are kept, not re-trained.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import yaml

from weibo_senti import TrainConfig
from weibo_senti.cli import configure_process
from weibo_senti.compare import human_sets
from weibo_senti.evaluate import evaluate
from weibo_senti.files import write_json, write_text
from weibo_senti.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared"
SETS = ("dev", "dev_stripped", "weibo2018", "smp2020", "nlpcc")
KNOBS = ["method", "emoticon_dropout", "lr", "lora_r", "epochs", "seed"]


def measure(cfg: TrainConfig, human: dict) -> dict:
    t0 = time.perf_counter()
    clf = train(cfg, overwrite=True)
    row = {"train_seconds": round(time.perf_counter() - t0, 1)}
    paths = {"dev": cfg.dev_data, "dev_stripped": cfg.dev_data}
    paths.update(human)
    for name, path in paths.items():
        m = evaluate(clf, path, strip=name == "dev_stripped")
        row[name] = m["accuracy"]
        row[f"{name}_ece"] = m["calibration"]["after"]["ece"]
    row["human_mean"] = sum(row[n] for n in human) / len(human)
    return row


def parse_sets(items: list[str]) -> dict[str, list]:
    """`--set "batch_size=8|32" label_smoothing=0.1`: more knobs of TrainConfig to grid over."""
    grid = {}
    for item in items:
        key, _, values = item.partition("=")
        grid[key] = [yaml.safe_load(v) for v in values.split("|")]
    return grid


def configs(args) -> list[TrainConfig]:
    extra = parse_sets(args.set)
    grid = itertools.product(
        args.methods,
        args.dropouts,
        args.lrs or [None],
        args.lora_ranks,
        args.seeds,
        *extra.values(),
    )
    out = []
    for method, p, lr, rank, seed, *more in grid:
        sets = dict(zip(extra, more, strict=True))
        name = f"{method}-p{p}-lr{lr or 'default'}-r{rank}-e{args.epochs}-s{seed}"
        name += "".join(f"-{k}{v}" for k, v in sets.items())
        out.append(
            TrainConfig(
                method=method,
                base_model=args.base_model,
                data=str(args.shared / "data/weibo_senti_100k/train.csv"),
                dev_data=str(args.shared / "data/weibo_senti_100k/dev.csv"),
                out=f"{args.runs}/{name}",
                max_train_samples=args.train_rows,
                epochs=args.epochs,
                emoticon_dropout=p,
                lr=lr,
                lora_r=rank,
                seed=seed,
                **sets,
            )
        )
    return out


def render(rows: list[dict], command: str, knobs: list[str]) -> str:
    head = "| " + " | ".join(knobs) + " | " + " | ".join(SETS) + " | mean of the three human sets"
    head += " | ECE " + " | ECE ".join(SETS) + " |"
    lines = [f"`{command}`", "", head, "|" + "---|" * (len(knobs) + 2 * len(SETS) + 1)]
    for r in rows:
        cells = [str(r.get(k, "")) for k in knobs] + [f"{r[s]:.4f}" for s in SETS]
        cells += [f"{r['human_mean']:.4f}"] + [f"{r[s + '_ece']:.4f}" for s in SETS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=SHARED, help="folder with data/ and models/")
    ap.add_argument("--base-model", default=None, help="default: <shared>/models/gpt2-mini-zh")
    ap.add_argument("--methods", nargs="+", default=["lora"])
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.5])
    ap.add_argument("--lrs", type=float, nargs="+", default=None, help="default: per method")
    ap.add_argument("--lora-ranks", type=int, nargs="+", default=[8])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--train-rows", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], help="more knobs: key=v1|v2 (a grid)")
    ap.add_argument("--runs", default="runs/recipe-sweep")
    ap.add_argument("--report", default="docs/studies/recipe-sweep")
    args = ap.parse_args()
    args.base_model = args.base_model or str(args.shared / "models/gpt2-mini-zh")
    configure_process()
    human = human_sets(args.shared / "data")  # labelled by people, not by emoticons
    knobs = KNOBS + list(parse_sets(args.set))
    report = Path(f"{args.report}.json")
    rows = json.loads(report.read_text())["rows"] if report.exists() else []
    command = "python scripts/recipe_sweep.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
        if v is not None
    )
    for cfg in configs(args):
        values = {k: getattr(cfg, k) for k in knobs}
        if any(all(r.get(k) == v for k, v in values.items()) for r in rows):
            continue
        rows.append({**values, **measure(cfg, human)})
        print(json.dumps(rows[-1]), flush=True)
        write_json(report, {"rows": rows})
        write_text(f"{args.report}.md", render(rows, command, knobs))


if __name__ == "__main__":
    main()
