"""Start an app factory under uvicorn as a background process on loopback.

Settings cross the process boundary as a JSON file: ``start_server`` puts
its path in ``$MNIST_SERVING_SETTINGS`` for the child, and the default
factory ``create_app()`` reads it (``ServingSettings.from_env``). A custom
factory (one that adds hooks, for example) can read the same file.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .app import LOG_LEVEL_ENV
from .settings import SETTINGS_ENV

DEFAULT_FACTORY = "helpers.serving.app:create_app"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerHandle:
    """A running server process: ``url``, ``pid``, ``log_path`` and ``stop()``."""

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path, log_file):
        self.process = process
        self.url = url
        self.log_path = log_path
        self._log_file = log_file

    @property
    def pid(self) -> int:
        """The process id of the uvicorn process."""
        return self.process.pid

    def running(self) -> bool:
        """Return True while the process has not exited."""
        return self.process.poll() is None

    def log_text(self) -> str:
        """Return what the server has written to its log so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``); return its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        if not self._log_file.closed:
            self._log_file.close()
        return self.process.returncode

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r}, pid={self.pid}, running={self.running()})"


def start_server(
    factory: str = DEFAULT_FACTORY,
    settings_path: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    ssl_certfile: str | Path | None = None,
    ssl_keyfile: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    ca_file: str | Path | None = None,
    log_path: str | Path | None = None,
) -> ServerHandle:
    """Run ``python -m uvicorn --factory FACTORY`` and wait until ``/health`` answers 200.

    ``settings_path`` is a JSON file from ``ServingSettings.to_json``; it
    reaches the child as ``$MNIST_SERVING_SETTINGS``. ``port`` None picks a
    free port. With ``ssl_certfile``/``ssl_keyfile`` the server speaks TLS and
    the health check verifies it against ``ca_file`` (required then). ``env``
    adds variables to the child's environment. The server's stdout and stderr
    go to ``log_path`` (a temporary file by default). Raises ``RuntimeError``
    with the log's tail if the process exits or ``/health`` does not answer
    within ``timeout_s`` seconds (the first start may train the book's models).
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"host must be a loopback address, got {host!r}; the book's servers never leave the machine")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("give both ssl_certfile and ssl_keyfile, or neither")
    if ssl_certfile is not None and ca_file is None:
        raise ValueError("a TLS server needs ca_file, the CA certificate used to verify it during the health check")

    port = port if port is not None else free_port(host)
    scheme = "https" if ssl_certfile else "http"
    url = f"{scheme}://{host}:{port}"
    command = [
        sys.executable, "-m", "uvicorn", "--factory", factory,
        "--host", host, "--port", str(port), "--log-level", "info", "--no-access-log",
    ]
    if ssl_certfile:
        command += ["--ssl-certfile", str(ssl_certfile), "--ssl-keyfile", str(ssl_keyfile)]

    child_env = {**os.environ, LOG_LEVEL_ENV: "INFO", **(env or {})}
    if settings_path is not None:
        child_env[SETTINGS_ENV] = str(Path(settings_path).resolve())
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="model-server-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    log_file = open(log_path, "w", encoding="utf-8")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=child_env)
    handle = ServerHandle(process, url, log_path, log_file)

    verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            handle.stop()
            raise RuntimeError(f"server exited with code {process.returncode}; log {log_path}:\n{handle.log_text()[-3000:]}")
        try:
            response = httpx.get(f"{url}/health", timeout=2.0, verify=verify)
            if response.status_code == 200:
                return handle
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    handle.stop()
    raise RuntimeError(f"server did not respond on /health within {timeout_s} s; log {log_path}:\n{handle.log_text()[-3000:]}")
