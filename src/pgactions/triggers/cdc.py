"""Change data capture from PostgreSQL's logical replication (pgoutput), as a trigger source.

    source = open_cdc(profile, {"tables": ["public.orders"], "slot": "orders_cdc",
                                "publication": "orders_pub"}, checkpoint=None)
    batch = source.poll(5.0)          # decoded events and the checkpoint covering them
    deliver(batch.events)
    source.ack(batch.checkpoint)      # only now is the LSN confirmed to the server
    source.close()                    # the slot stays: drop_slot(profile, "orders_cdc") removes it

Two connections per source: a *replication* connection (``replication=database``) that streams
the slot with the streaming replication protocol — driven through psycopg 3's libpq binding
(``psycopg.pq``: COPY BOTH, ``get_copy_data``/``put_copy_data``), since psycopg 3 itself has no
replication API — and an ordinary one for set-up (publication, slot, checks), the optional
initial snapshot, type look-ups and the WAL-retention check.  docs/triggers-cdc.md says why this
client and not psycopg2 or ``pg_logical_slot_*_binary_changes`` (measured in bench/cdc.py).

Positions.  A transaction is streamed whole, in commit order, after it commits; the server skips,
on a restart, every transaction whose commit record lies before the slot's confirmed flush LSN.
A checkpoint is ``{"slot", "lsn"}`` — ``lsn`` the end of the last transaction whose events were
all handed out (or a later idle position) — plus, when a batch ends inside a big transaction,
``txn`` (its commit LSN), ``change`` (the LSN of the last change handed out) and ``n`` (its
index among changes sharing that LSN: a TRUNCATE of several tables).  ``ack`` confirms ``lsn`` to
the server; a source opened with a checkpoint skips what the checkpoint covers, so a consumer
that stores the checkpoint atomically with its effects sees every change exactly once.
"""

from __future__ import annotations

import logging
import re
import select
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import pq
from psycopg import sql as psql

from pgactions.connection.profiles import ConnectionProfile, load_profile
from pgactions.db.convert import register_loaders, register_user_arrays
from pgactions.db.errormap import map_exception
from pgactions.render.identifiers import quote_identifier
from pgactions.spec.errors import ActionError
from pgactions.triggers import pgoutput as po
from pgactions.triggers.base import Batch

__all__ = ["CdcSource", "drop_slot", "open_cdc"]

log = logging.getLogger("pgactions.triggers.cdc")

# What values are written like in the walsender, as in every session of ours (db/connect.py):
# the type output functions run there, so these make pgoutput's text equal to query results'.
_SESSION_SQL = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; "
                "SET extra_float_digits = 1")
_USER_ARRAY_TYPES_SQL = """
SELECT t.typname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END, t.typarray
FROM pg_type t
WHERE t.typtype IN ('e', 'd') AND t.typarray <> 0
  AND t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
"""
# A domain's values load as its base type, as in query results (the server sends the base type
# there).
_BASE_TYPES_SQL = """
WITH RECURSIVE d(oid, base) AS (
  SELECT oid, oid FROM pg_type WHERE oid = ANY(%s)
  UNION ALL
  SELECT d.oid, t.typbasetype FROM d JOIN pg_type t ON t.oid = d.base WHERE t.typtype = 'd')
SELECT d.oid, d.base FROM d JOIN pg_type t ON t.oid = d.base WHERE t.typtype <> 'd'
"""

_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
_KNOWN_INPUTS = {"tables", "allTables", "excludeTables", "columns", "excludeColumns", "slot", "publication",
                 "snapshot", "createSlot", "batchSize", "heartbeatInterval", "walWarningBytes"}
_FEEDBACK = struct.Struct("!cQQQqB")
_XLOG_HEAD = struct.Struct("!QQq")
_KEEPALIVE = struct.Struct("!QqB")
PG_EPOCH_UNIX = 946_684_800
# Connect failures a retry does not cure (anything else — refused, starting up, timed out — is
# retried by the next poll).
_LASTING_CONNECT_ERRORS = {"PERMISSION_DENIED", "AUTHENTICATION_FAILED", "DATABASE_NOT_FOUND", "INVALID_CONNECTION",
                           "SSL_REQUIRED", "SSL_FAILED", "NOT_POSTGRESQL", "HOST_NOT_FOUND"}
SNAPSHOT_INCOMPLETE = "incomplete"

_WAL_LEVEL_FIX = [
    "Set wal_level = logical (ALTER SYSTEM SET wal_level = logical, or in postgresql.conf) and restart "
    "the server; wal_level changes only at a restart.",
    "On a managed service turn on its logical replication setting instead (Amazon RDS/Aurora: the "
    "parameter rds.logical_replication = 1; Cloud SQL: cloudsql.logical_decoding = on; Azure: "
    "wal_level = logical in the server parameters), then restart the instance.",
    "Check max_replication_slots and max_wal_senders are above the number of slots in use (both "
    "need a restart too).",
]


def _replication_fix(user: str) -> list[str]:
    ident = quote_identifier(user)
    return [
        f"As a superuser, give the role the REPLICATION attribute: ALTER ROLE {ident} REPLICATION;",
        f"On Amazon RDS/Aurora grant the replication role instead: GRANT rds_replication TO {ident};",
        "Or connect as a role that already has it (SELECT rolname FROM pg_roles WHERE rolreplication).",
    ]


# -- inputs ----------------------------------------------------------------------------

@dataclass
class CdcOptions:
    slot: str
    publication: str
    tables: list[tuple[str, str]] | None  # None: all tables
    exclude_tables: set[str] = field(default_factory=set)
    columns: dict[str, set[str]] = field(default_factory=dict)
    exclude_columns: dict[str, set[str]] = field(default_factory=dict)
    snapshot: bool = False
    create_slot: bool = True
    batch_size: int = 1000
    heartbeat_interval: float = 10.0
    wal_warning_bytes: int = 1 << 30


def _invalid(detail: str) -> ActionError:
    return ActionError("INVALID_INPUT", detail)


