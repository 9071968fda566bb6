"""Plots (matplotlib PNG) of one run's metrics.jsonl and of a method comparison."""

from __future__ import annotations

from pathlib import Path

from . import runfolder
from .errors import UserError
from .files import atomic_write


def figure(ncols: int = 1, figsize=(6, 4), **kw):
    """A figure and its axes, from matplotlib's object API: no pyplot, no global backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, ncols, **kw)


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    rows = runfolder.read_metrics(run)
    return [r for r in rows if r.get("type") == "train"], [
        r for r in rows if r.get("type") == "eval"
    ]


def save_figure(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))


def plot_run(run: Path, out: Path | None = None) -> Path:
    """Training loss per logging step, dev loss/accuracy/macro-F1 per epoch; for a run of more
    than two labels also each label's dev precision/recall/F1 at the kept epoch."""
    train, evals = read_metrics(run)
    if not train and not evals:
        raise UserError(f"{run} has no training metrics to plot")
    per_class = _kept_per_class(run)
    fig, axes = figure(3 if per_class else 2, figsize=(16.5 if per_class else 11, 4))
    a, b = axes[0], axes[1]
    a.plot([r["epoch"] for r in train], [r["loss"] for r in train], label="train loss")
    a.plot([r["epoch"] for r in evals], [r["loss"] for r in evals], "o-", label="dev loss")
    a.set_xlabel("epoch")
    a.set_title("loss")
    a.legend()
    for key in ("accuracy", "macro_f1"):
        b.plot([r["epoch"] for r in evals], [r[key] for r in evals], "o-", label=f"dev {key}")
    b.set_xlabel("epoch")
    b.set_title("dev metrics")
    b.legend()
    if per_class:
        _per_class_bars(axes[2], per_class)
    fig.suptitle(f"run {Path(run).resolve().name}")
    out = out or runfolder.report_path(run)
    save_figure(fig, out)
    return out


def _kept_per_class(run: Path) -> dict | None:
    """The kept epoch's per-label dev scores, for a run of more than two labels (None else)."""
    try:
        per_class = runfolder.read_eval_results(run).get("dev", {}).get("per_class")
    except (UserError, OSError, ValueError, AttributeError):
        return None  # a run still training has none yet
    return per_class if isinstance(per_class, dict) and len(per_class) > 2 else None


def _per_class_bars(ax, per_class: dict) -> None:
    names = list(per_class)
    width = 0.27
    for k, key in enumerate(("precision", "recall", "f1")):
        xs = [i + (k - 1) * width for i in range(len(names))]
        ax.bar(xs, [per_class[n][key] for n in names], width, label=key)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    _tick_font(ax, names)
    ax.set(ylim=(0, 1), title="dev per label (kept epoch)")
    ax.legend(fontsize=8)


def plot_reliability(labels, before, after, out: Path, names: list[str] | None = None) -> Path:
    """Reliability diagram (scikit-learn's CalibrationDisplay), before and after temperature:
    for two labels P(second label) against the share of it; for more, the top-label view:
    the predicted label's probability against how often the prediction is right (the ECE's)."""
    import numpy as np
    from sklearn.calibration import CalibrationDisplay

    from .metrics import calibration_metrics

    labels = np.asarray(labels)
    fig, ax = figure(figsize=(5.5, 5))
    for name, probs in (("before", before), ("after", after)):
        ece = calibration_metrics(labels, probs)["ece"]
        truth, p = reliability_inputs(labels, probs)
        CalibrationDisplay.from_predictions(
            truth, p, n_bins=15, pos_label=1, ax=ax, name=f"{name} temperature (ECE {ece:.3f})"
        )
    if np.asarray(after).shape[1] == 2:
        second = (names or ["negative", "positive"])[1]
        ax.set(title=f"reliability: P({second}) against the share labelled {second}")
    else:
        ax.set(
            title="reliability: the predicted label's probability against its accuracy",
            xlabel="probability of the predicted label",
            ylabel="share of predictions that are right",
        )
    save_figure(fig, out)
    return out


