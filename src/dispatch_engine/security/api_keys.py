"""API key format `de_<prefix>_<secret>`: the prefix finds the row, the secret is kept hashed."""

from __future__ import annotations

import re
import secrets

from dispatch_engine.security.hashing import constant_time_equals, hash_api_secret

ROLES = ("backend", "operator", "admin")
_KEY = re.compile(r"^de_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


def generate_key() -> tuple[str, str, str]:
    """A new key: (full key to show once, prefix, secret hash to store)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"de_{prefix}_{secret}", prefix, hash_api_secret(secret)


def parse_key(key: str) -> tuple[str, str] | None:
    match = _KEY.match(key)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    return constant_time_equals(hash_api_secret(secret), stored_hash)
