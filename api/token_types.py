"""GraphQL side of API tokens (API.md "Access and operations"): the type, input, payloads."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from api import ids
from api.errors import StockyardError
from api.types import Info, Node, Seller
from domain import models, permissions
from domain.services import tokens

RoleEnum = strawberry.enum(models.Role, name="Role")


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored one is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@strawberry.type(name="ApiToken")
class ApiToken(Node):
    name: str | None
    role: RoleEnum  # type: ignore[valid-type]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    seller_pk: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: models.ApiToken) -> ApiToken:
        created = _aware(m.created_at)
        assert created is not None
        return cls(id=strawberry.ID(_gid(m.id)), name=m.name, role=m.role,
                   created_at=created, last_used_at=_aware(m.last_used_at),
                   revoked_at=_aware(m.revoked_at), seller_pk=m.seller_id)

    @strawberry.field
    async def seller(self, info: Info) -> Seller | None:
        if self.seller_pk is None:
            return None
        return Seller.from_model(await info.context.loaders.seller.load(self.seller_pk))


def _gid(pk: int) -> str:
    return ids.encode("ApiToken", pk)


async def token_node(info: Info, pk: int) -> ApiToken | None:
    """`node(id:)` of a token: admins only, null for everyone else."""
    if not permissions.can_manage_tokens(info.context.principal):
        return None
    token = await info.context.read(tokens.find, pk)
    return ApiToken.from_model(token) if token is not None else None


@strawberry.input
class TokenCreateInput:
    role: RoleEnum  # type: ignore[valid-type]
    seller_id: strawberry.ID | None = None
    name: str | None = None


@strawberry.type
class TokenCreatePayload:
    token: ApiToken | None
    secret: str | None = strawberry.field(
        description="The token to send as `Authorization: Bearer <secret>`. Shown only "
                    "here: only its SHA-256 is stored.")
    errors: list[StockyardError]


@strawberry.type
class TokenRevokePayload:
    token: ApiToken | None
    errors: list[StockyardError]