def reliability_inputs(labels, probs):
    """(outcome, probability) pairs the diagram bins: for two labels (the second label's
    presence, its probability); for more (whether the prediction is right, the predicted
    label's probability): the top-label view the ECE measures."""
    import numpy as np

    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        return labels, probs[:, 1]
    return (probs.argmax(-1) == labels).astype(int), probs.max(-1)


def _tick_font(ax, names: list[str]) -> None:
    """A CJK font on the tick labels where a label name needs one (this figure only)."""
    font = cjk_font(size=9) if any(not n.isascii() for n in names) else None
    if font is not None:
        for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
            tick.set_fontproperties(font)


def draw_confusion(ax, matrix, names: list[str], title: str) -> None:
    """Counts in the cells, colour by the row's share (each true label's recall), so a rare
    label's row is as readable as a frequent one's; rows true, columns predicted."""
    import numpy as np

    cm = np.asarray(matrix)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    n = len(names)
    size = 10 if n <= 4 else 8 if n <= 8 else 6
    for i in range(n):
        for j in range(n):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=size)
    turn = 0 if n <= 3 and max(len(x) for x in names) <= 8 else 45
    ax.set_xticks(range(n), names, rotation=turn, ha="right" if turn else "center")
    ax.set_yticks(range(n), names)
    _tick_font(ax, names)
    ax.set(xlabel="predicted", ylabel="true", title=title)


def plot_confusion(matrix, names: list[str], out: Path, title: str = "confusion") -> Path:
    """One confusion matrix (N x N, the labels named) as a PNG."""
    side = max(4.0, 1.6 + 0.75 * len(names))
    fig, ax = figure(figsize=(side, side))
    draw_confusion(ax, matrix, names, title)
    save_figure(fig, out)
    return out


def plot_comparison(
    results: dict,
    runs: dict[str, Path],
    out: Path,
    sets: list[str] | None = None,
    labels: list[str] | None = None,
) -> list[Path]:
    """Curves of every method on one figure, confusion matrices (``labels``: the task's, in
    order; default negative/positive), accuracy vs artifact size, accuracy per set (``sets``:
    default dev and dev without emoticons); for more than two labels macro-F1 per set too."""
    from .labels import BINARY

    sets = sets or ["dev", "dev_stripped"]
    labels = list(labels or BINARY)
    paths = [_plot_curves(runs, out / "curves.png")]
    methods = list(results)
    side = max(3.2, 1.2 + 0.55 * len(labels))
    fig, axes = figure(len(methods), figsize=(side * len(methods), side), squeeze=False)
    fig.set_layout_engine("constrained")  # tick names of one matrix clear of the next
    for ax, method in zip(axes[0], methods):
        draw_confusion(ax, results[method]["confusion_matrix"], labels, method)
    fig.suptitle("dev confusion matrices (first seed)")
    save_figure(fig, out / "confusion.png")
    paths.append(out / "confusion.png")
    paths.append(_plot_size(results, out / "accuracy_vs_size.png"))
    binary = labels == list(BINARY)
    paths.append(plot_accuracy_by_set(results, sets, out / "accuracy_by_set.png", binary=binary))
    if not binary:
        path = out / "macro_f1_by_set.png"
        paths.append(plot_accuracy_by_set(results, sets, path, "macro_f1", binary=False))
    return paths


def _plot_curves(runs: dict[str, Path], path: Path) -> Path:
    fig, (a, b) = figure(2, figsize=(11, 4))
    for method, run in runs.items():
        train, evals = read_metrics(run)
        a.plot([r["epoch"] for r in train], [r["loss"] for r in train], label=method)
        b.plot([r["epoch"] for r in evals], [r["macro_f1"] for r in evals], "o-", label=method)
    a.set(xlabel="epoch", title="training loss")
    b.set(xlabel="epoch", title="dev macro-F1")
    a.legend()
    b.legend()
    save_figure(fig, path)
    return path


