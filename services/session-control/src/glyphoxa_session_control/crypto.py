"""Secrets at rest: bot tokens and provider API keys are encrypted with Fernet
(AES-128-CBC + HMAC-SHA256, from ``cryptography``) under keys from configuration.

``SESSION_CONTROL_SECRET_KEYS`` is a comma-separated list of Fernet keys: the first encrypts,
all decrypt, so a key can be rotated without losing what was stored under the old one.
API keys are never stored: only their SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretKeyError(ValueError):
    pass


class SecretBox:
    def __init__(self, keys: str):
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise SecretKeyError(
                "SESSION_CONTROL_SECRET_KEYS is empty: generate one with "
                "`glyphoxa secret-key` and keep it safe (it decrypts stored bot tokens)")
        fernets = []
        for i, key in enumerate(parts, 1):
            try:
                fernets.append(Fernet(key.encode()))
            except ValueError:
                raise SecretKeyError(
                    f"SESSION_CONTROL_SECRET_KEYS: key {i} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes)") from None
        self._fernet = MultiFernet(fernets)

    def seal(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(sealed)).decode("utf-8")
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted with the configured keys "
                                 "(was SESSION_CONTROL_SECRET_KEYS changed without keeping the old key?)"
                                 ) from None


def new_secret_key() -> str:
    return Fernet.generate_key().decode()


def new_api_key() -> tuple[str, str]:
    """(key id, key): the key is shown once; only its hash is stored."""
    key_id = "k" + secrets.token_hex(6)
    return key_id, f"glx_{key_id}_{secrets.token_urlsafe(32)}"


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (for the operator key)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
