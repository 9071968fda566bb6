"""HTTP serving benchmark: `weibo-senti serve` against the peer a user would otherwise write
(transformers' `pipeline("text-classification")` in a FastAPI handler,
`benchmarks/peer_pipeline_server.py`), side by side in one run: same model folder (GPT-2 small
shape, random weights), same posts (weibo_senti_100k dev), one post per request, 1, 8 and 32
concurrent clients; requests/s, p50 and p99 latency, errors, and the ratios at 32 clients.

    python benchmarks/serve_bench.py                # ours (default settings) and the peer
    python benchmarks/serve_bench.py --servers ours ours-bf16 peer
    python benchmarks/serve_bench.py --rounds 3 --isa avx2 --out benchmarks/serve-avx2-rounds.json

--rounds N: only the largest client count, the servers taking turns (ours, peer, then peer,
ours, ...) for N rounds, each server started afresh; prints each round's ratio and the median
(one run's ratio moves with the host's speed level between the phases).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _server import REQUEST_TIMEOUT_S, start_server, stop  # same folder
from cpu_isa import restart_with_isa

SHARED = Path(__file__).resolve().parents[2] / "shared"


SERVERS = {
    "ours": ["-m", "weibo_senti.cli", "serve", "{run}"],
    "ours-no-batching": ["-m", "weibo_senti.cli", "serve", "{run}", "--no-micro-batching"],
    "ours-bf16": ["-m", "weibo_senti.cli", "serve", "{run}", "--precision", "bf16"],
    "peer": [str(Path(__file__).with_name("peer_pipeline_server.py")), "{run}"],
}


def start(run: Path, server: str) -> tuple[subprocess.Popen, str]:
    return start_server([a.format(run=run) for a in SERVERS[server]], server, tries=1200)


def load(url: str, texts: list[str], clients: int, requests: int) -> dict:
    """`clients` threads, each with its own keep-alive connection, send `requests` one-post
    requests in all, each as soon as its previous one is answered."""

    def client(c: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            for i in range(c, requests, clients):
                t0 = time.perf_counter()
                r = http.post(url + "/v1/predict", json={"texts": [texts[i % len(texts)]]})
                out.append((time.perf_counter() - t0, r.status_code))
        return out

    client(0)  # warm-up (first-call costs, shapes), not counted
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        res = [x for part in ex.map(client, range(clients)) for x in part]
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
    ap.add_argument("--requests", type=int, default=320, help="at 8 and 32 clients (1: a quarter)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--servers", nargs="+", default=["ours", "peer"], choices=list(SERVERS))
    ap.add_argument("--out", default="benchmarks/serve.json")
    ap.add_argument("--png", help="the figure (default: docs/figures/<--out's name>.png)")
    ap.add_argument("--plot-only", action="store_true", help="re-draw the PNG from --out")
    ap.add_argument("--isa", default="native", help="native, or avx2 (cpu_isa.py)")
    ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds at max clients")
    args = ap.parse_args()
    restart_with_isa(args.isa)  # the servers inherit the mask
    png = Path(args.png or f"docs/figures/{Path(args.out).stem}.png")  # the speed page shows it
    if args.plot_only:
        return plot(json.loads(Path(args.out).read_text()), png)
    sys.path.insert(0, str(Path(__file__).parent))
    import bench

    from weibo_senti.cli import configure_process
    from weibo_senti.data import read_labelled

    configure_process()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request

    texts = read_labelled(args.texts).texts[:1000]
    run = bench.make_run(
        argparse.Namespace(base_model=None, tokenizer=args.tokenizer),
        Path(tempfile.mkdtemp(prefix="serve-bench-")),
    )
    if args.rounds:
        return interleaved(args, run, texts)
    rows = []
    for server in args.servers:
        proc, url = start(run, server)
        try:
            for clients in args.clients:
                n = args.requests if clients > 1 else args.requests // 4
                row = {"server": server, **load(url, texts, clients, n)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            stop(proc)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    plot(rows, png)
    print(table(rows))


def interleaved(args, run: Path, texts: list[str]) -> None:
    """--rounds: the first two servers take turns at the largest client count."""
    clients, (ours, peer) = max(args.clients), args.servers[:2]
    rows = []
    for k in range(args.rounds):
        for server in (ours, peer) if k % 2 == 0 else (peer, ours):
            proc, url = start(run, server)
            try:
                rows.append(
                    {"round": k, "server": server, **load(url, texts, clients, args.requests)}
                )
            finally:
                stop(proc)
            print(json.dumps(rows[-1]), flush=True)
    rate = {(r["round"], r["server"]): r["req_per_s"] for r in rows}
    ratios = [rate[k, ours] / rate[k, peer] for k in range(args.rounds)]
    print(
        f"{ours} / {peer} at {clients} clients per round: " + ", ".join(f"{x:.2f}x" for x in ratios)
    )
    print(f"median {statistics.median(ratios):.2f}x")
    result = {"clients": clients, "rows": rows, "ratios": ratios}
    Path(args.out).write_text(json.dumps(result, indent=2))


def table(rows: list[dict]) -> str:
    lines = [
        "| server | clients | requests/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['clients']} | {r['req_per_s']:.1f} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['errors']} |"
        )
    by = {(r["server"], r["clients"]): r for r in rows}
    for server in dict.fromkeys(r["server"] for r in rows):
        ours, peer = by.get((server, 32)), by.get(("peer", 32))
        if server != "peer" and ours and peer:
            lines.append(
                f"\n{server} / peer at 32 clients: {ours['req_per_s'] / peer['req_per_s']:.2f}x "
                f"requests/s; p99 {ours['p99_ms']:.0f} ms vs the peer's p50 {peer['p50_ms']:.0f} ms"
            )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {
        "ours": ("o-", "tab:blue"),
        "ours-no-batching": ("^:", "tab:green"),
        "ours-bf16": ("d-.", "tab:purple"),
    }
    for server in dict.fromkeys(r["server"] for r in rows):
        style, color = styles.get(server, ("s--", "tab:orange"))
        rs = [r for r in rows if r["server"] == server]
        label = "pipeline in FastAPI (peer)" if server == "peer" else f"weibo-senti ({server})"
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
    right.set_yscale("log")
    fig.suptitle("serving one post per request, GPT-2 small shape, 2 CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
