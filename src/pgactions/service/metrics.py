"""Prometheus metrics and the access log.

Five metrics, low-cardinality labels only (action ids, error codes, connection ids — never SQL
text or values): ``pgactions_actions_total{action,code}``, ``pgactions_action_duration_seconds{action}``,
``pgactions_rows_total{action,direction}``, ``pgactions_pool_connections{connection,state}`` and
``pgactions_errors_total{code}``.  Each app has its own registry (tests start several).

The access log is one JSON line per request on the ``pgactions.access`` logger; it is also the
audit record: who (key name or token subject), which action, which connection id, the outcome
code, rows and duration — never the inputs' values.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

from pgactions.spec.manifests import load_manifests

__all__ = ["Metrics", "access_log"]

access_log = logging.getLogger("pgactions.access")

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, pool_states: Callable[[], list[tuple[str, str, int]]]) -> None:
        disable_created_metrics()  # the *_created series double the output and say nothing a scrape needs
        self.registry = CollectorRegistry(auto_describe=True)
        self.actions = Counter("pgactions_actions", "Actions run, by outcome code (OK on success).",
                               ["action", "code"], registry=self.registry)
        self.duration = Histogram("pgactions_action_duration_seconds", "Time to answer an action request.",
                                  ["action"], buckets=_BUCKETS, registry=self.registry)
        self.rows = Counter("pgactions_rows", "Rows read (returned) or written (changed) by actions.",
                            ["action", "direction"], registry=self.registry)
        self.errors = Counter("pgactions_errors", "Requests answered with an error, by code.", ["code"],
                              registry=self.registry)
        self.registry.register(_PoolCollector(pool_states))
        self._read_only = {m.id: m.read_only for m in load_manifests().values()}

        # (action, code) → its series, looked up once: labels() costs more than the increment.
        self._series: dict[tuple[str, str], list[Any]] = {}

    def observe(self, action: str | None, code: str, seconds: float, rows: int | None) -> None:
        if code != "OK":
            self.errors.labels(code).inc()
        if action is None:
            return
        series = self._series.get((action, code))
        if series is None:
            direction = "read" if self._read_only.get(action, True) else "written"
            series = self._series[(action, code)] = [self.actions.labels(action, code),
                                                     self.duration.labels(action), None, direction]
        series[0].inc()
        series[1].observe(seconds)
        if rows:
            if series[2] is None:  # made at the first rows: no series of zeros for failures
                series[2] = self.rows.labels(action, series[3])
            series[2].inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector:
    """Pool sizes read at scrape time (nothing to keep in step)."""

    def __init__(self, states: Callable[[], list[tuple[str, str, int]]]) -> None:
        self.states = states

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("pgactions_pool_connections", "Pooled database connections by state.",
                                   labels=["connection", "state"])
        totals: dict[tuple[str, str], int] = {}
        for connection, state, count in self.states():
            totals[(connection, state)] = totals.get((connection, state), 0) + count
        for (connection, state), count in sorted(totals.items()):
            family.add_metric([connection, state], count)
        yield family


class AccessLog:
    """The access log's lines, written to *stream* by a thread of its own, a batch every
    :data:`FLUSH_SECONDS`: a request only appends its line (bytes) to a deque — no LogRecord, no
    formatting, no thread woken, no write on the request's path (a write per line cost more CPU
    than a one-row read's SQL).  So a line appears within a tenth of a second, and a process
    killed with -9 loses at most that much of its log."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lines: collections.deque[bytes] = collections.deque()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._write, name="pgactions-access-log", daemon=True)
        self.thread.start()

    def put(self, record: dict[str, Any]) -> None:
        self.lines.append(orjson.dumps(record) + b"\n")

    def _write(self) -> None:
        while not self.stopping.wait(FLUSH_SECONDS):
            self.flush()
        self.flush()

    def flush(self) -> None:
        batch = []
        try:
            while True:  # popleft is atomic: lines appended meanwhile wait for the next batch
                batch.append(self.lines.popleft())
        except IndexError:
            pass
        if not batch:
            return
        try:
            self.stream.write(b"".join(batch))
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: the lines have nowhere to go
            pass

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


FLUSH_SECONDS = 0.1


_ACCESS: AccessLog | None = None


def start_access_log(stream: Any) -> AccessLog:
    """Send the access log to *stream* (``pgactions serve``: stderr); without it, lines go to the
    ``pgactions.access`` logger, for a host embedding the app."""
    global _ACCESS
    if _ACCESS is None:
        _ACCESS = AccessLog(stream)
    return _ACCESS


def log_request(record: dict[str, Any]) -> None:
    if _ACCESS is not None:
        _ACCESS.put(record)
    elif access_log.isEnabledFor(logging.INFO):
        access_log.info(orjson.dumps(record).decode())


def now() -> float:
    return time.perf_counter()
