"""`compare`: full / adapter / LoRA and a TF-IDF + logistic regression baseline, same data,
same splits, same base; a table (Markdown + JSON) and plots.

Any label set: the task's labels come from ``--labels`` or the training file (after
``--label-map``); every test set is read with them (and the map) before any training. The
human-labelled sets are negative/positive posts: they are scored only when the task is
exactly that (negative, positive); for any other label set they are skipped, and the report
says so.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np

from . import runfolder
from .calibrate import softmax
from .config import TrainConfig
from .data import Examples
from .errors import UserError
from .files import write_json, write_text
from .isolate import peak_rss_mb, run_isolated
from .labels import BINARY
from .progress import progress

log = logging.getLogger("weibo_senti")

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


def _scores(predict_proba, dev, tests: dict[str, Examples], temperature=None) -> dict:
    """Accuracy, macro-F1 and calibration on dev (as is and emoticons stripped) and on every
    test set (read beforehand with the task's labels: ``dev.names``).

    ``temperature``: the run's, already folded into its head; the dev calibration *before* it
    is recovered from the calibrated probabilities (softmax(log p * T))."""
    from .data import strip_emoticons
    from .metrics import calibration_metrics, classification_metrics

    names = dev.names
    probs = predict_proba(dev.texts)
    m = classification_metrics(dev.labels, probs, names)
    stripped = classification_metrics(
        dev.labels, predict_proba([strip_emoticons(t) for t in dev.texts]), names
    )
    after = calibration_metrics(dev.labels, probs)
    out = {
        "dev_accuracy": m["accuracy"],
        "dev_macro_f1": m["macro_f1"],
        "dev_stripped_accuracy": stripped["accuracy"],
        "dev_stripped_macro_f1": stripped["macro_f1"],
        "dev_ece": after["ece"],
        "dev_brier": after["brier"],
        "dev_log_loss": after["log_loss"],
        "confusion_matrix": m["confusion_matrix"],
    }
    if temperature is not None:
        raw = np.log(np.clip(probs, 1e-12, None)) * temperature
        before = calibration_metrics(dev.labels, softmax(raw))
        out.update({f"dev_{k}_before": v for k, v in before.items()})
    for name, ex in tests.items():
        p = predict_proba(ex.texts)
        scored = classification_metrics(ex.labels, p, names)
        out[f"{name}_accuracy"] = scored["accuracy"]
        out[f"{name}_macro_f1"] = scored["macro_f1"]
        out[f"{name}_ece"] = calibration_metrics(ex.labels, p)["ece"]
        out[f"{name}_confusion_matrix"] = scored["confusion_matrix"]
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


def run_neural(cfg: TrainConfig, extra: dict[str, Examples], infer_texts: int) -> dict:
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


def tfidf_pipeline(class_weights: str = "none"):
    """Character 1-3-gram TF-IDF + logistic regression (multinomial for more than two labels;
    classes balanced with ``class_weights="balanced"``), unfitted: the baseline's settings."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    balanced = "balanced" if class_weights == "balanced" else None
    return make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0, class_weight=balanced),
    )


def run_tfidf(cfg: TrainConfig, extra: dict[str, Examples], infer_texts: int) -> dict:
    """``tfidf_pipeline`` (classes balanced with ``--class-weights balanced``) on exactly the
    same splits."""
    import pickle

    from .train import load_splits

    train_set, dev = load_splits(cfg)
    pipe = tfidf_pipeline(cfg.class_weights)
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

    ``train_options``: TrainConfig fields for every method (``labels``, ``label_map``,
    ``epochs``...). The data and every test set are read, and refused with one line, before
    anything is written. Each method runs in a fresh process; ``child_setup`` is called first
    in each."""
    methods = list(methods or METHODS)
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise UserError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    common = dict(base_model=base_model, data=data, dev_data=dev_data, **train_options)
    first = TrainConfig.checked(method="lora", seed=seed, **common)
    names = task_labels(first)
    human, skipped = task_human_sets(names, human_data)
    extra = read_tests(extra_tests or {}, names, first)
    tests = {name: read_human_set(path) for name, path in human.items()} | extra
    out.mkdir(parents=True, exist_ok=True)
    rows = _run_methods(methods, repeats, seed, out, common, tests, infer_texts, child_setup)
    for row in (r for method_rows in rows.values() for r in method_rows) if human else ():
        row["human_mean_accuracy"] = float(np.mean([row[f"{h}_accuracy"] for h in human]))
    results = {m: _aggregate(r) for m, r in rows.items()}
    meta = {
        "command": command,
        "base_model": base_model,
        "data": data,
        "dev_data": dev_data,
        "labels": names,
        "human_sets": human,
        "human_sets_skipped": skipped,
        "extra_tests": dict(extra_tests or {}),
        "repeats": repeats,
        "seeds": [seed + r for r in range(repeats)],
        "train_options": train_options,
        "sampled_train_rows": train_options.get("max_train_samples"),
    }
    _write_report(out, results, rows, meta, methods)
    return results


def _run_methods(methods, repeats, seed, out, common, tests, infer_texts, setup) -> dict:
    """Every method, every seed, each in a fresh process: their rows by method."""
    jobs = [(m, seed + r) for r in range(repeats) for m in methods]
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    for method, s in progress(jobs, desc="compare"):
        cfg = TrainConfig.checked(
            method="lora" if method == "tfidf" else method,
            seed=s,
            out=str(out / "runs" / f"{method}-seed{s}"),
            **common,
        )
        fn = run_tfidf if method == "tfidf" else run_neural
        rows[method].append(run_isolated(fn, cfg, tests, infer_texts, setup=setup))
    return rows


def _write_report(out: Path, results: dict, rows: dict, meta: dict, methods: list[str]) -> None:
    from .report import plot_comparison

    write_json(out / "comparison.json", {"meta": meta, "results": results, "per_seed": rows})
    neural_runs = {m: Path(results[m]["run"]) for m in methods if m != "tfidf"}
    sets = ["dev", "dev_stripped", *meta["human_sets"], *meta["extra_tests"]]
    plots = plot_comparison(results, neural_runs, out, sets, meta["labels"])
    write_text(out / "comparison.md", render(results, meta, [p.name for p in plots]))


def task_labels(cfg: TrainConfig) -> list[str]:
    """The task's label names, as training finds them (``--labels``, else the training
    file's after ``--label-map``); data that training would refuse is refused here, first."""
    from .train import load_splits

    train_set, _ = load_splits(cfg)
    return train_set.names


