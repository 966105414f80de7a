"""``GET /metrics``: what the server did, in Prometheus' text format (prometheus-client).

Why a registry per app rather than prometheus-client's global one: tests and benchmarks start several
apps in one process, and the global registry refuses a second metric of the same name. Why these: an
autoscaler and an operator need the request outcomes (``bincount_requests_total`` by status: a rising
503 count is overload, 413 is clients sending what the budgets refuse), the backlog in images
(``bincount_queue_images``: work admitted and not yet in a batch), how full batches run
(``bincount_batch_size``), where a request's time goes (``bincount_latency_seconds`` by stage: queue,
decode, preprocess, model, total) and the work done (``bincount_images_total``), plus the images dropped before the
model because their client left or their deadline passed (``bincount_abandoned_images_total``).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STAGES = ("queue", "decode", "preprocess", "model", "total")


class Metrics:
    """The server's metrics in their own registry; :meth:`render` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("bincount_requests", "POST /invocations answers, by HTTP status", ["status"], registry=r)
        self.queue = Gauge("bincount_queue_images", "images admitted and not yet taken into a model batch", registry=r)
        self.decoded_bytes = Gauge("bincount_decoded_bytes_reserved", "decoded-image bytes reserved by requests "
                                   "from admission to their answer (the server-wide memory budget in use)", registry=r)
        self.batch_size = Histogram("bincount_batch_size", "images per model call", buckets=BATCH_BUCKETS, registry=r)
        self.latency = Histogram("bincount_latency_seconds", "seconds per image (queue), batch (preprocess, "
                                 "model) or request (decode, total)", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("bincount_images", "images answered by the model", registry=r)
        self.abandoned = Counter("bincount_abandoned_images", "images dropped before the model, by reason "
                                 "(disconnect: the client left; deadline: it passed while queued)", ["reason"],
                                 registry=r)
        for stage in STAGES:  # every series exists from the start, at zero
            self.latency.labels(stage)
        for reason in ("disconnect", "deadline"):
            self.abandoned.labels(reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def metrics_route(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
