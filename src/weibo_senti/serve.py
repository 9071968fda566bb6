"""`serve`: the classifier over HTTP (FastAPI), with micro-batching and a small web page."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import UserError
from .predict import is_valid_unicode

log = logging.getLogger("weibo_senti.serve")
MAX_TEXTS = 256
MAX_BODY = 1 << 20
# where the protocol records when a request's first byte came (time.monotonic())
FIRST_BYTE = "weibo_senti.first_byte"


INVALID_UNICODE = "not valid Unicode (a lone surrogate such as \\ud800)"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt "adaptor" must not be ignored

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS, description="1 to 256 posts")
    adapter: str | None = Field(None, description="adapter name (default: the active one)")

    @field_validator("texts")
    @classmethod
    def _unicode(cls, texts: list[str]) -> list[str]:
        _check_unicode(texts)  # per request, before they reach a batch shared with others
        return texts


def _check_unicode(texts: list[str]) -> None:
    for i, text in enumerate(texts):
        if not is_valid_unicode(text):
            raise ValueError(f"text {i} is {INVALID_UNICODE}")


class InferenceParameters(BaseModel):
    """The text-classification parameters InferenceClient sends (unknown ones are refused)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(None, ge=1, strict=True, description="best k labels")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None


class InferenceRequest(BaseModel):
    """POST / : the Hugging Face Inference API's shape, what ``InferenceClient(url)`` sends."""

    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="a post or up to 256 posts")
    parameters: InferenceParameters | None = None
    options: dict | None = None  # the Inference API's wait_for_model, use_cache: no meaning here

    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class TEIRequest(BaseModel):
    """POST /predict : text-embeddings-inference's request for classification models."""

    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] | list[list[str]]
    truncate: bool | None = False  # TEI's default: a post longer than the model is an error
    raw_scores: bool = False
    # TEI also cuts from the left; here the run's own rule (keep the start) is the only one
    truncation_direction: Literal["right", "Right"] = "right"

    def texts(self) -> list[str]:
        if isinstance(self.inputs, str):
            return [self.inputs]
        out = []
        for item in self.inputs:
            if isinstance(item, list) and len(item) != 1:
                raise ValueError("sentence pairs are not supported: one post per input")
            out.append(item[0] if isinstance(item, list) else item)
        return out


def label_scores(pred, function: str, top_k: int | None = None) -> list[dict]:
    """[{label, score}] best first, for every label of the adapter that answered: probabilities
    (softmax of the calibrated head), the raw logits ("none"), or each logit's sigmoid, as
    transformers' pipeline computes them."""
    labels = list(pred.probabilities)  # the answering adapter's labels, in its head's order
    if function == "none":
        values = pred.logits
    elif function == "sigmoid":
        values = [1 / (1 + math.exp(-x)) for x in pred.logits]
    else:
        values = [pred.probabilities[n] for n in labels]
    ranked = sorted(zip(labels, values), key=lambda kv: -kv[1])
    return [{"label": n, "score": float(v)} for n, v in ranked[:top_k]]


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="one post")
    adapter: str | None = Field(None, description="adapter name (default: the active one)")
    steps: int = Field(64, ge=1, le=2048, description="integration steps to start with")

    @field_validator("text")
    @classmethod
    def _unicode(cls, text: str) -> str:
        if not is_valid_unicode(text):
            raise ValueError(INVALID_UNICODE)
        return text


@dataclass
class Job:
    texts: list[str]
    adapter: str | None
    future: asyncio.Future = field(repr=False)


class QueueFull(Exception):
    pass


