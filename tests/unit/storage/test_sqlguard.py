"""The policy of `coalmine sql` over ClickHouse's own parse (EXPLAIN AST text, recorded from
chDB 26.9; tests/integration/test_sql_page.py runs the same queries through the live parser)."""

from __future__ import annotations

import re

import pytest

from streams.storage import sqlguard
from streams.storage.sqlguard import QueryRefusedError, check_ast, check_length, parse_allowlist

ALLOWLIST = sqlguard.default_allowlist()

RECORDED = {
    "file_function": (
        "SELECT file('/etc/passwd')",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function file (children 1)
     ExpressionList (children 1)
      Literal \'/etc/passwd\'
""",
    ),
    "file_table_function": (
        "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function file (children 1)
       ExpressionList (children 2)
        Literal \'/proc/self/environ\'
        Literal \'LineAsString\'
""",
    ),
    "drop": (
        "DROP TABLE IF EXISTS default.nope",
        """\
DropQuery default nope (children 2)
 Identifier default
 Identifier nope
""",
    ),
    "into_outfile": (
        "SELECT 1 INTO OUTFILE '/tmp/x'",
        """\
SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Literal UInt64_1
 Literal \'/tmp/x\'
""",
    ),
    "format": (
        "SELECT 1 FORMAT CSV",
        """\
SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Literal UInt64_1
 Identifier CSV
""",
    ),
    "settings": (
        "SELECT 1 SETTINGS max_threads = 8",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Literal UInt64_1
   Set
""",
    ),
    "nested_settings": (
        "SELECT * FROM (SELECT 1 SETTINGS max_threads = 8)",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Subquery (children 1)
       SelectWithUnionQuery (children 1)
        ExpressionList (children 1)
         SelectQuery (children 2)
          ExpressionList (children 1)
           Literal UInt64_1
          Set
""",
    ),
    "apply": (
        "SELECT * APPLY(file) FROM (SELECT '/etc/passwd')",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk (children 1)
     ColumnsTransformerList (children 1)
      ColumnsApplyTransformer
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Subquery (children 1)
       SelectWithUnionQuery (children 1)
        ExpressionList (children 1)
         SelectQuery (children 1)
          ExpressionList (children 1)
           Literal \'/etc/passwd\'
""",
    ),
    "system_settings": (
        "SELECT * FROM system.settings",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      TableIdentifier system.settings
""",
    ),
    "in_system_users": (
        "SELECT 1 IN system.users",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function in (children 1)
     ExpressionList (children 2)
      Literal UInt64_1
      Identifier system.users
""",
    ),
    "remote": (
        "SELECT * FROM remote('10.0.0.1', system.one)",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function remote (children 1)
       ExpressionList (children 2)
        Literal \'10.0.0.1\'
        Identifier system.one
""",
    ),
    "explain": (
        "EXPLAIN SELECT 1",
        """\
Explain EXPLAIN (children 1)
 SelectWithUnionQuery (children 1)
  ExpressionList (children 1)
   SelectQuery (children 1)
    ExpressionList (children 1)
     Literal UInt64_1
""",
    ),
    "legit": (
        "SELECT COUNT(DISTINCT agent), sumForEachMerge(b), quantileIf(0.5)(d, k = 'x'), x -> x "
        "FROM coalmine.version_summary(since = now() - INTERVAL 1 HOUR, until = now()) AS s "
        "JOIN system.tables AS t ON 1 WHERE name IN (SELECT name FROM system.columns)",
        """\
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 3)
   ExpressionList (children 4)
    Function COUNTDistinct (children 1)
     ExpressionList (children 1)
      Identifier agent
    Function sumForEachMerge (children 1)
     ExpressionList (children 1)
      Identifier b
    Function quantileIf (children 2)
     ExpressionList (children 2)
      Identifier d
      Function equals (children 1)
       ExpressionList (children 2)
        Identifier k
        Literal \'x\'
     ExpressionList (children 1)
      Literal Float64_0.5
    Function lambda (children 1)
     ExpressionList (children 2)
      Function tuple (children 1)
       ExpressionList (children 1)
        Identifier x
      Identifier x
   TablesInSelectQuery (children 2)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function coalmine.version_summary (alias s) (children 1)
       ExpressionList (children 2)
        Function equals (children 1)
         ExpressionList (children 2)
          Identifier since
          Function minus (children 1)
           ExpressionList (children 2)
            Function now (children 1)
             ExpressionList
            Function toIntervalHour (children 1)
             ExpressionList (children 1)
              Literal UInt64_1
        Function equals (children 1)
         ExpressionList (children 2)
          Identifier until
          Function now (children 1)
           ExpressionList
    TablesInSelectQueryElement (children 2)
     TableExpression (children 1)
      TableIdentifier system.tables (alias t)
     TableJoin (children 1)
      Literal UInt64_1
   Function in (children 1)
    ExpressionList (children 2)
     Identifier name
     Subquery (children 1)
      SelectWithUnionQuery (children 1)
       ExpressionList (children 1)
        SelectQuery (children 2)
         ExpressionList (children 1)
          Identifier name
         TablesInSelectQuery (children 1)
          TablesInSelectQueryElement (children 1)
           TableExpression (children 1)
            TableIdentifier system.columns
""",
    ),
    "describe": (
        "DESCRIBE TABLE coalmine.spans",
        """\
DescribeQuery (children 1)
 TableExpression (children 1)
  TableIdentifier coalmine.spans
""",
    ),
}

