"""Prometheus metrics of a server (prometheus_client), kept in the app's own registry: the
library never registers anything in the process-wide default one."""

from __future__ import annotations

# Any token is a valid HTTP method: label others "other", or each made-up one is a new series.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"}
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Telemetry:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "weibo_senti_requests",
            "HTTP requests by method, route and status (errors are the 4xx/5xx ones)",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "weibo_senti_request_seconds",
            "Seconds from request to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "weibo_senti_batch_texts",
            "Texts per forward pass of the micro-batcher",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue = Gauge(
            "weibo_senti_queue_depth", "Requests waiting for a forward pass", registry=r
        )
        self.texts = Counter(
            "weibo_senti_texts", "Texts predicted, by adapter", ["adapter"], registry=r
        )

        self.adapters = Gauge("weibo_senti_adapters", "Adapters loaded", registry=r)
        self.evictions = Counter(
            "weibo_senti_adapter_evictions",
            "Adapters unloaded to stay within --max-adapters",
            registry=r,
        )

    def engine(self, choice) -> None:
        """The inference paths in use (autotune.Choice) and the timings they were chosen by."""
        from prometheus_client import Gauge, Info

        info = Info(
            "weibo_senti_engine", "Inference paths: lone posts, batches", registry=self.registry
        )
        info.info(
            {
                "lone": choice.lone,
                "batch": choice.batch,
                "switch_tokens": str(choice.switch_tokens),
                "source": choice.how,
            }
        )
        timed = Gauge(
            "weibo_senti_engine_pass_milliseconds",
            "Measured milliseconds per forward pass, by path, at a lone post and a full pass",
            ["path", "size"],
            registry=self.registry,
        )
        for path, t in choice.timings.items():
            for size in ("lone", "batch"):
                if f"{size}_ms" in t:
                    timed.labels(path, size).set(t[f"{size}_ms"])

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """`route` must be bounded already (a route template or "other")."""
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, names: list[str]) -> None:
        self.batch.observe(len(names))
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        for name, n in counts.items():
            self.texts.labels(name).inc(n)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
