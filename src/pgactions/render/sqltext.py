"""SQL text: which ``$n`` placeholders a statement uses, and templates turned into bound parameters.

Both use PostgreSQL's own lexer (via pglast), so ``$1`` inside a string literal, an ``E''`` string,
a dollar-quoted body, a quoted identifier or a comment is never taken for a placeholder.

Templates in SQL text never become SQL text:
- ``{{ expr }}`` outside quotes becomes the next ``$n``, bound with the expression's value;
- a plain ``'...{{ expr }}...'`` literal becomes one ``$n`` bound with the rendered text (the quotes
  are absorbed, so ``WHERE email = '{{trigger.email}}'`` is safe whatever the e-mail holds);
- ``{{ name | identifier }}`` is the one way to put text into the statement: a quoted identifier;
- ``{% %}`` blocks and templates in other quoted forms are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pglast
from jinja2 import TemplateSyntaxError
from pglast import parser as pg_parser

from pgactions.render.templating import ENV, SQLIdentifier, render_expression, render_value
from pgactions.spec.errors import ActionError

__all__ = ["SqlPlan", "StatementInfo", "analyse", "bind_sql", "check_placeholders", "check_runnable",
           "check_statement_kind", "plain_statement", "statement_info"]


@dataclass(frozen=True)
class _Piece:
    kind: str  # "text" | "expr" | "literal"
    text: str  # SQL text, expression body, or literal template content


@dataclass(frozen=True)
class SqlPlan:
    pieces: tuple[_Piece, ...]
    placeholders: frozenset[int]  # the $n the user's own SQL uses
    has_templates: bool
    touches_session: bool  # SET / RESET / DISCARD / set_config(): may change session settings


@lru_cache(maxsize=512)
def analyse(sql: str) -> SqlPlan:
    try:
        tokens = pg_parser.scan(sql)
    except Exception as exc:  # pglast raises its own ParseError for unterminated quotes etc.
        raise ActionError("SYNTAX_ERROR", f"the SQL could not be read: {exc}") from None
    pieces: list[_Piece] = []
    placeholders: set[int] = set()
    cursor = 0  # the next character of *sql* not yet copied into pieces
    skip_until = -1
    has_templates = False
    significant = [t for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    touches_session = bool(significant) and significant[0].name in ("SET", "RESET", "DISCARD") or any(
        t.name == "IDENT" and sql[t.start:t.end + 1].lower() == "set_config" for t in tokens)
    for tok in tokens:
        if tok.start < skip_until:
            continue
        text = sql[tok.start:tok.end + 1]
        if tok.name == "PARAM":
            placeholders.add(int(text[1:]))
        elif tok.name == "SCONST" and _holds_template(text):
            if not text.startswith("'"):
                raise ActionError(
                    "TEMPLATE_ERROR",
                    f"templates are only allowed in plain '...' strings, not in {text[:12]!r}…; "
                    "bind the value with $n or a bare {{ }} instead")
            pieces.append(_Piece("text", sql[cursor:tok.start]))
            pieces.append(_Piece("literal", text[1:-1].replace("''", "'")))
            cursor = tok.end + 1
            has_templates = True
        elif tok.name == "IDENT" and text.startswith('"') and _holds_template(text):
            raise ActionError("TEMPLATE_ERROR", "a template inside a quoted identifier is not allowed: "
                                                "use {{ name | identifier }} instead")
        elif tok.name == "UNKNOWN" and text == "{":
            nxt = sql[tok.end + 1:tok.end + 2]
            if nxt == "%":
                raise ActionError("TEMPLATE_ERROR", "{% %} blocks are not allowed in SQL; use {{ }} values")
            if nxt == "{":
                close = sql.find("}}", tok.end + 2)
                if close < 0:
                    raise ActionError("TEMPLATE_ERROR", "a {{ in the SQL is never closed with }}")
                pieces.append(_Piece("text", sql[cursor:tok.start]))
                pieces.append(_Piece("expr", sql[tok.end + 2:close]))
                cursor = close + 2
                skip_until = cursor
                has_templates = True
    pieces.append(_Piece("text", sql[cursor:]))
    return SqlPlan(tuple(p for p in pieces if p.kind != "text" or p.text), frozenset(placeholders),
                   has_templates, touches_session)


_TEMPLATE_START = re.compile(r"\{\{-?\s*[A-Za-z_]")


def _holds_template(quoted: str) -> bool:
    """Whether a quoted token holds a {{ template }}, not just braces.

    '{{1,2},{3,4}}' is a two-dimensional array literal and '{"a": {"b": 1}}' JSON: a template
    starts with a name ({{ trigger.x }}) and is valid Jinja.
    """
    if "{{" not in quoted or not _TEMPLATE_START.search(quoted):
        return False
    try:
        ENV.parse(quoted)
    except TemplateSyntaxError:
        return False
    return True


def bind_sql(sql: str, parameters: list[Any], context: dict[str, Any]) -> tuple[str, list[Any]]:
    """Turn the SQL's templates into ``$n`` placeholders bound with their values; return the SQL
    and every value (*parameters*, already rendered, first).

    Checks that the placeholders the SQL uses are exactly ``$1..$len(parameters)``.
    """
    plan = analyse(sql)
    values = list(parameters)
    check_placeholders(plan.placeholders, len(values))
    if not plan.has_templates:
        return sql, values
    if "standard_conforming_strings" in sql.lower():
        # Our lexer reads strings as the server does with the setting on (pinned for every
        # action); a text that changes it could make the two disagree on where a string ends.
        raise ActionError("INVALID_INPUT", "SQL with {{ templates }} may not change standard_conforming_strings",
                          extra={"field": "query"})
    out: list[str] = []
    for piece in plan.pieces:
        if piece.kind == "text":
            out.append(piece.text)
            continue
        if piece.kind == "literal":
            value: Any = render_value(piece.text, context)
            value = value if isinstance(value, str) else str(value)
        else:
            value = render_expression(piece.text, context)
            if isinstance(value, SQLIdentifier):
                out.append(value)
                continue
        values.append(value)
        out.append(f"${len(values)}")
    return "".join(out), values


def check_placeholders(used: frozenset[int], given: int) -> None:
    """Refuse placeholders that are not exactly ``$1..$given``."""
    if len(used) == given and (not given or max(used) == given):
        return  # exactly $1..$given: the common case, checked without building sets
    if 0 in used:
        raise ActionError("INVALID_INPUT", "$0 is not a placeholder: they are numbered from $1",
                          extra={"field": "query"})
    missing = sorted(n for n in used if n > given)
    unused = sorted(set(range(1, given + 1)) - used)
    if missing:
        names = ", ".join(f"${n}" for n in missing)
        raise ActionError("INVALID_INPUT", f"the query uses {names} but only {given} parameter(s) were given",
                          extra={"field": "parameters"})
    if unused:
        names = ", ".join(f"${n}" for n in unused)
        raise ActionError("INVALID_INPUT", f"parameter(s) {names} were given but the query does not use them",
                          extra={"field": "parameters"})


_ROW_STATEMENTS = ("SelectStmt", "ExplainStmt", "VariableShowStmt", "FetchStmt")
_RETURNING_STATEMENTS = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")


@dataclass(frozen=True)
class StatementInfo:
    count: int  # statements in the text (0 when empty, or when PostgreSQL's parser rejects it)
    returns_rows: bool  # a single statement that yields rows (SELECT, … RETURNING)
    parsed: bool = True  # False: the parser rejected the text (the server will say where)
    transaction_control: str | None = None  # the first BEGIN / COMMIT / ROLLBACK … in the text
    # Statements after which the session is unlike any other: they are not undone by our reset
    # (a PREPAREd statement's name would clash next time), so the connection is not reused.
    leaves_session_unusual: bool = False
    # False only for a plain SELECT / SHOW that calls no function outside SAFE_FUNCTIONS: such a
    # statement cannot change the session, so no reset is needed after it (see docs/security.md
    # for what remains: a view or row-level policy that calls such a function).
    may_change_session: bool = True

    @property
    def empty(self) -> bool:
        return self.parsed and self.count == 0


_TRANSACTION_WORDS = {
    "TRANS_STMT_BEGIN": "BEGIN", "TRANS_STMT_START": "START TRANSACTION", "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK", "TRANS_STMT_SAVEPOINT": "SAVEPOINT", "TRANS_STMT_RELEASE": "RELEASE SAVEPOINT",
    "TRANS_STMT_ROLLBACK_TO": "ROLLBACK TO SAVEPOINT", "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED", "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}


@lru_cache(maxsize=512)
def statement_info(sql: str) -> StatementInfo:
    """What PostgreSQL's own parser says of *sql*.  Unparseable SQL: the server reports why."""
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return StatementInfo(0, False, parsed=False)
    control = None
    unusual = False
    for raw in statements:
        kind = type(raw.stmt).__name__
        if kind == "TransactionStmt" and control is None:
            node_kind: Any = getattr(raw.stmt, "kind", None)
            control = _TRANSACTION_WORDS.get(getattr(node_kind, "name", str(node_kind)), "transaction control")
        unusual = unusual or kind in ("PrepareStmt", "DeallocateStmt")
    if len(statements) != 1:
        return StatementInfo(len(statements), False, transaction_control=control, leaves_session_unusual=unusual)
    node = statements[0].stmt
    kind = type(node).__name__
    rows = kind in _ROW_STATEMENTS or (kind in _RETURNING_STATEMENTS and bool(getattr(node, "returningList", None)))
    return StatementInfo(1, rows, transaction_control=control, leaves_session_unusual=unusual,
                         may_change_session=not _harmless(node))