def _split_name(text: Any, where: str) -> tuple[str, str]:
    """'schema.table', 'table' (schema public) or with double-quoted parts: '"My S"."t.1"'."""
    if not isinstance(text, str) or not text.strip():
        raise _invalid(f"{where}: a table name 'schema.table' is expected, got {text!r}")
    parts: list[str] = []
    i, s = 0, text.strip()
    while i <= len(s):
        if i < len(s) and s[i] == '"':
            j, buf = i + 1, []
            while True:
                k = s.find('"', j)
                if k < 0:
                    raise _invalid(f"{where}: unbalanced quotes in {text!r}")
                buf.append(s[j:k])
                if s[k + 1:k + 2] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                break
            parts.append("".join(buf))
            i = k + 1
        else:
            k = s.find(".", i)
            k = len(s) if k < 0 else k
            parts.append(s[i:k])
            i = k
        if i < len(s) and s[i] != ".":
            raise _invalid(f"{where}: cannot read {text!r} as schema.table")
        i += 1
    if len(parts) == 1:
        parts.insert(0, "public")
    if len(parts) != 2 or not all(parts):
        raise _invalid(f"{where}: cannot read {text!r} as schema.table")
    return parts[0], parts[1]


def _qualified(schema: str, name: str) -> str:
    return f"{schema}.{name}"


def parse_inputs(inputs: dict[str, Any]) -> CdcOptions:
    """The trigger's inputs checked; every problem is INVALID_INPUT naming the field."""
    if not isinstance(inputs, dict):
        raise _invalid("the inputs must be an object")
    unknown = sorted(set(inputs) - _KNOWN_INPUTS)
    if unknown:
        raise _invalid(f"unknown input {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_INPUTS))})")
    slot = inputs.get("slot")
    if not isinstance(slot, str) or not _SLOT_NAME.match(slot):
        raise _invalid("slot: a replication slot name of 1 to 63 lower-case letters, digits and underscores "
                       f"is required, got {slot!r}")
    publication = inputs.get("publication")
    if not isinstance(publication, str) or not publication or len(publication.encode()) > 63 or "\0" in publication:
        raise _invalid(f"publication: a publication name (at most 63 bytes) is required, got {publication!r}")
    all_tables = inputs.get("allTables", False)
    if not isinstance(all_tables, bool):
        raise _invalid("allTables: true or false")
    tables_in = inputs.get("tables")
    if all_tables and tables_in:
        raise _invalid("give either tables or allTables: true, not both")
    tables: list[tuple[str, str]] | None = None
    if not all_tables:
        if not isinstance(tables_in, list) or not tables_in:
            raise _invalid("tables: a non-empty list of 'schema.table' names is required (or allTables: true)")
        tables = []
        for i, t in enumerate(tables_in):
            pair = _split_name(t, f"tables[{i}]")
            if pair not in tables:
                tables.append(pair)
    exclude = inputs.get("excludeTables") or []
    if not isinstance(exclude, list):
        raise _invalid("excludeTables: a list of 'schema.table' names")
    exclude_set = {_qualified(*_split_name(t, f"excludeTables[{i}]")) for i, t in enumerate(exclude)}
    opts = CdcOptions(slot=slot, publication=publication, tables=tables, exclude_tables=exclude_set)
    for key, target in (("columns", opts.columns), ("excludeColumns", opts.exclude_columns)):
        value = inputs.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _invalid(f"{key}: an object {{\"schema.table\": [\"column\", …]}}")
        for table, cols in value.items():
            if not isinstance(cols, list) or not all(isinstance(c, str) and c for c in cols):
                raise _invalid(f"{key}.{table}: a list of column names")
            target[_qualified(*_split_name(table, f"{key}.{table}"))] = set(cols)
    for key, attr in (("snapshot", "snapshot"), ("createSlot", "create_slot")):
        value = inputs.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise _invalid(f"{key}: true or false")
            setattr(opts, attr, value)
    for key, attr, low, high in (("batchSize", "batch_size", 1, 100_000),
                                 ("heartbeatInterval", "heartbeat_interval", 0.5, 3600),
                                 ("walWarningBytes", "wal_warning_bytes", 1, 2**62)):
        value = inputs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise _invalid(f"{key}: a number from {low} to {high}")
        setattr(opts, attr, int(value) if attr != "heartbeat_interval" else float(value))
    return opts


# -- rows ------------------------------------------------------------------------------

