"""API key format, argon2id hashing and verification (bcrypt hashes still verify)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PREFIX_MARK = "gk_"
SECRET_BYTES = 32
_hasher = PasswordHasher()  # argon2id with argon2-cffi's RFC 9106 low-memory defaults


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: the plaintext is shown once, only the hash is kept."""

    prefix: str
    plaintext: str
    hash: str


def key_generate() -> NewKey:
    """Generate ``<key_prefix>.<secret>`` with a 32-byte secret and its argon2id hash."""
    prefix = PREFIX_MARK + secrets.token_hex(6)
    secret = secrets.token_urlsafe(SECRET_BYTES)  # never contains '.'
    return NewKey(prefix=prefix, plaintext=f"{prefix}.{secret}", hash=_hasher.hash(secret))


def key_split(presented: str) -> tuple[str, str] | None:
    """Split a presented key into ``(prefix, secret)``; None when it is malformed."""
    prefix, dot, secret = presented.partition(".")
    if not dot or not prefix or not secret or len(presented) > 256:
        return None
    return prefix, secret


def hash_verify(stored_hash: str, secret: str) -> bool:
    """Return True when ``secret`` matches an argon2id (or legacy bcrypt) hash. CPU-heavy."""
    if stored_hash.startswith("$argon2"):
        try:
            return _hasher.verify(stored_hash, secret)
        except (VerificationError, InvalidHashError):
            return False
    if stored_hash.startswith(("$2a$", "$2b$", "$2y$")):
        try:
            return bcrypt.checkpw(secret.encode(), stored_hash.encode())
        except ValueError:
            return False
    return False