class Batcher:
    """Gathers concurrent requests for a few ms (or until the batch is full) and runs the model
    once for all of them in a worker thread; the queue is bounded."""

    def __init__(
        self,
        clf,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        queue_size: int = 256,
        enabled: bool = True,
        telemetry=None,
        adapters=None,
    ):
        from .serve_adapters import RuntimeAdapters

        self.clf, self.max_batch, self.max_wait = clf, max_batch, max_wait_ms / 1000
        self.enabled = enabled
        self.telemetry = telemetry
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self.worker: asyncio.Task | None = None
        self.adapters = adapters or RuntimeAdapters(clf)
        self.model_lock = self.adapters.model_lock

    def _locked(self, fn, *args):
        with self.model_lock:
            return fn(*args)

    def start(self) -> None:
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await self.queue.join()  # in-flight requests finish before shutdown
        if self.worker:
            self.worker.cancel()

    async def submit(self, texts: list[str], adapter: str | None):
        """Predictions by `adapter` (default: the active one); KeyError if it is not loaded.
        The adapter is held from here until the batch that answers the job is done."""
        name = self.adapters.acquire(adapter)
        job = Job(texts, name, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            await self.adapters.release(name)
            raise QueueFull from None
        self._gauge_queue()
        return await job.future

    def _gauge_queue(self) -> None:
        if self.telemetry is not None:
            self.telemetry.queue.set(self.queue.qsize())

    async def _run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            if self.enabled:
                # Poll instead of wait_for(queue.get()): a get cancelled by the timeout can
                # drop the item it had already taken, and that request would never be answered.
                deadline = time.monotonic() + self.max_wait
                while sum(len(j.texts) for j in jobs) < self.max_batch:
                    try:
                        jobs.append(self.queue.get_nowait())
                    except asyncio.QueueEmpty:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        await asyncio.sleep(min(0.001, left))
            self._gauge_queue()
            try:
                await self._answer(jobs)
            finally:
                for job in jobs:
                    await self.adapters.release(job.adapter)
                    self.queue.task_done()

    async def _answer(self, jobs: list[Job]) -> None:
        """One forward pass for the batch; if it fails, each request alone, so that a request
        that cannot be computed fails only itself."""
        try:
            results = await asyncio.to_thread(self._locked, self._predict, jobs)
        except Exception as e:
            if len(jobs) > 1:
                for job in jobs:
                    await self._answer([job])
                return
            results, failure = None, e
        for i, job in enumerate(jobs):
            if job.future.done():  # a client may have gone away
                continue
            if results is None:
                job.future.set_exception(failure)
            else:
                job.future.set_result(results[i])

    def _predict(self, jobs: list[Job]):
        texts = [t for j in jobs for t in j.texts]
        names = None  # resolved when each job was accepted (`submit`): held, never switched
        if self.clf.bank is not None:
            names = [j.adapter for j in jobs for _ in j.texts]
        preds = self.clf.predict(texts, adapter=names)
        if self.telemetry is not None:
            self.telemetry.observe_batch(names or ["default"] * len(texts))
        out, i = [], 0
        for j in jobs:
            out.append(preds[i : i + len(j.texts)])
            i += len(j.texts)
        return out


class ExplainLane:
    """Explanations in their own thread, on their own copy of the classifier.

    An explanation is hundreds of forward and backward passes; on the shared model it held the
    model lock for all of them and every prediction waited (over a minute for 2,048 steps).
    The copy is made on the first explanation (memory for one more model) and again after
    adapters are loaded or unloaded. One runs at a time, `queue` more may wait, the rest get
    QueueFull (503); integration steps are capped at `max_steps`.
    """

    def __init__(self, clf, adapters, max_steps: int = 512, queue: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        self.clf, self.adapters = clf, adapters
        self.max_steps, self.capacity = max_steps, 1 + queue
        self.accepted = 0  # running + waiting; changed in the event loop only
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="weibo-senti-explain")
        self._copy, self._generation = None, -1

    async def explain(self, text: str, adapter: str | None, steps: int):
        if self.accepted >= self.capacity:
            raise QueueFull
        name = self.adapters.acquire(adapter)  # KeyError: unknown (or being unloaded)
        self.accepted += 1
        # shielded: a client that leaves must not release the adapter while the thread uses it
        return await asyncio.shield(asyncio.ensure_future(self._explain(text, name, steps)))

    async def _explain(self, text: str, name: str | None, steps: int):
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, self._run, text, name, steps)
        finally:
            self.accepted -= 1
            await self.adapters.release(name)

    def _run(self, text: str, name: str | None, steps: int):
        from .explain import explain

        return explain(self._model(), text, name, steps, max_steps=self.max_steps)

    def _model(self):
        """The lane's copy, current with the loaded adapters (made in the lane's thread)."""
        if self.clf.precision == "int8":
            return self.clf  # refused by explain() before any pass: not worth a copy
        # under the model lock: no batch or adapter change is half-way through
        with self.adapters.model_lock:
            if self._generation != self.adapters.generation:
                self._copy = None  # the old copy goes first: never two in memory
                # the engine's copies (ONNX Runtime sessions) cannot be copied, nor are needed
                self._copy = copy.deepcopy(self.clf, {id(self.clf._copies): {}})
                self._generation = self.adapters.generation
        return self._copy

    def stop(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413 — at once when Content-Length says so,
    else counted as it arrives (chunked), so that no more than `limit` bytes are ever held."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        too_large = f"body over {self.limit} bytes"
        size = dict(scope["headers"]).get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > self.limit):
            return await JSONResponse({"error": too_large}, 413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # FastAPI passes an HTTPException from reading the body on to its handler
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited_receive, send)