# Built-in functions that read or compute and never touch session state (settings, roles, locks,
# cursors, prepared statements, LISTEN).  Anything else (set_config, pg_advisory_lock, any
# function of the database's own) may: the session is reset after the action.
SAFE_FUNCTIONS = frozenset("""
count sum avg min max array_agg string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg bool_and bool_or
every stddev variance percentile_cont percentile_disc mode rank dense_rank row_number ntile lag lead first_value
last_value nth_value cume_dist percent_rank
lower upper initcap length char_length octet_length bit_length trim btrim ltrim rtrim lpad rpad substr substring
replace translate concat concat_ws left right reverse repeat position strpos split_part starts_with format md5
sha256 encode decode to_hex ascii chr quote_ident quote_literal quote_nullable regexp_replace regexp_match
regexp_matches regexp_split_to_array regexp_split_to_table regexp_like
abs ceil ceiling floor round trunc sign sqrt cbrt power exp ln log mod div greatest least random width_bucket pi
now current_timestamp clock_timestamp statement_timestamp transaction_timestamp timeofday date_trunc date_part
extract age make_date make_time make_timestamp make_timestamptz make_interval to_char to_date to_timestamp
to_number date_bin justify_days justify_hours justify_interval isfinite
to_json to_jsonb row_to_json array_to_json json_build_object jsonb_build_object json_build_array
jsonb_build_array json_object jsonb_object jsonb_set jsonb_insert jsonb_strip_nulls jsonb_pretty
json_array_length jsonb_array_length json_array_elements jsonb_array_elements json_array_elements_text
jsonb_array_elements_text json_each jsonb_each json_each_text jsonb_each_text json_object_keys
jsonb_object_keys json_extract_path jsonb_extract_path json_extract_path_text jsonb_extract_path_text
json_typeof jsonb_typeof jsonb_path_query jsonb_path_query_array jsonb_path_query_first jsonb_path_exists
jsonb_path_match
array_length array_lower array_upper array_position array_positions array_remove array_replace array_append
array_prepend array_cat array_to_string string_to_array cardinality unnest generate_series generate_subscripts
gen_random_uuid uuid_generate_v4 coalesce nullif num_nonnulls num_nulls
""".split())


