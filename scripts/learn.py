"""Measure learning from unlabelled posts (not a unit test), on gpt2-mini-zh, through the CLI as a
user runs it:

    python scripts/learn.py pretrain --tokens 0 400000 1200000 --report docs/studies/pretrain
    python scripts/learn.py active --report docs/studies/active

``pretrain``: continued pretraining on the texts of weibo_senti_100k/train.csv,
smp2020_usual/train_emotion.csv, waimai_10k.csv and online_shopping_9_cats.csv (labels unused;
every text that also occurs in an evaluation set removed), one base per token budget; then the
default LoRA recipe on the same seeded weibo_senti_100k rows on each base, scored on the
human-labelled sets. ``active``: weibo2018/train.csv as the pool, labels hidden until chosen,
part of it kept aside; rounds of `select` (uncertainty + diversity) against random choice.
Writes <report>.{json,md,png}; results already in <report>.json are kept, not redone.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
BASE = SHARED / "models/gpt2-mini-zh"
CRAWL_SOURCES = [
    "weibo_senti_100k/train.csv",
    "smp2020_usual/train_emotion.csv",
    "waimai_10k.csv",
    "online_shopping_9_cats.csv",
]
HUMAN = {
    "weibo2018": "weibo2018/train.csv",
    "smp2020": "smp2020_usual/eval.csv",
    "nlpcc": "nlpcc_emotion/binary.csv",
}


def cli(*args: str) -> None:
    """`weibo-senti ARGS`, as a user runs it; its output goes to our stderr."""
    cmd = [sys.executable, "-m", "weibo_senti.cli", *map(str, args)]
    print("$ weibo-senti", " ".join(map(str, args)), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def texts_of(path: Path, column: str = "review") -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [row[column].strip() for row in csv.DictReader(f) if (row.get(column) or "").strip()]


def write_rows(path: Path, rows: list[dict], header: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def build_crawl(out: Path, seed: int) -> dict:
    """The crawl: every source's texts, shuffled (a token budget then samples all of them),
    without any text an evaluation set holds."""
    held = {t for rel in HUMAN.values() for t in texts_of(DATA / rel)}
    held |= set(texts_of(DATA / "smp2020_usual/eval_emotion.csv"))
    texts, removed = [], 0
    for rel in CRAWL_SOURCES:
        for t in texts_of(DATA / rel):
            if t in held:
                removed += 1
            else:
                texts.append(t)
    random.Random(seed).shuffle(texts)
    write_rows(out, [{"text": t} for t in texts], ["text"])
    return {"posts": len(texts), "removed_as_evaluation_texts": removed}


def human_scores(run: Path, sets: dict[str, Path]) -> dict:
    from weibo_senti.evaluate import evaluate
    from weibo_senti.predict import SentimentClassifier

    clf = SentimentClassifier.load(run, precision="fp32")
    scores = {name: evaluate(clf, path)["accuracy"] for name, path in sets.items()}
    scores["human_mean"] = sum(scores.values()) / len(scores)
    return scores


def load_report(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_report(path: Path, report: dict) -> None:
    from weibo_senti.files import write_json

    write_json(path, report)


# ---------------------------------------------------------------------------- pretrain
def pretrain_point(args, tokens: int, crawl: Path) -> dict:
    runs, tag = args.runs, point_key(tokens, args.pretrain_lr)
    base = BASE
    row: dict = {"tokens": tokens, "lr": args.pretrain_lr}
    if tokens:
        base = runs / f"base-{tag}"
        lr = ["--lr", args.pretrain_lr] if args.pretrain_lr else []
        if not (base / "pretrain.json").is_file():
            cli("pretrain", "--base-model", BASE, "--data", crawl, "--out", base,
                "--max-tokens", tokens, "--overwrite", *lr)  # fmt: skip
        record = json.loads((base / "pretrain.json").read_text())
        row.update({k: record[k] for k in ("perplexity_before", "perplexity_after")})
        row.update({k: record[k] for k in ("train_seconds", "tokens_per_second", "tokens_seen")})
    run = runs / f"lora-{tag}"
    cli("train", "--base-model", base, "--data", DATA / "weibo_senti_100k/train.csv",
        "--max-train-samples", args.rows, "--epochs", args.epochs, "--dev-fraction",
        args.dev_fraction, "--out", run, "--overwrite")  # fmt: skip
    row.update(human_scores(run, {n: DATA / rel for n, rel in HUMAN.items()}))
    return row


def run_pretrain(args) -> None:
    report_json = args.report.with_suffix(".json")
    report = load_report(report_json)
    crawl = args.runs / "crawl.csv"
    if not crawl.is_file():
        report["crawl"] = build_crawl(crawl, args.seed)
    report["setup"] = {
        "base": "gpt2-mini-zh", "train_rows": args.rows, "epochs": args.epochs,
        "dev_fraction": args.dev_fraction, "method": "lora (defaults)",
    }  # fmt: skip
    points = report.setdefault("points", {})
    for tokens in args.tokens:
        if point_key(tokens, args.pretrain_lr) not in points:
            points[point_key(tokens, args.pretrain_lr)] = pretrain_point(args, tokens, crawl)
            save_report(report_json, report)
    plot_pretrain(report, args.report.with_suffix(".png"))
    args.report.with_suffix(".md").write_text(render_pretrain(report), encoding="utf-8")


def point_key(tokens: int, lr: float | None) -> str:
    """A point's key: its token budget, and the learning rate when not the default."""
    return f"{tokens}" if not lr else f"{tokens}@lr{lr:g}"


