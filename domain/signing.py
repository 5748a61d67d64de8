"""Standard Webhooks signatures (API.md "Signed deliveries"), through the `standardwebhooks`
package: what Stockyard sends is signed, what channels and suppliers send in is checked."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"
MIN_BYTES, MAX_BYTES = 24, 64
TOLERANCE = 300  # seconds an inbound timestamp may be off


class BadSignature(Exception):
    """An inbound request whose signature or timestamp does not hold."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def is_secret(value: str) -> bool:
    """`whsec_` and the base64 of 24 to 64 bytes."""
    if not value.startswith(PREFIX):
        return False
    try:
        raw = base64.b64decode(value[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return False
    return MIN_BYTES <= len(raw) <= MAX_BYTES


def headers(secret: str, body: str | bytes, message_id: str | None = None,
            now: float | None = None) -> dict[str, str]:
    """The three headers of one attempt: the same id on every retry of a message, the
    timestamp and signature of this attempt."""
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time() if now is None else now)
    signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(stamp, UTC), body)
    return {"webhook-id": message_id, "webhook-timestamp": str(stamp),
            "webhook-signature": signature}


def verify(secret: str, body: bytes, received: Mapping[str, str]) -> None:
    """Raises BadSignature unless `received` signs `body` with `secret` within 5 minutes."""
    try:
        Webhook(secret).verify(body, dict(received), json_parse=False)
    except Exception as exc:  # the library raises ValueError etc. for malformed headers too
        raise BadSignature(str(exc)) from None