def _harmless(node: Any) -> bool:
    """Whether a parsed statement is a plain read that calls only SAFE_FUNCTIONS."""
    kind = type(node).__name__
    if kind == "VariableShowStmt":
        return True
    if kind != "SelectStmt" or getattr(node, "intoClause", None) is not None:
        return False
    return _only_safe_calls(node(skip_none=True))


def _only_safe_calls(tree: Any) -> bool:
    if isinstance(tree, dict):
        if tree.get("@") == "FuncCall":
            name = [part.get("sval") for part in tree.get("funcname", [])]
            if not (len(name) == 1 or (len(name) == 2 and name[0] == "pg_catalog")) or name[-1] not in SAFE_FUNCTIONS:
                return False
        return all(_only_safe_calls(value) for value in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(_only_safe_calls(value) for value in tree)
    return True


def check_runnable(sql: str) -> StatementInfo:
    """Refuse what no action may run: an empty query, and transaction control (BEGIN, COMMIT,
    ROLLBACK … in any spelling): the runtime decides where a transaction ends, after the output
    is complete, so that an action that answers with an error has changed nothing."""
    info = statement_info(sql)
    if info.empty:
        raise ActionError("INVALID_INPUT", "the query is empty (or only comments)", extra={"field": "query"})
    if info.transaction_control:
        raise ActionError("INVALID_INPUT", f"the query holds {info.transaction_control}: transaction control is "
                                           "not allowed in an action (each action is one transaction, committed "
                                           "when it succeeds; use Run Transaction to group actions)",
                          extra={"field": "query"})
    return info


_KIND_NODES = {"read": ("SelectStmt", "ExplainStmt", "VariableShowStmt"), "update": ("UpdateStmt",),
               "delete": ("DeleteStmt",)}
_KIND_WORDS = {"read": "a query that reads (SELECT, VALUES, EXPLAIN, SHOW)", "update": "an UPDATE statement",
               "delete": "a DELETE statement"}
_KIND_ACTIONS = {"read": "Query Rows", "update": "Update Rows", "delete": "Delete Rows"}


def check_statement_kind(sql: str, kind: str) -> None:
    """Refuse anything but one statement of *kind* ("read", "update", "delete"), using PostgreSQL's
    own parser.  Text it cannot parse is left to the server, which says where it breaks."""
    problem = _statement_kind_problem(sql, kind)
    if problem:
        raise ActionError("INVALID_INPUT", problem, extra={"field": "query"})


@lru_cache(maxsize=512)  # a flow runs the same query again and again: parse it once
def _statement_kind_problem(sql: str, kind: str) -> str | None:
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return None
    if len(statements) > 1:
        return (f"the query holds {len(statements)} statements; {_KIND_ACTIONS[kind]} "
                "runs one (use Execute Query for scripts)")
    if not statements:
        return None
    node = statements[0].stmt
    found = type(node).__name__
    writes_in_with = kind == "read" and any(
        type(cte.ctequery).__name__ != "SelectStmt" for cte in (getattr(getattr(node, "withClause", None), "ctes", None) or ()))
    locks = kind == "read" and bool(getattr(node, "lockingClause", None))
    if found not in _KIND_NODES[kind] or writes_in_with or locks:
        what = "a data-modifying WITH" if writes_in_with else "SELECT … FOR UPDATE/SHARE" if locks else \
            found.removesuffix("Stmt").upper()
        return (f"{_KIND_ACTIONS[kind]} runs {_KIND_WORDS[kind]}; this query is {what}. "
                f"Use the action made for it (Execute Query runs anything)")
    return None


@lru_cache(maxsize=512)
def plain_statement(sql: str, kind: str | None) -> tuple[SqlPlan, StatementInfo] | None:
    """What every run of a text without templates needs, found once per (SQL, statementKind): its
    plan (the placeholders it uses) and what the parser says of it, when it passes the checks that
    do not depend on the values (:func:`check_statement_kind` for *kind*, :func:`check_runnable`).
    None otherwise: a text with templates, or one to refuse (the full path then says why, in the
    usual order).  Raises what :func:`analyse` raises."""
    plan = analyse(sql)
    if plan.has_templates or (kind and _statement_kind_problem(sql, kind)):
        return None
    info = statement_info(sql)
    if info.empty or info.transaction_control:
        return None
    return plan, info
