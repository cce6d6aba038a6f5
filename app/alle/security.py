"""Passwords (Argon2 through pwdlib), the password policy, and opaque session tokens keyed with SECRET_KEY."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from importlib import resources

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

_hasher = PasswordHash.recommended()


def configure_password_hashing(memory_kib: int) -> None:
    """Argon2id with `memory_kib` per hash (Settings.PASSWORD_HASH_MEMORY_KIB), otherwise as recommended.

    A hash costs CPU in proportion: about 0.3 s at the full 64 MiB, a few milliseconds at 1 MiB, which the tests
    use (they sign up hundreds of users); staging and production refuse less than the full memory.
    """
    global _hasher  # set once at start-up (alle.api.app.create_app), before any request
    _hasher = PasswordHash((Argon2Hasher(memory_cost=memory_kib),))
    _dummy_hash.cache_clear()


MIN_PASSWORD_LENGTH = 12


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password: log-in verifies unknown emails against it, at the cost of a real one."""
    return _hasher.hash(secrets.token_urlsafe(32))


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords, lower-cased, shipped in the package (`alle/data/common-passwords.txt`).

    The list is zxcvbn's `passwords` frequency list (zxcvbn 4.5.0 on PyPI, MIT, see `common-passwords.LICENSE`),
    itself the top of Mark Burnett's ten million leaked passwords (xato.net, 2015).
    """
    text = resources.files("alle").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(text.split())


def password_problem(password: str, *, email: str) -> str | None:
    """Why `password` may not be used for the account `email`, in one sentence that never repeats it; None if it may."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters."
    if password.strip().casefold() == email.strip().casefold():
        return "The password is the email address: choose something else."
    if password.casefold() in common_passwords():
        return "The password is one of the most common passwords: choose one that is harder to guess."
    return None


def hash_password(password: str) -> str:
    """CPU-bound for tens of milliseconds by design: the web process calls it off the event loop."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """CPU-bound like `hash_password`. Without a hash (unknown account) it does the same work and returns False."""
    if password_hash is None:
        _hasher.verify(password, _dummy_hash())
        return False
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
