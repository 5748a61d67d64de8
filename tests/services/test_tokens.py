"""Tokens: names, revocation, listing and the batched last-use write, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidInput, NotFound, PermissionDenied
from domain.models import Role
from domain.permissions import Principal
from domain.services import tokens
from tests.conftest import Database
from tests.factories import ADMIN, World


def _principal(db: Database, secret: str) -> Principal | None:
    with db.reader() as session:
        return tokens.authenticate(session, secret)


def test_a_named_token_shows_its_name_in_the_ledger_actor(db: Database) -> None:
    seller = World(db).seller()

    secret = tokens.create_token(db.uow(), Role.SELLER, seller, name="  Berlin dashboard ")

    principal = _principal(db, secret)
    assert principal is not None and principal.token_name == "Berlin dashboard"
    assert principal.name == f'seller:{principal.token_id} "Berlin dashboard"'


def test_an_unnamed_token_keeps_the_bare_actor(db: Database) -> None:
    principal = _principal(db, tokens.create_token(db.uow(), Role.ADMIN))

    assert principal is not None and principal.name == f"admin:{principal.token_id}"


def test_the_longest_actor_fits_the_ledger_column() -> None:
    principal = Principal(token_id=9_999_999_999, role=Role.STOREFRONT, token_name="x" * 40)

    assert len(principal.name) <= 64


@pytest.mark.parametrize("name", ["x" * 41, "", "   ", "nul\x00"])
def test_a_bad_name_is_invalid_and_creates_nothing(db: Database, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        tokens.create_token(db.uow(), Role.ADMIN, name=name)

    assert caught.value.field == "name"
    assert db.scalar("SELECT COUNT(*) FROM api_token") == 0


def test_only_an_admin_creates_or_revokes_tokens(db: Database) -> None:
    storefront = Principal(token_id=5, role=Role.STOREFRONT)
    token, _ = tokens.create(db.uow(), ADMIN, role=Role.STOREFRONT)

    with pytest.raises(PermissionDenied):
        tokens.create(db.uow(), storefront, role=Role.ADMIN)
    with pytest.raises(PermissionDenied):
        tokens.revoke(db.uow(), None, token.id)
    assert db.scalar("SELECT COUNT(*) FROM api_token WHERE revoked_at IS NULL") == 1


def test_create_stores_only_the_hash_of_the_secret(db: Database) -> None:
    token, secret = tokens.create(db.uow(), ADMIN, role=Role.ADMIN, name="ops")

    stored = db.rows("SELECT token_hash, name FROM api_token")
    assert stored == [(tokens.hash_token(secret), "ops")]
    assert token.created_at is not None and token.revoked_at is None


def test_a_revoked_token_no_longer_authenticates(db: Database) -> None:
    token, secret = tokens.create(db.uow(), ADMIN, role=Role.ADMIN)

    revoked = tokens.revoke(db.uow(), ADMIN, token.id)

    assert revoked.revoked_at is not None
    assert _principal(db, secret) is None


def test_revoking_again_answers_the_token_unchanged(db: Database) -> None:
    token, _ = tokens.create(db.uow(), ADMIN, role=Role.ADMIN)
    first = tokens.revoke(db.uow(), ADMIN, token.id).revoked_at
    stored = db.scalar("SELECT revoked_at FROM api_token")

    again = tokens.revoke(db.uow(), ADMIN, token.id)

    assert again.revoked_at is not None and first is not None
    assert again.revoked_at.replace(tzinfo=UTC) == first.replace(tzinfo=UTC)
    assert db.scalar("SELECT revoked_at FROM api_token") == stored


def test_revoking_an_unknown_token_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        tokens.revoke(db.uow(), ADMIN, 424242)


def test_list_is_newest_first(db: Database) -> None:
    older, _ = tokens.create(db.uow(), ADMIN, role=Role.ADMIN, name="older")
    newer, _ = tokens.create(db.uow(), ADMIN, role=Role.STOREFRONT, name="newer")

    with db.reader() as session:
        listed = tokens.list_tokens(session)

    assert [t.id for t in listed] == [newer.id, older.id]


def test_record_uses_writes_every_time_in_one_statement_and_never_moves_back(
        db: Database) -> None:
    a, _ = tokens.create(db.uow(), ADMIN, role=Role.ADMIN)
    b, _ = tokens.create(db.uow(), ADMIN, role=Role.ADMIN)
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    tokens.record_uses(db.uow(), {a.id: now, b.id: now - timedelta(minutes=5)})
    tokens.record_uses(db.uow(), {a.id: now - timedelta(minutes=1)})  # an older flush

    with db.reader() as session:
        used = {t.id: t.last_used_at for t in tokens.list_tokens(session)}
    assert {k: v.replace(tzinfo=UTC) if v else v for k, v in used.items()} == {
        a.id: now, b.id: now - timedelta(minutes=5)}