class RequestDeadline:
    """ASGI middleware: a request must have arrived whole within `seconds` of its first byte
    (as the protocol recorded it; else of its head), or it gets 408 and the connection closes:
    a client trickling its body cannot hold a connection slot for longer."""

    def __init__(self, app, seconds: float = 15.0):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.exceptions import HTTPException

        started = scope.get("extensions", {}).get(FIRST_BYTE) or time.monotonic()
        deadline, complete = started + self.seconds, False

        async def timed_receive():
            nonlocal complete
            if complete:  # later reads only wait for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                message = f"request not received within {self.seconds:g} s"
                # FastAPI passes an HTTPException from reading the body on to its handler
                raise HTTPException(408, message, headers={"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, timed_receive, send)


OPTION_RULES = {
    "port": (lambda v: 1 <= v <= 65535, "from 1 to 65535"),
    "max_batch": (lambda v: v >= 1, "at least 1"),
    "queue_size": (lambda v: v >= 1, "at least 1"),
    "max_wait_ms": (lambda v: 0 <= v < math.inf, "0 or more (ms)"),
    "timeout_keep_alive": (lambda v: 0 < v < math.inf, "more than 0 (seconds)"),
    "timeout_request": (lambda v: 0 < v < math.inf, "more than 0 (seconds)"),
    # uvicorn counts the asking connection itself: with 1, every request would be refused
    "max_connections": (lambda v: v >= 2, "at least 2"),
    "max_explain_steps": (lambda v: 1 <= v <= 2048, "from 1 to 2048"),
    "explain_queue": (lambda v: v >= 0, "0 or more"),
}


def check_options(**values) -> None:
    """UserError (one line) for a server setting that cannot work; NaN fails every rule."""
    for name, value in values.items():
        ok, wanted = OPTION_RULES[name]
        if not ok(value):
            shown = f"{value:g}" if isinstance(value, float) else value  # -1, not -1.0
            raise UserError(f"--{name.replace('_', '-')} {shown}: must be {wanted}")


def check_bind(host: str, port: int) -> None:
    """Bind the address once now: a port in use or a host that is not this machine's is one
    line before the model loads, not an error after it."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's socket
            probe.bind((host, port))
    except (OSError, OverflowError) as e:
        reason = getattr(e, "strerror", None) or e
        raise UserError(f"cannot listen on {host}:{port}: {reason}") from None


def create_app(
    clf,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    queue_size: int = 256,
    micro_batching: bool = True,
    adapter_root: str | None = None,
    max_adapters: int = 16,
    admin_token: str | None = None,
    timeout_request: float = 15.0,
    max_explain_steps: int = 512,
    explain_queue: int = 2,
):
    """The app; `admin_token` turns on loading (from under `adapter_root`) and unloading
    adapters over HTTP, at most `max_adapters` at once (least recently used evicted)."""
    from fastapi_offline import FastAPIOffline

    from .serve_adapters import RuntimeAdapters
    from .telemetry import Telemetry

    check_options(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        timeout_request=timeout_request,
        max_explain_steps=max_explain_steps,
        explain_queue=explain_queue,
    )
    telemetry = Telemetry()
    telemetry.engine(clf.choice)
    # refuses a bad bound now, before the server starts
    adapters = RuntimeAdapters(clf, adapter_root, max_adapters, telemetry)
    state = {"ready": False, "batcher": None, "telemetry": telemetry, "adapters": adapters}
    state["admin_token"] = admin_token
    state["explainer"] = ExplainLane(clf, adapters, max_explain_steps, explain_queue)
    batching = (max_batch, max_wait_ms, queue_size, micro_batching)
    app = FastAPIOffline(
        title="weibo-senti",
        version="1",
        lifespan=lifespan(clf, state, batching),
        description="Weibo posts classified by fine-tuned GPT-2 adapters, each with its own "
        "label set (sentiment, emotions...).",
    )
    app.state.telemetry = telemetry
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(RequestDeadline, seconds=timeout_request)
    app.add_middleware(JsonBodyAndLog)
    add_error_handlers(app)
    add_routes(app, clf, state)
    add_admin_routes(app, state)
    return app


def lifespan(clf, state: dict, batching: tuple):
    """Start: a warm-up pass, then the batcher; stop: every accepted request answered."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def run(app):
        # One pass before the first request: builds the int8 copy (an ONNX export the first
        # time a model is served) now, not inside somebody's request.
        await asyncio.to_thread(clf.predict_logits, ["预热"])
        batcher = Batcher(clf, *batching, state["telemetry"], state["adapters"])
        batcher.start()
        state["batcher"], state["ready"] = batcher, True
        yield
        state["ready"] = False
        await batcher.stop()
        state["explainer"].stop()
        log.info("stopped: every accepted request was answered")

    return run


def error(status: int, message: str, **extra):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, **extra}, status_code=status)


