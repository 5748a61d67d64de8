"""Who may see and do what: every role rule of the API, in one place.

Roles (API.md, "Transport"):
- admin: the marketplace operator, everything;
- seller: its own seller's catalog, warehouses and stock; orders of any type whose lines
  are all its own variants; the orders that contain its variants, seeing its own lines;
- storefront: the catalog and availability; REGULAR orders, and the orders it created;
- no token: nothing but `/healthz`, `__typename` and the schema.

A seller must not learn whether another seller's object exists: where it names one, it
gets the very error the object's absence gives (`missing`), never PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from domain.errors import DomainError, PermissionDenied
from domain.models import OrderType, Role


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    role: Role
    seller_id: int | None = None
    label: str | None = None  # for callers without a token, e.g. "cli"
    token_name: str | None = None  # the token's own name, e.g. "Berlin dashboard"

    @property
    def name(self) -> str:
        """How the ledger and logs name this caller: "admin:3", or `seller:3 "Berlin
        dashboard"` for a named token (at most 64 characters, the ledger's `actor`)."""
        if self.label:
            return self.label
        if self.token_name:
            return f'{self.role.value}:{self.token_id} "{self.token_name}"'
        return f"{self.role.value}:{self.token_id}"


def _is(principal: Principal | None, *roles: Role) -> bool:
    return principal is not None and principal.role in roles


# -- reading ---------------------------------------------------------------------------


def require_reader(principal: Principal | None) -> Principal:
    """Every query field: any token; without one, nothing is readable."""
    if principal is None:
        raise PermissionDenied("reading needs a token")
    return principal


def seller_scope(principal: Principal | None) -> int | None:
    """The seller a principal is confined to (None: not confined)."""
    if principal is not None and principal.role is Role.SELLER:
        return principal.seller_id
    return None


def can_see_seller_data(principal: Principal | None, seller_id: int) -> bool:
    """The catalog (sellers, warehouses, products, variants): every token, except that a
    seller token sees only its own seller's objects."""
    if principal is None:
        return False
    return principal.role is not Role.SELLER or principal.seller_id == seller_id


def can_read_stock(principal: Principal | None, seller_id: int | None = None) -> bool:
    """Raw stock figures, the ledger and purchase orders: admins, and a seller its own."""
    if _is(principal, Role.ADMIN):
        return True
    return _is(principal, Role.SELLER) and seller_id is not None \
        and principal.seller_id == seller_id  # type: ignore[union-attr]


def require_stock_reader(principal: Principal | None, what: str) -> Principal:
    """Lists of raw stock figures or of the ledger (a seller's are narrowed to its own)."""
    if not _is(principal, Role.ADMIN, Role.SELLER):
        raise PermissionDenied(f"reading {what} needs an admin or seller token")
    return principal  # type: ignore[return-value]


def require_token_admin(principal: Principal | None) -> Principal:
    """Creating, listing and revoking tokens: admins only."""
    if not _is(principal, Role.ADMIN):
        raise PermissionDenied("managing tokens needs an admin token")
    return principal  # type: ignore[return-value]


def can_manage_tokens(principal: Principal | None) -> bool:
    return _is(principal, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class OrderScope:
    """The orders a caller may read: all of them, or those created by `token_id` and (for
    a seller) those with a line of `seller_id`'s variants."""

    everything: bool = False
    token_id: int | None = None
    seller_id: int | None = None


def order_scope(principal: Principal | None) -> OrderScope:
    if principal is None:
        raise PermissionDenied("reading orders needs a token")
    if principal.role is Role.ADMIN:
        return OrderScope(everything=True)
    return OrderScope(token_id=principal.token_id, seller_id=seller_scope(principal))


def can_read_order(principal: Principal | None, created_by: int | None,
                   line_sellers: Collection[int]) -> bool:
    """An order: admins; the token that created it; a seller whose variant it contains."""
    if principal is None:
        return False
    if principal.role is Role.ADMIN or (created_by is not None
                                        and created_by == principal.token_id):
        return True
    return principal.role is Role.SELLER and principal.seller_id in line_sellers


def own_lines_only(principal: Principal | None) -> int | None:
    """The seller whose lines alone an order shows to `principal` (None: every line)."""
    return seller_scope(principal)


def can_read_movement_order(principal: Principal | None) -> bool:
    """A movement's order, for whoever may read the movement: an admin, or the seller of
    its warehouse, whose variant the order then holds (stock is its variant's seller's)."""
    return _is(principal, Role.ADMIN, Role.SELLER)


def can_read_line(principal: Principal | None, created_by: int | None,
                  line_seller: int | None) -> bool:
    """One line of a readable order: a seller sees only its own lines (even of an order its
    token created); the order's creator and admins see every line."""
    if principal is None:
        return False
    if principal.role is Role.SELLER:
        return principal.seller_id == line_seller
    return principal.role is Role.ADMIN or created_by == principal.token_id


# -- changing --------------------------------------------------------------------------


def require_admin(principal: Principal | None) -> Principal:
    """Marketplace operations: sellers, shipping zones, the configuration."""
    if not _is(principal, Role.ADMIN):
        raise PermissionDenied("this operation needs an admin token")
    return principal  # type: ignore[return-value]


def require_manager(principal: Principal | None) -> Principal:
    """Catalog and stock changes: admins, and sellers (for their own seller's objects)."""
    if not _is(principal, Role.ADMIN, Role.SELLER):
        raise PermissionDenied("this operation needs an admin token or the seller's own token")
    return principal  # type: ignore[return-value]


def require_seller_access(principal: Principal | None, seller_id: int | None,
                          missing: DomainError | None = None) -> Principal:
    """Managing a seller's catalog and stock: admins for every seller, a seller token for
    its own. `seller_id` None means the object does not exist: `missing` is raised, as it
    is for a seller naming another seller's object. Other roles: PERMISSION_DENIED."""
    principal = require_manager(principal)
    if seller_id is None or (principal.role is Role.SELLER
                             and principal.seller_id != seller_id):
        if missing is not None:
            raise missing
        raise PermissionDenied("this operation needs an admin token or the seller's own token")
    return principal


def can_manage_seller(principal: Principal | None, seller_id: int) -> bool:
    """Admins for every seller, a seller token for its own (sales channels)."""
    return _is(principal, Role.ADMIN) or (
        _is(principal, Role.SELLER) and principal is not None
        and principal.seller_id == seller_id)


def can_manage_subscription(principal: Principal | None, seller_id: int | None) -> bool:
    """Webhook subscriptions: a seller token its own; an admin every one, marketplace-wide
    ones (`seller_id` None) included."""
    return _is(principal, Role.ADMIN) or (
        seller_id is not None and can_manage_seller(principal, seller_id))


def require_order_creation(principal: Principal | None, order_type: OrderType) -> Principal:
    """Admins and sellers create orders of every type (a seller's lines must be its own
    variants: `own_variants`), storefronts REGULAR orders only."""
    if _is(principal, Role.ADMIN, Role.SELLER):
        return principal  # type: ignore[return-value]
    if _is(principal, Role.STOREFRONT):
        if order_type is OrderType.REGULAR:
            return principal  # type: ignore[return-value]
        raise PermissionDenied(f"a storefront token creates REGULAR orders only, not {order_type}")
    raise PermissionDenied("placing orders needs a token")


def own_variants(principal: Principal) -> int | None:
    """The seller whose variants alone an order placed by `principal` may contain."""
    return seller_scope(principal)


def require_order_change(principal: Principal | None, *, created_by: int | None,
                         line_sellers: Collection[int], cancel: bool,
                         missing: DomainError) -> Principal:
    """Editing, confirming (`cancel` False) or cancelling an order.

    Admins: any order. Sellers: an order whose lines are all their own; one they cannot
    read is `missing`, one that is partly another seller's PERMISSION_DENIED. Storefronts:
    cancelling an order they created; another's is `missing`.
    """
    if principal is None:
        raise PermissionDenied("changing orders needs a token")
    if principal.role is Role.ADMIN:
        return principal
    if principal.role is Role.STOREFRONT and not cancel:
        raise PermissionDenied("a storefront token may only cancel the orders it created")
    if not can_read_order(principal, created_by, line_sellers):
        raise missing
    if principal.role is Role.SELLER and any(s != principal.seller_id for s in line_sellers):
        raise PermissionDenied("the order has lines of another seller")
    return principal


def require_fulfiller(principal: Principal | None) -> Principal:
    """Fulfilling: admins every line, sellers their own lines (`can_read_line`)."""
    if not _is(principal, Role.ADMIN, Role.SELLER):
        raise PermissionDenied("fulfilling orders needs an admin or seller token")
    return principal  # type: ignore[return-value]


def require_picker(principal: Principal | None) -> Principal:
    """Pick batches: admins in every warehouse, a seller token in its own warehouses."""
    if not _is(principal, Role.ADMIN, Role.SELLER):
        raise PermissionDenied("pick batches need an admin or seller token")
    return principal  # type: ignore[return-value]
