"""An append-only audit log in JSON lines, chained by SHA-256.

Each line is one event plus ``seq`` (1, 2, ...), ``time`` (UTC) and
``prev_sha256``, the SHA-256 of the previous line. Editing, inserting or
deleting a line in the middle breaks the chain, which ``verify_audit_log``
reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("helpers.security.audit")

GENESIS = "0" * 64

# Keys that would carry raw request data; the server sends only their hashes.
_RAW_INPUT_KEYS = frozenset({"input", "inputs", "pixels", "image", "images", "body"})
# Keys the log writes itself; an event that set them would break the chain.
_CHAIN_KEYS = frozenset({"seq", "time", "prev_sha256"})


class AuditLogError(RuntimeError):
    """The audit log is malformed or its hash chain is broken."""


class JsonlAuditLog:
    """``AuditSink`` hook writing one JSON line per event, opened in append mode.

    NOTE: the chain detects edits inside the file, but not a cut of its last
    lines. To detect that, copy the latest line hash to a place the server
    cannot write, such as a log service or a WORM bucket.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq, self._last = self._tail()

    def _tail(self) -> tuple[int, str]:
        if not self.path.exists():
            return 0, GENESIS
        seq, last = 0, GENESIS
        with open(self.path, "rb") as handle:
            for line in handle:
                seq, last = seq + 1, hashlib.sha256(line.rstrip(b"\n")).hexdigest()
        return seq, last

    def record(self, event: dict[str, Any]) -> None:
        """Append ``event``; raise ``ValueError`` if it carries a raw-input or chain field."""
        if not isinstance(event, dict):
            raise TypeError(f"an audit event must be a dict, got {type(event).__name__}")
        raw = sorted(_RAW_INPUT_KEYS & set(event))
        if raw:
            raise ValueError(f"audit events must not contain raw inputs; drop fields {raw} and log a SHA-256 instead")
        reserved = sorted(_CHAIN_KEYS & set(event))
        if reserved:
            raise ValueError(f"audit event fields {reserved} are reserved for the hash chain; rename them")
        with self._lock:
            entry = {
                "seq": self._seq + 1,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "prev_sha256": self._last,
                **event,
            }
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
            # O_APPEND makes every write land at the end of the file, even
            # with several writers; one write call per line keeps lines whole.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line + b"\n")
            finally:
                os.close(fd)
            self._seq, self._last = entry["seq"], hashlib.sha256(line).hexdigest()


def read_audit_log(path: str | Path) -> list[dict[str, Any]]:
    """Return the events of an audit log, oldest first."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            if not line:
                continue
            try:
                events.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise AuditLogError(f"line {number} of {path} is not valid UTF-8 JSON; run verify_audit_log to check the chain") from None
    return events


def verify_audit_log(path: str | Path) -> int:
    """Check the hash chain and sequence numbers; return the number of events or raise ``AuditLogError``."""
    previous, count = GENESIS, 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            try:
                entry = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise AuditLogError(f"line {number} of {path} is not valid JSON") from None
            if not isinstance(entry, dict):
                raise AuditLogError(f"line {number} of {path} is a JSON {type(entry).__name__}, expected an object: the log was edited")
            if entry.get("seq") != number:
                raise AuditLogError(f"line {number} of {path} has seq {entry.get('seq')!r}: a line was removed or inserted")
            if entry.get("prev_sha256") != previous:
                raise AuditLogError(f"line {number} of {path} does not chain to line {number - 1}: the log was edited")
            previous, count = hashlib.sha256(line).hexdigest(), number
    return count
