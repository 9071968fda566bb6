"""Adapters loaded and unloaded while serving: on a live server (token, root, traversal,
wrong runs, LRU, requests racing unloads) and in process (an unload waits for in-flight work)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_bank import TEXTS, flipped_run  # noqa: F401  (a fixture: the same task, labels swapped)
from test_serve_live import start_server, stopped_gracefully

from weibo_senti import runfolder
from weibo_senti.predict import SentimentClassifier

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def reseal(run: Path) -> None:
    runfolder.seal(run)  # the edited copy is a consistent run, only a different one


@pytest.fixture(scope="module")
def adapter_root(trained_runs, flipped_run, tmp_path_factory):  # noqa: F811
    """Runs under a root: good ones, incompatible ones, and ones that lead out of the root."""
    top = tmp_path_factory.mktemp("adapter-root")
    root = top / "root"
    root.mkdir()
    shutil.copytree(trained_runs["lora"], root / "weibo")
    shutil.copytree(flipped_run, root / "teams" / "flip")
    shutil.copytree(trained_runs["adapter"], root / "bottleneck")
    shutil.copytree(trained_runs["full"], root / "full")
    wrong_base = shutil.copytree(trained_runs["lora"], root / "wrong-base")
    info = json.loads((wrong_base / "run.json").read_text())
    info["base"]["fingerprint"]["n_embd"] = 64
    (wrong_base / "run.json").write_text(json.dumps(info))
    wrong_tok = shutil.copytree(trained_runs["lora"], root / "wrong-tokenizer")
    spec = json.loads((wrong_tok / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["外"] = len(vocab)  # one token more: another tokenizer
    (wrong_tok / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    reseal(wrong_tok)
    outside = shutil.copytree(flipped_run, top / "outside")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    linked = shutil.copytree(flipped_run, root / "linked-weights")
    (linked / "adapter_model.safetensors").unlink()
    (linked / "adapter_model.safetensors").symlink_to(outside / "adapter_model.safetensors")
    (root / "loop").symlink_to(root / "loop")
    return root


@pytest.fixture(scope="module")
def server(trained_runs, adapter_root, tmp_path_factory):
    args = [str(adapter_root / "weibo"), "--precision", "fp32"]
    args += ["--adapter-root", str(adapter_root), "--max-adapters", "3"]
    os.environ["WEIBO_SENTI_ADMIN_TOKEN"] = TOKEN  # the environment route; the flag also works
    try:
        srv = start_server(tmp_path_factory.mktemp("serve-adapters"), *args)
    finally:
        del os.environ["WEIBO_SENTI_ADMIN_TOKEN"]
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    assert stopped_gracefully(srv), srv.output()[-2000:]


@pytest.fixture(scope="module")
def expected(adapter_root):
    """Each run's probabilities in this process: what every answer must equal."""
    out = {}
    for name, run in [("weibo", "weibo"), ("flip", "teams/flip"), ("bottleneck", "bottleneck")]:
        clf = SentimentClassifier.load(adapter_root / run, precision="fp32", name=name)
        out[name] = [p.probabilities["positive"] for p in clf.predict(TEXTS)]
    assert out["weibo"] != out["flip"]  # the race test below can tell them apart
    return out


def load(server, name: str, path: str, headers=AUTH) -> httpx.Response:
    body = {"name": name, "path": path}
    return httpx.post(f"{server.url}/v1/adapters", json=body, headers=headers, timeout=60)


def unload(server, name: str, headers=AUTH) -> httpx.Response:
    return httpx.delete(f"{server.url}/v1/adapters/{name}", headers=headers, timeout=60)


def predict(server, adapter: str | None, texts=TEXTS) -> httpx.Response:
    body = {"texts": texts, **({"adapter": adapter} if adapter else {})}
    return httpx.post(f"{server.url}/v1/predict", json=body, timeout=60)


def positives(response: httpx.Response) -> list[float]:
    return [p["probabilities"]["positive"] for p in response.json()["predictions"]]


def loaded(server) -> list[str]:
    return httpx.get(f"{server.url}/v1/adapters", timeout=60).json()["adapters"]


