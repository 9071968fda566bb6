"""Many tasks on one base, served: one `weibo-senti serve` holding three adapters (a binary, a
three-way and a six-emotion run) answering mixed-task requests, against the same server
answering one task alone; and its memory against three servers that each hold one task.

Throughput: rounds A (each request names the next task in turn: binary, three, six, ...) and
B (every request names one task; B rounds take the tasks in turn) alternate in this one
process against the one server, so drift (thermal, other load) hits both alike. The single-task
rate is the harmonic mean of the three tasks' B rates (the rate of the same mix of work done
one task at a time); the goal is mixed / single >= 0.8. Memory: the server's RSS (VmRSS, after
the rounds) against the sum of three one-task servers' RSS after the same warm-up.

    python benchmarks/multitask_serve.py BINARY_RUN THREE_WAY_RUN SIX_EMOTION_RUN \
        --out benchmarks/multitask-serve.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _server import REQUEST_TIMEOUT_S, start_server, stop  # same folder

TASKS = ("binary", "three", "six")
POSTS = [
    "今天天气真好，心情也很好",
    "服务态度差，价格还贵，再也不来了",
    "这部电影让我哭了整整一晚上",
    "气死我了，快递又丢了",
    "突然收到多年未见的老朋友的消息，太意外了",
    "晚上一个人走夜路有点害怕",
    "新买的手机用着还行吧",
    "终于考完试了，开心！",
]


def start(args: list[str], precision: str) -> tuple[subprocess.Popen, str]:
    """`weibo-senti serve ARGS` on a free port, once /health answers."""
    cmd = ["-m", "weibo_senti.cli", "serve", *args, "--precision", precision]
    return start_server(cmd, "serve", tries=3000)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def rounds_of(url: str, names: list[str | None], texts: list[str], clients: int, per: int) -> dict:
    """`clients` threads with keep-alive connections send request i (``per`` posts) for
    adapter ``names[i]`` (None: the default), each as soon as its previous one is answered."""

    def client(c: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            for i in range(c, len(names), clients):
                body = {"texts": [texts[(i * per + k) % len(texts)] for k in range(per)]}
                if names[i] is not None:
                    body["adapter"] = names[i]
                t0 = time.perf_counter()
                r = http.post(url + "/v1/predict", json=body)
                out.append((time.perf_counter() - t0, r.status_code))
        return out

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        res = [x for part in ex.map(client, range(clients)) for x in part]
    wall = time.perf_counter() - t0
    errors = sum(status != 200 for _, status in res)
    if errors:
        raise RuntimeError(f"{errors} of {len(res)} requests failed")
    lat = sorted(x for x, _ in res)
    return {
        "requests": len(res),
        "posts_per_s": len(res) * per / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }


def ab_rounds(url: str, texts: list[str], o: argparse.Namespace) -> dict:
    """Alternating A (mixed) and B (one task, in turn) rounds against one server."""
    mixed = [TASKS[i % len(TASKS)] for i in range(o.requests)]
    rounds_of(url, mixed, texts, o.clients, o.posts_per_request)  # warm-up: every task's shapes
    a, b = [], {t: [] for t in TASKS}
    for r in range(o.rounds):
        a.append(rounds_of(url, mixed, texts, o.clients, o.posts_per_request))
        task = TASKS[r % len(TASKS)]
        single = [task] * o.requests
        b[task].append(rounds_of(url, single, texts, o.clients, o.posts_per_request))
        print(
            f"round {r + 1}: mixed {a[-1]['posts_per_s']:.1f} posts/s, {task} alone "
            f"{b[task][-1]['posts_per_s']:.1f} posts/s",
            flush=True,
        )
    mixed_rate = statistics.median(x["posts_per_s"] for x in a)
    single = {t: statistics.median(x["posts_per_s"] for x in b[t]) for t in TASKS if b[t]}
    harmonic = len(single) / sum(1 / v for v in single.values())
    return {
        "mixed_posts_per_s": mixed_rate,
        "single_posts_per_s": single,
        "single_harmonic_posts_per_s": harmonic,
        "throughput_ratio": mixed_rate / harmonic,
        "mixed_rounds": a,
        "single_rounds": b,
    }


def separate_servers(runs: dict[str, Path], texts: list[str], o: argparse.Namespace) -> dict:
    """Each task in a server of its own (one after another), RSS after the same warm-up."""
    out = {}
    for task, run in runs.items():
        proc, url = start([str(run)], o.precision)
        try:
            rounds_of(url, [None] * o.requests, texts, o.clients, o.posts_per_request)
            out[task] = rss_mb(proc.pid)
        finally:
            stop(proc)
    return out


def read_texts(path: Path | None) -> list[str]:
    if path is None:
        return POSTS
    lines = [t.strip() for t in path.read_text(encoding="utf-8").splitlines()]
    return [t for t in lines if t] or POSTS


def main(argv: list[str] | None = None) -> dict:
    o = parse(argv)
    runs = dict(zip(TASKS, (o.binary, o.three, o.six)))
    texts = read_texts(o.texts)
    specs = [x for task, run in runs.items() for x in ("--adapter", f"{task}={run}")]
    proc, url = start(specs, o.precision)
    try:
        throughput = ab_rounds(url, texts, o)
        shared = rss_mb(proc.pid)
    finally:
        stop(proc)
    separate = separate_servers(runs, texts, o)
    result = {
        "runs": {t: str(r) for t, r in runs.items()},
        "settings": {k: v for k, v in vars(o).items() if k in SETTINGS},
        "machine": {"cpu": platform.processor() or platform.machine(), "python": sys.version},
        **throughput,
        "rss_mb": {
            "shared": shared,
            "separate": separate,
            "separate_total": sum(separate.values()),
        },
        "memory_ratio": shared / sum(separate.values()),
    }
    print(
        f"mixed / single-task throughput: {result['throughput_ratio']:.2f} (goal >= 0.8); "
        f"one server's RSS / three servers': {shared:.0f} / {sum(separate.values()):.0f} MB "
        f"= {result['memory_ratio']:.2f}"
    )
    if o.out:
        o.out.write_text(
            json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
    return result


SETTINGS = ("requests", "rounds", "clients", "posts_per_request", "precision", "texts")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("binary", type=Path, help="a run of two labels (lora or adapter)")
    p.add_argument("three", type=Path, help="a three-way run on the same base")
    p.add_argument("six", type=Path, help="a six-emotion run on the same base")
    p.add_argument("--requests", type=int, default=240, help="requests per round")
    p.add_argument("--rounds", type=int, default=6, help="A/B pairs (B takes the tasks in turn)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--posts-per-request", type=int, default=1)
    p.add_argument("--precision", default="auto")
    p.add_argument("--texts", type=Path, help="posts, one per line (default: a few built in)")
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    o = p.parse_args(argv)
    if o.requests < 1 or o.rounds < 1 or o.clients < 1 or o.posts_per_request < 1:
        p.error("--requests, --rounds, --clients and --posts-per-request must be at least 1")
    return o


if __name__ == "__main__":
    main()
