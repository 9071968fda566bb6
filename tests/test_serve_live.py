"""A real uvicorn process on 127.0.0.1 with the tiny model, fuzzed: it never crashes."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time

import httpx
import pytest

POS = "好棒喜爱赞乐美好棒喜爱赞"
NEG = "差坏烂恨糟怒哭差坏烂恨糟"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_runs, tmp_path_factory):
    port = free_port()
    # A file, not a pipe: nobody reads a pipe while the test runs, and a full pipe would
    # block the server on its one log line per request.
    log = open(tmp_path_factory.mktemp("serve") / "server.log", "w+b")
    cmd = [
        sys.executable,
        "-c",
        "from weibo_senti.cli import main; main()",
        "serve",
        "--adapter",
        f"weibo={trained_runs['lora']}",
        "--adapter",
        f"bottleneck={trained_runs['adapter']}",
        "--port",
        str(port),
        "--precision",
        "fp32",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(log.read().decode())
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def test_fuzz_never_crashes_the_server(server):
    rng = random.Random(1)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))) for _ in range(150)]
    payloads += [
        b"[" * 50_000,
        b"{" * 50_000,
        json.dumps({"texts": [[["x"]]]}).encode(),
        b'{"texts": ["\xff\xfe"]}',
        json.dumps({"texts": ["x"] * 100_000}).encode(),
        json.dumps({"texts": None}).encode(),
        b"null",
        b"0",
        b'""',
    ]
    with httpx.Client(timeout=30) as c:
        for body in payloads:
            r = c.post(
                f"{server}/v1/predict", content=body, headers={"content-type": "application/json"}
            )
            assert 400 <= r.status_code < 500, (body[:40], r.status_code, r.text[:200])
            assert "error" in r.json()
        assert c.get(f"{server}/health").status_code == 200
