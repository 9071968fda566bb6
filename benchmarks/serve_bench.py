"""HTTP serving benchmark: throughput and p50/p99 latency for 1, 8 and 32 concurrent clients,
micro-batching on and off, GPT-2 small shape with random weights, one post per request.

    python benchmarks/serve_bench.py
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SHARED = Path(__file__).resolve().parents[2] / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: Path, micro: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        "from weibo_senti.cli import main; main()",
        "serve",
        str(run),
        "--port",
        str(port),
        "--micro-batching" if micro else "--no-micro-batching",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def load(url: str, texts: list[str], clients: int, requests: int) -> dict:
    def one(i):
        with httpx.Client(timeout=120) as c:
            t0 = time.perf_counter()
            r = c.post(url + "/v1/predict", json={"texts": [texts[i % len(texts)]]})
            return time.perf_counter() - t0, r.status_code

    one(0)  # warm-up
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        res = list(ex.map(one, range(requests)))
    wall = time.perf_counter() - t0
    lat = sorted(x for x, _ in res)
    return {
        "clients": clients,
        "requests": requests,
        "errors": sum(s != 200 for _, s in res),
        "req_per_s": requests / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--texts", default=str(SHARED / "data/weibo_senti_100k/dev.csv"))
    ap.add_argument("--tokenizer", default=str(SHARED / "models/gpt2-mini-zh"))
    ap.add_argument("--requests", type=int, default=160)
    ap.add_argument("--out", default="benchmarks/serve.json")
    ap.add_argument("--plot-only", action="store_true", help="re-draw the PNG from --out")
    args = ap.parse_args()
    if args.plot_only:
        return plot(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".png"))
    sys.path.insert(0, str(Path(__file__).parent))
    import bench

    from weibo_senti.cli import configure_process
    from weibo_senti.data import read_labelled

    configure_process()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request

    texts = read_labelled(args.texts).texts[:500]
    run = bench.make_run(
        argparse.Namespace(base_model=None, tokenizer=args.tokenizer),
        Path(tempfile.mkdtemp(prefix="serve-bench-")),
    )
    rows = []
    for micro in (True, False):
        proc, url = start(run, micro)
        try:
            for clients in (1, 8, 32):
                n = args.requests if clients > 1 else args.requests // 4
                row = {"micro_batching": micro, **load(url, texts, clients, n)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    plot(rows, Path(args.out).with_suffix(".png"))
    print("| micro-batching | clients | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {'on' if r['micro_batching'] else 'off'} | {r['clients']} | "
            f"{r['req_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} |"
        )


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for micro, style, color in ((True, "o-", "tab:blue"), (False, "s--", "tab:orange")):
        rs = [r for r in rows if r["micro_batching"] == micro]
        label = "micro-batching " + ("on" if micro else "off")
        clients = [r["clients"] for r in rs]
        left.plot(clients, [r["req_per_s"] for r in rs], style, color=color, label=label)
        right.plot(clients, [r["p50_ms"] for r in rs], style, color=color, label=label + ", p50")
        right.plot(
            clients, [r["p99_ms"] for r in rs], style, color=color, alpha=0.4, label=label + ", p99"
        )
    for ax, ylabel in ((left, "requests / s"), (right, "latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 8, 32], ["1", "8", "32"])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("weibo-senti serve, GPT-2 small shape, 2 CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
