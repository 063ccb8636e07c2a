"""A bounded HTTP/1.1 load generator for loopback benchmarks.

Each of ``concurrency`` workers keeps one keep-alive connection and sends the
same prepared request again and again, so the client spends microseconds per
request and the measurement is about the server. A run stops after
``requests`` responses or ``max_seconds``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

import numpy as np


@dataclass
class LoadResult:
    """Outcome of one load run; latencies in milliseconds."""

    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # Responses per ``X-Model-Version`` header value (the serving model).
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        """The number of 200 responses."""
        return self.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        """Responses other than 200, plus connection errors."""
        return sum(count for status, count in self.statuses.items() if status != 200) + len(self.errors)

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Return the ``q``-th latency percentile (0-100) in milliseconds; NaN without responses."""
        if not self.latencies_ms:
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))

    def summary(self) -> dict[str, float | None]:
        """Return concurrency, requests, failures, throughput, p50 and p99 (None without responses)."""
        empty = not self.latencies_ms
        return {
            "concurrency": self.concurrency,
            "requests": self.ok + self.failed,
            "failed": self.failed,
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": None if empty else round(self.percentile(50), 2),
            "p99_ms": None if empty else round(self.percentile(99), 2),
        }


def build_request(url: str, path: str, body: bytes, content_type: str = "application/json") -> bytes:
    """Return the bytes of an HTTP/1.1 POST with a keep-alive connection."""
    parts = _split_url(url)
    for name, value in (("path", path), ("content_type", content_type)):
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ValueError(f"{name} {value!r} contains control characters such as CR or LF; remove them")
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


def _split_url(url: str) -> SplitResult:
    """Split an ``http://host:port`` URL; a missing scheme or port raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"the load generator speaks plain HTTP only, got {url!r}")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"invalid port in {url!r}: {error}") from None
    if not parts.hostname or port is None:
        raise ValueError(f"URL {url!r} needs a host and an explicit port, like http://127.0.0.1:8000")
    return parts


def json_body(payload: object) -> bytes:
    """Return compact JSON bytes for a request body; NaN or infinity raises ValueError."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as error:
        raise ValueError(f"payload is not valid JSON ({error}); replace NaN and infinite values") from None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, str | None]:
    """Return the status and the ``X-Model-Version`` header of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    version = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "x-model-version":
            version = value.strip()
    if length:
        await reader.readexactly(length)
    return status, version


async def run_load_async(
    url: str,
    request: bytes,
    concurrency: int,
    requests: int,
    max_seconds: float = 30.0,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Send ``requests`` copies of ``request`` with ``concurrency`` connections."""
    if concurrency < 1 or requests < 1:
        raise ValueError(f"concurrency and requests must be positive, got {concurrency} and {requests}")
    for name, value in (("max_seconds", max_seconds), ("timeout_s", timeout_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    parts = _split_url(url)
    result = LoadResult(concurrency=concurrency, seconds=0.0)
    remaining = requests
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal remaining
        reader = writer = None
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                writer.write(request)
                status, version = await asyncio.wait_for(_read_response(reader), timeout_s)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as error:
                result.errors.append(f"{type(error).__name__}: {error}")
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if version is not None:
                result.versions[version] = result.versions.get(version, 0) + 1
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def run_load(url: str, request: bytes, concurrency: int, requests: int, max_seconds: float = 30.0) -> LoadResult:
    """Run ``run_load_async`` to completion from synchronous code (a notebook cell, a test)."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(run_load_async(url, request, concurrency, requests, max_seconds))
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    # A separate thread works even where an event loop already runs (Jupyter).
    thread = threading.Thread(target=target, name="load-generator")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class BackgroundLoad:
    """Runs ``run_load`` on a thread while the caller does something else."""

    def __init__(self, url: str, request: bytes, concurrency: int, requests: int, max_seconds: float = 60.0):
        self._args = (url, request, concurrency, requests, max_seconds)
        self._thread = threading.Thread(target=self._target, name="background-load")
        self.result: LoadResult | None = None
        self.error: BaseException | None = None

    def _target(self) -> None:
        try:
            self.result = asyncio.run(run_load_async(*self._args))
        except BaseException as error:
            self.error = error

    def start(self) -> "BackgroundLoad":
        """Start sending requests and return self."""
        self._thread.start()
        return self

    def join(self) -> LoadResult:
        """Wait for the run to end and return its result."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result
