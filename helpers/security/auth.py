"""Bearer tokens with scopes, checked in constant time, and a per-token rate limit.

A token reads ``<token id>.<secret>``. The server stores only the SHA-256 of
each secret, so a leaked token file does not leak usable tokens. Digests are
compared with ``hmac.compare_digest``, so the time a comparison takes does not
reveal how many leading bytes of a guess were right.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from helpers.serving.hooks import ALL_SCOPES, AuthenticationError, Principal

_TOKEN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """A stored token: its id, the SHA-256 of its secret, and its scopes."""

    token_id: str
    secret_sha256: str
    scopes: frozenset[str]


class TokenAuthenticator:
    """``Authenticator`` hook: ``Authorization: Bearer <token id>.<secret>`` to a ``Principal``."""

    def __init__(self, records: Iterable[TokenRecord] = ()):
        self._records: dict[str, TokenRecord] = {}
        for record in records:
            self._records[record.token_id] = record
        # A digest to compare against when the token id is unknown, so that an
        # unknown id and a wrong secret take the same path through the code.
        self._decoy = _digest(secrets.token_urlsafe(32))

    def issue(self, token_id: str, scopes: Iterable[str]) -> str:
        """Create a token with ``scopes`` and return it; only its hash is kept."""
        if not _TOKEN_ID_PATTERN.fullmatch(token_id):
            raise ValueError(f"invalid token id {token_id!r}; use 1-64 letters, digits, '_' or '-'")
        scopes = frozenset(scopes)
        unknown = sorted(scopes - ALL_SCOPES)
        if unknown or not scopes:
            raise ValueError(f"invalid scopes {sorted(scopes)}; choose from {sorted(ALL_SCOPES)}")
        if token_id in self._records:
            raise ValueError(f"token id {token_id!r} already exists; revoke it first or pick another id")
        secret = secrets.token_urlsafe(32)
        self._records[token_id] = TokenRecord(token_id, _digest(secret), scopes)
        return f"{token_id}.{secret}"

    def revoke(self, token_id: str) -> None:
        """Remove a token; later requests with it get HTTP 401."""
        if self._records.pop(token_id, None) is None:
            raise ValueError(f"token id {token_id!r} not found; known ids: {sorted(self._records)}")

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the principal for an ``Authorization`` header or raise ``AuthenticationError``."""
        # NOTE: failed attempts are not rate-limited, because the limiter keys on
        # an authenticated token id. Guessing a 256-bit secret is impractical.
        if not authorization:
            raise AuthenticationError("missing Authorization header; send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("the Authorization header must use the Bearer scheme")
        token_id, _, secret = token.strip().partition(".")
        record = self._records.get(token_id)
        expected = record.secret_sha256 if record is not None else self._decoy
        matches = hmac.compare_digest(_digest(secret), expected)
        if record is None or not matches:
            # The message is the same for an unknown id and a wrong secret.
            raise AuthenticationError("invalid or revoked token")
        return Principal(token_id=record.token_id, scopes=record.scopes)

    def save(self, path: str | Path) -> Path:
        """Write the token records (hashes, never secrets) to a JSON file (mode 0600)."""
        path = Path(path)
        rows = [
            {"token_id": r.token_id, "secret_sha256": r.secret_sha256, "scopes": sorted(r.scopes)}
            for r in self._records.values()
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TokenAuthenticator":
        """Read token records written by ``save``; raise ``ValueError`` on a malformed file."""
        try:
            rows = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"token file {path} is not valid JSON: {error}") from None
        if not isinstance(rows, list):
            raise ValueError(f"token file {path} must contain a JSON list of token records, got {type(rows).__name__}")
        return cls(_parse_record(row, number, path) for number, row in enumerate(rows, start=1))


def _parse_record(row: object, number: int, path: str | Path) -> TokenRecord:
    """Build a ``TokenRecord`` from row ``number`` of a token file, checking every field."""
    where = f"token file {path}, record {number}"
    if not isinstance(row, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(row).__name__}")
    missing = [key for key in ("token_id", "secret_sha256", "scopes") if key not in row]
    if missing:
        raise ValueError(f"{where} is missing keys {missing}; write token files with TokenAuthenticator.save")
    token_id, digest, scopes = row["token_id"], row["secret_sha256"], row["scopes"]
    if not isinstance(token_id, str) or not _TOKEN_ID_PATTERN.fullmatch(token_id):
        raise ValueError(f"{where} has invalid token_id {token_id!r}; use 1-64 letters, digits, '_' or '-'")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{where} has invalid secret_sha256 {digest!r}; expected 64 lowercase hex digits")
    # A bare string would be split into one-letter scopes by frozenset().
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        raise ValueError(f"{where} has scopes {scopes!r}; expected a list of strings such as [\"predict\"]")
    unknown = sorted(set(scopes) - ALL_SCOPES)
    if unknown or not scopes:
        raise ValueError(f"{where} has invalid scopes {scopes!r}; choose from {sorted(ALL_SCOPES)}")
    return TokenRecord(token_id, digest, frozenset(scopes))


class TokenBucketRateLimiter:
    """``RateLimiter`` hook: a token bucket per caller.

    Each caller may make ``burst`` requests at once and then ``rate_per_s``
    requests per second on average. After a refusal, ``retry_after_s`` is
    the whole seconds until the next request would be allowed.
    """

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if isinstance(rate_per_s, bool) or not isinstance(rate_per_s, (int, float)):
            raise TypeError(f"rate_per_s must be a number of requests per second, got {rate_per_s!r}")
        if not math.isfinite(rate_per_s) or rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be a positive finite number, got {rate_per_s!r}")
        if not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be a positive integer, got {burst!r}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.retry_after_s = 1
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, token_id: str) -> bool:
        """Take one request from ``token_id``'s bucket; return False when it is empty."""
        with self._lock:
            now = self._clock()
            level, last = self._buckets.get(token_id, (float(self.burst), now))
            level = min(float(self.burst), level + (now - last) * self.rate_per_s)
            if level >= 1.0:
                self._buckets[token_id] = (level - 1.0, now)
                return True
            self._buckets[token_id] = (level, now)
            self.retry_after_s = max(1, math.ceil((1.0 - level) / self.rate_per_s))
            return False
