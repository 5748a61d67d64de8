"""Automatic persisted queries, Apollo's protocol (apollo-link-persisted-queries, "Protocol").

A request may name its document by `extensions.persistedQuery.sha256Hash` (`version` 1)
instead of sending it. A hash this process does not know answers `PersistedQueryNotFound`,
and the client sends the hash with the full text once; the text is checked against the hash,
kept, and runs. From then on the hash alone runs it, on POST and on GET (a short GET URL a
CDN can cache: api/caching.py).

The documents are kept per process, the ones used most recently first: `DOCUMENTS` of them,
`CHARS` characters together, none longer than `DOCUMENT_CHARS` (a longer one still runs, it
is just not kept). A hash unknown to one worker of `serve --workers N` costs the client one
more round; nothing is shared or persisted across restarts.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

DOCUMENTS = 10_000
CHARS = 16 * 2**20
DOCUMENT_CHARS = 64 * 1024
VERSION = 1

NOT_FOUND = "PersistedQueryNotFound"
MISMATCH = "provided sha does not match query"


class PersistedQueryError(Exception):
    """A persisted-query request the server cannot run: answered before any parsing."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class PersistedQueryNotFound(PersistedQueryError):
    """The hash alone, unknown here: the client is to send the full query with it."""

    def __init__(self) -> None:
        super().__init__(NOT_FOUND, "PERSISTED_QUERY_NOT_FOUND")


class PersistedQueryInvalid(PersistedQueryError):
    """A malformed `persistedQuery` extension, or a query that does not match its hash."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "INVALID")


class PersistedQueries:
    """The documents of this process by the SHA-256 (hex) of their text, bounded LRU."""

    def __init__(self, documents: int = DOCUMENTS, chars: int = CHARS) -> None:
        self._documents: OrderedDict[str, str] = OrderedDict()
        self._limit = documents
        self._chars_limit = chars
        self._chars = 0

    def __len__(self) -> int:
        return len(self._documents)

    def resolve(self, data: dict[str, Any]) -> dict[str, Any]:
        """The request `data` (a JSON object of a POST body or a GET's parameters) with its
        query text in place and `persistedQuery` taken out of `extensions` (dropped when
        nothing else is left in it); `data` itself when it has no `persistedQuery`.

        Raises `PersistedQueryNotFound` for an unknown hash alone and
        `PersistedQueryInvalid` for a bad extension or a query that does not match."""
        extensions = data.get("extensions")
        if type(extensions) is not dict or "persistedQuery" not in extensions:
            return data
        sha = _hash_of(extensions["persistedQuery"])
        query = data.get("query")
        if query is None or query == "":
            query = self._documents.get(sha)
            if query is None:
                raise PersistedQueryNotFound
            self._documents.move_to_end(sha)
        elif type(query) is str:
            if hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest() != sha:
                raise PersistedQueryInvalid(MISMATCH)
            self._keep(sha, query)
        # another type of `query` is strawberry's to refuse, as without the extension
        rest = {key: value for key, value in extensions.items() if key != "persistedQuery"}
        resolved = {key: value for key, value in data.items() if key != "extensions"}
        resolved["query"] = query
        if rest:
            resolved["extensions"] = rest
        return resolved

    def _keep(self, sha: str, query: str) -> None:
        documents = self._documents
        if sha in documents:
            documents.move_to_end(sha)
            return
        if len(query) > DOCUMENT_CHARS:
            return
        documents[sha] = query
        self._chars += len(query)
        while len(documents) > self._limit or self._chars > self._chars_limit:
            _, dropped = documents.popitem(last=False)
            self._chars -= len(dropped)


def _hash_of(extension: Any) -> str:
    """The lower-case hex SHA-256 that a `persistedQuery` extension names."""
    if type(extension) is not dict:
        raise PersistedQueryInvalid("`extensions.persistedQuery` must be an object.")
    version = extension.get("version")
    if type(version) is not int or version != VERSION:
        raise PersistedQueryInvalid("Unsupported persisted query version.")
    sha = extension.get("sha256Hash")
    if type(sha) is not str or len(sha) != 64 \
            or not all(c in "0123456789abcdef" for c in sha.lower()):
        raise PersistedQueryInvalid(
            "`extensions.persistedQuery.sha256Hash` must be a SHA-256 in hex (64 digits).")
    return sha.lower()
