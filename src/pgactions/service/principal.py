"""Who is calling, and what they may do: the result of authentication, read by every route."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ANONYMOUS", "Principal", "SQL_ACTIONS"]

# Actions that run SQL the caller writes: refused to a principal with pinned context values unless
# it may run SQL (free SQL could read or rewrite the pinned settings).
# call_function too: a function such as query_to_xml(text, …) runs whatever SQL it is given.
SQL_ACTIONS = frozenset({"query_rows", "execute_query", "run_transaction", "create_function", "delete_function",
                         "call_function"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``actions`` / ``connections``: the action ids and stored connection ids it may use (None: all).
    ``read_only``: it may run read-only actions only.  ``pinned``: context values bound from the key
    or from verified token claims — templates see them as ``{{ auth.<name> }}`` and the database as
    ``nullif(current_setting('pgactions.auth', true), '')::jsonb``; a caller cannot override them.  ``role``:
    the database role the action runs as (SET LOCAL ROLE), from a token's role claim.
    ``allow_sql``: with pinned values, whether free-SQL actions are still allowed.
    """

    name: str
    kind: str  # "key", "jwt" or "anonymous" (--no-auth)
    actions: frozenset[str] | None = None
    connections: frozenset[str] | None = None
    read_only: bool = False
    pinned: dict[str, Any] = field(default_factory=dict)
    allow_sql: bool = False
    role: str | None = None
    # Which credential exactly (an API key's hash, a token's issuer): a new key reusing a revoked
    # key's name is another caller (idempotency records are scoped by it).
    credential: str = ""

    def may_run(self, action_id: str) -> bool:
        return self.actions is None or action_id in self.actions

    def may_use(self, connection_id: str | None) -> bool:
        """A stored connection in scope; a connection given inline is allowed only to an unscoped caller."""
        if self.connections is None:
            return True
        return connection_id is not None and connection_id in self.connections

    def sql_refused(self, action_id: str) -> bool:
        return bool(self.pinned) and not self.allow_sql and action_id in SQL_ACTIONS


ANONYMOUS = Principal(name="anonymous", kind="anonymous")
