"""Measure --emoticon-dropout (not a unit test): train on gpt2-mini-zh with weibo_senti_100k and
evaluate on its dev split (as is, and emoticons stripped) and on the three human-labelled sets.

    python scripts/emoticon_dropout.py --dropouts 0 0.5 1 --methods lora --train-rows 8000

Reads ../shared (model and data); writes runs under --runs and docs/emoticon-dropout.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from weibo_senti import TrainConfig
from weibo_senti.cli import configure_process
from weibo_senti.evaluate import evaluate
from weibo_senti.files import write_json, write_text
from weibo_senti.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared"
HUMAN = {  # labelled by people, not by emoticons
    "weibo2018": "data/weibo2018/train.csv",
    "smp2020": "data/smp2020_usual/eval.csv",
    "nlpcc": "data/nlpcc_emotion/binary.csv",
}


def measure(cfg: TrainConfig) -> dict:
    t0 = time.perf_counter()
    clf = train(cfg, overwrite=True)
    row = {"train_seconds": round(time.perf_counter() - t0, 1)}
    row["dev"] = evaluate(clf, cfg.dev_data)["accuracy"]
    row["dev_stripped"] = evaluate(clf, cfg.dev_data, strip=True)["accuracy"]
    for name, path in HUMAN.items():
        row[name] = evaluate(clf, SHARED / path)["accuracy"]
    row["human_mean"] = sum(row[n] for n in HUMAN) / len(HUMAN)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-model", default=str(SHARED / "models/gpt2-mini-zh"))
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--methods", nargs="+", default=["lora"])
    ap.add_argument("--train-rows", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", default="runs/emoticon-dropout")
    ap.add_argument("--report", default="docs/emoticon-dropout")
    args = ap.parse_args()
    configure_process()
    rows = []
    for method in args.methods:
        for p in args.dropouts:
            cfg = TrainConfig(
                method=method,
                base_model=args.base_model,
                data=str(SHARED / "data/weibo_senti_100k/train.csv"),
                dev_data=str(SHARED / "data/weibo_senti_100k/dev.csv"),
                out=f"{args.runs}/{method}-p{p}",
                max_train_samples=args.train_rows,
                epochs=args.epochs,
                emoticon_dropout=p,
            )
            rows.append({"method": method, "emoticon_dropout": p, **measure(cfg)})
            print(json.dumps(rows[-1]), flush=True)
            write_json(f"{args.report}.json", {"args": vars(args), "rows": rows})
    head = "| method | emoticon dropout | dev | dev, emoticons stripped | weibo2018 | smp2020 | nlpcc | mean of the three |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        cells = [r[k] for k in ("dev", "dev_stripped", *HUMAN, "human_mean")]
        lines.append(
            f"| {r['method']} | {r['emoticon_dropout']} | "
            + " | ".join(f"{c:.4f}" for c in cells)
            + " |"
        )
    command = "python scripts/emoticon_dropout.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
    )
    write_text(f"{args.report}.md", f"`{command}`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
