"""A bounded HTTP load generator for loopback servers, with retries and latency percentiles."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadReport:
    """Counts and latencies of one load run.

    ``requests`` is the number of logical requests; ``attempts`` includes
    retries. ``retried`` counts requests that needed at least one retry and
    ``failed`` those that never succeeded.
    """

    requests: int = 0
    attempts: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    replicas: Counter = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def percentiles(self, points=(50, 90, 99)) -> dict[str, float]:
        """Return latency percentiles in milliseconds of the successful requests."""
        if not self.latencies_ms:
            return {f"p{p}": float("nan") for p in points}
        values = np.percentile(self.latencies_ms, points)
        return {f"p{p}": float(v) for p, v in zip(points, values)}

    def summary(self) -> dict:
        return {
            "requests": self.requests, "attempts": self.attempts, "succeeded": self.succeeded,
            "retried": self.retried, "failed": self.failed, "seconds": round(self.seconds, 2),
            **{key: round(value, 1) for key, value in self.percentiles().items()},
        }


def check_loopback(url: str) -> None:
    """Raise ValueError unless ``url`` points at this machine's loopback interface."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"load tests only target loopback; got host {host!r} in {url!r}. Use http://127.0.0.1:<port>")


def run_load(
    url: str,
    payload: dict,
    requests: int = 200,
    concurrency: int = 4,
    max_retries: int = 3,
    retry_delay_s: float = 0.2,
    deadline_s: float = 60.0,
    request_timeout_s: float = 10.0,
    id_prefix: str = "load",
    replica_header: str | None = "X-Serve-Replica",
) -> LoadReport:
    """POST ``payload`` as JSON to ``url`` ``requests`` times from ``concurrency`` threads.

    A request that fails with a connection error or a 5xx status is retried
    up to ``max_retries`` times with the same ``X-Request-ID``. The run stops
    after ``deadline_s`` seconds even if requests remain; those count as failed.
    """
    check_loopback(url)
    if requests < 1 or concurrency < 1 or max_retries < 0:
        raise ValueError(
            f"requests and concurrency must be positive and max_retries non-negative, got "
            f"{requests}, {concurrency}, {max_retries}"
        )
    report = LoadReport(requests=requests)
    lock = threading.Lock()
    started = time.monotonic()

    def one(index: int, client: httpx.Client) -> None:
        request_id = f"{id_prefix}-{index:05d}-{uuid.uuid4().hex[:6]}"
        ok = False
        for attempt in range(max_retries + 1):
            if time.monotonic() - started > deadline_s:
                break
            with lock:
                report.attempts += 1
                if attempt == 1:
                    report.retried += 1
            sent = time.perf_counter()
            try:
                response = client.post(url, json=payload, headers={"X-Request-ID": request_id}, timeout=request_timeout_s)
            except httpx.HTTPError as error:
                with lock:
                    report.statuses[type(error).__name__] += 1
                time.sleep(retry_delay_s)
                continue
            latency = (time.perf_counter() - sent) * 1000
            with lock:
                report.statuses[response.status_code] += 1
            if response.status_code < 500:
                ok = response.status_code < 400
                with lock:
                    if ok:
                        report.latencies_ms.append(latency)
                        report.request_ids.append(request_id)
                        if replica_header:
                            report.replicas[response.headers.get(replica_header, "?")] += 1
                break
            time.sleep(retry_delay_s)
        with lock:
            report.succeeded += ok
            report.failed += not ok

    def worker(indices: range) -> None:
        with httpx.Client() as client:
            for index in indices:
                one(index, client)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, [range(start, requests, concurrency) for start in range(concurrency)]))
    report.seconds = time.monotonic() - started
    return report