REFUSED = {
    "file_function": "function file is not allowed",
    "file_table_function": "table function file is not allowed",
    "drop": "only SELECT and DESCRIBE queries are allowed (this is a DropQuery)",
    "into_outfile": "INTO OUTFILE, FORMAT and SETTINGS clauses are not allowed",
    "format": "INTO OUTFILE, FORMAT and SETTINGS clauses are not allowed",
    "settings": "SETTINGS clauses are not allowed",
    "nested_settings": "SETTINGS clauses are not allowed",
    "apply": "APPLY is not allowed",
    "system_settings": "system table settings is not allowed",
    "in_system_users": "system table users is not allowed",
    "remote": "table function remote is not allowed",
    "explain": "only SELECT and DESCRIBE queries are allowed (this is a Explain)",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_attacks_are_refused_saying_why(name: str) -> None:
    with pytest.raises(QueryRefusedError, match=re.escape(REFUSED[name])):
        check_ast(RECORDED[name][1], ALLOWLIST)


@pytest.mark.parametrize("name", ["legit", "describe"])
def test_reads_of_the_database_pass(name: str) -> None:
    """COUNT(DISTINCT) in any case, combinators, a lambda, a parameterized view of
    coalmine, system.tables and system.columns, a subquery, DESCRIBE."""
    check_ast(RECORDED[name][1], ALLOWLIST)


def tree(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def select_of(*expression: str, depth: int = 4) -> str:
    """A SELECT of one expression; ``expression`` lines are indented from ``depth``."""
    return tree(
        "SelectWithUnionQuery (children 1)",
        " ExpressionList (children 1)",
        "  SelectQuery (children 1)",
        "   ExpressionList (children 1)",
        *(" " * depth + line for line in expression),
    )


@pytest.mark.parametrize(
    "function",
    [
        "getSetting",
        "getServerSetting",
        "currentUser",
        "hostName",
        "dictGet",
        "joinGet",
        "hasColumnInTable",
        "sleep",
        "filesystemAvailable",
        "showCertificate",
        "arrayReduce",
        "catboostEvaluate",
        "aiGenerate",
        "logTrace",
        "FILE",
        "fileIf",
        "lowerIf",
        "uniqIff",
    ],
)
def test_functions_outside_the_query_are_refused(function: str) -> None:
    with pytest.raises(QueryRefusedError, match=f"function {function} is not allowed"):
        check_ast(select_of(f"Function {function} (children 1)", " ExpressionList"), ALLOWLIST)


@pytest.mark.parametrize(
    "function",
    [
        "count",
        "COUNT",
        "Sum",
        "sumIf",
        "COUNTDistinct",
        "sumForEachMerge",
        "quantilesTDigestState",
        "argMaxIf",
        "if",
        "multiIf",
        "toStartOfInterval",
        "JSONExtractString",
        "lambda",
        "coalmine_latency_quantile_ms",
        "formatReadableSize",
        "version",
    ],
)
def test_computing_functions_pass(function: str) -> None:
    check_ast(select_of(f"Function {function} (children 1)", " ExpressionList"), ALLOWLIST)


def test_case_matters_for_functions_clickhouse_matches_exactly() -> None:
    check_ast(select_of("Function toDate (children 1)", " ExpressionList"), ALLOWLIST)
    with pytest.raises(QueryRefusedError, match="function TODATE is not allowed"):
        check_ast(select_of("Function TODATE (children 1)", " ExpressionList"), ALLOWLIST)


def from_table(*table: str) -> str:
    return tree(
        "SelectWithUnionQuery (children 1)",
        " ExpressionList (children 1)",
        "  SelectQuery (children 2)",
        "   ExpressionList (children 1)",
        "    Asterisk",
        "   TablesInSelectQuery (children 1)",
        "    TablesInSelectQueryElement (children 1)",
        "     TableExpression (children 1)",
        *("      " + line for line in table),
    )


@pytest.mark.parametrize(
    "table",
    [
        "TableIdentifier coalmine.spans",
        "TableIdentifier spans (alias s)",
        "TableIdentifier default.x",
        "TableIdentifier system.tables",
        "TableIdentifier system.one",
        "TableIdentifier INFORMATION_SCHEMA.TABLES",
        "Function numbers (children 1)",
        "Function coalmine.version_summary_hourly (children 1)",
    ],
)
def test_the_database_own_tables_and_generators_pass(table: str) -> None:
    check_ast(from_table(table), ALLOWLIST)


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ("TableIdentifier system.settings", "system table settings"),
        ("TableIdentifier system.users (alias u)", "system table users"),
        ("TableIdentifier system.named_collections", "system table named_collections"),
        ("TableIdentifier system.processes", "system table processes"),
        ("TableIdentifier secrets.passwords", "database secrets"),
        ("TableIdentifier SYSTEM.settings", "database SYSTEM"),
        ("Function url (children 1)", "table function url"),
        ("Function s3 (children 1)", "table function s3"),
        ("Function executable (children 1)", "table function executable"),
        ("Function mysql (children 1)", "table function mysql"),
        ("Function input (children 1)", "table function input"),
        ("Function merge (children 1)", "table function merge"),
        ("Function loop (children 1)", "table function loop"),
        ("Function dictionary (children 1)", "table function dictionary"),
        ("Function python (children 1)", "table function python"),
        ("Function filesystem (children 1)", "table function filesystem"),
        ("Function version_summary (children 1)", "table function version_summary"),
        ("Function system.settings (children 1)", "table function system.settings"),
    ],
)
def test_tables_outside_the_database_are_refused(table: str, reason: str) -> None:
    with pytest.raises(QueryRefusedError, match=re.escape(f"{reason} is not allowed")):
        check_ast(from_table(table), ALLOWLIST)


