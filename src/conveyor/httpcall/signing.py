"""HMAC-SHA256 signatures of completion callbacks, and their verification for receivers."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Conveyor-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Conveyor-Signature`` header value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` of
    ``"<t>." + body``. Receivers recompute it and compare in constant time, and reject old ``t``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300.0) -> bool:
    """Check a ``Conveyor-Signature`` header (for receivers written in Python)."""
    try:
        fields = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), f"t={timestamp},v1={fields.get('v1', '')}")
