"""What a query of ``coalmine sql`` may do: a pure check of ClickHouse's own parse of it.

ClickHouse parses the query (``EXPLAIN AST``) and this module reads the tree it prints: one
node a line, indented by depth, such as ``Function file (children 1)`` or ``TableIdentifier
system.settings``. A query passes when it is one SELECT or DESCRIBE with no output clause
(``INTO OUTFILE``, ``FORMAT``, ``SETTINGS``), every node is of a kind listed in
:data:`NODE_KINDS`, and every function, table function, database and system table it names
is on the allowlist (``streams/data/sql_allowlist.txt``). No SQL is parsed here: a name the
tree shows is exactly what ClickHouse will call.

Names are taken as the first word after the node kind. Functions and system tables whose
names hold a space do not exist, so a crafted quoted name can only make a query fail, not
reach something unlisted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files

from streams.errors import CoalmineError

ROOT_KINDS = frozenset({"SelectWithUnionQuery", "DescribeQuery"})
NODE_KINDS = ROOT_KINDS | {
    "ArrayJoin",
    "Asterisk",
    "ColumnsExceptTransformer",
    "ColumnsListMatcher",
    "ColumnsRegexpMatcher",
    "ColumnsReplaceTransformer",
    "ColumnsReplaceTransformer::Replacement",
    "ColumnsTransformerList",
    "ExpressionList",
    "Function",
    "Identifier",
    "InterpolateElement",
    "Literal",
    "OrderByElement",
    "QualifiedAsterisk",
    "QualifiedColumnsListMatcher",
    "QualifiedColumnsRegexpMatcher",
    "SampleRatio",
    "SelectIntersectExceptQuery",
    "SelectQuery",
    "Subquery",
    "TableExpression",
    "TableIdentifier",
    "TableJoin",
    "TablesInSelectQuery",
    "TablesInSelectQueryElement",
    "WindowDefinition",
    "WindowListElement",
    "WithElement",
}
"""Kinds of node a query may hold. Left out among others: ``Set`` (a SETTINGS clause could
lift the limits), ``ColumnsApplyTransformer`` (``* APPLY(f)`` calls a function the tree does
not name), ``QueryParameter`` and every statement other than SELECT and DESCRIBE."""

_WHY_NOT = {
    "Set": "SETTINGS clauses are not allowed (the limits of `coalmine sql` are fixed)",
    "ColumnsApplyTransformer": "APPLY is not allowed (it calls functions by name)",
    "QueryParameter": "query parameters ({name:Type}) are not supported",
}
SYSTEM = "system"


class QueryRefusedError(CoalmineError):
    """The query breaks a rule of ``coalmine sql``; the message says which."""


@dataclass(frozen=True)
class Names:
    """Names matched exactly, plus (lower-cased) names ClickHouse matches in any case."""

    exact: frozenset[str]
    any_case: frozenset[str] = frozenset()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.exact or name.lower() in self.any_case)


@dataclass(frozen=True)
class Allowlist:
    functions: Names
    aggregates: Names
    combinators: tuple[str, ...]
    table_functions: Names
    databases: Names
    system_tables: Names

    def allows_function(self, name: str) -> bool:
        return name in self.functions or self.allows_aggregate(name)

    def allows_aggregate(self, name: str) -> bool:
        """An allowed aggregate function, or one followed by combinators (``sumForEachMerge``)."""
        if name in self.aggregates:
            return True
        return any(
            len(name) > len(suffix)
            and name.endswith(suffix)
            and self.allows_aggregate(name[: -len(suffix)])
            for suffix in self.combinators
        )


SECTIONS = (
    "functions",
    "aggregate functions",
    "aggregate function combinators",
    "table functions",
    "databases",
    "system tables",
)


def parse_allowlist(text: str) -> Allowlist:
    """Read the allowlist file: ``[section]`` headers, names separated by blanks, ``#``
    comments; a trailing ``*`` marks a name matched in any case."""
    words: dict[str, list[str]] = {section: [] for section in SECTIONS}
    section = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
            if section not in words:
                raise ValueError(f"line {number}: unknown section [{section}]")
        elif line:
            if section is None:
                raise ValueError(f"line {number}: names before the first [section]")
            words[section].extend(line.split())

    def names(section: str) -> Names:
        listed = words[section]
        return Names(
            exact=frozenset(w.rstrip("*") for w in listed),
            any_case=frozenset(w.rstrip("*").lower() for w in listed if w.endswith("*")),
        )

    return Allowlist(
        functions=names("functions"),
        aggregates=names("aggregate functions"),
        combinators=tuple(words["aggregate function combinators"]),
        table_functions=names("table functions"),
        databases=names("databases"),
        system_tables=names("system tables"),
    )


@functools.cache
def default_allowlist() -> Allowlist:
    return parse_allowlist(
        (files("streams") / "data" / "sql_allowlist.txt").read_text(encoding="utf-8")
    )


def check_length(query: str, max_chars: int) -> None:
    """The cheap check made before anything parses the query."""
    if not query.strip():
        raise QueryRefusedError("the query is empty")
    if len(query) > max_chars:
        raise QueryRefusedError(
            f"the query is {len(query):,} characters long; `coalmine sql` takes at most "
            f"{max_chars:,}"
        )


@dataclass(frozen=True)
class Node:
    kind: str
    name: str
    """The first word after the kind: a function's or table's name, an identifier."""
    parent: Node | None
    children: list[Node]


def parse_ast(explain: str) -> Node:
    """The tree of ``EXPLAIN AST`` output (one node a line, one space of indent per level)."""
    root: Node | None = None
    path: list[Node] = []
    for line in explain.splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        words = line.split()
        if depth > len(path) or (depth == 0 and root is not None):
            raise QueryRefusedError("ClickHouse's parse of the query has an unexpected shape")
        del path[depth:]
        parent = path[-1] if path else None
        node = Node(words[0], words[1] if len(words) > 1 else "", parent, [])
        if parent is None:
            root = node
        else:
            parent.children.append(node)
        path.append(node)
    if root is None:
        raise QueryRefusedError("ClickHouse's parse of the query is empty")
    return root


def check_ast(explain: str, allowlist: Allowlist) -> None:
    """Refuse (:class:`QueryRefusedError`, saying why) a query whose parse breaks a rule."""
    root = parse_ast(explain)
    if root.kind not in ROOT_KINDS:
        raise QueryRefusedError(
            f"only SELECT and DESCRIBE queries are allowed (this is a {root.kind})"
        )
    for node in _walk(root):
        _check_node(node, allowlist)


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _check_node(node: Node, allowlist: Allowlist) -> None:
    if node.kind not in NODE_KINDS:
        raise QueryRefusedError(_WHY_NOT.get(node.kind, f"{node.kind} is not allowed in a query"))
    if node.kind in ROOT_KINDS and len(node.children) != 1:
        # The extra children are the output clauses: INTO OUTFILE, FORMAT, SETTINGS.
        raise QueryRefusedError("INTO OUTFILE, FORMAT and SETTINGS clauses are not allowed")
    if node.kind == "Function":
        if node.parent is not None and node.parent.kind == "TableExpression":
            _check_table_function(node.name, allowlist)
        elif not allowlist.allows_function(node.name):
            raise QueryRefusedError(f"function {node.name} is not allowed")
    elif node.kind == "TableIdentifier":
        _check_table(node.name, allowlist)
    elif node.kind == "Identifier" and node.name.startswith(f"{SYSTEM}."):
        # `x IN system.settings` names a table without a TableIdentifier.
        _check_table(node.name, allowlist)


def _check_table_function(name: str, allowlist: Allowlist) -> None:
    database, dot, _ = name.partition(".")
    if dot and database != SYSTEM and database in allowlist.databases:
        return  # a parameterized view, such as coalmine.version_summary(...)
    if not dot and name in allowlist.table_functions:
        return
    raise QueryRefusedError(f"table function {name} is not allowed")


def _check_table(name: str, allowlist: Allowlist) -> None:
    database, dot, table = name.partition(".")
    if not dot:
        return  # the session's database, or a name the query defines (WITH t AS ...)
    if database == SYSTEM:
        if table.partition(".")[0] not in allowlist.system_tables:
            raise QueryRefusedError(f"system table {table} is not allowed")
    elif database not in allowlist.databases:
        raise QueryRefusedError(f"database {database} is not allowed")
