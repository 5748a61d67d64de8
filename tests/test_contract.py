"""The served schema holds the public contract (../shared/contract.graphql): adding is fine."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import build_schema, find_breaking_changes

from api.schema import schema

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [ROOT.parent / "shared" / "contract.graphql", ROOT / "docs" / "contract.graphql"]
# nothing is pending any more: every type of the contract is served
LEDGER_TYPES: tuple[str, ...] = ()


def _contract() -> str:
    for path in CANDIDATES:
        if path.exists():
            return path.read_text()
    pytest.fail(f"no contract.graphql at {[str(p) for p in CANDIDATES]}")


def test_served_schema_has_no_breaking_change_against_the_contract() -> None:
    contract = build_schema(_contract())

    changes = find_breaking_changes(contract, schema._schema)

    pending = [c for c in changes if any(name in c.description for name in LEDGER_TYPES)]
    breaking = [f"{c.type.name}: {c.description}" for c in changes if c not in pending]
    assert breaking == []


def test_copy_of_contract_in_docs_matches_shared() -> None:
    shared, local = CANDIDATES
    if not shared.exists():
        pytest.skip("../shared is not beside this checkout")
    assert local.read_text() == shared.read_text(), "refresh docs/contract.graphql"
