"""Extension points of the model server.

The server calls these hooks but ships no implementation of them; with all of
them unset it is open to every caller. A hardened deployment passes its own
objects in ``ServingSettings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

PREDICT_SCOPE = "predict"
ADMIN_SCOPE = "admin"
ALL_SCOPES = frozenset({PREDICT_SCOPE, ADMIN_SCOPE})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a token id (never the secret) and its scopes."""

    token_id: str
    scopes: frozenset[str]


# Used for every request when no authenticator is configured.
ANONYMOUS = Principal(token_id="anonymous", scopes=ALL_SCOPES)


class AuthenticationError(Exception):
    """Missing or invalid credentials, so the server responds with HTTP 401."""


@runtime_checkable
class Authenticator(Protocol):
    """Turns the ``Authorization`` header into a principal."""

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller, or raise ``AuthenticationError``.

        ``authorization`` is the raw header value, or None when the header
        is absent.
        """
        ...


@runtime_checkable
class RateLimiter(Protocol):
    """Decides whether a caller may make one more request now."""

    def allow(self, token_id: str) -> bool:
        """Return False to make the server respond with HTTP 429 with a ``Retry-After`` header.

        An implementation may expose ``retry_after_s`` (seconds, int); the
        server sends 1 when it is absent.
        """
        ...


@runtime_checkable
class AuditSink(Protocol):
    """Receives one event per prediction, explanation or admin action."""

    def record(self, event: dict[str, Any]) -> None:
        """Store ``event``; it never contains raw inputs, only their SHA-256.

        Prediction and explanation events carry ``kind``, ``request_id``,
        ``token_id``, ``model_version``, ``input_sha256``, ``output``,
        ``latency_ms`` and ``status`` (the HTTP status code). Admin events
        carry ``kind="admin"``, ``action``, ``request_id``, ``token_id``,
        ``model_version`` and ``status``. The server calls it from the event
        loop, so it must not block for long.
        """
        ...


@runtime_checkable
class ArtifactVerifier(Protocol):
    """Checks a model artefact before the registry loads it."""

    def verify(self, path: Path) -> None:
        """Raise any exception to refuse loading ``path``.

        The server then keeps serving the model it had.
        """
        ...
