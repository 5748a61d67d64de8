"""The JSON of requests and answers (api/app.py `_loads`, `_dumps`): orjson, read and
written exactly as the standard library's `json` reads and writes, down to the bodies
orjson refuses or reads otherwise."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.app import _dumps, _loads
from tests.conftest import Api

pytestmark = pytest.mark.anyio

SELLER_CREATE = """mutation($name: String!) {
  sellerCreate(input: {name: $name}) { seller { name } errors { code } } }"""
VARIANTS = "query($n: Int) { productVariants(first: $n) { edges { node { sku } } } }"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(json_values)
def test_a_body_reads_as_json_loads_reads_it(value: Any) -> None:
    for body in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()):
        assert _loads(body) == json.loads(body)


@given(json_values)
def test_an_answer_reads_back_as_what_was_written(value: Any) -> None:
    # (no NaN or infinity: GraphQL's Float refuses them, and JSON has no spelling for them)
    assert json.loads(_dumps(value)) == value


@pytest.mark.parametrize("body", [
    b'{"n": 123456789012345678901234567890}',  # orjson alone: a float
    b'{"n": -9223372036854775809}',
    b'{"n": 18446744073709551616}',
    b'{"n": NaN, "m": Infinity}',  # orjson refuses these, json reads them
    b'{"n": 1E400}',
    b'{"s": "\\ud800"}',
    '{"s": "é"}'.encode("utf-16"),
    '{"s": "é"}'.encode("utf-32"),
    b'{"a": 1, "a": 2}',
    b'[{"q": "{ a }"}]',
    '{"s": "é", "n": 1}',  # text: a GET's parameters
])
def test_the_bodies_orjson_reads_otherwise_read_as_json_loads_reads_them(
        body: str | bytes) -> None:
    got = _loads(body)

    assert got == json.loads(body)
    assert type(got) is type(json.loads(body))
    assert json.dumps(got) == json.dumps(json.loads(body))  # ints stay ints, NaN NaN


@pytest.mark.parametrize("body", [b'{"a": }', b'{"a": "\xff"}', b"", b"[1,]", b'{"a": 1} x'])
def test_a_body_json_refuses_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        _loads(body)


def test_what_orjson_cannot_write_goes_to_json_dumps() -> None:
    assert _dumps({"n": 2**70, "m": [1, "é"]}) == b'{"n":1180591620717411303424,"m":[1,"\\u00e9"]}'
    assert _dumps({1: "x"}) == b'{"1":"x"}'


async def test_an_answer_keeps_text_beyond_ascii(api: Api) -> None:
    name = "Zoë's \u2028Küche 🍳"

    response = await api.post(SELLER_CREATE, {"name": name})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["data"]["sellerCreate"]["seller"]["name"] == name


async def test_an_int_variable_beyond_64_bits_is_refused_as_an_int(api: Api) -> None:
    body = (b'{"query": "' + VARIANTS.encode()
            + b'", "variables": {"n": 123456789012345678901234567890}}')

    response = await api.client.post("/graphql", content=body, headers={
        "content-type": "application/json", "authorization": f"Bearer {api.admin}"})

    message = response.json()["errors"][0]["message"]
    assert "Int cannot represent non 32-bit signed integer value: " \
           "123456789012345678901234567890" in message, message
