"""ASGI middleware that rejects request bodies above a byte limit with HTTP 413."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Answers 413 when ``Content-Length`` or the streamed body exceeds the limit.

    ``route_limits`` maps ``(method, path)`` to its own limit (model uploads
    are larger than images); other routes get ``max_body_bytes``.

    A declared length is checked before anything is read. A chunked body is
    counted as it arrives, and the route reading it receives an
    ``HTTPException(413)``, so the limit holds for every route and content
    type.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, route_limits: dict[tuple[str, str], int] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_limits = route_limits or {}

    @staticmethod
    def _message(size: str, limit: int) -> str:
        return f"request body is {size} bytes, more than the limit of {limit} bytes; send a smaller request"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        limit = self.route_limits.get((scope["method"], scope["path"]), self.max_body_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            body = json.dumps({"detail": self._message(declared.decode(), limit)}).encode()
            await send({
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")],
            })
            await send({"type": "http.response.body", "body": body})
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, self._message(f"at least {received}", limit))
            return message

        await self.app(scope, limited_receive, send)
