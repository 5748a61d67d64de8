"""Relay global IDs: base64("Type:pk")."""

from __future__ import annotations

import base64
import binascii
import functools

from domain.errors import InvalidInput, NotFound, clip

MAX_PK = 2**31 - 1
# longer than any ID `encode` gives (a 40-character type name and a 10-digit key): refused
# unread
MAX_ID = 72


class InvalidId(ValueError):
    """The string is not a global ID issued by Stockyard."""


def encode(type_name: str, pk: int) -> str:
    # base64.b64encode's own work, without its argument checks: a page encodes 100 of these
    return binascii.b2a_base64(f"{type_name}:{pk}".encode(), newline=False).decode()


@functools.lru_cache(maxsize=4096)  # a bulk request names the same warehouses on every row
def parse(global_id: str) -> tuple[str, int]:
    """(type name, pk) of a global ID exactly as `encode` spells it; InvalidId otherwise.

    Only the canonical spelling is accepted, so one object has one ID: base64 admits
    several encodings of the same bytes (padding bits), and `int` reads "01", " 1", "+1"
    and non-ASCII digits such as "\u0661" as 1. The cache keeps no refusal (lru_cache
    keeps no exception), so an over-long string is never kept.
    """
    if len(global_id) > MAX_ID:
        raise InvalidId(global_id)
    try:
        raw = base64.b64decode(global_id.encode("ascii"), validate=True).decode("ascii")
        type_name, _, pk_text = raw.partition(":")
        if (not type_name.isidentifier() or not pk_text.isascii() or not pk_text.isdigit()
                or len(pk_text) > 10):
            raise InvalidId(global_id)
        pk = int(pk_text)
    except (UnicodeError, binascii.Error, ValueError) as exc:
        raise InvalidId(global_id) from exc
    # primary keys are 32-bit integers; the round trip refuses every other spelling
    if not 0 < pk <= MAX_PK or encode(type_name, pk) != global_id:
        raise InvalidId(global_id)
    return type_name, pk


def decode(global_id: str, type_name: str, field: str) -> int:
    """The pk of an ID of `type_name`: INVALID when malformed, NOT_FOUND when of another type."""
    try:
        found_type, pk = parse(global_id)
    except InvalidId:
        raise InvalidInput(f"{clip(global_id)!r} is not a valid ID", field=field) from None
    if found_type != type_name:
        raise NotFound(f"no {type_name} with ID {clip(global_id)!r}", field=field)
    return pk
