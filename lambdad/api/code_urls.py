"""Presigned download URLs for code packages (GetFunction's Code.Location)."""

from __future__ import annotations

import hashlib
import hmac
import time

PATH_PREFIX = "/_lambdad/code/"
VALID_SECONDS = 600  # AWS's presigned code URLs are valid for 10 minutes


class CodeUrlSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, key: str, expires: int) -> str:
        message = f"{key}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def url(self, base_url: str, key: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + VALID_SECONDS)
        signature = self._signature(key, expires)
        return f"{base_url}{PATH_PREFIX}{key}?Expires={expires}&Signature={signature}"

    def verify(self, key: str, expires: str, signature: str, now: float | None = None) -> bool:
        try:
            deadline = int(expires)
        except ValueError:
            return False
        if deadline < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self._signature(key, deadline), signature)
