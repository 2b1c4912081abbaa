"""Every example of the integration guide, run against a real server with the documented output."""

from __future__ import annotations

import datetime as dt

import pytest

from pgactions import ActionError, Runtime

# Also run through PgBouncer in transaction mode (conftest: pooler_modes).
pytestmark = pytest.mark.pooler_modes


def test_query_rows_active_users(runtime: Runtime, guide_db) -> None:
    out = runtime.run("query_rows", guide_db.profile, {
        "query": "SELECT id, name, email, created_at FROM users WHERE status = $1 "
                 "ORDER BY created_at DESC LIMIT 10",
        "parameters": ["active"],
    }).data
    assert out == {"rows": [{"id": 1, "name": "John Doe", "email": "john@example.com",
                             "created_at": "2026-01-15T10:30:00Z"}], "rowCount": 1}


def test_insert_row_from_trigger(runtime: Runtime, guide_db) -> None:
    before = dt.datetime.now(dt.timezone.utc)
    out = runtime.run("insert_row", guide_db.profile, {
        "table": "users",
        "columns": {"name": "{{trigger.name}}", "email": "{{trigger.email}}", "status": "active",
                    "created_at": "{{now}}"},
    }, {"trigger": {"name": "Jane Roe", "email": "jane@example.com"}}).data
    assert out["rowCount"] == 1
    assert out["insertedId"] == 3
    assert out["row"]["id"] == 3 and out["row"]["email"] == "jane@example.com"
    created = dt.datetime.fromisoformat(out["row"]["created_at"].replace("Z", "+00:00"))
    assert abs((created - before).total_seconds()) < 60
    assert guide_db.sql("SELECT name, status FROM users WHERE id = 3") == [("Jane Roe", "active")]


def test_update_rows_by_email(runtime: Runtime, guide_db) -> None:
    out = runtime.run("update_rows", guide_db.profile, {
        "query": "UPDATE users SET status = $1, updated_at = $2 WHERE email = $3",
        "parameters": ["inactive", "{{now}}", "{{trigger.email}}"],
    }, {"trigger": {"email": "john@example.com"}}).data
    assert out == {"rowCount": 1}
    (status, updated), = guide_db.sql("SELECT status, updated_at FROM users WHERE email = 'john@example.com'")
    assert status == "inactive" and updated is not None


def test_delete_expired_sessions(runtime: Runtime, guide_db) -> None:
    guide_db.sql("INSERT INTO sessions (user_id, expires_at) "
                 "SELECT 1, now() - interval '1 day' FROM generate_series(1, 15)")
    guide_db.sql("INSERT INTO sessions (user_id, expires_at) VALUES (1, now() + interval '1 day')")
    out = runtime.run("delete_rows", guide_db.profile, {
        "query": "DELETE FROM sessions WHERE expires_at < $1", "parameters": ["{{now}}"]}).data
    assert out == {"rowCount": 15}
    assert guide_db.sql("SELECT count(*) FROM sessions") == [(1,)]


def test_execute_query_create_index(runtime: Runtime, guide_db) -> None:
    inputs = {"query": "CREATE INDEX IF NOT EXISTS idx_users_email ON users(email)"}
    assert runtime.run("execute_query", guide_db.profile, inputs).data == {"success": True, "rowCount": 0}
    assert guide_db.sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_users_email' "
                        "AND schemaname = current_schema()") == [(1,)]
    # Running it again is harmless (IF NOT EXISTS).
    assert runtime.run("execute_query", guide_db.profile, inputs).data["success"] is True


def test_upsert_row_inserts_then_updates(runtime: Runtime, guide_db) -> None:
    inputs = {"table": "users", "columns": {"email": "{{trigger.email}}", "name": "{{trigger.name}}"},
              "conflictColumns": ["email"]}
    first = runtime.run("upsert_row", guide_db.profile, inputs,
                        {"trigger": {"email": "new@example.com", "name": "First"}}).data
    assert first["inserted"] is True and first["rowCount"] == 1 and first["row"]["name"] == "First"
    second = runtime.run("upsert_row", guide_db.profile, inputs,
                         {"trigger": {"email": "new@example.com", "name": "Second"}}).data
    assert second["inserted"] is False and second["row"]["id"] == first["row"]["id"]
    assert guide_db.sql("SELECT name FROM users WHERE email = 'new@example.com'") == [("Second",)]


def test_upsert_with_on_conflict_in_execute_query(runtime: Runtime, guide_db) -> None:
    query = ("INSERT INTO users (email, name, last_login) VALUES ($1, $2, $3) "
             "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name, last_login = EXCLUDED.last_login "
             "RETURNING id, name")
    out = runtime.run("execute_query", guide_db.profile, {
        "query": query, "parameters": ["{{trigger.email}}", "{{trigger.name}}", "{{now}}"]},
        {"trigger": {"email": "john@example.com", "name": "John D."}}).data
    assert out == {"rows": [{"id": 1, "name": "John D."}], "success": True, "rowCount": 1}
    assert guide_db.sql("SELECT count(*), max(last_login) IS NOT NULL FROM users") == [(2, True)]


