"""What a query asks below the field being resolved, read from its document.

A list resolver uses it to fetch, in one batch before its items are resolved, what each
item's fields will ask for: those fields then find their values loaded and answer at once,
without a coroutine, a task and a turn of the event loop per item (graphql-core's price of
an async field in a list). It only ever fetches ahead: a field it misses loads as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionNode,
)
from graphql.pyutils import Undefined
from graphql.utilities import value_from_ast_untyped
from strawberry import Info
from strawberry.types.nodes import get_variable_values


def arguments_of(info: Info[Any, Any], path: Sequence[str], name: str, on: str
                 ) -> list[dict[str, Any]]:
    """The distinct argument sets of the `name` fields selected at `path` below the current
    field on an object of type `on` (fragments followed where they may apply to it, aliases
    apart; variables filled in, an omitted one left out as an omitted argument is).

    Each named fragment is walked once per depth, as graphql-core collects fields: a
    fragment spreading another twice, nested 30 deep, is a small document that walked
    naively would take 2^30 steps.
    """
    raw = info._raw_info
    variables = get_variable_values(raw)
    object_type = raw.schema.get_type(on)
    applies = {on, *(i.name for i in getattr(object_type, "interfaces", ()))}
    found: list[dict[str, Any]] = []
    spread: set[tuple[str, int]] = set()

    def walk(selections: Sequence[SelectionNode], depth: int) -> None:
        for selection in selections:
            if isinstance(selection, FieldNode):
                field = selection.name.value
                if depth == len(path):
                    if field == name:
                        args = {a.name.value: value for a in selection.arguments or ()
                                if (value := value_from_ast_untyped(a.value, variables))
                                is not Undefined}
                        if args not in found:
                            found.append(args)
                elif field == path[depth] and selection.selection_set is not None:
                    walk(selection.selection_set.selections, depth + 1)
                continue
            fragment: FragmentDefinitionNode | InlineFragmentNode | None
            if isinstance(selection, FragmentSpreadNode):
                key = (selection.name.value, depth)
                if key in spread:
                    continue
                spread.add(key)
                fragment = raw.fragments.get(selection.name.value)
            else:
                fragment = cast(InlineFragmentNode, selection)
            if fragment is None:
                continue
            condition = fragment.type_condition
            # at the objects' own level a fragment on another type selects nothing
            if depth < len(path) or condition is None or condition.name.value in applies:
                walk(fragment.selection_set.selections, depth)

    for node in raw.field_nodes:
        if node.selection_set is not None:
            walk(node.selection_set.selections, 0)
    return found
