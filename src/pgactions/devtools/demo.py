"""``pgactions demo``: a throwaway PostgreSQL, the guide's sample tables, every action run once.

Prints each step's input and output (or friendly error), so a new user sees in one command what
the actions do and what a flow gets back.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from pgactions.devtools.local_server import LocalServer, ServerNotAvailable, stop_kept_server
from pgactions.runtime import Runtime
from pgactions.spec.errors import ActionError

__all__ = ["run_demo", "stop_demo"]

SAMPLE_SCHEMA = """
CREATE TABLE users (
    id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE NOT NULL,
    status text NOT NULL DEFAULT 'active', created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz, last_login timestamptz);
CREATE TABLE sessions (id serial PRIMARY KEY, user_id int REFERENCES users(id), expires_at timestamptz NOT NULL);
CREATE TABLE logs (id bigserial PRIMARY KEY, level text NOT NULL, message text, created_at timestamp);
CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users(id), total numeric(10,2),
                     created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users (name, email, status, created_at) VALUES
    ('John Doe', 'john@example.com', 'active', '2026-01-15 10:30:00+00'),
    ('Mary Major', 'mary@example.com', 'inactive', '2026-01-10 08:00:00+00');
INSERT INTO sessions (user_id, expires_at) SELECT 1, now() - interval '1 hour' FROM generate_series(1, 15);
INSERT INTO orders (user_id, total, created_at) VALUES
    (1, 10.50, '2026-01-15 09:00+00'), (1, 4.25, '2026-01-15 18:00+00'), (2, 100, '2026-01-16 12:00+00');
"""

TRIGGER = {"trigger": {"name": "Jane Roe", "email": "jane@example.com", "ids": [1, 2]}}

STEPS: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = [
    ("Query Rows: active users", "query_rows", {
        "query": "SELECT id, name, email, created_at FROM users WHERE status = $1 ORDER BY created_at DESC LIMIT 10",
        "parameters": ["active"]}, None),
    ("Insert Row: a user from the trigger", "insert_row", {
        "table": "users", "columns": {"name": "{{trigger.name}}", "email": "{{trigger.email}}",
                                      "status": "active", "created_at": "{{now}}"}}, TRIGGER),
    ("Update Rows: deactivate by e-mail", "update_rows", {
        "query": "UPDATE users SET status = $1, updated_at = $2 WHERE email = $3",
        "parameters": ["inactive", "{{now}}", "{{trigger.email}}"]}, TRIGGER),
    ("Delete Rows: expired sessions", "delete_rows", {
        "query": "DELETE FROM sessions WHERE expires_at < $1", "parameters": ["{{now}}"]}, None),
    ("Execute Query: create an index", "execute_query", {
        "query": "CREATE INDEX IF NOT EXISTS idx_users_email ON users(email)"}, None),
    ("Upsert Row: insert or update by e-mail", "upsert_row", {
        "table": "users", "columns": {"email": "{{trigger.email}}", "name": "Jane R.", "status": "active"},
        "conflictColumns": ["email"]}, TRIGGER),
    ("Execute Query: bulk insert with unnest", "execute_query", {
        "query": "INSERT INTO logs (level, message, created_at) "
                 "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamp[])",
        "parameters": [["info", "error"], ["started", "failed"], ["2026-01-15T10:30:00", "2026-01-15T10:31:00"]]},
     None),
    ("Update Rows: batch update with ANY", "update_rows", {
        "query": "UPDATE users SET status = 'active' WHERE id = ANY($1::int[])",
        "parameters": ["{{trigger.ids}}"]}, TRIGGER),
    ("Query Rows: daily revenue", "query_rows", {
        "query": "SELECT DATE_TRUNC('day', created_at) AS day, COUNT(*) AS orders, SUM(total) AS revenue, "
                 "COUNT(*) FILTER (WHERE total >= $1) AS large_orders FROM orders GROUP BY 1 ORDER BY 1",
        "parameters": [50]}, None),
    ("A template in the SQL text is bound, never pasted", "query_rows", {
        "query": "SELECT count(*) AS matches FROM users WHERE name = '{{trigger.name}}'"},
     {"trigger": {"name": "x'); DROP TABLE users; --"}}),
    ("A friendly error: duplicate e-mail", "insert_row", {
        "table": "users", "columns": {"name": "Again", "email": "john@example.com"}}, None),
    ("A friendly error: query past its timeout", "query_rows", {
        "query": "SELECT pg_sleep(3)", "timeout": 1}, None),
]


def _show(label: str, value: Any) -> None:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    print(f"  {label}: " + text.replace("\n", "\n  "))


def run_demo(keep: bool = False) -> int:
    print("Starting a throwaway PostgreSQL server …", flush=True)
    try:
        server = LocalServer(ssl=False, max_connections=20).start()
    except ServerNotAvailable as exc:
        print(f"pgactions demo: {exc}", file=sys.stderr)
        return 1
    failures = 0
    try:
        server.psql("CREATE DATABASE demo")
        server.psql(SAMPLE_SCHEMA, database="demo")
        url = server.url(database="demo")
        print(f"Server ready: {url.replace(server.superuser_password, '***')}\n")
        with Runtime() as runtime:
            for title, action, inputs, context in STEPS:
                print(f"== {title} ({action})")
                _show("input", inputs)
                if context:
                    _show("context", context)
                try:
                    _show("output", runtime.run(action, url, inputs, context).data)
                except ActionError as exc:
                    _show("error", exc.payload)
                    failures += 0 if title.startswith("A friendly error") else 1
                print()
        if keep:
            print(f"The server keeps running at {url} (data in {server.root}).")
            print(f"Stop it (and delete its data) with: pgactions demo --stop {server.root}")
    finally:
        if not keep:
            server.stop()
    print("Demo finished: every action ran." if not failures else f"Demo finished with {failures} failure(s).")
    return 0 if not failures else 1


def stop_demo(root: str) -> int:
    """``pgactions demo --stop DIR``: stop a server ``--keep`` left running and delete DIR."""
    try:
        running = stop_kept_server(root)
    except ValueError as exc:  # not a kept server's folder: a usage mistake
        print(f"pgactions demo: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # RuntimeError covers ServerNotAvailable (no pg_ctl)
        print(f"pgactions demo: could not stop the server in {root}: {exc}", file=sys.stderr)
        return 1
    print(f"Stopped the server in {root} and deleted its data." if running
          else f"The server in {root} was not running; deleted its data.")
    return 0
