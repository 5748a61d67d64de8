"""Unit of work: one transaction per service call, events published only after commit."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from domain.events import Event

Publish = Callable[[Event], None]


def _discard(_event: Event) -> None:
    return None


class UnitOfWork:
    """`with uow:` opens a session; leaving without `commit()` rolls back."""

    def __init__(self, session_factory: sessionmaker[Session], publish: Publish = _discard) -> None:
        self._session_factory = session_factory
        self._publish = publish
        self.events: list[Event] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.events = []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()
        events, self.events = self.events, []
        for event in events:
            self._publish(event)

    def emit(self, event: Event) -> None:
        self.events.append(event)