def test_a_compound_identifier_into_system_is_checked_as_a_table() -> None:
    check_ast(select_of("Identifier system.tables.name"), ALLOWLIST)
    check_ast(select_of("Identifier s.name"), ALLOWLIST)
    with pytest.raises(QueryRefusedError, match="system table settings"):
        check_ast(select_of("Identifier system.settings.value"), ALLOWLIST)


def test_a_describe_with_an_output_clause_is_refused() -> None:
    describe = tree(
        "DescribeQuery (children 2)",
        " TableExpression (children 1)",
        "  TableIdentifier coalmine.spans",
        " Literal '/tmp/out'",
    )
    with pytest.raises(QueryRefusedError, match="INTO OUTFILE"):
        check_ast(describe, ALLOWLIST)


def test_the_children_are_counted_not_read_from_the_text() -> None:
    """An alias can print ``(children 1)``; the shape comes from the indentation."""
    lying = tree(
        "SelectWithUnionQuery (children 1)",
        " ExpressionList (children 1)",
        "  SelectQuery (children 1)",
        "   ExpressionList (children 1)",
        "    Literal UInt64_1",
        " Literal '/tmp/out' (alias x (children 1))",
    )
    with pytest.raises(QueryRefusedError, match="INTO OUTFILE"):
        check_ast(lying, ALLOWLIST)


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "SelectWithUnionQuery\n   ExpressionList\n", "Literal 1\nLiteral 2\n"],
)
def test_an_unexpected_parse_is_refused(text: str) -> None:
    with pytest.raises(QueryRefusedError):
        check_ast(text, ALLOWLIST)


def test_the_length_is_checked_first_and_cheaply() -> None:
    check_length("SELECT 1", 20)
    with pytest.raises(QueryRefusedError, match="300,008 characters long"):
        check_length("SELECT 1" + " " * 300_000, 20_000)
    with pytest.raises(QueryRefusedError, match="empty"):
        check_length("  \n ", 20)


def test_the_allowlist_file_reads_sections_and_any_case_names() -> None:
    allowlist = parse_allowlist(
        "# comment\n[functions]\nabs* lower  # trailing\n[aggregate functions]\nsum*\n"
        "[aggregate function combinators]\nIf State\n[table functions]\nnumbers\n"
        "[databases]\ncoalmine\n[system tables]\none\n"
    )
    assert "ABS" in allowlist.functions and "lower" in allowlist.functions
    assert "LOWER" not in allowlist.functions
    assert allowlist.allows_function("SUMStateIf")
    assert not allowlist.allows_function("If")
    assert allowlist.combinators == ("If", "State")


@pytest.mark.parametrize("text", ["[nope]\nx\n", "abs\n[functions]\n"])
def test_a_malformed_allowlist_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_allowlist(text)


def test_every_sql_function_of_the_project_is_allowed() -> None:
    """A function a migration creates is callable from `coalmine sql` (0006's header says so)."""
    from streams.storage.clickhouse import load_migrations  # noqa: PLC0415

    created = {
        name
        for migration in load_migrations()
        for name in re.findall(r"CREATE FUNCTION IF NOT EXISTS (\w+)", migration.sql)
    }
    assert created
    assert {name for name in created if not ALLOWLIST.allows_function(name)} == set()
