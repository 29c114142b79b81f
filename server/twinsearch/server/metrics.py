"""Prometheus metrics of a running server, on their own registry (so several servers can live in one
process, as in tests).

    twinsearch_rpcs_total{method, code}            calls answered, by status code
    twinsearch_rpc_latency_seconds{method}         latency histogram
    twinsearch_rpcs_in_flight{method}              calls being served now
    twinsearch_rpc_items_total{method}             images, pairs, probes or items received
    twinsearch_batch_calls{stage}                  calls gathered into one encoder pass or search
    twinsearch_batch_rows{stage}                   images or probes in one encoder pass or search
    twinsearch_stage_seconds{stage}                time per stage: decode (decoding and preprocessing one
                                                   call's images), encoder_queue / search_queue (a call's
                                                   wait for its batch), encoder_run (one forward pass),
                                                   search_run (one gathered search, with class scoring)
    twinsearch_gallery_items{gallery}              items per gallery (read at scrape time)
    twinsearch_gallery_classes{gallery}            classes per gallery (read at scrape time)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rpcs = Counter("twinsearch_rpcs", "RPCs answered, by method and status code",
                            ["method", "code"], registry=r)
        self.latency = Histogram("twinsearch_rpc_latency_seconds", "RPC latency in seconds", ["method"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("twinsearch_rpcs_in_flight", "RPCs being served", ["method"], registry=r)
        self.items = Counter("twinsearch_rpc_items", "Images, pairs, probes or items received", ["method"],
                             registry=r)
        self.batch_calls = Histogram("twinsearch_batch_calls", "Calls gathered into one batch", ["stage"],
                                     buckets=_SIZE_BUCKETS, registry=r)
        self.batch_rows = Histogram("twinsearch_batch_rows", "Images or probes in one batch", ["stage"],
                                    buckets=_SIZE_BUCKETS, registry=r)
        self.stage_seconds = Histogram("twinsearch_stage_seconds", "Time per stage of a call, in seconds",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self._http = None

    def observe_batch(self, stage: str, calls: int, rows: int) -> None:
        self.batch_calls.labels(stage).observe(calls)
        self.batch_rows.labels(stage).observe(rows)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def watch_galleries(self, galleries: Callable[[], Iterable]) -> None:
        """Report item and class counts of the galleries `galleries()` lists (GalleryInfo) at scrape time."""
        self.registry.register(_GalleryCollector(galleries))

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Start the HTTP endpoint (/metrics); returns the bound port."""
        self._http, _thread = start_http_server(port, addr=address, registry=self.registry)
        bound = int(self._http.server_port)
        log.info("metrics on http://%s:%d/metrics", address, bound)
        return bound

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _GalleryCollector:
    def __init__(self, galleries: Callable[[], Iterable]):
        self._galleries = galleries

    def collect(self):
        items = GaugeMetricFamily("twinsearch_gallery_items", "Items enrolled per gallery", labels=["gallery"])
        classes = GaugeMetricFamily("twinsearch_gallery_classes", "Classes enrolled per gallery",
                                    labels=["gallery"])
        try:
            for g in self._galleries():
                items.add_metric([g.name], float(g.item_count))
                classes.add_metric([g.name], float(g.class_count))
        except Exception:  # noqa: BLE001 - a scrape during shutdown must not raise
            log.debug("gallery metrics unavailable", exc_info=True)
        yield items
        yield classes

    def describe(self):
        return []
