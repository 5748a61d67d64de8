"""Global IDs: one object, one ID. Only the spelling `encode` gives is accepted (issue 16)."""

from __future__ import annotations

import base64

import pytest

from api import ids
from domain.errors import InvalidInput, NotFound
from tests.conftest import Api
from tests.factories import gid, id_mutation, shop

CANONICAL = ids.encode("Seller", 1)  # "U2VsbGVyOjE="


def b64(raw: str) -> str:
    return base64.b64encode(raw.encode()).decode()


# other spellings of Seller 1, each of which `int` or base64 would read as Seller 1
NON_CANONICAL = {
    "leading zero": b64("Seller:01"),
    "Arabic-Indic one": b64("Seller:\u0661"),
    "fullwidth one": b64("Seller:\uff11"),
    "space before": b64("Seller: 1"),
    "space after": b64("Seller:1 "),
    "newline after": b64("Seller:1\n"),
    "plus sign": b64("Seller:+1"),
    "underscore": b64("Seller:0_1"),
    "padding bits set": CANONICAL[:-2] + "F=",
    "padding missing": CANONICAL.rstrip("="),
    "padding doubled": CANONICAL + "=",
    "url-safe alphabet": CANONICAL.replace("V", "-"),
    "whitespace inside": CANONICAL[:4] + " " + CANONICAL[4:],
    "trailing newline": CANONICAL + "\n",
    "lower case": CANONICAL.lower(),
    "non-ASCII letter": "\uff35" + CANONICAL[1:],
}


def test_encode_and_parse_round_trip() -> None:
    for type_name, pk in [("Seller", 1), ("ProductVariant", 10), ("Order", ids.MAX_PK)]:
        assert ids.parse(ids.encode(type_name, pk)) == (type_name, pk)
        assert ids.decode(ids.encode(type_name, pk), type_name, "id") == pk


@pytest.mark.parametrize("spelling", list(NON_CANONICAL.values()), ids=list(NON_CANONICAL))
def test_every_other_spelling_is_invalid(spelling: str) -> None:
    assert spelling != CANONICAL

    with pytest.raises(ids.InvalidId):
        ids.parse(spelling)
    with pytest.raises(InvalidInput):
        ids.decode(spelling, "Seller", "id")


@pytest.mark.parametrize("raw", ["Seller:0", "Seller:-1", f"Seller:{ids.MAX_PK + 1}",
                                 "Seller:", ":1", "Seller", "Seller:1:2", "1:1"])
def test_out_of_range_or_malformed_is_invalid(raw: str) -> None:
    with pytest.raises(ids.InvalidId):
        ids.parse(b64(raw))


def test_an_id_of_another_type_is_not_found() -> None:
    with pytest.raises(NotFound):
        ids.decode(ids.encode("Seller", 1), "Order", "id")


ARABIC_INDIC = str.maketrans("0123456789", "".join(map(chr, range(0x0660, 0x066A))))
NODE = "query($id: ID!) { node(id: $id) { __typename id } }"


@pytest.mark.anyio
async def test_node_answers_the_canonical_id_only(api: Api) -> None:
    s = shop(api.db)
    canonical = gid("Seller", s.seller)

    assert (await api.gql(NODE, {"id": canonical}))["node"] == {
        "__typename": "Seller", "id": canonical}
    arabic_indic = str(s.seller).translate(ARABIC_INDIC)
    for spelling in [b64(f"Seller:0{s.seller}"), b64(f"Seller:{s.seller} "),
                     b64(f"Seller:+{s.seller}"), b64(f"Seller:{arabic_indic}")]:
        assert (await api.gql(NODE, {"id": spelling}))["node"] is None, spelling


@pytest.mark.anyio
async def test_a_mutation_refuses_a_non_canonical_id_as_invalid(api: Api) -> None:
    query = id_mutation("orderCancel", "errors { code field }")
    order = b64("Order:01")

    data = await api.gql(query, {"id": order})

    assert data["orderCancel"]["errors"] == [{"code": "INVALID", "field": "id"}]
