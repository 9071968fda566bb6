"""Draw docs/figures/speed.png from bench.py's results: each inference path's batch rate and
lone-post latency as ratios to the reference procedure, one panel pair per machine kind.

    python benchmarks/plot_speed.py    # results-cpu-avx2.json and results-cpu-epyc.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).parent
RUNS = {
    "AMD EPYC masked to AVX2 (2026-12-07)": HERE / "results-cpu-avx2.json",
    "AMD EPYC, AVX512-BF16/VNNI (2026-11-25)": HERE / "results-cpu-epyc.json",
}


def ratios(results: dict) -> list[tuple[str, float, float]]:
    """(path, batch rate / reference's, lone-post p50 / reference's) per inference row."""
    infer = results["infer"]
    ref = infer["reference"]
    return [
        (
            name,
            row["samples_per_s"] / ref["samples_per_s"],
            row["latency_p50_ms"] / ref["latency_p50_ms"],
        )
        for name, row in infer.items()
        if name != "reference"
    ]


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.4 * len(runs)), squeeze=False)
    for (title, results), (batch, lone) in zip(runs.items(), axes):
        rows = ratios(results)
        names = [n for n, _, _ in rows]
        colors = ["tab:orange" if n.startswith("peer") else "tab:blue" for n in names]
        colors = ["tab:green" if n.startswith("auto") else c for n, c in zip(names, colors)]
        batch.barh(names, [b for _, b, _ in rows], color=colors)
        lone.barh(names, [p for _, _, p in rows], color=colors)
        batch.set_title(f"{title}\nbatch rate ÷ reference (higher is better)", fontsize=9)
        lone.set_title("\nlone-post p50 ÷ reference (lower is better)", fontsize=9)
        lone.set_yticklabels([])
        for ax, line in ((batch, 1.0), (lone, 1.0)):
            ax.axvline(line, color="grey", lw=0.8)
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle("inference, GPT-2 small shape, 2 CPU cores (green: the default)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/figures/speed.png"))
    args = ap.parse_args()
    plot({title: json.loads(p.read_text()) for title, p in RUNS.items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
