"""Bulk scoring benchmark (not a unit test): rows/s and peak RSS of `predict --input`.

    python scripts/bulk_bench.py --run runs/weibo --report docs/studies/bulk-bench

Local engine on 2,000 and 200,000 posts (weibo_senti_100k/dev.csv repeated), the in-memory path
(one predict() call over every text, what `predict --input` did before streaming) as the peer
for rows/s, and the Ray engine with 1 and 2 actors, each in its own process so peak RSS is its
own. Figures land in <report>.json and <report>.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"

IN_MEMORY = """
import csv, sys, time
from weibo_senti.predict import SentimentClassifier
clf = SentimentClassifier.load(sys.argv[1])
with open(sys.argv[2], encoding="utf-8", newline="") as f:
    texts = [r["review"] for r in csv.DictReader(f)]
t0 = time.perf_counter()
clf.predict(texts)
print(time.perf_counter() - t0)
"""


def make_input(path: Path, rows: int, dev: Path) -> Path:
    if path.exists():
        return path
    with open(dev, encoding="utf-8", newline="") as f:
        source = list(csv.DictReader(f))
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "review", "label"])
        for i in range(rows):
            r = source[i % len(source)]
            w.writerow([i, r["review"], r["label"]])
    return path


# A fresh wrapper per case: RUSAGE_CHILDREN's peak is then that case's process alone (Ray's
# actors are the raylet's children, not ours: for Ray this is the driver's peak).
WRAP = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "file=sys.stderr); sys.exit(r.returncode)"
)


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds and the peak RSS of one command in its own process."""
    t0 = time.perf_counter()
    env = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", WRAP, *cmd], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{cmd} failed:\n{done.stderr[-3000:]}")
    peak = int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 1024, 1), "out": done}


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "weibo_senti.cli", "predict", *map(str, args)]


def measure(case: str, args, work: Path) -> dict:
    run, rows = args.run, {"2k": 2000, "200k": args.big_rows, "20k": 20000, "64": 64}
    dev = args.shared / "data/weibo_senti_100k/dev.csv"
    size = case.split("-")[-1]
    src = make_input(work / f"posts-{size}.csv", rows[size], dev)
    out = work / f"{case}.csv"
    out.unlink(missing_ok=True)
    if case.startswith("local1"):  # one thread: the peer of one Ray actor (1 CPU, 1 thread)
        r = timed(cli(run, "--input", src, "--output", out), {"OMP_NUM_THREADS": "1"})
    elif case.startswith("local"):
        r = timed(cli(run, "--input", src, "--output", out))
    elif case.startswith("memory"):
        r = timed([sys.executable, "-c", IN_MEMORY, str(run), str(src)])
        r["scoring_seconds"] = float(r["out"].stdout.strip())
    else:  # ray-1-20k, ray-2-20k
        workers = case.split("-")[1]
        r = timed(
            cli(run, "--input", src, "--output", out, "--engine", "ray", "--workers", workers)
        )
    done = r.pop("out")
    if "scored in" in done.stderr:  # the CLI's summary: seconds from reading to the last write
        r["scoring_seconds"] = float(done.stderr.rsplit("scored in ", 1)[1].split(" s")[0])
    if "scoring_seconds" in r:
        r["scoring_rows_per_s"] = round(rows[size] / r["scoring_seconds"], 1)
    r.update(case=case, rows=rows[size], rows_per_s=round(rows[size] / r["seconds"], 1))
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", required=True)
    ap.add_argument("--shared", type=Path, default=SHARED, help="folder with data/")
    ap.add_argument(
        "--cases",
        nargs="+",
        default=["local-2k", "local-200k", "memory-20k", "local-20k", "ray-1-20k", "ray-2-20k"],
    )
    ap.add_argument("--big-rows", type=int, default=200_000)
    ap.add_argument("--work", default="runs/bulk-bench")
    ap.add_argument("--report", default="docs/studies/bulk-bench")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = Path(f"{args.report}.json")
    results = json.loads(report.read_text())["results"] if report.exists() else {}
    for case in args.cases:
        results[case] = measure(case, args, work)
        print(json.dumps(results[case]), flush=True)
        report.write_text(json.dumps({"results": results}, indent=1) + "\n")
    Path(f"{args.report}.md").write_text(render(results), encoding="utf-8")
    plot(results, Path(f"{args.report}.png"))


def render(results: dict) -> str:
    lines = [
        "| case | rows | wall s | scoring s | rows/s (scoring) | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for case, r in results.items():
        scoring = r.get("scoring_seconds")
        rate = r.get("scoring_rows_per_s", r["rows_per_s"])
        lines.append(
            f"| {case} | {r['rows']} | {r['seconds']} | {scoring if scoring else '-'} | {rate} "
            f"| {r['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(results)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    rates = [results[c].get("scoring_rows_per_s", results[c]["rows_per_s"]) for c in cases]
    a.barh(cases, rates, color="#4c72b0")
    a.set_xlabel("rows/s (scoring; Ray: wall incl. start-up)")
    b.barh(cases, [results[c]["peak_rss_mb"] for c in cases], color="#dd8452")
    b.set_xlabel("peak RSS, MB (Ray: the driver only)")
    for ax in (a, b):
        ax.invert_yaxis()
    fig.suptitle("predict --input on 2 CPU cores, gpt2-mini-zh LoRA run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