def busy(message: str):
    response = error(503, message)
    response.headers["Retry-After"] = "1"
    return response


JSON_PATHS = ("/v1/predict", "/v1/explain", "/predict", "/v1/adapters")


class JsonBodyAndLog:
    """ASGI middleware: a JSON body whatever the Content-Type says (`curl -d` sends form
    encoding), then one JSON log line and the request metrics per request, once the answer
    is sent. Plain ASGI rather than `app.middleware("http")`: Starlette's BaseHTTPMiddleware
    runs every request through a task group and memory streams, and serving at 32 clients
    was 4% faster without it (median of 3 alternating rounds, AVX2, session 14)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500
        path, method = scope["path"], scope["method"]
        if path in JSON_PATHS or (path == "/" and method == "POST"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"] = headers + [(b"content-type", b"application/json")]

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:  # an exception is answered 500 by Starlette's outermost middleware
            seconds = time.perf_counter() - t0
            app = scope["app"]  # Starlette's, set before any middleware runs
            app.state.telemetry.observe_request(method, route_label(app, scope), status, seconds)
            line = {
                "method": method,
                "path": path,
                "status": status,
                "ms": round(1000 * seconds, 2),
            }
            log.info(json.dumps(line))


def route_label(app, scope: dict) -> str:
    """The route's template (`/v1/adapters/{name}`), or "other": metric labels stay bounded.
    A path whose route takes other methods (405) counts as that route."""
    from starlette.routing import Match

    partial = "other"
    for route in app.routes:
        match = route.matches(scope)[0]
        if match == Match.FULL:
            return getattr(route, "path", "other")
        if match == Match.PARTIAL and partial == "other":
            partial = getattr(route, "path", "other")
    return partial


def add_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        # e.g. a body FastAPI cannot parse at all (nesting too deep), unknown paths
        message = "malformed JSON" if "parsing the body" in str(exc.detail) else str(exc.detail)
        response = error(exc.status_code, message)
        response.headers.update(exc.headers or {})  # 408's Connection: close, 405's Allow
        return response

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error: {type(exc).__name__}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error(400, "malformed JSON")
        details = [
            {"field": ".".join(map(str, e.get("loc", [])[1:])), "problem": e.get("msg")}
            for e in errors
        ]
        return error(422, "invalid request", details=details)


def add_routes(app, clf, state: dict) -> None:
    add_info_routes(app, clf, state)
    add_prediction_routes(app, clf, state)
    add_explain_route(app, state)


def add_info_routes(app, clf, state: dict) -> None:
    from fastapi.responses import HTMLResponse

    @app.get("/health")
    async def health():
        if not state["ready"]:
            return error(503, "loading")
        return {"status": "ok", "adapters": clf.adapters}

    @app.get("/metrics")
    async def metrics():
        """Prometheus text format: requests by route and status, latency, batch sizes, queue
        depth, texts per adapter."""
        from fastapi.responses import Response

        body, content_type = state["telemetry"].exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/adapters")
    async def list_adapters():
        """Loaded adapters, the default one and its labels, and for each adapter its kind,
        labels (and their display names), source and requests."""
        return state["adapters"].listing()

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("weibo_senti").joinpath("static/index.html").read_text("utf-8")


def unknown(state: dict, name: str | None):
    loaded = state["adapters"].listing()["adapters"]
    shown = name if name is None or len(name) <= 64 else name[:64] + "…"  # echo a bounded name
    return error(404, f"unknown adapter '{shown}'", adapters=loaded)


async def classify(state: dict, clf, texts: list[str], truncate: bool = True):
    """Predictions for the standard endpoints, or the error response they answer with."""
    try:
        _check_unicode(texts)
    except ValueError as e:
        return error(422, str(e))
    if not texts or len(texts) > MAX_TEXTS or not all(t.strip() for t in texts):
        return error(422, f"inputs must be 1 to {MAX_TEXTS} non-empty posts")
    if not state["ready"]:
        return error(503, "loading")
    try:
        preds = await state["batcher"].submit(texts, None)
    except KeyError:
        return unknown(state, None)
    except QueueFull:
        return busy("busy, retry shortly")
    long = [i for i, p in enumerate(preds) if p.truncated]
    if long and not truncate:  # TEI's answer: 413, a validation error
        message = f"input {long[0]} is longer than {clf.max_length} tokens; pass truncate: true"
        return error(413, message, error_type="validation")
    return preds


def add_prediction_routes(app, clf, state: dict) -> None:
    from fastapi.responses import JSONResponse

    @app.post("/v1/predict")
    async def predict(body: PredictRequest):
        if not state["ready"]:
            return error(503, "loading")
        try:
            preds = await state["batcher"].submit(body.texts, body.adapter)
        except KeyError:
            return unknown(state, body.adapter)
        except QueueFull:
            return busy("busy, retry shortly")
        except UserError as e:
            return error(400, str(e))
        return {"predictions": [p.to_dict() for p in preds], "adapter": preds[0].adapter}

    @app.post("/")
    async def inference_api(body: InferenceRequest):
        """What huggingface_hub's InferenceClient(url).text_classification(text) sends."""
        preds = await classify(state, clf, body.texts())
        if isinstance(preds, JSONResponse):
            return preds
        params = body.parameters or InferenceParameters()
        function = params.function_to_apply or "softmax"
        return [label_scores(p, function, params.top_k) for p in preds]

    @app.post("/predict")
    async def tei_predict(body: TEIRequest):
        """text-embeddings-inference's POST /predict: one list for one post, a list per post."""
        try:
            texts = body.texts()
        except ValueError as e:
            return error(422, str(e))
        preds = await classify(state, clf, texts, bool(body.truncate))
        if isinstance(preds, JSONResponse):
            return preds
        function = "none" if body.raw_scores else "softmax"
        answers = [label_scores(p, function) for p in preds]
        return answers[0] if isinstance(body.inputs, str) else answers


