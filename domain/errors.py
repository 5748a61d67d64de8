"""Domain errors: every expected failure, with the API's error code and structured fields.

DomainError
 +-- InsufficientStock       quantity above unallocated stock
 +-- NotAvailableInCountry   no warehouse of the variant serves the shipping country
 +-- NotFound                an id that names nothing (or nothing the caller may see)
 +-- InvalidInput            malformed input
 +-- InvalidState            operation not allowed in the order's current status
 +-- Duplicate               a unique value already taken
 +-- PermissionDenied        the principal may not do this
 +-- Conflict                compare-and-set failed
Rejected carries several DomainErrors raised as one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class ErrorCode(enum.StrEnum):
    INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
    NOT_AVAILABLE_IN_COUNTRY = "NOT_AVAILABLE_IN_COUNTRY"
    NOT_FOUND = "NOT_FOUND"
    INVALID = "INVALID"
    INVALID_STATE = "INVALID_STATE"
    DUPLICATE = "DUPLICATE"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    CONFLICT = "CONFLICT"


class DomainError(Exception):
    """An expected failure that the client sees as a typed error."""

    code: ErrorCode = ErrorCode.INVALID

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        variant_id: int | None = None,
        warehouse_id: int | None = None,
        requested: int | None = None,
        available: int | None = None,
        order_ids: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.variant_id = variant_id
        self.warehouse_id = warehouse_id
        self.requested = requested
        self.available = available
        self.order_ids = order_ids

    @property
    def errors(self) -> tuple[DomainError, ...]:
        return (self,)


class InsufficientStock(DomainError):
    """Quantity above the unallocated stock that could serve it."""

    code = ErrorCode.INSUFFICIENT_STOCK


class NotAvailableInCountry(DomainError):
    """No warehouse of the variant's seller that serves the country holds a stock record."""

    code = ErrorCode.NOT_AVAILABLE_IN_COUNTRY


class NotFound(DomainError):
    """An id that names nothing the caller may see."""

    code = ErrorCode.NOT_FOUND


class InvalidInput(DomainError):
    """Malformed input: out-of-range quantity, unknown country, empty list, bad id."""

    code = ErrorCode.INVALID


class InvalidState(DomainError):
    """The operation is not allowed in the order's current status."""

    code = ErrorCode.INVALID_STATE


class Duplicate(DomainError):
    """A value that must be unique is taken already."""

    code = ErrorCode.DUPLICATE


class PermissionDenied(DomainError):
    """The caller's role does not allow this operation."""

    code = ErrorCode.PERMISSION_DENIED


class Conflict(DomainError):
    """A compare-and-set found the value changed meanwhile."""

    code = ErrorCode.CONFLICT


class Rejected(DomainError):
    """Several errors found in one request, reported together."""

    def __init__(self, errors: Iterable[DomainError]) -> None:
        self._errors = tuple(errors)
        first = self._errors[0]
        super().__init__(first.message, field=first.field)
        self.code = first.code

    @property
    def errors(self) -> tuple[DomainError, ...]:
        return self._errors


PREFIX = 40  # characters of a bad value quoted back in a message or a log line


def clip(value: object, limit: int = PREFIX) -> str:
    """`value` for an error message or a log line: at most `limit` characters of it."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def check_text(value: str, field: str, *, max_length: int = 255, what: str = "value") -> str:
    """The value stripped; INVALID when empty, too long or holding a NUL character."""
    cleaned = value.strip()
    if not cleaned:
        raise InvalidInput(f"{what} must not be empty", field=field)
    if len(cleaned) > max_length:
        raise InvalidInput(f"{what} must be at most {max_length} characters", field=field)
    if not is_storable(cleaned):
        raise InvalidInput(f"{what} must not contain NUL or unpaired surrogate characters",
                           field=field)
    return cleaned


def is_storable(value: str) -> bool:
    """Text every database can store: UTF-8 encodable, no NUL."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def raise_all(errors: list[DomainError]) -> None:
    """Raise the collected errors (one or several); do nothing when there are none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise Rejected(errors)
