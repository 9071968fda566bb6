"""`compare`: full / adapter / LoRA and a TF-IDF + logistic regression baseline, same data,
same splits, same base; a table (Markdown + JSON) and plots."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from . import runfolder
from .calibrate import softmax
from .config import TrainConfig
from .errors import UserError
from .files import write_json, write_text
from .isolate import peak_rss_mb, run_isolated
from .progress import progress

METHODS = ("full", "adapter", "lora", "tfidf")
HUMAN_SETS = {  # name -> path under the data root (../shared/data here); see its READMEs
    "weibo2018": "weibo2018/train.csv",
    "smp2020": "smp2020_usual/eval.csv",
    "nlpcc": "nlpcc_emotion/binary.csv",
}


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


def _scores(predict_proba, dev, tests: dict, temperature: float | None = None) -> dict:
    """Accuracy and calibration on dev (as is and emoticons stripped) and on every test set.

    ``temperature``: the run's, already folded into its head; the dev calibration *before* it
    is recovered from the calibrated probabilities (softmax(log p * T))."""
    from .data import read_labelled, strip_emoticons
    from .metrics import calibration_metrics, classification_metrics

    probs = predict_proba(dev.texts)
    m = classification_metrics(dev.labels, probs)
    stripped = classification_metrics(
        dev.labels, predict_proba([strip_emoticons(t) for t in dev.texts])
    )
    after = calibration_metrics(dev.labels, probs)
    out = {
        "dev_accuracy": m["accuracy"],
        "dev_macro_f1": m["macro_f1"],
        "dev_stripped_accuracy": stripped["accuracy"],
        "dev_ece": after["ece"],
        "dev_brier": after["brier"],
        "dev_log_loss": after["log_loss"],
        "confusion_matrix": m["confusion_matrix"],
    }
    if temperature is not None:
        raw = np.log(np.clip(probs, 1e-12, None)) * temperature
        before = calibration_metrics(dev.labels, softmax(raw))
        out.update({f"dev_{k}_before": v for k, v in before.items()})
    for name, path in tests.items():
        ex = read_labelled(path)
        p = predict_proba(ex.texts)
        out[f"{name}_accuracy"] = classification_metrics(ex.labels, p)["accuracy"]
        out[f"{name}_ece"] = calibration_metrics(ex.labels, p)["ece"]
    return out


def human_sets(root: str | Path | None) -> dict[str, str]:
    """The human-labelled sets under ``root`` (weibo_senti_100k's labels come from emoticons;
    these were labelled by people, so they say whether a model learnt sentiment)."""
    if root is None:
        return {}
    found = {name: Path(root) / rel for name, rel in HUMAN_SETS.items()}
    return {name: str(path) for name, path in found.items() if path.is_file()}


def default_human_root() -> Path | None:
    """$WEIBO_SENTI_HUMAN_DATA, else a ``shared/data`` folder beside or above the cwd."""
    import os

    env = os.environ.get("WEIBO_SENTI_HUMAN_DATA")
    candidates = [Path(env)] if env else [Path("shared/data"), Path("../shared/data")]
    for root in candidates:
        if human_sets(root):
            return root.resolve()
    return None


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
        **_scores(clf.predict_proba, dev, extra, info.temperature),
        **_speed(clf.predict_proba, dev.texts[:infer_texts]),
        "temperature": info.temperature,
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
    human_data: str | Path | None = None,
    repeats: int = 1,
    seed: int = 42,
    command: str = "",
    infer_texts: int = 256,
    child_setup=None,
    **train_options,
) -> dict:
    """Train and measure each method on the same data and base; write the report to ``out``.

    Each method runs in a fresh process; ``child_setup`` is called first in each."""
    methods = list(methods or METHODS)
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise UserError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    human = human_sets(human_data)
    extra = {**human, **(extra_tests or {})}
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
        row = run_isolated(fn, cfg, extra, infer_texts, setup=child_setup)
        if human:
            row["human_mean_accuracy"] = float(np.mean([row[f"{h}_accuracy"] for h in human]))
        rows[method].append(row)
    results = {m: _aggregate(r) for m, r in rows.items()}
    sampled = train_options.get("max_train_samples")
    meta = {
        "command": command,
        "base_model": base_model,
        "data": data,
        "dev_data": dev_data,
        "human_sets": human,
        "extra_tests": {k: v for k, v in extra.items() if k not in human},
        "repeats": repeats,
        "seeds": [seed + r for r in range(repeats)],
        "train_options": train_options,
        "sampled_train_rows": sampled,
    }
    write_json(out / "comparison.json", {"meta": meta, "results": results, "per_seed": rows})
    from .report import plot_comparison

    neural_runs = {m: Path(results[m]["run"]) for m in methods if m != "tfidf"}
    plots = plot_comparison(results, neural_runs, out, ["dev", "dev_stripped", *extra])
    write_text(out / "comparison.md", render(results, meta, [p.name for p in plots]))
    return results


def _fmt(cell: dict, digits: int = 4, scale: float = 1.0) -> str:
    if cell["std"]:
        return f"{cell['mean'] * scale:.{digits}f} ± {cell['std'] * scale:.{digits}f}"
    return f"{cell['mean'] * scale:.{digits}f}"


def render(results: dict, meta: dict, plots: list[str]) -> str:
    human, extra = list(meta.get("human_sets", {})), list(meta["extra_tests"])
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
        "## Quality",
        "",
    ]
    lines += _human_note(human)
    sets = ["dev", "dev_stripped", *human, *extra]
    names = ["dev", "dev, emoticons stripped", *human, *extra]
    head = ["method", *(f"{n} acc" for n in names)]
    head += ["mean of the human-labelled sets"] if human else []
    head += ["dev ECE (before → after T)", "dev Brier", "dev log loss"]
    head += [f"{n} ECE" for n in human + extra]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in results.items():
        cells = [method] + [_fmt(r[f"{s}_accuracy"]) for s in sets]
        cells += [_fmt(r["human_mean_accuracy"])] if human else []
        before = f"{r['dev_ece_before']['mean']:.4f} → " if "dev_ece_before" in r else ""
        cells += [before + _fmt(r["dev_ece"]), _fmt(r["dev_brier"]), _fmt(r["dev_log_loss"])]
        cells += [_fmt(r[f"{n}_ece"]) for n in human + extra]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "ECE: expected calibration error, 15 bins; the neural runs' temperature was fitted on "
        "dev after training (so dev ECE is in-sample; the other sets' ECE is not tuned). "
        "TF-IDF's probabilities are logistic regression's own.",
        "",
        "## Cost",
        "",
        "| method | trainable params | share | artifact MB | train wall s | train samples/s "
        "| infer samples/s | 1-text latency ms | peak RSS MB |",
        "|" + "---|" * 9,
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
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "TF-IDF share is 100% (every weight is trained); its artifact is the pickled "
        "scikit-learn pipeline.",
        "",
    ]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _human_note(human: list[str]) -> list[str]:
    if human:
        return [
            f"Human-labelled sets: {', '.join(human)} (people's labels). weibo_senti_100k's "
            "labels were derived from emoticons, so its dev accuracy says little on its own.",
            "",
        ]
    return [
        "**No human-labelled set was found** (give `--human-data DIR`): the dev set's labels "
        "come from emoticons, so its accuracy alone says little about real posts.",
        "",
    ]