def test_admin_actions_need_the_token(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = load(server, "flip", "teams/flip", headers=headers)
        assert r.status_code == 401 and "admin token" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert unload(server, "weibo", headers=headers).status_code == 401
    assert loaded(server) == ["weibo"]


def test_without_a_token_administration_is_off(trained_runs):
    from fastapi.testclient import TestClient

    from weibo_senti.serve import create_app

    clf = SentimentClassifier.load(trained_runs["lora"], precision="fp32", name="weibo")
    with TestClient(create_app(clf, adapter_root=str(trained_runs["lora"].parent))) as c:
        r = c.post("/v1/adapters", json={"name": "a", "path": "adapter"}, headers=AUTH)
        assert r.status_code == 403 and "--admin-token" in r.json()["error"]
        assert c.delete("/v1/adapters/weibo", headers=AUTH).status_code == 403
        assert c.get("/v1/adapters").json()["adapters"] == ["weibo"]


def test_load_predict_and_unload_through_the_api(server, expected):
    r = load(server, "flip", "teams/flip")
    assert r.status_code == 201, r.text
    assert r.json() == {
        "loaded": "flip",
        "kind": "lora",
        "labels": ["negative", "positive"],
        "evicted": [],
    }
    assert load(server, "flip", "teams/flip").status_code == 409  # the name is taken
    listing = httpx.get(f"{server.url}/v1/adapters", timeout=60).json()
    assert listing["adapters"] == ["weibo", "flip"] and listing["default"] == "weibo"
    assert listing["details"]["flip"]["source"] == "teams/flip"
    assert positives(predict(server, "flip")) == pytest.approx(expected["flip"], abs=1e-5)
    assert positives(predict(server, None)) == pytest.approx(expected["weibo"], abs=1e-5)
    r = unload(server, "flip")
    assert r.status_code == 200 and r.json()["unloaded"] == "flip"
    r = predict(server, "flip")
    assert r.status_code == 404 and r.json()["adapters"] == ["weibo"]
    assert unload(server, "flip").status_code == 404
    assert unload(server, "weibo").status_code == 409  # the only one: the server keeps one
    assert positives(predict(server, None)) == pytest.approx(expected["weibo"], abs=1e-5)


@pytest.mark.parametrize(
    "path",
    ["../outside", "teams/../../outside", "/etc", "escape", "linked-weights", "", ".", "a\\..\\b"],
)
def test_nothing_outside_the_root_is_opened(server, path):
    r = load(server, "x", path)
    assert r.status_code == 400, r.text
    assert "adapter root" in r.json()["error"]
    assert "x" not in loaded(server)


@pytest.mark.parametrize("path", ["weibo\x00", "x" * 300, "x/" * 3000, "loop"])
def test_unusable_paths_are_a_clear_400_not_a_500(server, path):
    r = load(server, "x", path)
    assert r.status_code == 400 and "cannot be used" in r.json()["error"], r.text
    assert "x" not in loaded(server)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("wrong-base", "different base"),
        ("wrong-tokenizer", "another tokenizer"),
        ("full", "full run"),
        ("missing", "no run folder"),
    ],
)
def test_runs_that_do_not_fit_are_refused_with_the_reason(server, adapter_root, path, reason):
    r = load(server, "x", path)
    assert r.status_code in (404, 422), r.text
    assert reason in r.json()["error"]
    assert str(adapter_root) not in r.json()["error"]  # the server's layout stays its own
    assert "x" not in loaded(server)


def test_least_recently_used_is_evicted_when_full(server, expected):
    assert load(server, "flip", "teams/flip").status_code == 201
    assert load(server, "bottleneck", "bottleneck").status_code == 201
    assert predict(server, "flip").status_code == 200  # weibo is now the least recently used
    r = load(server, "flip2", "teams/flip")
    assert r.status_code == 201 and r.json()["evicted"] == ["weibo"]
    assert predict(server, "weibo").status_code == 404
    assert positives(predict(server, "bottleneck")) == pytest.approx(
        expected["bottleneck"], abs=1e-5
    )
    # the default moved to a loaded adapter, and the answer says which one answered
    r = predict(server, None)
    assert r.status_code == 200 and r.json()["adapter"] in loaded(server)
    scrape = httpx.get(f"{server.url}/metrics", timeout=60).text
    assert "weibo_senti_adapters 3.0" in scrape
    assert "weibo_senti_adapter_evictions_total 1.0" in scrape
    for name in ("flip2", "bottleneck"):
        assert unload(server, name).status_code == 200
    assert load(server, "weibo", "weibo").status_code == 201
    assert sorted(loaded(server)) == ["flip", "weibo"]


def test_requests_racing_unloads_never_get_another_adapters_answer(server, expected):
    """Clients ask 'flip' and 'weibo' while an admin unloads and reloads 'flip': every answer is
    the named adapter's own, or a 404 for 'flip' while it is gone."""
    assert sorted(loaded(server)) == ["flip", "weibo"]
    stop = threading.Event()
    seen = {"flip": [], "weibo": []}

    def client(i: int):
        name = ("flip", "weibo")[i % 2]
        while not stop.is_set():
            r = predict(server, name)
            seen[name].append(r.status_code)
            if r.status_code == 200:
                assert r.json()["adapter"] == name
                assert positives(r) == pytest.approx(expected[name], abs=1e-5)
            else:
                assert name == "flip" and r.status_code == 404, r.text

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, i) for i in range(8)]
        for _ in range(6):
            time.sleep(0.3)
            assert unload(server, "flip").status_code == 200
            time.sleep(0.1)
            assert load(server, "flip", "teams/flip").status_code == 201
        stop.set()
        for f in futures:
            f.result()
    assert seen["weibo"] and set(seen["weibo"]) == {200}
    assert 200 in seen["flip"] and 404 in seen["flip"]  # the race did happen both ways


