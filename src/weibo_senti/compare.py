"""`compare`: full / adapter / LoRA and a TF-IDF + logistic regression baseline, same data,
same splits, same base; a table (Markdown + JSON) and plots."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from . import runfolder
from .config import TrainConfig
from .errors import UserError
from .files import write_json, write_text
from .isolate import peak_rss_mb, run_isolated
from .progress import progress

METHODS = ("full", "adapter", "lora", "tfidf")


def _speed(predict_proba, texts: list[str]) -> dict:
    predict_proba(texts[:8])  # warm-up
    t0 = time.perf_counter()
    predict_proba(texts)
    batch_s = time.perf_counter() - t0
    lat = []
    for t in texts[:20]:
        t0 = time.perf_counter()
        predict_proba([t])
        lat.append(time.perf_counter() - t0)
    return {
        "infer_samples_per_s": len(texts) / batch_s,
        "latency_ms": 1000 * statistics.median(lat),
    }


def _scores(predict_proba, dev, extra: dict) -> dict:
    from .data import read_labelled, strip_emoticons
    from .metrics import classification_metrics

    m = classification_metrics(dev.labels, predict_proba(dev.texts))
    stripped = classification_metrics(
        dev.labels, predict_proba([strip_emoticons(t) for t in dev.texts])
    )
    out = {
        "dev_accuracy": m["accuracy"],
        "dev_macro_f1": m["macro_f1"],
        "dev_stripped_accuracy": stripped["accuracy"],
        "confusion_matrix": m["confusion_matrix"],
    }
    for name, path in extra.items():
        ex = read_labelled(path)
        out[f"{name}_accuracy"] = classification_metrics(ex.labels, predict_proba(ex.texts))[
            "accuracy"
        ]
    return out


def run_neural(cfg: TrainConfig, extra: dict, infer_texts: int) -> dict:
    from .predict import SentimentClassifier
    from .train import load_splits, train

    t0 = time.perf_counter()
    trained = train(cfg, overwrite=True)
    wall = time.perf_counter() - t0
    run = trained.run
    results = runfolder.read_eval_results(run)
    clf = SentimentClassifier.load(run)  # the product's inference path
    _, dev = load_splits(cfg)
    info = clf.info
    row = {
        "trainable_params": info.trainable_params,
        "trainable_share": info.trainable_params / info.all_params,
        "artifact_mb": runfolder.weights_size_mb(run),
        "train_wall_s": wall,
        "train_samples_per_s": results["train_samples_per_second"],
        **_scores(clf.predict_proba, dev, extra),
        **_speed(clf.predict_proba, dev.texts[:infer_texts]),
        "run": str(run),
    }
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def run_tfidf(cfg: TrainConfig, extra: dict, infer_texts: int) -> dict:
    """Character 1-3-gram TF-IDF + logistic regression on exactly the same splits."""
    import pickle

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from .train import load_splits

    train_set, dev = load_splits(cfg)
    pipe = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0),
    )
    t0 = time.perf_counter()
    pipe.fit(train_set.texts, train_set.labels)
    wall = time.perf_counter() - t0
    lr = pipe[-1]
    n_params = int(lr.coef_.size + lr.intercept_.size)
    return {
        "trainable_params": n_params,
        "trainable_share": 1.0,
        "artifact_mb": len(pickle.dumps(pipe)) / 2**20,  # our own object: only measured
        "train_wall_s": wall,
        "train_samples_per_s": len(train_set) / wall,
        **_scores(pipe.predict_proba, dev, extra),
        **_speed(pipe.predict_proba, dev.texts[:infer_texts]),
        "peak_rss_mb": peak_rss_mb(),
    }


def _aggregate(rows: list[dict]) -> dict:
    out = {}
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            vals = [r[key] for r in rows]
            out[key] = {
                "mean": float(np.mean(vals)),
                "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
            }
        else:
            out[key] = value  # first seed's confusion matrix, run folder
    return out


def compare(
    base_model: str,
    data: str,
    dev_data: str | None,
    out: Path,
    extra_tests: dict[str, str] | None = None,
    methods: list[str] | None = None,
    repeats: int = 1,
    seed: int = 42,
    command: str = "",
    infer_texts: int = 256,
    **train_options,
) -> dict:
    """Train and measure each method on the same data and base; write the report to ``out``."""
    methods = list(methods or METHODS)
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise UserError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    extra = dict(extra_tests or {})
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(m, seed + r) for r in range(repeats) for m in methods]
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    for method, s in progress(jobs, desc="compare"):
        cfg = TrainConfig(
            method="lora" if method == "tfidf" else method,
            base_model=base_model,
            data=data,
            dev_data=dev_data,
            seed=s,
            out=str(out / "runs" / f"{method}-seed{s}"),
            **train_options,
        )
        fn = run_tfidf if method == "tfidf" else run_neural
        rows[method].append(run_isolated(fn, cfg, extra, infer_texts))
    results = {m: _aggregate(r) for m, r in rows.items()}
    sampled = train_options.get("max_train_samples")
    meta = {
        "command": command,
        "base_model": base_model,
        "data": data,
        "dev_data": dev_data,
        "extra_tests": extra,
        "repeats": repeats,
        "seeds": [seed + r for r in range(repeats)],
        "train_options": train_options,
        "sampled_train_rows": sampled,
    }
    write_json(out / "comparison.json", {"meta": meta, "results": results, "per_seed": rows})
    from .report import plot_comparison

    neural_runs = {m: Path(results[m]["run"]) for m in methods if m != "tfidf"}
    plots = plot_comparison(results, neural_runs, out)
    write_text(out / "comparison.md", render(results, meta, [p.name for p in plots]))
    return results


def _fmt(cell: dict, digits: int = 4, scale: float = 1.0) -> str:
    if cell["std"]:
        return f"{cell['mean'] * scale:.{digits}f} ± {cell['std'] * scale:.{digits}f}"
    return f"{cell['mean'] * scale:.{digits}f}"


def render(results: dict, meta: dict, plots: list[str]) -> str:
    extra = list(meta["extra_tests"])
    lines = [
        "# Method comparison",
        "",
        f"Command: `{meta['command']}`" if meta["command"] else "",
        "",
        f"Base `{meta['base_model']}`; train `{meta['data']}`"
        + (
            f" (seeded sample of {meta['sampled_train_rows']} rows)"
            if meta["sampled_train_rows"]
            else ""
        )
        + f"; dev `{meta['dev_data'] or '10% split of the training file'}`; seeds "
        f"{meta['seeds']} (mean ± std over {meta['repeats']} run(s)). Speed and memory on this "
        "machine; inference through `SentimentClassifier` with default settings.",
        "",
        "| method | trainable params | share | artifact MB | train wall s | train samples/s "
        "| infer samples/s | 1-text latency ms | peak RSS MB | dev acc | dev macro-F1 "
        "| dev acc, emoticons stripped | " + " | ".join(f"{e} acc" for e in extra) + " |",
        "|" + "---|" * (12 + len(extra)),
    ]
    for method, r in results.items():
        cells = [
            method,
            f"{r['trainable_params']['mean']:,.0f}",
            f"{100 * r['trainable_share']['mean']:.2f}%",
            f"{r['artifact_mb']['mean']:.2f}",
            _fmt(r["train_wall_s"], 1),
            _fmt(r["train_samples_per_s"], 1),
            _fmt(r["infer_samples_per_s"], 1),
            _fmt(r["latency_ms"], 1),
            f"{r['peak_rss_mb']['mean']:.0f}",
            _fmt(r["dev_accuracy"]),
            _fmt(r["dev_macro_f1"]),
            _fmt(r["dev_stripped_accuracy"]),
        ] + [_fmt(r[f"{e}_accuracy"]) for e in extra]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "TF-IDF share is 100% (every weight is trained); its artifact is the pickled "
        "scikit-learn pipeline.",
        "",
    ]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
