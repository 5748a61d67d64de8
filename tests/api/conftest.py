"""Fixtures shared by the API tests that watch the fast lane (api/fast_lane.py)."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response

from api.fast_lane import FastLane


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per call of `FastLane.respond` (StockyardGraphQL asks it first), whether the lane
    answered. A module that watches every request uses it with
    `pytest.mark.usefixtures("answered")`."""
    calls: list[bool] = []
    respond = FastLane.respond

    async def spy(self: FastLane, request: Request) -> Response | None:
        response = await respond(self, request)
        calls.append(response is not None)
        return response

    monkeypatch.setattr(FastLane, "respond", spy)
    return calls