def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class _RelationInfo:
    """One published table as the stream describes it, with a loader per column."""

    __slots__ = ("relation", "table", "wanted", "names", "loads", "keep", "key_idx", "kept")

    def __init__(self, relation: po.Relation, wanted: bool, loads: list[Any], keep: list[bool]) -> None:
        self.relation = relation
        self.table = relation.qualified
        self.wanted = wanted
        self.names = [c.name for c in relation.columns]
        self.loads = loads
        self.keep = keep
        self.key_idx = [i for i, c in enumerate(relation.columns) if c.key and keep[i]]
        self.kept = [(i, self.names[i], loads[i]) for i in range(len(keep)) if keep[i]]

    def row(self, values: list[Any], fill: list[Any] | None = None) -> dict[str, Any]:
        """Kept columns of a tuple as a JSON-ready dict; an unchanged TOASTed value is taken from
        *fill* (the old row, REPLICA IDENTITY FULL) or left out."""
        out: dict[str, Any] = {}
        unchanged = po.UNCHANGED
        for i, name, load in self.kept:
            value = values[i]
            if value is None:
                out[name] = None
            elif value is unchanged:
                old = fill[i] if fill is not None else unchanged
                if old is unchanged:
                    continue
                out[name] = None if old is None else load(old)
            else:
                out[name] = load(value)
        return out

    def key_row(self, values: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i in self.key_idx:
            value = values[i]
            out[self.names[i]] = None if value is None or value is po.UNCHANGED else self.loads[i](value)
        return out


# -- the source ------------------------------------------------------------------------

class _ConnectionLost(Exception):
    pass


class CdcSource:
    """A :class:`~pgactions.triggers.base.TriggerSource` over one logical replication slot.

    Made by :func:`open_cdc`.  ``warnings`` lists what the set-up found worth saying (tables
    without a replica identity, before-images that updates will lack, WAL retained by the slot);
    each is logged too (logger ``pgactions.triggers.cdc``).
    """

    def __init__(self, profile: ConnectionProfile, options: CdcOptions, checkpoint: dict[str, Any] | None) -> None:
        self.profile = profile
        self.options = options
        self.warnings: list[str] = []
        self._sql: psycopg.Connection[Any] | None = None
        self._repl: psycopg.Connection[Any] | None = None
        self._streaming = False
        self._relations: dict[int, _RelationInfo] = {}
        self._loader_cache: dict[int, Any] = {}
        self._closed = False
        # Positions (ints): what was handed out, what the consumer acknowledged.
        self._pos = 0                  # end of the last whole transaction handed out (or idle position)
        self._partial: tuple[int, int, int] | None = None  # (commit lsn, change lsn, n) inside a txn
        self._skip: tuple[int, int, int] | None = None     # skip up to here inside that txn (resume)
        self._resume_from = 0          # skip whole transactions committed before this
        self._confirmed = 0            # flush LSN confirmed to the server
        self._outstanding = 0          # position of the last batch with events (acks must reach it)
        self._received = 0             # last WAL position seen on the stream
        self._txn: tuple[int, int, str] | None = None  # (commit lsn, xid, commit time) of the open txn
        self._last_change: tuple[int, int] | None = None
        self._pending: tuple[int, bytes] | None = None  # a change read but not yet handed out
        self._last_feedback = 0.0
        self._last_wal_check = 0.0
        self._wal_warned = False
        self._snapshot: _Snapshot | None = None
        self._consistent_point = 0
        self.user = profile.username
        self._setup(checkpoint)

    # -- connections ------------------------------------------------------------------
    def _connect_sql(self) -> psycopg.Connection[Any]:
        if self._sql is not None and not self._sql.closed and not self._sql.broken:
            return self._sql
        kwargs = self.profile.connect_kwargs()
        try:
            conn = psycopg.Connection.connect(autocommit=True, **kwargs)
        except Exception as exc:
            raise self._connect_error(exc) from None
        try:
            register_loaders(conn)
            conn.execute(_SESSION_SQL)
            register_user_arrays(conn, conn.execute(_USER_ARRAY_TYPES_SQL).fetchall())
        except BaseException:
            conn.close()
            raise
        self._sql = conn
        self._loader_cache.clear()
        return conn

    def _connect_error(self, exc: BaseException) -> ActionError:
        probe_host = dict(self.profile.extraOptions).get("hostaddr") or self.profile.host
        return map_exception(exc, connecting=True, host=probe_host, port=self.profile.port,
                             connect_timeout=self.profile.connectTimeout)

    def _connect_repl(self) -> psycopg.Connection[Any]:
        if self._repl is not None and not self._repl.closed and not self._repl.broken:
            return self._repl
        kwargs = self.profile.connect_kwargs()
        kwargs["replication"] = "database"
        try:
            conn = psycopg.Connection.connect(autocommit=True, **kwargs)
        except psycopg.OperationalError as exc:
            text = str(exc)
            if not getattr(self, "_can_replicate", True) or "replication role" in text or "WAL sender" in text:
                raise self._no_replication() from None
            raise self._connect_error(exc) from None
        self._repl = conn
        self._streaming = False
        return conn

    def _no_replication(self) -> ActionError:
        return ActionError(
            "PERMISSION_DENIED",
            f"role {self.user!r} may not stream changes: logical replication needs the REPLICATION attribute "
            "(or superuser)",
            message="The database user may not use logical replication.",
            extra={"cause": "Streaming a replication slot needs a role with the REPLICATION attribute; "
                            "this one has neither it nor superuser.",
                   "fix": _replication_fix(self.user)})

    def _simple(self, command: str) -> pq.abc.PGresult:
        """A replication command (simple query protocol) on the replication connection."""
        conn = self._connect_repl()
        res = conn.pgconn.exec_(command.encode())
        if res.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            raise psycopg.errors.error_from_result(res, encoding="utf-8")
        return res

    # -- set-up -----------------------------------------------------------------------
    def _setup(self, checkpoint: dict[str, Any] | None) -> None:
        opts = self.options
        conn = self._connect_sql()
        try:
            self._check_server(conn)
            created_publication = self._ensure_publication(conn)
            self._check_identity(conn, created_publication)
            self._ensure_slot(conn, checkpoint)
        except ActionError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise map_exception(exc, connecting=False) from None
        self._check_wal(force=True)
        log.info("cdc: slot %s, publication %s, from %s", opts.slot, opts.publication, po.format_lsn(self._pos))

    def _check_server(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(
            "SELECT current_setting('wal_level'), r.rolreplication OR r.rolsuper, current_user, "
            "current_setting('server_version_num')::int, current_setting('max_replication_slots') "
            "FROM pg_roles r WHERE r.rolname = current_user").fetchone()
        assert row is not None
        wal_level, can_replicate, self.user, version, _max_slots = row
        if version < 100000:
            raise ActionError("INVALID_CONNECTION", f"the server is PostgreSQL {version // 10000}; CDC needs "
                              "PostgreSQL 10 or later (pgoutput)",
                              message="This server is too old for logical replication with pgoutput.")
        if wal_level != "logical":
            raise ActionError(
                "INVALID_CONNECTION",
                f"wal_level is {wal_level!r}; logical replication needs wal_level = logical (then a server restart)",
                message="The server is not set up for logical replication.",
                extra={"cause": "Logical decoding reads the write-ahead log, which holds enough for it only "
                                "with wal_level = logical.", "fix": list(_WAL_LEVEL_FIX)})
        # Some managed services grant replication through a role membership instead of the
        # attribute: the replication connection decides, and a refusal is explained.
        self._can_replicate = bool(can_replicate)
        self._connect_repl()

    def _ensure_publication(self, conn: psycopg.Connection[Any]) -> bool:
        opts = self.options
        pub = conn.execute("SELECT puballtables FROM pg_publication WHERE pubname = %s", [opts.publication]).fetchone()
        if pub is not None:
            if opts.tables is not None and not pub[0]:
                published = {(s, t) for s, t in conn.execute(
                    "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                    [opts.publication]).fetchall()}
                missing = [t for t in opts.tables if t not in published]
                if missing:
                    names = ", ".join(quote_identifier(*t) for t in missing)
                    raise _invalid(
                        f"publication {opts.publication!r} does not publish {', '.join(_qualified(*t) for t in missing)}: "
                        f"ALTER PUBLICATION {quote_identifier(opts.publication)} ADD TABLE {names}; "
                        "(or name another publication)")
            return False
        target: psql.Composable
        if opts.tables is None:
            target = psql.SQL("FOR ALL TABLES")
            what = "FOR ALL TABLES"
        else:
            target = psql.SQL("FOR TABLE {}").format(psql.SQL(", ").join(psql.Identifier(*t) for t in opts.tables))
            what = "FOR TABLE " + ", ".join(_qualified(*t) for t in opts.tables)
        self._check_identity_before_publishing(conn)
        statement = psql.SQL("CREATE PUBLICATION {} {}").format(psql.Identifier(opts.publication), target)
        try:
            conn.execute(statement)
        except psycopg.errors.DuplicateObject:
            return False  # created meanwhile by another process: use it
        except psycopg.errors.InsufficientPrivilege as exc:
            text = statement.as_string(conn)
            raise ActionError(
                "PERMISSION_DENIED",
                f"creating publication {opts.publication!r} {what}: {exc.diag.message_primary}",
                message="The database user may not create this publication.",
                extra={"cause": "CREATE PUBLICATION needs the CREATE privilege on the database and ownership of "
                                "every table it lists (FOR ALL TABLES: superuser).",
                       "fix": [f"Ask the administrator to create it: {text};",
                               "Or name an existing publication that publishes these tables."]}) from None
        log.info("cdc: created publication %s %s", opts.publication, what)
        return True

    _IDENTITY_SQL = """
    SELECT n.nspname, c.relname, c.relreplident,
           EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
    """

    def _identities(self, conn: psycopg.Connection[Any], tables: list[tuple[str, str]]) -> list[tuple[str, str, str, bool]]:
        if not tables:
            return []
        return conn.execute(self._IDENTITY_SQL, [[s for s, _ in tables], [t for _, t in tables]]).fetchall()

    def _check_identity_before_publishing(self, conn: psycopg.Connection[Any]) -> None:
        """Refuse to publish a table that has no replica identity: its UPDATEs and DELETEs would fail."""
        if self.options.tables is None:
            return
        bad = [(s, t) for s, t, ident, has_index in self._identities(conn, self.options.tables)
               if ident == "n" or (ident in ("d", "i") and not has_index)]
        if bad:
            names = ", ".join(_qualified(*b) for b in bad)
            fixes = " ".join(f"ALTER TABLE {quote_identifier(*b)} REPLICA IDENTITY FULL;" for b in bad)
            raise _invalid(
                f"{names} has no replica identity (no primary key): once published, its UPDATEs and DELETEs would "
                f"fail with 'cannot update table … because it does not have a replica identity'. Add a primary key, "
                f"or run {fixes} (then updates and deletes also carry the whole old row)")

    def _check_identity(self, conn: psycopg.Connection[Any], created: bool) -> None:
        opts = self.options
        tables = opts.tables
        if tables is None:
            tables = [(s, t) for s, t in conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                [opts.publication]).fetchall()]
        for schema, table, ident, has_index in self._identities(conn, tables):
            name = _qualified(schema, table)
            if name in opts.exclude_tables:
                continue
            quoted = quote_identifier(schema, table)
            if ident == "n" or (ident in ("d", "i") and not has_index):
                self._warn(f"{name} has no replica identity: UPDATE and DELETE on it fail while it is published "
                           f"(add a primary key or ALTER TABLE {quoted} REPLICA IDENTITY FULL)")
            elif ident in ("d", "i"):
                self._note(f"{name}: update events carry 'before' only when a key column changes, and delete "
                           f"events only the key; ALTER TABLE {quoted} REPLICA IDENTITY FULL gives whole old rows")

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        log.warning("cdc: %s", text)

    def _note(self, text: str) -> None:
        self.warnings.append(text)
        log.info("cdc: %s", text)

    def _slot_facts(self, conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
        row = conn.execute("SELECT to_jsonb(s)::text FROM pg_replication_slots s WHERE slot_name = %s",
                           [self.options.slot]).fetchone()
        return None if row is None else orjson.loads(row[0])  # type: ignore[no-any-return]

    def _ensure_slot(self, conn: psycopg.Connection[Any], checkpoint: dict[str, Any] | None) -> None:
        opts = self.options
        if checkpoint is not None:
            self._load_checkpoint(checkpoint)
        facts = self._slot_facts(conn)
        redo_snapshot = opts.snapshot and (checkpoint is None or checkpoint.get("snapshot") == SNAPSHOT_INCOMPLETE)
        if facts is not None:
            self._check_slot(facts)
            if redo_snapshot and opts.create_slot:
                # Starting fresh with a snapshot: the slot is made again so the snapshot and the stream
                # that follows it meet exactly (nothing was confirmed from it that the snapshot misses).
                self._drop(conn)
                facts = None
            elif redo_snapshot:
                raise _invalid(f"snapshot: true needs a slot this trigger creates, but slot {opts.slot!r} exists "
                               "and createSlot is false (set createSlot: true, or snapshot: false)")
        if facts is None:
            if checkpoint is not None and not redo_snapshot:
                raise ActionError(
                    "UNDEFINED_OBJECT",
                    f"replication slot {opts.slot!r} does not exist, but a checkpoint was given: the changes since "
                    "it are no longer kept anywhere. Start again without the checkpoint (snapshot: true re-reads "
                    "the tables), or recreate the slot with the data copied another way",
                    message="The replication slot is gone.")
            if not opts.create_slot:
                raise ActionError("UNDEFINED_OBJECT",
                                  f"replication slot {opts.slot!r} does not exist (createSlot: true creates it)",
                                  message="The replication slot does not exist.")
            self._create_slot(opts.snapshot)
            return
        confirmed = po.parse_lsn(facts["confirmed_flush_lsn"]) if facts.get("confirmed_flush_lsn") else 0
        self._confirmed = confirmed
        if checkpoint is not None and self._pos < confirmed and self._partial is None:
            self._warn(f"the checkpoint ({po.format_lsn(self._pos)}) is older than what slot {opts.slot} has "
                       f"confirmed ({po.format_lsn(confirmed)}): changes between them were acknowledged by an "
                       "earlier consumer and are not delivered again")
        if checkpoint is None:
            self._pos = confirmed
        self._resume_from = self._pos

    def _check_slot(self, facts: dict[str, Any]) -> None:
        opts = self.options
        if facts.get("slot_type") != "logical" or facts.get("plugin") != "pgoutput":
            raise _invalid(f"slot {opts.slot!r} exists but is a {facts.get('slot_type')} slot with plugin "
                           f"{facts.get('plugin')!r}; CDC needs a logical slot using pgoutput (name another slot)")
        assert self._sql is not None
        if facts.get("database") != self._sql.info.dbname:
            raise _invalid(f"slot {opts.slot!r} belongs to database {facts.get('database')!r}, not "
                           f"{self._sql.info.dbname!r} (a logical slot streams one database; name another slot)")
        if facts.get("wal_status") == "lost":
            raise ActionError(
                "DATABASE_ERROR",
                f"replication slot {opts.slot!r} has lost WAL it needed (wal_status lost, max_slot_wal_keep_size "
                f"passed): changes are missing. Drop it (pgactions cdc drop-slot {opts.slot}) and start again "
                "with snapshot: true",
                message="The replication slot can no longer be used.")

    def _create_slot(self, snapshot: bool) -> None:
        opts = self.options
        export = "EXPORT_SNAPSHOT" if snapshot else "NOEXPORT_SNAPSHOT"
        try:
            res = self._simple(f'CREATE_REPLICATION_SLOT "{opts.slot}" LOGICAL pgoutput {export}')
        except psycopg.errors.DuplicateObject:
            # Made meanwhile by another process: stream it from its position (no snapshot of ours).
            if snapshot:
                raise _invalid(f"slot {opts.slot!r} was created by another process at the same time; "
                               "run one consumer per slot") from None
            facts = self._slot_facts(self._connect_sql()) or {}
            self._pos = self._resume_from = po.parse_lsn(facts.get("confirmed_flush_lsn") or "0/0")
            return
        except psycopg.errors.ConfigurationLimitExceeded as exc:
            raise ActionError(
                "DATABASE_ERROR", f"creating replication slot {opts.slot!r}: {exc.diag.message_primary}",
                message="No replication slot is free.",
                extra={"fix": ["Drop slots no longer used (SELECT slot_name, active FROM pg_replication_slots; "
                               "pgactions cdc drop-slot NAME), or raise max_replication_slots and restart the server."]},
                sqlstate=exc.sqlstate) from None
        consistent = res.get_value(0, 1)
        self._consistent_point = po.parse_lsn(consistent.decode() if consistent else "0/0")
        self._pos = self._resume_from = self._confirmed = self._consistent_point
        log.info("cdc: created slot %s at %s", opts.slot, po.format_lsn(self._consistent_point))
        if snapshot:
            name = res.get_value(0, 2)
            assert name is not None
            self._snapshot = _Snapshot(self, name.decode())

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        _drop_slot_on(conn, self.options.slot)
        log.info("cdc: dropped slot %s to start again with a snapshot", self.options.slot)

    def _load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("lsn"), str):
            raise _invalid("checkpoint: an object with an 'lsn' (from an earlier batch) or null")
        if checkpoint.get("slot") not in (None, self.options.slot):
            raise _invalid(f"checkpoint: it belongs to slot {checkpoint.get('slot')!r}, not {self.options.slot!r}")
        try:
            self._pos = po.parse_lsn(checkpoint["lsn"])
            if checkpoint.get("txn") is not None:
                self._partial = (po.parse_lsn(checkpoint["txn"]), po.parse_lsn(checkpoint["change"]),
                                 int(checkpoint.get("n", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise _invalid(f"checkpoint: {exc}") from None
        self._skip = self._partial
        self._resume_from = self._pos

    # -- the interface ----------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """Where the events handed out so far end."""
        cp: dict[str, Any] = {"slot": self.options.slot, "lsn": po.format_lsn(self._pos)}
        if self._snapshot is not None:
            cp["snapshot"] = SNAPSHOT_INCOMPLETE
        if self._partial is not None:
            txn, change, n = self._partial
            cp.update(txn=po.format_lsn(txn), change=po.format_lsn(change), n=n)
        return cp

    def poll(self, timeout: float) -> Batch:
        if self._closed:
            raise _invalid("the source is closed")
        if self._snapshot is not None:
            return self._snapshot.next_batch()
        deadline = time.monotonic() + max(0.0, timeout)
        events: list[dict[str, Any]] = []
        while True:
            try:
                self._start_streaming()
                self._read(events, deadline)
                break
            except _ConnectionLost as exc:
                self._drop_repl()
                if events:
                    break  # hand out what came; the next poll reconnects
                wait = min(1.0, deadline - time.monotonic())
                if wait <= 0:
                    raise ActionError("CONNECTION_LOST", f"replication connection: {exc}; the next poll "
                                      "reconnects and resumes after the last event handed out") from None
                time.sleep(wait)
        if events:
            self._outstanding = self._pos
        self._maybe_feedback()
        self._check_wal()
        return Batch(events, self.checkpoint())

    def ack(self, checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is None or self._closed:
            return
        if checkpoint.get("slot") not in (None, self.options.slot) or not isinstance(checkpoint.get("lsn"), str):
            raise _invalid("ack: not a checkpoint of this source")
        lsn = po.parse_lsn(checkpoint["lsn"])
        if lsn > self._confirmed:
            self._confirmed = lsn
            self._send_feedback(force=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._repl is not None and self._streaming:
            try:
                self._send_feedback(force=True)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        for conn in (self._repl, self._sql):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
        if self._snapshot is not None:
            self._snapshot = None
        self._repl = self._sql = None

    def __enter__(self) -> CdcSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- streaming --------------------------------------------------------------------
    def _drop_repl(self) -> None:
        if self._repl is not None:
            try:
                self._repl.close()
            except Exception:  # noqa: BLE001
                pass
        self._repl = None
        self._streaming = False
        self._pending = None
        # Resume after what was handed out: the server starts again at the confirmed LSN.
        self._txn = None
        self._last_change = None
        self._resume_from = self._pos
        self._skip = self._partial

    def _start_streaming(self) -> None:
        if self._streaming:
            return
        try:
            conn = self._connect_repl_retrying()
            pgconn = conn.pgconn
            setup = pgconn.exec_(_SESSION_SQL.encode())
            if setup.status != pq.ExecStatus.COMMAND_OK:
                raise psycopg.errors.error_from_result(setup, encoding="utf-8")
            pub = self.options.publication.replace('"', '""').replace("'", "''")
            start = po.format_lsn(max(self._confirmed, 0))
            command = (f'START_REPLICATION SLOT "{self.options.slot}" LOGICAL {start} '
                       f"(proto_version '1', publication_names '\"{pub}\"')")
            pgconn.send_query(command.encode())
            res = pgconn.get_result()
            if res is None or res.status != pq.ExecStatus.COPY_BOTH:
                assert res is not None
                while pgconn.get_result() is not None:
                    pass
                raise psycopg.errors.error_from_result(res, encoding="utf-8")
        except psycopg.errors.ObjectInUse:
            self._drop_repl()
            raise _ConnectionLost(f"slot {self.options.slot} is in use by another consumer") from None
        except psycopg.OperationalError as exc:
            if exc.sqlstate and not exc.sqlstate.startswith(("08", "57")):
                self._drop_repl()
                raise map_exception(exc, connecting=False) from None
            raise _ConnectionLost(str(exc).strip()) from None
        except psycopg.Error as exc:
            self._drop_repl()
            raise map_exception(exc, connecting=False) from None
        self._streaming = True
        self._last_feedback = time.monotonic()

    def _connect_repl_retrying(self) -> psycopg.Connection[Any]:
        try:
            return self._connect_repl()
        except ActionError as error:
            if error.code in _LASTING_CONNECT_ERRORS:
                raise
            raise _ConnectionLost(error.one_line()) from None  # a restart, a network hiccup: retried

    def _read(self, events: list[dict[str, Any]], deadline: float) -> None:
        assert self._repl is not None
        pgconn = self._repl.pgconn
        limit = self.options.batch_size
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        drained = False  # the socket read (without waiting) since libpq's buffer was last empty
        while True:
            if self._pending is not None:
                if len(events) >= limit:
                    return
                lsn, payload = self._pending
                self._pending = None
                self._handle(lsn, payload, events)
                continue
            try:
                size, data = pgconn.get_copy_data(1)
            except psycopg.OperationalError as exc:
                raise _ConnectionLost(str(exc).strip()) from None
            if size > 0:
                drained = False
                kind = data[0]
                if kind == 119:  # 'w' XLogData
                    start, _end, _sent = _XLOG_HEAD.unpack_from(data, 1)
                    payload = bytes(data[25:])
                    if start > self._received:
                        self._received = start
                    if payload[:1] in (b"I", b"U", b"D", b"T") and len(events) >= limit:
                        self._pending = (start, payload)
                        return
                    self._handle(start, payload, events)
                elif kind == 107:  # 'k' keepalive
                    wal_end, _sent, reply = _KEEPALIVE.unpack_from(data, 1)
                    if wal_end > self._received:
                        self._received = wal_end
                    if self._txn is None and wal_end > self._pos:
                        # Every transaction that committed before wal_end has been sent (and read): an
                        # idle position past them.  With nothing handed out unacknowledged (and nothing
                        # in this batch yet) it is confirmed at once: the heartbeat that keeps a slot
                        # on a quiet database from holding WAL back.
                        self._pos = wal_end
                        if not events and self._partial is None and self._confirmed >= self._outstanding:
                            self._confirmed = self._outstanding = wal_end
                    if reply:
                        self._send_feedback(force=True)
                continue
            if size == -1:  # the server ended the COPY: an error (slot dropped, terminated …)
                res = pgconn.get_result()
                self._streaming = False
                if res is not None and res.status == pq.ExecStatus.FATAL_ERROR:
                    error = psycopg.errors.error_from_result(res, encoding="utf-8")
                    if error.sqlstate and error.sqlstate.startswith(("08", "57")):
                        raise _ConnectionLost(str(error).strip())
                    self._drop_repl()
                    raise map_exception(error, connecting=False)
                raise _ConnectionLost("the server ended the replication stream")
            if size < -1:
                raise _ConnectionLost(pgconn.get_error_message().strip() or "copy failed")
            # Nothing buffered: read what the socket already holds, then hand out what we have, or
            # wait for more.
            if not drained:
                drained = True
                try:
                    pgconn.consume_input()
                except psycopg.OperationalError as exc:
                    raise _ConnectionLost(str(exc).strip()) from None
                continue
            if events:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._maybe_feedback()
            wait = min(remaining, max(0.05, self.options.heartbeat_interval - (time.monotonic() - self._last_feedback)))
            if poller.poll(wait * 1000):
                try:
                    pgconn.consume_input()
                except psycopg.OperationalError as exc:
                    raise _ConnectionLost(str(exc).strip()) from None

    def _handle(self, lsn: int, payload: bytes, events: list[dict[str, Any]]) -> None:
        msg = po.decode(payload)
        kind = msg[0]
        if kind == po.BEGIN:
            _, final_lsn, commit_time, xid = msg
            self._txn = (final_lsn, xid, po.pg_time_iso(commit_time))
            self._last_change = None
            return
        if kind == po.COMMIT:
            end_lsn = msg[3]
            txn = self._txn
            self._txn = None
            if txn is not None and txn[0] < self._resume_from:
                return  # a transaction handed out before the stream restarted: nothing changes
            self._last_change = None
            if end_lsn > self._pos:
                self._pos = end_lsn
            self._partial = None
            self._skip = None
            return
        if kind == po.RELATION:
            relation = msg[1]
            self._relations[relation.oid] = self._relation_info(relation)
            return
        if kind in (po.TYPE, po.ORIGIN) or kind == po.MESSAGE:
            if kind == po.TYPE:
                self._refresh_user_types()
            return
        # A change: where it lies in its transaction.
        txn = self._txn
        if txn is None:
            raise po.DecodeError("a change outside a transaction")
        final_lsn, xid, commit_time = txn
        if final_lsn < self._resume_from:
            return  # a transaction handed out before (whole): the stream restarted before it
        last = self._last_change
        if kind == po.TRUNCATE:
            relids = msg[1]
        else:
            relids = (msg[1],)
        for relid in relids:
            n = last[1] + 1 if last is not None and last[0] == lsn else 0
            last = (lsn, n)
            skip = self._skip
            if skip is not None and skip[0] == final_lsn and (lsn, n) <= (skip[1], skip[2]):
                continue
            self._partial = (final_lsn, lsn, n)
            info = self._relations.get(relid)
            if info is None:
                raise po.DecodeError(f"a change of relation {relid} before its description")
            if not info.wanted:
                continue
            event: dict[str, Any]
            if kind == po.INSERT:
                event = {"op": "insert", "table": info.table, "after": info.row(msg[2])}
            elif kind == po.UPDATE:
                _, _, old_kind, old, new = msg
                event = {"op": "update", "table": info.table}
                if old_kind == "O":
                    event["before"] = info.row(old)
                    event["after"] = info.row(new, fill=old)
                else:
                    if old_kind == "K":
                        event["before"] = info.key_row(old)
                    event["after"] = info.row(new)
            elif kind == po.DELETE:
                _, _, old_kind, old = msg
                event = {"op": "delete", "table": info.table,
                         "before": info.row(old) if old_kind == "O" else info.key_row(old)}
            else:
                event = {"op": "truncate", "table": info.table}
            event["lsn"] = po.format_lsn(lsn)
            event["xid"] = xid
            event["commitTime"] = commit_time
            events.append(event)
        self._last_change = last

    # -- relations and types ----------------------------------------------------------
    def _wanted(self, table: str, schema: str, name: str) -> bool:
        opts = self.options
        if table in opts.exclude_tables:
            return False
        return opts.tables is None or (schema, name) in opts.tables

    def _relation_info(self, relation: po.Relation) -> _RelationInfo:
        table = relation.qualified
        wanted = self._wanted(table, relation.schema, relation.name)
        only = self.options.columns.get(table)
        drop = self.options.exclude_columns.get(table, set())
        keep = [(only is None or c.name in only) and c.name not in drop for c in relation.columns]
        loads = [self._loader(c.type_oid) for c in relation.columns] if wanted else [_text] * len(keep)
        return _RelationInfo(relation, wanted, loads, keep)

    def _loader(self, oid: int) -> Any:
        cached = self._loader_cache.get(oid)
        if cached is not None:
            return cached
        conn = self._connect_sql()
        base = oid
        cls = conn.adapters.get_loader(oid, pq.Format.TEXT)
        if cls is None:
            try:
                row = conn.execute(_BASE_TYPES_SQL, [[oid]]).fetchone()
            except psycopg.OperationalError:  # the set-up connection died (a restart): once more
                conn.close()
                conn = self._connect_sql()
                row = conn.execute(_BASE_TYPES_SQL, [[oid]]).fetchone()
            if row is not None:
                base = row[1]
                cls = conn.adapters.get_loader(base, pq.Format.TEXT)
        load = cls(base, conn).load if cls is not None else _text
        self._loader_cache[oid] = load
        return load

    def _refresh_user_types(self) -> None:
        """A type of the database's own is (re)described: arrays of new enums and domains load as lists."""
        try:
            conn = self._connect_sql()
            register_user_arrays(conn, conn.execute(_USER_ARRAY_TYPES_SQL).fetchall())
            self._loader_cache.clear()
        except psycopg.Error as exc:
            log.debug("cdc: could not refresh user types: %s", exc)

    # -- feedback, heartbeats, WAL retention ------------------------------------------
    def _maybe_feedback(self) -> None:
        if self._streaming and time.monotonic() - self._last_feedback >= self.options.heartbeat_interval:
            self._send_feedback(force=True)

    def _send_feedback(self, force: bool = False) -> None:
        """A standby status update: *flush* is what the consumer acknowledged (and idle positions
        nothing unacknowledged precedes) — the slot's confirmed_flush_lsn becomes it."""
        if not self._streaming or self._repl is None:
            return
        now_us = int((time.time() - PG_EPOCH_UNIX) * 1_000_000)
        flush = self._confirmed
        message = _FEEDBACK.pack(b"r", max(self._received, flush), flush, flush, now_us, 0)
        pgconn = self._repl.pgconn
        try:
            if pgconn.put_copy_data(message) != 1 or pgconn.flush() != 0:
                raise psycopg.OperationalError(pgconn.get_error_message())
        except psycopg.OperationalError as exc:
            log.debug("cdc: feedback not sent: %s", exc)
            self._drop_repl()
            return
        self._last_feedback = time.monotonic()

    def _check_wal(self, force: bool = False) -> None:
        """Warn (once per crossing) when the slot holds back more WAL than walWarningBytes."""
        now = time.monotonic()
        if not force and now - self._last_wal_check < 60:
            return
        self._last_wal_check = now
        try:
            conn = self._connect_sql()
            row = conn.execute(
                "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = %s",
                [self.options.slot]).fetchone()
        except (psycopg.Error, ActionError) as exc:
            log.debug("cdc: WAL check failed: %s", exc)
            return
        retained = row[0] if row else None
        if retained is None:
            return
        retained = int(retained)
        if retained > self.options.wal_warning_bytes:
            if not self._wal_warned:
                self._warn(f"slot {self.options.slot} retains {retained // (1 << 20)} MB of WAL (more than "
                           f"walWarningBytes {self.options.wal_warning_bytes // (1 << 20)} MB): the consumer is "
                           "behind or stopped. Catch up, or drop the slot (pgactions cdc drop-slot) if it is no "
                           "longer used — a slot nobody reads fills the server's disk")
                self._wal_warned = True
        else:
            self._wal_warned = False

    @property
    def retained_wal_warning(self) -> bool:
        return self._wal_warned


class _Snapshot:
    """The initial read: every table in scope as of the slot's exported snapshot, as 'read' events.

    The replication connection that exported the snapshot stays idle until the snapshot is
    imported; the stream starts once the last row is read.  An interrupted snapshot cannot be
    resumed (the exported snapshot is gone): the checkpoint says so, and opening with it drops the
    slot and starts again.
    """

    def __init__(self, source: CdcSource, name: str) -> None:
        self.source = source
        self.name = name
        self.tables: list[tuple[str, str]] | None = None
        self.index = 0
        self.open_cursor = False
        self.lsn = po.format_lsn(source._consistent_point)

    def _begin(self) -> None:
        conn = self.source._connect_sql()
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(psql.SQL("SET TRANSACTION SNAPSHOT {}").format(psql.Literal(self.name)))
        opts = self.source.options
        if opts.tables is not None:
            tables = list(opts.tables)
        else:
            tables = [(s, t) for s, t in conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2",
                [opts.publication]).fetchall()]
        self.tables = [t for t in tables if _qualified(*t) not in opts.exclude_tables]

    def next_batch(self) -> Batch:
        source = self.source
        try:
            if self.tables is None:
                self._begin()
            assert self.tables is not None
            conn = source._connect_sql()
            events: list[dict[str, Any]] = []
            limit = source.options.batch_size
            while len(events) < limit and self.index < len(self.tables):
                schema, name = self.tables[self.index]
                table = _qualified(schema, name)
                if not self.open_cursor:
                    conn.execute(psql.SQL("DECLARE pgactions_cdc_snapshot NO SCROLL CURSOR FOR SELECT * FROM {}")
                                 .format(psql.Identifier(schema, name)))
                    self.open_cursor = True
                want = limit - len(events)
                cur = conn.execute(f"FETCH FORWARD {want} FROM pgactions_cdc_snapshot")
                names = [d.name for d in cur.description or []]
                only = source.options.columns.get(table)
                drop = source.options.exclude_columns.get(table, set())
                keep = [i for i, n in enumerate(names) if (only is None or n in only) and n not in drop]
                rows = cur.fetchall()
                for row in rows:
                    events.append({"op": "read", "table": table, "after": {names[i]: row[i] for i in keep},
                                   "lsn": self.lsn, "xid": None, "commitTime": None})
                if len(rows) < want:
                    conn.execute("CLOSE pgactions_cdc_snapshot")
                    self.open_cursor = False
                    self.index += 1
            if self.index >= len(self.tables):
                conn.execute("COMMIT")
                source._snapshot = None
                log.info("cdc: snapshot of %d tables read", len(self.tables))
        except ActionError:
            raise
        except Exception as exc:
            raise map_exception(exc, connecting=False) from None
        return Batch(events, source.checkpoint())


# -- module API ------------------------------------------------------------------------

def open_cdc(profile: ConnectionProfile | str | dict[str, Any], inputs: dict[str, Any],
             checkpoint: dict[str, Any] | None = None) -> CdcSource:
    """A CDC source for the ``row_changes`` trigger (see the module docstring and docs/triggers-cdc.md).

    *inputs*: ``{tables: ["schema.table", …] | allTables: true, excludeTables?, columns? /
    excludeColumns? ({"schema.table": [column, …]}), slot, publication, snapshot? (false),
    createSlot? (true), batchSize? (1000), heartbeatInterval? (10 s), walWarningBytes? (1 GiB)}``.
    *checkpoint*: None to start fresh (the slot's own position; with ``snapshot`` the slot is made
    again and the tables read first), or one from an earlier batch.

    Creates the publication when it does not exist and the slot when it does not exist (and
    ``createSlot``).  Raises :class:`ActionError`: INVALID_INPUT, INVALID_CONNECTION (wal_level is
    not logical), PERMISSION_DENIED (no REPLICATION; may not create the publication),
    UNDEFINED_OBJECT (no such slot), or a connection error.
    """
    options = parse_inputs(inputs)
    return CdcSource(load_profile(profile), options, checkpoint)


def _drop_slot_on(conn: psycopg.Connection[Any], slot: str, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            return True
        except psycopg.errors.UndefinedObject:
            return False
        except psycopg.errors.ObjectInUse:
            # A consumer that just died leaves its walsender a moment; a live one keeps it.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def drop_slot(profile: ConnectionProfile | str | dict[str, Any], slot: str) -> bool:
    """Drop the replication slot *slot* (``pgactions cdc drop-slot``): True when it was dropped,
    False when there was none.  The slot's retained WAL is freed; changes not yet acknowledged are
    gone for good.  A slot in use by a running consumer is refused (after waiting up to 10 s for a
    consumer that just stopped).  The publication is left alone (DROP PUBLICATION removes it)."""
    if not isinstance(slot, str) or not _SLOT_NAME.match(slot):
        raise _invalid(f"slot: a replication slot name of lower-case letters, digits and underscores, got {slot!r}")
    prof = load_profile(profile)
    try:
        conn = psycopg.Connection.connect(autocommit=True, **prof.connect_kwargs())
    except Exception as exc:
        probe_host = dict(prof.extraOptions).get("hostaddr") or prof.host
        raise map_exception(exc, connecting=True, host=probe_host, port=prof.port,
                            connect_timeout=prof.connectTimeout) from None
    try:
        with conn:
            return _drop_slot_on(conn, slot)
    except psycopg.errors.ObjectInUse as exc:
        raise ActionError("DATABASE_ERROR", f"slot {slot!r} is in use by a running consumer: stop it first "
                          f"({exc.diag.message_primary})", message="The replication slot is in use.",
                          sqlstate=exc.sqlstate) from None
    except psycopg.Error as exc:
        raise map_exception(exc, connecting=False) from None