def test_bulk_insert_with_unnest(runtime: Runtime, guide_db) -> None:
    out = runtime.run("execute_query", guide_db.profile, {
        "query": "INSERT INTO logs (level, message, created_at) "
                 "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamp[])",
        "parameters": ["{{trigger.levels}}", "{{trigger.messages}}", "{{trigger.times}}"],
    }, {"trigger": {"levels": ["info", "warn", "error"], "messages": ["a", "b", "c"],
                    "times": ["2026-01-15T10:30:00", "2026-01-15T10:31:00", "2026-01-15T10:32:00"]}}).data
    assert out == {"success": True, "rowCount": 3}
    rows = runtime.run("query_rows", guide_db.profile,
                       {"query": "SELECT level, message, created_at FROM logs ORDER BY id"}).data["rows"]
    assert rows[2] == {"level": "error", "message": "c", "created_at": "2026-01-15T10:32:00"}


def test_batch_update_with_any(runtime: Runtime, guide_db) -> None:
    out = runtime.run("update_rows", guide_db.profile, {
        "query": "UPDATE users SET status = 'active' WHERE id = ANY($1::int[])",
        "parameters": ["{{trigger.ids}}"]}, {"trigger": {"ids": [1, 2]}}).data
    assert out == {"rowCount": 2}
    assert guide_db.sql("SELECT DISTINCT status FROM users") == [("active",)]


def test_conditional_update_with_case_and_interval(runtime: Runtime, guide_db) -> None:
    guide_db.sql("UPDATE users SET last_login = now() - interval '40 days' WHERE id = 1")
    guide_db.sql("UPDATE users SET last_login = now() - interval '2 days', status = 'active' WHERE id = 2")
    out = runtime.run("update_rows", guide_db.profile, {"query": """
        UPDATE users SET status = CASE
            WHEN last_login < NOW() - INTERVAL '30 days' THEN 'inactive'
            WHEN last_login < NOW() - INTERVAL '7 days' THEN 'idle'
            ELSE 'active' END
        WHERE id = ANY($1::int[])""", "parameters": [[1, 2]]}).data
    assert out == {"rowCount": 2}
    assert guide_db.sql("SELECT id, status FROM users ORDER BY id") == [(1, "inactive"), (2, "active")]


def test_daily_aggregation_query(runtime: Runtime, guide_db) -> None:
    guide_db.sql("""INSERT INTO orders (user_id, total, created_at) VALUES
        (1, 10.50, '2026-01-15 09:00+00'), (1, 4.25, '2026-01-15 18:00+00'), (2, 100, '2026-01-16 12:00+00')""")
    out = runtime.run("query_rows", guide_db.profile, {"query": """
        SELECT DATE_TRUNC('day', created_at) AS day,
               COUNT(*) AS orders,
               SUM(total) AS revenue,
               COUNT(*) FILTER (WHERE total >= $1) AS large_orders
        FROM orders WHERE created_at >= $2
        GROUP BY 1 ORDER BY 1""", "parameters": [50, "2026-01-01"]}).data
    assert out == {"rowCount": 2, "rows": [
        {"day": "2026-01-15T00:00:00Z", "orders": 2, "revenue": "14.75", "large_orders": 0},
        {"day": "2026-01-16T00:00:00Z", "orders": 1, "revenue": "100.00", "large_orders": 1},
    ]}


def test_manifest_examples_run(runtime: Runtime, guide_db) -> None:
    """The examples shipped in the manifests are runnable as written."""
    from pgactions import load_manifests

    guide_db.sql("INSERT INTO sessions (user_id, expires_at) VALUES (1, now() - interval '1 hour')")
    order = ["query_rows", "insert_row", "upsert_row", "update_rows", "execute_query", "delete_rows",
             "insert_rows", "upsert_rows", "run_transaction", "list_schemas", "list_tables", "get_table_metadata",
             "find_rows", "get_row", "list_functions", "get_function", "create_function", "call_function",
             "delete_function"]
    assert sorted(order) == sorted(load_manifests())
    for action_id in order:
        for example in load_manifests()[action_id].examples:
            try:
                out = runtime.run(action_id, guide_db.profile, example["input"], example.get("context")).data
            except ActionError as exc:  # pragma: no cover - shows which example broke
                pytest.fail(f"{action_id} example {example['title']!r}: {exc.one_line()}")
            if "output" in example and action_id not in ("insert_row", "upsert_row"):  # those hold times
                assert out == example["output"], example["title"]
