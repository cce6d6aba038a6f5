"""Passwords (Argon2 through pwdlib) and opaque session tokens keyed with SECRET_KEY."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pwdlib import PasswordHash

_hasher = PasswordHash.recommended()


def hash_password(password: str) -> str:
    """CPU-bound for tens of milliseconds by design: the web process calls it off the event loop."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """CPU-bound like `hash_password`."""
    return _hasher.verify(password, password_hash)


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


class TokenDigester:
    """Only the keyed digest of a token is stored, so a leaked session table or Redis dump holds no usable token.

    The HMAC is keyed once per process; each digest copies that state instead of re-keying.
    """

    def __init__(self, secret_key: str) -> None:
        self._keyed = hmac.new(secret_key.encode(), digestmod=hashlib.sha256)

    def __call__(self, token: str) -> str:
        mac = self._keyed.copy()
        mac.update(token.encode())
        return mac.hexdigest()
