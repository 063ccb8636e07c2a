"""The append-only, hash-chained audit log."""

import json

import pytest

from helpers.security import audit


def event(n):
    return {"kind": "predict", "request_id": f"r{n}", "token_id": "t", "input_sha256": "0" * 64, "status": 200}


def test_log_appends_in_order(tmp_path):
    log = audit.JsonlAuditLog(tmp_path / "audit.jsonl")
    for n in range(3):
        log.record(event(n))
    rows = audit.read_audit_log(tmp_path / "audit.jsonl")
    assert [row["request_id"] for row in rows] == ["r0", "r1", "r2"]
    assert audit.verify_audit_log(tmp_path / "audit.jsonl") == 3


def test_reopened_log_continues_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    audit.JsonlAuditLog(path).record(event(0))
    audit.JsonlAuditLog(path).record(event(1))
    assert audit.verify_audit_log(path) == 2


def test_edited_line_breaks_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = audit.JsonlAuditLog(path)
    for n in range(3):
        log.record(event(n))
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["status"] = 500
    lines[0] = json.dumps(first, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(audit.AuditLogError, match="line 2"):
        audit.verify_audit_log(path)


def test_deleted_line_breaks_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = audit.JsonlAuditLog(path)
    for n in range(3):
        log.record(event(n))
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(audit.AuditLogError, match="removed or inserted"):
        audit.verify_audit_log(path)


def test_raw_input_rejected(tmp_path):
    log = audit.JsonlAuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="raw inputs"):
        log.record({**event(0), "pixels": [[0.0]]})
    assert audit.read_audit_log(tmp_path / "audit.jsonl") == []


@pytest.mark.parametrize("key", ["seq", "prev_sha256", "time"])
def test_chain_keys_rejected(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    log = audit.JsonlAuditLog(path)
    with pytest.raises(ValueError, match="reserved"):
        log.record({**event(0), key: 999})
    log.record(event(1))
    assert audit.verify_audit_log(path) == 1


def test_verify_rejects_non_object_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(audit.AuditLogError, match="expected an object"):
        audit.verify_audit_log(path)


def test_read_rejects_non_utf8(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq": 1, "note": "\xff"}\n')
    with pytest.raises(audit.AuditLogError, match="line 1"):
        audit.read_audit_log(path)