def _plot_size(results: dict, path: Path) -> Path:
    fig, ax = figure()
    for method, r in results.items():
        size, acc = r["artifact_mb"]["mean"], r["dev_accuracy"]["mean"]
        ax.scatter(size, acc, s=60)
        ax.annotate(method, (size, acc), textcoords="offset points", xytext=(6, 4))
        ax.scatter(size, r["dev_stripped_accuracy"]["mean"], marker="x", c="k")
    ax.set_xscale("log")
    ax.set(
        xlabel="artifact size on disk (MB, log)",
        ylabel="accuracy",
        title="dev accuracy (dots) and emoticon-stripped (x) vs size",
    )
    save_figure(fig, path)
    return path


def plot_accuracy_by_set(
    results: dict, sets: list[str], path: Path, key: str = "accuracy", binary: bool = True
) -> Path:
    """Grouped bars: each method's ``key`` (accuracy, macro_f1) on dev, dev without emoticons
    and every test set; the binary task's axis starts at 0.4 with its 0.8 goal marked."""
    fig, ax = figure(figsize=(max(6, 1.3 * len(sets) * len(results) / 2), 4))
    width = 0.8 / len(results)
    for k, (method, r) in enumerate(results.items()):
        xs = [i + k * width for i in range(len(sets))]
        means = [r[f"{s}_{key}"]["mean"] for s in sets]
        stds = [r[f"{s}_{key}"]["std"] for s in sets]
        ax.bar(xs, means, width, yerr=stds, label=method)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sets))], sets)
    shown = key.replace("macro_f1", "macro-F1")
    if binary:
        ax.set(ylabel=shown, ylim=(0.4, 1.0), title=f"{shown} per set (dev labels: emoticons)")
        ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    else:
        ax.set(ylabel=shown, ylim=(0.0, 1.0), title=f"{shown} per set")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return path


CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC")


def cjk_font(size: float = 15):
    """A font with Chinese glyphs for this figure only (rcParams are process-wide: untouched);
    None when the machine has none (the characters then show as boxes)."""
    from matplotlib import font_manager

    for path in font_manager.findSystemFonts():
        try:
            name = font_manager.FontProperties(fname=path).get_name()
        except (RuntimeError, OSError):
            continue
        if name in CJK_FONTS:
            return font_manager.FontProperties(fname=path, size=size)
    return None


def plot_explanations(explanations: list, titles: list[str], out: Path, per_line: int = 40) -> Path:
    """One panel per explanation: every character on a background green (pushed toward the
    explained label, named in the panel's title) or red (away from it), as deep as its share of
    the panel's largest attribution; long posts wrap every ``per_line`` characters."""
    from matplotlib.figure import Figure

    font = cjk_font()
    small = font.copy() if font is not None else None
    if small is not None:
        small.set_size(10)
    rows = [max(1, -(-len(ex.chars) // per_line)) for ex in explanations]
    width = min(per_line, max(len(ex.chars) for ex in explanations))
    fig = Figure(figsize=(max(6, 0.42 * width), 0.55 + 0.9 * sum(rows) + 0.35 * len(rows)))
    axes = fig.subplots(len(explanations), 1, squeeze=False, height_ratios=rows)[:, 0]
    for ax, ex, title, n_rows in zip(axes, explanations, titles, rows):
        peak = max((abs(v) for _, v in ex.chars), default=0.0) or 1.0
        for i, (char, value) in enumerate(ex.chars):
            x, y = i % per_line, n_rows - 1 - i // per_line
            alpha = 0.85 * min(1.0, abs(value) / peak)
            colour = (0.18, 0.62, 0.36, alpha) if value > 0 else (0.85, 0.33, 0.31, alpha)
            ax.add_patch(_rectangle((x, y), 1, 1, colour))
            ax.text(x + 0.5, y + 0.45, char, ha="center", va="center", fontproperties=font)
        ax.set(xlim=(0, width), ylim=(0, n_rows))
        ax.axis("off")
        cut = " (cut at the max length)" if ex.truncated else ""
        label = f"{title}: {ex.label} (p={ex.score:.3f}); green: toward {ex.toward}{cut}"
        ax.set_title(label, loc="left", fontproperties=small)
    save_figure(fig, out)
    return out


def _rectangle(xy, w, h, colour):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, facecolor=colour, edgecolor="none")
