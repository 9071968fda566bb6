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
    """Training loss per logging step, dev loss/accuracy/macro-F1 per epoch."""
    train, evals = read_metrics(run)
    if not train and not evals:
        raise UserError(f"{run} has no training metrics to plot")
    fig, (a, b) = figure(2, figsize=(11, 4))
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
    fig.suptitle(f"run {Path(run).resolve().name}")
    out = out or runfolder.report_path(run)
    save_figure(fig, out)
    return out


def plot_reliability(labels, before, after, out: Path) -> Path:
    """Reliability diagram (scikit-learn's CalibrationDisplay), before and after temperature."""
    from sklearn.calibration import CalibrationDisplay

    from .metrics import calibration_metrics

    fig, ax = figure(figsize=(5.5, 5))
    for name, probs in (("before", before), ("after", after)):
        ece = calibration_metrics(labels, probs)["ece"]
        CalibrationDisplay.from_predictions(
            labels, probs[:, 1], n_bins=15, ax=ax, name=f"{name} temperature (ECE {ece:.3f})"
        )
    ax.set(title="reliability: P(positive) against the share of positives")
    save_figure(fig, out)
    return out


def plot_comparison(
    results: dict, runs: dict[str, Path], out: Path, sets: list[str] | None = None
) -> list[Path]:
    """Curves of every method on one figure, confusion matrices, accuracy vs artifact size,
    accuracy per set (``sets``: default dev and dev without emoticons)."""
    sets = sets or ["dev", "dev_stripped"]
    paths = []
    fig, (a, b) = figure(2, figsize=(11, 4))
    for method, run in runs.items():
        train, evals = read_metrics(run)
        a.plot([r["epoch"] for r in train], [r["loss"] for r in train], label=method)
        b.plot([r["epoch"] for r in evals], [r["macro_f1"] for r in evals], "o-", label=method)
    a.set(xlabel="epoch", title="training loss")
    b.set(xlabel="epoch", title="dev macro-F1")
    a.legend()
    b.legend()
    save_figure(fig, out / "curves.png")
    paths.append(out / "curves.png")

    methods = list(results)
    fig, axes = figure(len(methods), figsize=(3.2 * len(methods), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        cm = results[method]["confusion_matrix"]
        ax.imshow(cm, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(cm[i][j]), ha="center", va="center")
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["neg", "pos"],
            yticklabels=["neg", "pos"],
            xlabel="predicted",
            ylabel="true",
            title=method,
        )
    fig.suptitle("dev confusion matrices (first seed)")
    save_figure(fig, out / "confusion.png")
    paths.append(out / "confusion.png")

    fig, ax = figure()
    for method in methods:
        r = results[method]
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
    save_figure(fig, out / "accuracy_vs_size.png")
    paths.append(out / "accuracy_vs_size.png")
    paths.append(plot_accuracy_by_set(results, sets, out / "accuracy_by_set.png"))
    return paths


def plot_accuracy_by_set(results: dict, sets: list[str], path: Path) -> Path:
    """Grouped bars: each method's accuracy on dev, dev without emoticons and every test set."""
    fig, ax = figure(figsize=(max(6, 1.3 * len(sets) * len(results) / 2), 4))
    width = 0.8 / len(results)
    for k, (method, r) in enumerate(results.items()):
        xs = [i + k * width for i in range(len(sets))]
        means = [r[f"{s}_accuracy"]["mean"] for s in sets]
        stds = [r[f"{s}_accuracy"]["std"] for s in sets]
        ax.bar(xs, means, width, yerr=stds, label=method)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sets))], sets)
    ax.set(ylabel="accuracy", ylim=(0.4, 1.0), title="accuracy per set (dev labels: emoticons)")
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return path


CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC")


def cjk_font():
    """A font with Chinese glyphs for this figure only (rcParams are process-wide: untouched);
    None when the machine has none (the characters then show as boxes)."""
    from matplotlib import font_manager

    for path in font_manager.findSystemFonts():
        try:
            name = font_manager.FontProperties(fname=path).get_name()
        except (RuntimeError, OSError):
            continue
        if name in CJK_FONTS:
            return font_manager.FontProperties(fname=path, size=15)
    return None


def plot_explanations(explanations: list, titles: list[str], out: Path, per_line: int = 40) -> Path:
    """One panel per explanation: every character on a background green (toward the second
    label) or red (toward the first), as deep as its share of the panel's largest attribution;
    long posts wrap every ``per_line`` characters."""
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
        label = f"{title}: {ex.label} (p={ex.score:.3f}){cut}"
        ax.set_title(label, loc="left", fontproperties=small)
    save_figure(fig, out)
    return out


def _rectangle(xy, w, h, colour):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, facecolor=colour, edgecolor="none")
