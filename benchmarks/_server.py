"""A server under test in its own process, for the serving benchmarks (serve_bench.py,
multitask_serve.py): started on a free port, waited for until GET /health answers 200, stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

import httpx

# a request not answered within this is a failure of the server (a hang), not a slow answer
REQUEST_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], name: str, tries: int) -> tuple[subprocess.Popen, str]:
    """`python ARGS --port PORT` on a free port, once /health answers (``tries`` polls, 0.1 s
    apart). Its stderr goes to a file, never an unread pipe: `weibo-senti serve` logs a line
    per request, and a full pipe would block it; the file's tail is in the error if it exits."""
    port = free_port()
    cmd = [sys.executable, *args, "--port", str(port)]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(tries):
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read()[-2000:].decode("utf-8", errors="replace")
            raise RuntimeError(f"{name} exited with {proc.returncode}: {' '.join(cmd)}\n{tail}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{name} did not start: {' '.join(cmd)}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
