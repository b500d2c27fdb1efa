"""``/metrics``: what the proxy did, in Prometheus text format (``prometheus_client``).

* ``ledger_proxy_calls_total{project,model,status}``: metered calls by how they ended (``ok``,
  ``failed``, ``cancelled``, ``refused``), counted where the ledger writes them
  (:class:`ObservedStore`), so the figures are the ledger's own;
* ``ledger_proxy_cost_dollars_total{project,model}`` and
  ``ledger_proxy_tokens_total{project,model,kind}``: what those calls cost and used. (A
  Prometheus sample is a float: these are for graphs; the books are the ledger's exact
  integers);
* ``ledger_proxy_refusals_total{code}``: answers the proxy gave instead of forwarding
  (``invalid_api_key``, ``not_admin``, ``body_too_large``, ``upstream_unreachable``, and the ledger's codes: ``budget_exceeded``...);
* ``ledger_proxy_upstream_seconds``: from sending a call upstream to its response headers;
  ``ledger_proxy_overhead_seconds``: the rest of the time to response headers (key check,
  estimate, hold): what the proxy adds;
* ``ledger_proxy_in_flight``: requests being answered; ``ledger_proxy_spool_entries``: usage
  waiting in the spool for the database (read at each scrape).

With ``--workers N`` every worker writes its samples under ``PROMETHEUS_MULTIPROC_DIR`` (set by
``ledger serve``) and a scrape of any worker adds them up.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..money import from_units
from ..records import Outcome
from ..store.ops import Store

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "ObservedStore"]

#: Distinct model label values kept before the rest are counted as ``other`` (a client can
#: send any model name; each would be a new time series).
MAX_MODELS = 200
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0, 10.0, 30.0, 60.0)


class _SpoolCollector(Collector):
    def __init__(self, depth: Callable[[], int]) -> None:
        self._depth = depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            value = self._depth()
        except Exception:
            value = -1
        yield GaugeMetricFamily("ledger_proxy_spool_entries",
                                "Usage entries waiting in the spool for the database "
                                "(-1: the spool could not be read).", value=value)


class Metrics:
    """The proxy's metrics, in one registry (one per app)."""

    def __init__(self, spool_depth: Callable[[], int]) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        reg = None if self.multiprocess else self.registry
        self.calls = Counter("ledger_proxy_calls", "Metered calls by how they ended.",
                             ["project", "model", "status"], registry=reg)
        self.cost = Counter("ledger_proxy_cost_dollars", "Cost of the metered calls (USD).",
                            ["project", "model"], registry=reg)
        self.tokens = Counter("ledger_proxy_tokens", "Tokens of the metered calls.",
                              ["project", "model", "kind"], registry=reg)
        self.refusals = Counter("ledger_proxy_refusals",
                                "Requests answered by the proxy instead of forwarded.",
                                ["code"], registry=reg)
        self.upstream = Histogram("ledger_proxy_upstream_seconds",
                                  "Upstream time to response headers.", buckets=BUCKETS,
                                  registry=reg)
        self.overhead = Histogram("ledger_proxy_overhead_seconds",
                                  "Time the proxy adds before response headers (key check, "
                                  "estimate, hold).", buckets=BUCKETS, registry=reg)
        self.in_flight = Gauge("ledger_proxy_in_flight", "Requests being answered.",
                               registry=reg, multiprocess_mode="livesum")
        self._models: set[str] = set()
        self._lock = threading.Lock()
        self._spool = _SpoolCollector(spool_depth)
        if not self.multiprocess:
            self.registry.register(self._spool)

    def model_label(self, model: str) -> str:
        with self._lock:
            if model in self._models:
                return model
            if len(self._models) < MAX_MODELS:
                self._models.add(model)
                return model
        return "other"

    def settled(self, project: str, model: str, outcome: Outcome, cost_units: int) -> None:
        label = self.model_label(model)
        self.calls.labels(project, label, outcome.status).inc()
        if cost_units:
            # Prometheus samples are float64 by its format: this counter is a view for
            # dashboards and alerts, never money of record (the ledger's events are).
            self.cost.labels(project, label).inc(float(from_units(cost_units)))  # float ok
        if outcome.prompt_tokens:
            self.tokens.labels(project, label, "prompt").inc(outcome.prompt_tokens)
        if outcome.completion_tokens:
            self.tokens.labels(project, label, "completion").inc(outcome.completion_tokens)

    def refused_call(self, project: str, model: str) -> None:
        self.calls.labels(project, self.model_label(model), "refused").inc()

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self._spool)
        return generate_latest(registry)


class ObservedStore(Store):
    """The ledger's store, telling :class:`Metrics` about every call it settles or refuses
    (after the write: a failed write counts nothing; the call is then spooled)."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        super().__init__(store.engine)
        # The ledger's own listeners (``book.on_alert``): alerts crossed by proxied calls
        # reach them too.
        self.alert_listeners = store.alert_listeners
        self.metrics = metrics

    def settle(self, *args: Any, **kwargs: Any) -> int:
        cost = super().settle(*args, **kwargs)
        outcome = kwargs.get("outcome", args[1] if len(args) > 1 else None)
        fallback = kwargs.get("fallback", args[3] if len(args) > 3 else None)
        project, model = (fallback[0], fallback[1]) if fallback else ("unknown", "unknown")
        with contextlib.suppress(Exception):  # metrics never break a call
            if isinstance(outcome, Outcome):
                self.metrics.settled(project, model, outcome, cost)
        return cost

    def record_refused(self, *args: Any, **kwargs: Any) -> None:
        super().record_refused(*args, **kwargs)
        project = kwargs.get("project", args[1] if len(args) > 1 else "unknown")
        model = kwargs.get("model", args[2] if len(args) > 2 else "unknown")
        with contextlib.suppress(Exception):
            self.metrics.refused_call(project, model)