def add_explain_route(app, state: dict) -> None:
    @app.post("/v1/explain")
    async def explain(body: ExplainRequest):
        """Per-character integrated-gradients attributions (see `weibo-senti explain`)."""
        import importlib.util

        if importlib.util.find_spec("captum") is None:
            return error(501, "explanations need captum: pip install 'weibo-senti[explain]'")
        lane = state["explainer"]
        if body.steps > lane.max_steps:
            return error(422, f"steps: at most {lane.max_steps} on this server")
        if not state["ready"]:
            return error(503, "loading")
        try:
            ex = await lane.explain(body.text, body.adapter, body.steps)
        except KeyError:
            return unknown(state, body.adapter)
        except QueueFull:
            return busy("busy explaining, retry shortly")
        except UserError as e:
            return error(400, str(e))
        return ex.to_dict()


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the name requests will use")
    path: str = Field(description="run folder, relative to the server's --adapter-root")


def add_admin_routes(app, state: dict) -> None:
    """Loading and unloading adapters: admin actions behind `Authorization: Bearer <token>`."""
    from fastapi import Header

    from .serve_adapters import AdminError, check_token

    async def admin(action, authorization: str | None):
        try:
            check_token(state["admin_token"], authorization)
            # shielded: a client that leaves does not stop a load or unload half-way
            return await asyncio.shield(asyncio.ensure_future(action()))
        except AdminError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            response = error(e.status, e.message)
            response.headers.update(headers or {})
            return response

    @app.post("/v1/adapters", status_code=201)
    async def load_adapter(body: LoadAdapterRequest, authorization: str | None = Header(None)):
        """Load a LoRA or bottleneck run from under --adapter-root (admin)."""
        adapters = state["adapters"]
        return await admin(lambda: adapters.load(body.name, body.path), authorization)

    @app.delete("/v1/adapters/{name}")
    async def unload_adapter(name: str, authorization: str | None = Header(None)):
        """Unload an adapter once the requests it accepted are answered (admin)."""
        return await admin(lambda: state["adapters"].unload(name), authorization)


