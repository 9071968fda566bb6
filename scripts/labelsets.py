"""Label sets beyond 0/1 on real data: six emotions and three-way sentiment (SMP2020-EWECT usual).

    python scripts/labelsets.py [--rows 8000] [--epochs 2] [--only six-lora three-tfidf ...]

Trains lora, adapter and full on gpt2-mini-zh (default recipe otherwise, seed 42) and TF-IDF
(character 1-3 grams) + logistic regression on the same training rows, keeps each run's best
epoch on a split of train_emotion.csv, and reports accuracy and macro-F1 on eval_emotion.csv.
The three-way task is the same files through ``--label-map`` (happy → positive, neutral →
neutral, angry/sad/fear → negative, surprise dropped). ``six-lora-balanced`` measures
``--class-weights balanced``. Finished runs are kept and not trained again; results go to
docs/studies/labelsets.json and docs/studies/labelsets.md as they come.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from weibo_senti import SentimentClassifier, TrainConfig, runfolder
from weibo_senti.cli import configure_process
from weibo_senti.errors import UserError
from weibo_senti.evaluate import evaluate
from weibo_senti.labels import parse_map
from weibo_senti.metrics import classification_metrics
from weibo_senti.train import load_splits, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "smp2020_usual"
THREE_WAY = "happy=positive,neutral=neutral,angry=negative,sad=negative,fear=negative,surprise="
TASKS = {"six": None, "three": THREE_WAY}
JOBS = [
    f"{task}-{method}{weights}"
    for weights in ("", "-balanced")
    for task in TASKS
    for method in ("lora", "tfidf", "adapter", "full")
    if not (weights and method == "tfidf")
] + ["six-full-pipeline"]


def config(task: str, method: str, args, balanced: bool = False) -> TrainConfig:
    return TrainConfig(
        method="lora" if method == "tfidf" else method,
        base_model=str(SHARED / "models" / "gpt2-mini-zh"),
        data=str(DATA / "train_emotion.csv"),
        out=str(args.runs / f"{task}-{method}{'-balanced' if balanced else ''}"),
        max_train_samples=args.rows,
        epochs=args.epochs,
        seed=42,
        dev_fraction=args.dev_fraction,
        label_map=TASKS[task],
        class_weights="balanced" if balanced else "none",
    )


def neural(cfg: TrainConfig, task: str) -> dict:
    run = Path(cfg.out)
    try:
        done = runfolder.read_info(run).complete
    except UserError:
        done = False
    t0 = time.perf_counter()
    if not done:
        train(cfg, overwrite=True)
    wall = time.perf_counter() - t0
    clf = SentimentClassifier.load(run, precision="fp32")
    m = evaluate(
        clf, DATA / "eval_emotion.csv", label_map=parse_map(TASKS[task]) if TASKS[task] else None
    )
    dev = runfolder.read_eval_results(run)
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class_f1": {k: v["f1"] for k, v in m["per_class"].items()},
        "ece_after": m["calibration"]["after"]["ece"],
        "dev_macro_f1": dev["dev"]["macro_f1"],
        "best_epoch": dev["epoch"],
        "train_seconds": dev.get("train_seconds"),
        "wall_s_this_call": round(wall, 1),
        "labels": clf.labels,
        "n_eval": m["n"],
    }


def tfidf(cfg: TrainConfig, task: str) -> dict:
    """The same training rows as the neural runs (load_splits with the same seed and sample)."""
    from weibo_senti.compare import tfidf_pipeline
    from weibo_senti.data import read_labelled

    train_set, _ = load_splits(cfg)
    pipe = tfidf_pipeline(cfg.class_weights)  # compare's baseline
    pipe.fit(train_set.texts, train_set.labels)
    test = read_labelled(DATA / "eval_emotion.csv", labels=train_set.names, label_map=cfg.label_map)
    m = classification_metrics(test.labels, pipe.predict_proba(test.texts), train_set.names)
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class_f1": {k: v["f1"] for k, v in m["per_class"].items()},
        "labels": train_set.names,
        "n_train": len(train_set),
        "n_eval": m["n"],
    }


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def stock_pipeline(cfg: TrainConfig, posts: int = 500) -> dict:
    """The six-label full run in transformers' own pipeline, called the default way: its labels
    and probabilities against ours on the first ``posts`` test posts."""
    from transformers import pipeline

    from weibo_senti.data import read_labelled

    texts = read_labelled(DATA / "eval_emotion.csv").texts[:posts]
    ours = SentimentClassifier.load(cfg.out, precision="fp32").predict(texts)
    clf = pipeline("text-classification", model=cfg.out, top_k=None)
    theirs = clf(texts, truncation=True, batch_size=16)
    gaps = [
        abs(p.probabilities[d["label"]] - d["score"]) for p, row in zip(ours, theirs) for d in row
    ]
    same = sum(
        p.label == max(row, key=lambda d: d["score"])["label"] for p, row in zip(ours, theirs)
    )
    return {"posts": len(texts), "max_abs_dp": max(gaps), "same_top_label": same}


def render(results: dict, args) -> str:
    lines = [
        "# Label sets: six emotions and three-way sentiment (SMP2020-EWECT usual)",
        "",
        f"Command: `python scripts/labelsets.py --rows {args.rows} --epochs {args.epochs} "
        f"--dev-fraction {args.dev_fraction}`; "
        f"base gpt2-mini-zh, seed 42, default recipe otherwise; {args.rows:,} sampled rows of "
        "`train_emotion.csv` (the same rows for every method, TF-IDF included), best epoch "
        f"on a {args.dev_fraction:.0%} split of it; test: `eval_emotion.csv`. "
        f"CPU: {cpu_name()}.",
        "",
    ]
    for task in TASKS:
        lines += [
            f"## {task}",
            "",
            "| method | accuracy | macro-F1 | per-class F1 |",
            "|---|---|---|---|",
        ]
        for key, r in results.items():
            if key.split("-")[0] != task or "pipeline" in key:
                continue
            per = ", ".join(f"{k} {v:.3f}" for k, v in r["per_class_f1"].items())
            method = key.split("-", 1)[1].replace("-balanced", ", balanced (default)")
            method += "" if "balanced" in key or method == "tfidf" else ", none"
            lines.append(f"| {method} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {per} |")
        lines.append("")
    if "six-full-pipeline" in results:
        r = results["six-full-pipeline"]
        lines.append(
            f"Stock `pipeline` on the six-label full run, {r['posts']} test posts: max |ΔP| "
            f"{r['max_abs_dp']:.2e} against weibo-senti, same top label on "
            f"{r['same_top_label']}/{r['posts']}."
        )
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    """Macro-F1 per method and task, class weights none against balanced, TF-IDF's as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(10, 4), sharey=True)
    for ax, task in zip(axes, TASKS):
        methods = ["lora", "adapter", "full"]
        for i, (suffix, name) in enumerate([("", "none"), ("-balanced", "balanced (default)")]):
            values = [results.get(f"{task}-{m}{suffix}", {}).get("macro_f1", 0) for m in methods]
            ax.bar([x + 0.38 * i for x in range(3)], values, 0.38, label=f"class weights {name}")
        if f"{task}-tfidf" in results:
            tfidf = results[f"{task}-tfidf"]["macro_f1"]
            ax.axhline(tfidf, color="black", linestyle="--", label=f"TF-IDF + LR ({tfidf:.3f})")
        ax.set(title=f"{task} labels", xticks=[x + 0.19 for x in range(3)], xticklabels=methods)
        ax.set(ylim=(0, 1), ylabel="macro-F1 on eval_emotion.csv")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--dev-fraction", type=float, default=0.04)  # ~1,100 rows checked per epoch
    p.add_argument("--only", nargs="*", default=JOBS, choices=JOBS)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "labelsets")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "studies" / "labelsets")
    args = p.parse_args()
    configure_process()
    results_file = args.out.with_suffix(".json")
    for job in args.only:
        task, method, *extra = job.split("-")
        cfg = config(task, method, args, balanced=extra == ["balanced"])
        t0 = time.perf_counter()
        if extra == ["pipeline"]:
            result = stock_pipeline(config(task, method, args))
        elif method == "tfidf":
            result = tfidf(cfg, task)
        else:
            result = neural(cfg, task)
        result["job_wall_s"] = round(time.perf_counter() - t0, 1)
        print(job, json.dumps(result, ensure_ascii=False), flush=True)
        # two processes may share the jobs (one thread each on a 2-core machine): merge
        results = json.loads(results_file.read_text()) if results_file.exists() else {}
        results[job] = result
        results = {k: results[k] for k in JOBS if k in results}
        results_file.write_text(json.dumps(results, indent=1, ensure_ascii=False))
        args.out.with_suffix(".md").write_text(render(results, args))
        plot(results, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
