"""Who may do what. Roles: admin (everything), seller (its own seller's data), storefront."""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import PermissionDenied
from domain.models import Role


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


def require_principal(principal: Principal | None) -> Principal:
    if principal is None:
        raise PermissionDenied("this operation needs a token")
    return principal


def require_admin(principal: Principal | None) -> Principal:
    if principal is None or principal.role is not Role.ADMIN:
        raise PermissionDenied("this operation needs an admin token")
    return principal


def require_token_admin(principal: Principal | None) -> Principal:
    """Creating, listing and revoking tokens: admins only."""
    if principal is None or principal.role is not Role.ADMIN:
        raise PermissionDenied("managing tokens needs an admin token")
    return principal


def can_manage_tokens(principal: Principal | None) -> bool:
    return principal is not None and principal.role is Role.ADMIN


def require_seller_access(principal: Principal | None, seller_id: int) -> Principal:
    """Admins manage every seller; a seller token only its own."""
    if principal is not None and (
        principal.role is Role.ADMIN
        or (principal.role is Role.SELLER and principal.seller_id == seller_id)
    ):
        return principal
    raise PermissionDenied("this operation needs an admin token or the seller's own token")


def require_order_placement(principal: Principal | None) -> Principal:
    if principal is None or principal.role not in (Role.ADMIN, Role.STOREFRONT):
        raise PermissionDenied("placing orders needs an admin or storefront token")
    return principal


def can_read_stock(principal: Principal | None, seller_id: int | None = None) -> bool:
    """Raw stock figures: admins, and a seller for its own variants."""
    if principal is None:
        return False
    if principal.role is Role.ADMIN:
        return True
    return principal.role is Role.SELLER and seller_id is not None \
        and principal.seller_id == seller_id


def can_read_orders(principal: Principal | None) -> bool:
    """Orders span sellers: admins only until per-seller order views exist."""
    return principal is not None and principal.role is Role.ADMIN


def can_see_seller_data(principal: Principal | None, seller_id: int) -> bool:
    """The catalog is public, except that a seller token sees only its own seller's objects."""
    return principal is None or principal.role is not Role.SELLER \
        or principal.seller_id == seller_id


def seller_scope(principal: Principal | None) -> int | None:
    """The seller a principal is confined to (None: not confined)."""
    if principal is not None and principal.role is Role.SELLER:
        return principal.seller_id
    return None


def can_read_availability(principal: Principal | None) -> bool:
    return principal is not None