class RequestDeadlines:
    """Mixed into uvicorn's HTTP/1.1 protocol: deadlines for each request to arrive.

    uvicorn closes a keep-alive connection only after it has answered a request on it; a
    connection that never sends one, or trickles half a request line, stays open forever (500
    such sockets were measured still open after 20 s). Here each connection must deliver a
    complete request head within the keep-alive timeout of connecting or of its last answer,
    and within `timeout_request` of the request's first byte. That first byte's time goes into
    the scope: `RequestDeadline` holds the body to the same deadline (uvicorn has none).
    """

    timeout_request = 15.0
    _deadline = None
    _first_byte = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(self.timeout_keep_alive)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if before is None or before.response_complete:
            self._note_first_byte()
        super().data_received(data)
        if self.cycle is not before and self.cycle is not None:  # a new request's head
            self.cycle.scope.setdefault("extensions", {})[FIRST_BYTE] = self._first_byte
            self._first_byte = None
        between = self.cycle is None or self.cycle.response_complete
        if between and (self._deadline is None or self._deadline[1] is not self.cycle):
            self._arm(self.timeout_keep_alive)  # once per gap: trickling does not extend it

    def _note_first_byte(self) -> None:
        import h11

        # the rest of an answered request's body is not the next request's start
        if self._first_byte is not None or self.conn.their_state is h11.SEND_BODY:
            return
        self._first_byte = time.monotonic()
        left = self._deadline[0].when() - self.loop.time() if self._deadline else 0
        if left > self.timeout_request:
            self._arm(self.timeout_request)  # a trickled head gets no more than a request

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._first_byte = None
        self._arm(self.timeout_keep_alive)

    def connection_lost(self, exc) -> None:
        if self._deadline is not None:
            self._deadline[0].cancel()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        """Close unless a new request's head has come `seconds` from now."""
        if self._deadline is not None:
            self._deadline[0].cancel()
        cycle = self.cycle
        timer = self.loop.call_later(seconds, self._expire, cycle)
        self._deadline = (timer, cycle)

    def _expire(self, cycle) -> None:
        idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
        if idle and not self.transport.is_closing():
            self.transport.close()


def idle_closing_protocol(timeout_request: float = 15.0):
    """uvicorn's HTTP/1.1 protocol with `RequestDeadlines`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return type(
        "IdleClosingH11", (RequestDeadlines, H11Protocol), {"timeout_request": timeout_request}
    )


def serve(
    clf,
    host: str = "127.0.0.1",
    port: int = 8000,
    timeout_keep_alive: float = 5.0,
    max_connections: int = 512,
    timeout_request: float = 15.0,
    **kw,
) -> None:
    import uvicorn

    check_options(
        port=port,
        timeout_keep_alive=timeout_keep_alive,
        timeout_request=timeout_request,
        max_connections=max_connections,
    )
    uvicorn.run(
        create_app(clf, timeout_request=timeout_request, **kw),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=30,
        http=idle_closing_protocol(timeout_request),
        timeout_keep_alive=timeout_keep_alive,
        limit_concurrency=max_connections,  # beyond it: 503 at once, nothing queued
    )
