"""Passwords (Argon2 through pwdlib) and opaque session tokens keyed with SECRET_KEY."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pwdlib import PasswordHash

_hasher = PasswordHash.recommended()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    return _hasher.verify(password, password_hash)


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str, secret_key: str) -> str:
    """Only this digest is stored, so a leaked session table or Redis dump holds no usable token."""
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()
