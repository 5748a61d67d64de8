"""API tokens: stored hashed, named, revoked; resolved to a Principal per request."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import and_, case, literal, or_, select, text, update
from sqlalchemy.orm import Session

from domain import permissions
from domain.errors import InvalidInput, NotFound, check_text
from domain.models import ApiToken, Role, Seller
from domain.permissions import Principal
from domain.uow import UnitOfWork

TOKEN_PREFIX = "sy_"
MAX_NAME = 40
REVOKED_CHANNEL = "stockyard_tokens"
"""PostgreSQL notification channel: a token was revoked (servers drop their token caches)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(uow: UnitOfWork, role: Role, seller_id: int | None = None, *,
                 name: str | None = None) -> str:
    """Store a new token's hash and return the token (shown once, never stored)."""
    return _create(uow, role, seller_id, name)[1]


def create(uow: UnitOfWork, principal: Principal | None, *, role: Role,
           seller_id: int | None = None, name: str | None = None) -> tuple[ApiToken, str]:
    """An admin creates a token: its row and the secret, which only this answer carries."""
    permissions.require_token_admin(principal)
    return _create(uow, role, seller_id, name)


def _create(uow: UnitOfWork, role: Role, seller_id: int | None,
            name: str | None) -> tuple[ApiToken, str]:
    clean_name = None if name is None else check_text(name, "name", max_length=MAX_NAME,
                                                       what="name")
    if role is Role.SELLER and seller_id is None:
        raise InvalidInput("a seller token needs a seller", field="sellerId")
    if role is not Role.SELLER and seller_id is not None:
        raise InvalidInput("only seller tokens belong to a seller", field="sellerId")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with uow:
        if seller_id is not None and uow.session.get(Seller, seller_id) is None:
            raise NotFound("seller not found", field="sellerId")
        token = ApiToken(token_hash=hash_token(secret), role=role, seller_id=seller_id,
                         name=clean_name, created_at=datetime.now(UTC))
        uow.session.add(token)
        uow.commit()
    return token, secret


def revoke(uow: UnitOfWork, principal: Principal | None, token_id: int) -> ApiToken:
    """Mark the token revoked (once: revoking again answers it unchanged).

    On PostgreSQL the same transaction notifies `REVOKED_CHANNEL`, so servers that share
    no run directory with the caller drop their cached lookups as soon as it commits.
    """
    permissions.require_token_admin(principal)
    with uow:
        token = uow.session.get(ApiToken, token_id, with_for_update=True)
        if token is None:
            raise NotFound("token not found", field="id")
        if token.revoked_at is None:
            token.revoked_at = datetime.now(UTC)
            if uow.dialect == "postgresql":
                uow.session.execute(text(f"NOTIFY {REVOKED_CHANNEL}"))
        uow.commit()  # also when there was nothing to do: a rollback would expire the row
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, newest first (for `stockyard token list`)."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id.desc())))


def record_uses(uow: UnitOfWork, uses: Mapping[int, datetime]) -> None:
    """Write the tokens' last use times in one statement; a time never moves back."""
    if not uses:
        return
    column = ApiToken.last_used_at
    with uow:
        uow.session.execute(
            update(ApiToken).where(ApiToken.id.in_(list(uses))).values(last_used_at=case(
                *((and_(ApiToken.id == token_id,
                        or_(column.is_(None), column < literal(moment, column.type))),
                   literal(moment, column.type))
                  for token_id, moment in uses.items()),
                else_=column)),
            execution_options={"synchronize_session": False})
        uow.commit()


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of a live token; None for an unknown or revoked one."""
    row = session.execute(
        select(ApiToken.id, ApiToken.role, ApiToken.seller_id, ApiToken.name)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Principal(token_id=row.id, role=row.role, seller_id=row.seller_id,
                     token_name=row.name)


def find(session: Session, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)
