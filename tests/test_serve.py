"""The HTTP API in process (TestClient): every endpoint and every error case."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from fastapi.testclient import TestClient

from weibo_senti.predict import SentimentClassifier
from weibo_senti.serve import MAX_TEXTS, Batcher, create_app

POS = "好棒喜爱赞乐美好棒喜爱赞"
NEG = "差坏烂恨糟怒哭差坏烂恨糟"


@pytest.fixture(scope="module")
def clf(trained_runs):
    c = SentimentClassifier.load(trained_runs["lora"], precision="fp32", merge=False, name="weibo")
    c.add_adapter("bottleneck", trained_runs["adapter"])
    return c


@pytest.fixture(scope="module")
def client(clf):
    with TestClient(create_app(clf)) as c:
        yield c


def test_health_adapters_page_and_docs(client):
    assert client.get("/health").json() == {"status": "ok", "adapters": ["weibo", "bottleneck"]}
    listing = client.get("/v1/adapters").json()
    assert listing["adapters"] == ["weibo", "bottleneck"] and listing["default"] == "weibo"
    assert listing["max_adapters"] == 16
    assert listing["labels"] == ["negative", "positive"]
    assert listing["labels_zh"] == ["负面", "正面"]
    assert listing["details"]["bottleneck"] == {
        "kind": "adapter",
        "labels": ["negative", "positive"],
        "labels_zh": ["负面", "正面"],
        "source": "given at start",
        "in_flight": 0,
        "unloading": False,
    }
    page = client.get("/")
    assert page.status_code == 200 and "微博情感分析" in page.text
    assert "charset=utf-8" in page.headers["content-type"]
    assert "://" not in page.text  # works offline: nothing is fetched from elsewhere
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_health_says_loading_until_the_app_has_started(clf):
    app = create_app(clf)
    early = TestClient(app)  # not entered: the lifespan (batcher start) has not run
    r = early.get("/health")
    assert r.status_code == 503 and r.json()["error"] == "loading"
    assert early.post("/v1/predict", json={"texts": [POS]}).status_code == 503
    with TestClient(app) as started:
        assert started.get("/health").status_code == 200


def test_predict_matches_in_process_predictions(client, clf):
    r = client.post("/v1/predict", json={"texts": [POS, NEG, "我" * 500]})
    assert r.status_code == 200
    body = r.json()
    assert body["adapter"] == "weibo"
    labels = [p["label"] for p in body["predictions"]]
    expected = clf.predict([POS, NEG, "我" * 500])
    assert labels == [p.label for p in expected]
    assert labels[:2] == ["positive", "negative"]
    assert body["predictions"][2]["truncated"] is True
    p = body["predictions"][0]
    assert set(p) >= {"label", "label_zh", "score", "probabilities", "adapter"}
    r = client.post("/v1/predict", json={"texts": [POS], "adapter": "bottleneck"})
    assert r.json()["predictions"][0]["adapter"] == "bottleneck"


@pytest.mark.parametrize(
    "payload,status,message",
    [
        (b"{not json", 400, "malformed JSON"),
        (json.dumps({"texts": []}).encode(), 422, "invalid request"),
        (json.dumps({"texts": "one string"}).encode(), 422, "invalid request"),
        (json.dumps({"texts": [1, 2]}).encode(), 422, "invalid request"),
        (json.dumps({"text": ["x"]}).encode(), 422, "invalid request"),
        (json.dumps({"texts": ["x"] * (MAX_TEXTS + 1)}).encode(), 422, "invalid request"),
        (json.dumps({"texts": ["x"], "adapter": "nope"}).encode(), 404, "unknown adapter"),
        (b"[" * 100_000, 400, "malformed JSON"),
        (json.dumps({"texts": ["x" * (1 << 20)]}).encode(), 413, "body over"),
        (b"\xff\xfe\x00garbage", 400, "malformed JSON"),
    ],
)
def test_bad_requests_get_clear_4xx_json(client, payload, status, message):
    r = client.post("/v1/predict", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert client.get("/health").status_code == 200  # and the server is still fine


def test_chunked_body_without_length_is_capped_too(client):
    chunk = b'{"texts": ["' + b"x" * (64 << 10)

    def body():  # no Content-Length: sent chunked
        yield chunk
        for _ in range(40):
            yield b"x" * (64 << 10)
        yield b'"]}'

    r = client.post("/v1/predict", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "body over" in r.json()["error"]
    small = iter([b'{"texts": ["', "好棒".encode(), b'"]}'])
    r = client.post("/v1/predict", content=small, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_full_queue_answers_503_with_retry_after(clf):
    async def scenario():
        batcher = Batcher(clf, queue_size=1)  # worker not started: the queue stays full
        first = asyncio.ensure_future(batcher.submit([POS], None))
        await asyncio.sleep(0)
        from weibo_senti.serve import QueueFull

        with pytest.raises(QueueFull):
            await batcher.submit([NEG], None)
        first.cancel()

    asyncio.run(scenario())
    app = create_app(clf, queue_size=1)
    with TestClient(app) as c:
        # many concurrent requests against a queue of one: some are refused, none crash
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(
                pool.map(lambda _: c.post("/v1/predict", json={"texts": [POS]}), range(48))
            )
    statuses = {r.status_code for r in codes}
    assert statuses <= {200, 503} and 200 in statuses
    busy = [r for r in codes if r.status_code == 503]
    assert all(r.headers.get("retry-after") == "1" for r in busy)


def test_micro_batching_gathers_concurrent_requests(clf, monkeypatch):
    calls = []
    original = Batcher._predict

    def spy(self, jobs):
        calls.append(len(jobs))
        return original(self, jobs)

    monkeypatch.setattr(Batcher, "_predict", spy)

    async def scenario(enabled):
        batcher = Batcher(clf, max_batch=64, max_wait_ms=50, enabled=enabled)
        batcher.start()
        results = await asyncio.gather(
            *[batcher.submit([POS if i % 2 else NEG], None) for i in range(8)]
        )
        await batcher.stop()
        return results

    results = asyncio.run(scenario(True))
    assert [r[0].label for r in results] == ["negative", "positive"] * 4
    assert max(calls) > 1  # several requests answered by one model call
    calls.clear()
    asyncio.run(scenario(False))
    assert calls == [1] * 8


def test_a_request_that_fails_in_its_batch_fails_only_itself(clf, monkeypatch):
    """The model call for a gathered batch raises because of one request: the batch is retried
    request by request, every other request is answered, the bad one gets its error."""
    original = Batcher._predict
    calls = []

    def poisoned(self, jobs):
        calls.append(len(jobs))
        if any("POISON" in t for j in jobs for t in j.texts):
            raise RuntimeError("cannot compute this one")
        return original(self, jobs)

    monkeypatch.setattr(Batcher, "_predict", poisoned)

    async def scenario():
        batcher = Batcher(clf, max_batch=256, max_wait_ms=50)
        batcher.start()
        texts = [[POS if i % 2 else NEG] for i in range(20)]
        texts[7] = ["POISON"]
        results = await asyncio.gather(
            *[batcher.submit(t, None) for t in texts], return_exceptions=True
        )
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert max(calls) > 1  # they were gathered into one batch first
    assert isinstance(results[7], RuntimeError)
    good = [r for i, r in enumerate(results) if i != 7]
    assert [r[0].label for r in good] == [
        "positive" if i % 2 else "negative" for i in range(20) if i != 7
    ]


def test_lone_surrogates_are_refused_per_request_as_json(client):
    for path, body in (
        ("/v1/predict", b'{"texts": ["ok", "\\ud800"]}'),
        ("/v1/explain", b'{"text": "\\udfff"}'),
    ):
        r = client.post(path, content=body)
        assert r.status_code == 422 and r.json()["error"] == "invalid request", r.text
    r = client.post("/v1/predict", content=b'{"texts": ["\\ud800"]}')
    assert "text 0 is not valid Unicode" in r.json()["details"][0]["problem"]


def test_unexpected_errors_are_json_500(clf, monkeypatch):
    def broken(self, jobs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Batcher, "_predict", broken)
    with TestClient(create_app(clf), raise_server_exceptions=False) as c:
        r = c.post("/v1/predict", json={"texts": [POS]})
    assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError"}


def test_curl_style_form_encoded_json_is_accepted(client):
    r = client.post(
        "/v1/predict",
        content=json.dumps({"texts": [POS]}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "positive"


def test_explain_answers_what_explain_gives_in_process(client, clf):
    pytest.importorskip("captum", reason="explain needs the [explain] extra (captum)")
    from weibo_senti.explain import explain

    for adapter in ("weibo", "bottleneck"):
        r = client.post("/v1/explain", json={"text": POS, "adapter": adapter})
        assert r.status_code == 200, r.text
        body, want = r.json(), explain(clf, POS, adapter=adapter)
        assert body["adapter"] == adapter and body["label"] == want.label
        assert [c for c, _ in body["chars"]] == list(POS)
        assert [v for _, v in body["chars"]] == pytest.approx([v for _, v in want.chars], abs=1e-4)
        assert body["completeness_gap"] <= 0.05


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ({"text": "好", "adapter": "nope"}, 404, "unknown adapter"),
        ({"text": ""}, 422, "invalid request"),
        ({"text": "   "}, 400, "empty"),
        ({"text": "好", "steps": 0}, 422, "invalid request"),
        ({"texts": ["好"]}, 422, "invalid request"),
        ({"text": "好", "adaptor": "weibo"}, 422, "invalid request"),
    ],
)
def test_bad_explain_requests_get_clear_json(client, payload, status, message):
    pytest.importorskip("captum", reason="explain needs the [explain] extra (captum)")
    r = client.post("/v1/explain", json=payload)
    assert r.status_code == status and message in r.json()["error"]
    assert client.post("/v1/predict", json={"texts": [POS]}).status_code == 200


def test_unknown_fields_are_refused_not_ignored(client):
    r = client.post("/v1/predict", json={"texts": [POS], "adaptor": "bottleneck"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "adaptor"


def test_metrics_count_what_was_asked(clf):
    """GET /metrics parsed with prometheus_client's own parser: the counts are the requests."""
    from prometheus_client.parser import text_string_to_metric_families

    with TestClient(create_app(clf)) as c:
        for texts in (["好棒"], ["差坏", "乐美"], ["赞", "", "恨"]):
            assert c.post("/v1/predict", json={"texts": texts}).status_code == 200
        assert c.post("/v1/predict", json={"texts": ["好"], "adaptor": "x"}).status_code == 422
        assert c.get("/no/such/page").status_code == 404
        scraped = c.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    predict = {"method": "POST", "route": "/v1/predict"}
    assert value("weibo_senti_requests_total", status="200", **predict) == 3
    assert value("weibo_senti_requests_total", status="422", **predict) == 1
    assert value("weibo_senti_requests_total", method="GET", route="other", status="404") == 1
    assert value("weibo_senti_request_seconds_count", route="/v1/predict") == 4
    assert value("weibo_senti_batch_texts_sum") == 6  # every text, empty ones too
    assert sum(v for (n, _), v in samples.items() if n == "weibo_senti_texts_total") == 6
    assert ("weibo_senti_queue_depth", ()) in samples


