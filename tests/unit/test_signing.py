"""Signed deliveries (API.md): the Standard Webhooks signature, held to the specification's
published test vector, secrets Stockyard generates, and the checks of what comes in."""

from __future__ import annotations

import time

import pytest

from domain import signing

# https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MESSAGE = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STAMP = 1614265330
BODY = '{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_match_the_specifications_test_vector() -> None:
    assert signing.headers(SECRET, BODY, MESSAGE, now=STAMP) == {
        "webhook-id": MESSAGE, "webhook-timestamp": str(STAMP),
        "webhook-signature": SIGNATURE}


def test_a_fresh_signature_verifies_and_anything_else_does_not() -> None:
    body = '{"updates":[]}'
    sent = signing.headers(SECRET, body)
    signing.verify(SECRET, body.encode(), sent)
    with pytest.raises(signing.BadSignature):
        signing.verify(SECRET, b'{"updates":[1]}', sent)  # another body
    with pytest.raises(signing.BadSignature):
        signing.verify(signing.new_secret(), body.encode(), sent)  # another secret
    with pytest.raises(signing.BadSignature):  # the vector itself is years old: stale
        signing.verify(SECRET, BODY.encode(), {"webhook-id": MESSAGE,
                                               "webhook-timestamp": str(STAMP),
                                               "webhook-signature": SIGNATURE})
    stale = signing.headers(SECRET, body, now=time.time() - signing.TOLERANCE - 10)
    with pytest.raises(signing.BadSignature):
        signing.verify(SECRET, body.encode(), stale)
    with pytest.raises(signing.BadSignature):
        signing.verify(SECRET, body.encode(), {})


def test_generated_secrets_are_whsec_shaped_and_distinct() -> None:
    made = {signing.new_secret() for _ in range(20)}
    assert len(made) == 20
    assert all(signing.is_secret(s) for s in made)
    assert signing.is_secret(SECRET)
    for bad in ["", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!",
                "whsec_" + "QUJD" * 2, "whsec_" + "A" * 200]:
        assert not signing.is_secret(bad), bad
