"""API tokens: created by the CLI, stored hashed, resolved to a Principal per request."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.errors import InvalidInput, NotFound
from domain.models import ApiToken, Role, Seller
from domain.permissions import Principal
from domain.uow import UnitOfWork

TOKEN_PREFIX = "sy_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(uow: UnitOfWork, role: Role, seller_id: int | None = None) -> str:
    """Store a new token's hash and return the token (shown once, never stored)."""
    if role is Role.SELLER and seller_id is None:
        raise InvalidInput("a seller token needs --seller", field="seller")
    if role is not Role.SELLER and seller_id is not None:
        raise InvalidInput("only seller tokens belong to a seller", field="seller")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with uow:
        if seller_id is not None and uow.session.get(Seller, seller_id) is None:
            raise NotFound("seller not found", field="seller")
        uow.session.add(ApiToken(token_hash=hash_token(token), role=role, seller_id=seller_id))
        uow.commit()
    return token


def authenticate(session: Session, token: str) -> Principal | None:
    row = session.execute(
        select(ApiToken.id, ApiToken.role, ApiToken.seller_id)
        .where(ApiToken.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    return Principal(token_id=row.id, role=row.role, seller_id=row.seller_id)
