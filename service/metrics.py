"""Prometheus counters of the service, next to BentoML's own request and adaptive-batch metrics on /metrics.

prometheus_client is imported when the counters are created (in the service's ``__init__``), never at
import time: BentoML workers set ``PROMETHEUS_MULTIPROC_DIR`` after importing the service module, and a
client imported before that would count in a registry that /metrics never reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .contract import REJECTION_REASONS

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

_created: "ServiceMetrics | None" = None


@dataclass
class ServiceMetrics:
    predictions: Counter  # images classified, by model
    requests: Counter  # successful /classify requests, by model
    rejected: Counter  # rejected requests, by reason
    batches: Histogram  # images in each batch a model ran, by model

    @classmethod
    def get(cls) -> "ServiceMetrics":
        """The process's counters, created on first use (a registry refuses the same name twice)."""
        global _created
        if _created is None:
            _created = cls._create()
        return _created

    @classmethod
    def _create(cls) -> "ServiceMetrics":
        import prometheus_client

        metrics = cls(
            predictions=prometheus_client.Counter("cifar_predictions", "Images classified", labelnames=["model"]),
            requests=prometheus_client.Counter(
                "cifar_classify_requests", "Successful /classify requests", labelnames=["model"]
            ),
            rejected=prometheus_client.Counter(
                "cifar_rejected_inputs", "Requests refused as the caller's mistake, by reason", labelnames=["reason"]
            ),
            batches=prometheus_client.Histogram(
                "cifar_batch_images",
                "Images in each batch a model ran",
                labelnames=["model"],
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            ),
        )
        for reason in REJECTION_REASONS:  # export zeros, so dashboards and alerts see every series from the start
            metrics.rejected.labels(reason=reason)
        return metrics

    def serve(self, models: list[str]) -> None:
        """Export zeros for each model served, as for each reason: a model that has not answered yet has a series
        (``rate()`` and ``absent()`` see it), and only served models' names ever become labels."""
        for model in models:
            self.predictions.labels(model=model)
            self.requests.labels(model=model)
            self.batches.labels(model=model)

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason=reason).inc()

    def answered(self, model: str) -> None:
        """A /classify request answered (its images are counted by the batch they ran in)."""
        self.requests.labels(model=model).inc()

    def batched(self, model: str, images: int) -> None:
        """A batch of ``images`` ran on ``model``: every route's images (/classify, /v2, /infer) pass here."""
        self.batches.labels(model=model).observe(images)
        self.predictions.labels(model=model).inc(images)