def render_pretrain(report: dict) -> str:
    points = sorted(report["points"].values(), key=lambda r: (r["tokens"], r.get("lr") or 0))
    before = next((p["perplexity_before"] for p in points if "perplexity_before" in p), None)
    lines = [
        "| pretraining tokens | lr | held-out perplexity | weibo2018 | smp2020 | nlpcc | mean | "
        "tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        ppl = p.get("perplexity_after", before)
        rate = f"{p['tokens_per_second']:,.0f}" if "tokens_per_second" in p else "-"
        lr = "-" if not p["tokens"] else f"{p.get('lr') or 1e-4:g}"
        lines.append(
            f"| {p['tokens']:,} | {lr} | {ppl:.2f} | {p['weibo2018']:.4f} | {p['smp2020']:.4f} | "
            f"{p['nlpcc']:.4f} | {p['human_mean']:.4f} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def plot_pretrain(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = sorted(report["points"].values(), key=lambda r: r["tokens"])
    before = next((p["perplexity_before"] for p in every if "perplexity_before" in p), None)
    points = [p for p in every if not p.get("lr")]  # the default learning rate: the curve
    other = [p for p in every if p.get("lr")]
    x = [p["tokens"] / 1e6 for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(x, [p.get("perplexity_after", before) for p in points], "o-", label="lr 1e-4 (default)")
    for p in other:
        a.plot(p["tokens"] / 1e6, p["perplexity_after"], "r^", label=f"lr {p['lr']:g}")
        b.plot(p["tokens"] / 1e6, p["human_mean"], "r^", label=f"mean, lr {p['lr']:g}")
    a.legend()
    a.set(xlabel="pretraining tokens (millions)", ylabel="held-out perplexity", title="Perplexity")
    for name in ("weibo2018", "smp2020", "nlpcc", "human_mean"):
        b.plot(
            x, [p[name] for p in points], "o-", label=name, lw=2.5 if name == "human_mean" else 1
        )
    b.set(xlabel="pretraining tokens (millions)", ylabel="accuracy", title="Human-labelled sets")
    b.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


# ---------------------------------------------------------------------------- active
def prepare_active(args) -> dict:
    """The start run's training rows as files, the pool (labels hidden) and the kept-aside part."""
    from weibo_senti import TrainConfig
    from weibo_senti.train import load_splits

    folder = args.runs / "active"
    cfg = TrainConfig(
        data=str(DATA / "weibo_senti_100k/train.csv"), max_train_samples=args.rows,
        dev_fraction=args.dev_fraction, seed=args.seed,
    )  # fmt: skip
    train_set, dev_set = load_splits(cfg)  # the very rows the start run trained on
    for name, ex in (("emoticon_train.csv", train_set), ("emoticon_dev.csv", dev_set)):
        rows = [{"label": y, "review": t} for t, y in zip(ex.texts, ex.labels)]
        write_rows(folder / name, rows, ["label", "review"])
    with open(DATA / "weibo2018/train.csv", encoding="utf-8", newline="") as f:
        posts = [r for r in csv.DictReader(f) if r["review"].strip()]
    random.Random(args.seed).shuffle(posts)
    aside, pool = posts[: args.aside], posts[args.aside :]
    write_rows(folder / "aside.csv", aside, ["label", "review"])
    return {"pool": pool, "folder": folder}


def choose_posts(strategy: str, run: Path, pool: list[dict], k: int, folder: Path, rng) -> list:
    """``k`` posts of the pool: by `select` (its labels hidden), or at random."""
    if strategy == "random":
        return rng.sample(pool, k)
    hidden = write_rows(folder / "pool.csv", pool, ["mid", "review"])  # no label column
    chosen = folder / "chosen.csv"
    cli("select", run, "--pool", hidden, "--n", k, "--out", chosen, "--overwrite")
    by_mid = {r["mid"]: r for r in pool}
    with open(chosen, encoding="utf-8", newline="") as f:
        return [by_mid[r["mid"]] for r in csv.DictReader(f)]


def active_rounds(args, strategy: str, setup: dict, start: Path, points: dict, save) -> dict:
    """Rounds of choosing and training; ``points`` already measured are kept (each round is
    saved as it ends), and a restart replays the earlier rounds' choices without training."""
    folder, pool = setup["folder"] / strategy, list(setup["pool"])
    rng, labelled, run = random.Random(args.seed), [], start
    sets = {"aside": setup["folder"] / "aside.csv"} | {
        n: DATA / rel for n, rel in HUMAN.items() if n != "weibo2018"
    }
    if "0" not in points:
        points["0"] = human_scores(start, sets)
        save()
    targets = (
        args.labels if strategy == "random" else [n for n in args.labels if n <= args.select_up_to]
    )
    for target in targets:
        run_t = args.runs / f"active-{strategy}-{target}"
        if str(target) in points and strategy == "random":  # its draws replay without a model
            picked = choose_posts(strategy, run, pool, target - len(labelled), folder, rng)
            pool, labelled, run = drop(pool, picked), labelled + picked, run_t
            continue
        if str(target) in points:  # select: the saved labelled file holds its choices
            labelled = read_csv(folder / f"labelled-{target}.csv")
            pool, run = drop(pool, labelled), run_t
            continue
        picked = choose_posts(strategy, run, pool, target - len(labelled), folder, rng)
        pool, labelled = drop(pool, picked), labelled + picked  # labels revealed: weibo2018's
        data = write_rows(folder / f"labelled-{target}.csv", labelled, ["mid", "label", "review"])
        run = run_t
        cli("train", "--base-model", BASE, "--data", setup["folder"] / "emoticon_train.csv",
            "--data", data, "--data-weights", 1, args.weight, "--dev-data",
            setup["folder"] / "emoticon_dev.csv", "--epochs", args.epochs, "--out", run,
            "--overwrite")  # fmt: skip
        points[str(target)] = human_scores(run, sets)
        save()
        print(strategy, target, points[str(target)], file=sys.stderr, flush=True)
    return points


def drop(pool: list[dict], picked: list[dict]) -> list[dict]:
    ids = {r["mid"] for r in picked}
    return [r for r in pool if r["mid"] not in ids]


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def run_active(args) -> None:
    report_json = args.report.with_suffix(".json")
    report = load_report(report_json)
    start = args.runs / "lora-0"
    if not (start / "run.json").is_file():
        raise SystemExit(f"{start} is missing: run the pretrain part first (its 0-token run)")
    setup = prepare_active(args)
    report["setup"] = {
        "pool": len(setup["pool"]), "kept_aside": args.aside, "start_run": str(start),
        "emoticon_rows": args.rows, "epochs": args.epochs, "labelled_weight": args.weight,
    }  # fmt: skip
    for strategy in ("select", "random"):
        points = report.setdefault(strategy, {})
        active_rounds(
            args, strategy, setup, start, points, lambda: save_report(report_json, report)
        )
    plot_active(report, args.report.with_suffix(".png"))
    args.report.with_suffix(".md").write_text(render_active(report), encoding="utf-8")


def render_active(report: dict) -> str:
    lines = [
        "| labels | choice | kept-aside weibo2018 | smp2020 | nlpcc |",
        "|---|---|---|---|---|",
    ]
    for strategy in ("select", "random"):
        for n, p in sorted(report[strategy].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {int(n):,} | {strategy} | {p['aside']:.4f} | {p['smp2020']:.4f} | "
                f"{p['nlpcc']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def plot_active(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, name in zip(axes, ("aside", "smp2020", "nlpcc")):
        for strategy, style in (("select", "o-"), ("random", "s--")):
            points = sorted(report[strategy].items(), key=lambda kv: int(kv[0]))
            ax.plot([int(n) for n, _ in points], [p[name] for _, p in points], style,
                    label="uncertainty + diversity" if strategy == "select" else "random")  # fmt: skip
        title = "weibo2018, kept aside" if name == "aside" else name
        ax.set(xlabel="posts labelled", ylabel="accuracy", title=title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    from weibo_senti.cli import configure_process

    configure_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["pretrain", "active"])
    ap.add_argument("--runs", type=Path, default=Path("runs/learn"))
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--tokens", type=int, nargs="+", default=[0, 400_000, 1_200_000])
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dev-fraction", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--labels", type=int, nargs="+", default=[100, 200, 300, 500, 700, 1000])
    ap.add_argument("--aside", type=int, default=2000, help="weibo2018 posts kept for testing")
    ap.add_argument("--weight", type=float, default=5.0, help="loss weight of labelled posts")
    ap.add_argument("--pretrain-lr", type=float, default=None, help="default: pretrain's")
    ap.add_argument("--select-up-to", type=int, default=500, help="select's last round")
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.part == "pretrain":
        run_pretrain(args)
    else:
        run_active(args)


if __name__ == "__main__":
    main()
