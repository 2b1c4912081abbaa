"""Friendly errors: one catalogue of codes, and the one place driver failures become them.

Every failure a user can see is an :class:`ActionError` carrying an error object
``{"code", "message", "cause", "fix", "retryable", "sqlstate"?, "detail"?, "position"?}``.
Server errors are mapped by SQLSTATE (exact code first, then its two-letter class), never by
message text.  Failures while *connecting* carry no SQLSTATE in psycopg, so those are diagnosed
in :mod:`pgactions.connection.diagnosis`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ERROR_CATALOG", "SQLSTATE_CODES", "SQLSTATE_CLASSES", "ActionError", "ErrorSpec", "make_error"]


@dataclass(frozen=True)
class ErrorSpec:
    message: str
    cause: str
    fix: tuple[str, ...]
    retryable: bool = False
    # Server errors with these SQLSTATEs (exact), or of these two-letter classes, map to this code.
    sqlstates: tuple[str, ...] = ()
    sqlstate_classes: tuple[str, ...] = ()


# The contract: these codes, their plain-language cause and the fixes a user can try.
# docs/errors.md is generated from this table (python -m pgactions.devtools.docgen).
ERROR_CATALOG: dict[str, ErrorSpec] = {
    "CONNECTION_REFUSED": ErrorSpec(
        "Connection refused: nothing is accepting connections at that host and port.",
        "The database server cannot be reached: it is not running, listens on another port, "
        "or a firewall blocks the connection.",
        ("Check the host and port are correct (PostgreSQL's default port is 5432).",
         "Check the database server is running.",
         "Check the network path and firewall rules allow connections to that port.",
         "If the database only allows listed IP addresses, add this platform's address."),
        retryable=True,
        sqlstates=("57P03",)),
    "HOST_NOT_FOUND": ErrorSpec(
        "The database host name could not be found.",
        "DNS could not resolve the host name given in the connection.",
        ("Check the host name for typing mistakes.",
         "Use the server's IP address if its name is only known inside a private network.",
         "Check that this platform can resolve the name (VPN, private DNS)."),
        retryable=True),
    "CONNECTION_TIMEOUT": ErrorSpec(
        "Timed out while connecting to the database.",
        "The host did not answer within the connect timeout: a firewall may be silently dropping "
        "packets, or the server is overloaded.",
        ("Check the host and port are correct.",
         "Check firewall rules and IP allow-lists let this platform through.",
         "Raise connectTimeout if the server is far away or busy."),
        retryable=True),
    "AUTHENTICATION_FAILED": ErrorSpec(
        "Authentication failed: the server did not accept these credentials.",
        "The username or password is wrong, the user may not log in, or the server's "
        "pg_hba.conf does not allow this user from this address.",
        ("Check the username is correct.",
         "Check the password is correct (re-enter it: passwords are never shown).",
         "Check the user has the LOGIN privilege and is not locked or expired.",
         "Check the database name is correct.",
         "If the server asks for certificate authentication, fill sslCert and sslKey with the client "
         "certificate and key issued for this user.",
         "Ask the administrator whether pg_hba.conf allows this user from this address."),
        sqlstates=("28P01",), sqlstate_classes=("28",)),
    "DATABASE_NOT_FOUND": ErrorSpec(
        "The database does not exist on this server.",
        "The database name in the connection does not match any database on the server.",
        ("Check the database name for typing mistakes (names are case-sensitive).",
         "List the server's databases with \\l in psql, or ask the administrator."),
        sqlstates=("3D000",)),
    "SSL_REQUIRED": ErrorSpec(
        "The server requires an SSL connection.",
        "The database only accepts encrypted connections but the connection has SSL disabled.",
        ("Change SSL Mode to \"require\" (or verify-full with the server's CA certificate).",
         "Save the connection and test it again.")),
    "SSL_FAILED": ErrorSpec(
        "The secure (SSL) connection could not be established.",
        "The server's certificate could not be verified (unknown CA, wrong host name, expired), "
        "or the server does not support SSL.",
        ("With verify-ca or verify-full, provide the CA certificate that signed the server's certificate.",
         "With verify-full, connect using the host name written in the server's certificate.",
         "For a self-signed server certificate, give that certificate itself as the CA certificate.",
         "With a client certificate, check the private key belongs to it (and its pass phrase).",
         "If the server does not support SSL, use SSL Mode \"prefer\" or enable SSL on the server.")),
    "NOT_POSTGRESQL": ErrorSpec(
        "Something answers on that port, but it is not PostgreSQL.",
        "The host accepted the connection, but the program listening on that port does not speak "
        "PostgreSQL's protocol: a web server, SSH, another database, or a proxy, load balancer or "
        "tunnel that does not pass the connection on to PostgreSQL.",
        ("Check the port: PostgreSQL listens on 5432 unless configured otherwise (PgBouncer often on 6432).",
         "Check which service runs at that host and port, e.g. with the administrator or the hosting "
         "provider's connection settings.",
         "If a proxy, load balancer or tunnel sits in between, check it forwards plain TCP to the "
         "PostgreSQL server (not HTTP) and that its PostgreSQL server is up.")),
    "INVALID_CONNECTION": ErrorSpec(
        "The connection settings are not valid.",
        "A field of the connection, a part of its postgresql:// URL or a PG* environment variable "
        "has a value that cannot be used, or the profile file cannot be read; nothing was sent to "
        "the server.",
        ("Correct the field named in the detail (\"url: port\" is the port written in the URL, "
         "\"PGPORT\" the environment variable).",
         "Write the URL as postgresql://user:password@host:5432/database and percent-encode special "
         "characters of the user name and password (@ as %40, : as %3A, / as %2F, # as %23).",
         "Write an IPv6 address in brackets: postgresql://user@[2001:db8::1]:5432/database.",
         "A profile file must be readable UTF-8 text holding one YAML or JSON object of connection fields.")),
    "PERMISSION_DENIED": ErrorSpec(
        "Permission denied: the database user may not do this.",
        "The user lacks a privilege on the table, schema or function the statement uses.",
        ("Ask the administrator to grant the privilege, e.g. GRANT SELECT, INSERT ON table TO user.",
         "Check the user has USAGE on the schema.",
         "Use a connection whose user holds the needed rights."),
        sqlstates=("42501",)),
    "SYNTAX_ERROR": ErrorSpec(
        "The SQL statement is not valid.",
        "PostgreSQL could not parse or accept the statement.",
        ("Check the SQL near the reported position.",
         "Use $1, $2 … placeholders for values instead of building SQL text.",
         "Test the statement in a SQL console first."),
        sqlstates=("42601",), sqlstate_classes=("42",)),
    "UNDEFINED_TABLE": ErrorSpec(
        "The table or view does not exist.",
        "No table or view with that name is visible in the connection's schema search path.",
        ("Check the table name for typing mistakes (unquoted names are folded to lower case).",
         "Qualify the table with its schema (schema.table) or set the connection's schema.",
         "Check the user may see the schema (USAGE privilege)."),
        sqlstates=("3F000", "42P01")),
    "UNDEFINED_COLUMN": ErrorSpec(
        "A column does not exist.",
        "The statement names a column the table does not have.",
        ("Check the column name for typing mistakes (unquoted names are folded to lower case).",
         "Look at the table's columns and use one of them."),
        sqlstates=("42703",)),
    "TOO_MANY_CONNECTIONS": ErrorSpec(
        "The database has no free connection slots.",
        "The server's max_connections, or the user's connection limit, has been reached.",
        ("Lower maxConnections of this connection, or the pool sizes of other applications.",
         "Use a connection pooler such as PgBouncer.",
         "Ask the administrator to raise max_connections or the role's connection limit."),
        retryable=True,
        sqlstates=("53300",)),
    "QUERY_TIMEOUT": ErrorSpec(
        "The query took longer than the time limit and was cancelled.",
        "The statement ran past its timeout, or the server stopped answering.",
        ("Add indexes for the columns the query filters or joins on.",
         "Add a LIMIT or narrow the WHERE clause.",
         "Split the work into smaller batches.",
         "Raise the action's timeout if the host allows it."),
        retryable=True,
        sqlstates=("55P03", "57014")),
    "RESULT_TOO_LARGE": ErrorSpec(
        "The result is larger than the output size limit.",
        "The rows returned would exceed the maximum output size, so reading was stopped.",
        ("Add a LIMIT to the query.",
         "Select only the columns you need.",
         "Page through the data with LIMIT and OFFSET or a key range.")),
    "UNIQUE_VIOLATION": ErrorSpec(
        "A row with the same unique value already exists.",
        "The statement would create a duplicate in a unique column or primary key.",
        ("Use Upsert Row (insert or update) instead of Insert Row.",
         "Check whether the record already exists before inserting.",
         "Use a different value for the unique column."),
        sqlstates=("23505",)),
    "FOREIGN_KEY_VIOLATION": ErrorSpec(
        "The row refers to a record that does not exist (or is still referenced).",
        "A foreign key constraint failed: the referenced row is missing, or other rows still point "
        "to the row being deleted.",
        ("Create the referenced record first.",
         "Check the referenced id is correct.",
         "Delete or update the referencing rows first."),
        sqlstates=("23503",)),
    "NOT_NULL_VIOLATION": ErrorSpec(
        "A required column has no value.",
        "A column declared NOT NULL was given null or left out.",
        ("Provide a value for the column.",
         "Check the template that fills the column resolves to a value."),
        sqlstates=("23502",)),
    "CHECK_VIOLATION": ErrorSpec(
        "A value breaks one of the table's rules (check constraint).",
        "The row does not satisfy a CHECK constraint of the table.",
        ("Look at the constraint named in the detail and adjust the value.",),
        sqlstates=("23514",)),
    "INVALID_VALUE": ErrorSpec(
        "A value is not valid for its column or parameter type.",
        "PostgreSQL could not convert a value to the type it needs (a date, a number, a UUID …), "
        "or the value is out of range.",
        ("Check the value's format (dates as 2026-01-15 or ISO 8601, numbers without thousands separators).",
         "Add an explicit cast to the placeholder, e.g. $1::date.",
         "Check the value fits the column's length or range."),
        sqlstates=("42804", "42P18"), sqlstate_classes=("22", "23")),
    "DEADLOCK": ErrorSpec(
        "The statement was stopped because it deadlocked with another transaction.",
        "Two transactions waited on each other's locks; PostgreSQL cancelled this one.",
        ("Retry the action.",
         "Access tables and rows in the same order in every flow."),
        retryable=True,
        sqlstates=("40P01",)),
    "SERIALIZATION_FAILURE": ErrorSpec(
        "The transaction could not be completed because of concurrent changes.",
        "Another transaction changed the same data at the same time.",
        ("Retry the action.",),
        retryable=True,
        sqlstates=("40001",), sqlstate_classes=("40",)),
    "READ_ONLY_VIOLATION": ErrorSpec(
        "This action may only read data, but the statement tried to change something.",
        "Query Rows runs in a read-only transaction (or the server is a read-only standby).",
        ("Use Insert Row, Update Rows, Delete Rows or Execute Query for statements that change data.",
         "Connect to the primary server if this one is a standby."),
        sqlstates=("25006",)),
    "CONNECTION_LOST": ErrorSpec(
        "The connection to the database was lost.",
        "The server closed the connection (restart, fail-over, idle timeout) or the network dropped.",
        ("Retry the action.",
         "Check the server is running and the network is stable."),
        retryable=True,
        sqlstates=("57P01", "57P02"), sqlstate_classes=("08",)),
    "NOT_FOUND": ErrorSpec(
        "No row matched.",
        "The lookup expected exactly one row, and no row has these key values.",
        ("Check the key values (and their types) the step passes.",
         "Check the row exists, e.g. with Find Rows, and that this user may see it (row-level security).")),
    "MULTIPLE_ROWS": ErrorSpec(
        "More than one row matched.",
        "The lookup expected exactly one row, but its conditions match several.",
        ("Look the row up by its primary key or another unique key.",
         "Add conditions until only one row matches, or use Find Rows for several.")),
    "UNDEFINED_FUNCTION": ErrorSpec(
        "The function or procedure does not exist with these arguments.",
        "No function of that name takes arguments of these types (or it lies in another schema).",
        ("Check the name and schema (List Functions shows them).",
         "Check the number, names and types of the arguments; give argumentTypes to pick one of several."),
        sqlstates=("42883",)),
    "UNDEFINED_OBJECT": ErrorSpec(
        "Something the statement names does not exist.",
        "The statement refers to a constraint, type, index or other object the database does not have "
        "(or this user cannot see).",
        ("Check the name for typing mistakes (unquoted names are folded to lower case).",
         "Look the object up with Get Table Metadata (constraints, indexes) or in a SQL console."),
        sqlstates=("42704",)),
    "MAX_AFFECTED_ROWS": ErrorSpec(
        "The action would change more rows than allowed; nothing was changed.",
        "The statement matched more rows than the action's maxAffectedRows, so it was rolled back.",
        ("Check the conditions (WHERE) select only the rows you mean to change.",
         "Raise maxAffectedRows if that many rows should change.",
         "Use dryRun to see how many rows would change without changing them.")),
    "CANCELLED": ErrorSpec(
        "The action was cancelled.",
        "The flow engine (or the person running it) stopped the action before it finished; "
        "whatever it had changed was rolled back.",
        ("Run the action again if it is still needed.",),
        retryable=True),
    "INVALID_INPUT": ErrorSpec(
        "The action's input is not valid.",
        "A required field is missing, a value has the wrong type, or the parameters do not match "
        "the query's placeholders.",
        ("Correct the field named in the detail.",),
        sqlstates=("42P02", "42P10")),
    "TEMPLATE_ERROR": ErrorSpec(
        "A {{ template }} could not be rendered.",
        "The template refers to a value that does not exist in the flow data, or is not valid Jinja; "
        "or it was stopped for passing a limit on what a template may compute (the size of a value, "
        "the total it makes, the size of an integer, its time, or how deeply it nests or recurses).",
        ("Check the path (e.g. trigger.email) exists in the data of the trigger or earlier step.",
         "Use a default: {{ trigger.email | default('') }}.",
         "If the template was stopped (the error's limit field names the limit), make it compute less: "
         "build the big value in SQL or in an earlier step, or work on a smaller part of the data.")),
    "UNKNOWN_ACTION": ErrorSpec(
        "There is no action with this id.",
        "The action id is not one of the installed actions.",
        ("Use one of the ids listed in the detail (pgactions list).",)),
    "DATABASE_ERROR": ErrorSpec(
        "The database reported an error.",
        "PostgreSQL rejected the statement; the detail and SQLSTATE say why.",
        ("Read the detail from the server.",
         "Look the SQLSTATE up in PostgreSQL's error code table.")),
    # The service's own refusals (pgactions serve): the request never reached the database.
    "UNAUTHORIZED": ErrorSpec(
        "The request has no valid credentials.",
        "The service needs an API key or a signed token (Authorization: Bearer …); the one given is "
        "missing, unknown, revoked, expired, or its signature or audience does not match.",
        ("Send Authorization: Bearer <key> with a key made by pgactions keys create.",
         "If the key was revoked or has expired, ask for a new one.",
         "For a token, check its expiry (exp) and audience (aud).")),
    "FORBIDDEN": ErrorSpec(
        "These credentials may not do that.",
        "The API key or token is valid, but its scope does not cover this action or connection, "
        "or it is read-only and the request writes.",
        ("Use a key whose scope includes this action and connection (pgactions keys create --actions … "
         "--connections …).",
         "Ask the service's administrator to widen the key's scope.")),
    "UNKNOWN_CONNECTION": ErrorSpec(
        "There is no stored connection with this id.",
        "The connectionId does not name a connection saved in the service.",
        ("Check the id (GET /v1/connections lists them).",
         "Save the connection first with PUT /v1/connections/{id}.")),
    "REQUEST_TOO_LARGE": ErrorSpec(
        "The request body is too large.",
        "The body is larger than the service accepts (limits.bodyBytes, 20 MB by default).",
        ("Send fewer rows per request, or split the batch.",
         "Raise limits.bodyBytes in the service's configuration if larger bodies are expected.")),
    "REPLAY_UNAVAILABLE": ErrorSpec(
        "The first request with this Idempotency-Key ran, but its answer was too large to keep.",
        "Answers larger than limits.idempotentBytes (1 MB by default) are not stored for retries. The "
        "first request did its work once; a retry with the same key does not run it again.",
        ("Read the outcome with a query (query_rows, find_rows) instead of retrying.",
         "Ask for a smaller answer (fewer returned columns or rows), or raise limits.idempotentBytes.")),
    "REQUEST_TIMEOUT": ErrorSpec(
        "The request body did not arrive in time.",
        "The client sent the request's headers but not its whole body within limits.bodySeconds "
        "(30 s by default): a stalled connection or a very slow network.",
        ("Send the request again; check the network between the client and the service.",
         "Raise limits.bodySeconds in the service's configuration for very large bodies on slow links."),
        retryable=True),
    "RATE_LIMITED": ErrorSpec(
        "Too many requests are running on this connection; try again shortly.",
        "The service runs at most limits.perConnection actions at once on one connection and does not "
        "queue more; the Retry-After header says when to try again.",
        ("Retry after the number of seconds in the Retry-After header.",
         "Lower the flow's concurrency, or raise limits.perConnection (and the connection's maxConnections)."),
        retryable=True),
    "IDEMPOTENCY_KEY_REUSED": ErrorSpec(
        "This Idempotency-Key was already used for a different request.",
        "A request with the same Idempotency-Key but another body ran within the last 24 hours; the key "
        "identifies one request, so the new one was not run.",
        ("Use a new key for a new request; reuse a key only to retry the very same request.",)),
    "REQUEST_IN_PROGRESS": ErrorSpec(
        "A request with this Idempotency-Key is still running.",
        "The first request with this key has not finished yet, so its answer cannot be replayed; "
        "running it a second time could apply its change twice.",
        ("Retry after the number of seconds in the Retry-After header; the stored answer is returned then.",),
        retryable=True),
    "INTERNAL_ERROR": ErrorSpec(
        "Something went wrong inside pgactions.",
        "An unexpected failure in pgactions itself (a bug), not in the database or the request; "
        "the service's log has the details under the request id.",
        ("Try again; if it happens again, report it with the X-Request-Id of the response.",)),
}

# Lookup tables derived from the specs: exact SQLSTATE first, then its two-letter class.
SQLSTATE_CODES: dict[str, str] = {s: code for code, spec in ERROR_CATALOG.items() for s in spec.sqlstates}
SQLSTATE_CLASSES: dict[str, str] = {c: code for code, spec in ERROR_CATALOG.items() for c in spec.sqlstate_classes}


class ActionError(Exception):
    """A failure shown to the user: ``error.payload`` is the JSON error object."""

    def __init__(self, code: str, detail: str | None = None, *, message: str | None = None,
                 sqlstate: str | None = None, position: int | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        if code not in ERROR_CATALOG:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.payload = make_error(code, detail, message=message, sqlstate=sqlstate,
                                  position=position, extra=extra)
        super().__init__(self.payload["message"])

    @property
    def retryable(self) -> bool:
        return bool(self.payload["retryable"])

    def one_line(self) -> str:
        detail = self.payload.get("detail")
        return f"{self.code}: {self.payload['message']}" + (f" ({detail})" if detail else "")

    def __repr__(self) -> str:
        return f"ActionError({self.code!r}, {self.payload.get('detail')!r})"


def make_error(code: str, detail: str | None = None, *, message: str | None = None,
               sqlstate: str | None = None, position: int | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = ERROR_CATALOG[code]
    payload: dict[str, Any] = {
        "code": code,
        "message": message or spec.message,
        "cause": spec.cause,
        "fix": list(spec.fix),
        "retryable": spec.retryable,
    }
    if sqlstate:
        payload["sqlstate"] = sqlstate
    if detail:
        payload["detail"] = detail
    if position is not None:
        payload["position"] = position
    if extra:
        payload.update(extra)
    return payload