def task_human_sets(names: list[str], root) -> tuple[dict[str, str], str | None]:
    """The human-labelled sets to score, and why none are (None when they are): they are
    negative/positive, so only a task of exactly those labels can be scored on them."""
    found = human_sets(root)
    if names != BINARY:
        why = (
            "their labels are negative/positive (0/1); this task's are "
            f"{', '.join(names)}, so they cannot be scored"
        )
        if found:
            log.warning("human-labelled sets %s skipped: %s", ", ".join(found), why)
        return {}, why
    if not found:
        log.warning(
            "warning: no human-labelled set found (--human-data): the report has only the dev "
            "set, whose weibo_senti_100k labels come from emoticons"
        )
    return found, None


def read_tests(specs: dict[str, str], names: list[str], cfg: TrainConfig) -> dict:
    """``--extra-test`` sets as Examples, read with the task's labels and label map (a row with
    another label is refused here, naming the file and the row)."""
    from .data import read_labelled

    clash = sorted(set(specs) & {"dev", "dev_stripped", *HUMAN_SETS})
    if clash:
        raise UserError(f"--extra-test name {clash[0]!r} is taken; choose another NAME")
    return {
        name: read_labelled(
            path,
            cfg.text_column,
            cfg.label_column,
            labels=names,
            label_map=cfg.label_map,
            labels_from="the task's labels",
        )
        for name, path in specs.items()
    }


def read_human_set(path: str) -> Examples:
    from .data import read_labelled

    return read_labelled(path, labels=BINARY, labels_from="negative/positive")


def _fmt(cell: dict, digits: int = 4, scale: float = 1.0) -> str:
    if cell["std"]:
        return f"{cell['mean'] * scale:.{digits}f} ± {cell['std'] * scale:.{digits}f}"
    return f"{cell['mean'] * scale:.{digits}f}"


def render(results: dict, meta: dict, plots: list[str]) -> str:
    human, extra = list(meta.get("human_sets", {})), list(meta["extra_tests"])
    labels = meta.get("labels") or list(BINARY)
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
        f"Labels ({len(labels)}): {', '.join(labels)}.",
        "",
        "## Quality",
        "",
    ]
    lines += _human_note(human, meta.get("human_sets_skipped"))
    lines += _quality_table(results, human, extra, f1=labels != list(BINARY))
    lines += [
        "",
        "ECE: expected calibration error (of the predicted label's probability), 15 bins; the "
        "neural runs' temperature was fitted on dev after training (so dev ECE is in-sample; "
        "the other sets' ECE is not tuned). TF-IDF's probabilities are logistic regression's "
        "own.",
        "",
    ]
    lines += _cost_table(results)
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _quality_table(results: dict, human: list[str], extra: list[str], f1: bool) -> list[str]:
    """Accuracy on every set (and macro-F1, for more than two labels), calibration."""
    sets = ["dev", "dev_stripped", *human, *extra]
    names = ["dev", "dev, emoticons stripped", *human, *extra]
    head = ["method"]
    for n in names:
        head += [f"{n} acc"] + ([f"{n} macro-F1"] if f1 else [])
    head += ["mean of the human-labelled sets"] if human else []
    head += ["dev ECE (before → after T)", "dev Brier", "dev log loss"]
    head += [f"{n} ECE" for n in human + extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in results.items():
        cells = [method]
        for s in sets:
            cells += [_fmt(r[f"{s}_accuracy"])] + ([_fmt(r[f"{s}_macro_f1"])] if f1 else [])
        cells += [_fmt(r["human_mean_accuracy"])] if human else []
        before = f"{r['dev_ece_before']['mean']:.4f} → " if "dev_ece_before" in r else ""
        cells += [before + _fmt(r["dev_ece"]), _fmt(r["dev_brier"]), _fmt(r["dev_log_loss"])]
        cells += [_fmt(r[f"{n}_ece"]) for n in human + extra]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cost_table(results: dict) -> list[str]:
    lines = [
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
    return lines + [
        "",
        "TF-IDF share is 100% (every weight is trained); its artifact is the pickled "
        "scikit-learn pipeline.",
        "",
    ]


def _human_note(human: list[str], skipped: str | None = None) -> list[str]:
    if human:
        return [
            f"Human-labelled sets: {', '.join(human)} (people's labels). weibo_senti_100k's "
            "labels were derived from emoticons, so its dev accuracy says little on its own.",
            "",
        ]
    if skipped:
        return [
            f"Human-labelled sets (weibo2018, smp2020, nlpcc) not scored: {skipped}. Give "
            "this task's own labelled test sets with `--extra-test NAME=FILE`.",
            "",
        ]
    return [
        "**No human-labelled set was found** (give `--human-data DIR`): the dev set's labels "
        "come from emoticons, so its accuracy alone says little about real posts.",
        "",
    ]
