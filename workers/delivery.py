"""HTTP for deliveries: one pooled httpx client per process (domain/sync.py's `Post`)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from domain.sync import TIMEOUT, Answer, Unreachable


class HttpPost:
    """POSTs a body and reports the answer; no redirects are followed (a receiver that
    moved gets its new endpoint set)."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self._timeout = timeout
        self._client = httpx.Client(timeout=timeout, follow_redirects=False,
                                    limits=httpx.Limits(max_connections=100,
                                                        max_keepalive_connections=20))

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            response = self._client.post(url, content=body, headers=dict(headers))
        except httpx.TimeoutException:
            raise Unreachable(f"no answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise Unreachable(f"could not connect: {exc}") from None
        return Answer(response.status_code, response.headers.get("retry-after"))

    def close(self) -> None:
        self._client.close()