def test_tei_predict_in_every_input_form(client, clf):
    """text-embeddings-inference's POST /predict: a string, a list, a list of lists."""
    texts = ["好棒喜爱乐美", "差坏烂恨糟"]
    expected = clf.predict(texts)  # the active adapter, as the server's default
    one = client.post("/predict", json={"inputs": texts[0]}).json()
    assert [d["label"] for d in one] == sorted(
        clf.labels, key=lambda n: -expected[0].probabilities[n]
    )
    assert abs(one[0]["score"] - expected[0].score) < 1e-5
    for inputs in (texts, [[t] for t in texts]):
        many = client.post("/predict", json={"inputs": inputs}).json()
        assert [m[0]["label"] for m in many] == [p.label for p in expected]
    raw = client.post("/predict", json={"inputs": texts[0], "raw_scores": True}).json()
    assert {d["label"]: d["score"] for d in raw} == pytest.approx(
        dict(zip(clf.labels, expected[0].logits)), abs=1e-4
    )
    long = "好" * 500
    too_long = client.post("/predict", json={"inputs": long})  # TEI's default and answer
    assert too_long.status_code == 413 and too_long.json()["error_type"] == "validation"
    assert client.post("/predict", json={"inputs": long, "truncate": True}).status_code == 200
    assert client.post("/predict", json={"inputs": "好", "truncate": None}).status_code == 200
    left = {"inputs": long, "truncate": True, "truncation_direction": "left"}
    assert client.post("/predict", json=left).status_code == 422  # not silently cut right
    pair = client.post("/predict", json={"inputs": [["好", "坏"]]})
    assert pair.status_code == 422 and "pairs" in pair.json()["error"]
    assert client.post("/predict", json={"inputs": [""]}).status_code == 422
    # the Inference API shape at POST / (what InferenceClient sends; its live test is in
    # test_serve_live.py)
    api = client.post("/", json={"inputs": texts[1], "parameters": {"top_k": 1}}).json()
    assert api == [
        [{"label": expected[1].label, "score": pytest.approx(expected[1].score, abs=1e-5)}]
    ]
    sigmoid = client.post(
        "/", json={"inputs": texts[1], "parameters": {"function_to_apply": "sigmoid"}}
    ).json()[0]
    want = {n: 1 / (1 + math.exp(-x)) for n, x in zip(clf.labels, expected[1].logits)}
    assert {d["label"]: d["score"] for d in sigmoid} == pytest.approx(want, abs=1e-4)
    for bad in (
        {"top_k": "1"},
        {"top_k": 1.5},
        {"top_k": 0},
        {"function_to_apply": "foo"},
        {"adapter": "weibo"},
    ):
        r = client.post("/", json={"inputs": texts[1], "parameters": bad})
        assert r.status_code == 422, (bad, r.text)
    assert client.get("/v1/predict").status_code == 405  # /v1/predict is as it was
