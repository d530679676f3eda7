"""The server's Prometheus metrics, in a registry of their own (one per app, so that apps in one process, as in
tests or a Ray replica, do not collide). Errors are the requests counted with a code >= 400."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ENDPOINTS = ("/get_reward", "/reward", "/score", "/health", "/metrics")  # any other path counts as "other"
POWERS_OF_TWO = tuple(float(2**k) for k in range(21))  # 1 .. ~1M: pairs and tokens per batch
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        common = dict(namespace="endokernel_serve", registry=self.registry)
        self.requests = Counter("requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "code"], **common)
        self.latency = Histogram("request_seconds", "time from a request's arrival to its answer",
                                 ["endpoint"], buckets=SECONDS, **common)
        self.in_flight = Gauge("requests_in_flight", "requests received and not yet answered", **common)
        self.batch_pairs = Histogram("batch_pairs", "pairs per scored batch", buckets=POWERS_OF_TWO, **common)
        self.batch_tokens = Histogram("batch_tokens", "padded tokens (pairs x longest) per scored batch",
                                      buckets=POWERS_OF_TWO, **common)
        self.batch_seconds = Histogram("batch_seconds", "model time per scored batch", buckets=SECONDS, **common)
        self.queue_pairs = Gauge("queue_pairs", "pairs waiting for a batch", **common)
        self.queue_tokens = Gauge("queue_tokens", "tokens accepted and not yet answered (--max-queue-tokens)",
                                  **common)
        self.ready = Gauge("ready", "1 once the model is loaded and the warm-up batch ran", **common)

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in ENDPOINTS else "other"

    def record_request(self, path: str, code: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def record_batch(self, pairs: int, padded_tokens: int, seconds: float) -> None:
        self.batch_pairs.observe(pairs)
        self.batch_tokens.observe(padded_tokens)
        self.batch_seconds.observe(seconds)

    def record_queue(self, pairs: int, tokens: int) -> None:
        self.queue_pairs.set(pairs)
        self.queue_tokens.set(tokens)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