def test_unload_waits_for_the_requests_it_accepted(trained_runs, flipped_run):  # noqa: F811
    """In process: a request for 'flip' is queued (accepted, not yet computed) when the unload
    comes; the unload returns only after that request has flip's answer, and new requests for
    'flip' are refused meanwhile."""
    from weibo_senti.serve import Batcher
    from weibo_senti.serve_adapters import RuntimeAdapters

    clf = SentimentClassifier.load(trained_runs["lora"], precision="fp32", name="weibo")
    clf.add_adapter("flip", flipped_run)
    want = [p.probabilities for p in clf.predict(TEXTS, adapter="flip")]

    async def scenario():
        batcher = Batcher(clf, adapters=RuntimeAdapters(clf))  # worker not started yet
        request = asyncio.create_task(batcher.submit(TEXTS, "flip"))
        await asyncio.sleep(0.05)
        unloading = asyncio.create_task(batcher.adapters.unload("flip"))
        await asyncio.sleep(0.3)
        assert not unloading.done() and "flip" in clf.adapters  # waiting for the request
        with pytest.raises(KeyError):
            batcher.adapters.acquire("flip")
        batcher.start()
        await unloading
        assert request.done()  # answered before the unload finished
        await batcher.stop()
        return request.result()

    preds = asyncio.run(scenario())
    assert [p.adapter for p in preds] == ["flip"] * len(TEXTS)
    assert [p.probabilities for p in preds] == want
    assert clf.adapters == ["weibo"]


def test_default_routes_keep_answering_while_the_default_is_unloaded(trained_runs, flipped_run):  # noqa: F811
    """Requests naming no adapter go to the next one as soon as the default's unload starts
    (never a 404 for them); an empty name is not the default; a second unload of the same
    name is a 404, not a 500."""
    from weibo_senti.serve import Batcher
    from weibo_senti.serve_adapters import AdminError, RuntimeAdapters

    clf = SentimentClassifier.load(trained_runs["lora"], precision="fp32", name="weibo")
    clf.add_adapter("flip", flipped_run)
    want = clf.predict_proba(TEXTS, adapter="flip")

    async def scenario():
        batcher = Batcher(clf, adapters=RuntimeAdapters(clf))  # worker not started yet
        held = asyncio.create_task(batcher.submit(TEXTS, "weibo"))
        await asyncio.sleep(0.05)
        first = asyncio.create_task(batcher.adapters.unload("weibo"))
        second = asyncio.create_task(batcher.adapters.unload("weibo"))
        await asyncio.sleep(0.05)
        assert batcher.adapters.listing()["default"] == "flip"
        fallback = asyncio.create_task(batcher.submit(TEXTS, None))
        with pytest.raises(KeyError):
            batcher.adapters.acquire("")
        batcher.start()
        await first
        with pytest.raises(AdminError) as refused:
            await second
        assert refused.value.status == 404
        await batcher.stop()
        return held.result(), fallback.result()

    held, fallback = asyncio.run(scenario())
    assert {p.adapter for p in held} == {"weibo"} and {p.adapter for p in fallback} == {"flip"}
    got = [p.probabilities[n] for p in fallback for n in clf.labels]
    assert got == pytest.approx(want.ravel().tolist(), abs=1e-6)
    assert clf.adapters == ["flip"] and clf.active_adapter == "flip"


def test_a_load_does_not_wait_behind_an_unload_that_drains(trained_runs, flipped_run, adapter_root):  # noqa: F811
    """While 'weibo' waits for its queued request, loading another adapter completes."""
    from weibo_senti.serve import Batcher
    from weibo_senti.serve_adapters import RuntimeAdapters

    clf = SentimentClassifier.load(trained_runs["lora"], precision="fp32", name="weibo")
    clf.add_adapter("flip", flipped_run)

    async def scenario():
        adapters = RuntimeAdapters(clf, root=adapter_root)
        batcher = Batcher(clf, adapters=adapters)  # worker not started: 'weibo' stays busy
        held = asyncio.create_task(batcher.submit(TEXTS, "weibo"))
        await asyncio.sleep(0.05)
        unloading = asyncio.create_task(adapters.unload("weibo"))
        await asyncio.sleep(0.05)
        loaded = await asyncio.wait_for(adapters.load("bottleneck", "bottleneck"), 30)
        assert not unloading.done() and loaded["loaded"] == "bottleneck"
        batcher.start()
        await unloading
        await batcher.stop()
        return held.result()

    held = asyncio.run(scenario())
    assert {p.adapter for p in held} == {"weibo"}
    assert sorted(clf.adapters) == ["bottleneck", "flip"]
