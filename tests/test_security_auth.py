"""Scoped bearer tokens and the token-bucket rate limiter (units)."""

import json

import pytest

from helpers.serving.hooks import AuthenticationError
from helpers.security import auth


def test_valid_token_gives_scopes():
    authenticator = auth.TokenAuthenticator()
    token = authenticator.issue("reader", ["predict"])
    principal = authenticator.authenticate(f"Bearer {token}")
    assert principal.token_id == "reader"
    assert principal.scopes == frozenset({"predict"})


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer reader.wrong", "Bearer nobody.secret"])
def test_bad_header_rejected(header):
    authenticator = auth.TokenAuthenticator()
    authenticator.issue("reader", ["predict"])
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(header)


def test_revoked_token_rejected():
    authenticator = auth.TokenAuthenticator()
    token = authenticator.issue("reader", ["predict"])
    authenticator.revoke("reader")
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(f"Bearer {token}")


def test_token_file_holds_no_secret(tmp_path):
    authenticator = auth.TokenAuthenticator()
    token = authenticator.issue("ops", ["predict", "admin"])
    path = authenticator.save(tmp_path / "tokens.json")
    assert token.split(".", 1)[1] not in path.read_text()
    assert auth.TokenAuthenticator.load(path).authenticate(f"Bearer {token}").token_id == "ops"


@pytest.mark.parametrize("token_id, scopes", [("bad id", ["predict"]), ("ok", ["root"]), ("ok", [])])
def test_issue_rejects_bad_arguments(token_id, scopes):
    with pytest.raises(ValueError):
        auth.TokenAuthenticator().issue(token_id, scopes)


def test_rate_limiter_refills_per_token():
    now = [0.0]
    limiter = auth.TokenBucketRateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    assert limiter.retry_after_s == 1
    now[0] = 0.5
    assert limiter.allow("a")
    assert not limiter.allow("a")


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), 0.0])
def test_rate_limiter_rejects_bad_rate(rate):
    with pytest.raises(ValueError, match="rate_per_s"):
        auth.TokenBucketRateLimiter(rate, 2)


def token_row(**changes):
    row = {"token_id": "ops", "secret_sha256": "a" * 64, "scopes": ["admin"]}
    row.update(changes)
    return {key: value for key, value in row.items() if value is not None}


@pytest.mark.parametrize(
    "row, message",
    [
        (token_row(scopes="admin"), "list of strings"),
        (token_row(scopes=["root"]), "invalid scopes"),
        (token_row(secret_sha256=None), "missing keys"),
        (token_row(token_id="bad id"), "token_id"),
        ("ops", "JSON object"),
    ],
)
def test_load_rejects_bad_row(tmp_path, row, message):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([row]))
    with pytest.raises(ValueError, match=message):
        auth.TokenAuthenticator.load(path)
